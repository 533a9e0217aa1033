"""The hot path: a minimal query parser and a store of prepared wire-format answers.

Most cluster queries repeat: the same name, type and flags, from many clients.  The first
time, the full chain answers and the packed reply is kept here with a validity check supplied
by the plugin that wrote it.  Later identical queries are answered by copying that reply and
patching in the query's ID and the question's bytes (so the asker's letter case comes back),
without dnslib and without the plugin chain.  A change in the cluster (or zone file) makes the
check fail, and the next query goes through the chain again and re-prepares the answer.

Replies whose TTLs count down (cache hits) carry a ``renew`` hook as well: when their check
fails only because the second changed, the hook gives the TTL the records had and the one
they have now, and the stored copies are rewritten in place (``retime``) instead of dropped.

Only plain queries qualify: QUERY opcode, QR clear, exactly one question with an
uncompressed name, no answer/authority records, and at most one well-formed OPT record.
Anything else returns no key and takes the general path (where dnslib validates it fully).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass

from dnsd.wire import express
from dnsd.wire.shuffle import Rotation

# About 0.7 KiB of memory per entry: 50,000 bound the store near 36 MiB, also when a flood of
# random names fills it (each miss is prepared once); 200,000 let such a flood add ~140 MiB.
MAX_ENTRIES = 50_000
# A full store gives up this share of its entries at a time, looking at no more than SWEEP
# entries per entry it evicts (see PreparedAnswers.make_room): ~1,500 at a time, a pause of
# about a millisecond, where an eighth swept through the whole store took tens.
EVICT_SHARE = 32
SWEEP = 4
# Header bits that change a reply: RD and CD are echoed; the rest of the flags word must be
# zero in a query we prepare for (QR=0, opcode QUERY, AA/TC/RA/Z/AD clear, rcode 0).
_FLAG_ECHO = 0x0110
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_COUNTS = struct.Struct("!HHHH")
_U32 = struct.Struct("!I")
OPT = 41


def query_key(data: bytes, proto: str) -> tuple[bytes, int] | None:
    """The prepared-answer key of a query and the end offset of its question name.

    The key holds the echoed flag bits, the lower-cased question, the EDNS fields that shape
    the reply (payload size, version, DO) and the transport; None when the query does not
    qualify for the hot path.
    """
    n = len(data)
    if n < 17 or data[4:6] != b"\x00\x01" or data[6:10] != b"\x00\x00\x00\x00":
        return None
    flags = (data[2] << 8) | data[3]
    if flags & ~_FLAG_ECHO & 0xFFFF & ~0x0020:  # AD (0x0020) from a stub is harmless
        return None
    pos = 12
    while True:
        if pos >= n:
            return None
        length = data[pos]
        if length == 0:
            break
        if length > 63:  # compression pointer or extended label: general path
            return None
        pos += 1 + length
    qend = pos + 1
    if qend - 12 > 255 or qend + 4 > n:
        return None
    tail = data[qend : qend + 4]
    arcount = (data[10] << 8) | data[11]
    rest = qend + 4
    if arcount == 0:
        if rest != n:
            return None
        edns = b""
    elif arcount == 1:
        # OPT: root name, type 41, class = payload size, TTL = ext-rcode/version/flags, rdata.
        if rest + 11 > n or data[rest] != 0 or data[rest + 1 : rest + 3] != b"\x00\x29":
            return None
        rdlen = (data[rest + 9] << 8) | data[rest + 10]
        if rest + 11 + rdlen != n or data[rest + 5] != 0 or data[rest + 6] != 0:
            return None  # extended rcode or version set: general path (BADVERS...)
        opt = rest + 11
        end = opt + rdlen
        while opt < end:  # options must be well formed, though they do not shape the reply
            if opt + 4 > end:
                return None
            opt += 4 + ((data[opt + 2] << 8) | data[opt + 3])
        if opt != end:
            return None
        edns = data[rest + 3 : rest + 5] + bytes((data[rest + 7] & 0x80,))
    else:
        return None
    key = b"%c%c%s%s%s%s" % (
        flags >> 8, flags & 0xFF, data[12:qend].translate(_LOWER), tail,
        edns, b"t" if proto == "tcp" else b"u",
    )
    return key, qend


def _skip_name(wire: bytes, pos: int) -> int:
    """The offset after the (possibly compressed) name at ``pos``; -1 when malformed."""
    n = len(wire)
    while pos < n:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        if length > 63:
            return -1
        pos += 1 + length
    return -1


def retime(wire: bytes, old: int, new: int) -> bytes | None:
    """``wire`` with the TTL field of every record but OPT (whose "TTL" holds EDNS flags)
    changed from ``old`` to ``new``; None when some record's TTL is not ``old`` (a plugin
    set it apart: the full path must answer) or the message cannot be walked."""
    n = len(wire)
    if n < 12:
        return None
    qd, an, ns, ar = _COUNTS.unpack_from(wire, 4)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(wire, pos)
        if pos < 0:
            return None
        pos += 4
    out = bytearray(wire)
    for _ in range(an + ns + ar):
        pos = _skip_name(wire, pos)
        if pos < 0 or pos + 10 > n:
            return None
        if (wire[pos] << 8) | wire[pos + 1] != OPT:
            if _U32.unpack_from(wire, pos + 4)[0] != old:
                return None
            _U32.pack_into(out, pos + 4, new)
        pos += 10 + ((wire[pos + 8] << 8) | wire[pos + 9])
    if pos != n:
        return None
    return bytes(out)


@dataclass(slots=True)
class Prepared:
    wire: bytes  # the full reply as first sent
    qend: int  # end of the question name in ``wire`` (same as in every matching query)
    valid: Callable[[], bool]  # False once the records behind the reply changed
    # Metrics for the hits: called with (IPv4 hits, IPv6 hits, seconds spent) in batches, so
    # that a hit only bumps the counters below (see PreparedAnswers.flush).
    on_hit: Callable[[int, int, float], None] | None = None
    # Set when the reply spells names after the question in ways patching the question
    # cannot follow: then only the very same spelling is served from here.
    exact: bytes | None = None
    # Several record orders served in turn: packed orders, or one order's rotations.
    variants: tuple[bytes, ...] | Rotation | None = None
    # Called once ``valid`` fails: (the TTL every record of the reply carries, the TTL they
    # must carry now) when the reply only aged, after which ``valid`` holds again; None when
    # it must be dropped.  A third item, (valid, renew, on_hit), replaces those three: the
    # reply goes on as another writer's (a cache miss's reply as a hit's); a fourth is the
    # ``first`` hook of a cache refill.  See renew.
    renew: Callable[[], tuple[int, int] | None] | None = None
    turn: int = 0
    used: bool = False  # hit since the store last made room (the engine sets it)
    hits4: int = 0  # hits not yet handed to on_hit
    gone: bool = False  # left the store (see retire)
    hits6: int = 0
    seconds: float = 0.0
    # The express lane's repeats (dnsd/wire/express.py), not yet folded into the above.
    lane4: int = 0
    lane6: int = 0
    # Set by renew when the cache refilled the reply's entry (see engine._refilling): the
    # query that asked counts once through this, as the miss, instead of as a hit.
    first: Callable[[bool, float, int], None] | None = None


class PreparedAnswers:
    """Prepared replies by query key."""

    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self.entries: dict[bytes, Prepared] = {}
        self.limit = limit
        self.hits = 0
        self.express_hits = 0  # the hits the express lane answered (see dnsd/wire/express.py)

    def store(self, key: bytes, qend: int, wire: bytes, valid: Callable[[], bool],
              on_hit: Callable[[int, int, float], None] | None = None,
              exact: bool = False, variants: tuple[bytes, ...] | Rotation | None = None,
              renew: Callable[[], tuple[int, int] | None] | None = None) -> None:
        if self.limit <= 0:
            return  # prepared answers are switched off (DNSD_PREPARED=0, for measurements)
        old = self.entries.get(key)
        if old is not None:
            self.retire(old)
        elif len(self.entries) >= self.limit:
            self.make_room()
        self.entries[key] = Prepared(wire, qend, valid, on_hit, wire[12:qend] if exact else None,
                                     variants, renew)

    @staticmethod
    def renew(entry: Prepared) -> bool:
        """Bring an entry whose ``valid`` failed up to date through its ``renew`` hook: the
        records' TTLs are rewritten in the reply and in every variant.  False when the entry
        has no hook, the hook refuses, or a copy's TTLs are not what the hook says."""
        if entry.renew is None:
            return False
        ttls = entry.renew()
        if ttls is None:
            return False
        old, new = ttls[0], ttls[1]
        wire = retime(entry.wire, old, new)
        if wire is None:
            return False
        if type(entry.variants) is Rotation:
            return False  # (never stored with a renew hook: see Engine._keep)
        if entry.variants is not None:
            variants = []
            for variant in entry.variants:
                changed = retime(variant, old, new)
                if changed is None:
                    return False
                variants.append(changed)
            entry.variants = tuple(variants)
        entry.wire = wire
        if len(ttls) > 2 and ttls[2] is not None:
            # the reply becomes another one: (validity, renew hook, metrics)
            PreparedAnswers.flush(entry)  # (the repeats so far, to the metrics they had)
            entry.valid, entry.renew, entry.on_hit = ttls[2]  # type: ignore[misc]
        if len(ttls) > 3:  # the asking query stands for a miss: counted as one, once
            entry.first = ttls[3]  # type: ignore[misc]
        return True

    def make_room(self) -> None:
        """Evict a thirty-second of the store: the oldest entries not hit since room was
        last made (a clock: hit ones lose their mark and move to the young end).  The sweep
        looks at SWEEP entries per entry it must evict at most; when those were all hit (a
        working set larger than the store), the oldest left go regardless.  (Clearing the
        whole store instead made every name of a large working set take the full path again
        at once; sweeping the whole store stalled the loop for tens of milliseconds.)"""
        entries = self.entries
        want = len(entries) - self.limit + max(1, self.limit // EVICT_SHARE)
        for key in list(itertools.islice(entries, SWEEP * want)):
            if want <= 0:
                return
            entry = entries.pop(key)
            if entry.lane4 or entry.lane6:
                self.fold(entry)
            if entry.used:
                entry.used = False
                entries[key] = entry
            else:
                self.retire(entry)
                want -= 1
        for key in list(itertools.islice(entries, max(0, want))):
            self.retire(entries.pop(key))

    def drop(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.retire(entry)

    @staticmethod
    def fold(entry: Prepared) -> None:
        """Count the express lane's repeats of an entry as its hits (each taking the lane's
        measured time per reply); they mark it used."""
        lane4, lane6 = entry.lane4, entry.lane6
        entry.lane4 = entry.lane6 = 0
        entry.hits4 += lane4
        entry.hits6 += lane6
        entry.seconds += (lane4 + lane6) * express.COST
        entry.used = True

    @staticmethod
    def flush(entry: Prepared) -> None:
        """Hand an entry's pending hits (the lane's repeats too) to its metrics hook."""
        if entry.lane4 or entry.lane6:
            PreparedAnswers.fold(entry)
        if entry.on_hit is not None and (entry.hits4 or entry.hits6):
            h4, h6, seconds = entry.hits4, entry.hits6, entry.seconds
            entry.hits4 = entry.hits6 = 0
            entry.seconds = 0.0
            entry.on_hit(h4, h6, seconds)

    def flush_all(self) -> None:
        for entry in list(self.entries.values()):
            self.flush(entry)

    def clear(self) -> None:
        for entry in self.entries.values():
            self.retire(entry)
        self.entries.clear()

    @staticmethod
    def retire(entry: Prepared) -> None:
        """An entry leaves the store: its pending hits go to its metrics hook, and the
        express lane's items stop repeating it (they would count hits nobody reports)."""
        entry.gone = True
        PreparedAnswers.flush(entry)
