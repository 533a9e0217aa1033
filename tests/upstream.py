"""Test helpers for resolver-side plugins: a scriptable upstream DNS server and in-process dnsd.

``Upstream`` answers on 127.0.0.1 over UDP and TCP from its own thread (so both blocking and
asyncio tests can use it), counts the queries it sees and can misbehave on demand:

* ``dead``            - never answers
* ``slow``            - answers after ``delay`` seconds
* ``truncate``        - over UDP only TC replies with no records; full answers over TCP
* ``spoof_id``        - first a forged reply with a wrong ID, then (after ``delay``) the real one
* ``spoof_question``  - first a forged reply for another question, then the real one
* ``spoof_only``      - only forged replies (wrong ID and wrong question), never the real one
* ``garbage``         - first random bytes, then the real reply

``serve_corefile`` runs a whole dnsd configuration (parser, plugins, listeners) inside the
current event loop on a kernel-chosen port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.message
from dnslib import CNAME as CNAME_
from dnslib import MX as MX_
from dnslib import QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

ZONE = "example.org."
SOA_TTL = 300
SOA_MINIMUM = 60


def default_records(ttl: int = 300) -> dict[tuple[str, int], list[RR]]:
    """The upstream's data: a few names under example.org."""
    a, txt, cname, mx = QTYPE.A, QTYPE.TXT, QTYPE.CNAME, QTYPE.MX
    multi = [RR("multi.example.org.", a, ttl=ttl, rdata=A(f"192.0.2.{i}")) for i in range(1, 7)]
    return {
        ("www.example.org.", a): [RR("www.example.org.", a, ttl=ttl, rdata=A("192.0.2.1"))],
        ("short.example.org.", a): [RR("short.example.org.", a, ttl=3, rdata=A("192.0.2.3"))],
        ("multi.example.org.", a): multi,
        ("alias.example.org.", a): [
            RR("alias.example.org.", cname, ttl=ttl, rdata=CNAME_("alias2.example.org.")),
            RR("alias2.example.org.", cname, ttl=ttl, rdata=CNAME_("multi.example.org.")),
            *multi,
        ],
        ("mx.example.org.", mx): [RR("mx.example.org.", mx, ttl=ttl, rdata=MX_(f"mx{i}.example.org.", 10 * i))
                                  for i in range(1, 5)],
        ("big.example.org.", txt): [RR("big.example.org.", txt, ttl=ttl, rdata=TXT("x" * 60 + f"-{i}"))
                                    for i in range(30)],
        ("www.other.test.", a): [RR("www.other.test.", a, ttl=ttl, rdata=A("198.51.100.1"))],
    }


@dataclass
class Upstream:
    """A small authoritative-looking DNS server for tests (see the module docstring)."""

    records: dict[tuple[str, int], list[RR]] = field(default_factory=default_records)
    mode: str = "normal"
    delay: float = 0.05
    tag: str = ""  # an identifying TXT answer for "who.example.org." (which upstream answered)
    port: int = 0
    queries: list[tuple[str, str, int]] = field(default_factory=list)  # (proto, name, qtype)
    ids: list[int] = field(default_factory=list)
    source_ports: list[int] = field(default_factory=list)
    connections: int = 0  # TCP connections accepted
    handler: Callable[[DNSRecord, str], DNSRecord | None] | None = None

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Upstream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._open())
        self._ready.set()
        loop.run_forever()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            usock.bind(("127.0.0.1", self.port))
            port = usock.getsockname()[1]
            tsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tsock.bind(("127.0.0.1", port))
            except OSError:
                usock.close()
                tsock.close()
                if self.port:
                    raise
                continue
            break
        self.port = port
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProto(self), sock=usock)
        self._tcp = await asyncio.start_server(self._tcp_client, sock=tsock)

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for w in list(self._tcp_writers):
            w.close()
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- counting --------------------------------------------------------------------------

    def count(self, name: str | None = None, proto: str | None = None) -> int:
        """Queries seen (health checks for ``.`` excluded unless name is ".")."""
        with self._lock:
            return sum(1 for p, n, _ in self.queries
                       if (name is None and n != ".") or n == name
                       if proto is None or p == proto)

    def counts_by_name(self) -> Counter[str]:
        with self._lock:
            return Counter(n for _, n, _ in self.queries)

    def reset(self) -> None:
        with self._lock:
            self.queries.clear()
            self.ids.clear()
            self.source_ports.clear()

    # --- answering -------------------------------------------------------------------------

    def answer(self, query: DNSRecord, proto: str) -> DNSRecord:
        """The honest reply to ``query``."""
        if self.handler is not None:
            custom = self.handler(query, proto)
            if custom is not None:
                return custom
        q = query.q
        name = str(q.qname).lower()
        reply = query.reply(ra=1, aa=1)
        if self.tag and name == "who.example.org.":
            reply.add_answer(RR(q.qname, QTYPE.TXT, ttl=300, rdata=TXT(self.tag)))
            return reply
        if name == "." and q.qtype == QTYPE.NS:
            return reply  # health check
        rrs = self.records.get((name, q.qtype))
        if rrs:
            for rr in rrs:
                copy = RR(rr.rname, rr.rtype, rr.rclass, rr.ttl, rr.rdata)
                if str(rr.rname).lower() == name:
                    copy.rname = q.qname  # echo the case the client used
                reply.add_answer(copy)
            return reply
        exists = any(n == name for n, _ in self.records)
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(RR(ZONE, QTYPE.SOA, ttl=SOA_TTL, rdata=SOA(
            "ns1.example.org.", "hostmaster.example.org.", (1, 7200, 3600, 1209600, SOA_MINIMUM))))
        return reply

    def _record(self, query: DNSRecord, proto: str, port: int) -> None:
        with self._lock:
            self.queries.append((proto, str(query.q.qname).lower(), query.q.qtype))
            self.ids.append(query.header.id)
            self.source_ports.append(port)

    def _forged(self, query: DNSRecord, wrong_id: bool, wrong_question: bool) -> bytes:
        fake = DNSRecord.question("forged.example.net." if wrong_question else str(query.q.qname),
                                  QTYPE.get(query.q.qtype, "A"))
        fake.header.id = (query.header.id + 1) % 65536 if wrong_id else query.header.id
        reply = fake.reply(ra=1, aa=1)
        reply.add_answer(RR(fake.q.qname, QTYPE.A, ttl=300, rdata=A("6.6.6.6")))
        return reply.pack()

    async def respond(self, data: bytes, proto: str, port: int,
                      send: Callable[[bytes], None]) -> None:
        """Handle one query packet according to ``mode``."""
        try:
            query = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - ignore junk
            return
        self._record(query, proto, port)
        mode = self.mode
        if mode == "dead":
            return
        if mode == "slow":
            await asyncio.sleep(self.delay)
        if mode in ("spoof_id", "spoof_question", "spoof_only", "garbage"):
            if mode == "garbage":
                send(os.urandom(40))
            else:
                send(self._forged(query, mode != "spoof_question", mode != "spoof_id"))
            if mode == "spoof_only":
                send(self._forged(query, True, False))
                return
            await asyncio.sleep(self.delay)
        reply = self.answer(query, proto)
        wire = reply.pack()
        limit = 512
        opt = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
        if opt:
            limit = max(512, opt[0].rclass)
        if proto == "udp" and (mode == "truncate" or len(wire) > limit):
            reply.rr, reply.auth, reply.ar = [], [], []
            reply.header.tc = 1
            wire = reply.pack()
        send(wire)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        self.connections += 1
        port = (writer.get_extra_info("peername") or ("", 0))[1]

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(len(data).to_bytes(2, "big") + data)

        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(int.from_bytes(head, "big"))
                asyncio.ensure_future(self.respond(data, "tcp", port, send))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()


class _UdpProto(asyncio.DatagramProtocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        transport = self.transport

        def send(reply: bytes) -> None:
            if transport is not None and not transport.is_closing():
                transport.sendto(reply, addr)

        asyncio.ensure_future(self.upstream.respond(data, "udp", addr[1], send))


# --- in-process dnsd -------------------------------------------------------------------------

@dataclass
class Running:
    """A Corefile served in-process: its port and its plugin instances."""

    port: int
    server: Any

    def plugin(self, name: str) -> Any:
        """The first instance of plugin ``name`` in the configuration."""
        for p in self.server.runtime.plugins:
            if p.name == name:
                return p
        raise KeyError(name)


@contextlib.asynccontextmanager
async def serve_corefile(text: str) -> AsyncIterator[Running]:
    """Run a Corefile inside this event loop ({PORT} is replaced by a free port)."""
    from support import free_port

    from dnsd.corefile import parse
    from dnsd.serve.runtime import Runtime, Server

    port = free_port()
    runtime = Runtime.build(parse(text.replace("{PORT}", str(port))), default_port=port)
    server = Server()
    await server.start(runtime)
    try:
        yield Running(port, server)
    finally:
        await server.stop()


async def aquery(port: int, name: str, rdtype: str = "A", tcp: bool = False,
                 timeout: float = 8.0, **kw: Any) -> dns.message.Message:
    """One dnspython query to 127.0.0.1:port (UDP or TCP) from async code."""
    q = dns.message.make_query(name, rdtype, **kw)
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=timeout)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=timeout)


def addresses(msg: dns.message.Message) -> list[str]:
    """The A/AAAA addresses of the answer section, in order."""
    return [rd.address for rrset in msg.answer for rd in rrset if rrset.rdtype in (1, 28)]


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))
