"""reload: apply a changed Corefile without a restart.

Syntax: ``reload [INTERVAL] [JITTER]`` (defaults 30s and 15s; minimums 2s and 1s).  Every
INTERVAL ± JITTER the Corefile's SHA512 is compared with the running one; on a change the new
configuration is built and swapped in while the sockets stay open, so no query is dropped.  A
broken new Corefile is logged, counted in ``coredns_reload_failed_total``, and the running
configuration keeps serving.  SIGHUP triggers the same reload at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from typing import ClassVar

from dnsd import metrics
from dnsd.chain import Plugin as Base
from dnsd.chain import SetupContext
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity, duration_arg

log = logging.getLogger("dnsd")


def corefile_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha512(f.read()).hexdigest()


class Plugin(Base):
    name: ClassVar[str] = "reload"
    passive: ClassVar[bool] = True

    def __init__(self, interval: float, jitter: float, ctx: SetupContext) -> None:
        self.interval = interval
        self.jitter = jitter
        self.ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self.hash = ""
        self.stopped = False
        self._previous: Plugin | None = None  # the running configuration's, during a reload

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = arity(d, 0, 2)
        if d.children:
            raise d.children[0].error(f"unknown property '{d.children[0].name}'")
        interval = duration_arg(d, args[0], minimum=2) if args else 30.0
        jitter = duration_arg(d, args[1], minimum=1) if len(args) > 1 else 15.0
        if jitter > interval / 2:
            jitter = interval / 2
        return cls(interval, jitter, ctx)

    async def start(self) -> None:
        try:
            self.hash = corefile_hash(self.ctx.config_file)
        except OSError:
            self.hash = ""
        self._previous = self.ctx.shared.get("reload_version")
        self.ctx.shared["reload_version"] = self
        _show_version(self.hash)
        log.info("[INFO] plugin/reload: Running configuration SHA512 = %s", self.hash)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        self.stopped = True
        previous, self._previous = self._previous, None
        if self.ctx.shared.get("reload_version") is self and previous is not None and not previous.stopped:
            # This configuration never took over (its reload failed): show the running one's.
            self.ctx.shared["reload_version"] = previous
            _show_version(previous.hash)
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval + random.uniform(-self.jitter, self.jitter))
            try:
                current = corefile_hash(self.ctx.config_file)
            except OSError as exc:
                log.error("[ERROR] plugin/reload: cannot read %s: %s", self.ctx.config_file, exc)
                continue
            if current == self.hash:
                continue
            reload = self.ctx.shared.get("reload")
            if reload is None:
                continue
            self.hash = current  # do not retry the same broken file every interval
            await asyncio.shield(reload())


def _show_version(sha512: str) -> None:
    metrics.reload_version_info.clear()
    metrics.reload_version_info.labels(sha512, "sha512").set(1)
