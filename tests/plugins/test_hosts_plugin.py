"""The hosts plugin: hosts file and inline entries, PTR, fallthrough, reload and errors."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from support import ROOT, dig, query

from dnsd.corefile import CorefileError, parse
from dnsd.plugins.hosts import DEFAULT_PATH, reverse_address
from dnsd.serve.runtime import Runtime

HOSTS = ROOT / "zones" / "hosts.example"


def build(corefile: str, config_file: str = "Corefile") -> Runtime:
    return Runtime.build(parse(corefile, config_file), default_port=1053, config_file=config_file)


async def ask(rt: Runtime, name: str, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    wire = await rt.engines[("", 1053)].handle(q.to_wire())
    assert wire is not None
    return dns.message.from_wire(bytes(wire))


def lines(section: list) -> list[str]:  # type: ignore[type-arg]
    return [line for rrset in section for line in rrset.to_text().splitlines()]


def dig_records(out: str) -> list[str]:
    """The resource records dig printed, whitespace normalised."""
    return [" ".join(x.split()) for x in out.splitlines() if x.strip() and not x.startswith(";")]


def aa(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AA)


def from_whoami(msg: dns.message.Message) -> bool:
    """Did the query reach the whoami plugin behind hosts?"""
    return any(s.rdtype == dns.rdatatype.SRV for s in msg.additional)


@pytest.fixture(scope="module")
def hosts() -> Runtime:
    return build(f""". {{
    hosts {HOSTS} example.net hosts.test {{
        10.0.0.1 www.example.net Inline.Example.NET
        fd00::10 inline.example.net
        10.0.0.2 outside.example.org
        fallthrough hosts.test
    }}
    whoami
}}
""")


# --------------------------------------------------------------------------- forward answers


async def test_inline_answer_keeps_the_query_case(hosts: Runtime) -> None:
    r = await ask(hosts, "INLINE.example.net", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert not r.flags & dns.flags.RA
    assert lines(r.answer) == ["INLINE.example.net. 3600 IN A 10.0.0.1"]
    assert r.authority == [] and r.additional == []
    r = await ask(hosts, "inline.example.net", "AAAA")
    assert lines(r.answer) == ["inline.example.net. 3600 IN AAAA fd00::10"]


async def test_file_answers(hosts: Runtime) -> None:
    r = await ask(hosts, "Web.Example.Net", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["Web.Example.Net. 3600 IN A 192.0.2.100"]
    r = await ask(hosts, "web.example.net", "AAAA")
    assert lines(r.answer) == ["web.example.net. 3600 IN AAAA 2001:db8::100"]
    r = await ask(hosts, "gw.hosts.test", "A")
    assert lines(r.answer) == ["gw.hosts.test. 3600 IN A 10.1.0.1"]


async def test_inline_entries_win_over_the_file(hosts: Runtime) -> None:
    r = await ask(hosts, "www.example.net", "A")  # the file says 192.0.2.100
    assert lines(r.answer) == ["www.example.net. 3600 IN A 10.0.0.1"]
    r = await ask(hosts, "100.2.0.192.in-addr.arpa", "PTR")
    assert lines(r.answer) == ["100.2.0.192.in-addr.arpa. 3600 IN PTR web.example.net."]


async def test_known_name_without_the_type_is_nodata(hosts: Runtime) -> None:
    for name, rdtype in (("db.example.net", "AAAA"), ("web.example.net", "MX"),
                         ("web.example.net", "TXT")):
        r = await ask(hosts, name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR and aa(r), (name, rdtype)
        assert r.answer == [] and r.authority == [] and r.additional == []


async def test_unknown_name_is_servfail_like_coredns(hosts: Runtime) -> None:
    # CoreDNS's hosts has no SOA for an NXDOMAIN, so it answers SERVFAIL.
    r = await ask(hosts, "nope.example.net", "A")
    assert r.rcode() == dns.rcode.SERVFAIL and not aa(r)
    assert r.answer == [] and r.authority == []
    r = await ask(hosts, "nope.example.net", "MX")
    assert r.rcode() == dns.rcode.SERVFAIL


async def test_fallthrough_only_for_its_zones(hosts: Runtime) -> None:
    r = await ask(hosts, "nope.hosts.test", "A")
    assert r.rcode() == dns.rcode.NOERROR and from_whoami(r)
    r = await ask(hosts, "printer.hosts.test", "MX")  # known: NODATA, no fallthrough
    assert r.answer == [] and not from_whoami(r) and aa(r)


async def test_names_outside_the_zones_go_to_the_next_plugin(hosts: Runtime) -> None:
    r = await ask(hosts, "outside.example.org", "A")  # inline, but not in the zones: dropped
    assert from_whoami(r)
    r = await ask(hosts, "localhost", "A")  # in the file, not in the zones
    assert from_whoami(r)


async def test_plain_fallthrough_covers_every_zone() -> None:
    rt = build("example.net {\n  hosts {\n    10.0.0.1 a.example.net\n    fallthrough\n  }\n  whoami\n}\n")
    assert from_whoami(await ask(rt, "b.example.net", "A"))
    assert lines((await ask(rt, "a.example.net", "A")).answer) == ["a.example.net. 3600 IN A 10.0.0.1"]


# --------------------------------------------------------------------------- reverse answers


async def test_ptr_answers(hosts: Runtime) -> None:
    r = await ask(hosts, "1.0.1.10.in-addr.arpa", "PTR")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["1.0.1.10.in-addr.arpa. 3600 IN PTR gateway.hosts.test.",
                               "1.0.1.10.in-addr.arpa. 3600 IN PTR gw.hosts.test."]
    name = dns.reversename.from_address("2001:db8::100").to_text()
    r = await ask(hosts, name, "PTR")
    assert lines(r.answer) == [f"{name} 3600 IN PTR web.example.net."]
    name = dns.reversename.from_address("fd00::10").to_text().upper()
    r = await ask(hosts, name, "PTR")
    assert lines(r.answer) == [f"{name} 3600 IN PTR inline.example.net."]


async def test_unknown_or_malformed_ptr_goes_to_the_next_plugin(hosts: Runtime) -> None:
    for name in ("9.9.9.9.in-addr.arpa", "1.0.1.in-addr.arpa", "web.example.net",
                 "2.0.0.10.in-addr.arpa"):  # outside.example.org was dropped: no PTR either
        r = await ask(hosts, name, "PTR")
        assert from_whoami(r), name


async def test_no_reverse_and_ttl() -> None:
    rt = build(""". {
    hosts {
        10.0.0.1 a.example.net
        ttl 60
        no_reverse
    }
    whoami
}
""")
    r = await ask(rt, "a.example.net", "A")
    assert lines(r.answer) == ["a.example.net. 60 IN A 10.0.0.1"]
    assert from_whoami(await ask(rt, "1.0.0.10.in-addr.arpa", "PTR"))
    rt = build(". {\n  hosts {\n    10.0.0.1 a.example.net\n    ttl 60\n  }\n}\n")
    r = await ask(rt, "1.0.0.10.in-addr.arpa", "PTR")
    assert lines(r.answer) == ["1.0.0.10.in-addr.arpa. 60 IN PTR a.example.net."]


async def test_mapped_zoned_and_bogus_addresses_are_ignored(tmp_path: Path) -> None:
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(
        "::ffff:10.0.0.5 mapped.example.net\n"
        "fe80::1%eth0 zoned.example.net\n"
        "123.123.123 bogus.example.net\n"
        "10.0.0.6\n"
        "10.0.0.7 ok.example.net # comment mentioning bogus.example.net\n"
    )
    rt = build(f"example.net {{\n  hosts {hosts_file} {{\n    fe80::2%lo also-zoned.example.net\n  }}\n}}\n")
    for name in ("mapped", "zoned", "bogus", "also-zoned"):
        r = await ask(rt, f"{name}.example.net", "A")
        assert r.rcode() == dns.rcode.SERVFAIL, name
        r = await ask(rt, f"{name}.example.net", "AAAA")
        assert r.rcode() == dns.rcode.SERVFAIL, name
    r = await ask(rt, "ok.example.net", "A")
    assert lines(r.answer) == ["ok.example.net. 3600 IN A 10.0.0.7"]


@given(st.ip_addresses())
def test_reverse_names_round_trip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assume(addr.version == 4 or addr.ipv4_mapped is None)  # dnspython maps those to in-addr
    name = dns.reversename.from_address(str(addr)).to_text().lower()
    assert reverse_address(name) == str(addr)


def test_reverse_address_rejects_non_addresses() -> None:
    for name in ("4.3.2.in-addr.arpa.", "256.3.2.1.in-addr.arpa.", "x.3.2.1.in-addr.arpa.",
                 "1.ip6.arpa.", "example.org.", "in-addr.arpa."):
        assert reverse_address(name) is None


# --------------------------------------------------------------------------- files


async def test_missing_file_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dnsd"):
        rt = build("example.net {\n  hosts /nonexistent/hosts {\n    10.0.0.1 a.example.net\n  }\n}\n")
    assert "File does not exist: /nonexistent/hosts" in caplog.text
    r = await ask(rt, "a.example.net", "A")
    assert lines(r.answer) == ["a.example.net. 3600 IN A 10.0.0.1"]


def test_default_file_is_etc_hosts() -> None:
    rt = build("example.net {\n  hosts\n}\n")
    assert rt.plugins[0].path == DEFAULT_PATH == "/etc/hosts"  # type: ignore[attr-defined]


async def test_relative_path_found_next_to_the_corefile(tmp_path: Path) -> None:
    (tmp_path / "my.hosts").write_text("10.0.0.8 rel.example.net\n")
    rt = build("example.net {\n  hosts my.hosts\n}\n", config_file=str(tmp_path / "Corefile"))
    r = await ask(rt, "rel.example.net", "A")
    assert lines(r.answer) == ["rel.example.net. 3600 IN A 10.0.0.8"]


def write_hosts(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
async def reloading(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Path]]:
    hosts_file = tmp_path / "hosts"
    write_hosts(hosts_file, "10.0.0.1 host.example.net\n")
    rt = build(f"example.net {{\n  hosts {hosts_file} {{\n    reload 50ms\n    10.9.9.9 fixed.example.net\n  }}\n}}\n")
    await rt.start_plugins()
    try:
        yield rt, hosts_file
    finally:
        await rt.stop_plugins()


async def eventually(rt: Runtime, name: str, want: list[str], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await ask(rt, name, "A")
        got = [rd.address for s in r.answer for rd in s]
        if got == want:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{name}: {got} != {want}"
        await asyncio.sleep(0.02)


async def test_reload_picks_up_a_changed_file(reloading: tuple[Runtime, Path]) -> None:
    rt, hosts_file = reloading
    await eventually(rt, "host.example.net", ["10.0.0.1"])
    write_hosts(hosts_file, "10.0.0.2 host.example.net\n10.0.0.3 new.example.net\n")
    await eventually(rt, "host.example.net", ["10.0.0.2"])
    await eventually(rt, "new.example.net", ["10.0.0.3"])
    await eventually(rt, "fixed.example.net", ["10.9.9.9"])  # inline entries stay


async def test_deleted_file_keeps_the_last_entries(reloading: tuple[Runtime, Path]) -> None:
    rt, hosts_file = reloading
    hosts_file.unlink()
    await asyncio.sleep(0.2)
    await eventually(rt, "host.example.net", ["10.0.0.1"])


async def test_stop_cancels_the_reload_task(tmp_path: Path) -> None:
    hosts_file = tmp_path / "hosts"
    write_hosts(hosts_file, "10.0.0.1 host.example.net\n")
    rt = build(f"example.net {{\n  hosts {hosts_file} {{\n    reload 50ms\n  }}\n}}\n")
    await rt.start_plugins()
    task = rt.plugins[0]._task  # type: ignore[attr-defined]
    assert task is not None and not task.done()
    await rt.stop_plugins()
    assert task.done()
    write_hosts(hosts_file, "10.0.0.2 host.example.net\n")
    await asyncio.sleep(0.2)
    await eventually(rt, "host.example.net", ["10.0.0.1"])


async def test_reload_zero_starts_no_task(tmp_path: Path) -> None:
    hosts_file = tmp_path / "hosts"
    write_hosts(hosts_file, "10.0.0.1 host.example.net\n")
    rt = build(f"example.net {{\n  hosts {hosts_file} {{\n    reload 0\n  }}\n}}\n")
    await rt.start_plugins()
    assert rt.plugins[0]._task is None  # type: ignore[attr-defined]
    await rt.stop_plugins()


# --------------------------------------------------------------------------- Corefile errors


@pytest.mark.parametrize(("body", "line", "problem"), [
    ("hosts {\n    ttl abc\n  }", 3, "invalid number 'abc'"),
    ("hosts {\n    ttl 0\n  }", 3, "out of range"),
    ("hosts {\n    ttl\n  }", 3, "ttl needs a time in second"),
    ("hosts {\n    reload soon\n  }", 3, "invalid duration 'soon'"),
    ("hosts {\n    reload -1s\n  }", 3, "must be at least"),
    ("hosts {\n    10.0.0.1 a.example.net\n    bogus value\n  }", 4, "unknown property 'bogus'"),
    ("hosts {\n    10.0.0.1\n  }", 3, "no host name after address '10.0.0.1'"),
    ("hosts {\n    no_reverse please\n  }", 3, "Wrong argument count"),
    ("hosts {\n    fallthrough 10.0.0.0/33\n  }", 3, "invalid CIDR"),
    ("hosts\n  hosts", 3, "can only be used once per server block"),
])
def test_corefile_errors(body: str, line: int, problem: str) -> None:
    with pytest.raises(CorefileError) as exc:
        build(f"example.net {{\n  {body}\n}}\n")
    assert exc.value.line == line
    assert problem in exc.value.message


# --------------------------------------------------------------------------- real sockets


def test_real_server_inline_and_ptr(dnsd) -> None:  # type: ignore[no-untyped-def]
    server = dnsd(f""".:{{PORT}} {{
    hosts {HOSTS} example.net hosts.test {{
        10.0.0.1 www.example.net
        ttl 120
    }}
}}
""")
    out = dig("WWW.example.net", "A", port=server.port)
    assert "status: NOERROR" in out and " aa" in out.split("flags:")[1].split(";")[0]
    assert dig_records(out) == ["WWW.example.net. 120 IN A 10.0.0.1"]
    out = dig("-x", "10.1.0.2", port=server.port)
    assert dig_records(out) == ["2.0.1.10.in-addr.arpa. 120 IN PTR printer.hosts.test."]
    out = dig("+tcp", "-x", "fd00::2", port=server.port)
    name = dns.reversename.from_address("fd00::2").to_text()
    assert dig_records(out) == [f"{name} 120 IN PTR printer.hosts.test."]
    r = query("printer.hosts.test", "AAAA", port=server.port)
    assert lines(r.answer) == ["printer.hosts.test. 120 IN AAAA fd00::2"]
    r = query("nope.hosts.test", "A", port=server.port, tcp=True)
    assert r.rcode() == dns.rcode.SERVFAIL
