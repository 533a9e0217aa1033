"""The order in which forward tries its upstreams: random, round_robin or sequential."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

Policy = Callable[[Sequence[T]], list[T]]


def random_order(items: Sequence[T]) -> list[T]:
    """A fresh random permutation (CoreDNS's default policy)."""
    out = list(items)
    random.shuffle(out)
    return out


class RoundRobin:
    """Start one further along the list on every query; the rest follow in list order."""

    def __init__(self) -> None:
        self.counter = 0

    def __call__(self, items: Sequence[T]) -> list[T]:
        if not items:
            return []
        self.counter += 1
        i = self.counter % len(items)
        return [items[i], *items[:i], *items[i + 1 :]]


def sequential(items: Sequence[T]) -> list[T]:
    """Always the configured order: the first upstream unless it fails."""
    return list(items)


def make_policy(name: str) -> Policy | None:
    """The policy called ``name``; None if there is no such policy."""
    if name == "random":
        return random_order
    if name == "round_robin":
        return RoundRobin()
    if name == "sequential":
        return sequential
    return None
