"""Fault injection for reliability tests (`DevCluster.faults`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .store import CUT, CUT_MID_JSON, EXPIRE

if TYPE_CHECKING:
    from .cluster import DevCluster


class Faults:
    """Switches that make the emulated API server misbehave. All methods are thread-safe."""

    def __init__(self, cluster: DevCluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()
        self._burst = 0
        self._burst_code = 500
        self._expire = False
        self._list_delay = 0.0

    def down(self) -> None:
        """Stop listening and drop every open connection: clients see connection refused."""
        self._cluster._go_down()

    def up(self) -> None:
        """Listen again on the same port."""
        self._cluster._go_up()

    @property
    def is_down(self) -> bool:
        """Whether `down()` is in effect."""
        return self._cluster._down

    def error_burst(self, n: int, code: int = 500) -> None:
        """The next `n` requests (of any kind) are answered with a `Status` of HTTP `code`."""
        with self._lock:
            self._burst = n
            self._burst_code = code

    def take_error(self) -> int | None:
        """Consume one injected error, if any is pending (called per request)."""
        with self._lock:
            if self._burst <= 0:
                return None
            self._burst -= 1
            return self._burst_code

    def cut_watches(self) -> int:
        """Close every open watch stream abruptly (no terminating chunk); returns how many."""
        return self._cluster.store.broadcast(CUT)

    def cut_watches_mid_json(self) -> int:
        """Write half an event line to every open watch, then close it; returns how many."""
        return self._cluster.store.broadcast(CUT_MID_JSON)

    def expire_all_watches(self) -> int:
        """Open watches get a 410 ERROR event and end; new ones too, until `clear()`."""
        with self._lock:
            self._expire = True
        return self._cluster.store.broadcast(EXPIRE)

    @property
    def watches_expired(self) -> bool:
        """Whether `expire_all_watches()` is in effect."""
        return self._expire

    def slow_lists(self, seconds: float) -> None:
        """Delay every list (not watch) response by `seconds`."""
        with self._lock:
            self._list_delay = max(0.0, seconds)

    @property
    def list_delay(self) -> float:
        """Current delay applied to list responses."""
        return self._list_delay

    def compact(self) -> None:
        """Drop the event history: watching from any earlier resourceVersion is 410 Expired."""
        self._cluster.store.compact()

    def clear(self) -> None:
        """Undo every fault: pending errors, expiry, slow lists; bring the server up if down."""
        with self._lock:
            self._burst = 0
            self._expire = False
            self._list_delay = 0.0
        if self.is_down:
            self.up()
