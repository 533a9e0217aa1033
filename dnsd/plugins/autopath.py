"""autopath: server-side search path, so a pod's short name costs one round trip.

Syntax: ``autopath [ZONE...] RESOLV-CONF`` where RESOLV-CONF is ``@kubernetes`` (the search
path of the pod that asks, from the kubernetes plugin; needs ``pods verified``) or a
resolv.conf file whose ``search`` line is used for every client.

A query under the first search domain (``web.default.svc.cluster.local`` from a pod in
``default`` asking ``web``) is tried with each search domain in turn, then bare; the first
reply that is not NXDOMAIN is returned with a CNAME from the asked name to the name that
answered.  If every candidate is NXDOMAIN, the first candidate's reply is returned.  Queries
from clients that are not pods, or not under the first search domain, pass through untouched.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dnslib import CNAME, QTYPE, RCODE, RR, DNSRecord

from dnsd import metrics
from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.address import normalize_zone
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity
from dnsd.plugins.kubernetes.plugin import resolv_search
from dnsd.request import Request


class Plugin(Base):
    name: ClassVar[str] = "autopath"

    def __init__(self, zones: list[str], source: str, ctx: SetupContext) -> None:
        self.zones = zones
        self.source = source  # "@kubernetes" or a resolv.conf path
        self.ctx = ctx
        self.static = [] if source.startswith("@") else resolv_search(source) + [""]
        self._provider: Any = None

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = arity(d, 1)
        if d.children:
            raise d.children[0].error(f"unknown property '{d.children[0].name}'")
        source = args[-1]
        zones = [normalize_zone(z) for z in args[:-1]] or list(ctx.zones)
        if source.startswith("@"):
            if source != "@kubernetes":
                raise d.error(f"plugin '{source[1:]}' cannot provide a search path to autopath")
            k8s = ctx.plugins.get("kubernetes")
            if k8s is None:
                raise d.error("autopath @kubernetes needs the kubernetes plugin in the same server block")
            if getattr(k8s, "cfg", None) is not None and k8s.cfg.pods != "verified":
                raise d.error("autopath @kubernetes needs 'pods verified' in the kubernetes plugin")
        elif not resolv_search(source):
            raise d.error(f"no search domains found in '{source}'")
        plugin = cls(zones, source, ctx)
        plugin._provider = ctx.plugins.get("kubernetes") if source.startswith("@") else None
        return plugin

    def search_path(self, req: Request) -> list[str] | None:
        if self._provider is not None:
            return self._provider.autopath_search(req.client_ip)  # type: ignore[no-any-return]
        return self.static or None

    def _in_zones(self, name: str) -> bool:
        return any(z == "." or name == z or name.endswith("." + z) for z in self.zones)

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        reply = await self._serve(req, next_)
        if reply is not None:
            # Answers here depend on who asks: never reuse them on the hot path.
            reply.__dict__.pop("valid", None)
        return reply

    async def _serve(self, req: Request, next_: Next) -> DNSRecord | None:
        name = req.qname_lower
        if not self._in_zones(name):
            return await next_(req)
        search = self.search_path(req)
        if not search or not search[0]:
            return await next_(req)
        first = search[0]
        if not name.endswith("." + first):
            return await next_(req)
        base_len = len(req.qname) - len(first)  # keep the client's spelling of the base
        base = req.qname[:base_len]
        first_reply: DNSRecord | None = None
        for i, domain in enumerate(search):
            candidate = base + domain if domain else base
            sub = req if i == 0 else req.with_name(candidate)
            reply = await next_(sub)
            if reply is None:
                continue
            if i == 0:
                first_reply = reply
            if reply.header.rcode == RCODE.NXDOMAIN:
                continue
            if i > 0:
                _cname_from(reply, req)
                # A SERVFAIL here is the walk failing (e.g. forward found no live upstream, an
                # error in CoreDNS, which ends its walk without counting), not an autopath.
                if reply.header.rcode != RCODE.SERVFAIL:
                    metrics.autopath_success.labels(req.server).inc()
            return reply
        return first_reply


def _cname_from(reply: DNSRecord, req: Request) -> None:
    """Put the client's question back and a CNAME from it to the name that answered."""
    original = req.qname
    for rr in reply.rr:
        owner = str(rr.rname)
        if owner.lower() == original.lower():
            continue
        reply.rr.insert(0, RR(original, QTYPE.CNAME, ttl=rr.ttl, rdata=CNAME(owner)))
        break
    if reply.questions:
        reply.questions[0].qname = req.msg.q.qname
