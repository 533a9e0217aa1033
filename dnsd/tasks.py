"""Stopping background tasks within a bound.

On Python 3.11, ``asyncio.wait_for`` can swallow a cancellation that arrives while the awaited
operation completes, and a loop around it then runs on; awaiting such a task after
``cancel()`` hangs whatever is stopping (a plugin's ``stop``, the process's shutdown).
Background loops use ``asyncio.timeout`` and a stop flag instead, and are stopped with
``stop_task``, which never waits longer than its bound.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("dnsd")


async def stop_task(task: asyncio.Task[None], timeout: float = 2.0, what: str = "task") -> bool:
    """Cancel ``task`` and wait up to ``timeout`` seconds for it to end (cancelling it again
    every tenth of that while it runs on).  True when it ended; False (and a warning) when it
    is still running, in which case it is left behind."""
    if task.done():
        return True
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.warning("[WARNING] %s did not stop within %gs; left running", what, timeout)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(left, timeout / 10))
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", what, task.exception())
    return True
