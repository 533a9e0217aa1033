"""Packet fuzzing at volume through the sans-IO engine (not collected by pytest).

    python tests/bench/fuzz_packets.py [--packets 1000000] [--workers 2] [--seed 1]

Each worker builds the fuzz configuration of ``tests/reliability/test_bad_input.py``
(kubernetes with the records fixture, file, transfer, acl, any, whoami) and feeds it
``--packets / --workers`` packets the way the listeners do (``Engine.fast``, then
``Engine.handle`` with the prepared-answer key; every message of a zone transfer is drawn):
random queries with every field sometimes wrong (EDNS options garbage and lying lengths,
compression loops and forward pointers, 127+ labels, label types 64-191, wrong section counts,
trailing junk), mutations of those, and random bytes; over UDP and TCP, from several client
addresses.  Every reply is checked like the unit tests do (same ID, QR set, within the client's
size limit, parseable).  Prints packets fuzzed, exceptions escaping the engine, bad replies,
ERROR log lines, replies/drops, time; exits 1 unless all three failure counts are 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import traceback
from pathlib import Path

import fuzz_support

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "reliability")]

CLIENTS = ("127.0.0.1", "10.1.2.3", "192.168.7.7", "2001:db8::1")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage())


def worker(args: tuple[int, int]) -> dict[str, object]:
    n, seed = args
    from test_bad_input import build_engine, check_reply, packets

    logging.getLogger("dnsd").propagate = False
    counter = _Count()
    logging.getLogger("dnsd").addHandler(counter)
    engine = build_engine()
    rng = random.Random(seed)
    gen = packets(rng)
    stats: dict[str, object] = {"packets": 0, "exceptions": 0, "bad_replies": 0, "replies": 0,
                                "dropped": 0, "hot_hits": 0, "stream_messages": 0, "examples": []}
    examples: list[str] = stats["examples"]  # type: ignore[assignment]

    async def run() -> None:
        for i in range(n):
            data = next(gen)
            proto = "tcp" if i % 3 == 0 else "udp"
            client = CLIENTS[i % len(CLIENTS)]
            stats["packets"] += 1  # type: ignore[operator]
            try:
                reply, key = engine.fast(data, proto, client)
                if reply is not None:
                    stats["hot_hits"] += 1  # type: ignore[operator]
                else:
                    reply = await engine.handle(data, client, 5353, proto, key=key)
                    for more in getattr(reply, "more", ()):
                        stats["stream_messages"] += 1  # type: ignore[operator]
                        assert len(more) <= 65535
            except Exception:  # noqa: BLE001 - what we are counting
                stats["exceptions"] += 1  # type: ignore[operator]
                if len(examples) < 3:
                    examples.append(f"{data.hex()}\n{traceback.format_exc()}")
                continue
            try:
                check_reply(data, reply, proto)
            except Exception as exc:  # noqa: BLE001
                stats["bad_replies"] += 1  # type: ignore[operator]
                if len(examples) < 3:
                    examples.append(f"bad reply to {data.hex()}: {exc!r}")
                continue
            stats["replies" if reply is not None else "dropped"] += 1  # type: ignore[operator]

    asyncio.run(run())
    stats["error_logs"] = counter.count
    examples.extend(counter.first)
    return stats


def main() -> int:
    a = fuzz_support.arguments(__doc__, "packets").parse_args()
    results, took = fuzz_support.run(worker, a.packets, a.workers, a.seed)
    total = fuzz_support.totals(results, [k for k in results[0] if k != "examples"])
    print(f"packets fuzzed:   {total['packets']:,}")
    print(f"exceptions:       {total['exceptions']}")
    print(f"bad replies:      {total['bad_replies']}")
    print(f"ERROR log lines:  {total['error_logs']}")
    print(f"replies / drops:  {total['replies']:,} / {total['dropped']:,} "
          f"(hot-path hits {total['hot_hits']:,}, transfer messages after the first "
          f"{total['stream_messages']:,})")
    fuzz_support.print_time(took, total["packets"], "packets", a.workers, a.seed)
    fuzz_support.print_failures(results)
    return 0 if total["exceptions"] == total["bad_replies"] == total["error_logs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
