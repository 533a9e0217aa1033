"""The hot path: the fast packer, the query key, and prepared answers in the engine."""

from __future__ import annotations

import asyncio
import random

import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest
from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    MX,
    NS,
    PTR,
    QTYPE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSRecord,
    EDNSOption,
)

from dnsd.corefile import parse
from dnsd.serve.runtime import Runtime
from dnsd.wire.encode import Unsupported, pack
from dnsd.wire.fastpath import query_key

NAMES = ["a.b.c", "B.c", "x.y.z.cluster.local", "cluster.local", "Cluster.Local", "svc.cluster.local", "."]


def test_fast_packer_is_byte_identical_to_dnslib() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        msg = DNSRecord.question(rng.choice(NAMES[:-1]), "A").reply()
        for _ in range(rng.randint(0, 8)):
            kind = rng.choice(["A", "AAAA", "CNAME", "SRV", "PTR", "NS", "MX", "TXT", "SOA"])
            owner, target = rng.choice(NAMES), rng.choice(NAMES)
            rdata = {
                "A": A("192.0.2.1"), "AAAA": AAAA("2001:db8::1"), "CNAME": CNAME(target),
                "SRV": SRV(1, 2, 3, target), "PTR": PTR(target), "NS": NS(target),
                "MX": MX(target, 5), "TXT": TXT(["hi", "there"]), "SOA": SOA(target, owner, (1, 2, 3, 4, 5)),
            }[kind]
            section = rng.choice(["add_answer", "add_auth", "add_ar"])
            getattr(msg, section)(RR(owner, getattr(QTYPE, kind), rdata=rdata, ttl=rng.randint(0, 2**31)))
        if rng.random() < 0.5:
            msg.add_ar(EDNS0(udp_len=rng.choice([512, 1232, 4096]), flags=rng.choice(["", "do"]),
                             opts=[EDNSOption(10, b"12345678")] if rng.random() < 0.3 else []))
        assert pack(msg) == bytes(msg.pack())


def test_fast_packer_leaves_unusual_types_to_dnslib() -> None:
    msg = DNSRecord.question("example.org", "HINFO").reply()
    msg.add_answer(RR("example.org", QTYPE.CAA, rdata=__import__("dnslib").CAA(0, "issue", "ca.example"), ttl=5))
    with pytest.raises(Unsupported):
        pack(msg)


def q(name: str, rdtype: str = "A", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def test_query_key_accepts_plain_queries_and_keys_case_insensitively() -> None:
    a, b = query_key(q("Web.Example.ORG"), "udp"), query_key(q("web.example.org"), "udp")
    assert a is not None and b is not None
    assert a[0][2:] == b[0][2:]  # same key apart from the flags of the random query
    edns = query_key(q("web.example.org", use_edns=0, payload=1232), "udp")
    cookie = query_key(q("web.example.org", use_edns=0, payload=1232,
                         options=[dns.edns.GenericOption(10, b"12345678")]), "udp")
    assert edns is not None and cookie is not None and edns[0] == cookie[0]
    assert query_key(q("web.example.org"), "tcp")[0] != b[0]  # type: ignore[index]


@pytest.mark.parametrize("mutate", [
    lambda d: d[:2] + bytes([d[2] | 0x80]) + d[3:],  # QR set
    lambda d: d[:2] + bytes([d[2] | 0x20]) + d[3:],  # opcode 4 (NOTIFY)
    lambda d: d[:4] + b"\x00\x02" + d[6:],  # two questions
    lambda d: d[:6] + b"\x00\x01" + d[8:],  # an answer record in a query
    lambda d: d + b"\x00",  # trailing garbage
    lambda d: d[:12] + b"\xc0\x0c" + d[-4:],  # compression pointer in the question
    lambda d: d[:-6],  # truncated
])
def test_query_key_rejects_what_the_general_path_must_judge(mutate: object) -> None:
    data = q("web.example.org")
    assert query_key(mutate(data), "udp") is None  # type: ignore[operator]


def test_query_key_rejects_edns_version_and_broken_options() -> None:
    assert query_key(q("a.example", use_edns=1), "udp") is None  # BADVERS comes from the engine
    good = bytearray(q("a.example", use_edns=0, options=[dns.edns.GenericOption(10, b"12345678")]))
    good[-9] = 200  # option length beyond the rdata
    assert query_key(bytes(good), "udp") is None


def engine_for(corefile: str) -> object:
    rt = Runtime.build(parse(corefile), 1053)
    return rt.engines[("", 1053)]


async def serve(engine: object, data: bytes) -> bytes:
    reply, key = engine.fast(data, "udp", "127.0.0.1")  # type: ignore[attr-defined]
    if reply is not None:
        return reply
    out = await engine.handle(data, key=key)  # type: ignore[attr-defined]
    assert out is not None
    return out


HOSTS = """.:1053 {
    hosts {
        192.0.2.1 web.example.org
        192.0.2.2 multi.example.org
        192.0.2.3 multi.example.org
        fallthrough
    }
    whoami
}
"""


def test_repeat_query_is_served_prepared_with_its_own_id_and_case() -> None:
    engine = engine_for(HOSTS)

    async def run() -> None:
        first = dns.message.from_wire(await serve(engine, q("web.example.org")))
        assert engine.prepared.hits == 0  # type: ignore[attr-defined]
        query = dns.message.make_query("WEB.Example.org", "A")
        second = dns.message.from_wire(await serve(engine, query.to_wire()))
        assert engine.prepared.hits == 1  # type: ignore[attr-defined]
        assert second.id == query.id
        assert str(second.question[0].name) == "WEB.Example.org."
        assert [str(rr) for rr in second.answer] == ["WEB.Example.org. 3600 IN A 192.0.2.1"]
        assert second.flags == first.flags

    asyncio.run(run())


def test_answers_that_depend_on_the_client_or_are_logged_are_never_prepared() -> None:
    async def twice(engine: object, name: str) -> int:
        await serve(engine, q(name))
        await serve(engine, q(name))
        return engine.prepared.hits  # type: ignore[attr-defined,no-any-return]

    assert asyncio.run(twice(engine_for(HOSTS), "who.example.net")) == 0  # whoami
    assert asyncio.run(twice(engine_for(HOSTS.replace("    whoami", "    log\n    whoami")), "web.example.org")) == 0


def test_shuffled_replies_are_prepared_in_several_orders_served_in_turn() -> None:
    engine = engine_for(HOSTS.replace("    whoami", "    loadbalance\n    whoami"))

    async def run() -> set[tuple[str, ...]]:
        orders = set()
        for _ in range(40):
            reply = dns.message.from_wire(await serve(engine, q("multi.example.org")))
            orders.add(tuple(str(rr) for rr in reply.answer[0]))
        return orders

    orders = asyncio.run(run())
    assert engine.prepared.hits == 39  # type: ignore[attr-defined]
    assert orders == {("192.0.2.2", "192.0.2.3"), ("192.0.2.3", "192.0.2.2")}


def test_a_change_behind_a_prepared_answer_invalidates_it() -> None:
    engine = engine_for(HOSTS)
    hosts = engine.blocks[0].plugins[0]  # type: ignore[attr-defined]

    async def run() -> None:
        await serve(engine, q("web.example.org"))
        await serve(engine, q("web.example.org"))
        assert engine.prepared.hits == 1  # type: ignore[attr-defined]
        hosts.index = type(hosts.index).build(hosts.file, type(hosts.inline)(), hosts.reverse)  # reload: empty
        reply = dns.message.from_wire(await serve(engine, q("web.example.org")))
        assert engine.prepared.hits == 1  # type: ignore[attr-defined]
        assert reply.answer == [] and reply.rcode() == dns.rcode.NOERROR  # falls through: new data

    asyncio.run(run())


def test_truncated_replies_are_prepared_with_tc() -> None:
    lines = "\n".join(f"        198.51.100.{i} big.example.org" for i in range(1, 60))
    engine = engine_for(f".:1053 {{\n    hosts {{\n{lines}\n    }}\n}}\n")

    async def run() -> None:
        for _ in range(2):
            reply = dns.message.from_wire(await serve(engine, q("big.example.org")))
            assert reply.flags & dns.flags.TC
        assert engine.prepared.hits == 1  # type: ignore[attr-defined]

    asyncio.run(run())


def test_quick_query_parse_equals_dnslib() -> None:
    from dnsd.wire.quick import parse_query

    rng = random.Random(3)
    names = ["web.demo.svc.cluster.local", "Web.Demo.SVC.cluster.local", "a", "_http._tcp.x-y.z"]
    for _ in range(300):
        msg = dns.message.make_query(rng.choice(names), rng.choice(["A", "AAAA", "SRV", "PTR", "TXT"]),
                                     use_edns=rng.choice([None, 0]), payload=rng.choice([512, 1232, 4096]),
                                     want_dnssec=rng.random() < 0.3)
        data = msg.to_wire()
        key = query_key(data, "udp")
        assert key is not None
        quick = parse_query(data, key[1])
        assert quick is not None
        full = DNSRecord.parse(data)
        assert bytes(quick.pack()) == bytes(full.pack()) == data
        assert str(quick) == str(full)


def test_quick_query_parse_leaves_escaped_labels_to_dnslib() -> None:
    from dnsd.wire.quick import parse_query

    data = dns.message.make_query(dns.name.Name([b"a b", b"example", b""]), "A").to_wire()
    key = query_key(data, "udp")
    assert key is not None and parse_query(data, key[1]) is None


def test_retime_rewrites_every_ttl_but_the_opt_records() -> None:
    from dnsd.wire.fastpath import retime

    msg = DNSRecord.question("Web.example.org", "A").reply()
    msg.add_answer(RR("Web.example.org", QTYPE.CNAME, ttl=7, rdata=CNAME("web2.example.org")))
    for i in range(3):
        msg.add_answer(RR("web2.example.org", QTYPE.A, ttl=7, rdata=A(f"192.0.2.{i}")))
    msg.add_auth(RR("example.org", QTYPE.NS, ttl=7, rdata=NS("ns.example.org")))
    msg.add_ar(RR("ns.example.org", QTYPE.AAAA, ttl=7, rdata=AAAA("2001:db8::7")))
    msg.add_ar(EDNS0(udp_len=1232, flags="do", opts=[EDNSOption(10, b"12345678")]))
    wire = pack(msg)
    renewed = retime(wire, 7, 6)
    assert renewed is not None and len(renewed) == len(wire)
    before, after = dns.message.from_wire(wire), dns.message.from_wire(renewed)
    assert [rrset.ttl for rrset in after.answer + after.authority + after.additional] == [6] * 4
    assert after.ednsflags == before.ednsflags and after.ednsflags & dns.flags.DO
    assert after.payload == 1232 and after.options == before.options
    assert [str(r) for r in after.answer] == [str(r).replace(" 7 IN ", " 6 IN ") for r in before.answer]
    assert retime(wire, 8, 6) is None  # the TTLs are not what the caller expects: refuse
    mixed = DNSRecord.question("a.example.org", "A").reply()
    mixed.add_answer(RR("a.example.org", QTYPE.A, ttl=7, rdata=A("192.0.2.1")))
    mixed.add_answer(RR("a.example.org", QTYPE.A, ttl=9, rdata=A("192.0.2.2")))
    assert retime(pack(mixed), 7, 6) is None
    assert retime(wire[:-3], 7, 6) is None  # cut short
    assert retime(wire + b"\x00", 7, 6) is None  # trailing bytes


def test_a_full_store_evicts_a_share_sparing_entries_hit_since() -> None:
    from dnsd.wire.fastpath import EVICT_SHARE, SWEEP, PreparedAnswers

    counted: list[int] = []
    limit = 2 * EVICT_SHARE  # makes room two entries at a time
    store = PreparedAnswers(limit=limit)
    for i in range(limit):
        store.store(b"k%d" % i, 12, b"w", lambda: True,
                    on_hit=lambda h4, h6, s: counted.append(h4 + h6))
    for i in (0, 1, 5):  # hit (as Engine.fast marks them), one with a pending metric count
        store.entries[b"k%d" % i].used = True
    store.entries[b"k2"].hits4 = 3
    store.store(b"new", 12, b"w", lambda: True)
    # Two went: the oldest not hit since (k2, k3); k2's pending hits were handed on.
    assert set(store.entries) == {b"k%d" % i for i in range(limit) if i not in (2, 3)} | {b"new"}
    assert counted == [3]
    # The hit ones passed on the way lost their mark and moved to the young end; the sweep
    # stopped there (k5 keeps its mark).
    assert list(store.entries)[-3:] == [b"k0", b"k1", b"new"]
    assert not store.entries[b"k0"].used and store.entries[b"k5"].used
    store.store(b"k0", 12, b"w2", lambda: True)  # replacing an entry makes no room
    assert len(store.entries) == limit - 1 and store.entries[b"k0"].wire == b"w2"
    for entry in store.entries.values():
        entry.used = True
    store.store(b"k99", 12, b"w", lambda: True)  # full now
    order = list(store.entries)
    store.store(b"k98", 12, b"w", lambda: True)
    # Every entry was hit: the sweep looks at SWEEP per entry to evict (moving them to the
    # young end, marks cleared), then the oldest of the rest go regardless.
    looked = order[: SWEEP * 2]
    assert all(key in store.entries and not store.entries[key].used for key in looked)
    assert order[SWEEP * 2] not in store.entries and order[SWEEP * 2 + 1] not in store.entries
    assert len(store.entries) == limit - 1


def test_express_repeats_count_as_hits_and_mark_the_entry_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch reader counts a lane repeat on its entry (lane4/lane6) only; flushing the
    entry, retiring it or sweeping past it folds those into its metrics (each at the lane's
    measured time per reply) and, for the sweep, marks it used."""
    from dnsd.wire import express
    from dnsd.wire.fastpath import EVICT_SHARE, PreparedAnswers

    monkeypatch.setattr(express, "COST", 0.25)
    counted: list[tuple[int, int, float]] = []
    limit = 2 * EVICT_SHARE
    store = PreparedAnswers(limit=limit)
    for i in range(limit):
        store.store(b"k%d" % i, 12, b"w", lambda: True,
                    on_hit=lambda h4, h6, s: counted.append((h4, h6, s)))
    store.entries[b"k0"].lane4 = 2
    store.entries[b"k0"].lane6 = 1
    store.entries[b"k1"].lane4 = 4
    store.store(b"new", 12, b"w", lambda: True)
    # k0 and k1 were repeated through the lane: kept (moved to the young end), k2 and k3 went.
    assert b"k0" in store.entries and b"k1" in store.entries
    assert b"k2" not in store.entries and b"k3" not in store.entries
    k0 = store.entries[b"k0"]
    assert (k0.hits4, k0.hits6, k0.seconds, k0.lane4, k0.lane6) == (2, 1, 0.75, 0, 0)
    assert counted == []  # (reported on flush)
    store.flush(k0)
    assert counted == [(2, 1, 0.75)]
    store.entries[b"k5"].lane6 = 3
    store.drop(b"k5")  # retiring hands them on too
    assert counted[-1] == (0, 3, 0.75)
    store.entries[b"k6"].lane4 = 1
    store.flush_all()
    assert (1, 0, 0.25) in counted and (4, 0, 1.0) in counted
