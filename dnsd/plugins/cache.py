"""cache: keep replies of the plugins below for their TTL.

Syntax::

    cache [TTL] [ZONES...] {
        success CAPACITY [TTL] [MINTTL]
        denial CAPACITY [TTL] [MINTTL]
        prefetch AMOUNT [[DURATION] [PERCENTAGE%]]
        serve_stale [DURATION] [REFRESH_MODE]
        servfail DURATION
        disable success|denial [ZONES...]
        keepttl
    }

Entries are keyed by (lower-cased name, type, DO bit, CD bit).  Positive replies live for the
smallest TTL of their records, negative ones (NXDOMAIN / NODATA with an SOA) for
min(SOA TTL, SOA MINIMUM); both clamped to [MINTTL, TTL] (defaults 5 s and 3600 s / 1800 s).
SERVFAIL is kept for ``servfail`` (5 s; 0 disables, at most 5 m).  Truncated replies and
other rcodes are not cached.  Served TTLs count down (``keepttl``: the originals are kept).
``prefetch``: an entry asked AMOUNT times with gaps under DURATION (1 m) is refreshed in the
background once less than PERCENTAGE (10 %) of its TTL is left.  ``serve_stale``: entries
expired less than DURATION (1 h) ago are served with TTL 0 and refreshed in the background
(``immediate``) or only when a fresh lookup fails (``verify``).

Hits are repeated by the engine's hot path (prepared answers, counted as hits here) for the
entry's whole life: each second the TTLs of the packed reply are rewritten to what ``serve``
would answer then (see ``_allow_hot_path``).  Not with ``prefetch``, which must see every hit.
An entry the direct path filled whose records are unchanged when it expires is stored again in
place, and the prepared reply goes on as the reply to the miss the expiry causes (``_refill``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dnslib import OPCODE, QTYPE, RCODE, RR, DNSLabel, DNSRecord

from dnsd import metrics
from dnsd.chain import (
    DIRECT_CD,
    DIRECT_DO,
    NOT_DIRECT,
    DirectFill,
    DirectHit,
    FillResult,
    HitResult,
    Next,
    Sections,
    SetupContext,
)
from dnsd.chain import Plugin as Base
from dnsd.corefile.address import normalize_zone
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import duration_arg, int_arg
from dnsd.request import Request
from dnsd.switches import switched_on
from dnsd.wire import express, quick
from dnsd.wire.light import to_rr

log = logging.getLogger("dnsd")

CAPACITY = 9984
MAX_SUCCESS_TTL = 3600
MAX_DENIAL_TTL = 1800
MIN_TTL = 5
SERVFAIL_TTL = 5.0
MAX_SERVFAIL_TTL = 300.0
DEFAULT_TTL = 5  # for replies with no records at all (CoreDNS's MinimalDefaultTTL)

SUCCESS, DENIAL, SERVFAIL = "success", "denial", "servfail"
_PRINTABLE = re.compile(rb"[\x21-\x7e]*")
Key = tuple[str, int, bool, bool]


def in_zones(name: str, zones: list[str]) -> bool:
    for z in zones:  # noqa: SIM110 (a loop: any() over a generator costs twice as much)
        if z == "." or name == z or name.endswith("." + z):
            return True
    return False


def classify(reply: DNSRecord) -> str | None:
    """success, denial, servfail, or None for replies that are never cached."""
    h = reply.header
    if h.tc or h.opcode != OPCODE.QUERY or len(reply.questions) != 1:
        return None
    if reply.q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return None
    rcode = h.rcode
    if rcode == RCODE.NOERROR and reply.rr:
        return SUCCESS
    has_soa = any(rr.rtype == QTYPE.SOA for rr in reply.auth)
    if has_soa and rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return DENIAL
    if rcode in (RCODE.SERVFAIL, RCODE.NOTIMP):
        return SERVFAIL
    if rcode == RCODE.NOERROR:
        return SUCCESS  # delegations and empty answers without an SOA
    return None


def _records(reply: DNSRecord) -> list[RR]:
    return [*reply.rr, *reply.auth, *(rr for rr in reply.ar if rr.rtype != QTYPE.OPT)]


def message_ttl(reply: DNSRecord, kind: str) -> int:
    """The smallest TTL in the reply; for denials the SOA MINIMUM counts too (RFC 2308)."""
    rrs = _records(reply)
    if not rrs:
        return DEFAULT_TTL
    ttl = min(rr.ttl for rr in rrs)
    if kind == DENIAL:
        for rr in reply.auth:
            if rr.rtype == QTYPE.SOA:
                ttl = min(ttl, rr.rdata.times[-1])
    return ttl


def _copy_rr(rr: RR, ttl: int | None = None, name: DNSLabel | None = None) -> RR:
    """A copy of a (non-OPT) record, optionally with another TTL or owner name.  Built without
    dnslib's setters: the values come from a record that already passed them."""
    d = rr.__dict__
    try:
        fields = {"_rname": d["_rname"] if name is None else name, "_rtype": d["_rtype"],
                  "_rclass": d["_rclass"], "_ttl": d["_ttl"] if ttl is None else ttl,
                  "rdata": d["rdata"]}
    except KeyError:  # not laid out like dnslib's own records: through its constructor
        return RR(rr.rname if name is None else name, rr.rtype, rr.rclass,
                  rr.ttl if ttl is None else ttl, rr.rdata)
    record = RR.__new__(RR)
    record.__dict__.update(fields)
    return record


class Item:
    """One cached reply.  Its records are dnslib records, or light records (``light``: a
    miss the direct path answered), turned into dnslib records only when ``serve`` first
    needs them; the direct path serves hits on light entries as they are (``_DirectHit``)."""

    __slots__ = ("kind", "rcode", "ra", "ad", "_answer", "_auth", "_extra", "light", "stored",
                 "ttl", "hits", "last_hit", "refreshing", "lower", "renamed", "spelled_apart",
                 "source")

    def __init__(self, kind: str, rcode: int, ra: bool, ad: bool, answer: list[RR] | None,
                 auth: list[RR] | None, extra: list[RR] | None, stored: float, ttl: int,
                 light: Sections | None = None) -> None:
        self.kind, self.rcode, self.ra, self.ad = kind, rcode, ra, ad
        self._answer, self._auth, self._extra = answer, auth, extra
        self.light = light
        self.stored = stored
        self.ttl = ttl  # seconds the entry is fresh
        self.hits = 0
        self.last_hit = 0.0
        self.refreshing = False
        # The lower-cased name the entry answers, and which answer records are owned by it
        # (they are served with the asker's spelling): worked out once, not on every hit.
        self.lower: str | None = None
        self.renamed: tuple[bool, ...] = ()
        # Whether a reply from the entry holds another name that may be compressed against
        # the question (see _spelled_apart): then the hot path may only repeat that spelling.
        self.spelled_apart = True
        # The validity of the direct answer a light entry was filled from (the writer's
        # word that its records are unchanged), for refilling it in place (Plugin._refill).
        self.source: Callable[[], bool] | None = None

    @classmethod
    def of(cls, reply: DNSRecord, kind: str, now: float, ttl: int, lower: str | None = None) -> Item:
        h = reply.header
        return cls.of_records(kind, h.rcode, bool(h.ra), bool(h.ad), [_copy_rr(rr) for rr in reply.rr],
                              [_copy_rr(rr) for rr in reply.auth],
                              [_copy_rr(rr) for rr in reply.ar if rr.rtype != QTYPE.OPT],
                              now, ttl, lower)

    @classmethod
    def of_records(cls, kind: str, rcode: int, ra: bool, ad: bool, answer: list[RR],
                   auth: list[RR], extra: list[RR], now: float, ttl: int,
                   lower: str | None = None) -> Item:
        """An entry of records nothing else holds (no copies made)."""
        item = cls(kind, rcode, ra, ad, answer, auth, extra, now, ttl)
        if lower is not None:
            item.lower = lower
            item.renamed = _owned_by(answer, lower)
            item.spelled_apart = _spelled_apart(item, lower)
        return item

    @classmethod
    def of_light(cls, kind: str, rcode: int, sections: Sections, now: float, ttl: int,
                 lower: str) -> Item:
        """An entry of light records (a direct answer's, which nothing changes later)."""
        item = cls(kind, rcode, False, False, None, None, None, now, ttl, sections)
        item.lower = lower
        item.renamed = tuple(rec[0].lower() == lower for rec in sections[0])
        item.spelled_apart = _light_spelled_apart(item, lower)
        return item

    def _records(self) -> None:
        light = self.light
        assert light is not None
        self._answer = [to_rr(rec) for rec in light[0]]
        self._auth = [to_rr(rec) for rec in light[1]]
        self._extra = [to_rr(rec) for rec in light[2]]

    @property
    def answer(self) -> list[RR]:
        if self._answer is None:
            self._records()
        return self._answer  # type: ignore[return-value]

    @property
    def auth(self) -> list[RR]:
        if self._auth is None:
            self._records()
        return self._auth  # type: ignore[return-value]

    @property
    def extra(self) -> list[RR]:
        if self._extra is None:
            self._records()
        return self._extra  # type: ignore[return-value]

    def remaining(self, now: float) -> int:
        """Whole seconds of freshness left (negative once expired)."""
        return self.ttl - int(now - self.stored)

    def fresh(self, now: float) -> bool:
        return now - self.stored < self.ttl

    def to_reply(self, req: Request, now: float, keepttl: bool) -> DNSRecord:
        """A new reply to ``req`` from this entry, with counted-down TTLs (0 when stale)."""
        q = req.msg.header
        bits = q.bitmap
        ad = self.ad and (req.do or bool(bits & 0x0020))
        # QR, the query's opcode, AA, the query's RD and CD; RA, AD and the rcode of the entry.
        bitmap = (0x8400 | (bits & 0x7910) | (0x0080 if self.ra else 0) | (0x0020 if ad else 0)
                  | (self.rcode & 0xF))
        name = _asked_label(req)
        reply = quick.record(quick.header(q.id, bitmap),
                             [quick.question(name, req.qtype, req.qclass)])
        ttl = None if keepttl else max(0, self.remaining(now))
        if not self.fresh(now):
            ttl = 0
        lower = req.qname_lower
        renamed = self.renamed if lower == self.lower else _owned_by(self.answer, lower)
        reply.rr = [_copy_rr(rr, ttl, name if own else None)
                    for rr, own in zip(self.answer, renamed, strict=True)]
        reply.auth = [_copy_rr(rr, ttl) for rr in self.auth]
        reply.ar = [_copy_rr(rr, ttl) for rr in self.extra]
        return reply

    def light_reply(self, qname: str, now: float, keepttl: bool) -> Sections:
        """``to_reply``'s records as light records (a fresh light entry, asked as ``qname``,
        whose lower-cased form is the entry's name)."""
        light = self.light
        assert light is not None
        if keepttl:
            answers = [(qname, rec[1], rec[2], rec[3]) if own else rec
                       for rec, own in zip(light[0], self.renamed, strict=True)]
            return answers, light[1], light[2]
        ttl = self.remaining(now)
        answers = [(qname if own else rec[0], rec[1], ttl, rec[3])
                   for rec, own in zip(light[0], self.renamed, strict=True)]
        return (answers, [(rec[0], rec[1], ttl, rec[3]) for rec in light[1]],
                [(rec[0], rec[1], ttl, rec[3]) for rec in light[2]])


def _owned_by(records: list[RR], lower: str) -> tuple[bool, ...]:
    return tuple(_text(rr.rname).lower() == lower for rr in records)


# Record types whose data holds no name, and where the names of the others are.
_NO_NAMES = frozenset({QTYPE.A, QTYPE.AAAA, QTYPE.TXT})
_NAMES_AT = {QTYPE.CNAME: ("label",), QTYPE.PTR: ("label",), QTYPE.NS: ("label",),
             QTYPE.DNAME: ("label",), QTYPE.MX: ("label",), QTYPE.SRV: ("target",),
             QTYPE.SOA: ("mname", "rname")}


def _spelled_apart(item: Item, lower: str) -> bool:
    """Does a reply from ``item`` hold a name, besides the answer owners served in the
    asker's spelling, that ends like the question (the same last label)?  Only such a name
    can be compressed against the question; the hot path serves other spellings by patching
    the question bytes, which would respell that name where ``to_reply`` keeps the stored
    spelling (an SOA owner under the asked name, a CNAME chain in the same zone...)."""
    labels = lower.rstrip(".").split(".")
    if not labels[-1]:
        return True  # the root: every name ends there
    last = labels[-1].encode()
    names = [rr.rname for rr, own in zip(item.answer, item.renamed, strict=True) if not own]
    names += [rr.rname for rr in (*item.auth, *item.extra)]
    for rr in (*item.answer, *item.auth, *item.extra):
        rtype = rr.rtype
        if rtype in _NO_NAMES:
            continue
        where = _NAMES_AT.get(rtype)
        if where is None:
            return True  # names unknown: keep to the same spelling
        names.extend(getattr(rr.rdata, attr) for attr in where)
    for name in names:
        parts = name.label if isinstance(name, DNSLabel) else DNSLabel(name).label
        if parts and parts[-1].lower() == last:
            return True
    return False


def _light_spelled_apart(item: Item, lower: str) -> bool:
    """``_spelled_apart`` for an entry of light records."""
    last = lower.rstrip(".").rpartition(".")[2]
    if not last:
        return True
    light = item.light
    assert light is not None
    names = [rec[0] for rec, own in zip(light[0], item.renamed, strict=True) if not own]
    names += [rec[0] for rec in (*light[1], *light[2])]
    for rec in (*light[0], *light[1], *light[2]):
        rtype, rd = rec[1], rec[3]
        if rtype in _NO_NAMES:
            continue
        if rtype in (QTYPE.CNAME, QTYPE.PTR, QTYPE.NS, QTYPE.DNAME):
            names.append(rd)
        elif rtype == QTYPE.SRV:
            names.append(rd[3])
        elif rtype == QTYPE.SOA:
            names += (rd[0], rd[1])
        else:
            return True  # names unknown: keep to the same spelling
    return any(name.rstrip(".").rpartition(".")[2].lower() == last for name in names)


def _text(label: DNSLabel) -> str:
    """``str(label)``: dnslib writes bytes 0x21-0x7E as they are and escapes the others;
    for names of such bytes only (nearly all), one join instead of its per-label work."""
    joined = b".".join(label.label)
    if _PRINTABLE.fullmatch(joined):
        return joined.decode("ascii") + "."
    return str(label)


def _asked_label(req: Request) -> DNSLabel:
    """The question name as the client spelled it: the parsed query's own label when it
    names ``req.qname`` exactly as parsing the text would (no text round trip), else parsed
    from the text."""
    qname = req.qname
    if req.msg.questions and qname.isascii():
        label = req.msg.questions[0].qname
        labels = label.label
        # Same bytes and as many labels as dots: no label holds a dot of its own.
        if len(labels) == qname.count(".") and b".".join(labels) == qname[:-1].encode():
            return label
    return quick.label(qname)


@dataclass
class Settings:
    zones: list[str]
    success_cap: int = CAPACITY
    success_ttl: int = MAX_SUCCESS_TTL
    success_min: int = MIN_TTL
    denial_cap: int = CAPACITY
    denial_ttl: int = MAX_DENIAL_TTL
    denial_min: int = MIN_TTL
    servfail_ttl: float = SERVFAIL_TTL
    prefetch: int = 0
    prefetch_window: float = 60.0
    prefetch_percent: int = 10
    stale: float = 0.0
    verify_stale: bool = False
    keepttl: bool = False
    no_success: list[str] = field(default_factory=list)
    no_denial: list[str] = field(default_factory=list)


class Plugin(Base):
    """cache: see the module docstring."""

    name: ClassVar[str] = "cache"

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.zones_label = ",".join(settings.zones)
        self.pcache: OrderedDict[Key, Item] = OrderedDict()
        self.ncache: OrderedDict[Key, Item] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counters: dict[str, _Counters] = {}  # by server label
        self._direct_counts: dict[str, _PassedOn] = {}  # by server label
        self._sizes: dict[str, tuple[int, int]] = {}  # entries after the server's last store
        self.refills = switched_on("DNSD_REFILL")  # (off: for measurements; see _refill)
        metrics.QUERY_STATS.sources.add(self)  # flush_all before every scrape

    def counters(self, server: str) -> _Counters:
        """This plugin's metric children for one listener (``.labels()`` costs microseconds:
        looked up once per server, not per query)."""
        c = self._counters.get(server)
        if c is None:
            c = self._counters[server] = _Counters(server, self.zones_label)
        return c

    # --- the engine's direct path -------------------------------------------------------------

    direct_role: ClassVar[str] = "pass"

    def direct_pass(self, qname_lower: str, qtype: int, server: str, flags: int = 0) -> object:
        """Where this cache keeps nothing (outside its zones, or both success and denial
        disabled there), pass the query on; it still counts as a request and a miss, as in
        ``serve``.  Where it keeps answers, a miss may be answered directly too: the entry
        ``serve`` would store is stored from the direct answer (``_DirectFill``).  A name
        with an entry (fresh or stale) needs ``serve``: hits, stale answers, prefetch."""
        s = self.s
        if not in_zones(qname_lower, s.zones):
            return None
        if s.no_success and s.no_denial and in_zones(qname_lower, s.no_success) \
                and in_zones(qname_lower, s.no_denial):
            count = self._direct_counts.get(server)
            if count is None:
                count = self._direct_counts[server] = _PassedOn(self.counters(server))
                metrics.QUERY_STATS.sources.add(count)  # flushed before every scrape
            return count
        if s.verify_stale:
            return NOT_DIRECT
        key = (qname_lower, qtype, bool(flags & DIRECT_DO), bool(flags & DIRECT_CD))
        now = time.monotonic()
        item = self._get(key, now)
        if item is None:
            return _DirectFill(self, key, server)
        if item.light is None or s.prefetch or not item.fresh(now):
            return NOT_DIRECT  # (stale answers and prefetch need serve)
        return _DirectHit(self, key, server, item, now)

    # --- setup -----------------------------------------------------------------------------

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        args = list(d.args)
        s = Settings(zones=[])
        if args and args[0].lstrip("-").isdigit():
            ttl = int_arg(d, args.pop(0))
            if ttl <= 0:
                raise d.error(f"cache TTL can not be zero or negative: {ttl}")
            s.success_ttl = s.denial_ttl = ttl
        s.zones = [normalize_zone(a) for a in args] or list(ctx.zones) or ["."]
        for c in d.children:
            _option(s, c)
        return cls(s)

    # --- serving ---------------------------------------------------------------------------

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        if not in_zones(req.qname_lower, self.s.zones):
            return await next_(req)
        counters = self.counters(req.server)
        counters.requests.inc()
        now = time.monotonic()
        key = (req.qname_lower, req.qtype, req.do, bool(req.msg.header.cd))
        item = self._get(key, now)
        if item is None:
            counters.misses.inc()
            return await self._fetch(req, next_, key)
        if not item.fresh(now):
            if self.s.verify_stale:
                reply = await next_(req)
                if reply is not None and reply.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
                    return self._store(req, reply, key, time.monotonic())
            else:
                self._background(req, next_, key, item)
            counters.served_stale.inc()
            return item.to_reply(req, now, self.s.keepttl)
        counters.hits[item.kind == SUCCESS].inc()
        if self._should_prefetch(item, now):
            counters.prefetch.inc()
            self._background(req, next_, key, item)
        reply = item.to_reply(req, now, self.s.keepttl)
        self._allow_hot_path(req, reply, key, item, None, now, renewable=True)
        return reply

    def _get(self, key: Key, now: float) -> Item | None:
        """A fresh entry, or a stale one still within serve_stale; expired ones are dropped."""
        for store in (self.ncache, self.pcache):
            item = store.get(key)
            if item is None:
                continue
            if item.fresh(now):
                return item
            if self.s.stale and now - item.stored - item.ttl < self.s.stale:
                return item
            del store[key]
        return None

    async def _fetch(self, req: Request, next_: Next, key: Key) -> DNSRecord | None:
        reply = await next_(req)
        if reply is None:
            return None
        return self._store(req, reply, key, time.monotonic())

    def _store(self, req: Request, reply: DNSRecord, key: Key, now: float,
               refresh: bool = False) -> DNSRecord:
        """Cache ``reply`` when it qualifies; returns it with its TTLs capped like the entry."""
        kind = classify(reply)
        if kind is None:
            return reply
        if not _matches(req, reply):
            self.counters(req.server).drops.inc()
            return reply
        s = self.s
        if kind == SERVFAIL:
            if refresh or s.servfail_ttl <= 0:
                return reply  # a failed refresh never replaces what we have
            ttl = max(1, math.ceil(s.servfail_ttl))
        elif kind == SUCCESS:
            ttl = min(max(message_ttl(reply, kind), s.success_min), s.success_ttl)
        else:
            ttl = min(max(message_ttl(reply, kind), s.denial_min), s.denial_ttl)
        if ttl <= 0 or self._disabled(kind, req.qname_lower):
            return reply
        item = Item.of(reply, kind, now, ttl, req.qname_lower)
        old = self.pcache.get(key) or self.ncache.get(key)
        if old is not None:
            item.hits, item.last_hit = old.hits, old.last_hit
        self._put(key, item, req.server)
        if not s.keepttl:  # the client sees the TTL the entry got (copies: RRs may be shared)
            reply.rr = [_copy_rr(rr, ttl) for rr in reply.rr]
            reply.auth = [_copy_rr(rr, ttl) for rr in reply.auth]
            reply.ar = [rr if rr.rtype == QTYPE.OPT else _copy_rr(rr, ttl) for rr in reply.ar]
        self._allow_hot_path(req, reply, key, item, reply.__dict__.get("valid"), now)
        return reply

    def _allow_hot_path(self, req: Request | None, reply: Any, key: Key, item: Item,
                        inner: Callable[[], bool] | None, now: float,
                        renewable: bool = False,
                        refill: Callable[[float], bool] | None = None) -> None:
        """Let the engine's hot path repeat this reply while it is exactly what the cache
        would serve: the same entry, and the same whole-second TTL (``now`` is the moment
        the reply's TTLs were taken).  Repeats count as cache hits.

        A reply built from the entry (``renewable``: a hit, not the reply of the miss that
        filled the entry, whose header and spelling come from the plugins below) also gets a
        ``renew`` hook: when the second changes, the hot path rewrites the TTLs of its packed
        copy to the entry's new remaining TTL (the TTL this method would serve then) instead
        of dropping it, for as long as the entry stays fresh and current.  Once the entry has
        expired, ``renew(True)`` asks ``refill`` (see ``_refill``) to store it again in place:
        then it returns (old TTL, new TTL, None), the reply now being the refill's."""
        if item.kind == SERVFAIL or self.s.prefetch or not item.fresh(now):
            # (prefetch decides on the hits it sees, so with it every query must come here)
            reply.__dict__.pop("valid", None)
            return
        keepttl = self.s.keepttl
        stored = item.stored
        until = stored + item.ttl if keepttl else stored + (int(now - stored) + 1)
        served = item.remaining(now)  # the TTL of every record in the reply (unless keepttl)
        pcache, ncache = self.pcache, self.ncache

        def valid() -> bool:
            if time.monotonic() >= until:
                return False
            if pcache.get(key) is not item and ncache.get(key) is not item:
                return False
            return inner is None or inner()

        def renew(refilling: bool = False) -> tuple[Any, ...] | None:
            nonlocal until, served
            now = time.monotonic()
            refilled = False
            if not item.fresh(now):
                # expired: the full path decides (refetch, serve_stale...), unless the engine
                # asks (see engine._refilling) and the cache may refill the entry in place
                if not (refilling and refill is not None and refill(now)):
                    return None
                refilled = True
            if pcache.get(key) is not item and ncache.get(key) is not item:
                return None
            if inner is not None and not inner():
                return None
            old, served = served, item.remaining(now)
            until = item.stored + (int(now - item.stored) + 1)  # (a refill moves stored)
            return (old, served, None) if refilled else (old, served)

        # (dnsd/wire/express.py) Until the second (or, with keepttl, the entry) is over, unless
        # a change is announced: _put announces the entries it lets go of while still fresh.
        inner_until = None if inner is None else getattr(inner, "until_change", None)
        if inner is None or inner_until is not None:

            def until_change() -> float | None:
                if inner_until is None:
                    return until
                other = inner_until()
                return None if other is None else min(until, other)

            valid.until_change = until_change  # type: ignore[attr-defined]
        reply.valid = valid  # type: ignore[attr-defined]
        if item.spelled_apart:
            reply.case_sensitive = True  # type: ignore[attr-defined]
        if renewable and not keepttl:
            reply.renew = renew  # type: ignore[attr-defined]
        if req is not None:  # (None: a direct answer, see _DirectFill.store)
            req.when_done(self.counters(req.server).repeats[item.kind == SUCCESS])

    def _disabled(self, kind: str, name: str) -> bool:
        zones = self.s.no_success if kind == SUCCESS else self.s.no_denial
        return bool(zones) and in_zones(name, zones)

    def _put(self, key: Key, item: Item, server: str) -> None:
        positive = item.kind == SUCCESS
        store, other = (self.pcache, self.ncache) if positive else (self.ncache, self.pcache)
        cap = self.s.success_cap if positive else self.s.denial_cap
        now = item.stored
        let_go = [other.pop(key, None), store.pop(key, None)]
        store[key] = item
        while len(store) > max(cap, 1):
            let_go.append(store.popitem(last=False)[1])
            self.counters(server).evictions[positive].inc()
        # An entry let go of while fresh may have replies in the express lane; an expired one
        # cannot (their deadline is never past the entry's expiry), nor can _get's deletions.
        if any(old is not None and old.fresh(now) for old in let_go):
            express.changed()
        # The entries gauges as this server's store left them, set before every scrape
        # (flush_all): two gauge sets per stored entry were a large part of a fill's cost.
        self._sizes[server] = (len(self.pcache), len(self.ncache))

    def _refill(self, key: Key, item: Item, server: str, now: float) -> bool:
        """Store an expired light entry again, in place and unchanged, when the miss its
        expiry causes would be answered by the very records it holds: no serve_stale,
        prefetch, verify or keepttl (they handle expiry otherwise), the entry still stored,
        and the direct answer it was filled from still valid by its writer's word.  Counted
        as that miss here (the engine counts the response as the answering plugin's).
        (Entries filled together, such as a benchmark's warm-up or a client's sweep of PTR
        names, expire together: each miss through the kubernetes plugin took ~50 us and made
        some twenty objects for the garbage collector to walk; this takes a few us and none.)"""
        s = self.s
        if not self.refills or s.stale or s.prefetch or s.verify_stale or s.keepttl \
                or item.light is None or item.kind == SERVFAIL:
            return False
        store = self.pcache if item.kind == SUCCESS else self.ncache
        if store.get(key) is not item:
            return False
        source = item.source
        if source is None or not source():
            return False
        item.stored = now
        store.move_to_end(key)  # (as stored anew: the youngest entry)
        counters = self.counters(server)
        counters.requests.inc()
        counters.misses.inc()
        return True

    def flush_all(self) -> None:
        """Set the entries gauges (called before every scrape)."""
        for server, (positive, negative) in list(self._sizes.items()):
            entries = self.counters(server).entries
            entries[True].set(positive)
            entries[False].set(negative)

    # --- prefetch and stale refresh --------------------------------------------------------

    def _should_prefetch(self, item: Item, now: float) -> bool:
        s = self.s
        if s.prefetch <= 0:
            return False
        if now - item.last_hit > s.prefetch_window:
            item.hits = 1
        else:
            item.hits += 1
        item.last_hit = now
        threshold = math.ceil(s.prefetch_percent / 100 * item.ttl)
        return item.hits >= s.prefetch and item.remaining(now) <= threshold

    def _background(self, req: Request, next_: Next, key: Key, item: Item) -> None:
        if item.refreshing:
            return
        item.refreshing = True
        copy = dataclasses.replace(req, on_done=None, meta=dict(req.meta))
        task = asyncio.get_running_loop().create_task(self._refresh(copy, next_, key, item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, req: Request, next_: Next, key: Key, item: Item) -> None:
        try:
            reply = await next_(req)
            if reply is not None:
                self._store(req, reply, key, time.monotonic(), refresh=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[ERROR] plugin/cache: refreshing %s failed", req.qname)
        finally:
            item.refreshing = False

    async def stop(self) -> None:
        self.flush_all()  # (the gauges outlive this instance, as after a reload)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _DirectFill(DirectFill):
    """A miss answered by the direct path: the entry ``serve`` would store from the same
    reply (see Cache.direct_pass), counted as a request and a miss like ``serve`` counts it."""

    __slots__ = ("plugin", "key", "server", "kind", "ttl", "item")

    def __init__(self, plugin: Plugin, key: Key, server: str) -> None:
        self.plugin, self.key, self.server = plugin, key, server
        self.kind: str | None = None  # set by accepts: what the entry will be, if any
        self.ttl = 0
        self.item: Item | None = None  # set by store

    def accepts(self, rcode: int, sections: Sections) -> bool:
        """As ``_store`` judges the reply; False when it would rewrite the TTLs the client
        sees (a TTL above the cache's cap or below its floor), which the direct reply cannot."""
        answers, auth, extra = sections
        if rcode == RCODE.NOERROR and answers:
            kind = SUCCESS
        elif rcode in (RCODE.NOERROR, RCODE.NXDOMAIN) and any(rec[1] == QTYPE.SOA for rec in auth):
            kind = DENIAL
        elif rcode == RCODE.NOERROR:
            kind = SUCCESS
        else:
            return False  # (SERVFAIL and other codes: the general path)
        s = self.plugin.s
        records = [*answers, *auth, *extra]
        ttl = min(rec[2] for rec in records) if records else DEFAULT_TTL
        if kind == DENIAL:
            for rec in auth:
                if rec[1] == QTYPE.SOA:
                    ttl = min(ttl, rec[3][2][-1])
        if kind == SUCCESS:
            ttl = min(max(ttl, s.success_min), s.success_ttl)
        else:
            ttl = min(max(ttl, s.denial_min), s.denial_ttl)
        if ttl <= 0 or self.plugin._disabled(kind, self.key[0]):
            return True  # kept nowhere, passed back as it is
        if not s.keepttl and any(rec[2] != ttl for rec in records):
            return False
        self.kind, self.ttl = kind, ttl
        return True

    def store(self, rcode: int, sections: Sections, valid: Callable[[], bool] | None) -> FillResult:
        plugin = self.plugin
        counters = plugin.counters(self.server)
        counters.requests.inc()
        counters.misses.inc()
        if self.kind is None:
            return valid, None, False
        now = time.monotonic()
        item = self.item = Item.of_light(self.kind, rcode, sections, now, self.ttl, self.key[0])
        item.source = valid
        plugin._put(self.key, item, self.server)
        # As the reply of a miss through the chain, it is repeated for its first second only
        # (its bytes are a hit's, but its metrics say the kubernetes plugin wrote it; after
        # that second a hit on the entry writes, and is prepared with, the cache's own).
        marks = _Marks()
        plugin._allow_hot_path(None, marks, self.key, item, valid, now)
        valid = marks.valid
        if valid is None:
            return None, None, False
        replay = counters.repeats[item.kind == SUCCESS].fast_replay(None, None, 0)  # type: ignore[attr-defined]
        return valid, replay, item.spelled_apart


    def handover(self) -> tuple[Callable[[], Any], str] | None:
        """After the first second, a repeat of the miss's reply is what a hit on the entry
        writes (same header bits, owners in the asker's spelling, the other names as stored:
        a light entry holds the reply's own records), but for its TTLs: those are rewritten
        and it goes on as the hit ``serve`` would prepare (see ``_DirectHit.served``)."""
        item, plugin, key, server = self.item, self.plugin, self.key, self.server
        if item is None or item.kind == SERVFAIL or plugin.s.prefetch:
            return None
        pcache, ncache = plugin.pcache, plugin.ncache

        def take() -> tuple[Any, ...] | None:
            now = time.monotonic()
            if not item.fresh(now) or (pcache.get(key) is not item and ncache.get(key) is not item):
                return None
            valid, renew, replay = _hit_repeats(plugin, key, item, server, now)
            if valid is None:
                return None
            now_ttl = item.ttl if plugin.s.keepttl else item.remaining(now)
            return item.ttl, now_ttl, valid, renew, replay

        return take, plugin.name


class _DirectHit(DirectHit):
    """A hit on a light entry answered by the direct path: ``serve``'s reply from it, counted
    as ``serve`` counts a hit, and repeated by the hot path as ``serve``'s hit reply is."""

    __slots__ = ("plugin", "key", "server", "item", "now")
    name = "cache"

    def __init__(self, plugin: Plugin, key: Key, server: str, item: Item, now: float) -> None:
        self.plugin, self.key, self.server, self.item, self.now = plugin, key, server, item, now

    def answer(self, qname: str, query_flags: int, do: bool) -> tuple[int, int, Sections]:
        item = self.item
        bits = 0x0080 if item.ra else 0
        if item.ad and (do or query_flags & 0x0020):
            bits |= 0x0020
        return item.rcode, bits, item.light_reply(qname, self.now, self.plugin.s.keepttl)

    def served(self) -> HitResult:
        item = self.item
        counters = self.plugin.counters(self.server)
        counters.requests.inc()
        counters.hits[item.kind == SUCCESS].inc()
        valid, renew, replay = _hit_repeats(self.plugin, self.key, item, self.server, self.now)
        return valid, renew, replay, item.spelled_apart


def _hit_repeats(plugin: Plugin, key: Key, item: Item, server: str, now: float) -> tuple[Any, Any, Any]:
    """How the hot path repeats a hit on ``item`` served at ``now``, as ``serve`` prepares
    one: (validity, TTL renewal hook, metrics replay hook), or three Nones when it may not."""
    marks = _Marks()

    def refill(now: float) -> bool:
        return plugin._refill(key, item, server, now)

    plugin._allow_hot_path(None, marks, key, item, None, now, renewable=True, refill=refill)
    if marks.valid is None:
        return None, None, None
    replay = plugin.counters(server).repeats[item.kind == SUCCESS].fast_replay(None, None, 0)  # type: ignore[attr-defined]
    return marks.valid, marks.renew, replay


class _Marks:
    """Takes the marks _allow_hot_path sets on a reply (``valid``, ``case_sensitive``,
    ``renew``), for a direct answer, which has no message to carry them."""

    valid: Callable[[], bool] | None = None
    renew: Callable[[], tuple[int, int] | None] | None = None
    case_sensitive = False


class _PassedOn:
    """Counts queries the direct path passed on (each a request and a miss); the counts
    reach the metrics before every scrape (``flush_all``) or every 256 queries."""

    __slots__ = ("counters", "pending", "__weakref__")

    def __init__(self, counters: _Counters) -> None:
        self.counters = counters
        self.pending = 0

    def __call__(self) -> None:
        self.pending += 1
        if self.pending >= 256:
            self.flush_all()

    def flush_all(self) -> None:
        n, self.pending = self.pending, 0
        if n:
            self.counters.requests.inc(n)
            self.counters.misses.inc(n)


class _Counters:
    """The metric children of one cache plugin on one listener; ``[positive]`` picks the
    "success" or the "denial" child of the typed families."""

    __slots__ = ("requests", "misses", "served_stale", "prefetch", "drops", "hits",
                 "evictions", "entries", "repeats")

    def __init__(self, server: str, zones: str) -> None:
        self.requests = metrics.cache_requests.labels(server, zones, "")
        self.misses = metrics.cache_misses.labels(server, zones, "")
        self.served_stale = metrics.cache_served_stale.labels(server, zones, "")
        self.prefetch = metrics.cache_prefetch.labels(server, zones, "")
        self.drops = metrics.cache_drops.labels(server, zones, "")
        self.hits = (metrics.cache_hits.labels(server, DENIAL, zones, ""),
                     metrics.cache_hits.labels(server, SUCCESS, zones, ""))
        self.evictions = (metrics.cache_evictions.labels(server, DENIAL, zones, ""),
                          metrics.cache_evictions.labels(server, SUCCESS, zones, ""))
        self.entries = (metrics.cache_entries.labels(server, DENIAL, zones, ""),
                        metrics.cache_entries.labels(server, SUCCESS, zones, ""))
        self.repeats = (_count_repeats(self.requests, self.hits[0]),
                        _count_repeats(self.requests, self.hits[1]))


def _count_repeats(requests: Any, hits: Any) -> Callable[..., None]:
    """An after-reply hook that does nothing on the full path (serve() counted there) and,
    replayed for hot-path repeats of the reply, counts each as a cache hit."""

    def on_hits(hits4: int, hits6: int, seconds: float) -> None:
        requests.inc(hits4 + hits6)
        hits.inc(hits4 + hits6)

    def hook(req: Request, reply: DNSRecord, size: int) -> None:
        return None

    def replay(req: Request, reply: DNSRecord, size: int) -> Callable[[int, int, float], None]:
        return on_hits

    hook.fast_replay = replay  # type: ignore[attr-defined]
    return hook


def _matches(req: Request, reply: DNSRecord) -> bool:
    if len(reply.questions) != 1:
        return False
    q = reply.questions[0]
    return q.qtype == req.qtype and _text(q.qname).lower() == req.qname_lower


# --- option parsing --------------------------------------------------------------------------

def _capacity_ttls(c: Directive) -> tuple[int, int | None, int | None]:
    if not 1 <= len(c.args) <= 3:
        raise c.error(f"Wrong argument count or unexpected line ending after '{c.name}'")
    cap = int_arg(c, c.args[0], 0)
    ttl = minttl = None
    if len(c.args) > 1:
        ttl = int_arg(c, c.args[1])
        if ttl <= 0:
            raise c.error(f"cache TTL can not be zero or negative: {ttl}")
    if len(c.args) > 2:
        minttl = int_arg(c, c.args[2], 0)
    return cap, ttl, minttl


def _option(s: Settings, c: Directive) -> None:  # noqa: C901 - one branch per option
    if c.name == "success":
        cap, ttl, minttl = _capacity_ttls(c)
        s.success_cap = cap
        s.success_ttl = ttl if ttl is not None else s.success_ttl
        s.success_min = minttl if minttl is not None else s.success_min
    elif c.name == "denial":
        cap, ttl, minttl = _capacity_ttls(c)
        s.denial_cap = cap
        s.denial_ttl = ttl if ttl is not None else s.denial_ttl
        s.denial_min = minttl if minttl is not None else s.denial_min
    elif c.name == "prefetch":
        _prefetch(s, c)
    elif c.name == "serve_stale":
        if len(c.args) > 2:
            raise c.error("Wrong argument count or unexpected line ending after 'serve_stale'")
        s.stale = duration_arg(c, c.args[0]) if c.args else 3600.0
        mode = c.args[1] if len(c.args) > 1 else "immediate"
        if mode not in ("immediate", "verify"):
            raise c.error(f"invalid value for serve_stale refresh mode: {mode}")
        s.verify_stale = mode == "verify"
    elif c.name == "servfail":
        if len(c.args) != 1:
            raise c.error("Wrong argument count or unexpected line ending after 'servfail'")
        value = duration_arg(c, c.args[0])
        if value > MAX_SERVFAIL_TTL:
            raise c.error("caching SERVFAIL responses over 5 minutes is not permitted")
        s.servfail_ttl = value
    elif c.name == "disable":
        if not c.args or c.args[0] not in (SUCCESS, DENIAL):
            raise c.error("cache disable requires 'success' or 'denial'")
        zones = [normalize_zone(z) for z in c.args[1:]] or list(s.zones)
        (s.no_success if c.args[0] == SUCCESS else s.no_denial).extend(zones)
    elif c.name == "keepttl":
        if c.args:
            raise c.error("Wrong argument count or unexpected line ending after 'keepttl'")
        s.keepttl = True
    else:
        raise c.error(f"unknown property '{c.name}'")


def _prefetch(s: Settings, c: Directive) -> None:
    if not 1 <= len(c.args) <= 3:
        raise c.error("Wrong argument count or unexpected line ending after 'prefetch'")
    s.prefetch = int_arg(c, c.args[0], 0)
    for arg in c.args[1:]:
        if arg.endswith("%"):
            pct = int_arg(c, arg[:-1])
            if not 10 <= pct <= 90:
                raise c.error(f"percentage should fall in range [10, 90]: {pct}")
            s.prefetch_percent = pct
        else:
            s.prefetch_window = duration_arg(c, arg)
