"""The file plugin: zone file parsing, authoritative answers, reload, and Corefile errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from support import ROOT, dig, query

from dnsd.corefile import CorefileError, parse
from dnsd.plugins.file import ZoneFileError, parse_zone
from dnsd.serve.runtime import Runtime

ZONE = ROOT / "zones" / "example.org"
NS_AUTH = [
    "example.org. 3600 IN NS ns1.example.org.",
    "example.org. 3600 IN NS ns2.example.org.",
]
NEG_SOA = [
    "example.org. 300 IN SOA ns1.example.org. hostmaster.example.org. "
    "2024010101 7200 3600 1209600 300"
]


def build(corefile: str, config_file: str = "Corefile") -> Runtime:
    return Runtime.build(parse(corefile, config_file), default_port=1053, config_file=config_file)


async def ask(rt: Runtime, name: str, rdtype: str = "A", proto: str = "udp",
              **kw: object) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    wire = await rt.engines[("", 1053)].handle(q.to_wire(), proto=proto)
    assert wire is not None
    return dns.message.from_wire(bytes(wire))


def lines(section: list) -> list[str]:  # type: ignore[type-arg]
    return [line for rrset in section for line in rrset.to_text().splitlines()]


def dig_records(out: str) -> list[str]:
    """The resource records dig printed, whitespace normalised."""
    return [" ".join(x.split()) for x in out.splitlines() if x.strip() and not x.startswith(";")]


def aa(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AA)


@pytest.fixture(scope="module")
def example() -> Runtime:
    """example.org from zones/example.org, plus whoami to show what falls through."""
    return build(f"example.org example.com {{\n    file {ZONE} example.org\n    whoami\n}}\n")


# --------------------------------------------------------------------------- positive answers


async def test_exact_answer_keeps_the_query_case(example: Runtime) -> None:
    r = await ask(example, "WwW.Example.ORG", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert not r.flags & dns.flags.RA
    assert lines(r.answer) == ["WwW.Example.ORG. 3600 IN A 192.0.2.10"]
    assert lines(r.authority) == NS_AUTH
    assert r.additional == []


async def test_aaaa_and_txt(example: Runtime) -> None:
    r = await ask(example, "www.example.org", "AAAA")
    assert lines(r.answer) == ["www.example.org. 3600 IN AAAA 2001:db8::10"]
    r = await ask(example, "example.org", "TXT")
    assert lines(r.answer) == ['example.org. 3600 IN TXT "v=spf1 -all"']


async def test_apex_soa(example: Runtime) -> None:
    r = await ask(example, "example.org", "SOA")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == [
        "example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. "
        "2024010101 7200 3600 1209600 300"
    ]
    assert lines(r.authority) == NS_AUTH


async def test_apex_ns_with_glue(example: Runtime) -> None:
    r = await ask(example, "Example.org", "NS")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["Example.org. 3600 IN NS ns1.example.org.",
                               "Example.org. 3600 IN NS ns2.example.org."]
    assert r.authority == []
    assert lines(r.additional) == ["ns1.example.org. 3600 IN A 192.0.2.2",
                                   "ns2.example.org. 3600 IN A 192.0.2.3"]


async def test_mx_and_srv_get_target_addresses(example: Runtime) -> None:
    r = await ask(example, "example.org", "MX")
    assert lines(r.answer) == ["example.org. 3600 IN MX 10 mail.example.org."]
    assert lines(r.additional) == ["mail.example.org. 3600 IN A 192.0.2.25"]
    r = await ask(example, "_sip._udp.example.org", "SRV")
    assert lines(r.answer) == ["_sip._udp.example.org. 3600 IN SRV 10 60 5060 sip.example.org."]
    assert lines(r.additional) == ["sip.example.org. 3600 IN A 192.0.2.50"]


async def test_big_rrset_truncated_over_udp_complete_over_tcp(example: Runtime) -> None:
    r = await ask(example, "big.example.org", "A")
    assert r.flags & dns.flags.TC
    assert 0 < len(r.answer[0]) < 40
    r = await ask(example, "big.example.org", "A", proto="tcp")
    assert not r.flags & dns.flags.TC
    assert sorted(rd.address for rd in r.answer[0]) == sorted(
        f"198.51.100.{i}" for i in range(1, 41))
    r = await ask(example, "big.example.org", "A", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 40


# --------------------------------------------------------------------------- CNAMEs


async def test_cname_chased_inside_the_zone(example: Runtime) -> None:
    r = await ask(example, "WWW2.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["WWW2.example.org. 3600 IN CNAME www.example.org.",
                               "www.example.org. 3600 IN A 192.0.2.10"]
    assert lines(r.authority) == NS_AUTH
    r = await ask(example, "www2.example.org", "AAAA")
    assert lines(r.answer) == ["www2.example.org. 3600 IN CNAME www.example.org.",
                               "www.example.org. 3600 IN AAAA 2001:db8::10"]


async def test_cname_query_returns_only_the_cname(example: Runtime) -> None:
    r = await ask(example, "www2.example.org", "CNAME")
    assert lines(r.answer) == ["www2.example.org. 3600 IN CNAME www.example.org."]
    assert lines(r.authority) == NS_AUTH


async def test_cname_to_name_without_the_type_is_nodata(example: Runtime) -> None:
    r = await ask(example, "www2.example.org", "MX")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["www2.example.org. 3600 IN CNAME www.example.org."]
    assert lines(r.authority) == NEG_SOA


async def test_cname_out_of_zone_is_not_chased(example: Runtime) -> None:
    r = await ask(example, "alias-out.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["alias-out.example.org. 3600 IN CNAME www.example.net."]
    assert lines(r.authority) == NS_AUTH


async def test_cname_loop_stops(example: Runtime) -> None:
    r = await ask(example, "loop1.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["loop1.example.org. 3600 IN CNAME loop2.example.org.",
                               "loop2.example.org. 3600 IN CNAME loop1.example.org."]


async def test_long_cname_chain_is_cut_after_max_hops(tmp_path: Path) -> None:
    chain = "\n".join(f"c{i} CNAME c{i + 1}" for i in range(20))
    zone = tmp_path / "chain.test"
    zone.write_text(f"$TTL 60\n@ SOA ns hm 1 2 3 4 5\n{chain}\nc20 A 10.0.0.20\n")
    rt = build(f"chain.test {{\n  file {zone}\n}}\n")
    r = await ask(rt, "c0.chain.test", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(r.answer) == 9 and all(s.rdtype == dns.rdatatype.CNAME for s in r.answer)
    r = await ask(rt, "c15.chain.test", "A")
    assert lines(r.answer)[-1] == "c20.chain.test. 60 IN A 10.0.0.20"


async def test_cname_to_missing_in_zone_name_is_nxdomain(tmp_path: Path) -> None:
    zone = tmp_path / "z.test"
    zone.write_text("$TTL 60\n@ SOA ns hm 1 2 3 4 30\ndangling CNAME gone\n")
    rt = build(f"z.test {{\n  file {zone}\n}}\n")
    r = await ask(rt, "dangling.z.test", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and aa(r)
    assert lines(r.answer) == ["dangling.z.test. 60 IN CNAME gone.z.test."]
    assert lines(r.authority) == ["z.test. 30 IN SOA ns.z.test. hm.z.test. 1 2 3 4 30"]


# --------------------------------------------------------------------------- negative answers


async def test_nodata_has_soa_with_negative_ttl(example: Runtime) -> None:
    r = await ask(example, "www.example.org", "MX")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert r.answer == [] and r.additional == []
    assert lines(r.authority) == NEG_SOA


async def test_nxdomain_has_soa(example: Runtime) -> None:
    r = await ask(example, "Nope.example.org", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and aa(r)
    assert r.answer == []
    assert lines(r.authority) == NEG_SOA


async def test_empty_non_terminals_are_nodata(example: Runtime) -> None:
    for name in ("deep.example.org", "b.deep.example.org", "wild.example.org", "_udp.example.org"):
        r = await ask(example, name, "A")
        assert r.rcode() == dns.rcode.NOERROR, name
        assert r.answer == [] and lines(r.authority) == NEG_SOA
    r = await ask(example, "a.b.deep.example.org", "A")
    assert lines(r.answer) == ["a.b.deep.example.org. 3600 IN A 192.0.2.77"]
    r = await ask(example, "c.deep.example.org", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_negative_soa_ttl_is_min_of_ttl_and_minimum(tmp_path: Path) -> None:
    zone = tmp_path / "z.test"
    zone.write_text("@ 100 IN SOA ns hm 1 2 3 4 600\n@ 100 NS ns\nns 100 A 10.0.0.1\n")
    rt = build(f"z.test {{\n  file {zone}\n}}\n")
    r = await ask(rt, "nope.z.test", "A")
    assert lines(r.authority) == ["z.test. 100 IN SOA ns.z.test. hm.z.test. 1 2 3 4 600"]


# --------------------------------------------------------------------------- wildcards


async def test_wildcard_synthesis(example: Runtime) -> None:
    r = await ask(example, "Foo.Wild.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert lines(r.answer) == ["Foo.Wild.example.org. 3600 IN A 192.0.2.99"]
    assert lines(r.authority) == NS_AUTH
    r = await ask(example, "a.b.wild.example.org", "A")
    assert lines(r.answer) == ["a.b.wild.example.org. 3600 IN A 192.0.2.99"]
    r = await ask(example, "foo.wild.example.org", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    assert lines(r.authority) == NEG_SOA


async def test_wildcard_rfc4592_closest_encloser(tmp_path: Path) -> None:
    zone = tmp_path / "w.test"
    zone.write_text(
        "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n"
        "* A 10.0.0.1\n"
        "www A 10.0.0.2\n"
        "a.b.deep A 10.0.0.3\n"
        "*.cn CNAME www\n"
    )
    rt = build(f"w.test {{\n  file {zone}\n}}\n")
    r = await ask(rt, "anything.w.test", "A")
    assert lines(r.answer) == ["anything.w.test. 60 IN A 10.0.0.1"]
    r = await ask(rt, "x.y.w.test", "A")  # closest encloser is the apex
    assert lines(r.answer) == ["x.y.w.test. 60 IN A 10.0.0.1"]
    # The closest encloser exists (www, or the empty non-terminal deep): no *.<it>, no match.
    for name in ("x.www.w.test", "x.deep.w.test", "x.b.deep.w.test"):
        r = await ask(rt, name, "A")
        assert r.rcode() == dns.rcode.NXDOMAIN, name
        assert r.answer == []
    r = await ask(rt, "deep.w.test", "A")  # an existing empty non-terminal: NODATA
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    r = await ask(rt, "*.w.test", "A")  # the wildcard itself
    assert lines(r.answer) == ["*.w.test. 60 IN A 10.0.0.1"]
    r = await ask(rt, "Q.cn.w.test", "A")  # a wildcard CNAME, chased
    assert lines(r.answer) == ["Q.cn.w.test. 60 IN CNAME www.w.test.",
                               "www.w.test. 60 IN A 10.0.0.2"]


# --------------------------------------------------------------------------- delegation


async def test_delegation_referral_with_glue(example: Runtime) -> None:
    for name, rdtype in (("sub.example.org", "A"), ("x.y.Sub.example.org", "AAAA"),
                         ("sub.example.org", "NS"), ("ns.sub.example.org", "A")):
        r = await ask(example, name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR, name
        assert not aa(r), name
        assert r.answer == []
        assert lines(r.authority) == ["sub.example.org. 3600 IN NS ns.sub.example.org."]
        assert lines(r.additional) == ["ns.sub.example.org. 3600 IN A 192.0.2.53"]


async def test_ds_at_the_cut_is_answered_by_the_parent(example: Runtime) -> None:
    r = await ask(example, "sub.example.org", "DS")
    assert r.rcode() == dns.rcode.NOERROR and aa(r)
    assert r.answer == [] and lines(r.authority) == NEG_SOA


# --------------------------------------------------------------------------- routing


async def test_names_outside_the_zones_go_to_the_next_plugin(example: Runtime) -> None:
    r = await ask(example, "www.example.com", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    assert any(s.rdtype == dns.rdatatype.SRV for s in r.additional)  # whoami answered


async def test_zone_transfers_are_refused(example: Runtime) -> None:
    for rdtype in ("AXFR", "IXFR"):
        q = dns.message.make_query("example.org", rdtype)
        wire = await example.engines[("", 1053)].handle(q.to_wire(), proto="tcp")
        r = dns.message.from_wire(bytes(wire))
        assert r.rcode() == dns.rcode.REFUSED and not aa(r) and r.answer == []


async def test_fallthrough_only_on_nxdomain(tmp_path: Path) -> None:
    rt = build(f". {{\n  file {ZONE} example.org {{\n    fallthrough\n  }}\n  whoami\n}}\n")
    r = await ask(rt, "nope.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and any(
        s.rdtype == dns.rdatatype.SRV for s in r.additional)
    r = await ask(rt, "www.example.org", "MX")  # NODATA stays with the zone
    assert lines(r.authority) == NEG_SOA
    rt = build(f". {{\n  file {ZONE} example.org {{\n    fallthrough other.org\n  }}\n  whoami\n}}\n")
    r = await ask(rt, "nope.example.org", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_one_file_for_two_origins_and_nested_zones(tmp_path: Path) -> None:
    zone = tmp_path / "generic.zone"
    zone.write_text("$TTL 60\n@ SOA ns hostmaster 7 2 3 4 5\n@ NS ns\nns A 10.0.0.53\nhost A 10.0.0.1\n")
    inner = tmp_path / "inner.zone"
    inner.write_text("$TTL 60\n@ SOA ns hostmaster 1 2 3 4 5\nhost A 10.9.9.9\n")
    rt = build(f". {{\n  file {zone} a.test b.test\n  file {inner} in.a.test\n}}\n")
    r = await ask(rt, "host.a.test", "A")
    assert lines(r.answer) == ["host.a.test. 60 IN A 10.0.0.1"]
    assert lines(r.authority) == ["a.test. 60 IN NS ns.a.test."]
    r = await ask(rt, "host.b.test", "A")
    assert lines(r.answer) == ["host.b.test. 60 IN A 10.0.0.1"]
    r = await ask(rt, "host.in.a.test", "A")  # the longest zone wins
    assert lines(r.answer) == ["host.in.a.test. 60 IN A 10.9.9.9"]
    r = await ask(rt, "c.test", "A")  # no zone: end of the chain
    assert r.rcode() == dns.rcode.SERVFAIL


async def test_zones_default_to_the_server_block(tmp_path: Path) -> None:
    zone = tmp_path / "db"
    zone.write_text("@ 60 SOA ns hm 1 2 3 4 5\nx 60 A 10.0.0.1\n")
    rt = build(f"one.test:1053 two.test:1053 {{\n  file {zone}\n}}\n")
    for origin in ("one.test", "two.test"):
        r = await ask(rt, f"x.{origin}", "A")
        assert lines(r.answer) == [f"x.{origin}. 60 IN A 10.0.0.1"]


async def test_relative_path_found_next_to_the_corefile(tmp_path: Path) -> None:
    (tmp_path / "rel.zone").write_text("@ 60 SOA ns hm 1 2 3 4 5\nx 60 A 10.0.0.7\n")
    rt = build("rel.test {\n  file rel.zone\n}\n", config_file=str(tmp_path / "Corefile"))
    r = await ask(rt, "x.rel.test", "A")
    assert lines(r.answer) == ["x.rel.test. 60 IN A 10.0.0.7"]


def test_relative_path_from_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    build("example.org {\n  file zones/example.org\n}\n", config_file="/nonexistent/Corefile")


# --------------------------------------------------------------------------- zone file syntax


def records(zone_text: str, origin: str = "example.test.") -> list[str]:
    z = parse_zone(zone_text, origin, "test.zone")
    return sorted(" ".join(rr.toZone().split()) for node in z.nodes.values() for rrs in node.values() for rr in rrs)


def test_zone_syntax_origin_ttl_parentheses_and_omitted_owners() -> None:
    text = """
$ORIGIN example.test.
$TTL 1h
@   IN SOA ( ns1 hostmaster   ; names relative to the origin
         42 2h 30m 1w 1d )     ; times with units
    NS ns1                      ; owner omitted: the previous one (the apex)
ns1 A 10.0.0.1
    IN 300 AAAA fd00::1         ; class before TTL
w   300 IN A 10.0.0.2
    A 10.0.0.3                  ; TTL: $TTL when no TTL is given
$ORIGIN sub.example.test.
x   CNAME @
y   MX 5 mail.example.test.
Mixed.Case A 10.0.0.4
"""
    assert records(text) == sorted([
        "example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. 42 7200 1800 604800 86400",
        "example.test. 3600 IN NS ns1.example.test.",
        "ns1.example.test. 3600 IN A 10.0.0.1",
        "ns1.example.test. 300 IN AAAA fd00::1",
        "w.example.test. 300 IN A 10.0.0.2",
        "w.example.test. 3600 IN A 10.0.0.3",
        "x.sub.example.test. 3600 IN CNAME sub.example.test.",
        "y.sub.example.test. 3600 IN MX 5 mail.example.test.",
        "Mixed.Case.sub.example.test. 3600 IN A 10.0.0.4",
    ])


def test_zone_syntax_previous_ttl_without_dollar_ttl() -> None:
    z = parse_zone("@ 120 SOA ns hm 1 2 3 4 5\na A 10.0.0.1\nb 30 A 10.0.0.2\nc A 10.0.0.3\n",
                   "t.", "t")
    ttl = {name: node[1][0].ttl for name, node in z.nodes.items() if 1 in node}
    assert ttl == {"a.t.": 120, "b.t.": 30, "c.t.": 30}


def test_zone_syntax_txt_caa_generic_and_escapes() -> None:
    text = r"""
@ 60 SOA ns hm 1 2 3 4 5
t1 60 TXT "a b;c" "second" plain
t2 60 TXT "quote\"inside" "\065\066"
c  60 CAA 0 issue "letsencrypt.org"
g  60 TYPE65280 \# 4 0A000001
h  60 A \# 4 0A000002
s  60 SRV 1 2 443 target
"""
    z = parse_zone(text, "e.test.", "e")
    assert z.nodes["t1.e.test."][16][0].rdata.data == [b"a b;c", b"second", b"plain"]
    assert z.nodes["t2.e.test."][16][0].rdata.data == [b'quote"inside', b"AB"]
    caa = z.nodes["c.e.test."][257][0].rdata
    assert (caa.flags, caa.tag, caa.value) == (0, "issue", "letsencrypt.org")
    assert z.nodes["g.e.test."][65280][0].rdata.data == b"\n\x00\x00\x01"
    assert z.nodes["h.e.test."][1][0].rdata.data == b"\n\x00\x00\x02"
    assert str(z.nodes["s.e.test."][33][0].rdata.target) == "target.e.test."


def test_zone_syntax_include(tmp_path: Path) -> None:
    (tmp_path / "part.zone").write_text("inc A 10.0.0.9\n")
    main = tmp_path / "main.zone"
    main.write_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n$INCLUDE part.zone\n$INCLUDE part.zone other\n")
    from dnsd.plugins.file import load_zone

    z = load_zone(str(main), "i.test.")
    # The optional origin of $INCLUDE is relative to the current origin, like any name.
    assert "inc.i.test." in z.nodes and "inc.other.i.test." in z.nodes


@pytest.mark.parametrize(("text", "problem"), [
    ("@ SOA ns hm 1 2 3 4 5\nx A 1.2.3\n", "line 2: bad A record: Expected 4 octets in '1.2.3'"),
    ("@ SOA ns hm 1 2 3 4 5\nx AAAA 10.0.0.1\n", "line 2: bad AAAA record:"),
    ("@ SOA ns hm 1 2 3 4 5\nx A 10.0.0.1 10.0.0.2\n", "line 2: bad A record: expected 1 fields, got 2"),
    ("@ SOA ns hm 1 2 3 4 5\nx SRV 1 2 99999 t\n", "bad SRV record: bad port '99999'"),
    ("@ SOA ns hm 1 2 3 4 5\nx TXT\n", "bad TXT record: TXT record needs at least one string"),
    ("@ SOA ns hm 1 2 3 4 5\nx\n", "line 2: missing record type"),
    ("@ SOA ns hm 1 2 3 4 5\nx BOGUS data\n", "unknown record type 'BOGUS'"),
    ("@ SOA ns hm 1 2 3 4 5\nx MX mail\n", "bad MX record: expected 2 fields, got 1"),
    ("@ SOA ns hm 1 2 3 4 5\nx CH A 10.0.0.1\n", "only IN"),
    ("@ SOA ns hm 1 2 3 4 5\nx A (10.0.0.1\n", "unbalanced '('"),
    ("@ SOA ns hm 1 2 3 4 5\nx TXT \"open\n", "unterminated quoted string"),
    ("@ SOA ns hm 1 2 3 4 5\n$GENERATE 1-2 x$ A 10.0.0.$\n", "unsupported directive $GENERATE"),
    ("  A 10.0.0.1\n", "record without an owner name"),
    ("x A 10.0.0.1\n", "has no SOA record for origin e.test."),
    ("other.test. SOA ns hm 1 2 3 4 5\n", "has no SOA record for origin e.test."),
    ("@ SOA ns hm 1 2 3 4\n", "bad SOA record: expected 7 fields, got 6"),
])
def test_zone_syntax_errors(text: str, problem: str) -> None:
    with pytest.raises(ZoneFileError, match="bad.zone") as exc:
        parse_zone(text, "e.test.", "bad.zone")
    assert problem in str(exc.value)


# --------------------------------------------------------------------------- Corefile errors


@pytest.mark.parametrize(("corefile", "line", "problem"), [
    ("example.org {\n  file\n}\n", 2, "Wrong argument count"),
    ("example.org {\n  file /nonexistent/zone {\n    reload 0\n  }\n}\n", 2,
     'cannot open zone file "/nonexistent/zone"'),
    ("example.org {\n  whoami\n  file zones/example.org {\n    reload abc\n  }\n}\n", 4,
     "invalid duration 'abc'"),
    ("example.org {\n  file zones/example.org {\n    bogus 1\n  }\n}\n", 3,
     "unknown property 'bogus'"),
    ("example.org {\n  file zones/example.org example.org\n  file zones/example.org\n}\n", 3,
     "more than one file directive"),
    ("example.net {\n\n  file zones/example.org\n}\n", 3,
     'zone file "zones/example.org" has no SOA record for origin example.net.'),
])
def test_corefile_errors(corefile: str, line: int, problem: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(CorefileError) as exc:
        build(corefile)
    assert exc.value.line == line
    assert problem in exc.value.message


def test_corefile_error_for_a_broken_zone_names_file_and_line(tmp_path: Path) -> None:
    zone = tmp_path / "broken.zone"
    zone.write_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n\nwww A 999.0.0.1\n")
    with pytest.raises(CorefileError) as exc:
        build(f"b.test {{\n  whoami\n  file {zone}\n}}\n")
    assert exc.value.line == 3
    assert f'zone file "{zone}" line 4' in exc.value.message
    assert "999.0.0.1" in exc.value.message


# --------------------------------------------------------------------------- reload


def write_zone(path: Path, serial: int, address: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"$TTL 60\n@ SOA ns hm {serial} 2 3 4 5\nhost A {address}\n")
    os.replace(tmp, path)


@pytest.fixture
async def reloading(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Path]]:
    zone = tmp_path / "r.zone"
    write_zone(zone, 1, "10.0.0.1")
    rt = build(f"r.test {{\n  file {zone} {{\n    reload 50ms\n  }}\n}}\n")
    await rt.start_plugins()
    try:
        yield rt, zone
    finally:
        await rt.stop_plugins()


async def host_address(rt: Runtime) -> str | None:
    r = await ask(rt, "host.r.test", "A")
    return r.answer[0][0].address if r.answer else None


async def eventually(rt: Runtime, want: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await host_address(rt) != want:
        assert asyncio.get_running_loop().time() < deadline, f"never saw {want}"
        await asyncio.sleep(0.02)


async def test_reload_on_serial_change(reloading: tuple[Runtime, Path]) -> None:
    rt, zone = reloading
    assert await host_address(rt) == "10.0.0.1"
    write_zone(zone, 1, "10.0.0.2")  # same serial: ignored
    await asyncio.sleep(0.3)
    assert await host_address(rt) == "10.0.0.1"
    write_zone(zone, 2, "10.0.0.3")
    await eventually(rt, "10.0.0.3")


async def test_reload_keeps_the_old_zone_when_the_new_file_is_broken(
        reloading: tuple[Runtime, Path], caplog: pytest.LogCaptureFixture) -> None:
    rt, zone = reloading
    zone.write_text("$TTL 60\n@ SOA ns hm 5 2 3 4 5\nhost A not-an-address\n")
    await asyncio.sleep(0.3)
    assert await host_address(rt) == "10.0.0.1"
    assert "not-an-address" in caplog.text
    write_zone(zone, 6, "10.0.0.6")
    await eventually(rt, "10.0.0.6")


async def test_stop_cancels_the_reload_task(tmp_path: Path) -> None:
    zone = tmp_path / "r.zone"
    write_zone(zone, 1, "10.0.0.1")
    rt = build(f"r.test {{\n  file {zone} {{\n    reload 50ms\n  }}\n}}\n")
    await rt.start_plugins()
    plugin = rt.blocks[0][1][0]
    tasks = list(plugin._tasks)  # type: ignore[attr-defined]
    assert len(tasks) == 1 and not tasks[0].done()
    await rt.stop_plugins()
    assert tasks[0].done()
    write_zone(zone, 2, "10.0.0.2")
    await asyncio.sleep(0.2)
    assert await host_address(rt) == "10.0.0.1"


async def test_missing_file_with_reload_serves_servfail_until_it_appears(tmp_path: Path) -> None:
    zone = tmp_path / "late.zone"
    rt = build(f"r.test {{\n  file {zone} {{\n    reload 50ms\n  }}\n}}\n")
    await rt.start_plugins()
    try:
        r = await ask(rt, "host.r.test", "A")
        assert r.rcode() == dns.rcode.SERVFAIL
        write_zone(zone, 1, "10.0.0.9")
        await eventually(rt, "10.0.0.9")
    finally:
        await rt.stop_plugins()


async def test_reload_zero_starts_no_task(tmp_path: Path) -> None:
    zone = tmp_path / "r.zone"
    write_zone(zone, 1, "10.0.0.1")
    rt = build(f"r.test {{\n  file {zone} {{\n    reload 0\n  }}\n}}\n")
    await rt.start_plugins()
    assert rt.blocks[0][1][0]._tasks == []  # type: ignore[attr-defined]
    await rt.stop_plugins()


# --------------------------------------------------------------------------- real sockets


@pytest.fixture
def served(dnsd) -> Iterator[int]:  # type: ignore[no-untyped-def]
    server = dnsd("example.org:{PORT} {\n    file zones/example.org\n}\n")
    yield server.port


def test_dig_answers_from_the_example_zone(served: int) -> None:
    out = dig("www.example.org", "A", port=served)
    assert "status: NOERROR" in out
    assert " aa" in out.split("flags:")[1].split(";")[0]
    assert dig_records(out) == ["www.example.org. 3600 IN A 192.0.2.10", *NS_AUTH]
    assert "SERVER: 127.0.0.1#" in out


def test_dig_big_answer_truncated_then_retried_over_tcp(served: int) -> None:
    truncated = dig("+noedns", "+ignore", "big.example.org", port=served)
    assert " tc" in truncated.split("flags:")[1].split(";")[0]
    full = dig("+noedns", "big.example.org", port=served)
    assert "Truncated, retrying in TCP mode" in full
    answers = [x for x in dig_records(full) if x.startswith("big.example.org. 3600 IN A ")]
    assert sorted(answers) == sorted(f"big.example.org. 3600 IN A 198.51.100.{i}" for i in range(1, 41))
    assert "(TCP)" in full


def test_dnspython_udp_and_tcp(served: int) -> None:
    r = query("www2.example.org", "A", port=served)
    assert [rrset.to_text() for rrset in r.answer] == [
        "www2.example.org. 3600 IN CNAME www.example.org.",
        "www.example.org. 3600 IN A 192.0.2.10",
    ]
    r = query("big.example.org", "A", port=served)
    assert r.flags & dns.flags.TC
    r = query("big.example.org", "A", port=served, tcp=True)
    assert len(r.answer[0]) == 40
    r = query("nope.example.org", "A", port=served, tcp=True)
    assert r.rcode() == dns.rcode.NXDOMAIN and lines(r.authority) == NEG_SOA
