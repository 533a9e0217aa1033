"""prometheus: CoreDNS's metrics on ``/metrics``, and the per-query counters.

Syntax: ``prometheus [ADDRESS]`` (default ``:9153``).  Every query through a block with this
plugin is counted in the ``coredns_dns_*`` families (requests, responses by rcode and plugin,
durations, sizes, DO bit); ``coredns_plugin_enabled`` lists the block's plugins.
"""

from __future__ import annotations

from typing import ClassVar

from dnslib import RCODE, DNSRecord
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dnsd import metrics
from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity
from dnsd.httpserve import registry, split_address
from dnsd.request import Request

DEFAULT_ADDRESS = ":9153"


def scrape() -> tuple[int, str, bytes]:
    metrics.flush_hot_path()
    return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY)


def record(req: Request, reply: DNSRecord, size: int) -> None:
    """Count one answered query (runs after the reply is packed)."""
    import time

    rcode = reply.header.rcode
    opt_ext = 0
    for rr in reply.ar:
        if rr.rtype == 41:
            opt_ext = (rr.ttl >> 24) & 0xFF
    full = (opt_ext << 4) | rcode
    metrics.QUERY_STATS.observe(
        req.server, req.zone, req.proto, str(req.family), req.type_name, req.do,
        RCODE.get(full, str(full)), reply.__dict__.get("plugin", ""),
        time.perf_counter() - req.start, req.size, size,
    )


def _replay(req: Request, reply: DNSRecord, size: int) -> object:
    """The same counting for hot-path hits of a prepared reply (no request object there)."""
    rcode = reply.header.rcode
    for rr in reply.ar:
        if rr.rtype == 41:
            rcode |= ((rr.ttl >> 24) & 0xFF) << 4
    return metrics.QUERY_STATS.replayer(req.server, req.zone, req.proto, req.type_name, req.do,
                                        RCODE.get(rcode, str(rcode)),
                                        reply.__dict__.get("plugin", ""), req.size, size)


record.fast_replay = _replay  # type: ignore[attr-defined]


class Plugin(Base):
    name: ClassVar[str] = "prometheus"
    direct_role: ClassVar[str] = "pass"  # (the engine's direct path does its part itself)

    def __init__(self, address: str, ctx: SetupContext) -> None:
        self.host, self.port = split_address(address, 9153)
        self.ctx = ctx

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = arity(d, 0, 1)
        if d.children:
            raise d.children[0].error(f"unknown property '{d.children[0].name}'")
        try:
            return cls(args[0] if args else DEFAULT_ADDRESS, ctx)
        except ValueError as exc:
            raise d.error(str(exc)) from None

    async def start(self) -> None:
        await registry(self.ctx.shared).add(self.host, self.port, "/metrics", self, scrape)
        # Like CoreDNS (which resets the family on restart), a new configuration replaces the
        # old one's series; the first prometheus plugin of a configuration to start clears.
        if self.ctx.shared.get("plugin_enabled_for") is not self.ctx.runtime_plugins:
            self.ctx.shared["plugin_enabled_for"] = self.ctx.runtime_plugins
            metrics.plugin_enabled.clear()
        for server in self.ctx.servers:
            for zone in self.ctx.zones:
                for name, plugin in self.ctx.plugins.items():
                    if plugin.passive:  # bind, health, ready, reload: not query handlers
                        continue
                    metrics.plugin_enabled.labels(server, zone, "", name).set(1)

    async def stop(self) -> None:
        await registry(self.ctx.shared).remove(self.host, self.port, "/metrics", self)

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        req.when_done(record)
        return await next_(req)
