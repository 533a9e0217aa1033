"""any: RFC 8482 minimal answers to ANY queries (CoreDNS's ``any`` plugin)."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from support import ROOT, dig, query
from upstream import serve_corefile

from dnsd.corefile import CorefileError, parse
from dnsd.serve.runtime import Runtime

ZONE_FILE = str(ROOT / "zones" / "example.org")


def conf(with_any: bool) -> str:
    return f".:{{PORT}} {{\n {'any' if with_any else ''}\n file {ZONE_FILE} example.org\n whoami\n}}\n"


async def test_any_gets_one_hinfo() -> None:
    async with serve_corefile(conf(True)) as srv:
        for tcp in (False, True):
            for name in ("example.org.", "WwW.Example.ORG.", "nothing.example.org.", "other.test."):
                r = await asyncio.to_thread(query, name, "ANY", port=srv.port, tcp=tcp)
                assert r.rcode() == dns.rcode.NOERROR
                assert [(rr.name.to_text(), rr.rdtype, rr.ttl) for rr in r.answer] == [
                    (name, dns.rdatatype.HINFO, 8482)]
                hinfo = r.answer[0][0]
                assert (hinfo.cpu, hinfo.os) == (b"RFC8482", b"")
                assert not r.authority and not r.additional
                assert not r.flags & dns.flags.AA and r.flags & dns.flags.RD
                assert r.question[0].name.to_text() == name
        # other types are untouched
        a = await asyncio.to_thread(query, "www.example.org.", "A", port=srv.port)
        assert [rd.address for rd in a.answer[0]] == ["192.0.2.10"]
        out = await asyncio.to_thread(dig, "example.org", "ANY", "+norec", port=srv.port)
        assert 'HINFO\t"RFC8482" ""' in out


async def test_hot_path_answers_keep_the_asker_spelling() -> None:
    async with serve_corefile(conf(True)) as srv:
        engine = next(iter(srv.server.runtime.engines.values()))
        first = await asyncio.to_thread(query, "a.example.org.", "ANY", port=srv.port)
        again = await asyncio.to_thread(query, "A.EXAMPLE.org.", "ANY", port=srv.port)
        assert engine.prepared.entries  # the second one came from the hot path
        assert first.answer[0].name.to_text() == "a.example.org."
        assert again.answer[0].name.to_text() == "A.EXAMPLE.org."


async def test_without_the_plugin_any_goes_through_the_chain() -> None:
    async with serve_corefile(conf(False)) as srv:
        r = await asyncio.to_thread(query, "example.org.", "ANY", port=srv.port)
        # the file plugin has no ANY data at the apex: NODATA with the SOA, authoritative
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        assert r.flags & dns.flags.AA and r.authority[0].rdtype == dns.rdatatype.SOA


def test_takes_no_arguments() -> None:
    with pytest.raises(CorefileError, match="plugin 'any' takes no arguments"):
        Runtime.build(parse(".:53 {\n any foo\n}\n"))
