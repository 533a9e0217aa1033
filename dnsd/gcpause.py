"""Short garbage-collector pauses for a server whose heap is mostly long-lived.

CPython's full collection walks every tracked object that is not frozen.  dnsd's heap is
dominated by objects that live for minutes (prepared answers, the record index, caches), so a
full collection in the middle of serving stops the event loop for tens of milliseconds, long
enough for a busy UDP socket's receive buffer to overflow (measured: 15-25 ms on the small
benchmark cluster, queries lost at half the maximum rate).

Ten times a second this collects the young generations (cycles among recent objects: under a
millisecond) and freezes what survived, so later collections only walk what is new.  Frozen
objects are still freed by reference counting when the last reference goes; a reference cycle
that became garbage only after reaching the oldest generation would stay (the long-lived data,
the index and prepared answers, holds none; the kubernetes plugin freezes the index after its
first sync the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time

# Seconds between young collections + freeze.  The pause is proportional to what survived
# since the last one: at 75k queries/s a 1 s tick paused 1-4 ms; a tenth of that, ten times
# as often, keeps each pause to a fraction of a millisecond.
TICK = 0.1
# When many long-lived objects are made at once (thousands of cache entries and prepared
# answers refilled in the same second), even a tenth of a second's worth takes milliseconds
# to walk (~0.7 us each: every young object's referents are visited).  Then the tick
# shortens, down to MIN_TICK, until a collection takes under PAUSE again; it grows back
# when they are short.  (The young generation's count is no guide: it is allocations minus
# deallocations, so new objects that replace old ones leave it low while the list grows.)
MIN_TICK = 0.01
PAUSE = 0.001


class Ticker:
    """When the next young collection + freeze is due: ``tick`` seconds apart, shortened
    (halved, down to ``min_tick``) after one that took over ``pause`` seconds, lengthened
    again (by a quarter, up to ``tick``) after one that took under a quarter of that."""

    def __init__(self, tick: float = TICK, min_tick: float = MIN_TICK, pause: float = PAUSE) -> None:
        self.tick, self.min_tick, self.pause = tick, min(min_tick, tick), pause
        self.delay = tick

    def collect(self) -> float:
        """One young collection and freeze; returns the seconds it took."""
        started = time.perf_counter()
        gc.collect(1)
        gc.freeze()
        took = time.perf_counter() - started
        if took > self.pause:
            self.delay = max(self.min_tick, self.delay / 2)
        elif took < self.pause / 4:
            self.delay = min(self.tick, self.delay * 1.25)
        return took


async def keep_pauses_short(tick: float = TICK) -> None:
    """Run until cancelled (DNSD_GC_FREEZE=0 turns it off)."""
    if os.environ.get("DNSD_GC_FREEZE") == "0":
        return
    ticker = Ticker(tick)
    while True:
        await asyncio.sleep(ticker.delay)
        ticker.collect()


def start() -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(keep_pauses_short())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
