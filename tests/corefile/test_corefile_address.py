"""Tests for server block key normalisation and reverse zones."""

from __future__ import annotations

import pytest

from dnsd.corefile import (
    Address,
    CorefileError,
    normalize_key,
    normalize_zone,
    reverse_zones_for_cidr,
)


def zones(key: str, port: int = 53) -> list[tuple[str, int]]:
    return [(a.zone, a.port) for a in normalize_key(key, port, "Corefile", 1)]


@pytest.mark.parametrize(
    ("key", "default_port", "expected"),
    [
        (".", 53, [Address("dns", ".", 53)]),
        (".:53", 1053, [Address("dns", ".", 53)]),
        (":1053", 53, [Address("dns", ".", 1053)]),
        ("example.org", 53, [Address("dns", "example.org.", 53)]),
        ("example.org", 1053, [Address("dns", "example.org.", 1053)]),
        ("example.org:1053", 53, [Address("dns", "example.org.", 1053)]),
        ("Example.ORG.", 53, [Address("dns", "example.org.", 53)]),
        ("cluster.local:5353", 53, [Address("dns", "cluster.local.", 5353)]),
        ("dns://example.org:1053", 53, [Address("dns", "example.org.", 1053)]),
        ("DNS://Example.org", 53, [Address("dns", "example.org.", 53)]),
        ("dns://.:53", 1053, [Address("dns", ".", 53)]),
        ("dns://:1053", 53, [Address("dns", ".", 1053)]),
        ("dns://.", 53, [Address("dns", ".", 53)]),
        ("in-addr.arpa", 53, [Address("dns", "in-addr.arpa.", 53)]),
        ("_tcp.example.org", 53, [Address("dns", "_tcp.example.org.", 53)]),
        ("example.org:65535", 53, [Address("dns", "example.org.", 65535)]),
        ("example.org:1", 53, [Address("dns", "example.org.", 1)]),
    ],
)
def test_normalize_key(key: str, default_port: int, expected: list[Address]) -> None:
    assert normalize_key(key, default_port, "Corefile", 1) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("10.0.0.0/24", ["0.0.10.in-addr.arpa."]),
        ("10.0.0.0/8", ["10.in-addr.arpa."]),
        ("10.1.0.0/16", ["1.10.in-addr.arpa."]),
        ("192.168.1.7/32", ["7.1.168.192.in-addr.arpa."]),
        ("10.0.0.7/24", ["0.0.10.in-addr.arpa."]),  # host bits are ignored
        ("0.0.0.0/0", ["in-addr.arpa."]),
        ("172.16.0.0/14", [f"{i}.172.in-addr.arpa." for i in range(16, 20)]),
        ("fd00::/64", ["0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."]),
        ("2001:db8::/32", ["8.b.d.0.1.0.0.2.ip6.arpa."]),
        ("::/0", ["ip6.arpa."]),
        (
            "2001:db8::/30",
            [
                "8.b.d.0.1.0.0.2.ip6.arpa.",
                "9.b.d.0.1.0.0.2.ip6.arpa.",
                "a.b.d.0.1.0.0.2.ip6.arpa.",
                "b.b.d.0.1.0.0.2.ip6.arpa.",
            ],
        ),
        ("fd00::/7", ["c.f.ip6.arpa.", "d.f.ip6.arpa."]),
    ],
)
def test_reverse_zones(key: str, expected: list[str]) -> None:
    assert reverse_zones_for_cidr(key) == expected
    assert zones(key) == [(z, 53) for z in expected]


def test_non_octet_ipv4_prefix_expands_to_covered_zones() -> None:
    got = reverse_zones_for_cidr("10.0.0.0/17")
    assert len(got) == 128
    assert got[0] == "0.0.10.in-addr.arpa."
    assert got[-1] == "127.0.10.in-addr.arpa."
    assert got == [f"{i}.0.10.in-addr.arpa." for i in range(128)]
    assert len(reverse_zones_for_cidr("10.0.0.128/25")) == 128
    assert reverse_zones_for_cidr("10.0.0.128/25")[0] == "128.0.0.10.in-addr.arpa."


def test_non_nibble_ipv6_prefix_expands_to_covered_zones() -> None:
    got = reverse_zones_for_cidr("fd00::/66")
    base = "0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
    assert got == [f"{n}.{base}" for n in "0123"]


def test_cidr_keys_with_port_and_scheme() -> None:
    assert zones("10.0.0.0/24:1053") == [("0.0.10.in-addr.arpa.", 1053)]
    assert zones("dns://10.0.0.0/8:5353") == [("10.in-addr.arpa.", 5353)]
    assert zones("fd00::/64:1053") == [("0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", 1053)]
    assert zones("10.0.0.0/17:1053")[-1] == ("127.0.10.in-addr.arpa.", 1053)


@pytest.mark.parametrize("scheme", ["tls", "https", "grpc", "quic", "TLS", "grpcs", "udp"])
def test_rejected_transports(scheme: str) -> None:
    with pytest.raises(CorefileError) as exc:
        normalize_key(f"{scheme}://example.org:853", 53, "Corefile", 4)
    assert str(exc.value).startswith("Corefile:4 - Error during parsing: Transport")
    assert f"'{scheme.lower()}://'" in exc.value.message
    assert "not supported by dnsd" in exc.value.message


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("example.org:0", "Port 0 in server block key 'example.org:0' is out of range (1-65535)"),
        (".:65536", "out of range"),
        (".:99999999", "out of range"),
        ("example.org:", "Expecting a port after the last colon"),
        ("example.org:abc", "Invalid port 'abc'"),
        ("example.org:-1", "Invalid port '-1'"),
        ("10.0.0.0/33", "Invalid CIDR '10.0.0.0/33'"),
        ("300.0.0.0/8", "Invalid CIDR"),
        ("fd00::/129", "Invalid CIDR"),
        ("foo/24", "Invalid CIDR"),
        ("10.0.0.0/", "Invalid CIDR"),
        ("a..b", "is not a valid zone name"),
        ("(snippet)", "is not a valid zone name"),
        ("x" * 64 + ".org", "is not a valid zone name"),
        (".".join(["abcdefghij"] * 26), "is not a valid zone name"),
    ],
)
def test_invalid_keys(key: str, message: str) -> None:
    with pytest.raises(CorefileError) as exc:
        normalize_key(key, 53, "conf/Corefile", 9)
    assert (exc.value.file, exc.value.line) == ("conf/Corefile", 9)
    assert message in exc.value.message


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "nonsense", "1.2.3/8", ""])
def test_reverse_zones_for_invalid_cidr_raises_value_error(cidr: str) -> None:
    with pytest.raises(ValueError):
        reverse_zones_for_cidr(cidr)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".", "."),
        ("", "."),
        ("example.org", "example.org."),
        ("Example.ORG.", "example.org."),
        ("CLUSTER.local", "cluster.local."),
    ],
)
def test_normalize_zone(name: str, expected: str) -> None:
    assert normalize_zone(name) == expected
