"""The UDP listener's two readers: recvmmsg/sendmmsg batches (Linux) and the recvfrom loop.

Both are run for real: ``python -m dnsd`` processes with ``DNSD_UDP_MMSG=1`` and ``=0`` side by
side (bursts, IPv4 and IPv6 clients, metrics, big datagrams), and listeners in an event loop on
a thread of the test process where a test needs to hold the loop while datagrams queue up (so
that hits and misses land in one batch) or to look at the listener's buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import mmap
import random
import select
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from loop_support import LoopThread
from prometheus_client.parser import text_string_to_metric_families
from support import Dnsd, free_port

from dnsd.corefile import parse
from dnsd.serve import mmsg
from dnsd.serve.runtime import Runtime
from dnsd.serve.udp import UdpListener, mmsg_wanted

pytestmark = pytest.mark.skipif(not socket.has_ipv6, reason="needs IPv6 (::1)")
linux_only = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg not available here")

HOSTS = """\
    hosts {
        192.0.2.1 web.example.org
        2001:db8::1 web.example.org
        fallthrough
    }
    whoami
"""
# Port PORT: every address (the dual-stack IPv6 socket) with metrics; PORT6: ::1 only.
COREFILE = (".:{PORT} {\n    prometheus 127.0.0.1:{MPORT}\n" + HOSTS + "}\n"
            ".:{PORT6} {\n    bind ::1\n" + HOSTS + "}\n")
MODES = ["mmsg", "recvfrom"]


@dataclass
class Server:
    dnsd: Dnsd
    port: int  # dual-stack
    port6: int  # ::1 only
    metrics: int


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """One dnsd per reader, started side by side."""
    started: dict[str, Server] = {}
    try:
        for mode in MODES:
            port6, metrics = free_port(), free_port()
            text = COREFILE.replace("{PORT6}", str(port6)).replace("{MPORT}", str(metrics))
            d = Dnsd(text, env={"DNSD_UDP_MMSG": "1" if mode == "mmsg" else "0"})
            started[mode] = Server(d, d.port, port6, metrics)
            d.start()
        yield started
    finally:
        for s in started.values():
            s.dnsd.stop()


def endpoint(server: Server, target: str) -> tuple[int, tuple[str, int]]:
    """(family, address) of a client target: v4 or v6 to the dual-stack port, or the ::1 port."""
    if target == "v4":
        return socket.AF_INET, ("127.0.0.1", server.port)
    if target == "v6":
        return socket.AF_INET6, ("::1", server.port)
    return socket.AF_INET6, ("::1", server.port6)


def client(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    return s


def collect(sock: socket.socket, want: int, timeout: float = 5.0) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
        out.append(sock.recv(65535))
    return out


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the UDP sockets bound to ``port`` (queue full)."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total += int(fields[-1])
    return total


def burst_queries(count: int) -> list[dns.message.Message]:
    """Hot-path hits (A and AAAA of a hosts name) mixed with misses (whoami answers)."""
    msgs = []
    for i in range(count):
        name, rdtype = [("web.example.org.", "A"), ("Web.Example.org.", "AAAA"),
                        (f"who{i}.example.org.", "A")][i % 3]
        m = dns.message.make_query(name, rdtype)
        m.id = i + 1
        msgs.append(m)
    return msgs


def check_reply(q: dns.message.Message, r: dns.message.Message, client_ip: str, client_port: int) -> None:
    assert r.id == q.id and r.question == q.question and r.rcode() == dns.rcode.NOERROR
    qname = q.question[0].name
    if qname.labels[0].startswith(b"who"):  # whoami, from the general path: the client's address
        rdtype = dns.rdatatype.AAAA if ":" in client_ip else dns.rdatatype.A
        assert r.additional[0].name == qname and r.additional[0].rdtype == rdtype
        assert r.additional[0][0].address == client_ip
        assert r.additional[1][0].port == client_port
    else:
        want = "192.0.2.1" if q.question[0].rdtype == dns.rdatatype.A else "2001:db8::1"
        assert [rr.address for rr in r.answer[0]] == [want] and r.answer[0].name == qname


# --- processes: DNSD_UDP_MMSG=1 and =0 ---------------------------------------------------------


@pytest.mark.parametrize("target", ["v4", "v6", "v6-only"])
@pytest.mark.parametrize("mode", MODES)
def test_burst_of_500_answered(servers: dict[str, Server], mode: str, target: str) -> None:
    server = servers[mode]
    family, addr = endpoint(server, target)
    msgs = burst_queries(500)
    with client(family) as s:
        me = s.getsockname()
        drops = udp_drops(addr[1]) + udp_drops(me[1])
        for m in msgs:  # all at once, nothing awaited
            s.sendto(m.to_wire(), addr)
        replies = [dns.message.from_wire(w) for w in collect(s, len(msgs))]
        dropped = udp_drops(addr[1]) + udp_drops(me[1]) - drops
        by_id = {r.id: r for r in replies}
        assert len(by_id) == len(replies)  # one answer per query
        # A busy machine may overflow a socket's queue (the server's, or this client's where
        # rmem_max is small): the kernel counts those, and they are asked again; anything else
        # missing would be the server's fault.
        missing = [m for m in msgs if m.id not in by_id]
        assert len(missing) <= dropped, (len(missing), dropped)
        for m in missing:
            s.sendto(m.to_wire(), addr)
            got = collect(s, 1)
            assert got, m.id
            by_id[m.id] = dns.message.from_wire(got[0])
        for m in msgs:
            check_reply(m, by_id[m.id], "127.0.0.1" if family == socket.AF_INET else "::1", me[1])


def scrape(port: int) -> dict[tuple[str, str], float]:
    """coredns_dns_requests_total of zone "." by (family, type)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "coredns_dns_requests_total" and s.labels["zone"] == ".":
                key = (s.labels["family"], s.labels["type"])
                out[key] = out.get(key, 0.0) + s.value
    return out


@pytest.mark.parametrize("mode", MODES)
def test_hits_counted_by_client_family(servers: dict[str, Server], mode: str) -> None:
    """Hot-path hits count an IPv4 client of the dual-stack socket as family 1, like the
    general path (and CoreDNS), and an IPv6 one as family 2."""
    server = servers[mode]
    before = scrape(server.metrics)
    sent = {"1": 0, "2": 0}
    for family, fam_label, count in ((socket.AF_INET, "1", 70), (socket.AF_INET6, "2", 90)):
        _, addr = endpoint(server, "v4" if family == socket.AF_INET else "v6")
        with client(family) as s:
            for i in range(count):
                m = dns.message.make_query("web.example.org.", "A")
                s.sendto(m.to_wire(), addr)
                assert collect(s, 1), i  # one at a time: nothing may be dropped here
        sent[fam_label] += count
    after = scrape(server.metrics)
    for fam_label, count in sent.items():
        assert after.get((fam_label, "A"), 0) - before.get((fam_label, "A"), 0) == count


def big_query(size: int, qid: int, name: str = "web.example.org.", payload: int = 1232) -> bytes:
    """A plain A query whose EDNS padding option makes it ``size`` bytes."""
    small = dns.message.make_query(name, "A", use_edns=0, payload=payload)
    small.id = qid
    pad = size - len(small.to_wire()) - 4
    big = dns.message.make_query(name, "A", use_edns=0, payload=payload,
                                 options=[dns.edns.GenericOption(12, b"\x00" * pad)])
    big.id = qid
    wire = big.to_wire(max_size=65535)
    assert len(wire) == size
    return wire


def exchange(family: int, addr: tuple[str, int], data: bytes, timeout: float = 3.0) -> bytes | None:
    with client(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.sendto(data, addr)
        got = collect(s, 1, timeout)
    return got[0] if got else None


@pytest.mark.parametrize("target", ["v4", "v6"])
def test_big_datagrams_same_answer_on_both_readers(servers: dict[str, Server], target: str) -> None:
    rng = random.Random(4096)
    biggest = 65507 if target == "v4" else 65527  # the largest UDP payload of the family
    cases = {
        "4200-byte query": big_query(4200, 0x1111),
        "65000-byte query": big_query(65000, 0x2222),
        f"{biggest}-byte query": big_query(biggest, 0x3333),
        "65000-byte garbage": struct.pack("!6H", 0x4444, 0x0100, 1, 0, 0, 0) + rng.randbytes(65000 - 12),
    }
    small = dns.message.make_query("web.example.org.", "A", use_edns=0, payload=1232)
    got: dict[str, dict[str, bytes | None]] = {}
    for mode in MODES:
        family, addr = endpoint(servers[mode], target)
        exchange(family, addr, small.to_wire())  # prepared from now on
        got[mode] = {name: exchange(family, addr, data) for name, data in cases.items()}
    assert got["mmsg"] == got["recvfrom"]
    answers = got["mmsg"]
    for name, data in cases.items():
        out = answers[name]
        assert out is not None and out[:2] == data[:2], name
        reply = dns.message.from_wire(out)
        if "garbage" in name:
            assert reply.rcode() == dns.rcode.FORMERR
        else:  # the padding does not change the answer
            assert [rr.address for rr in reply.answer[0]] == ["192.0.2.1"], name
    for mode in MODES:
        assert servers[mode].dnsd.proc.poll() is None  # type: ignore[union-attr]
        assert "Traceback" not in servers[mode].dnsd.output()


# --- listeners in this process -----------------------------------------------------------------


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


# big.example.org: 400 addresses, a 6.5 KiB answer for a client that takes it.
BIG = "".join(f"        198.18.{i // 250}.{i % 250 + 1} big.example.org\n" for i in range(400)) + "        fallthrough"


class Served(LoopThread):
    """Listeners on one engine, in an event loop running on a thread of this process."""

    def __init__(self, hosts: list[str], use_mmsg: bool | None, loop: str = "asyncio") -> None:
        super().__init__(new_loop(loop))
        self.runtime = Runtime.build(parse(".:1053 {\n" + HOSTS.replace("        fallthrough", BIG) + "}\n"), 1053)
        self.engine = self.runtime.engines[("", 1053)]
        self.listeners: list[UdpListener] = []
        self.run(self.runtime.start_plugins())
        for host in hosts:
            listener = UdpListener(self.engine, host, 0, mmsg=use_mmsg)
            self.run(listener.start())
            self.listeners.append(listener)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The loop does nothing inside the block: datagrams queue up on the sockets."""
        entered, gate = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            gate.wait(10)

        self.loop.call_soon_threadsafe(hold)
        assert entered.wait(5)
        try:
            yield
        finally:
            gate.set()

    def close(self) -> None:
        for listener in self.listeners:
            self.run(listener.stop())
        self.run(self.runtime.stop_plugins())
        self.stop_loop()


@pytest.fixture
def served() -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(hosts: list[str], use_mmsg: bool | None, loop: str = "asyncio") -> Served:
        s = Served(hosts, use_mmsg, loop)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@linux_only
def test_reader_selection(served: Callable[..., Served], monkeypatch: pytest.MonkeyPatch) -> None:
    assert served(["127.0.0.1"], True).listeners[0].mode == "mmsg"
    assert served(["127.0.0.1"], False).listeners[0].mode == "recvfrom"
    monkeypatch.delenv("DNSD_UDP_MMSG", raising=False)
    assert mmsg_wanted() and served(["::1"], None).listeners[0].mode == "mmsg"
    for off in ("0", "off", "false", "No"):
        monkeypatch.setenv("DNSD_UDP_MMSG", off)
        assert not mmsg_wanted()
    assert served(["::1"], None).listeners[0].mode == "recvfrom"
    monkeypatch.setenv("DNSD_UDP_MMSG", "1")
    assert served([""], None).listeners[0].mode == "mmsg"
    assert mmsg_wanted(False) is False  # the constructor's choice wins over the environment


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", ["127.0.0.1", "", "::1"])
def test_hits_and_misses_in_one_batch(served: Callable[..., Served], mode: str, host: str,
                                      loop: str) -> None:
    srv = served([host], mode == "mmsg", loop)
    listener = srv.listeners[0]
    assert listener.mode == mode or not mmsg.available()
    families = {"127.0.0.1": [socket.AF_INET], "": [socket.AF_INET, socket.AF_INET6],
                "::1": [socket.AF_INET6]}[host]
    clients = [client(f) for f in families for _ in range(2)]
    try:
        for c in clients:  # prepare the hot-path answers
            target = "127.0.0.1" if c.family == socket.AF_INET else "::1"
            for rdtype in ("A", "AAAA"):
                c.sendto(dns.message.make_query("web.example.org.", rdtype).to_wire(), (target, listener.port))
                assert collect(c, 1)
        hits = srv.engine.prepared.hits
        sent: list[tuple[socket.socket, dns.message.Message]] = []
        with srv.held():  # 48 datagrams wait on the socket, then go in one batch
            for i, m in enumerate(burst_queries(48)):
                c = clients[i % len(clients)]
                target = "127.0.0.1" if c.family == socket.AF_INET else "::1"
                c.sendto(m.to_wire(), (target, listener.port))
                sent.append((c, m))
        for c in clients:
            mine = [m for s, m in sent if s is c]
            replies = {r.id: r for r in (dns.message.from_wire(w) for w in collect(c, len(mine)))}
            assert sorted(replies) == sorted(m.id for m in mine)
            ip = "127.0.0.1" if c.family == socket.AF_INET else "::1"
            for m in mine:
                check_reply(m, replies[m.id], ip, c.getsockname()[1])
        assert srv.engine.prepared.hits - hits == 32  # the A and AAAA queries; whoami never is
    finally:
        for c in clients:
            c.close()


@linux_only
def test_drain_stops_after_its_bound(served: Callable[..., Served]) -> None:
    """One wake-up reads at most ROUNDS batches, so TCP and the rest of the loop get their turn."""
    srv = served(["127.0.0.1"], True)
    listener = srv.listeners[0]
    assert listener.sock is not None
    small = mmsg.MmsgUdp(listener.sock, batch=4)
    try:
        with client(socket.AF_INET) as c:
            msgs = burst_queries(40)
            for m in msgs[:2]:  # the listener's reader prepares the A and AAAA answers
                c.sendto(m.to_wire(), ("127.0.0.1", listener.port))
                assert collect(c, 1)
            srv.call(lambda: listener._loop.remove_reader(listener.sock.fileno()))  # type: ignore[union-attr]
            for m in msgs[2:]:
                c.sendto(m.to_wire(), ("127.0.0.1", listener.port))
            time.sleep(0.2)
            srv.call(lambda: small.drain(listener))
            assert len(collect(c, 40, timeout=1.0)) == 4 * mmsg.ROUNDS
            srv.call(lambda: small.drain(listener))
            srv.call(lambda: small.drain(listener))
            assert len(collect(c, 40, timeout=1.0)) == 38 - 4 * mmsg.ROUNDS
    finally:
        small.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR")
@pytest.mark.parametrize("mode", MODES)
def test_recv_errors_do_not_stop_the_reader(served: Callable[..., Served], mode: str) -> None:
    """With IP_RECVERR an ICMP port-unreachable for a reply surfaces as ECONNREFUSED on the
    next receive: the reader logs it and goes on reading."""
    srv = served(["127.0.0.1"], mode == "mmsg")
    listener = srv.listeners[0]
    assert listener.sock is not None
    listener.sock.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR (Linux)
    for round_ in range(5):
        gone = client(socket.AF_INET)
        gone.sendto(dns.message.make_query("web.example.org.", "A").to_wire(), ("127.0.0.1", listener.port))
        gone.close()  # the reply meets a closed port
        time.sleep(0.05)
        with client(socket.AF_INET) as c:
            m = dns.message.make_query("web.example.org.", "A")
            c.sendto(m.to_wire(), ("127.0.0.1", listener.port))
            got = collect(c, 1)
            assert got and dns.message.from_wire(got[0]).id == m.id, round_


def resident_pages(buf: mmap.mmap) -> int:
    """Pages of an mmap that are in memory (mincore(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    pages = (len(buf) + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    anchor = ctypes.c_char.from_buffer(buf)
    try:
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(len(buf)), vec)
    finally:
        del anchor
    assert rc == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec)


@linux_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore")
def test_buffers_stay_small_in_memory(served: Callable[..., Served]) -> None:
    """The 64 receive and 64 send slots of 64 KiB are address space: a page is resident only
    once written, and pages a big datagram or reply filled are given back."""
    srv = served(["127.0.0.1"], True)
    listener = srv.listeners[0]
    batched = listener._batched
    assert batched is not None
    rbuf, sbuf = batched._rbuf, batched._sbuf
    assert len(rbuf) == len(sbuf) == mmsg.BATCH * mmsg.SLOT
    assert resident_pages(rbuf) == 0 and resident_pages(sbuf) == 0
    with client(socket.AF_INET) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        # The first of each is answered by the general path and prepared; then hot-path hits:
        # a 65,000-byte query (receive slot 0) and a 6.5 KiB reply (send slot 0).
        for data in (big_query(100, 1), big_query(65000, 2), big_query(100, 3, "big.example.org.", 65000),
                     big_query(65000, 4, "big.example.org.", 65000)):
            c.sendto(data, ("127.0.0.1", listener.port))
            got = collect(c, 1)
            assert got and got[0][:2] == data[:2]
        assert len(got[0]) > 6000
        assert srv.engine.prepared.hits == 2
    assert resident_pages(rbuf) <= 1
    assert resident_pages(sbuf) <= 1


@linux_only
def test_close_releases_the_buffers() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        s.setblocking(False)
        b = mmsg.MmsgUdp(s)
        bufs = (b._meta, b._rbuf, b._sbuf)
        b.close()
        assert all(buf.closed for buf in bufs)


def test_sockaddr_parsing_matches_recvfrom() -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as r, socket.socket(family, socket.SOCK_DGRAM) as c:
            r.bind((host, 0))
            c.bind((host, 0))
            c.sendto(b"x", r.getsockname())
            _, addr = r.recvfrom(10)
            raw = struct.pack("=H", family) + struct.pack("!H", addr[1])
            if family == socket.AF_INET:
                raw += socket.inet_pton(family, addr[0]) + b"\x00" * 8
            else:
                raw += struct.pack("!I", addr[2]) + socket.inet_pton(family, addr[0]) + struct.pack("=I", addr[3])
            assert mmsg.sockaddr_to_tuple(raw) == addr
    mapped = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 53, 0) + \
        socket.inet_pton(socket.AF_INET6, "::ffff:10.1.2.3") + b"\x00" * 4
    assert mmsg.sockaddr_to_tuple(mapped) == ("::ffff:10.1.2.3", 53, 0, 0)
