"""One upstream of the forward plugin: query exchange over UDP/TCP, connection cache, health.

Every UDP query uses a new socket (so a new random source port) and a new random ID; a reply
is only accepted when its ID and question match what was sent, anything else is ignored while
waiting (anti-spoofing).  TCP connections are kept for reuse until they sit idle for
``expire``.  After a failed query a health-check loop starts (``. IN NS`` every interval) that
counts consecutive failures; the proxy is down while that count exceeds ``max_fails``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from dnsd import metrics

log = logging.getLogger("dnsd")

READ_TIMEOUT = 2.0  # per try, as CoreDNS's forward
HEALTH_TIMEOUT = 1.0  # health-check read timeout
MAX_MSG = 65535
MAX_IDLE_CONNS = 16  # idle TCP connections kept per upstream


class UpstreamError(Exception):
    """The upstream did not answer usably (timeout, refused, connection closed)."""


class _CachedConnClosed(UpstreamError):
    """A reused TCP connection turned out to be closed by the peer."""


@dataclass(frozen=True)
class Question:
    """The question a reply must echo back (name compared case-insensitively)."""

    name: str
    qtype: int
    qclass: int

    def matches(self, reply: DNSRecord) -> bool:
        if not reply.header.qr:
            return False
        if not reply.questions:  # some servers drop the question on FORMERR / NOTIMP
            return reply.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN)
        if len(reply.questions) != 1:
            return False
        q = reply.questions[0]
        return (q.qtype == self.qtype and q.qclass == self.qclass
                and str(q.qname).lower() == self.name)


@dataclass
class HealthConfig:
    interval: float = 0.5
    recursion_desired: bool = True
    domain: str = "."


def new_id() -> int:
    return secrets.randbits(16)


def with_id(wire: bytes, qid: int) -> bytes:
    return qid.to_bytes(2, "big") + wire[2:]


def _parse_reply(data: bytes, qid: int, question: Question) -> DNSRecord | None:
    if len(data) < 12 or int.from_bytes(data[:2], "big") != qid:
        return None
    try:
        reply = DNSRecord.parse(data)
    except Exception:  # garbage: dnslib raises assorted errors
        return None
    return reply if question.matches(reply) else None


class _TcpConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Proxy:
    """An upstream server ``host:port``."""

    def __init__(self, host: str, port: int, expire: float = 10.0,
                 health: HealthConfig | None = None, force_tcp: bool = False,
                 proxy_name: str = "forward") -> None:
        self.host = host
        self.port = port
        self.addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.expire = expire
        self.health = health or HealthConfig()
        self.force_tcp = force_tcp
        self.proxy_name = proxy_name
        self.fails = 0  # consecutive failed health checks
        self._conns: list[_TcpConn] = []
        self._probe: asyncio.Task[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"Proxy({self.addr})"

    def down(self, max_fails: int) -> bool:
        """True when more than ``max_fails`` health checks in a row failed (CoreDNS's rule)."""
        return max_fails != 0 and self.fails > max_fails

    # --- exchanges -------------------------------------------------------------------------

    async def exchange(self, wire: bytes, question: Question, proto: str,
                       timeout: float = READ_TIMEOUT) -> DNSRecord:
        """Send the packed query ``wire`` (its ID is replaced) and return the matching reply."""
        qid = new_id()
        data = with_id(wire, qid)
        try:
            async with asyncio.timeout(timeout):
                if proto == "tcp":
                    return await self._tcp(data, qid, question)
                return await self._udp(data, qid, question)
        except TimeoutError:
            raise UpstreamError(f"timeout after {timeout:g}s") from None
        except OSError as exc:
            raise UpstreamError(str(exc)) from None

    async def _udp(self, data: bytes, qid: int, question: Question) -> DNSRecord:
        loop = asyncio.get_running_loop()
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((self.host, self.port))  # kernel picks a fresh random source port
            sock.send(data)
            while True:
                packet = await loop.sock_recv(sock, MAX_MSG)
                reply = _parse_reply(packet, qid, question)
                if reply is not None:
                    return reply
                # wrong ID, wrong question or garbage: ignore it and keep waiting
        finally:
            sock.close()

    async def _tcp(self, data: bytes, qid: int, question: Question) -> DNSRecord:
        conn = self._take_conn()
        if conn is not None:
            metrics.proxy_conn_cache_hits.labels(self.proxy_name, self.addr, "tcp").inc()
            try:
                reply = await self._tcp_on(conn, data, qid, question)
            except _CachedConnClosed:
                conn.close()
            except BaseException:
                conn.close()
                raise
            else:
                self._give_conn(conn)
                return reply
        metrics.proxy_conn_cache_misses.labels(self.proxy_name, self.addr, "tcp").inc()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _TcpConn(reader, writer)
        try:
            reply = await self._tcp_on(conn, data, qid, question)
        except BaseException:
            conn.close()
            raise
        self._give_conn(conn)
        return reply

    async def _tcp_on(self, conn: _TcpConn, data: bytes, qid: int, question: Question) -> DNSRecord:
        try:
            conn.writer.write(len(data).to_bytes(2, "big") + data)
            await conn.writer.drain()
            while True:
                head = await conn.reader.readexactly(2)
                packet = await conn.reader.readexactly(int.from_bytes(head, "big"))
                reply = _parse_reply(packet, qid, question)
                if reply is not None:
                    return reply
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _CachedConnClosed(str(exc)) from None

    def _take_conn(self) -> _TcpConn | None:
        now = time.monotonic()
        while self._conns:
            conn = self._conns.pop()
            if now - conn.idle_since < self.expire and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    def _give_conn(self, conn: _TcpConn) -> None:
        if self._stopped or self.expire <= 0 or len(self._conns) >= MAX_IDLE_CONNS:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._conns.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.expire, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections older than ``expire``; runs while any are kept."""
        self._sweeper = None
        now = time.monotonic()
        keep = []
        for conn in self._conns:
            if now - conn.idle_since < self.expire:
                keep.append(conn)
            else:
                conn.close()
        self._conns = keep
        if keep and not self._stopped:
            wait = max(0.05, self.expire - (now - min(c.idle_since for c in keep)))
            self._sweeper = asyncio.get_running_loop().call_later(wait, self._sweep)

    # --- health ----------------------------------------------------------------------------

    def healthcheck(self) -> None:
        """Start the probe loop unless it already runs (called after a failed query)."""
        if self._stopped or self.health.interval <= 0:
            return
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while not self._stopped:
            if await self.check():
                self.fails = 0
                return
            self.fails += 1
            metrics.proxy_healthcheck_failures.labels(self.proxy_name, self.addr).inc()
            await asyncio.sleep(self.health.interval)

    async def check(self) -> bool:
        """One health check: any reply to ``<domain> IN NS`` counts as healthy."""
        h = self.health
        header = DNSHeader(id=0, rd=int(h.recursion_desired))
        msg = DNSRecord(header, q=DNSQuestion(h.domain, QTYPE.NS))
        question = Question(h.domain.lower(), QTYPE.NS, 1)
        proto = "tcp" if self.force_tcp else "udp"
        try:
            await self.exchange(msg.pack(), question, proto, HEALTH_TIMEOUT)
        except UpstreamError:
            return False
        return True

    async def stop(self) -> None:
        self._stopped = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
            self._probe = None
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.wait_closed(), 1)
