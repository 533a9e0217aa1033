"""The forward handler: pick upstreams by policy, retry until one answers or time runs out."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import ClassVar

from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from dnsd import metrics
from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.plugins.forward.proxy import READ_TIMEOUT, Proxy, Question, UpstreamError
from dnsd.plugins.forward.setup import ForwardConfig, parse_forward
from dnsd.request import Request, error_reply

log = logging.getLogger("dnsd")

FORWARD_TIMEOUT = 5.0  # total time spent on one query, as CoreDNS's defaultTimeout
ROUND_BACKOFF = 0.1  # pause when a whole round of upstreams failed fast (refused...)


def in_zone(name: str, zone: str) -> bool:
    return zone == "." or name == zone or name.endswith("." + zone)


def upstream_query(req: Request) -> bytes:
    """The query to send upstream: the client's header bits and EDNS, the current question."""
    h = req.msg.header
    opt = [rr for rr in req.msg.ar if rr.rtype == QTYPE.OPT]
    if req.edns and not opt:
        opt = [EDNS0(udp_len=req.udp_size, flags="do" if req.do else "")]
    msg = DNSRecord(DNSHeader(id=0, bitmap=h.bitmap), q=DNSQuestion(req.qname, req.qtype, req.qclass))
    msg.header.qr = 0
    msg.ar = opt
    return msg.pack()


class Forwarder:
    """One ``forward`` directive: its zone, its upstreams and its options."""

    def __init__(self, cfg: ForwardConfig) -> None:
        self.cfg = cfg
        self.proxies = [Proxy(host, port, cfg.expire, cfg.health, cfg.force_tcp)
                        for host, port in cfg.upstreams]
        self.inflight = 0

    def matches(self, qname_lower: str) -> bool:
        """Is the name below FROM and not below an ``except`` name (FROM itself always is)?"""
        if not in_zone(qname_lower, self.cfg.zone):
            return False
        if qname_lower == self.cfg.zone:
            return True
        return not any(in_zone(qname_lower, ignored) for ignored in self.cfg.ignored)

    def proto_for(self, req: Request) -> str:
        if self.cfg.force_tcp:
            return "tcp"
        if self.cfg.prefer_udp:
            return "udp"
        return req.proto

    async def forward(self, req: Request) -> DNSRecord | None:
        """The first usable upstream reply, or None when none came before the deadline."""
        cfg = self.cfg
        wire = upstream_query(req)
        question = Question(req.qname_lower, req.qtype, req.qclass)
        proto = self.proto_for(req)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FORWARD_TIMEOUT
        order = cfg.policy(self.proxies)
        i = fails = 0
        round_start = loop.time()
        while loop.time() < deadline:
            if i >= len(order):
                i = fails = 0
                if loop.time() - round_start < ROUND_BACKOFF:
                    await asyncio.sleep(ROUND_BACKOFF)  # every upstream failed at once
                round_start = loop.time()
            proxy = order[i]
            i += 1
            if proxy.down(cfg.max_fails):
                fails += 1
                if fails < len(self.proxies):
                    continue
                # Every upstream is down: assume the health checks are what is broken.
                metrics.forward_healthcheck_broken.inc()
                if cfg.failfast:
                    break
                proxy = random.choice(self.proxies)
            started = time.perf_counter()
            try:
                timeout = min(READ_TIMEOUT, max(deadline - loop.time(), 0.001))
                reply = await proxy.exchange(wire, question, proto, timeout)
                if reply.header.tc and proto == "udp" and cfg.prefer_udp:
                    timeout = min(READ_TIMEOUT, max(deadline - loop.time(), 0.001))
                    reply = await proxy.exchange(wire, question, "tcp", timeout)
            except UpstreamError as exc:
                log.debug("forward: %s %s via %s failed: %s", req.qname, req.type_name, proxy.addr, exc)
                if cfg.max_fails:
                    proxy.healthcheck()
                if fails < len(self.proxies):
                    continue
                break
            rcode = RCODE.get(reply.header.rcode, str(reply.header.rcode))
            metrics.proxy_request_duration.labels("forward", proxy.addr, rcode).observe(
                time.perf_counter() - started)
            return reply
        return None

    async def stop(self) -> None:
        for proxy in self.proxies:
            await proxy.stop()


class Plugin(Base):
    """forward: see the package docstring for the syntax."""

    name: ClassVar[str] = "forward"
    repeatable: ClassVar[bool] = True

    def __init__(self, forwarders: list[Forwarder]) -> None:
        self.forwarders = forwarders

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        return cls([Forwarder(parse_forward(d)) for d in directives])

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        return await self._serve_from(0, req, next_)

    async def _serve_from(self, index: int, req: Request, next_: Next) -> DNSRecord | None:
        """Several forward directives chain: one that does not handle the name passes it on."""
        for i in range(index, len(self.forwarders)):
            f = self.forwarders[i]
            if not f.matches(req.qname_lower):
                continue
            limit = f.cfg.max_concurrent
            if limit and f.inflight >= limit:
                metrics.forward_max_concurrent_rejects.inc()
                return error_reply(req, RCODE.REFUSED)
            f.inflight += 1
            try:
                reply = await f.forward(req)
            finally:
                f.inflight -= 1
            if reply is None:
                return error_reply(req, RCODE.SERVFAIL)
            if reply.header.rcode in f.cfg.next_rcodes:
                return await self._serve_from(i + 1, req, next_)
            return reply
        return await next_(req)

    async def stop(self) -> None:
        for f in self.forwarders:
            await f.stop()
