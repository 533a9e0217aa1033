"""loop: detect forwarding loops (queries coming back to this server) and halt.

Syntax: ``loop``.

At start-up the plugin sends ``<random>.<random>.<zone> HINFO`` (zone: the block's first) to
the server's own address and port, every 0.5 s for up to 30 s until one is answered; two
seconds after that answer it stops looking.  If the probe name arrives more than twice, the
query is going round in circles: CoreDNS's fatal message is logged and the process exits
with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import sys
from typing import ClassVar

from dnslib import QTYPE, DNSRecord

from dnsd.chain import NOT_DIRECT, Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.request import Request

log = logging.getLogger("dnsd")

PROBE_FOR = 30.0  # seconds to keep probing for the server to come up
PROBE_EVERY = 0.5
PROBE_TIMEOUT = 2.0
DISABLE_AFTER = 2.0  # seconds after the first answered probe
MAX_SEEN = 2


def probe_name(zone: str) -> str:
    first, second = random.getrandbits(62), random.getrandbits(62)
    return f"{first}.{second}.{zone}" if zone != "." else f"{first}.{second}."


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Plugin(Base):
    name: ClassVar[str] = "loop"

    def __init__(self, zone: str, port: int, ctx: SetupContext) -> None:
        self.zone = zone
        self.port = port
        self.ctx = ctx
        self.qname = probe_name(zone)
        self.seen = 0
        self.disabled = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        if d.args or d.children:
            raise d.error("plugin 'loop' takes no arguments")
        return cls(ctx.zones[0] if ctx.zones else ".", ctx.port, ctx)

    def target(self) -> tuple[str, int]:
        """Where to send the probe: the first ``bind`` address, else 127.0.0.1."""
        bind = self.ctx.plugins.get("bind")
        for host in getattr(bind, "hosts", None) or []:
            if host not in ("", "0.0.0.0", "::"):
                return host.split("%")[0], self.port
        return "127.0.0.1", self.port

    direct_role: ClassVar[str] = "pass"

    def direct_pass(self, qname_lower: str, qtype: int, server: str, flags: int = 0) -> object:
        if not self.disabled and qtype == QTYPE.HINFO and qname_lower == self.qname:
            return NOT_DIRECT
        return None

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        if not self.disabled and req.qtype == QTYPE.HINFO and req.qname_lower == self.qname:
            self.seen += 1
            if self.seen > MAX_SEEN:
                self.fatal(req)
        return await next_(req)

    def fatal(self, req: Request) -> None:
        remote = _hostport(req.client_ip, req.client_port)
        local = _hostport(req.local_ip, req.local_port) if req.local_ip else f":{req.local_port}"
        log.critical('[FATAL] plugin/loop: Loop (%s -> %s) detected for zone "%s", see '
                     'https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO %s"',
                     remote, local, self.zone, self.qname)
        for handler in logging.getLogger().handlers + log.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(1)

    async def start(self) -> None:
        if self.port:
            self._task = asyncio.get_running_loop().create_task(self._probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_FOR
        host, port = self.target()
        query = DNSRecord.question(self.qname, "HINFO").pack()
        while loop.time() < deadline:
            if await self._exchange(host, port, query):
                await asyncio.sleep(DISABLE_AFTER)
                break
            await asyncio.sleep(PROBE_EVERY)
        self.disabled = True

    async def _exchange(self, host: str, port: int, query: bytes) -> bool:
        """Send one probe; True if any reply came back in time."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((host, port))
            sock.send(query)
            async with asyncio.timeout(PROBE_TIMEOUT):
                await loop.sock_recv(sock, 65535)
            return True
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()
