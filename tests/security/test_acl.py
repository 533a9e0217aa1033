"""acl: CoreDNS's allow / block / filter / drop by query type and source network.

Most cases go through the sans-IO engine, which takes the client address as a parameter (so
other networks than 127.0.0.1 can be tried without any traffic); the socket tests check the
real listeners (REFUSED, NODATA, silence) and that prepared answers never bypass a rule.
"""

from __future__ import annotations

import asyncio
import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from support import ROOT, query
from upstream import serve_corefile

from dnsd.corefile import CorefileError, parse
from dnsd.serve.engine import Engine
from dnsd.serve.runtime import Runtime

ZONE_FILE = str(ROOT / "zones" / "example.org")


def engine_for(text: str) -> Engine:
    runtime = Runtime.build(parse(text), default_port=53)
    return runtime.engines[("", 53)]


def handle(engine: Engine, name: str, rdtype: str = "A", client: str = "127.0.0.1",
           proto: str = "udp") -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype)
    wire = asyncio.run(engine.handle(q.to_wire(), client, 5353, proto))
    if wire is None:
        return None
    reply = dns.message.from_wire(wire)
    assert reply.id == q.id and reply.flags & dns.flags.QR
    return reply


def block(rules: str, zones: str = "") -> str:
    return (f".:53 {{\n acl {zones} {{\n{rules}\n }}\n file {ZONE_FILE} example.org\n"
            " whoami\n}\n")


# --- decisions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "client", "rdtype", "expected"), [
    # no rule matches: allowed
    ("block net 10.0.0.0/8", "192.168.1.1", "A", "NOERROR"),
    # block -> REFUSED, filter -> NODATA, drop -> nothing
    ("block net 10.0.0.0/8", "10.1.2.3", "A", "REFUSED"),
    ("filter net 10.0.0.0/8", "10.1.2.3", "A", "NODATA"),
    ("drop net 10.0.0.0/8", "10.1.2.3", "A", "DROP"),
    # type only, net only, both; wildcards
    ("block type AAAA", "10.1.2.3", "AAAA", "REFUSED"),
    ("block type AAAA", "10.1.2.3", "A", "NOERROR"),
    ("block type A AAAA net 10.0.0.0/8", "10.1.2.3", "AAAA", "REFUSED"),
    ("block type A AAAA net 10.0.0.0/8", "11.1.2.3", "AAAA", "NOERROR"),
    ("block type * net *", "203.0.113.9", "MX", "REFUSED"),
    ("block", "2001:db8::1", "TXT", "REFUSED"),
    # a bare address is a /32 (/128); host bits of a CIDR are masked off like Go does
    ("block net 10.1.2.3", "10.1.2.3", "A", "REFUSED"),
    ("block net 10.1.2.3", "10.1.2.4", "A", "NOERROR"),
    ("block net 10.1.2.3/24", "10.1.2.200", "A", "REFUSED"),
    # IPv6 sources and networks; an IPv4 network never matches an IPv6 client
    ("block net 2001:db8::/32", "2001:db8:1::5", "A", "REFUSED"),
    ("block net 2001:db8::/32", "2001:db9::5", "A", "NOERROR"),
    ("block net 0.0.0.0/0", "2001:db8::5", "A", "NOERROR"),
    ("block net ::/0", "10.0.0.1", "A", "NOERROR"),
    ("block net fe80::1", "fe80::1%eth0", "A", "REFUSED"),
    # first matching rule wins, whatever comes after
    ("allow net 10.0.0.0/8\n block", "10.9.9.9", "A", "NOERROR"),
    ("allow net 10.0.0.0/8\n block", "11.9.9.9", "A", "REFUSED"),
    ("filter type A\n block", "10.9.9.9", "A", "NODATA"),
    ("filter type A\n block", "10.9.9.9", "MX", "REFUSED"),
    ("drop type TXT net 192.168.0.0/16\n allow net 192.168.0.0/16\n block", "192.168.3.3", "TXT",
     "DROP"),
    ("drop type TXT net 192.168.0.0/16\n allow net 192.168.0.0/16\n block", "192.168.3.3", "A",
     "NOERROR"),
    # keywords are case-insensitive; a block with no rules allows everything
    ("BLOCK NET 10.0.0.0/8", "10.0.0.1", "A", "REFUSED"),
    ("", "10.0.0.1", "A", "NOERROR"),
])
def test_rules(rules: str, client: str, rdtype: str, expected: str) -> None:
    reply = handle(engine_for(block(rules)), "www.example.org.", rdtype, client)
    if expected == "DROP":
        assert reply is None
        return
    assert reply is not None
    if expected == "NODATA":
        assert reply.rcode() == dns.rcode.NOERROR
        assert not reply.answer and not reply.authority and not reply.additional
        assert not reply.flags & dns.flags.AA  # CoreDNS's SetRcode reply: not authoritative
    else:
        assert dns.rcode.to_text(reply.rcode()) == expected
        if expected == "REFUSED":
            assert not reply.answer and not reply.flags & dns.flags.AA
        else:
            assert reply.answer or rdtype not in ("A", "AAAA")


def test_zones_limit_the_rules() -> None:
    engine = engine_for(block("block", zones="example.org"))
    assert handle(engine, "www.example.org.", client="10.0.0.1").rcode() == dns.rcode.REFUSED
    assert handle(engine, "Sub.Example.ORG.", client="10.0.0.1").rcode() == dns.rcode.REFUSED
    other = handle(engine, "host.example.net.", client="10.0.0.1")
    assert other.rcode() == dns.rcode.NOERROR  # whoami, outside the acl's zone


def test_several_acl_directives_are_checked_in_order() -> None:
    text = (f".:53 {{\n acl example.org {{\n  allow net 10.0.0.0/8\n }}\n"
            f" acl {{\n  block net 10.0.0.0/8\n  filter net 192.168.0.0/16\n }}\n"
            f" file {ZONE_FILE} example.org\n whoami\n}}\n")
    engine = engine_for(text)
    # the first acl allows 10/8 for example.org: checking stops there
    assert handle(engine, "www.example.org.", client="10.1.1.1").rcode() == dns.rcode.NOERROR
    # other names fall to the second acl
    assert handle(engine, "x.test.", client="10.1.1.1").rcode() == dns.rcode.REFUSED
    nodata = handle(engine, "www.example.org.", client="192.168.1.1")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


def test_acl_runs_before_the_other_plugins() -> None:
    # The Corefile order does not matter: acl comes early in CoreDNS's plugin order.
    text = f".:53 {{\n file {ZONE_FILE} example.org\n acl {{\n  block type MX\n }}\n}}\n"
    assert handle(engine_for(text), "example.org.", "MX").rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(("rules", "message"), [
    ("permit", "unexpected token 'permit'; expect 'allow', 'block', 'filter' or 'drop'"),
    ("block type", "no token specified in 'type' section"),
    ("block net", "no token specified in 'net' section"),
    ("block type FOO", "unexpected token 'FOO'; expect legal QTYPE"),
    ("block type a", "unexpected token 'a'; expect legal QTYPE"),
    ("block net 10.0.0.300/8", "illegal CIDR notation '10.0.0.300/8'"),
    ("block net example.org", "illegal CIDR notation 'example.org/32'"),
    ("block 10.0.0.0/8", "unexpected token '10.0.0.0/8'; expect 'type | net'"),
    ("block net 10.0.0.0/8 to 1.2.3.4", "illegal CIDR notation 'to/32'"),
])
def test_setup_errors(rules: str, message: str) -> None:
    with pytest.raises(CorefileError) as err:
        engine_for(block(rules))
    assert message in str(err.value)
    assert "Corefile:" in str(err.value)


# --- through the sockets ----------------------------------------------------------------------


def udp_silent(port: int, name: str, rdtype: str = "A", wait: float = 0.6) -> bool:
    """True when a UDP query gets no reply at all within ``wait`` seconds."""
    q = dns.message.make_query(name, rdtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(q.to_wire(), ("127.0.0.1", port))
        try:
            s.recvfrom(65535)
        except TimeoutError:
            return True
    return False


async def test_sockets_block_filter_drop_and_allow() -> None:
    conf = (f".:{{PORT}} {{\n acl {{\n  drop type TXT\n  filter type MX\n  block type AAAA\n"
            f"  allow net 127.0.0.0/8\n  block\n }}\n file {ZONE_FILE} example.org\n}}\n")
    async with serve_corefile(conf) as srv:
        def check() -> None:
            for tcp in (False, True):
                assert query("example.org.", "AAAA", port=srv.port, tcp=tcp).rcode() == dns.rcode.REFUSED
                mx = query("example.org.", "MX", port=srv.port, tcp=tcp)
                assert mx.rcode() == dns.rcode.NOERROR and not mx.answer
                ok = query("www.example.org.", "A", port=srv.port, tcp=tcp)
                assert ok.rcode() == dns.rcode.NOERROR and ok.answer
            assert udp_silent(srv.port, "example.org.", "TXT")
            with pytest.raises(dns.exception.Timeout):  # also silence over TCP
                query("example.org.", "TXT", port=srv.port, tcp=True, timeout=0.6)
            assert query("www.example.org.", "A", port=srv.port).answer  # still serving
        await asyncio.to_thread(check)


async def test_prepared_answers_never_bypass_a_network_rule() -> None:
    """The hot path keys answers by the question only; a network rule must still apply to
    every asker, so replies passing such an acl are never prepared."""
    conf = (f".:{{PORT}} {{\n acl {{\n  block net 10.0.0.0/8\n }}\n file {ZONE_FILE} example.org\n}}\n")
    async with serve_corefile(conf) as srv:
        engine = next(iter(srv.server.runtime.engines.values()))
        q = dns.message.make_query("www.example.org.", "A").to_wire()
        for _ in range(3):  # allowed (127.0.0.1) answers, asked repeatedly over the socket
            assert (await asyncio.to_thread(query, "www.example.org.", "A", port=srv.port)).answer
        assert engine.fast(q, "udp", "10.0.0.1") == (None, engine.fast(q, "udp", "10.0.0.1")[1])
        assert not engine.prepared.entries
        refused = await engine.handle(q, "10.0.0.1", 5353, "udp")
        assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED


async def test_type_only_rules_keep_the_hot_path() -> None:
    conf = (f".:{{PORT}} {{\n acl {{\n  block type MX\n }}\n file {ZONE_FILE} example.org\n}}\n")
    async with serve_corefile(conf) as srv:
        engine = next(iter(srv.server.runtime.engines.values()))
        for _ in range(2):
            assert (await asyncio.to_thread(query, "www.example.org.", "A", port=srv.port)).answer
        assert engine.prepared.entries  # the decision depends on the question only

