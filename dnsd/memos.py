"""How many entries the name memos hold: question names (the engine's direct path), parsed
cluster names (the kubernetes answers), labels and SRV targets (dnsd/wire/light.py).

Each memo is emptied when it reaches ``size`` entries, so its memory stays bounded (about
750 bytes per name across the memos).  The size follows the cluster: a memo smaller than the
set of names clients ask makes most first answers miss it (with 10,000 Services and 100,000
endpoints the benchmark mix asks ~26,000 distinct names: 33 us per first answer in-process
with 4,096 entries, 24 us with 32,768), and a memo much larger than the cluster only holds
what a flood of made-up names puts there.  The kubernetes plugin calls ``fit`` after each
list; the size never shrinks.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

MIN_SIZE = 4096
MAX_SIZE = 32768

size = MIN_SIZE


def fit(names: int) -> None:
    """Grow the memos (up to MAX_SIZE) for a cluster that answers about ``names`` names."""
    global size
    size = max(size, min(MAX_SIZE, names))


def keep(memo: dict[K, V], key: K, value: V) -> None:
    """Put ``value`` in ``memo`` under ``key``, emptying the memo first when it is full."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value
