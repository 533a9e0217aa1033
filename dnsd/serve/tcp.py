"""TCP listener: 2-byte length framing, many pipelined queries per connection, idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

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


IDLE_TIMEOUT = _idle_timeout_default()  # seconds a connection may sit without a complete query
MAX_CONNECTIONS = 1000
MAX_PIPELINE = 100  # queries in flight on one connection


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
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = open_socket(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._client, sock=sock, backlog=1024)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= self.max_connections:
            writer.close()
            return
        if task is not None:
            self._conns.add(task)
        peer = writer.get_extra_info("peername") or ("", 0)
        inflight: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                    size = int.from_bytes(head, "big")
                    if size == 0:
                        break  # a zero-length frame carries no query: close the connection
                    data = await asyncio.wait_for(reader.readexactly(size), self.idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                reply, key = self.engine.fast(data, "tcp", peer[0])
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    continue
                while len(inflight) >= MAX_PIPELINE:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                t = asyncio.ensure_future(self._answer(data, peer, writer, key))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            if inflight:
                await asyncio.wait(inflight, timeout=5)
        except asyncio.CancelledError:
            pass
        finally:
            for t in inflight:
                t.cancel()
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._conns.discard(task)

    async def _answer(self, data: bytes, peer: tuple, writer: asyncio.StreamWriter,  # type: ignore[type-arg]
                      key: tuple[bytes, int] | None = None) -> None:
        try:
            reply = await self.engine.handle(data, client_ip(peer), peer[1], "tcp", self.host, self.port, key)
        except Exception:
            log.exception("[ERROR] unhandled error answering a TCP query")
            return
        if reply is None or writer.is_closing():
            return
        writer.write(len(reply).to_bytes(2, "big") + reply)
        with contextlib.suppress(Exception):
            await writer.drain()

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
