"""TCP listener: 2-byte length framing, many pipelined queries per connection, idle timeout.

Limits (all per listener):

* each query frame must arrive whole within the read timeout (the first on a connection) or
  the idle timeout (later ones), else the connection is closed: a slowloris client trickling
  bytes cannot hold a connection for ever;
* a reply must be taken by the client within the write timeout once the send buffer is full;
* at most ``max_connections`` connections (``DNSD_TCP_MAX_CONNECTIONS``, default 1000); when
  full, a new connection takes the place of the one idle the longest (no query in flight),
  so idle or slow clients cannot lock new ones out; only when every connection is busy is
  the new one closed at once.

The timeouts are ``DNSD_TCP_IDLE_TIMEOUT`` (all three, default 10 s) unless a server block on
the listener has the ``timeouts`` plugin.  Multi-message replies (zone transfers, see
``engine.Stream``) are written message by message, waiting for the client to take each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from dnsd.serve.engine import Engine
from dnsd.serve.udp import client_ip, open_socket

log = logging.getLogger("dnsd")


def _idle_timeout_default() -> float:
    """10 s, or ``DNSD_TCP_IDLE_TIMEOUT`` (seconds, > 0) when set: tests use a short one."""
    try:
        value = float(os.environ.get("DNSD_TCP_IDLE_TIMEOUT", "10"))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


def _max_connections_default() -> int:
    """1000, or ``DNSD_TCP_MAX_CONNECTIONS`` (an integer > 0) when set."""
    try:
        value = int(os.environ.get("DNSD_TCP_MAX_CONNECTIONS", "1000"))
    except ValueError:
        return 1000
    return value if value > 0 else 1000


IDLE_TIMEOUT = _idle_timeout_default()  # seconds a connection may sit without a complete query
MAX_CONNECTIONS = _max_connections_default()
MAX_PIPELINE = 100  # queries in flight on one connection
WRITE_BUFFER = 64 * 1024  # queued reply bytes above which a connection waits for its client


@dataclass(eq=False)
class _Conn:
    """One open connection, as the eviction policy sees it."""

    writer: asyncio.StreamWriter
    last: float = field(default_factory=time.monotonic)  # when its last query arrived
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    streaming: int = 0  # multi-message replies being written (each write waits for the client)


class TcpListener:
    """Answers DNS over TCP on one address and port."""

    def __init__(self, engine: Engine, host: str, port: int, reuse_port: bool = False,
                 idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[asyncio.Task[None], _Conn] = {}
        self._timeouts_of: tuple[Engine, tuple[float, float, float]] | None = None

    async def start(self) -> None:
        sock = open_socket(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._client, sock=sock, backlog=1024)

    def timeouts(self) -> tuple[float, float, float]:
        """(read, write, idle) seconds: the ``timeouts`` plugin's when a block of this
        listener has one (the last block's value wins, as in CoreDNS), else idle_timeout."""
        engine = self.engine
        if self._timeouts_of is None or self._timeouts_of[0] is not engine:
            read = write = idle = self.idle_timeout
            for block in engine.blocks:
                for p in block.plugins:
                    if p.name == "timeouts":
                        read = getattr(p, "read", None) or read
                        write = getattr(p, "write", None) or write
                        idle = getattr(p, "idle", None) or idle
            self._timeouts_of = (engine, (read, write, idle))
        return self._timeouts_of[1]

    def _make_room(self) -> bool:
        """At the connection limit, close the connection idle the longest; False if every
        connection has a query in flight."""
        if len(self._conns) < self.max_connections:
            return True
        victim = min((item for item in self._conns.items() if not item[1].inflight),
                     key=lambda item: item[1].last, default=None)
        if victim is None:
            return False
        del self._conns[victim[0]]
        transport = victim[1].writer.transport
        if transport is not None:
            transport.abort()  # its reader fails at once and its task ends
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if not self._make_room():
            writer.close()
            return
        conn = _Conn(writer)
        if task is not None:
            self._conns[task] = conn
        peer = writer.get_extra_info("peername") or ("", 0)
        inflight = conn.inflight
        read_timeout, write_timeout, idle_timeout = self.timeouts()
        timeout = read_timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):  # the whole frame, not each read
                        head = await reader.readexactly(2)
                        size = int.from_bytes(head, "big")
                        if size == 0:
                            break  # a zero-length frame carries no query: close the connection
                        data = await reader.readexactly(size)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                timeout = idle_timeout
                conn.last = time.monotonic()
                reply, key = self.engine.fast(data, "tcp", peer[0])
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    if not await _drained(writer, write_timeout):
                        break
                    continue
                while len(inflight) >= MAX_PIPELINE:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                t = asyncio.ensure_future(self._answer(data, peer, writer, key, write_timeout, conn))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            while inflight:  # let answers (and a transfer still streaming) finish
                done, _ = await asyncio.wait(inflight, timeout=5)
                if not done and not conn.streaming:
                    break
        except asyncio.CancelledError:
            pass
        finally:
            for t in inflight:
                t.cancel()
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None and self._conns.get(task) is conn:
                del self._conns[task]

    async def _answer(self, data: bytes, peer: tuple, writer: asyncio.StreamWriter,  # type: ignore[type-arg]
                      key: tuple[bytes, int] | None = None, write_timeout: float = IDLE_TIMEOUT,
                      conn: _Conn | None = None) -> None:
        try:
            reply = await self.engine.handle(data, client_ip(peer), peer[1], "tcp", self.host, self.port, key)
        except Exception:
            log.exception("[ERROR] unhandled error answering a TCP query")
            return
        if reply is None or writer.is_closing():
            return
        writer.write(len(reply).to_bytes(2, "big") + reply)
        more = getattr(reply, "more", None)
        if more is None:
            await _drained(writer, write_timeout)
            return
        if conn is not None:
            conn.streaming += 1
        try:  # a zone transfer: the later messages, each once the client took the previous
            for msg in more:
                if not await _drained(writer, write_timeout):
                    return
                writer.write(len(msg).to_bytes(2, "big") + msg)
            await _drained(writer, write_timeout)
        except Exception:  # the stream broke half-way: closing tells the client it failed
            log.exception("[ERROR] multi-message reply failed")
            writer.transport.abort()
        finally:
            if conn is not None:
                conn.streaming -= 1

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            if self._conns:
                await asyncio.wait(list(self._conns), timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None


async def _drained(writer: asyncio.StreamWriter, timeout: float) -> bool:
    """With more than WRITE_BUFFER bytes queued, wait (up to ``timeout``) until the client
    takes them; False (and the connection aborted) when it does not."""
    transport = writer.transport
    if transport is None or transport.is_closing():
        return False
    if transport.get_write_buffer_size() <= WRITE_BUFFER:
        return True
    try:
        await asyncio.wait_for(writer.drain(), timeout)
    except (TimeoutError, ConnectionError):
        transport.abort()
        return False
    except Exception:  # noqa: BLE001 - e.g. a transport closed under us
        return False
    return True
