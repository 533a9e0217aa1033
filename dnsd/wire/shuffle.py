"""Record orders of a packed reply, made by moving bytes instead of packing again.

The ``loadbalance`` plugin shuffles the address (A/AAAA) and MX records of each section.  A
prepared reply keeps a few such orders; packing the message once per order costs as much as
answering it.  When every record of a group is self-contained (nothing else in the message
points into it with a compression pointer), the group's records can be permuted as byte
strings, and every permutation is exactly what packing that order would have written.
"""

from __future__ import annotations

import random
from collections.abc import Callable

A, NS, CNAME, SOA, PTR, MX, AAAA, SRV = 1, 2, 5, 6, 12, 15, 28, 33
_ADDRESS = (A, AAAA)


class _Malformed(Exception):
    pass


def _skip_name(wire: bytes, pos: int, targets: set[int]) -> int:
    """The offset after the name at ``pos``, noting where its compression pointer points."""
    n = len(wire)
    while True:
        if pos >= n:
            raise _Malformed
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 1 >= n:
                raise _Malformed
            targets.add(((length & 0x3F) << 8) | wire[pos + 1])
            return pos + 2
        if length > 63:
            raise _Malformed
        pos += 1 + length


def _records(wire: bytes) -> tuple[list[tuple[int, int, int, int]], set[int]]:
    """Each record as (section, start, end, type), and every compression pointer's target."""
    targets: set[int] = set()
    counts = [(wire[i] << 8) | wire[i + 1] for i in (4, 6, 8, 10)]
    pos = 12
    for _ in range(counts[0]):
        pos = _skip_name(wire, pos, targets) + 4
    out: list[tuple[int, int, int, int]] = []
    for section in (1, 2, 3):
        for _ in range(counts[section]):
            start = pos
            pos = _skip_name(wire, pos, targets)
            if pos + 10 > len(wire):
                raise _Malformed
            rtype = (wire[pos] << 8) | wire[pos + 1]
            rdata = pos + 10
            end = rdata + ((wire[pos + 8] << 8) | wire[pos + 9])
            if end > len(wire):
                raise _Malformed
            if rtype in (NS, CNAME, PTR):
                _skip_name(wire, rdata, targets)
            elif rtype == MX:
                _skip_name(wire, rdata + 2, targets)
            elif rtype == SRV:
                _skip_name(wire, rdata + 6, targets)
            elif rtype == SOA:
                _skip_name(wire, _skip_name(wire, rdata, targets), targets)
            out.append((section, start, end, rtype))
            pos = end
    if pos != len(wire):
        raise _Malformed
    return out, targets


def _groups(records: list[tuple[int, int, int, int]]) -> list[tuple[int, int]] | None:
    """(first, last + 1) record indexes of each run loadbalance shuffles; None when a group
    is not one contiguous run (the reply was not ordered by loadbalance)."""
    groups: list[tuple[int, int]] = []
    for section in (1, 2, 3):
        for kinds in (_ADDRESS, (MX,)):
            found = [i for i, r in enumerate(records) if r[0] == section and r[3] in kinds]
            if len(found) < 2:
                continue
            if found[-1] - found[0] + 1 != len(found):
                return None
            groups.append((found[0], found[-1] + 1))
    return groups


def reorderings(wire: bytes, count: int,
                shuffle: Callable[[list[bytes]], None] = random.shuffle) -> list[bytes] | None:
    """``count`` more orders of ``wire`` with its address and MX groups shuffled ([] when it
    has nothing to shuffle), or None when the bytes cannot be moved safely (the caller then
    packs each order)."""
    try:
        records, targets = _records(wire)
    except (_Malformed, IndexError):
        return None
    groups = _groups(records)
    if groups is None:
        return None
    if not groups:
        return []  # (e.g. truncation left fewer than two of a kind): one order is all
    for first, last in groups:
        lo, hi = records[first][1], records[last - 1][2]
        if any(lo <= t < hi for t in targets):
            return None  # a name inside the group is pointed at: moving it would break that
    pieces: list[bytes | list[bytes]] = []
    at = 0
    for first, last in groups:
        lo = records[first][1]
        pieces.append(wire[at:lo])
        pieces.append([wire[s:e] for _, s, e, _ in records[first:last]])
        at = records[last - 1][2]
    pieces.append(wire[at:])
    # One random order per group, then its rotations: as random as shuffling each time for
    # a client, every record leads in turn, and a shuffle costs ~1 µs per record in Python.
    for piece in pieces:
        if type(piece) is list:
            shuffle(piece)
    out: list[bytes] = []
    for turn in range(1, count + 1):
        parts: list[bytes] = []
        for piece in pieces:
            if type(piece) is list:
                at = turn % len(piece)
                parts.extend(piece[at:])
                parts.extend(piece[:at])
            else:
                parts.append(piece)  # type: ignore[arg-type]
        out.append(b"".join(parts))
    return out


class Rotation:
    """A reply whose one shuffled group of records is served in every rotation of one
    random order: record ``i`` leads after record ``i - 1``, so each address leads in turn,
    and the group is kept twice over (``ring``) instead of once per order.  A hit writes
    ``hdr``, the question, ``mid``, one rotation (a slice of ``ring``) and ``tail``."""

    __slots__ = ("hdr", "mid", "ring", "starts", "size", "tail")

    def __init__(self, hdr: bytes, mid: bytes, ring: bytes, starts: tuple[int, ...], size: int,
                 tail: bytes) -> None:
        self.hdr, self.mid, self.ring, self.starts, self.size, self.tail = hdr, mid, ring, starts, size, tail

    def __len__(self) -> int:
        return len(self.starts)

    def reply(self, head: bytes, question: bytes, turn: int) -> bytes:
        """The reply in its ``turn``-th order, with ``head`` (its first two bytes, the ID)
        and ``question`` (the question name as asked)."""
        at = self.starts[turn % len(self.starts)]
        return head + self.hdr + question + self.mid + self.ring[at : at + self.size] + self.tail


def rotation(wire: bytes, qend: int,
             shuffle: Callable[[list[bytes]], None] = random.shuffle) -> Rotation | None:
    """``wire``'s shuffled group as a Rotation, or None when it has not exactly one group
    that can be moved safely (the caller then keeps several packed orders)."""
    try:
        records, targets = _records(wire)
    except (_Malformed, IndexError):
        return None
    groups = _groups(records)
    if not groups or len(groups) != 1:
        return None
    first, last = groups[0]
    lo, hi = records[first][1], records[last - 1][2]
    if lo < qend or any(lo <= t < hi for t in targets):
        return None
    pieces = [wire[s:e] for _, s, e, _ in records[first:last]]
    shuffle(pieces)
    starts: list[int] = []
    at = 0
    for piece in pieces:
        starts.append(at)
        at += len(piece)
    ring = b"".join(pieces) * 2
    return Rotation(wire[2:12], wire[qend:lo], ring, tuple(starts), hi - lo, wire[hi:])
