"""A loaded configuration: plugin chains per server block, engines per port, and listeners.

``Runtime.build`` turns parsed server blocks into chains without touching the network, so a
broken Corefile fails before anything binds.  ``Server`` owns the sockets and can swap in a new
Runtime (reload) while keeping the sockets that both configurations share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dnsd.chain import Plugin, SetupContext, build_plugins, compose
from dnsd.corefile.address import normalize_key
from dnsd.corefile.ast import CorefileError, ServerBlock
from dnsd.serve.engine import Block, Engine
from dnsd.serve.tcp import TcpListener
from dnsd.serve.udp import UdpListener

log = logging.getLogger("dnsd")

ListenKey = tuple[str, int]  # (host, port); host "" = every address


def server_label(host: str, port: int) -> str:
    """CoreDNS's ``server`` metric label: ``dns://:53`` or ``dns://127.0.0.1:53``."""
    shown = f"[{host}]" if ":" in host else host
    return f"dns://{shown}:{port}"


@dataclass
class Runtime:
    """Everything a Corefile configures, ready to serve."""

    engines: dict[ListenKey, Engine]
    plugins: list[Plugin]  # every plugin instance of every block
    blocks: list[tuple[ServerBlock, list[Plugin]]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, server_blocks: Sequence[ServerBlock], default_port: int = 53,
              config_file: str = "Corefile", shared: dict[str, Any] | None = None) -> Runtime:
        """Set up every plugin of every block; raises CorefileError on any problem."""
        shared = {} if shared is None else shared
        if not server_blocks:
            raise CorefileError(config_file, 1, "no server blocks defined")
        per_listener: dict[ListenKey, list[Block]] = {}
        seen: dict[tuple[str, str, int], ServerBlock] = {}
        all_plugins: list[Plugin] = []
        built: list[tuple[ServerBlock, list[Plugin]]] = []
        for index, sb in enumerate(server_blocks):
            addresses = [a for key in sb.keys for a in normalize_key(key, default_port, sb.file, sb.line)]
            ports = sorted({a.port for a in addresses})
            ctx = SetupContext(
                zones=[a.zone for a in addresses], port=ports[0], config_file=config_file,
                block_index=index, shared=shared, runtime_plugins=all_plugins,
            )
            plugins = build_plugins(sb.directives, ctx)
            all_plugins.extend(plugins)
            built.append((sb, plugins))
            handler = compose(plugins)
            bind = ctx.plugins.get("bind")
            hosts: list[str] = list(getattr(bind, "hosts", None) or [""])
            ctx.servers = [server_label(h, p) for p in ports for h in hosts]
            for port in ports:
                zones = [a.zone for a in addresses if a.port == port]
                for host in hosts:
                    for zone in zones:
                        key = (zone, host, port)
                        if key in seen:
                            raise sb.error(f"cannot serve {server_label(host, port)} zone {zone} - it is already defined")
                        seen[key] = sb
                    block = Block(zones=zones, handler=handler, plugins=plugins,
                                  server=server_label(host, port))
                    per_listener.setdefault((host, port), []).append(block)
        engines = {key: Engine(blocks) for key, blocks in per_listener.items()}
        return cls(engines=engines, plugins=all_plugins, blocks=built, shared=shared)

    async def start_plugins(self) -> None:
        started: list[Plugin] = []
        try:
            for plugin in self.plugins:
                await plugin.start()
                started.append(plugin)
        except BaseException:
            for plugin in reversed(started):
                await _quietly_stop(plugin)
            raise

    async def stop_plugins(self) -> None:
        for engine in self.engines.values():
            engine.prepared.clear()  # hands pending hot-path hit counts to the metrics
        for plugin in reversed(self.plugins):
            await _quietly_stop(plugin)


async def _quietly_stop(plugin: Plugin) -> None:
    try:
        await plugin.stop()
    except Exception:
        log.exception("[ERROR] stopping plugin %s", plugin.name)


class Server:
    """The sockets of a Runtime, with a reload that keeps shared sockets open."""

    def __init__(self, reuse_port: bool = False) -> None:
        self.runtime: Runtime | None = None
        self.udp: dict[ListenKey, UdpListener] = {}
        self.tcp: dict[ListenKey, TcpListener] = {}
        self.reuse_port = reuse_port
        self._lock = asyncio.Lock()

    async def start(self, runtime: Runtime) -> None:
        async with self._lock:
            await runtime.start_plugins()
            try:
                await self._open(runtime)
            except BaseException:
                await self._close_all()
                await runtime.stop_plugins()
                raise
            self.runtime = runtime

    async def _open(self, runtime: Runtime) -> None:
        for key, engine in runtime.engines.items():
            if key in self.udp:
                self.udp[key].engine = engine
                self.tcp[key].engine = engine
                continue
            host, port = key
            udp = UdpListener(engine, host, port, self.reuse_port)
            await udp.start()
            # With port 0 the kernel picks one; TCP then uses the same number.
            tcp = TcpListener(engine, host, udp.port, self.reuse_port)
            self.udp[key] = udp
            await tcp.start()
            self.tcp[key] = tcp
            if udp.port != port:
                log.info("listening on %s", server_label(host, udp.port))

    async def reload(self, runtime: Runtime) -> None:
        """Swap in a new configuration without closing shared sockets.

        The new plugins start first (the old chains keep answering meanwhile), then every
        listener switches engine at once, then the old plugins stop.  If anything fails the old
        configuration stays in place and the error propagates.
        """
        async with self._lock:
            old = self.runtime
            await runtime.start_plugins()
            try:
                await self._open(runtime)
            except BaseException:
                if old is not None:
                    await self._open(old)
                await runtime.stop_plugins()
                raise
            for key in [k for k in self.udp if k not in runtime.engines]:
                await self.udp.pop(key).stop()
                await self.tcp.pop(key).stop()
            self.runtime = runtime
            if old is not None:
                await old.stop_plugins()

    def ports(self) -> dict[ListenKey, int]:
        """The actual port of each listener (useful when the Corefile asked for port 0)."""
        return {key: udp.port for key, udp in self.udp.items()}

    async def _close_all(self) -> None:
        for listener in list(self.udp.values()) + list(self.tcp.values()):
            await listener.stop()
        self.udp.clear()
        self.tcp.clear()

    async def stop(self) -> None:
        async with self._lock:
            await self._close_all()
            if self.runtime is not None:
                await self.runtime.stop_plugins()
                self.runtime = None
