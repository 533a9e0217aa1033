"""The sans-IO engine: ``Engine.handle(bytes)`` without sockets.

Covers what the listeners rely on: FORMERR / NOTIMP / REFUSED / BADVERS, dropped packets,
EDNS echo, zone routing, case preservation, truncation and never raising on garbage.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from typing import ClassVar

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import pytest
from dnslib import EDNS0, QTYPE, RR, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsd.chain import Next, Plugin, compose
from dnsd.plugins import errors, whoami
from dnsd.request import Request, make_reply
from dnsd.serve.engine import Block, Engine, _pack

# --- helpers -----------------------------------------------------------------------------


class Big(Plugin):
    """A test-only plugin answering 100 A records (about 1.6 kB) for any name."""

    name: ClassVar[str] = "big"

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        reply = make_reply(req)
        for i in range(100):
            reply.add_answer(RR(req.qname, QTYPE.A, ttl=60, rdata=A(f"10.0.0.{i}")))
        return reply


def routed_engine() -> Engine:
    """example.org -> whoami, sub.example.org -> nothing answers, . -> errors only."""
    return Engine([
        Block(zones=["example.org."], handler=compose([whoami.Plugin()])),
        Block(zones=["sub.example.org."], handler=compose([])),
        Block(zones=["."], handler=compose([errors.Plugin([])])),
    ])


def example_only_engine() -> Engine:
    return Engine([Block(zones=["example.org."], handler=compose([whoami.Plugin()]))])


def root_whoami_engine() -> Engine:
    return Engine([Block(zones=["."], handler=compose([whoami.Plugin()]))])


def big_engine() -> Engine:
    return Engine([Block(zones=["."], handler=compose([Big()]))])


def handle(engine: Engine, data: bytes, proto: str = "udp") -> bytes | None:
    return asyncio.run(engine.handle(data, "127.0.0.1", 5353, proto))


def ask(engine: Engine, msg: dns.message.Message, proto: str = "udp") -> dns.message.Message:
    wire = handle(engine, msg.to_wire(), proto)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == msg.id
    assert reply.flags & dns.flags.QR
    return reply


def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


def name_wire(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def question(labels: list[bytes], qtype: int = 1, qclass: int = 1) -> bytes:
    return name_wire(labels) + struct.pack("!HH", qtype, qclass)


WWW = [b"www", b"example", b"org"]
OPT_RR = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # root, OPT, size 1232, no options


def rcode_of(wire: bytes | None) -> int:
    assert wire is not None and len(wire) >= 12
    return wire[3] & 0xF


# --- a good query ------------------------------------------------------------------------


def test_whoami_answer_keeps_id_and_flags() -> None:
    msg = dns.message.make_query("www.example.org.", "A")
    reply = ask(routed_engine(), msg)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD  # copied from the query
    assert not reply.flags & dns.flags.TC
    assert [str(rrset.name) for rrset in reply.additional] == [
        "www.example.org.", "_udp.www.example.org.",
    ]
    assert reply.edns < 0  # no OPT asked, none given


def test_case_of_the_question_is_preserved() -> None:
    msg = dns.message.make_query("WhoAmI.Example.ORG.", "A")
    wire = handle(routed_engine(), msg.to_wire())
    assert wire is not None
    assert b"\x06WhoAmI\x07Example\x03ORG\x00" in wire
    reply = dns.message.from_wire(wire)
    assert reply.question[0].name.to_text() == "WhoAmI.Example.ORG."
    assert reply.additional[0].name.to_text() == "WhoAmI.Example.ORG."


# --- EDNS0 --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [512, 1232, 4096, 65535])
def test_edns_udp_size_echoed(size: int) -> None:
    msg = dns.message.make_query("www.example.org.", "A", use_edns=0, payload=size)
    reply = ask(routed_engine(), msg)
    assert reply.edns == 0
    assert reply.payload == size
    assert not reply.ednsflags & dns.flags.DO


def test_edns_size_below_512_echoed_as_sent() -> None:
    """CoreDNS's SizeAndDo echoes the client's own value; 512 still applies for truncation."""
    msg = dns.message.make_query("www.example.org.", "A", use_edns=0, payload=256)
    assert ask(routed_engine(), msg).payload == 256


def test_edns_do_bit_echoed() -> None:
    msg = dns.message.make_query("www.example.org.", "A", want_dnssec=True, payload=1232)
    reply = ask(routed_engine(), msg)
    assert reply.ednsflags & dns.flags.DO
    assert reply.payload == 1232


def test_edns_on_error_replies_too() -> None:
    msg = dns.message.make_query("foo.test.", "A", use_edns=0, payload=1400, want_dnssec=True)
    reply = ask(routed_engine(), msg)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert reply.edns == 0 and reply.payload == 1400 and reply.ednsflags & dns.flags.DO


def test_edns_version_1_is_badvers() -> None:
    msg = dns.message.make_query("www.example.org.", "A", use_edns=1, payload=1232)
    wire = handle(routed_engine(), msg.to_wire())
    assert wire is not None
    assert wire[:2] == msg.to_wire()[:2]
    assert wire[3] & 0xF == 0  # BADVERS (16) lives in the OPT: header rcode 0 ...
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0  # ... we answer with the version we speak
    assert (reply.ednsflags >> 24) & 0xFF == 1  # ... extended rcode 1


def test_edns_version_1_with_class_ch_is_refused_first() -> None:
    """CoreDNS checks the class before the EDNS version."""
    msg = dns.message.make_query("version.bind.", "TXT", "CH", use_edns=1)
    assert ask(routed_engine(), msg).rcode() == dns.rcode.REFUSED


def test_two_opt_records_is_formerr() -> None:
    wire = bytearray(dns.message.make_query("www.example.org.", "A", use_edns=0).to_wire())
    wire[10:12] = (2).to_bytes(2, "big")
    wire += OPT_RR
    out = handle(routed_engine(), bytes(wire))
    assert rcode_of(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == wire[:2]


# --- malformed packets --------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"",  # qdcount 1, no question
    b"\x03www",  # name cut short
    b"\xff\xff\x00\x01\x00\x01",  # forward compression pointer
    question(WWW)[:-2],  # no class
    b"\x05ab",  # label longer than what follows
])
def test_garbage_after_a_readable_header_is_formerr(body: bytes) -> None:
    data = header(qid=0xBEEF) + body
    out = handle(routed_engine(), data)
    assert rcode_of(out) == dns.rcode.FORMERR
    assert out is not None
    assert out[:2] == b"\xbe\xef"
    assert out[2] & 0x80  # QR


def test_garbage_with_opcode_update_is_notimp() -> None:
    """As in miekg/dns, the header's opcode is judged before the body is parsed."""
    out = handle(routed_engine(), header(flags=5 << 11) + b"\xff\xff")
    assert rcode_of(out) == dns.rcode.NOTIMP
    assert out is not None and (out[2] >> 3) & 0xF == 5


@pytest.mark.parametrize("size", range(12))
def test_fewer_than_12_bytes_dropped(size: int) -> None:
    data = dns.message.make_query("www.example.org.", "A").to_wire()[:size]
    assert handle(routed_engine(), data) is None


def test_responses_are_dropped() -> None:
    msg = dns.message.make_query("www.example.org.", "A")
    msg.flags |= dns.flags.QR
    assert handle(routed_engine(), msg.to_wire()) is None
    assert handle(routed_engine(), header(flags=0x8100) + b"\xff\xff\xff") is None


def test_qdcount_zero_is_formerr() -> None:
    out = handle(routed_engine(), header(qid=7, qd=0))
    assert rcode_of(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == b"\x00\x07"


def test_qdcount_two_is_formerr() -> None:
    data = header(qid=8, qd=2) + question(WWW) + question([b"a", b"example", b"org"])
    out = handle(routed_engine(), data)
    assert rcode_of(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == b"\x00\x08"


@pytest.mark.parametrize("opcode", [
    dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE,
])
def test_other_opcodes_are_notimp(opcode: int) -> None:
    msg = dns.message.make_query("www.example.org.", "SOA")
    msg.set_opcode(opcode)
    reply = ask(routed_engine(), msg)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.opcode() == opcode


@pytest.mark.parametrize("rdclass", ["CH", "ANY", "HS", "NONE"])
def test_other_classes_are_refused(rdclass: str) -> None:
    msg = dns.message.make_query("version.bind.", "TXT", rdclass)
    reply = ask(routed_engine(), msg)
    assert reply.rcode() == dns.rcode.REFUSED
    assert reply.question[0].rdclass == dns.rdataclass.from_text(rdclass)


def test_name_no_block_serves_is_refused() -> None:
    reply = ask(example_only_engine(), dns.message.make_query("foo.test.", "A"))
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA


def test_200_labels_is_formerr() -> None:
    data = header(qid=9) + question([b"a"] * 200)
    out = handle(root_whoami_engine(), data)
    assert rcode_of(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == b"\x00\x09"


def test_label_length_64_is_formerr() -> None:
    data = header(qid=10) + question([b"x" * 64, b"org"])
    assert rcode_of(handle(root_whoami_engine(), data)) == dns.rcode.FORMERR


@pytest.mark.parametrize("name", [
    b"\xc0\x0c",  # points at itself
    b"\x01a\xc0\x0c",  # points back at its own start
    b"\xc0\x0e\xc0\x0c",  # two pointers pointing at each other
])
def test_compression_pointer_loop_is_formerr(name: bytes) -> None:
    data = header(qid=11) + name + struct.pack("!HH", 1, 1)
    out = handle(root_whoami_engine(), data)
    assert rcode_of(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == b"\x00\x0b"


def test_longest_legal_name_answered() -> None:
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]  # 255 octets on the wire
    assert len(name_wire(labels)) == 255
    msg = dns.message.make_query(dns.name.Name([*labels, b""]), "A")
    # whoami's "_udp.<name>" record cannot exist for this name: SERVFAIL, not silence.
    assert ask(root_whoami_engine(), msg).rcode() == dns.rcode.SERVFAIL
    short = dns.message.make_query(dns.name.Name([*labels[:3], b"d" * 40, b""]), "A")
    assert ask(root_whoami_engine(), short).rcode() == dns.rcode.NOERROR


def test_dot_inside_a_label_is_refused_with_the_question_intact() -> None:
    name = dns.name.Name([b"a.b", b"example", b"org", b""])
    reply = ask(routed_engine(), dns.message.make_query(name, "A"))
    assert reply.rcode() == dns.rcode.REFUSED
    assert reply.question[0].name == name


# --- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "zone"), [
    ("example.org.", "example.org."),
    ("www.example.org.", "example.org."),
    ("sub.example.org.", "sub.example.org."),
    ("a.b.sub.example.org.", "sub.example.org."),
    ("xsub.example.org.", "example.org."),
    ("org.", "."),
    ("foo.test.", "."),
    (".", "."),
])
def test_route_longest_zone(name: str, zone: str) -> None:
    routed = routed_engine().route(name)
    assert routed is not None and routed[0] == zone


def test_route_none_without_root_block() -> None:
    assert example_only_engine().route("foo.test.") is None


def test_routed_answers() -> None:
    engine = routed_engine()
    www = ask(engine, dns.message.make_query("www.example.org.", "A"))
    assert www.rcode() == dns.rcode.NOERROR and www.additional
    sub = ask(engine, dns.message.make_query("WWW.Sub.Example.ORG.", "A"))
    assert sub.rcode() == dns.rcode.SERVFAIL
    other = ask(engine, dns.message.make_query("foo.test.", "A"))
    assert other.rcode() == dns.rcode.SERVFAIL


# --- truncation ----------------------------------------------------------------------------


def big_reply(answers: int = 100, extra: int = 10) -> DNSRecord:
    reply = DNSRecord.question("big.example.org", "A").reply()
    for i in range(answers):
        reply.add_answer(RR("big.example.org", QTYPE.A, ttl=60, rdata=A(f"10.0.{i // 250}.{i % 250}")))
    for i in range(extra):
        reply.add_ar(RR(f"ns{i}.example.org", QTYPE.A, ttl=60, rdata=A(f"192.0.2.{i}")))
    return reply


def test_pack_truncates_to_512() -> None:
    reply = big_reply()
    assert len(reply.pack()) > 512
    wire = _pack(reply, 512)
    assert len(wire) <= 512
    parsed = DNSRecord.parse(wire)
    assert parsed.header.tc == 1
    assert 0 < len(parsed.rr) < 100
    assert parsed.ar == []
    # the largest prefix that fits: one more answer would not
    longer = big_reply()
    longer.rr = longer.rr[: len(parsed.rr) + 1]
    longer.ar = []
    assert len(longer.pack()) > 512


def test_pack_keeps_opt_when_truncating() -> None:
    reply = big_reply(answers=200)
    reply.add_ar(EDNS0(udp_len=1232))
    wire = _pack(reply, 1232)
    assert len(wire) <= 1232
    parsed = dns.message.from_wire(wire)
    assert parsed.flags & dns.flags.TC
    assert parsed.edns == 0 and parsed.payload == 1232
    assert 0 < len(parsed.answer[0]) < 200


def test_pack_does_not_truncate_what_fits() -> None:
    reply = big_reply()
    reply.add_ar(EDNS0(udp_len=4096))
    full = reply.pack()
    assert 512 < len(full) <= 4096
    wire = _pack(reply, 4096)
    assert wire == full
    assert DNSRecord.parse(wire).header.tc == 0


def test_pack_drops_additional_before_answers() -> None:
    reply = big_reply(answers=20, extra=40)
    wire = _pack(reply, 512)
    parsed = DNSRecord.parse(wire)
    assert len(parsed.rr) == 20
    assert len(wire) <= 512


def test_engine_truncates_udp_without_edns() -> None:
    reply = ask(big_engine(), dns.message.make_query("big.example.org.", "A"))
    assert reply.flags & dns.flags.TC
    assert 0 < len(reply.answer[0]) < 100


def test_engine_truncates_udp_to_the_edns_size() -> None:
    msg = dns.message.make_query("big.example.org.", "A", use_edns=0, payload=1232)
    wire = handle(big_engine(), msg.to_wire())
    assert wire is not None and 512 < len(wire) <= 1232  # 100 answers need ~1.6 kB
    reply = dns.message.from_wire(wire)
    assert reply.flags & dns.flags.TC and reply.payload == 1232
    assert 30 < len(reply.answer[0]) < 100


def test_engine_small_edns_size_still_gets_512() -> None:
    msg = dns.message.make_query("big.example.org.", "A", use_edns=0, payload=100)
    wire = handle(big_engine(), msg.to_wire())
    assert wire is not None and 400 < len(wire) <= 512


def test_engine_edns_4096_not_truncated() -> None:
    msg = dns.message.make_query("big.example.org.", "A", use_edns=0, payload=4096)
    reply = ask(big_engine(), msg)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == 100


def test_engine_tcp_not_truncated() -> None:
    reply = ask(big_engine(), dns.message.make_query("big.example.org.", "A"), proto="tcp")
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == 100


# --- never raise -----------------------------------------------------------------------------


def check_reply(data: bytes, out: bytes | None) -> None:
    if len(data) < 12 or data[2] & 0x80:
        assert out is None
        return
    assert out is not None and len(out) >= 12
    assert out[:2] == data[:2]
    assert out[2] & 0x80


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    check_reply(data, handle(routed_engine(), data))


def mutate(rng: random.Random, packet: bytes) -> bytes:
    out = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.6 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op < 0.8:
            del out[rng.randrange(len(out) + 1):]
        else:
            out += rng.randbytes(rng.randint(1, 40))
    return bytes(out)


def test_mutated_queries_never_raise_nor_log_errors(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20240611)
    seeds = [
        dns.message.make_query("www.example.org.", "A").to_wire(),
        dns.message.make_query("WhoAmI.Example.ORG.", "AAAA", want_dnssec=True).to_wire(),
        dns.message.make_query("x.sub.example.org.", "TXT", use_edns=0).to_wire(),
        dns.message.make_query("foo.test.", "SRV").to_wire(),
    ]
    engine = routed_engine()

    async def run() -> list[tuple[bytes, bytes | None]]:
        results = []
        for _ in range(5000):
            data = mutate(rng, rng.choice(seeds))
            results.append((data, await engine.handle(data)))
        return results

    with caplog.at_level(logging.ERROR, logger="dnsd"):
        results = asyncio.run(run())
    for data, out in results:
        check_reply(data, out)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

