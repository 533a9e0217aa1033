"""The plugin interface, CoreDNS's fixed plugin order, and the per-server-block chain.

A plugin is one module under ``dnsd.plugins`` that defines a ``Plugin`` subclass with a
``name`` equal to its Corefile directive.  ``setup`` parses that directive (every occurrence in
one server block) and ``serve`` handles a query: it either returns a response or calls
``next_(req)`` to hand the query to the plugins after it.  Adding a plugin means adding its
module and its name to ``IMPLEMENTED``; its position comes from ``PLUGIN_ORDER``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dnslib import DNSRecord

from dnsd.corefile.ast import CorefileError, Directive

if TYPE_CHECKING:
    from dnsd.request import Request

# CoreDNS's plugin.cfg order (v1.14): handlers always run in this order, whatever order the
# Corefile lists them in.  Every plugin wraps all the plugins below it.
PLUGIN_ORDER: tuple[str, ...] = (
    "root", "metadata", "geoip", "cancel", "tls", "timeouts", "multisocket", "reload", "nsid",
    "bufsize", "bind", "debug", "trace", "ready", "health", "pprof", "prometheus", "errors", "log",
    "dnstap", "local", "dns64", "acl", "any", "chaos", "loadbalance", "tsig", "cache", "rewrite",
    "header", "dnssec", "autopath", "minimal", "template", "transfer", "hosts", "route53", "azure",
    "clouddns", "k8s_external", "kubernetes", "file", "auto", "secondary", "etcd", "loop",
    "forward", "grpc", "erratic", "whoami", "on", "sign", "view",
)

# Directives dnsd implements, mapped to the module that holds each one's Plugin class.
IMPLEMENTED: dict[str, str] = {
    "bind": "dnsd.plugins.bind",
    "errors": "dnsd.plugins.errors",
    "log": "dnsd.plugins.log",
    "whoami": "dnsd.plugins.whoami",
    "hosts": "dnsd.plugins.hosts",
    "file": "dnsd.plugins.file",
    "kubernetes": "dnsd.plugins.kubernetes",
    "health": "dnsd.plugins.health",
    "ready": "dnsd.plugins.ready",
    "prometheus": "dnsd.plugins.prometheus",
    "reload": "dnsd.plugins.reload",
    "forward": "dnsd.plugins.forward",
    "cache": "dnsd.plugins.cache",
    "loadbalance": "dnsd.plugins.loadbalance",
    "loop": "dnsd.plugins.loop",
    "rewrite": "dnsd.plugins.rewrite",
    "autopath": "dnsd.plugins.autopath",
    "acl": "dnsd.plugins.acl",
    "any": "dnsd.plugins.any",
    "transfer": "dnsd.plugins.transfer",
    "timeouts": "dnsd.plugins.timeouts",
}

Response = DNSRecord
Next = Callable[["Request"], Awaitable[DNSRecord | None]]


@dataclass
class SetupContext:
    """What a plugin's setup may know about its server block and the process."""

    zones: list[str]  # the block's zones, normalised ("cluster.local.", "0.0.10.in-addr.arpa.")
    port: int
    config_file: str = "Corefile"
    block_index: int = 0
    # Plugins already set up in this block, by name (set up in PLUGIN_ORDER's reverse, so a
    # plugin can find the ones it wraps, e.g. autopath finds kubernetes).
    plugins: dict[str, Plugin] = field(default_factory=dict)
    # Process-wide shared objects (HTTP listeners, the reload hook...); outlive reloads.
    shared: dict[str, Any] = field(default_factory=dict)
    # Every plugin of the configuration being built, across blocks (filled as blocks build).
    runtime_plugins: list[Plugin] = field(default_factory=list)
    # This block's server labels ("dns://:53") and zones, for metrics.
    servers: list[str] = field(default_factory=list)


class Plugin:
    """Base class of every plugin.  Subclasses set ``name`` and override what they need."""

    name: ClassVar[str] = ""
    # A plugin that only configures the server (bind, reload, health...) and never sees queries.
    passive: ClassVar[bool] = False
    # May the directive appear more than once in a block?
    repeatable: ClassVar[bool] = False

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        """Build the plugin from every occurrence of its directive in one server block."""
        d = directives[0]
        if d.args or d.children:
            raise d.error(f"plugin '{cls.name}' takes no arguments")
        return cls()

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        """Answer ``req`` or pass it on; the default passes it on."""
        return await next_(req)

    async def start(self) -> None:
        """Called once the whole configuration parsed, before the listeners open."""

    async def stop(self) -> None:
        """Called on shutdown or when a reload replaces this configuration."""

    def ready(self) -> bool:
        """For the ``ready`` plugin: is this plugin ready to serve?"""
        return True

    reports_readiness: ClassVar[bool] = False

    # The engine's direct path (dnsd/serve/direct.py) answers a query synchronously, without
    # the coroutine chain, when every plugin before the answering one only passes it on.
    # "" = this plugin must see the query itself: no direct path through it;
    # "pass" = ``direct_pass`` says, per query, whether it would only pass the query on;
    # "answer" = ``direct_answer`` gives the reply's parts (or None: take the general path).
    direct_role: ClassVar[str] = ""

    def direct_pass(self, qname_lower: str, qtype: int, server: str, flags: int = 0) -> object:
        """For ``direct_role = "pass"``: NOT_DIRECT when this query needs ``serve``; else
        None, a callable to run once the direct answer is sent (metrics it would count), a
        ``DirectFill`` that sees the answer on its way back, or a ``DirectHit`` that answers
        the query itself.  ``flags``: DIRECT_DO and
        DIRECT_CD when the query has those bits."""
        return None

    def direct_answer(self, qname: str, qname_lower: str, qtype: int) -> DirectAnswer | None:
        """For ``direct_role = "answer"``."""
        return None


NOT_DIRECT = object()
DIRECT_DO, DIRECT_CD = 1, 2  # direct_pass flags


# A direct answer's answer, authority and additional records (light records).
Sections = tuple[list[Any], list[Any], list[Any]]
# What DirectFill.store returns: (validity, metrics replay hook, same spelling only).
FillResult = tuple[Callable[[], bool] | None, Callable[[int, int, float], None] | None, bool]


class DirectFill:
    """A passing plugin's part in a direct answer that it would keep on its way back (the
    cache filling an entry on a miss).  ``accepts`` is asked before packing: False when
    ``serve`` would change the reply (the general path then answers); ``store`` is called
    once the reply is packed, with its validity for the hot path, and returns the validity
    to use instead, an extra metrics replay hook for hot-path repeats, and whether only the
    same spelling may be repeated."""

    __slots__ = ()

    def accepts(self, rcode: int, sections: Sections) -> bool:
        return True

    def store(self, rcode: int, sections: Sections, valid: Callable[[], bool] | None) -> FillResult:
        return valid, None, False

    def handover(self) -> tuple[Callable[[], Any], str] | None:
        """After ``store``: how the repeated reply may go on as a hit on what was stored once
        its first second is over, and the name of the plugin that then writes it; None when
        it may not.  The callable returns None, or (the TTL the reply's records carry, the
        TTL they carry now, validity, TTL renewal hook, metrics replay hook) of such a hit."""
        return None


# What DirectHit.served returns: (validity, TTL renewal hook, metrics replay hook, same
# spelling only); a None validity: the reply is not repeated.
HitResult = tuple[Callable[[], bool] | None, Callable[[], tuple[int, int] | None] | None,
                  Callable[[int, int, float], None] | None, bool]


class DirectHit(ABC):
    """A passing plugin answering a query itself from what it keeps (the cache, from a fresh
    entry): the plugins after it never see the query.  ``name`` is the writer in the
    metrics."""

    __slots__ = ()
    name = ""

    @abstractmethod
    def answer(self, qname: str, query_flags: int, do: bool) -> tuple[int, int, Sections]:
        """The rcode, the header bits to add (RA, AD) and the reply's records for the
        asker's spelling."""

    @abstractmethod
    def served(self) -> HitResult:
        """Called once the reply is packed: counts the query, and says how the hot path may
        repeat the reply."""


@dataclass(slots=True)
class DirectAnswer:
    """A reply as the answering plugin's serve would write it, in parts."""

    rcode: int
    answer: list[Any]
    auth: list[Any]
    additional: list[Any]
    valid: Callable[[], bool] | None  # for the hot path, as ``reply.valid``
    case_sensitive: bool = False  # as ``reply.case_sensitive``


def plugin_class(name: str) -> type[Plugin]:
    """The Plugin class of an implemented directive."""
    module = importlib.import_module(IMPLEMENTED[name])
    return module.Plugin  # type: ignore[no-any-return]


def check_directive(d: Directive) -> None:
    """Raise the CoreDNS-style error for a directive dnsd does not have."""
    if d.name in IMPLEMENTED:
        return
    if d.name in PLUGIN_ORDER:
        raise d.error(f"directive '{d.name}' is not available yet in dnsd")
    raise d.error(f"unknown directive '{d.name}'")


def build_plugins(directives: Sequence[Directive], ctx: SetupContext) -> list[Plugin]:
    """Set up the plugins of one server block, returned in CoreDNS's execution order."""
    grouped: dict[str, list[Directive]] = {}
    for d in directives:
        check_directive(d)
        grouped.setdefault(d.name, []).append(d)
    plugins: list[Plugin] = []
    for name in reversed(PLUGIN_ORDER):
        if name not in grouped:
            continue
        cls = plugin_class(name)
        occurrences = grouped[name]
        if len(occurrences) > 1 and not cls.repeatable:
            raise occurrences[1].error(f"plugin '{name}' can only be used once per server block")
        plugin = cls.setup(occurrences, ctx)
        ctx.plugins[name] = plugin
        plugins.append(plugin)
    plugins.reverse()
    return plugins


async def _end_of_chain(req: Request) -> DNSRecord | None:
    return None


def compose(plugins: Sequence[Plugin]) -> Next:
    """Fold the plugins into one callable: each plugin's ``next_`` is the rest of the chain."""
    handler: Next = _end_of_chain
    for plugin in reversed([p for p in plugins if not p.passive]):
        handler = _link(plugin, handler)
    return handler


def _link(plugin: Plugin, next_: Next) -> Next:
    serve = plugin.serve

    name = plugin.name

    async def handle(req: Request) -> DNSRecord | None:
        reply = await serve(req, next_)
        # The innermost plugin that returned this message wrote it (metrics' "plugin" label).
        if reply is not None and "plugin" not in reply.__dict__:
            reply.plugin = name  # type: ignore[attr-defined]
        return reply

    handle.plugin_name = plugin.name  # type: ignore[attr-defined]
    return handle


def parse_error(d: Directive, message: str) -> CorefileError:
    """Shorthand used by plugins: an error at ``d``'s line."""
    return d.error(message)
