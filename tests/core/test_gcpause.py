"""The GC pause keeper: young collections and a freeze every tick, so full collections only
walk objects made since."""

from __future__ import annotations

import asyncio
import gc
import weakref

from dnsd import gcpause


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_each_tick_freezes_what_survived_and_collects_young_cycles() -> None:
    async def run() -> tuple[int, int, list[weakref.ref[Node]], list[Node]]:
        gc.unfreeze()
        frozen_before = gc.get_freeze_count()
        # Made with automatic collections off: one running mid-way could see a new cycle as
        # still referenced (from the interpreter's stack) and age it past the young
        # generations, where only a full collection would find it.
        collecting = gc.isenabled()
        gc.disable()
        try:
            keep = [Node() for _ in range(1000)]  # long-lived
            garbage = [weakref.ref(Node()) for _ in range(500)]  # unreachable cycles
        finally:
            if collecting:
                gc.enable()
        task = asyncio.get_running_loop().create_task(gcpause.keep_pauses_short(tick=0.05))
        await asyncio.sleep(0.3)
        await gcpause.stop(task)
        return frozen_before, gc.get_freeze_count(), garbage, keep

    try:
        before, after, garbage, keep = asyncio.run(run())
    finally:
        gc.unfreeze()
    assert after >= before + len(keep)  # the survivors were frozen
    assert all(ref() is None for ref in garbage)  # the cycles were collected before freezing
    assert all(node.me is node for node in keep)


def test_the_tick_shortens_while_collections_are_long_and_grows_back() -> None:
    """Many long-lived objects made between two collections (a burst of cache refills) make
    the next collection long: the next one comes sooner, so each walks fewer.  Quiet
    collections let the tick grow back to its normal length."""
    ticker = gcpause.Ticker(tick=0.1, min_tick=0.01, pause=0.002)
    collecting = gc.isenabled()
    gc.disable()  # (so the burst below is all in the young generation when collected)
    try:
        gc.collect(1)
        keep = [[i] for i in range(120_000)]  # small containers that stay alive
        took = ticker.collect()
    finally:
        if collecting:
            gc.enable()
        gc.unfreeze()
    assert took > 0.002
    assert ticker.delay == 0.05
    for _ in range(4):
        gc.disable()
        try:
            keep = [[i] for i in range(120_000)]  # (the last batch freed)
            ticker.collect()
        finally:
            if collecting:
                gc.enable()
            gc.unfreeze()
    assert ticker.delay == 0.01  # halved each time, no shorter than min_tick
    for _ in range(20):
        ticker.collect()
    gc.unfreeze()
    assert ticker.delay == 0.1  # back to the normal tick (no more than that)
    assert len(keep) == 120_000
