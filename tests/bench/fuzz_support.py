"""The runner shared by the fuzz scripts (``fuzz_*.py``; not collected by pytest).

A script gives a ``worker((count, seed, *extra)) -> stats`` function at module level (the
``spawn`` pool imports it by name); ``run`` splits the inputs over ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Stats = dict[str, Any]


def arguments(doc: str, count: str) -> argparse.ArgumentParser:
    """The command line of a fuzz script: ``--<count>`` inputs in all, ``--workers``, ``--seed``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument(f"--{count}", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=max(1, min(2, multiprocessing.cpu_count())))
    p.add_argument("--seed", type=int, default=1)
    return p


def run(worker: Callable[[tuple[Any, ...]], Stats], count: int, workers: int, seed: int,
        *extra: Any) -> tuple[list[Stats], float]:
    """Split ``count`` inputs over ``workers`` processes (worker ``i`` gets the seed
    ``seed * 1000 + i`` and ``extra``); their stats, and the seconds it all took."""
    per = count // workers
    jobs = [(per + (1 if i < count % workers else 0), seed * 1000 + i, *extra) for i in range(workers)]
    start = time.monotonic()
    if workers == 1:
        results = [worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(worker, jobs)
    return results, time.monotonic() - start


def totals(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """The sum of each of ``keys`` over the workers' stats."""
    return {k: sum(r[k] for r in results) for k in keys}


def record_exception(stats: Stats, signatures: collections.Counter[str], exc: BaseException,
                     what: str) -> None:
    """Count an exception that escaped, by where it was raised; keep two examples (``what``
    describes the input) of each place."""
    stats["exceptions"] += 1
    tb = traceback.extract_tb(exc.__traceback__)[-1]
    sig = f"{type(exc).__name__} at {Path(tb.filename).name}:{tb.lineno}"
    signatures[sig] += 1
    if signatures[sig] <= 2:
        stats["examples"].append(f"{sig}\n{what}\n{traceback.format_exc()}")


def print_time(took: float, count: int, unit: str, workers: int, seed: int) -> None:
    """The closing ``time:`` line: seconds, ``unit`` per second, workers and seed."""
    print(f"time:             {took:.1f} s ({count / took:,.0f} {unit}/s, "
          f"{workers} worker(s), seed {seed})")


def print_failures(results: Sequence[Mapping[str, Any]]) -> None:
    """The exception signatures counted by the workers (most common first), then each
    worker's first six examples."""
    signatures: collections.Counter[str] = collections.Counter()
    for r in results:
        signatures.update(r.get("signatures", {}))
    for sig, count in signatures.most_common():
        print(f"exception {sig}: {count}")
    for r in results:
        for ex in r["examples"][:6]:
            print("---", ex)
