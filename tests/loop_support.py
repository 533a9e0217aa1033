"""An event loop running on a thread of the test process, driven from the test's thread
(for listeners and engines a test must hold or look inside)."""

from __future__ import annotations

import asyncio
import socket
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


class ServedEngine(LoopThread):
    """The engine of a Corefile's block on port 1053, behind a UDP listener on an ephemeral
    127.0.0.1 port (batched reads unless ``batched`` is False), in a loop on a thread."""

    def __init__(self, corefile: str, batched: bool = True, timeout: float = 20.0) -> None:
        from dnsd.corefile import parse
        from dnsd.serve.runtime import Runtime
        from dnsd.serve.udp import UdpListener

        super().__init__(timeout=timeout)
        self.runtime = Runtime.build(parse(corefile), 1053)
        self.engine = self.runtime.engines[("", 1053)]
        self.run(self.runtime.start_plugins())
        self.listener = UdpListener(self.engine, "127.0.0.1", 0, mmsg=batched)
        self.run(self.listener.start())
        self.port = self.listener.port

    def exchange(self, query: bytes) -> bytes:
        """One query over a UDP socket; the reply's bytes."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(query, ("127.0.0.1", self.port))
            return s.recv(65535)

    def close(self) -> None:
        self.run(self.listener.stop())
        self.run(self.runtime.stop_plugins())
        self.stop_loop()
