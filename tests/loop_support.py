"""An event loop running on a thread of the test process, driven from the test's thread
(for listeners and engines a test must hold or look inside)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class LoopThread:
    """``run`` a coroutine or ``call`` a function on the loop and wait for its result."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, timeout: float = 10.0) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self.timeout = timeout
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout or self.timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrapped() -> Any:
            return fn()

        return self.run(wrapped())

    def stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
