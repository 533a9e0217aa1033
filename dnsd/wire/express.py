"""The express lane: prepared replies repeated by the UDP batch reader without a call.

A prepared reply (``dnsd.wire.fastpath``) is found by parsing the query's key, checked with
its writer's ``valid()`` and copied with the asker's ID and question spliced in: about 1.4 µs
of Python per query, most of the server's own CPU time on a busy core.  The express lane
keeps, per exact query (its bytes after the ID), the finished reply bytes after the ID, so a
repeat costs one dictionary lookup, and no copy: the send entry points at the kept bytes.

What ``valid()`` would say is replaced by three cheap checks:

* **an announced change** (``changed()``): every source of prepared replies that can make
  one wrong announces the change when it happens (the kubernetes index on every event, the
  cache when it lets go of an entry that is still fresh, the file and hosts plugins when a
  reload replaces their data).  One global counter, ``EPOCH``, moves; every item made
  before it is ignored from then on, and the next repeat goes through the full hot path
  again (which re-checks ``valid()`` precisely and makes a new item);
* **a deadline**: the moment until which ``valid()`` holds without a change (the cache's
  TTL countdown moves every second).  A writer opts in by giving its ``valid`` callable an
  ``until_change`` attribute: a callable returning that moment (``time.monotonic()``
  seconds, ``FOREVER`` for none) or None when the reply must not take the lane.  Writers that
  do not are never repeated here; their replies still take the hot path;
* **the prepared entry is still stored**: one the store dropped, replaced or evicted is
  ``gone`` (its hits would be counted where no scrape finds them).

The lane only repeats what the hot path (``Engine.fast``) served a moment before, with the
same bookkeeping: hits counted on the prepared entry (``lane4``/``lane6``, folded into its
metrics with ``COST`` seconds each when the entry is flushed, which also marks it used),
loadbalance's rotations served in turn.

The batch reader sends a lane reply without copying it: the send entry's second iovec
points at the kept bytes themselves (``Item.addrs``, their addresses), the first at the
asker's ID where the query was received.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from dnsd.switches import switched_on

FOREVER = float("inf")
# Replies larger than this take the hot path (the batch reader hands pages of big replies
# back to the system; the lane's copies must stay small).
MAX_REPLY = 4096
# Bytes of rotated copies an item may keep for a reply that loadbalance rotates.
MAX_ROTATED = 4096

EPOCH = 0  # moves on every announced change; read as ``express.EPOCH``
COST = 1e-6  # seconds one lane reply takes, as the batch readers last measured it


def wanted() -> bool:
    """Use the lane?  ``DNSD_EXPRESS`` (default on; ``0``, ``false``, ``no`` or ``off`` keep
    every repeat on the hot path, which is how the benchmarks measure what the lane saves)."""
    return switched_on("DNSD_EXPRESS")


def changed() -> None:
    """Announce that some prepared reply may have become wrong: every lane item made before
    now is ignored (the hot path checks each again on its next repeat)."""
    global EPOCH
    EPOCH += 1


def until_change(valid: Callable[[], bool] | None) -> float | None:
    """How long ``valid`` holds unless a change is announced (monotonic seconds), or None
    when its writer did not say (the reply does not take the lane)."""
    deadline = getattr(valid, "until_change", None)
    return deadline() if deadline is not None else None


def lasting(valid: Callable[[], bool]) -> Callable[[], bool]:
    """Mark a validity check whose writer announces every change that can fail it (and
    whose answer does not age): it holds until the next announcement."""
    valid.until_change = _forever  # type: ignore[attr-defined]
    return valid


def _forever() -> float:
    return FOREVER


def address(data: bytes) -> int:
    """Where the bytes of ``data`` are in memory (valid while ``data`` lives: the item that
    keeps them keeps them alive, and the batch reader holds the item until its send)."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


class Item:
    """What the lane keeps for one exact query: its prepared-answer key (which also spares
    the hot path the key parser for repeats the lane does not serve) and, when the reply may
    be repeated here, the reply after its ID (``tails``: one, or one per rotation) with the
    tails' addresses (``addr`` for a single tail, 0 when they rotate: ``addrs`` in turn)."""

    __slots__ = ("key", "tails", "tail_size", "addr", "addrs", "until", "epoch",
                 "entry", "turn", "served")

    def __init__(self, key: tuple[bytes, int], tails: tuple[bytes, ...], until: float,
                 epoch: int, entry: Any, served: bool = True) -> None:
        self.key = key
        self.tails = tails
        self.tail_size = len(tails[0]) if tails else 0  # (the whole reply is 2 bytes more)
        self.addrs = tuple(address(t) for t in tails)
        self.addr = self.addrs[0] if len(tails) == 1 else 0
        self.until = until  # (-FOREVER with no tails: the key memo only)
        self.epoch = epoch
        self.entry = entry  # the prepared entry (a fastpath.Prepared): counters, used mark
        self.turn = 0
        self.served = served  # made for a reader that serves the lane (else: the key only)
