"""hosts: serves A, AAAA and PTR records from an /etc/hosts-style file and inline entries.

Syntax::

    hosts [FILE [ZONES...]] {
        [INLINE]                # "ADDRESS NAME [NAMES...]" lines
        ttl SECONDS             # default 3600 (1-65535)
        no_reverse              # no PTR records
        reload DURATION         # default 5s; 0 disables
        fallthrough [ZONES...]
    }

FILE defaults to ``/etc/hosts``; it is read whenever it exists (a missing FILE is a warning)
and re-read every ``reload`` interval when its modification time or size changed.  Only names
inside ZONES (default: the server block's zones) are kept.  Names are case-insensitive; the
answer's owner is the name as asked.  For a name defined inline, the file's entries for that
name are ignored.  IPv4-mapped IPv6 and zone-indexed (``fe80::1%eth0``) addresses are ignored.

A known name asked for another type gets NODATA (NOERROR, AA, no SOA).  An unknown name goes to
the next plugin when ``fallthrough`` covers it, else gets NXDOMAIN (no SOA).  Names outside
ZONES go to the next plugin, except PTR queries, which are answered for any address the hosts
data knows (and otherwise passed on).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import ClassVar

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSLabel, DNSRecord

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity, duration_arg, int_arg
from dnsd.plugins.file import covers, resolve_path, zone_args
from dnsd.request import Request, make_reply
from dnsd.wire import express

log = logging.getLogger("dnsd")

DEFAULT_PATH = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD = 5.0
SYNC_READ_LIMIT = 256 * 1024  # bigger files are read in a worker thread
# An unknown name without fallthrough: CoreDNS answers SERVFAIL, as it has no SOA to send an
# NXDOMAIN with; dnsd does the same.
UNKNOWN_NAME_RCODE = RCODE.SERVFAIL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress | None:
    """A hosts-file address, or None for anything unusable (also IPv4-mapped and zoned)."""
    if "%" in text:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return None
    return addr


def _looks_like_address(text: str) -> bool:
    """Is ``text`` an IP address (perhaps zoned), i.e. the start of an inline hosts line?"""
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def reverse_address(name: str) -> str | None:
    """The address a reverse name (``4.3.2.1.in-addr.arpa.``, nibbles ``.ip6.arpa.``) stands
    for, in canonical text form; None if ``name`` is not one."""
    labels = name.rstrip(".").split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        octets = labels[3::-1]
        if all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets):
            return str(ipaddress.IPv4Address(".".join(octets)))
        return None
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        nibbles = labels[31::-1]
        if all(len(x) == 1 and x in "0123456789abcdef" for x in nibbles):
            return str(ipaddress.IPv6Address(int("".join(nibbles), 16)))
    return None


@dataclass
class HostsMap:
    """Parsed entries: names (lower-case FQDN) to addresses, addresses to names."""

    entries: list[tuple[IPAddress, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, zones: list[str]) -> HostsMap:
        entries: list[tuple[IPAddress, str]] = []
        for raw in text.splitlines():
            fields = raw.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            addr = parse_address(fields[0])
            if addr is None:
                continue
            for host in fields[1:]:
                name = host.lower() if host.endswith(".") else host.lower() + "."
                if valid_name(name) and covers(zones, name):
                    entries.append((addr, name))
        return cls(entries)

    def names(self) -> set[str]:
        return {name for _, name in self.entries}


@dataclass
class Index:
    """What queries look at: the file's entries overlaid with the inline ones, as rdata."""

    v4: dict[str, list[A]] = field(default_factory=dict)
    v6: dict[str, list[AAAA]] = field(default_factory=dict)
    ptr: dict[str, list[PTR]] = field(default_factory=dict)

    @classmethod
    def build(cls, file: HostsMap, inline: HostsMap, reverse: bool) -> Index:
        overridden = inline.names()
        index = cls()
        seen: set[tuple[str, str]] = set()
        for addr, name in [e for e in file.entries if e[1] not in overridden] + inline.entries:
            text = str(addr)
            if (text, name) in seen:
                continue
            seen.add((text, name))
            if addr.version == 4:
                index.v4.setdefault(name, []).append(A(text))
            else:
                index.v6.setdefault(name, []).append(AAAA(tuple(addr.packed)))
            if reverse:
                index.ptr.setdefault(text, []).append(PTR(_label(name)))
        return index

    def __len__(self) -> int:
        return sum(map(len, self.v4.values())) + sum(map(len, self.v6.values()))


def _label(name: str) -> DNSLabel:
    return DNSLabel([part.encode() for part in name.rstrip(".").split(".")])


def valid_name(name: str) -> bool:
    """A usable host name: printable ASCII, labels of 1-63 characters, at most 253 in all."""
    if not name.isascii() or not name.isprintable() or len(name) > 254 or name == ".":
        return False
    return all(0 < len(label) <= 63 for label in name[:-1].split("."))


class Plugin(Base):
    name: ClassVar[str] = "hosts"

    def __init__(self, path: str, zones: list[str], inline: HostsMap, ttl: int = DEFAULT_TTL,
                 reverse: bool = True, reload: float = DEFAULT_RELOAD,
                 fall: list[str] | None = None) -> None:
        self.path = path
        self.zones = zones
        self.inline = inline
        self.ttl = ttl
        self.reverse = reverse
        self.reload = reload
        self.fall = fall  # None: no fallthrough
        self.file = HostsMap()
        self.signature: tuple[int, int] | None = None
        self.index = Index.build(self.file, inline, reverse)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = d.args
        path = DEFAULT_PATH
        if args:
            path = resolve_path(args[0], ctx.config_file)
            if os.path.isdir(path):
                log.warning("[WARNING] plugin/hosts: Hosts file %r is a directory", path)
            elif not os.path.exists(path):
                log.warning("[WARNING] plugin/hosts: File does not exist: %s", path)
        zones = zone_args(d, args[1:], ctx.zones)
        ttl, reverse, reload = DEFAULT_TTL, True, DEFAULT_RELOAD
        fall: list[str] | None = None
        inline_lines: list[str] = []
        for child in d.children:
            if child.children:
                raise child.error(f"unexpected block after '{child.name}'")
            if child.name == "fallthrough":
                fall = zone_args(child, child.args, ["."])
            elif child.name == "no_reverse":
                arity(child, 0, 0)
                reverse = False
            elif child.name == "ttl":
                if len(child.args) != 1:
                    raise child.error("ttl needs a time in second")
                ttl = int_arg(child, child.args[0], 1, 65535)
            elif child.name == "reload":
                if len(child.args) != 1:
                    raise child.error("reload needs a duration (zero seconds to disable)")
                reload = duration_arg(child, child.args[0])
            elif _looks_like_address(child.name):
                if not child.args:
                    raise child.error(f"no host name after address '{child.name}'")
                inline_lines.append(" ".join([child.name, *child.args]))
            else:
                raise child.error(f"unknown property '{child.name}'")
        inline = HostsMap.parse("\n".join(inline_lines), zones)
        plugin = cls(path, zones, inline, ttl, reverse, reload, fall)
        plugin.read_sync()
        return plugin

    # ----------------------------------------------------------------- file (re)loading

    def _changed(self) -> tuple[int, int] | None:
        """The file's new (mtime, size) if it changed since the last read, else None."""
        try:
            st = os.stat(self.path)
        except (OSError, ValueError):  # ValueError: a NUL in the path
            return None  # keep serving what we had (CoreDNS does the same)
        sig = (st.st_mtime_ns, st.st_size)
        return None if sig == self.signature else sig

    def _install(self, text: str, sig: tuple[int, int]) -> None:
        self.file = HostsMap.parse(text, self.zones)
        self.signature = sig
        self.index = Index.build(self.file, self.inline, self.reverse)
        express.changed()  # (the old index's replies leave the express lane)
        log.debug("plugin/hosts: parsed %s into %d entries", self.path, len(self.index))

    def read_sync(self) -> None:
        """Read the file now if it changed (used at setup)."""
        sig = self._changed()
        if sig is not None:
            text = _read(self.path)
            if text is not None:
                self._install(text, sig)

    async def refresh(self) -> None:
        """Re-read the file if its modification time or size changed."""
        sig = self._changed()
        if sig is None:
            return
        if sig[1] > SYNC_READ_LIMIT:
            text = await asyncio.to_thread(_read, self.path)
        else:
            text = _read(self.path)
        if text is not None:
            self._install(text, sig)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.reload)
            try:
                await self.refresh()
            except Exception:
                log.exception("[ERROR] plugin/hosts: reloading %s", self.path)

    async def start(self) -> None:
        await self.refresh()
        if self.reload > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----------------------------------------------------------------- queries

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        qname = req.qname_lower
        qtype = req.qtype
        index = self.index
        if qtype != QTYPE.PTR and not covers(self.zones, qname):
            return await next_(req)
        q = req.msg.q
        owner = q.qname if q is not None else DNSLabel(req.qname)
        answers: list[RR] = []
        if qtype == QTYPE.PTR:
            addr = reverse_address(qname)
            names = index.ptr.get(addr, ()) if addr is not None else ()
            if not names:
                return await next_(req)
            answers = [RR(owner, QTYPE.PTR, 1, self.ttl, rd) for rd in names]
        elif qtype == QTYPE.A:
            answers = [RR(owner, QTYPE.A, 1, self.ttl, rd) for rd in index.v4.get(qname, ())]
        elif qtype == QTYPE.AAAA:
            answers = [RR(owner, QTYPE.AAAA, 1, self.ttl, rd) for rd in index.v6.get(qname, ())]
        if not answers and qname not in index.v4 and qname not in index.v6:
            if self.fall is not None and covers(self.fall, qname):
                return await next_(req)
            return make_reply(req, rcode=UNKNOWN_NAME_RCODE, aa=False)
        reply = make_reply(req)
        reply.rr = answers
        # Until a reload (which announces the change to the express lane).
        reply.valid = express.lasting(lambda: self.index is index)  # type: ignore[attr-defined]
        return reply


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("[WARNING] plugin/hosts: cannot read %s: %s", path, exc.strerror)
        return None
