"""loadbalance: A/AAAA/MX order changes between replies, CNAMEs stay first in order."""

from __future__ import annotations

from collections.abc import Iterator

import dns.rdatatype
import pytest
from dnslib import CNAME as CNAMEData
from dnslib import QTYPE, RR, TXT, A
from upstream import Upstream, addresses, aquery, serve_corefile

from dnsd.chain import SetupContext
from dnsd.corefile.ast import CorefileError, Directive
from dnsd.plugins.loadbalance import Plugin, round_robin


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


async def test_address_order_changes(up: Upstream) -> None:
    conf = f".:{{PORT}} {{\n loadbalance\n forward . {up.addr}\n}}\n"
    async with serve_corefile(conf) as srv:
        orders = {tuple(addresses(await aquery(srv.port, "multi.example.org"))) for _ in range(15)}
    assert len(orders) > 1
    assert all(sorted(o) == [f"192.0.2.{i}" for i in range(1, 7)] for o in orders)


async def test_cname_chain_stays_first_and_in_order(up: Upstream) -> None:
    conf = f".:{{PORT}} {{\n loadbalance round_robin\n cache\n forward . {up.addr}\n}}\n"
    async with serve_corefile(conf) as srv:
        orders = set()
        for _ in range(15):
            reply = await aquery(srv.port, "alias.example.org")
            rrsets = [(r.name.to_text(), r.rdtype) for r in reply.answer]
            assert rrsets[:2] == [("alias.example.org.", dns.rdatatype.CNAME),
                                  ("alias2.example.org.", dns.rdatatype.CNAME)]
            orders.add(tuple(addresses(reply)))
    assert len(orders) > 1  # shuffled even when served from the cache
    assert up.count() == 1


async def test_mx_records_are_shuffled(up: Upstream) -> None:
    conf = f".:{{PORT}} {{\n loadbalance\n forward . {up.addr}\n}}\n"
    async with serve_corefile(conf) as srv:
        orders = set()
        for _ in range(15):
            reply = await aquery(srv.port, "mx.example.org", "MX")
            orders.add(tuple(rd.exchange.to_text() for rd in reply.answer[0]))
    assert len(orders) > 1


def test_round_robin_keeps_other_records_in_order() -> None:
    cname = RR("a.example.", QTYPE.CNAME, rdata=CNAMEData("b.example."))
    txts = [RR("b.example.", QTYPE.TXT, rdata=TXT(str(i))) for i in range(5)]
    addrs = [RR("b.example.", QTYPE.A, rdata=A(f"10.0.0.{i}")) for i in range(5)]
    out = round_robin([addrs[0], txts[0], cname, *addrs[1:], *txts[1:]])
    assert out[0] is cname
    assert out[1:6] == txts
    assert sorted(out[6:], key=lambda r: str(r.rdata)) == addrs


@pytest.mark.parametrize("args,message", [
    ("weighted /etc/weights", "not supported"), ("fastest", "unknown policy"),
])
def test_setup_errors(args: str, message: str) -> None:
    d = Directive("loadbalance", args.split(), line=3)
    with pytest.raises(CorefileError, match=message):
        Plugin.setup([d], SetupContext(zones=["."], port=53))
