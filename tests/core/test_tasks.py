"""Stopping background tasks within a bound (dnsd/tasks.py), and the health plugin's stop.

On Python 3.11 ``asyncio.wait_for`` can lose a cancellation that arrives as the awaited
operation completes; the health plugin's self-check loop used it, and ``stop`` (so dnsd's
shutdown) then waited forever now and then.  The tasks below lose cancellations on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from support import free_port

from dnsd.chain import SetupContext
from dnsd.plugins.health import Plugin as Health
from dnsd.tasks import stop_task


async def test_a_task_that_loses_cancellations_is_cancelled_again_until_it_ends() -> None:
    lost = 0

    async def deaf_twice() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                lost += 1
                if lost > 2:
                    raise

    task = asyncio.get_running_loop().create_task(deaf_twice())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    assert await stop_task(task, timeout=2.0)
    assert task.cancelled() and lost == 3
    assert time.monotonic() - started < 1.0


async def test_a_task_that_never_ends_is_left_after_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(deaf())
    await asyncio.sleep(0.01)  # (running: a task cancelled before its first step just ends)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dnsd"):
        assert not await stop_task(task, timeout=0.5, what="the deaf task")
    assert 0.45 < time.monotonic() - started < 1.5
    assert "the deaf task did not stop within 0.5s" in caplog.text
    release.set()
    await asyncio.wait_for(task, 1)  # (ends on its own once released)


async def test_ended_tasks_stop_at_once() -> None:
    async def quick() -> None:
        return None

    task = asyncio.get_running_loop().create_task(quick())
    await task
    assert await stop_task(task)


@pytest.mark.parametrize("offset", [0.0, 0.9, 1.0, 1.02, 1.05])
async def test_health_stops_promptly_wherever_its_self_check_is(offset: float) -> None:
    """Stopped before, around and during a self-check request (one a second)."""
    ctx = SetupContext(zones=["."], port=53)
    plugin = Health(f"127.0.0.1:{free_port()}", 0.0, ctx)
    await plugin.start()
    await asyncio.sleep(offset)
    started = time.monotonic()
    await plugin.stop()
    assert time.monotonic() - started < 1.5
    assert plugin._task is None
