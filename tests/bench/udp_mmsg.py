"""recvmmsg/sendmmsg batching vs the recvfrom loop, in one run (run from the repository root).

    python tests/bench/udp_mmsg.py                      # small cluster, 3 rounds of 4 s runs
    python tests/bench/udp_mmsg.py --dual-stack         # listener on "" (IPv6 socket, v4-mapped)
    python tests/bench/udp_mmsg.py --unbound            # unbound on the same records, for scale
    python tests/bench/udp_mmsg.py --switch DNSD_EXPRESS --unbound   # the express lane off / on

Two dnsd processes on the benchmark's small cluster (same Corefile as tests/bench/run.py), one
with ``DNSD_UDP_MMSG=0`` and one with ``DNSD_UDP_MMSG=1`` (or another ``--switch``, such as
``DNSD_EXPRESS``, the express lane), both pinned to core 0; dnsperf (and
this process, which hosts the API emulator) on core 1.  Each round runs every query category
against each server in turn (the order alternates between rounds), after a warm-up, and takes
the server's CPU seconds (utime + stime from /proc) around the measured run.  The table gives
medians over the rounds: QPS, answered queries per server CPU second ("QPS/core"), and cores
busy.  The CPU-time numbers are the ones to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_dnsperf as perf
import bench_model as model
import bench_servers as srv


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--categories", default="clusterip_a,aaaa,headless_a,srv,nxdomain,mix")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--outstanding", type=int, default=500)
    ap.add_argument("--dual-stack", action="store_true", help="no bind: the dual-stack IPv6 socket")
    ap.add_argument("--unbound", action="store_true", help="also unbound (num-threads 1) on core 0")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--switch", default="DNSD_UDP_MMSG",
                    help="the environment switch set to 0 for one dnsd and 1 for the other")
    args = ap.parse_args()

    os.sched_setaffinity(0, {args.client_core})
    labels = ("recvfrom", "mmsg") if args.switch == "DNSD_UDP_MMSG" else (f"{args.switch}=0", f"{args.switch}=1")
    work = Path(tempfile.mkdtemp(prefix="dnsd-mmsg-"))
    procs = srv.Procs()
    dev: Any = None
    try:
        cluster = model.generate(model.SPECS["small"])
        files: dict[str, Path] = {}
        maker = model.QueryMaker(cluster, random.Random(13))
        for category, _ in model.MIX:
            files[category] = work / f"{category}.txt"
            model.write_queries(str(files[category]), [maker.draw(category) for _ in range(5000)])
        files["mix"] = work / "mix.txt"
        model.write_queries(str(files["mix"]), model.mix_queries(cluster, 50_000, seed=7))

        up_dir = work / "upstream"
        up_dir.mkdir()
        up_port = srv.free_port()
        up = procs.start(srv.unbound_argv(srv.unbound_conf(up_dir, up_port, model.external_local_data(10))),
                         up_dir / "unbound.log", cpus=[args.client_core])
        srv.wait_dns(up_port, model.external_names(1)[0], "A", up, 60)

        from dnsd.devcluster import DevCluster

        dev = DevCluster("127.0.0.1", 0)
        model.load_into(dev, cluster)
        dev.start()

        servers: dict[str, tuple[int, Any]] = {}
        for mode in ("0", "1"):
            cfg = srv.DnsdConfig(srv.free_port(), srv.free_port(), srv.free_port(), srv.free_port(),
                                 dev.url, up_port)
            text = cfg.corefile()
            if args.dual_stack:
                text = text.replace("    bind 127.0.0.1\n", "")
            conf = work / f"Corefile.{mode}"
            conf.write_text(text)
            env = {**os.environ, args.switch: mode}
            started = time.monotonic()
            proc = procs.start(srv.dnsd_argv(conf), work / f"dnsd.{mode}.log",
                               cpus=[args.server_core], env=env)
            srv.wait_ready(f"http://127.0.0.1:{cfg.ready_port}/ready", proc, 120, started)
            srv.wait_dns(cfg.dns_port, "dns-version.cluster.local.", "TXT", proc, 60)
            servers[labels[int(mode)]] = (cfg.dns_port, proc)
        if args.unbound:
            ub_dir = work / "unbound"
            ub_dir.mkdir()
            ub_port = srv.free_port()
            ub = procs.start(srv.unbound_argv(srv.unbound_conf(ub_dir, ub_port, model.unbound_local_data(cluster))),
                             ub_dir / "unbound.log", cpus=[args.server_core])
            srv.wait_dns(ub_port, "kubernetes.default.svc.cluster.local.", "A", ub, 120)
            servers["unbound"] = (ub_port, ub)

        categories = args.categories.split(",")
        names = list(servers)
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for rnd in range(args.rounds):
            order = names if rnd % 2 == 0 else list(reversed(names))
            for category in categories:
                for name in order:
                    port, proc = servers[name]
                    perf.run(port, files[category], seconds=args.seconds / 3, clients=args.clients,
                             outstanding=args.outstanding, cpu=args.client_core)
                    r = perf.run(port, files[category], seconds=args.seconds, clients=args.clients,
                                 outstanding=args.outstanding, cpu=args.client_core,
                                 sample=lambda pid=proc.pid: srv.tree_cpu(pid))
                    per_core = r.completed / r.server_cpu if r.server_cpu > 0 else float("nan")
                    busy = r.server_cpu / r.runtime if r.runtime > 0 else float("nan")
                    results.setdefault((category, name), []).append((r.qps, per_core, busy))
                    log(f"round {rnd + 1} {category:12} {name:9} {r.qps:9,.0f} qps "
                        f"{per_core:9,.0f} /cpu-s  busy {busy:.2f}  lost {r.lost}")

        where = 'dual-stack "" (IPv6 socket)' if args.dual_stack else "127.0.0.1"
        print(f"\nlistener: {where}; "
              f"{args.rounds} rounds of {args.seconds:g} s, dnsperf -c {args.clients} -q {args.outstanding}; "
              "medians\n")
        head = ["category", "server", "QPS", "QPS/core", "cores busy"]
        rows = []
        for category in categories:
            for name in names:
                runs = results[(category, name)]
                rows.append([category, name, f"{statistics.median(x[0] for x in runs):,.0f}",
                             f"{statistics.median(x[1] for x in runs):,.0f}",
                             f"{statistics.median(x[2] for x in runs):.2f}"])
            base = statistics.median(x[1] for x in results[(category, labels[0])])
            new = statistics.median(x[1] for x in results[(category, labels[1])])
            rows.append([category, f"{labels[1]}/{labels[0]}", "", f"{new / base:.2f}x", ""])
            if "unbound" in names:
                ub_core = statistics.median(x[1] for x in results[(category, "unbound")])
                rows.append([category, f"{labels[0]}/unbound", "", f"{base / ub_core:.2f}x", ""])
                rows.append([category, f"{labels[1]}/unbound", "", f"{new / ub_core:.2f}x", ""])
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print("| " + " | ".join((c.ljust(w) if i < 2 else c.rjust(w))
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |")
        return 0
    finally:
        procs.stop_all()
        if dev is not None:
            dev.stop()
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
