"""First-answer cost in-process: each category of the benchmark mix answered with no prepared
replies, through the direct path and through the general path (CPU µs per query).

    python tests/bench/first_answers.py [small|large]

The engine is driven directly (no sockets): ``Engine.fast`` (hot path, then the direct path)
and, when it declines, ``Engine.handle`` (the coroutine chain), on the kubeadm Corefile the
benchmark uses, against the API emulator in this process.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

import bench_model as model  # noqa: E402
import bench_servers as srv  # noqa: E402
from dnslib import DNSRecord  # noqa: E402
from upstream import Upstream  # noqa: E402

import dnsd.serve.direct as direct  # noqa: E402
from dnsd.corefile import parse  # noqa: E402
from dnsd.devcluster import DevCluster  # noqa: E402
from dnsd.serve.runtime import Runtime  # noqa: E402


async def measure(cluster: model.Cluster, api_url: str, upstream_port: int, rounds: int = 3) -> None:
    cfg = srv.DnsdConfig(1053, srv.free_port(), srv.free_port(), srv.free_port(), api_url, upstream_port)
    maker = model.QueryMaker(cluster, random.Random(1))
    queries = {cat: [bytes(DNSRecord.question(n, t).pack()) for n, t in (maker.draw(cat) for _ in range(2000))]
               for cat, _ in model.MIX}
    best: dict[tuple[str, bool], float] = {}
    answered_directly: dict[str, int] = {}
    for _ in range(rounds):
        for use_direct in (False, True):
            direct.ENABLED = use_direct
            runtime = Runtime.build(parse(cfg.corefile().replace("    reload\n", "")), 1053)
            await runtime.start_plugins()
            try:
                engine = next(iter(runtime.engines.values()))
                engine.prepared.limit = 0  # every query is a first answer
                # Right after the start the watch threads (and this process's emulator) are
                # still busy and the first categories measured would pay for it: settle, and
                # answer everything once untimed.
                await asyncio.sleep(1.0)
                for q in (q for qs in queries.values() for q in qs):
                    reply, key = engine.fast(q, "udp", "10.0.0.1")
                    if reply is None:
                        await engine.handle(q, "10.0.0.1", 5, "udp", "", 53, key)
                for cat, qs in queries.items():
                    hits = 0
                    t = time.process_time()
                    for q in qs:
                        reply, key = engine.fast(q, "udp", "10.0.0.1")
                        if reply is None:
                            await engine.handle(q, "10.0.0.1", 5, "udp", "", 53, key)
                        else:
                            hits += 1
                    us = (time.process_time() - t) / len(qs) * 1e6
                    best[(cat, use_direct)] = min(us, best.get((cat, use_direct), us))
                    if use_direct:
                        answered_directly[cat] = hits
            finally:
                await runtime.stop_plugins()
    print(f"{'category':12s} {'direct µs':>10s} {'general µs':>11s}  answered directly")
    for cat, _ in model.MIX:
        print(f"{cat:12s} {best[(cat, True)]:10.1f} {best[(cat, False)]:11.1f}  "
              f"{answered_directly[cat]}/{len(queries[cat])}")


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "small"
    cluster = model.generate(model.SPECS[size])
    dev = DevCluster()
    model.load_into(dev, cluster)
    dev.start()
    upstream = Upstream(delay=0).start()
    try:
        asyncio.run(measure(cluster, dev.url, upstream.port))
    finally:
        upstream.stop()
        dev.stop()


if __name__ == "__main__":
    main()
