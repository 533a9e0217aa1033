"""UDP listener: reads the socket directly and drains many datagrams per wake-up.

On Linux the socket is read and answered in batches with ``recvmmsg``/``sendmmsg``
(``dnsd.serve.mmsg``): one system call per batch of datagrams instead of two per query.  The
``recvfrom``/``sendto`` loop below is the fallback: on other systems, when the set-up fails,
and when ``DNSD_UDP_MMSG=0`` (or ``UdpListener(..., mmsg=False)``) asks for it.  Both give the
same answers; general-path replies (misses) are always sent with ``sendto``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from dnsd.serve import mmsg as _mmsg
from dnsd.serve.engine import Engine
from dnsd.switches import switched_on

log = logging.getLogger("dnsd")

DRAIN_BATCH = 64  # datagrams read per readiness callback
MAX_INFLIGHT = 10_000  # queries being resolved at once; beyond that new ones are dropped
UDP_BUFFER = 4 << 20  # socket buffers asked for (see widen_buffers)


def open_socket(host: str, port: int, kind: int, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking socket; ``host`` "" means every address (IPv6 dual-stack if any)."""
    family = socket.AF_INET6 if ":" in host or (host == "" and socket.has_ipv6) else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Only TCP: on Linux, SO_REUSEADDR lets two UDP sockets share a port silently.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host == "":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def buffer_bytes() -> int:
    """The socket buffer size to ask for: ``DNSD_UDP_BUFFER`` bytes, default 4 MiB (0 keeps
    the system's default)."""
    try:
        return max(0, int(os.environ.get("DNSD_UDP_BUFFER", UDP_BUFFER)))
    except ValueError:
        log.warning("[WARNING] DNSD_UDP_BUFFER is not a number of bytes; using %d", UDP_BUFFER)
        return UDP_BUFFER


def widen_buffers(sock: socket.socket, size: int | None = None) -> None:
    """Ask for larger receive and send buffers than the usual 208 KiB default.

    At 75,000 queries per second the default receive buffer holds about 4 ms of queries
    (each datagram is charged ~768 bytes), so any pause longer than that (a collection, a
    burst of first answers, the scheduler) drops queries.  The kernel caps the request at
    net.core.rmem_max / wmem_max; a smaller grant is not an error."""
    size = buffer_bytes() if size is None else size
    if size <= 0:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < size:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:  # the default still works
            log.debug("udp: could not set socket buffer %d: %s", option, exc)


def client_ip(addr: tuple) -> str:  # type: ignore[type-arg]
    ip: str = addr[0]
    return ip[7:] if ip.startswith("::ffff:") else ip


def mmsg_wanted(choice: bool | None = None) -> bool:
    """Batch with recvmmsg/sendmmsg? ``choice`` when given, else ``DNSD_UDP_MMSG`` (default on;
    ``0``, ``false``, ``no`` or ``off`` selects the recvfrom/sendto loop)."""
    if choice is not None:
        return choice
    return switched_on("DNSD_UDP_MMSG")


class UdpListener:
    """Answers DNS over UDP on one address and port."""

    def __init__(self, engine: Engine, host: str, port: int, reuse_port: bool = False,
                 mmsg: bool | None = None) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._want_mmsg = mmsg_wanted(mmsg)
        self._batched: _mmsg.MmsgUdp | None = None

    @property
    def mode(self) -> str:
        """``"mmsg"`` (recvmmsg/sendmmsg batches) or ``"recvfrom"`` (one datagram at a time)."""
        return "mmsg" if self._batched is not None else "recvfrom"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock = open_socket(self.host, self.port, socket.SOCK_DGRAM, self.reuse_port)
        self.port = self.sock.getsockname()[1]
        widen_buffers(self.sock)
        self._local_ip = self.host
        if self._want_mmsg and _mmsg.available():
            try:
                self._batched = _mmsg.MmsgUdp(self.sock)
            except Exception as exc:  # any set-up problem: the recvfrom loop still works
                log.warning("[WARNING] udp %s:%d: recvmmsg/sendmmsg set-up failed (%s); using recvfrom",
                            self.host, self.port, exc)
        if self._batched is not None:
            self._loop.add_reader(self.sock.fileno(), self._batched.drain, self)
        else:
            self._loop.add_reader(self.sock.fileno(), self._on_readable)
        log.debug("udp %s:%d: %s", self.host, self.port, self.mode)

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(DRAIN_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.debug("udp recv error: %s", exc)
                continue
            ip = addr[0]
            try:
                # A v4-mapped client of a dual-stack socket counts as IPv4, as on the general path.
                reply, key = self.engine.fast(data, "udp", ip[7:] if ip.startswith("::ffff:") else ip)
            except Exception:  # never let one packet kill the loop
                log.exception("[ERROR] hot path failed")
                reply, key = None, None
            if reply is not None:
                try:
                    sock.sendto(reply, addr)
                except OSError as exc:
                    log.debug("udp send error: %s", exc)
                continue
            if len(self._tasks) >= MAX_INFLIGHT:
                continue
            task = self._loop.create_task(self._answer(data, addr, key))  # type: ignore[union-attr]
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def general(self, data: bytes, addr: tuple, key: tuple[bytes, int] | None) -> None:  # type: ignore[type-arg]
        """Answer a query the hot path did not, in a task (the batched reader's misses)."""
        if len(self._tasks) >= MAX_INFLIGHT:
            return
        task = self._loop.create_task(self._answer(data, addr, key))  # type: ignore[union-attr]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple, key: tuple[bytes, int] | None = None) -> None:  # type: ignore[type-arg]
        try:
            reply = await self.engine.handle(
                data, client_ip(addr), addr[1], "udp", self._local_ip, self.port, key
            )
        except Exception:  # the engine should not raise; never let one packet kill the loop
            log.exception("[ERROR] unhandled error answering a UDP query")
            return
        if reply is not None and self.sock is not None:
            try:
                self.sock.sendto(reply, addr)
            except OSError as exc:
                log.debug("udp send error: %s", exc)

    async def stop(self) -> None:
        if self.sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            if self._batched is not None:
                self._batched.close()
                self._batched = None
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2)
                for task in list(self._tasks):
                    task.cancel()
            self.sock.close()
            self.sock = None
