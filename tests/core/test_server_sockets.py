"""The server core over real sockets: a ``python -m dnsd`` process on 127.0.0.1.

One module-wide server answers most tests (several server blocks, two ports); the idle
timeout test starts its own with ``DNSD_TCP_IDLE_TIMEOUT``.  Clients are dnspython, raw
sockets for what dnspython will not send, and the real ``dig`` where users would look.
"""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import pytest
from socket_support import (
    ADDR,
    closed_by_peer,
    frame,
    header,
    question,
    recv_frame,
    tcp_connect,
    tcp_exchange,
    udp_exchange,
)
from support import Dnsd, dig, free_port, query

from dnsd.serve import tcp

MAIN = """\
example.org:{PORT} {
    log
    whoami
}
sub.example.org:{PORT} {
    errors
}
.:{PORT} {
    errors
}
example.org:{PORT2} {
    whoami
}
"""


@dataclass
class Server:
    dnsd: Dnsd
    port: int  # example.org -> whoami, sub.example.org and . -> SERVFAIL
    port2: int  # only example.org: anything else is REFUSED

    def alive(self) -> bool:
        return self.dnsd.proc is not None and self.dnsd.proc.poll() is None


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port2 = free_port()
    d = Dnsd(MAIN.replace("{PORT2}", str(port2)))
    d.start()
    try:
        yield Server(d, d.port, port2)
    finally:
        d.stop()


# --- raw client helpers ------------------------------------------------------------------------


def rcode(wire: bytes | None) -> int:
    assert wire is not None and len(wire) >= 12
    return dns.message.from_wire(wire).rcode() if len(wire) > 12 else wire[3] & 0xF


def status(out: str) -> str:
    m = re.search(r"status: (\w+)", out)
    assert m, out
    return m.group(1)


Exchange = Callable[[int, bytes], bytes | None]
BOTH: list[tuple[str, Exchange]] = [("udp", udp_exchange), ("tcp", tcp_exchange)]
both = pytest.mark.parametrize(("proto", "exchange"), BOTH, ids=["udp", "tcp"])


def ask(port: int, msg: dns.message.Message, proto: str) -> dns.message.Message:
    if proto == "tcp":
        return dns.query.tcp(msg, ADDR, port=port, timeout=3)
    return dns.query.udp(msg, ADDR, port=port, timeout=3)


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_whoami_over_both_transports(server: Server, proto: str) -> None:
    reply = query("www.example.org.", "A", port=server.port, tcp=proto == "tcp")
    assert reply.rcode() == dns.rcode.NOERROR
    names = [rrset.name.to_text() for rrset in reply.additional]
    assert names == ["www.example.org.", f"_{proto}.www.example.org."]
    assert reply.additional[0][0].address == "127.0.0.1"


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_case_preserved(server: Server, proto: str) -> None:
    reply = query("WhoAmI.Example.ORG.", "A", port=server.port, tcp=proto == "tcp")
    assert reply.question[0].name.to_text() == "WhoAmI.Example.ORG."
    assert reply.additional[0].name.to_text() == "WhoAmI.Example.ORG."


def test_dig_case_and_transport(server: Server) -> None:
    out = dig("WhoAmI.Example.ORG", "A", port=server.port)
    assert status(out) == "NOERROR"
    assert ";WhoAmI.Example.ORG.\t\tIN\tA" in out
    assert "_udp.WhoAmI.Example.ORG." in out
    out = dig("+tcp", "WhoAmI.Example.ORG", port=server.port)
    assert "_tcp.WhoAmI.Example.ORG." in out
    assert "(TCP)" in out


# --- EDNS0 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("size", [1232, 4096])
def test_edns_size_and_do_echoed(server: Server, proto: str, size: int) -> None:
    msg = dns.message.make_query("www.example.org.", "A", want_dnssec=True, payload=size)
    reply = ask(server.port, msg, proto)
    assert reply.edns == 0
    assert reply.payload == size
    assert reply.ednsflags & dns.flags.DO
    plain = ask(server.port, dns.message.make_query("www.example.org.", "A", use_edns=0), proto)
    assert plain.edns == 0 and not plain.ednsflags & dns.flags.DO
    none = ask(server.port, dns.message.make_query("www.example.org.", "A"), proto)
    assert none.edns == -1


def test_dig_edns(server: Server) -> None:
    out = dig("+bufsize=1400", "+dnssec", "www.example.org", port=server.port)
    assert "; EDNS: version: 0, flags: do; udp: 1400" in out
    out = dig("+noedns", "www.example.org", port=server.port)
    assert "OPT PSEUDOSECTION" not in out


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_edns_version_1_badvers(server: Server, proto: str) -> None:
    msg = dns.message.make_query("www.example.org.", "A", use_edns=1)
    reply = ask(server.port, msg, proto)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert (reply.ednsflags >> 24) & 0xFF == 1
    wire = udp_exchange(server.port, msg.to_wire()) if proto == "udp" else tcp_exchange(server.port, msg.to_wire())
    assert wire is not None and wire[3] & 0xF == 0


def test_dig_badvers(server: Server) -> None:
    out = dig("+edns=1", "+noednsneg", "www.example.org", port=server.port)
    assert status(out) == "BADVERS"
    assert "; EDNS: version: 0" in out


@both
def test_two_opt_records_formerr(server: Server, proto: str, exchange: Exchange) -> None:
    wire = bytearray(dns.message.make_query("www.example.org.", "A", use_edns=0).to_wire())
    wire[10:12] = b"\x00\x02"
    wire += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    out = exchange(server.port, bytes(wire))
    assert rcode(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == wire[:2]


# --- malformed packets ------------------------------------------------------------------------


@both
def test_garbage_with_header_formerr(server: Server, proto: str, exchange: Exchange) -> None:
    out = exchange(server.port, header(0xBEEF) + b"\x05ab\xff\x00")
    assert out is not None
    assert out[:2] == b"\xbe\xef"
    assert out[2] & 0x80 and out[3] & 0xF == dns.rcode.FORMERR


def test_short_packets_dropped_udp(server: Server) -> None:
    good = dns.message.make_query("www.example.org.", "A").to_wire()
    for size in (0, 1, 2, 11):
        assert udp_exchange(server.port, good[:size], timeout=0.3) is None
    assert udp_exchange(server.port, good) is not None


def test_short_and_response_frames_dropped_tcp(server: Server) -> None:
    """Dropped frames get no answer, and the connection stays usable."""
    good = dns.message.make_query("www.example.org.", "A")
    response = dns.message.make_query("www.example.org.", "A")
    response.flags |= dns.flags.QR
    with tcp_connect(server.port) as s:
        s.sendall(frame(b"\x12\x34\x01") + frame(response.to_wire()) + frame(good.to_wire()))
        reply = dns.message.from_wire(recv_frame(s))
        assert reply.id == good.id


def test_responses_dropped_udp(server: Server) -> None:
    msg = dns.message.make_query("www.example.org.", "A")
    msg.flags |= dns.flags.QR
    assert udp_exchange(server.port, msg.to_wire(), timeout=0.3) is None
    assert udp_exchange(server.port, header(1, flags=0x8000) + b"\xff", timeout=0.3) is None


@both
@pytest.mark.parametrize("qd", [0, 2])
def test_qdcount_formerr(server: Server, proto: str, exchange: Exchange, qd: int) -> None:
    body = b"".join(question([b"q%d" % i, b"example", b"org"]) for i in range(qd))
    out = exchange(server.port, header(0x4242, qd=qd) + body)
    assert rcode(out) == dns.rcode.FORMERR
    assert out is not None and out[:2] == b"\x42\x42"


def test_dig_header_only_formerr(server: Server) -> None:
    assert status(dig("+header-only", port=server.port)) == "FORMERR"


@both
@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS])
def test_opcodes_notimp(server: Server, proto: str, exchange: Exchange, opcode: int) -> None:
    msg = dns.message.make_query("example.org.", "SOA")
    msg.set_opcode(opcode)
    out = exchange(server.port, msg.to_wire())
    assert out is not None
    reply = dns.message.from_wire(out)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.opcode() == opcode and reply.id == msg.id


@pytest.mark.parametrize("opcode", ["notify", "update"])
def test_dig_opcode_notimp(server: Server, opcode: str) -> None:
    out = dig(f"+opcode={opcode}", "example.org", "SOA", port=server.port)
    assert status(out) == "NOTIMP"
    assert f"opcode: {opcode.upper()}" in out


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("rdclass", ["CH", "ANY"])
def test_classes_refused(server: Server, proto: str, rdclass: str) -> None:
    msg = dns.message.make_query("version.bind.", "TXT", rdclass)
    assert ask(server.port, msg, proto).rcode() == dns.rcode.REFUSED


def test_dig_chaos_refused(server: Server) -> None:
    assert status(dig("version.bind", "CH", "TXT", port=server.port)) == "REFUSED"


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_unserved_name_refused(server: Server, proto: str) -> None:
    reply = ask(server.port2, dns.message.make_query("foo.test.", "A"), proto)
    assert reply.rcode() == dns.rcode.REFUSED
    ok = ask(server.port2, dns.message.make_query("www.example.org.", "A"), proto)
    assert ok.rcode() == dns.rcode.NOERROR


def test_dig_unserved_refused(server: Server) -> None:
    assert status(dig("foo.test", port=server.port2)) == "REFUSED"


# --- routing between server blocks on one port ----------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_longest_zone_wins(server: Server, proto: str) -> None:
    def ask_name(name: str) -> dns.message.Message:
        return ask(server.port, dns.message.make_query(name, "A"), proto)

    for name in ("example.org.", "www.example.org.", "xsub.example.org."):
        reply = ask_name(name)
        assert reply.rcode() == dns.rcode.NOERROR and reply.additional, name  # whoami
    for name in ("sub.example.org.", "a.b.Sub.Example.org.", "foo.test.", "org."):
        assert ask_name(name).rcode() == dns.rcode.SERVFAIL, name  # errors only: nobody answers


def test_dig_routing(server: Server) -> None:
    assert status(dig("www.example.org", port=server.port)) == "NOERROR"
    assert status(dig("foo.test", port=server.port)) == "SERVFAIL"
    assert status(dig("www.sub.example.org", port=server.port)) == "SERVFAIL"


# --- robustness ------------------------------------------------------------------------------------

SEEDS = [
    dns.message.make_query("www.example.org.", "A").to_wire(),
    dns.message.make_query("WhoAmI.Example.ORG.", "AAAA", want_dnssec=True).to_wire(),
    dns.message.make_query("x.sub.example.org.", "TXT", use_edns=0, payload=1232).to_wire(),
    dns.message.make_query("foo.test.", "SRV").to_wire(),
    dns.message.make_query("version.bind.", "TXT", "CH").to_wire(),
]


def fuzz_packet(rng: random.Random) -> bytes:
    """Random bytes (30%) or a valid query with random flips, truncations and extensions."""
    if rng.random() < 0.3:
        return rng.randbytes(rng.randint(0, 120))
    out = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 5)):
        op = rng.random()
        if op < 0.6 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op < 0.8:
            del out[rng.randrange(len(out) + 1):]
        else:
            out += rng.randbytes(rng.randint(1, 60))
    return bytes(out)


def answerable(p: bytes) -> bool:
    return len(p) >= 12 and not p[2] & 0x80


def check_alive(server: Server) -> None:
    assert server.alive()
    for proto in ("udp", "tcp"):
        reply = query("WhoAmI.Example.ORG.", "A", port=server.port, tcp=proto == "tcp")
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.additional[1].name.to_text() == f"_{proto}.WhoAmI.Example.ORG."
    out = server.dnsd.output()
    assert "Traceback" not in out, out[-3000:]


def drain(sock: socket.socket, into: list[bytes], idle: float) -> None:
    while select.select([sock], [], [], idle)[0]:
        into.append(sock.recv(65535))


def test_udp_fuzz_10000_packets(server: Server) -> None:
    rng = random.Random(0xD05D)
    packets = [fuzz_packet(rng) for _ in range(10_000)]
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((ADDR, 0))
        for start in range(0, len(packets), 200):
            for p in packets[start:start + 200]:
                s.sendto(p, (ADDR, server.port))
            drain(s, replies, 0.05)
        drain(s, replies, 0.5)
    sent_ids = {p[:2] for p in packets if answerable(p)}
    for r in replies:
        assert len(r) >= 12 and r[2] & 0x80 and r[:2] in sent_ids
    expected = sum(answerable(p) for p in packets)
    assert len(replies) >= 0.9 * expected, (len(replies), expected)
    check_alive(server)


def test_tcp_fuzz_several_connections(server: Server) -> None:
    rng = random.Random(0x7C9)
    conns = [tcp_connect(server.port) for _ in range(6)]
    sent: list[list[bytes]] = []
    try:
        for s in conns:
            packets = [p for p in (fuzz_packet(rng) for _ in range(70)) if p]  # no 0-length frame
            sent.append(packets)
            s.sendall(b"".join(frame(p) for p in packets))
            s.shutdown(socket.SHUT_WR)  # the server answers what it read, then closes
        for s, packets in zip(conns, sent, strict=True):
            replies = []
            while True:
                try:
                    replies.append(recv_frame(s))
                except EOFError:
                    break
            ids = {p[:2] for p in packets if answerable(p)}
            assert all(r[:2] in ids and r[2] & 0x80 for r in replies)
            assert len(replies) == sum(answerable(p) for p in packets)
    finally:
        for s in conns:
            s.close()
    check_alive(server)


def test_tcp_zero_length_frame_closes_connection(server: Server) -> None:
    good = dns.message.make_query("www.example.org.", "A")
    with tcp_connect(server.port) as s:
        s.sendall(frame(good.to_wire()) + b"\x00\x00")
        assert dns.message.from_wire(recv_frame(s)).id == good.id  # queries before it answered
        assert closed_by_peer(s, 3)
    check_alive(server)


def test_tcp_65535_byte_garbage_frame(server: Server) -> None:
    rng = random.Random(65535)
    data = header(0xABCD) + b"\xc0\xff" + rng.randbytes(65535 - 14)
    assert len(data) == 65535
    with tcp_connect(server.port) as s:
        s.sendall(frame(data))
        out = recv_frame(s)
    assert out[:2] == b"\xab\xcd" and out[3] & 0xF == dns.rcode.FORMERR
    check_alive(server)


@both
@pytest.mark.parametrize("name", [b"\xc0\x0c", b"\x01a\xc0\x0c", b"\x03www\xc0\x0c"])
def test_compression_pointer_loop(server: Server, proto: str, exchange: Exchange, name: bytes) -> None:
    out = exchange(server.port, header(0x1001) + name + b"\x00\x01\x00\x01")
    assert out is not None and out[:2] == b"\x10\x01" and out[3] & 0xF == dns.rcode.FORMERR
    check_alive(server)


@both
def test_200_labels_formerr(server: Server, proto: str, exchange: Exchange) -> None:
    out = exchange(server.port, header(0x2002) + question([b"a"] * 200))
    assert out is not None and out[:2] == b"\x20\x02" and out[3] & 0xF == dns.rcode.FORMERR
    check_alive(server)


@both
def test_longest_name_gets_an_answer(server: Server, proto: str, exchange: Exchange) -> None:
    """255 octets: whoami's ``_udp.<name>`` cannot be built; SERVFAIL, never silence."""
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 49, b"example", b"org"]
    msg = dns.message.make_query(dns.name.Name([*labels, b""]), "A")
    out = exchange(server.port, msg.to_wire())
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL


# --- TCP framing, pipelining and the idle timeout ----------------------------------------------------


def test_tcp_pipelining_20_queries(server: Server) -> None:
    msgs = [dns.message.make_query(f"q{i}.example.org.", "A") for i in range(20)]
    for i, m in enumerate(msgs):
        m.id = 1000 + i
    with tcp_connect(server.port) as s:
        s.sendall(b"".join(frame(m.to_wire()) for m in msgs))  # all 20 at once
        replies = [dns.message.from_wire(recv_frame(s)) for _ in msgs]
    by_id = {r.id: r for r in replies}
    assert sorted(by_id) == [m.id for m in msgs]  # any order, none missing or repeated
    for m in msgs:
        assert by_id[m.id].question[0].name == m.question[0].name
        assert by_id[m.id].additional[1].name.to_text() == f"_tcp.{m.question[0].name}"


def test_tcp_frame_split_across_writes(server: Server) -> None:
    msg = dns.message.make_query("split.example.org.", "A")
    data = frame(msg.to_wire())
    with tcp_connect(server.port) as s:
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(0.001)
        assert dns.message.from_wire(recv_frame(s)).id == msg.id


def test_tcp_idle_timeout(dnsd: Callable[..., Dnsd]) -> None:
    d = dnsd(".:{PORT} {\n    whoami\n}\n", env={"DNSD_TCP_IDLE_TIMEOUT": "0.5"})
    msg = dns.message.make_query("idle.example.org.", "A")
    with tcp_connect(d.port) as s:  # an answered connection that then goes quiet
        s.sendall(frame(msg.to_wire()))
        assert dns.message.from_wire(recv_frame(s)).id == msg.id
        start = time.monotonic()
        assert closed_by_peer(s, 3)
        assert 0.3 < time.monotonic() - start < 2.5
    with tcp_connect(d.port) as s:  # half a length prefix, then nothing
        s.sendall(b"\x00")
        start = time.monotonic()
        assert closed_by_peer(s, 3)
        assert time.monotonic() - start < 2.5
    assert query("after.idle.", port=d.port, tcp=True).rcode() == dns.rcode.NOERROR


def test_tcp_idle_timeout_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DNSD_TCP_IDLE_TIMEOUT", raising=False)
    assert tcp._idle_timeout_default() == 10.0
    monkeypatch.setenv("DNSD_TCP_IDLE_TIMEOUT", "0.25")
    assert tcp._idle_timeout_default() == 0.25
    for bad in ("", "soon", "0", "-1"):
        monkeypatch.setenv("DNSD_TCP_IDLE_TIMEOUT", bad)
        assert tcp._idle_timeout_default() == 10.0
