"""health: ``/health`` for liveness probes, and lameduck on shutdown.

Syntax::

    health [ADDRESS] {
        lameduck DURATION
    }

Default address ``:8080``.  ``/health`` answers 200 ``OK`` while the process runs.  On
SIGTERM/SIGINT with ``lameduck``, dnsd keeps answering DNS for DURATION before it stops, and
``/health`` answers 503 during that time (so probes see the shutdown coming; CoreDNS keeps
200 there, the brief for dnsd asks to report it).  A self-check requests ``/health`` once a
second and feeds ``coredns_health_request_duration_seconds`` and
``coredns_health_request_failures_total``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from dnsd import metrics
from dnsd.chain import Plugin as Base
from dnsd.chain import SetupContext
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity, duration_arg
from dnsd.httpserve import registry, split_address
from dnsd.tasks import stop_task

DEFAULT_ADDRESS = ":8080"


def shutting_down(shared: dict[str, Any]) -> bool:
    return bool(shared.get("shutting_down"))


class Plugin(Base):
    name: ClassVar[str] = "health"
    passive: ClassVar[bool] = True

    def __init__(self, address: str, lameduck: float, ctx: SetupContext) -> None:
        self.host, self.port = split_address(address, 8080)
        self.lameduck = lameduck
        self.ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = arity(d, 0, 1)
        lameduck = 0.0
        for c in d.children:
            if c.name != "lameduck":
                raise c.error(f"unknown property '{c.name}'")
            lameduck = duration_arg(c, arity(c, 1, 1)[0])
        try:
            return cls(args[0] if args else DEFAULT_ADDRESS, lameduck, ctx)
        except ValueError as exc:
            raise d.error(str(exc)) from None

    def status(self) -> tuple[int, str, bytes]:
        if shutting_down(self.ctx.shared):
            return 503, "text/plain", b"lameduck: shutting down\n"
        return 200, "text/plain", b"OK"

    async def start(self) -> None:
        listener = await registry(self.ctx.shared).add(self.host, self.port, "/health", self, self.status)
        lameducks = self.ctx.shared.setdefault("lameduck", {})
        lameducks[id(self)] = self.lameduck
        self._task = asyncio.get_running_loop().create_task(self._self_check(listener.port))

    async def stop(self) -> None:
        self.ctx.shared.get("lameduck", {}).pop(id(self), None)
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task, what="plugin/health: the self-check")
            self._task = None
        await registry(self.ctx.shared).remove(self.host, self.port, "/health", self)

    async def _self_check(self, port: int) -> None:
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        # (asyncio.timeout, not wait_for, and a stop flag: see dnsd/tasks.py)
        while not self._stopping:
            await asyncio.sleep(1)
            start = time.perf_counter()
            ok = False
            try:
                async with asyncio.timeout(1):
                    reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(b"GET /health HTTP/1.1\r\nHost: dnsd\r\n\r\n")
                    async with asyncio.timeout(1):
                        line = await reader.readline()
                    ok = b" 200 " in line or shutting_down(self.ctx.shared)
                finally:
                    writer.close()
            except (TimeoutError, OSError):
                ok = False
            metrics.health_request_duration.observe(time.perf_counter() - start)
            if not ok:
                metrics.health_request_failures.inc()
