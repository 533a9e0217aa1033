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

# Seconds between young collections + freeze.  The pause is proportional to what survived
# since the last one: at 75k queries/s a 1 s tick paused 1-4 ms; a tenth of that, ten times
# as often, keeps each pause to a fraction of a millisecond.
TICK = 0.1


async def keep_pauses_short(tick: float = TICK) -> None:
    """Run until cancelled (DNSD_GC_FREEZE=0 turns it off)."""
    if os.environ.get("DNSD_GC_FREEZE") == "0":
        return
    while True:
        await asyncio.sleep(tick)
        gc.collect(1)
        gc.freeze()


def start() -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(keep_pauses_short())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
