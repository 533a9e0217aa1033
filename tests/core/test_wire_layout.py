"""Replies edited as bytes: truncation by cutting the packed message, and loadbalance orders
made by moving record bytes.  Both must equal what packing the edited message writes."""

from __future__ import annotations

import random

from dnslib import AAAA, CNAME, EDNS0, MX, QTYPE, RR, SOA, SRV, A, DNSRecord

from dnsd.serve.engine import _pack
from dnsd.wire.encode import pack
from dnsd.wire.shuffle import reorderings, rotation


def _reply(qname: str, answers: list[RR], auth: list[RR] = (), extra: list[RR] = (),
           edns: int | None = None) -> DNSRecord:
    reply = DNSRecord.question(qname, "A").reply()
    reply.rr, reply.auth, reply.ar = list(answers), list(auth), list(extra)
    if edns is not None:
        reply.add_ar(EDNS0(udp_len=edns))
    return reply


def _random_reply(rng: random.Random) -> DNSRecord:
    q = "svc.ns.svc.cluster.local."
    answers = [RR(q, QTYPE.A, ttl=30, rdata=A(f"10.0.{rng.randrange(256)}.{i}"))
               for i in range(rng.randrange(0, 60))]
    if rng.random() < 0.3:
        answers.insert(0, RR(q, QTYPE.CNAME, ttl=30, rdata=CNAME("other.ns.svc.cluster.local.")))
    auth = [RR("cluster.local.", QTYPE.SOA, ttl=30, rdata=SOA(
        "ns.dns.cluster.local.", "hostmaster.cluster.local.", (1, 2, 3, 4, 5)))] if rng.random() < 0.3 else []
    extra = [RR(f"h{i}.ns.svc.cluster.local.", QTYPE.AAAA, ttl=30, rdata=AAAA(f"fd00::{i + 1}"))
             for i in range(rng.randrange(0, 20))]
    return _reply(q, answers, auth, extra, edns=rng.choice([None, 512, 1232]))


def _reference_truncation(reply: DNSRecord, limit: int) -> bytes:
    """miekg's rule by brute force: the longest prefix of the records (sections in order)
    that fits with the OPT record, TC set."""
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    records = [(0, rr) for rr in reply.rr] + [(1, rr) for rr in reply.auth] + \
        [(2, rr) for rr in reply.ar if rr.rtype != QTYPE.OPT]
    best = None
    for k in range(len(records) + 1):
        trial = DNSRecord(reply.header, q=reply.q)
        trial.rr = [rr for s, rr in records[:k] if s == 0]
        trial.auth = [rr for s, rr in records[:k] if s == 1]
        trial.ar = [rr for s, rr in records[:k] if s == 2] + opt
        trial.header.tc = 1
        wire = pack(trial)
        if len(wire) > limit:
            break
        best = wire
    assert best is not None
    return best


def test_cutting_the_bytes_truncates_exactly_like_packing_fewer_records() -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        reply = _random_reply(rng)
        full = len(pack(reply))
        limit = rng.randrange(60, max(61, full + 50))
        expected = None if full <= limit else _reference_truncation(_reply_copy(reply), limit)
        got = _pack(reply, limit)
        if expected is None:
            assert got == pack(reply)
        else:
            checked += 1
            assert got == expected
            assert DNSRecord.parse(got).header.tc == 1
            assert len(got) <= limit
            # the reply object was trimmed to what was sent
            assert pack(reply) == got
    assert checked > 100


def _reply_copy(reply: DNSRecord) -> DNSRecord:
    copy = DNSRecord(reply.header, q=reply.q)
    copy.header = type(reply.header)(id=reply.header.id, bitmap=reply.header.bitmap)
    copy.rr, copy.auth, copy.ar = list(reply.rr), list(reply.auth), list(reply.ar)
    return copy


def test_moved_record_bytes_equal_packing_the_shuffled_order() -> None:
    q = "web.ns.svc.cluster.local."
    answers = [RR(q, QTYPE.CNAME, ttl=5, rdata=CNAME("x.ns.svc.cluster.local."))]
    answers += [RR(q, QTYPE.A, ttl=5, rdata=A(f"10.1.0.{i}")) for i in range(1, 9)]
    answers += [RR(q, QTYPE.MX, ttl=5, rdata=MX(f"mail.a{i}.", i)) for i in range(3)]
    extra = [RR(f"h{i}.ns.svc.cluster.local.", QTYPE.A, ttl=5, rdata=A(f"10.2.0.{i}")) for i in range(4)]
    wire = pack(_reply(q, answers, extra=extra, edns=1232))
    variants = reorderings(wire, 30)
    assert variants is not None and len(variants) == 30
    orders = set()
    for v in variants:
        msg = DNSRecord.parse(v)
        assert pack(msg) == v  # exactly what packing this order writes
        assert [rr.rtype for rr in msg.rr] == [rr.rtype for rr in answers]
        assert sorted(str(rr.rdata) for rr in msg.rr) == sorted(str(rr.rdata) for rr in answers)
        assert sorted(str(rr.rdata) for rr in msg.ar[:4]) == sorted(str(rr.rdata) for rr in extra)
        assert msg.ar[-1].rtype == QTYPE.OPT
        orders.add(tuple(str(rr.rdata) for rr in msg.rr))
    assert len(orders) > 20


def test_bytes_are_not_moved_when_something_points_into_them() -> None:
    # The A record of h1 writes its name first; the AAAA of h1 then points into that record.
    q = "_http._tcp.web.ns.svc.cluster.local."
    answers = [RR(q, QTYPE.SRV, ttl=5, rdata=SRV(0, 50, 80, f"h{i}.web.ns.svc.cluster.local.")) for i in range(2)]
    extra = [RR("h0.web.ns.svc.cluster.local.", QTYPE.A, ttl=5, rdata=A("10.0.0.1")),
             RR("h1.web.ns.svc.cluster.local.", QTYPE.A, ttl=5, rdata=A("10.0.0.2")),
             RR("h1.web.ns.svc.cluster.local.", QTYPE.AAAA, ttl=5, rdata=AAAA("fd00::2"))]
    assert reorderings(pack(_reply(q, answers, extra=extra)), 3) is None


def test_nothing_to_move_and_malformed_input() -> None:
    q = "web.ns.svc.cluster.local."
    one = pack(_reply(q, [RR(q, QTYPE.A, ttl=5, rdata=A("10.0.0.1"))]))
    assert reorderings(one, 3) == []
    assert reorderings(one[:-3], 3) is None
    assert reorderings(b"\x00" * 12 + b"\x01", 3) is None


def _qend(name: str) -> int:
    """Where the question name of a message asking ``name`` ends."""
    return 12 + len(name) + 1  # a length byte per label, the root's zero byte


def test_a_rotation_serves_every_order_of_one_shuffled_group() -> None:
    q = "web.ns.svc.cluster.local."
    answers = [RR(q, QTYPE.A, ttl=5, rdata=A(f"10.1.0.{i}")) for i in range(1, 8)]
    auth = [RR("cluster.local.", QTYPE.SOA, ttl=5, rdata=SOA(
        "ns.dns.cluster.local.", "hostmaster.cluster.local.", (1, 2, 3, 4, 5)))]
    wire = pack(_reply(q, answers, auth=auth, edns=1232))
    rot = rotation(wire, _qend(q))
    assert rot is not None and len(rot) == len(answers)
    asked = b"\x03WeB\x02ns\x03svc\x07cluster\x05local\x00"  # another spelling of the question
    leaders = []
    for turn in range(len(answers)):
        reply = rot.reply(b"\xab\xcd", asked, turn)
        msg = DNSRecord.parse(reply)
        assert msg.header.id == 0xABCD and str(msg.q.qname) == "WeB.ns.svc.cluster.local."
        assert pack(msg) == reply  # exactly what packing this order writes
        assert sorted(str(rr.rdata) for rr in msg.rr) == sorted(str(rr.rdata) for rr in answers)
        assert [rr.rtype for rr in msg.auth] == [QTYPE.SOA] and msg.ar[-1].rtype == QTYPE.OPT
        leaders.append(str(msg.rr[0].rdata))
        # each order is the previous one rotated by one record
        if turn:
            before = [str(rr.rdata) for rr in DNSRecord.parse(rot.reply(b"\0\0", asked, turn - 1)).rr]
            assert [str(rr.rdata) for rr in msg.rr] == before[1:] + before[:1]
    assert sorted(leaders) == sorted(str(rr.rdata) for rr in answers)  # every address leads once


def test_no_rotation_for_two_groups_or_records_pointed_into() -> None:
    q = "web.ns.svc.cluster.local."
    answers = [RR(q, QTYPE.A, ttl=5, rdata=A(f"10.1.0.{i}")) for i in range(1, 4)]
    extra = [RR(f"h{i}.ns.svc.cluster.local.", QTYPE.A, ttl=5, rdata=A(f"10.2.0.{i}")) for i in range(3)]
    wire = pack(_reply(q, answers, extra=extra))
    assert rotation(wire, _qend(q)) is None  # two groups: the engine keeps packed orders
    srv_q = "_http._tcp.web.ns.svc.cluster.local."
    srvs = [RR(srv_q, QTYPE.SRV, ttl=5, rdata=SRV(0, 50, 80, f"h{i}.web.ns.svc.cluster.local.")) for i in range(2)]
    glue = [RR("h0.web.ns.svc.cluster.local.", QTYPE.A, ttl=5, rdata=A("10.0.0.1")),
            RR("h1.web.ns.svc.cluster.local.", QTYPE.A, ttl=5, rdata=A("10.0.0.2")),
            RR("h1.web.ns.svc.cluster.local.", QTYPE.AAAA, ttl=5, rdata=AAAA("fd00::2"))]
    assert rotation(pack(_reply(srv_q, srvs, extra=glue)), _qend(srv_q)) is None
    one = pack(_reply(q, answers[:1]))
    assert rotation(one, _qend(q)) is None and rotation(one[:-3], _qend(q)) is None
