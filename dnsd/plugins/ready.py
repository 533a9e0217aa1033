"""ready: ``/ready`` for readiness probes.

Syntax::

    ready [ADDRESS] {
        monitor until-ready|continuously
    }

Default address ``:8181``.  200 ``OK`` once every plugin that reports readiness (the
kubernetes plugin's first full sync above all) is ready; otherwise 503 with the comma-separated
names of the plugins that are not; 503 ``Shutting down`` during shutdown.  With
``until-ready`` (the default) a plugin that was ready once is not asked again, so a 410 relist
never flips readiness.  During a reload the running configuration keeps serving while the new
one starts (the kubernetes plugin's first sync): until the new one is ready, or the old one
has stopped, ``/ready`` answers for the old one, so a reload does not flip readiness either.
"""

from __future__ import annotations

from typing import ClassVar

from dnsd.chain import Plugin as Base
from dnsd.chain import SetupContext
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity
from dnsd.httpserve import registry, split_address
from dnsd.plugins.health import shutting_down

DEFAULT_ADDRESS = ":8181"


class Plugin(Base):
    name: ClassVar[str] = "ready"
    passive: ClassVar[bool] = True

    def __init__(self, address: str, continuously: bool, ctx: SetupContext) -> None:
        self.host, self.port = split_address(address, 8181)
        self.continuously = continuously
        self.ctx = ctx
        self._ready_once: set[int] = set()
        self._previous: Plugin | None = None  # the running configuration's, during a reload
        self.stopped = False

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = arity(d, 0, 1)
        continuously = False
        for c in d.children:
            if c.name != "monitor":
                raise c.error(f"unknown property '{c.name}'")
            mode = arity(c, 1, 1)[0]
            if mode not in ("until-ready", "continuously"):
                raise c.error(f"monitor must be until-ready or continuously, got '{mode}'")
            continuously = mode == "continuously"
        try:
            return cls(args[0] if args else DEFAULT_ADDRESS, continuously, ctx)
        except ValueError as exc:
            raise d.error(str(exc)) from None

    def not_ready(self) -> list[str]:
        names: list[str] = []
        for plugin in self.ctx.runtime_plugins:
            if not plugin.reports_readiness:
                continue
            if not self.continuously and id(plugin) in self._ready_once:
                continue
            if plugin.ready():
                self._ready_once.add(id(plugin))
            elif plugin.name not in names:
                names.append(plugin.name)
        return names

    def status(self) -> tuple[int, str, bytes]:
        if shutting_down(self.ctx.shared):
            return 503, "text/plain", b"Shutting down"
        waiting = self.not_ready()
        previous = self._previous
        if waiting and previous is not None and not previous.stopped:
            return previous.status()
        self._previous = None
        if waiting:
            return 503, "text/plain", ",".join(sorted(waiting)).encode()
        if not self.ctx.shared.get("listening", True):
            # Plugins start before the DNS sockets open: not ready until queries can arrive.
            return 503, "text/plain", b"dns"
        return 200, "text/plain", b"OK"

    async def start(self) -> None:
        listener = await registry(self.ctx.shared).add(self.host, self.port, "/ready", self, self.status)
        owners = [owner for owner, _ in listener.routes["/ready"][:-1]
                  if isinstance(owner, Plugin) and owner.ctx.runtime_plugins is not self.ctx.runtime_plugins]
        self._previous = owners[-1] if owners else None

    async def stop(self) -> None:
        self.stopped = True
        self._previous = None
        await registry(self.ctx.shared).remove(self.host, self.port, "/ready", self)
