"""The sans-IO core: query bytes (or a parsed query) in, response bytes out.

No sockets here.  A listener hands every datagram or TCP frame to ``Engine.handle`` and sends
back whatever it returns (``None`` means: drop silently).

Two markers a plugin may set on the reply it returns (both are attributes, so the plugins
outside it still see an ordinary message):

* ``reply.drop = True``: send nothing at all (the ``acl`` plugin's ``drop`` action);
* ``reply.stream = <iterable of DNSRecord>``: more messages follow the first, over TCP only
  (zone transfers).  ``handle`` then returns a ``Stream``: the first message's bytes, with
  ``more`` yielding the packed later ones; the TCP listener writes them all in order.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, RR, DNSLabel, DNSQuestion, DNSRecord
from dnslib.label import DNSBuffer, DNSLabelError

from dnsd import memos
from dnsd.chain import DIRECT_CD, DIRECT_DO, NOT_DIRECT, DirectFill, DirectHit, Next, Plugin
from dnsd.request import Request, error_reply, header_only_reply, make_reply, type_name
from dnsd.serve.direct import Plan, plan_for
from dnsd.wire import express, light
from dnsd.wire.encode import Unsupported
from dnsd.wire.encode import pack as fast_pack
from dnsd.wire.fastpath import MAX_ENTRIES, Prepared, PreparedAnswers, query_key
from dnsd.wire.quick import parse_query
from dnsd.wire.shuffle import Rotation, reorderings, rotation

log = logging.getLogger("dnsd")

CLASS_IN = 1
MAX_TCP = 65535
# The largest UDP payload IPv4 can carry: a bigger EDNS size would make sendto fail outright.
MAX_UDP = 65507
_NOT_DIRECT_TYPES = frozenset((QTYPE.AXFR, QTYPE.IXFR, QTYPE.ANY))
# Names whose text form needs no escaping (labels of letters, digits, '-' and '_').
_NOT_PLAIN: tuple[Any, ...] = ()
_PLAIN_NAME = re.compile(rb"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\Z")
BADVERS = 16
PREPARED_ORDERS = 8  # record orders kept for a prepared reply that loadbalance shuffles


def prepared_capacity() -> int:
    """How many prepared replies the hot path keeps: ``DNSD_PREPARED`` (a count; 0 turns
    the store off), else MAX_ENTRIES."""
    text = os.environ.get("DNSD_PREPARED", "").strip()
    if not text:
        return MAX_ENTRIES
    try:
        return max(0, int(text))
    except ValueError:
        log.warning("[WARNING] DNSD_PREPARED=%r is not a count; keeping %d prepared replies",
                    text, MAX_ENTRIES)
        return MAX_ENTRIES


class Stream(bytes):
    """The first message of a multi-message TCP reply; ``more`` yields the packed others."""

    more: Iterator[bytes]


@dataclass
class Block:
    """One server block as the engine routes to it."""

    zones: list[str]
    handler: Next
    plugins: list[Plugin] = field(default_factory=list)
    server: str = "dns://:53"
    direct: Plan | None = None  # see dnsd/serve/direct.py


class Engine:
    """Routes queries for one listening port to the server block with the longest zone."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self.blocks = list(blocks)
        self._by_zone: dict[str, Block] = {}
        for block in self.blocks:
            block.direct = plan_for(block.plugins)
            for zone in block.zones:
                self._by_zone.setdefault(zone, block)
        self._any_direct = any(block.direct is not None for block in self.blocks)
        # (zone, "." + zone or "" for the root, (zone, block)), longest zone first
        self._few_zones: list[tuple[str, str, tuple[str, Block]]] | None = None
        if len(self._by_zone) <= 8:
            self._few_zones = [(z, "." + z if z != "." else "", (z, b)) for z, b in
                               sorted(self._by_zone.items(), key=lambda item: -len(item[0]))]
        # DNSD_PREPARED=0 switches the hot path's store off: every query is answered afresh,
        # which is how the benchmarks measure answers with no prepared packet.
        # The express lane (dnsd/wire/express.py), by query bytes after the ID.
        self.lane: dict[bytes, express.Item] = {}
        self.express = express.wanted()  # (off: the lane keeps query keys only)
        self._names: dict[bytes, tuple[Any, ...]] = {}  # question names, see _name_of
        self.prepared = PreparedAnswers(prepared_capacity())
        from dnsd import metrics

        metrics.QUERY_STATS.sources.add(self.prepared)  # flushed before every scrape
        # With metrics on this listener, queries no block serves are counted as "dropped".
        self.count_dropped = any(p.name == "prometheus" for b in self.blocks for p in b.plugins)

    def fast(self, data: bytes, proto: str, client_ip: str,
             lane: bool = False) -> tuple[bytes | None, tuple[bytes, int] | None]:
        """The hot path: (prepared reply, None) on a hit; (None, key) when the query may be
        prepared after the general path answers it; (None, None) when it never may.
        ``lane``: the caller serves the express lane (the UDP batch reader), so a hit's reply
        is kept there."""
        started = time.perf_counter()
        epoch = express.EPOCH  # (read before the validity check: see _to_lane)
        # A repeat of a query seen before, byte for byte after the ID, skips the key parser.
        raw = data[2:]
        item = self.lane.get(raw) if proto == "udp" else None
        if item is not None:
            k = item.key
        else:
            k = query_key(data, proto)
            if k is None:
                return None, None
        entry = self.prepared.entries.get(k[0])
        if entry is None:
            return self._direct(data, k, proto, client_ip, started)
        qend = k[1]
        if entry.exact is not None and entry.exact != data[12:qend]:
            # another spelling: answered afresh (and re-prepared)
            return self._direct(data, k, proto, client_ip, started)
        first = None
        if not entry.valid():
            if not self.prepared.renew(entry):  # renew: TTLs counted down, or a refill
                self.prepared.drop(k[0])
                return self._direct(data, k, proto, client_ip, started)
            first, entry.first = entry.first, None  # (a refill: this query is its miss)
        self.prepared.hits += 1
        entry.used = True  # kept when the store makes room
        variants = entry.variants
        if variants is None:
            wire = entry.wire
            reply = data[:2] + wire[2:12] + data[12:qend] + wire[qend:]
        else:
            entry.turn += 1
            if type(variants) is Rotation:
                reply = variants.reply(data[:2], data[12:qend], entry.turn)
            else:
                wire = variants[entry.turn % len(variants)]
                reply = data[:2] + wire[2:12] + data[12:qend] + wire[qend:]
        # (learnt on hits only: a flood of new names does not fill the lane)
        if proto == "udp" and (item is None or item.entry is not entry or item.epoch != epoch
                               or item.served != lane
                               or (item.tails and item.until <= time.monotonic())):
            self._to_lane(raw, k, entry, reply, data[12:qend], epoch, lane)
        if first is not None:
            first(":" in client_ip, time.perf_counter() - started, len(data))
        elif entry.on_hit is not None:  # metrics: counted here, reported in batches
            if ":" in client_ip:
                entry.hits6 += 1
            else:
                entry.hits4 += 1
            entry.seconds += time.perf_counter() - started
            if entry.hits4 + entry.hits6 >= 64:
                self.prepared.flush(entry)
        return reply, None

    def _to_lane(self, raw: bytes, k: tuple[bytes, int], entry: Prepared, reply: bytes,
                 question: bytes, epoch: int, served: bool) -> None:
        """Keep a hit's reply for the express lane (dnsd/wire/express.py), or only its key
        when the reply may not take the lane (or nobody serves the lane: ``served`` False).
        ``epoch`` was read before ``entry`` was found valid, so a change announced since
        makes the item void at once."""
        lane = self.lane
        if len(lane) >= MAX_ENTRIES:
            lane.clear()
        until = express.until_change(entry.valid) if self.express and served else None
        tails: tuple[bytes, ...] = ()
        if until is not None and len(reply) <= express.MAX_REPLY:
            variants = entry.variants
            if variants is None:
                tails = (reply[2:],)
            elif type(variants) is Rotation:
                if len(variants) * len(reply) <= express.MAX_ROTATED:
                    tails = tuple(variants.reply(b"", question, t) for t in range(len(variants)))
            elif len(variants) * len(reply) <= express.MAX_ROTATED:
                qend = k[1]
                tails = tuple(w[2:12] + question + w[qend:] for w in variants)
            if len({len(t) for t in tails}) > 1:  # (the item keeps one size)
                tails = ()
        lane[raw] = express.Item(k, tails, until if tails else -express.FOREVER, epoch, entry, served)

    def _direct(self, data: bytes, k: tuple[bytes, int], proto: str, client_ip: str,
                started: float) -> tuple[bytes | None, tuple[bytes, int] | None]:
        """A first answer built synchronously (see dnsd/serve/direct.py): (reply, None), or
        (None, key) to take the general path."""
        if not self._any_direct:
            return None, k
        try:
            reply = self._direct_reply(data, k, proto, client_ip, started)
        except Exception:  # the general path answers (and reports) whatever went wrong here
            log.debug("direct path declined after an error", exc_info=True)
            return None, k
        return (reply, None) if reply is not None else (None, k)

    def _direct_reply(self, data: bytes, k: tuple[bytes, int], proto: str, client_ip: str,
                      started: float) -> bytes | None:
        qend = k[1]
        qtype = (data[qend] << 8) | data[qend + 1]
        if (data[qend + 2] << 8) | data[qend + 3] != CLASS_IN or qtype in _NOT_DIRECT_TYPES:
            return None
        wire_name = data[12:qend]
        named = self._names.get(wire_name)
        if named is None:
            named = self._name_of(wire_name)
        if named is _NOT_PLAIN:
            return None  # text names could not say it, or no direct plan: the general path
        qname, lower, zone, block, plan = named
        server = block.server
        flags = (data[2] << 8) | data[3]
        do = False
        limit = 512
        opt = b""
        rest = qend + 4
        if rest < len(data):  # the query's OPT record (the key parser checked it)
            size = (data[rest + 3] << 8) | data[rest + 4]
            do = bool(data[rest + 7] & 0x80)
            opt = light.opt_bytes(size, do)
            limit = max(512, size)
        limit = min(limit, MAX_UDP) if proto == "udp" else MAX_TCP
        bits = (DIRECT_DO if do else 0) | (DIRECT_CD if flags & 0x0010 else 0)
        commits = []
        fills: list[DirectFill] = []
        hit: DirectHit | None = None
        for plugin in plan.passers:
            verdict = plugin.direct_pass(lower, qtype, server, bits)
            if verdict is NOT_DIRECT:
                return None
            if verdict is not None:
                if isinstance(verdict, DirectFill):
                    fills.append(verdict)
                elif isinstance(verdict, DirectHit):
                    hit = verdict  # (the plugins after it never see the query)
                    break
                else:
                    commits.append(verdict)
        ans = None
        header_bits = 0
        if hit is None:
            ans = plan.answerer.direct_answer(qname, lower, qtype)
            if ans is None:
                return None
            rcode = ans.rcode
            sections = (ans.answer, ans.auth, ans.additional)
            writer = plan.answerer.name
        elif fills:
            return None  # (a cache inside another: the general path)
        else:
            rcode, header_bits, sections = hit.answer(qname, flags, do)
            writer = hit.name
        for fill in fills:  # (they see the records before loadbalance, as in the chain)
            if not fill.accepts(rcode, sections):
                return None
        kept_sections = sections
        reshuffle = False
        if plan.shuffle and rcode == 0:  # NOERROR: loadbalance's part
            reshuffle = light.shufflable(sections)
            sections = (light.round_robin(sections[0]), light.round_robin(sections[1]),
                        light.round_robin(sections[2]))
        packer = light.Packer(data[12:rest], qname)
        head = data[:2] + _U16.pack(0x8400 | (flags & 0x0110) | header_bits | rcode)
        try:
            wire, sections, head = _pack_light(packer, head, sections, opt, limit)
        except Unsupported:
            return None
        for commit in commits:
            commit()
        replays = []
        renew = None
        if ans is not None:
            valid, exact = ans.valid, ans.case_sensitive
            for fill in reversed(fills):  # (the innermost first, as replies travel back)
                valid, replay, apart = fill.store(rcode, kept_sections, valid)
                exact = exact or apart
                if replay is not None:
                    replays.append(replay)
        else:
            valid, renew, replay, exact = hit.served()  # type: ignore[union-attr]
            if replay is not None:
                replays.append(replay)
        keeping = valid is not None and self.prepared.limit > 0
        handover = fills[0].handover() if keeping and len(fills) == 1 else None
        # The writer of the miss an expired cache entry stands for, when the cache may refill
        # it in place (see _handing_over): the answering plugin, for a fill or for a hit.
        refill_writer = None
        if handover is not None:
            refill_writer = writer
        elif hit is not None and renew is not None and keeping:
            refill_writer = plan.answerer.name
        on_hit = hit_metrics = None
        miss: Callable[[bool, float, int], None] = _uncounted
        if plan.metrics:
            metrics = _metrics()
            rname = _RCODE_NAMES.get(rcode) or RCODE.get(rcode, str(rcode))
            tname = type_name(qtype)
            metrics.QUERY_STATS.observe(server, zone, proto, "2" if ":" in client_ip else "1", tname,
                                        do, rname, writer,
                                        time.perf_counter() - started, len(data), len(wire))
            if keeping:
                on_hit = metrics.QUERY_STATS.replayer(server, zone, proto, tname, do, rname,
                                                      writer, len(data), len(wire))
            if handover is not None:  # (made when the handover happens: no series before)
                hit_metrics = _replayer_maker(
                    metrics, (server, zone, proto, tname, do, rname, handover[1], len(data), len(wire)))
            if refill_writer is not None:
                miss = _miss_observer(metrics, server, zone, proto, tname, do, rname, refill_writer,
                                      len(wire))
        # (commits: a cache that keeps nothing here passed the query on; none then refills)
        refilling = miss if refill_writer is not None and not commits else None
        if handover is not None:
            renew = _handing_over(handover[0], hit_metrics, refilling)
        elif refilling is not None and renew is not None:
            renew = _refilling(renew, refilling)
        if replays and valid is not None:
            on_hit = _replay_all([*replays, on_hit] if on_hit is not None else replays)
        if keeping:
            again = _reshuffler(packer, head, sections, opt, limit) if reshuffle else None
            self._keep(k, wire, valid, on_hit, exact, again, proto, renew)
        return wire

    def _name_of(self, wire_name: bytes) -> tuple[Any, ...]:
        """What the direct path needs of a question name (kept in ``_names``, bounded): its
        text, lower-cased text, zone, block and the block's direct plan; or
        _NOT_PLAIN for a name only the general path takes (a label text cannot say, no
        block, no direct plan)."""
        labels: list[bytes] = []
        pos = 0
        end = len(wire_name) - 1
        while pos < end:
            n = wire_name[pos]
            labels.append(wire_name[pos + 1 : pos + 1 + n])
            pos += 1 + n
        named: tuple[Any, ...] = _NOT_PLAIN
        if not labels or _PLAIN_NAME.match(b".".join(labels)):
            qname = (b".".join(labels) + b".").decode("ascii") if labels else "."
            lower = qname.lower()
            if lower == qname:
                lower = qname  # (one string kept, not two)
            routed = self.route(lower)
            if routed is not None and routed[1].direct is not None:
                named = (qname, lower, routed[0], routed[1], routed[1].direct)
        memos.keep(self._names, wire_name, named)
        return named

    def route(self, qname_lower: str) -> tuple[str, Block] | None:
        """The (zone, block) whose zone is the longest suffix of the name, or None."""
        name = qname_lower if qname_lower.endswith(".") else qname_lower + "."
        if self._few_zones is not None:  # a handful of zones: try each, longest first
            for zone, dotted, routed in self._few_zones:
                if name.endswith(dotted) or name == zone or not dotted:
                    return routed
            return None
        while True:
            block = self._by_zone.get(name)
            if block is not None:
                return name, block
            if name == ".":
                return None
            dot = name.find(".")
            name = name[dot + 1 :] or "."

    async def handle(
        self, data: bytes, client_ip: str = "127.0.0.1", client_port: int = 0,
        proto: str = "udp", local_ip: str = "", local_port: int = 0,
        key: tuple[bytes, int] | None = None,
    ) -> bytes | None:
        """Answer one query packet; None when the packet must be dropped.

        ``key`` (from ``fast``) lets the reply be kept as a prepared answer."""
        # A query the hot-path parser accepted is rebuilt cheaply; anything else goes
        # through dnslib's full parser and the checks below.
        query = parse_query(data, key[1]) if key is not None else None
        checked = query is not None
        if query is None:
            try:
                query = DNSRecord.parse(data)
            except Exception:  # dnslib raises several types on malformed input
                # Like miekg/dns, the header's opcode is judged before the body: NOTIMP for
                # an opcode other than QUERY, FORMERR otherwise (None for <12 bytes or QR=1).
                notimp = len(data) >= 4 and (data[2] >> 3) & 0xF != OPCODE.QUERY
                return header_only_reply(data, RCODE.NOTIMP if notimp else RCODE.FORMERR)
        if query.header.qr:
            return None  # never answer responses
        try:
            return await self._answer(query, data, client_ip, client_port, proto, local_ip,
                                      local_port, key, checked)
        except Exception:  # a bug or an unpackable reply: SERVFAIL rather than silence
            log.exception("[ERROR] unhandled error answering a %d-byte %s query", len(data), proto)
            return header_only_reply(data, RCODE.SERVFAIL)

    async def _answer(
        self, query: DNSRecord, data: bytes, client_ip: str, client_port: int, proto: str,
        local_ip: str, local_port: int, key: tuple[bytes, int] | None = None,
        checked: bool = False,
    ) -> bytes | None:
        h = query.header
        if checked:  # one question, plain labels, opcode QUERY: straight to the chain
            q = query.questions[0]
            qname = b".".join(q.qname.label).decode("ascii") + "."
            return await self._run(query, q, qname, data, client_ip, client_port, proto,
                                   local_ip, local_port, key)
        if not all(_name_fits(q.qname.label) for q in query.questions[:1]):
            # dnslib decodes label lengths 64-191 and names over 255 octets; miekg/dns rejects
            # them.  The question cannot be packed back: a bare header, NOTIMP still first.
            notimp = h.opcode != OPCODE.QUERY
            return header_only_reply(data, RCODE.NOTIMP if notimp else RCODE.FORMERR)
        if h.opcode != OPCODE.QUERY:
            return _pack(_header_reply(query, RCODE.NOTIMP), MAX_TCP)
        if len(query.questions) != 1:
            return _pack(_header_reply(query, RCODE.FORMERR), MAX_TCP)
        q = query.questions[0]
        labels = q.qname.label
        qname = _fqdn(str(q.qname))
        if not _round_trips(qname, labels):
            # A '.' inside a label or non-ASCII bytes: the text form the plugins work with
            # cannot name it, and a reply built from that text would ask another question.
            return _pack(_header_reply(query, RCODE.REFUSED), MAX_TCP)
        return await self._run(query, q, qname, data, client_ip, client_port, proto,
                               local_ip, local_port, key)

    async def _run(
        self, query: DNSRecord, q: DNSQuestion, qname: str, data: bytes, client_ip: str,
        client_port: int, proto: str, local_ip: str, local_port: int,
        key: tuple[bytes, int] | None,
    ) -> bytes | None:
        req = Request(
            msg=query, qname=qname, qtype=q.qtype, qclass=q.qclass,
            client_ip=client_ip, client_port=client_port, proto=proto,
            local_ip=local_ip, local_port=local_port, size=len(data), start=time.perf_counter(),
            engine=self,
        )
        opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
        if len(opts) > 1:
            return _pack(_header_reply(query, RCODE.FORMERR), MAX_TCP)
        if opts:
            opt = opts[0]
            req.edns = True
            req.udp_size = max(512, opt.rclass)
            req.do = bool((opt.ttl >> 15) & 1)
            version = (opt.ttl >> 16) & 0xFF
            if version != 0 and req.qclass == CLASS_IN:  # CoreDNS refuses other classes first
                reply = make_reply(req, rcode=0, aa=False)
                reply.add_ar(EDNS0(udp_len=req.udp_size, version=0, ext_rcode=BADVERS >> 4))
                return _pack(reply, MAX_TCP)
        reply = await self.resolve(req)
        if reply.__dict__.get("drop"):
            return None  # a plugin (acl's drop) asked for no answer at all
        limit = min(req.max_udp_size, MAX_UDP) if proto == "udp" else MAX_TCP
        wire = self.finish(req, reply, limit)
        stream = reply.__dict__.get("stream")
        if stream is not None and proto == "tcp":
            wire = Stream(wire)
            wire.more = self._more(req, stream)
        if req.on_done:
            for callback in req.on_done:
                try:
                    callback(req, reply, len(wire))
                except Exception:
                    log.exception("[ERROR] after-reply hook failed")
        if key is not None:
            self._prepare(key, req, reply, wire)
        return wire

    def _more(self, req: Request, messages: Iterable[DNSRecord]) -> Iterator[bytes]:
        for msg in messages:
            yield self.finish(req, msg, MAX_TCP)

    def _prepare(self, key: tuple[bytes, int], req: Request, reply: DNSRecord, wire: bytes) -> None:
        """Keep a reply for the hot path when its writer vouched for it (``reply.valid``)
        and every after-reply hook can replay itself (the query log cannot: it must see
        every query, so blocks with ``log`` never use prepared answers)."""
        valid = reply.__dict__.get("valid")
        if valid is None or reply.__dict__.get("stream") is not None or self.prepared.limit <= 0:
            return
        hooks = []
        for callback in req.on_done or ():
            replay = getattr(callback, "fast_replay", None)
            if replay is None:
                return
            hooks.append(replay(req, reply, len(wire)))
        on_hit = None
        if len(hooks) == 1:
            on_hit = hooks[0]
        elif hooks:
            def on_hit(hits4: int, hits6: int, seconds: float) -> None:
                for hook in hooks:
                    hook(hits4, hits6, seconds)
        limit = min(req.max_udp_size, MAX_UDP) if req.proto == "udp" else MAX_TCP
        reshuffle = reply.__dict__.get("reshuffle")
        again = None
        if reshuffle is not None:
            def again() -> bytes:
                reshuffle(reply)
                return _pack(reply, limit)
        self._keep(key, wire, valid, on_hit, bool(reply.__dict__.get("case_sensitive")), again,
                   req.proto, reply.__dict__.get("renew"))

    def _keep(self, key: tuple[bytes, int], wire: bytes, valid: Callable[[], bool],
              on_hit: Callable[[int, int, float], None] | None, exact: bool,
              again: Callable[[], bytes] | None, proto: str,
              renew: Callable[..., object] | None = None) -> None:
        """Store a sent reply as a prepared answer.  When loadbalance shuffles it, ``again``
        packs it in another order, and a few orders are kept and served in turn."""
        variants: list[bytes] = []
        if again is not None and renew is None:
            # One random order served in every rotation (one copy of the records, and every
            # address leads in turn), when the reply has one group to shuffle.
            rotated = rotation(wire, key[1])
            if rotated is not None:
                self.prepared.store(key[0], key[1], wire, valid, on_hit, exact=exact,
                                    variants=rotated)
                return
        if again is not None:
            variants.append(wire)
            moved = reorderings(wire, PREPARED_ORDERS - 1)  # cheap: moves record bytes
            if moved is not None:
                variants.extend(moved)
                if not moved:
                    variants.clear()  # nothing left to shuffle (e.g. after truncation)
            else:
                variants.extend(again() for _ in range(PREPARED_ORDERS - 1))
        self.prepared.store(key[0], key[1], wire, valid, on_hit, exact=exact,
                            variants=tuple(variants) or None, renew=renew)

    async def resolve(self, req: Request) -> DNSRecord:
        """Run the plugin chain for a parsed request; always returns a reply."""
        if req.qclass != CLASS_IN:
            return error_reply(req, RCODE.REFUSED)
        routed = self.route(req.qname_lower)
        if routed is None:
            if self.count_dropped and req.on_done is None:
                # CoreDNS counts queries that enter no plugin chain under zone "dropped".
                from dnsd.plugins.prometheus import record

                req.zone, req.server = "dropped", self.blocks[0].server
                req.when_done(record)
            return error_reply(req, RCODE.REFUSED)
        req.zone, block = routed
        req.server = block.server
        try:
            reply = await block.handler(req)
        except Exception:
            log.exception("[ERROR] plugin chain failed for %s %s", req.qname, req.type_name)
            reply = None
        if reply is None:
            reply = error_reply(req, RCODE.SERVFAIL)
        return reply

    def finish(self, req: Request, reply: DNSRecord, limit: int) -> bytes:
        """Stamp the ID and EDNS onto a reply and pack it within ``limit`` bytes."""
        reply.header.id = req.msg.header.id
        reply.header.qr = 1
        upstream_ext = 0
        for rr in reply.ar:
            if rr.rtype == QTYPE.OPT:  # e.g. a forwarded reply: keep its extended rcode bits
                upstream_ext = (rr.ttl >> 24) & 0xFF
        reply.ar = [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]
        if req.edns:
            flags = "do" if req.do else ""
            ext = (reply.header.rcode >> 4) | upstream_ext
            reply.header.rcode = reply.header.rcode & 0xF
            # CoreDNS echoes the client's own payload size, even one below 512.
            size = next((rr.rclass for rr in req.msg.ar if rr.rtype == QTYPE.OPT), req.udp_size)
            reply.add_ar(EDNS0(udp_len=size, flags=flags, ext_rcode=ext))
        return _pack(reply, limit)


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _name_fits(labels: tuple[bytes, ...]) -> bool:
    """Can a name be written in a message (labels of 63 octets at most, 255 in all)?"""
    return len(b".".join(labels)) <= 253 and all(len(label) <= 63 for label in labels)


def _round_trips(qname: str, labels: tuple[bytes, ...]) -> bool:
    """Does the text form of a name parse back to the same labels (case included)?"""
    try:
        return DNSLabel(qname).label == labels
    except Exception:  # e.g. an empty label ("a..b") is an IDNA error
        return False


def _drop_unfittable(reply: DNSRecord, limit: int) -> None:
    """Leave out, before packing, records that cannot fit in ``limit`` bytes whatever the
    others: a record takes 11 bytes at least, so no more than limit // 11 fit.  Keeping one
    more than that still overflows, so the truncation below cuts exactly where it would have
    cut the whole message (a big headless answer to a 512-byte client packs ~47 records, not
    hundreds)."""
    cap = limit // 11 + 1
    answers, auth, extra = reply.rr, reply.auth, reply.ar
    if len(answers) + len(auth) + len(extra) <= cap:
        return
    opt = [rr for rr in extra if rr.rtype == QTYPE.OPT]
    if answers[cap:]:
        reply.rr, reply.auth, reply.ar = answers[:cap], [], opt
        return
    cap -= len(answers)
    if auth[cap:]:
        reply.auth, reply.ar = auth[:cap], opt
        return
    cap -= len(auth)
    reply.ar = [rr for rr in extra if rr.rtype != QTYPE.OPT][:cap] + opt


def _cut(reply: DNSRecord, data: bytes, ends: list[int], limit: int) -> bytes | None:
    """Truncate a packed reply by cutting its bytes (see ``_cut_wire``); ``reply`` is trimmed
    to match.  None when the OPT record is not last or not even the question fits."""
    answers, auth, extra = reply.rr, reply.auth, reply.ar
    opt = 1 if extra and extra[-1].rtype == QTYPE.OPT else 0
    if any(rr.rtype == QTYPE.OPT for rr in extra[: len(extra) - opt]):
        return None
    cut = _cut_wire(data, ends, limit, len(answers), len(auth), opt)
    if cut is None:
        return None
    wire, an, ns, ar = cut
    reply.rr, reply.auth = answers[:an], auth[:ns]
    reply.ar = extra[:ar] + extra[len(extra) - opt:]
    reply.header.tc = 1
    return wire


def _cut_wire(data: bytes, ends: list[int], limit: int, n_an: int, n_ns: int,
              opt: int) -> tuple[bytes, int, int, int] | None:
    """Truncate a packed reply by cutting its bytes: the records that fit (the longest
    prefix, sections in order), then the OPT record (when ``opt``, last), with TC set.
    Compression points only backwards, so the prefix is what packing those records alone
    writes.  ``ends``: where the question and each record end.  Returns the bytes and the
    answer, authority and additional (OPT excluded) counts kept; None when not even the
    question fits."""
    opt_start = ends[-1 - opt]
    room = limit - (len(data) - opt_start)
    if ends[0] > room:
        return None
    kept = bisect_right(ends, room, 1, len(ends) - opt) - 1  # records that fit
    an = min(kept, n_an)
    ns = min(max(kept - n_an, 0), n_ns)
    ar = max(kept - n_an - n_ns, 0)
    head = _COUNTS.pack(((data[2] << 8) | data[3]) | 0x0200, (data[4] << 8) | data[5], an, ns,
                        ar + opt)
    return data[:2] + head + data[12 : ends[kept]] + data[opt_start:], an, ns, ar


# The closures a first answer may leave with its prepared reply, made here so that
# Engine._direct_reply keeps its variables plain locals (a closure there turns each variable
# it reads into a cell, made on every call and read indirectly).


def _replayer_maker(metrics: Any, labels: tuple[Any, ...]) -> Callable[[], Callable[[int, int, float], None]]:
    def hit_metrics() -> Callable[[int, int, float], None]:
        return metrics.QUERY_STATS.replayer(*labels)  # type: ignore[no-any-return]

    return hit_metrics


def _miss_observer(metrics: Any, server: str, zone: str, proto: str, tname: str, do: bool,
                   rname: str, writer: str, rsize: int) -> Callable[[bool, float, int], None]:
    def miss(ipv6: bool, seconds: float, size: int) -> None:
        metrics.QUERY_STATS.observe(server, zone, proto, "2" if ipv6 else "1", tname, do, rname,
                                    writer, seconds, size, rsize)

    return miss


def _reshuffler(packer: light.Packer, head: bytes, kept: tuple[list[Any], list[Any], list[Any]],
                opt: bytes, limit: int) -> Callable[[], bytes]:
    def again() -> bytes:
        shuffled = (light.round_robin(list(kept[0])), light.round_robin(list(kept[1])),
                    light.round_robin(list(kept[2])))
        return _pack_light(packer, head, shuffled, opt, limit)[0]

    return again


def _pack_light(packer: light.Packer, head: bytes, sections: tuple[list, list, list], opt: bytes,
                limit: int) -> tuple[bytes, tuple[list, list, list], bytes]:
    """``_pack`` for light records: the reply within ``limit`` bytes, the records it
    holds, and its first four bytes (TC set when records were left out)."""
    wire, kept = packer.pack(head, sections, opt, limit)
    answers, auth, extra = sections
    if kept == len(answers) + len(auth) + len(extra):
        return wire, sections, head
    an = min(kept, len(answers))
    ns = min(kept - an, len(auth))
    return wire, (answers[:an], auth[:ns], extra[: kept - an - ns]), wire[:4]


_COUNTS = struct.Struct("!HHHHH")
_RCODE_NAMES = {code: RCODE.get(code) for code in range(6)}


Metrics = Callable[[], Callable[[int, int, float], None]]
Miss = Callable[[bool, float, int], None]


def _handing_over(take: Callable[[], Any], hit_metrics: Metrics | None,
                  refilling: Miss | None) -> Callable[[], Any]:
    """The renew hook of a prepared reply to a cache miss answered directly: once its first
    second is over, the reply (TTLs rewritten) is what a hit on the entry now writes, so it
    becomes one, with the hit's validity, renewal and metrics (a hit written by the cache),
    instead of being dropped and written again by the direct path (see DirectFill.handover).
    With ``refilling`` (the metrics of that miss), the hit's renewal goes on past the entry's
    expiry (see _refilling)."""

    def renew() -> tuple[Any, ...] | None:
        taken = take()
        if taken is None:
            return None
        old, new, valid, renew_hit, replay = taken
        on_hit = _replay_all([replay, hit_metrics()]) if hit_metrics is not None else replay
        if refilling is not None and renew_hit is not None:
            renew_hit = _refilling(renew_hit, refilling)
        return old, new, (valid, renew_hit, on_hit)

    return renew


def _refilling(renew_hit: Callable[..., Any], miss: Miss) -> Callable[[], Any]:
    """A prepared cache hit's renew hook that lets the cache refill the expired entry in place
    (cache.Plugin._refill: the records behind it are unchanged).  The reply is then what the
    direct path would answer that miss, but for its TTLs, which are rewritten; the asking
    query counts once through ``miss`` (as the answering plugin's response; the cache counted
    its miss), and the repeats after it are the entry's hits again."""

    def renew() -> tuple[Any, ...] | None:
        ttls = renew_hit(True)
        if ttls is None or len(ttls) == 2:
            return ttls
        return ttls[0], ttls[1], None, miss

    return renew


def _uncounted(ipv6: bool, seconds: float, size: int) -> None:
    """The metrics of a refill's miss where the chain has no prometheus: none."""


def _replay_all(hooks: list[Callable[[int, int, float], None]]) -> Callable[[int, int, float], None]:
    """One metrics replay hook calling several."""
    if len(hooks) == 1:
        return hooks[0]

    def replay(hits4: int, hits6: int, seconds: float) -> None:
        for hook in hooks:
            hook(hits4, hits6, seconds)

    return replay


def _metrics() -> Any:
    """dnsd.metrics (imported on first use: it imports the plugins, which import this)."""
    global _METRICS
    if _METRICS is None:
        from dnsd import metrics

        _METRICS = metrics
    return _METRICS


_METRICS: Any = None
_U16 = struct.Struct("!H")


def _header_reply(query: DNSRecord, rcode: int) -> DNSRecord:
    reply = DNSRecord(query.header, q=query.questions[0] if query.questions else None)
    if not query.questions:
        reply.questions = []
    h = reply.header
    h.qr, h.aa, h.ra, h.tc = 1, 0, 0, 0
    h.rcode = rcode
    return reply


class _Buffer(DNSBuffer):
    """dnslib's packing buffer without its compression bug: dnslib remembers names at any
    offset, but a compression pointer has 14 bits, so in a message over 16 KiB (a big TCP
    answer, a zone transfer) names pointing past 0x3FFF came out as garbage labels.  Names
    written beyond that offset are not remembered; everything else packs as dnslib does."""

    def encode_name(self, name: DNSLabel | str) -> None:
        if not isinstance(name, DNSLabel):
            name = DNSLabel(name)
        if len(name) > 253:
            raise DNSLabelError(f"Domain label too long: {name!r}")
        labels = list(name.label)
        while labels:
            key = tuple(labels)
            pointer = self.names.get(key)
            if pointer is not None:
                self.pack("!H", 0xC000 | pointer)
                return
            if self.offset < 0x4000:
                self.names[key] = self.offset
            element = labels.pop(0)
            if len(element) > 63:
                raise DNSLabelError(f"Label component too long: {element!r}")
            self.pack("!B", len(element))
            self.append(element)
        self.append(b"\x00")


def pack_message(msg: DNSRecord) -> bytes:
    """``msg.pack()`` with correct compression pointers in messages over 16 KiB (the fast
    packer for the usual record types, dnslib's machinery for the rest)."""
    try:
        return fast_pack(msg)
    except Unsupported:
        pass
    msg.set_header_qa()
    buffer = _Buffer()
    msg.header.pack(buffer)
    for section in (msg.questions, msg.rr, msg.auth, msg.ar):
        for item in section:
            item.pack(buffer)
    return bytes(buffer.data)


def _pack(reply: DNSRecord, limit: int) -> bytes:
    """Pack within ``limit`` bytes the way miekg/dns (CoreDNS) truncates: keep as many answer,
    then authority, then additional records as fit, in order; set TC when any was left out."""
    _drop_unfittable(reply, limit)
    ends: list[int] = []
    try:
        data = fast_pack(reply, ends)
    except Unsupported:
        data = pack_message(reply)
        ends = []
    if len(data) <= limit:
        return data
    if ends:
        cut = _cut(reply, data, ends, limit)
        if cut is not None:
            return cut
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    sections = [list(reply.rr), list(reply.auth), [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]]
    kept: list[list[RR]] = [[], [], []]

    def fits() -> bool:
        reply.rr, reply.auth, reply.ar = kept[0], kept[1], kept[2] + opt
        return len(pack_message(reply)) <= limit

    for i, records in enumerate(sections):
        lo, hi = 0, len(records)
        while lo < hi:  # the longest prefix of this section that still fits
            mid = (lo + hi + 1) // 2
            kept[i] = records[:mid]
            if fits():
                lo = mid
            else:
                hi = mid - 1
        kept[i] = records[:lo]
        if lo < len(records):
            break  # miekg stops filling once a section overflows
    reply.rr, reply.auth, reply.ar = kept[0], kept[1], kept[2] + opt
    reply.header.tc = 1
    data = pack_message(reply)
    if len(data) > limit:  # even the question does not fit: header alone
        reply.rr, reply.auth, reply.ar = [], [], []
        data = pack_message(reply)[:limit]
    return data
