"""dnsd benchmark suite (run from the repository root).

    python tests/bench/run.py --quick     # small cluster, 5 s runs: checks the suite (~2 min)
    python tests/bench/run.py --full      # small + large clusters, 10 s runs, everything
    python tests/bench/run.py --sizes small,large --memory-only   # start-up and memory (~25 s)

dnsd is pinned to core 0, dnsperf (and this process, which hosts the API emulator and the
watch-latency poller) to core 1; everything listens on 127.0.0.1 only.  The same generated
cluster is served by dnsd (through the emulator) and by unbound (as static local-data), and
one comparison table is printed, followed by the dnsd-only measurements.  See
docs/benchmarks.md for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import bench_dnsperf as perf
import bench_model as model
import bench_servers as srv
import bench_watch as watch

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----- settings -----------------------------------------------------------------------------


@dataclass
class Settings:
    sizes: list[str]
    seconds: float
    warmup: float
    calibrate_seconds: float
    calibrate: list[tuple[int, int]]
    mix_lines: int
    unique_lines: int
    watch_changes: int
    verify_per_category: int
    workers: list[int]
    category_seconds: float = 3.0
    external_names: int = 1000
    ready_timeout: float = 600.0
    memory_only: bool = False


def settings_for(args: argparse.Namespace) -> Settings:
    if args.full:
        s = Settings(sizes=["small", "large"], seconds=10, warmup=3, calibrate_seconds=3,
                     calibrate=[(10, 100), (20, 300), (30, 1000), (50, 2000)], mix_lines=50_000,
                     unique_lines=50_000, watch_changes=1000, verify_per_category=50, workers=[2])
    else:
        s = Settings(sizes=["small"], seconds=5, warmup=2, calibrate_seconds=2,
                     calibrate=[(20, 100), (20, 500)], mix_lines=50_000, unique_lines=50_000,
                     watch_changes=100, verify_per_category=20, workers=[2],
                     category_seconds=1.5)
    if args.sizes:
        s.sizes = args.sizes.split(",")
    if args.seconds:
        s.seconds = args.seconds
    if args.watch_changes is not None:
        s.watch_changes = args.watch_changes
    if args.workers is not None:
        s.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    s.memory_only = bool(args.memory_only)
    return s


@dataclass
class Cores:
    server: list[int]
    client: int
    all: list[int]
    note: str = ""


def pick_cores() -> Cores:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        return Cores([cpus[0]], cpus[1], cpus)
    return Cores([cpus[0]], cpus[0], cpus, "only one core: dnsperf shares the server's core")


# ----- results ------------------------------------------------------------------------------


@dataclass
class ServerRun:
    """One server's numbers on one cluster."""

    server: str
    cluster: str
    qps: float = math.nan
    qps_per_core: float = math.nan
    cpu_busy: float = math.nan  # server cores busy during the max-QPS run
    settings: str = ""
    clients: int = 20
    outstanding: int = 100
    lost: int = 0
    sent: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    latency_rate: float = math.nan
    latency_lost: int = 0
    latency_samples: int = 0
    rss_mib: float = math.nan  # after the max-QPS run
    start_s: float = math.nan  # process start -> first DNS answer
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    client_busy: float = math.nan
    # category -> (QPS, QPS per core, lost) from one run per query category
    by_category: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    # the mix's calibration runs: "-c C -q Q" -> (QPS, QPS per core)
    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)
    # unbound only: latency at the rate dnsd's latency run used (same absolute load)
    same_rate: float = math.nan
    same_rate_p50_ms: float = math.nan
    same_rate_p99_ms: float = math.nan


@dataclass
class DnsdExtras:
    cluster: str
    services: int = 0
    endpoints: int = 0
    emulator_load_s: float = math.nan
    to_first_list_s: float = math.nan
    list_served_s: float = math.nan
    list_end_to_ready_s: float = math.nan
    ready_s: float = math.nan
    first_answer_s: float = math.nan
    rss_ready_mib: float = math.nan
    rss_peak_mib: float = math.nan  # VmHWM 1 s after ready (the initial list's peak)
    rss_empty_mib: float = math.nan
    rss_services_only_mib: float = math.nan
    bytes_per_service: float = math.nan
    bytes_per_endpoint: float = math.nan
    unique_qps: float = math.nan
    unique_qps_per_core: float = math.nan
    unique_queries: int = 0
    unique_lost: int = 0
    # The mix with prepared answers switched off (DNSD_PREPARED=0): every query is a first
    # answer, built by the direct path or the general path.
    noprep_qps: float = math.nan
    noprep_qps_per_core: float = math.nan
    noprep_lost: int = 0
    noprep_by_category: dict[str, tuple[float, float]] = field(default_factory=dict)
    forward_qps: float = math.nan
    forward_qps_per_core: float = math.nan
    forward_lost: int = 0
    watch_changes: int = 0
    watch_timeouts: int = 0
    watch_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (p50, p99)
    workers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----- the emulator's list timing -----------------------------------------------------------


class ListTimer:
    """Records when the in-process emulator starts and finishes serving each list request.

    Wraps the emulator's list handler (a benchmark-only instrument); when the emulator's
    internals change and the hook is missing, the list/processing split is just not reported.
    """

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()
        self.installed = False
        self._orig: Any = None

    def install(self) -> None:
        try:
            from dnsd.devcluster import httpapi
        except ImportError:
            return
        orig = getattr(httpapi.Handler, "_serve_list", None)
        if orig is None:
            return
        timer = self

        def timed(handler: Any, rt: Any, *a: Any, **kw: Any) -> Any:
            start = time.monotonic()
            try:
                return orig(handler, rt, *a, **kw)
            finally:
                with timer.lock:
                    timer.spans.append((getattr(rt, "name", "?"), start, time.monotonic()))

        self._orig = orig
        httpapi.Handler._serve_list = timed  # type: ignore[method-assign,assignment,unused-ignore]
        self.installed = True

    def uninstall(self) -> None:
        if self._orig is not None:
            from dnsd.devcluster import httpapi

            httpapi.Handler._serve_list = self._orig  # type: ignore[method-assign,assignment,unused-ignore]
            self._orig = None

    def reset(self) -> None:
        with self.lock:
            self.spans.clear()

    def window(self) -> tuple[float, float] | None:
        with self.lock:
            if not self.spans:
                return None
            return min(s[1] for s in self.spans), max(s[2] for s in self.spans)


# ----- the benchmark ------------------------------------------------------------------------


class PortTaken(Exception):
    """A server could not bind a port picked as free (taken in the meantime)."""


@dataclass
class Files:
    mix: Path
    unique: Path
    external: Path
    unique_count: int
    categories: dict[str, Path] = field(default_factory=dict)


@dataclass
class Dnsd:
    proc: subprocess.Popen[bytes]
    cfg: srv.DnsdConfig
    started: float
    ready_s: float
    first_answer_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return srv.tree_cpu(self.proc.pid)

    def rss(self) -> int:
        return srv.tree_rss(self.proc.pid)


class Bench:
    def __init__(self, settings: Settings, cores: Cores, workdir: Path) -> None:
        self.s = settings
        self.cores = cores
        self.workdir = workdir
        self.procs = srv.Procs()
        self.devs: list[Any] = []
        self.timer = ListTimer()
        self.upstream_port = 0
        self.runs: list[ServerRun] = []
        self.extras: list[DnsdExtras] = []
        self.env: dict[str, str] = {}
        self.monitors: dict[int, tuple[float, int]] = {}  # kdamond CPU and switches at the start
        self.started = time.monotonic()

    # --- helpers -------------------------------------------------------------------------
    def close(self) -> None:
        self.procs.stop_all()
        for dev in self.devs:
            with contextlib.suppress(Exception):
                dev.stop()
        self.devs.clear()
        self.timer.uninstall()

    def emulator(self, cluster: model.Cluster | None, services_only: bool = False) -> tuple[Any, float]:
        from dnsd.devcluster import DevCluster

        dev = DevCluster("127.0.0.1", 0)
        self.devs.append(dev)
        t0 = time.monotonic()
        if cluster is not None:
            if services_only:
                cluster = model.Cluster(cluster.spec, cluster.namespaces, [
                    model.Service(s.index, s.namespace, s.name, s.headless, s.cluster_ips, s.ports)
                    for s in cluster.services])
            model.load_into(dev, cluster)
        load_s = time.monotonic() - t0
        dev.start()
        return dev, load_s

    def drop_emulator(self, dev: Any) -> None:
        dev.stop()
        if dev in self.devs:
            self.devs.remove(dev)

    def start_dnsd(self, api_url: str, tag: str, workers: int = 1,
                   cpus: list[int] | None = None, env: dict[str, str] | None = None) -> Dnsd:
        """Start dnsd and wait for /ready and a DNS answer; retried on fresh ports when a
        port was taken in between (other programs on a shared machine)."""
        for attempt in range(3):
            try:
                return self._start_dnsd(api_url, tag, workers, cpus, env)
            except PortTaken:
                log(f"dnsd ({tag}): a port was taken, retrying on other ports ({attempt + 1}/3)")
        return self._start_dnsd(api_url, tag, workers, cpus, env)

    def _start_dnsd(self, api_url: str, tag: str, workers: int,
                    cpus: list[int] | None, env: dict[str, str] | None = None) -> Dnsd:
        cfg = srv.DnsdConfig(srv.free_port(), srv.free_port(), srv.free_port(), srv.free_port(),
                             api_url, self.upstream_port)
        corefile = self.workdir / f"Corefile.{tag}"
        corefile.write_text(cfg.corefile())
        self.timer.reset()
        started = time.monotonic()
        proc = self.procs.start(srv.dnsd_argv(corefile, workers), self.workdir / f"dnsd.{tag}.log",
                                cpus=cpus or self.cores.server,
                                env=None if env is None else {**os.environ, **env})
        try:
            ready_s = srv.wait_ready(f"http://127.0.0.1:{cfg.ready_port}/ready", proc,
                                     self.s.ready_timeout, started)
            srv.wait_dns(cfg.dns_port, "dns-version.cluster.local.", "TXT", proc, 60)
        except Exception:
            self.procs.stop(proc)
            tail = (self.workdir / f"dnsd.{tag}.log").read_text(errors="replace")[-2000:]
            if "Address already in use" in tail:
                raise PortTaken(tag) from None
            log(f"dnsd ({tag}) failed to start; log tail:\n{tail}")
            raise
        return Dnsd(proc, cfg, started, ready_s, time.monotonic() - started)

    def stop_dnsd(self, d: Dnsd) -> None:
        self.procs.stop(d.proc)

    def dnsperf(self, port: int, datafile: Path, **kw: Any) -> perf.PerfResult:
        return perf.run(port, datafile, cpu=self.cores.client, **kw)

    def saturate(self, port: int, datafile: Path, sample: Callable[[], float]) -> perf.PerfResult:
        return perf.saturate(port, datafile, calibrate_seconds=self.s.calibrate_seconds,
                             seconds=self.s.seconds, settings=self.s.calibrate,
                             cpu=self.cores.client, sample=sample, log=log)

    def verify(self, port: int, cluster: model.Cluster, expected: dict[tuple[str, str], set[str]],
               seed: int) -> tuple[int, list[str]]:
        """Ask a sample of each query category over TCP and compare with the model."""
        maker = model.QueryMaker(cluster, random.Random(seed))
        checked = 0
        bad: list[str] = []
        for category, _ in model.MIX:
            for _ in range(self.s.verify_per_category):
                name, qtype = maker.draw(category)
                key = (name.lower().rstrip(".") + ".", qtype)
                want = expected.get(key, set())
                want_rc = 3 if category == "nxdomain" else 0
                checked += 1
                try:
                    msg = srv.query_tcp(port, name, qtype)
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    bad.append(f"{name} {qtype}: {type(exc).__name__}")
                    continue
                got = srv.answer_set(msg)
                if msg.rcode() != want_rc or got != want:
                    bad.append(f"{name} {qtype}: rcode {msg.rcode()} (want {want_rc}), "
                               f"{len(got)} records (want {len(want)}; "
                               f"{len(got - want)} unexpected, {len(want - got)} missing)")
        return checked, bad

    # --- files ---------------------------------------------------------------------------
    def files(self, cluster: model.Cluster) -> Files:
        name = cluster.spec.name
        mix = self.workdir / f"queries.{name}.mix.txt"
        model.write_queries(str(mix), model.mix_queries(cluster, self.s.mix_lines, seed=7))
        uq = model.unique_queries(cluster, self.s.unique_lines, seed=11)
        unique = self.workdir / f"queries.{name}.unique.txt"
        model.write_queries(str(unique), uq)
        external = self.workdir / "queries.external.txt"
        model.write_queries(str(external), [(n, "A") for n in model.external_names(self.s.external_names)])
        categories: dict[str, Path] = {}
        maker = model.QueryMaker(cluster, random.Random(13))
        for category, _ in model.MIX:
            path = self.workdir / f"queries.{name}.{category}.txt"
            model.write_queries(str(path), [maker.draw(category) for _ in range(5000)])
            categories[category] = path
        return Files(mix, unique, external, len(uq), categories)

    # --- upstream for the forward test ---------------------------------------------------
    def start_unbound(self, d: Path, lines: Callable[[], Iterator[str]], cpus: list[int],
                      probe: str, check: bool = False) -> tuple[subprocess.Popen[bytes], int, float]:
        """unbound on a fresh port in `d`; returns (process, port, seconds to first answer).
        Retried on other ports when the port was taken in the meantime."""
        for attempt in range(3):
            port = srv.free_port()
            conf = srv.unbound_conf(d, port, lines())
            if check and attempt == 0:
                srv.check_unbound_conf(conf)
                log(f"    unbound.conf: {conf.stat().st_size / MiB:.1f} MiB")
            logfile = d / "unbound.log"
            started = time.monotonic()
            proc = self.procs.start(srv.unbound_argv(conf), logfile, cpus=cpus)
            try:
                srv.wait_dns(port, probe, "A", proc, self.s.ready_timeout)
                return proc, port, time.monotonic() - started
            except RuntimeError:
                self.procs.stop(proc)
                text = logfile.read_text(errors="replace")
                if "bind" not in text and "in use" not in text:
                    log(f"unbound failed to start; log tail:\n{text[-2000:]}")
                    raise
                log(f"unbound: port {port} taken, retrying on another ({attempt + 1}/3)")
        raise RuntimeError("unbound could not bind a port")

    def start_upstream(self) -> None:
        d = self.workdir / "upstream"
        d.mkdir()
        _, self.upstream_port, _ = self.start_unbound(
            d, lambda: model.external_local_data(self.s.external_names), [self.cores.client],
            model.external_names(1)[0])

    # --- dnsd on one cluster ---------------------------------------------------------------
    def dnsd_suite(self, cluster: model.Cluster, files: Files,
                   expected: dict[tuple[str, str], set[str]], last: bool) -> None:
        name = cluster.spec.name
        run = ServerRun("dnsd", name)
        self.runs.append(run)
        ex, dev = self.loaded(cluster)
        try:
            d = self.start_and_measure(dev, name, ex)
            run.start_s = d.first_answer_s

            log(f"[{name}] first answers: {files.unique_count:,} distinct names, each asked once")
            r = self.dnsperf(d.cfg.dns_port, files.unique, seconds=max(self.s.seconds, 30),
                             once=True, clients=20, outstanding=100, sample=d.cpu)
            ex.unique_qps, ex.unique_queries, ex.unique_lost = r.qps, r.completed, r.lost
            ex.unique_qps_per_core = r.completed / r.server_cpu if r.server_cpu > 0 else math.nan

            run.checked, run.mismatches = self.verify(d.cfg.dns_port, cluster, expected, seed=3)
            log(f"[{name}] answers checked against the model: {run.checked - len(run.mismatches)}"
                f"/{run.checked} match")

            self._max_and_latency(run, d.cfg.dns_port, files.mix, d.cpu, d.rss)
            self.by_category(run, d.cfg.dns_port, files, d.cpu)

            log(f"[{name}] forwarded names through cache 30")
            self.dnsperf(d.cfg.dns_port, files.external, seconds=self.s.seconds, once=True,
                         clients=10, outstanding=100)
            fr = self.dnsperf(d.cfg.dns_port, files.external, seconds=self.s.seconds,
                              clients=run.clients, outstanding=run.outstanding, sample=d.cpu)
            ex.forward_qps, ex.forward_lost = fr.qps, fr.lost
            ex.forward_qps_per_core = fr.completed / fr.server_cpu if fr.server_cpu > 0 else math.nan

            if self.s.watch_changes > 0:
                log(f"[{name}] watch latency over {self.s.watch_changes} changes")
                w = watch.measure(dev, cluster, d.cfg.dns_port, self.s.watch_changes, seed=5, log=log)
                ex.watch_changes = len(w.all()) + w.timeouts
                ex.watch_timeouts = w.timeouts
                for kind, values in (*w.latencies.items(), ("all", w.all())):
                    ex.watch_ms[kind] = (1000 * watch.percentile(values, 50),
                                         1000 * watch.percentile(values, 99))
            self.stop_dnsd(d)
            self.no_prepared_run(dev, files, run, ex)

            if last:
                for n in self.s.workers:
                    ex.workers.append(self.workers_run(dev, files, n))
        finally:
            self.drop_emulator(dev)
        self.memory_baselines(cluster, ex)

    def _max_and_latency(self, run: ServerRun, port: int, mix: Path,
                         cpu: Callable[[], float], rss: Callable[[], int]) -> None:
        log(f"[{run.cluster}] {run.server}: warm-up {self.s.warmup:g}s")
        self.dnsperf(port, mix, seconds=self.s.warmup, clients=20, outstanding=100)
        log(f"[{run.cluster}] {run.server}: max QPS")
        r = self.saturate(port, mix, cpu)
        run.qps, run.lost, run.sent, run.settings = r.qps, r.lost, r.sent, r.settings
        run.clients, run.outstanding = r.clients, r.outstanding
        run.calibration = {f"-c {c} -q {q}": (qps, per_core) for c, q, qps, per_core in r.trials}
        run.qps_per_core = r.completed / r.server_cpu if r.server_cpu > 0 else math.nan
        run.cpu_busy = r.server_cpu / r.runtime if r.runtime > 0 else math.nan
        run.client_busy = r.client_cpu / r.runtime if r.runtime > 0 else math.nan
        run.rss_mib = rss() / MiB
        log(f"    {run.qps:,.0f} qps ({run.settings}), server CPU {r.server_cpu:.2f}s, "
            f"lost {run.lost}, RSS {run.rss_mib:.1f} MiB")
        rate = max(1.0, 0.5 * run.qps)
        log(f"[{run.cluster}] {run.server}: latency at {rate:,.0f} qps (50% of max)")
        vfile = self.workdir / f"latency.{run.server}.{run.cluster}.txt"
        lr = self.dnsperf(port, mix, seconds=self.s.seconds, clients=20, outstanding=500,
                          max_qps=rate, verbose_to=vfile)
        with contextlib.suppress(OSError):
            vfile.unlink()
        run.latency_rate = rate
        run.latency_lost = lr.lost
        run.latency_samples = len(lr.latencies)
        run.p50_ms = 1000 * lr.percentile(50)
        run.p99_ms = 1000 * lr.percentile(99)
        log(f"    p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms over {len(lr.latencies):,} "
            f"answers, lost {lr.lost}")

    def by_category(self, run: ServerRun, port: int, files: Files,
                    cpu: Callable[[], float]) -> None:
        """Max rate of each query category alone (5,000 queries of it, looped, after a
        warm-up of a third of the run), with the client settings of the mix's max-QPS run."""
        log(f"[{run.cluster}] {run.server}: QPS by query category")
        for category, path in files.categories.items():
            self.dnsperf(port, path, seconds=self.s.category_seconds / 3, clients=run.clients,
                         outstanding=run.outstanding)
            r = self.dnsperf(port, path, seconds=self.s.category_seconds, clients=run.clients,
                             outstanding=run.outstanding, sample=cpu)
            per_core = r.completed / r.server_cpu if r.server_cpu > 0 else math.nan
            run.by_category[category] = (r.qps, per_core, r.lost)
            log(f"    {category}: {r.qps:,.0f} qps, {per_core:,.0f} per core, lost {r.lost}")

    def no_prepared_run(self, dev: Any, files: Files, run: ServerRun, ex: DnsdExtras) -> None:
        """The mix and each category again on a dnsd whose prepared-answer store is off
        (DNSD_PREPARED=0), with the client settings of the max-QPS run: the cost of first
        answers (what every name costs right after a change behind it)."""
        name = ex.cluster
        log(f"[{name}] dnsd with prepared answers off (DNSD_PREPARED=0)")
        d = self.start_dnsd(dev.url, f"{name}-noprep", env={"DNSD_PREPARED": "0"})
        try:
            self.dnsperf(d.cfg.dns_port, files.mix, seconds=self.s.warmup, clients=20, outstanding=100)
            r = self.dnsperf(d.cfg.dns_port, files.mix, seconds=self.s.seconds,
                             clients=run.clients or 20, outstanding=run.outstanding or 100,
                             sample=d.cpu)
            ex.noprep_qps, ex.noprep_lost = r.qps, r.lost
            ex.noprep_qps_per_core = r.completed / r.server_cpu if r.server_cpu > 0 else math.nan
            for category, path in files.categories.items():
                c = self.dnsperf(d.cfg.dns_port, path, seconds=self.s.category_seconds,
                                 clients=run.clients or 20, outstanding=run.outstanding or 100,
                                 sample=d.cpu)
                per_core = c.completed / c.server_cpu if c.server_cpu > 0 else math.nan
                ex.noprep_by_category[category] = (c.qps, per_core)
            log(f"[{name}] no prepared answers: {ex.noprep_qps:,.0f} QPS, "
                f"{ex.noprep_qps_per_core:,.0f} per core")
        finally:
            self.stop_dnsd(d)

    def workers_run(self, dev: Any, files: Files, n: int) -> dict[str, Any]:
        # Cores other than dnsperf's first; dnsperf's own core only when there are too few.
        spare = [c for c in self.cores.all if c != self.cores.client]
        cpus = sorted((spare + [self.cores.client])[: max(1, min(n, len(self.cores.all)))])
        row: dict[str, Any] = {"workers": n, "cpus": cpus}
        shared = self.cores.client in cpus
        log(f"[workers] dnsd -workers {n} on cores {cpus}")
        try:
            d = self.start_dnsd(dev.url, f"workers{n}", workers=n, cpus=cpus)
        except Exception as exc:  # noqa: BLE001
            row["status"] = f"not measured: -workers not available (dnsd did not start: {exc})"
            return row
        try:
            # Each worker binds the DNS port (SO_REUSEPORT) once its own first list is
            # applied: wait until N sockets are bound.
            deadline = time.monotonic() + self.s.ready_timeout
            while (srv.udp_sockets(d.cfg.dns_port) < n and time.monotonic() < deadline
                   and len(srv.descendants(d.pid)) >= n):
                time.sleep(0.1)
            if srv.udp_sockets(d.cfg.dns_port) < n:
                time.sleep(3.0)  # late workers
            procs = len(srv.descendants(d.pid))
            sockets = srv.udp_sockets(d.cfg.dns_port)
            row["processes"], row["sockets"] = procs, sockets
            row["all_ready_s"] = time.monotonic() - d.started
            if procs < n or sockets < n:
                row["status"] = (f"not measured: -workers not available ({procs} processes, "
                                 f"{sockets} sockets on the DNS port)")
                return row
            self.dnsperf(d.cfg.dns_port, files.mix, seconds=self.s.warmup, clients=20,
                         outstanding=100)
            r = self.saturate(d.cfg.dns_port, files.mix, d.cpu)
            row.update(status="ok", qps=r.qps, lost=r.lost, server_cpu=r.server_cpu,
                       qps_per_core=r.completed / r.server_cpu if r.server_cpu > 0 else math.nan,
                       cpu_busy=r.server_cpu / r.runtime if r.runtime > 0 else math.nan,
                       rss_mib=d.rss() / MiB, shared_core=shared, settings=r.settings)
            log(f"    {r.qps:,.0f} qps, server CPU {r.server_cpu:.2f}s")
        finally:
            self.stop_dnsd(d)
        return row

    def start_and_measure(self, dev: Any, name: str, ex: DnsdExtras) -> Dnsd:
        """Start dnsd on `dev`; record its start-up timings and its RSS 1 s after ready."""
        log(f"[{name}] starting dnsd")
        d = self.start_dnsd(dev.url, name)
        ex.ready_s, ex.first_answer_s = d.ready_s, d.first_answer_s
        window = self.timer.window()
        if window is not None:
            ex.to_first_list_s = window[0] - d.started
            ex.list_served_s = window[1] - window[0]
            ex.list_end_to_ready_s = d.started + d.ready_s - window[1]
        else:
            ex.notes.append("list timing hook unavailable")
        time.sleep(1.0)
        ex.rss_ready_mib = d.rss() / MiB
        ex.rss_peak_mib = srv.tree_hwm(d.pid) / MiB
        log(f"[{name}] ready in {d.ready_s:.2f}s, answering at {d.first_answer_s:.2f}s, "
            f"RSS {ex.rss_ready_mib:.1f} MiB (peak {ex.rss_peak_mib:.1f} MiB)")
        return d

    def loaded(self, cluster: model.Cluster) -> tuple[DnsdExtras, Any]:
        """The cluster loaded into an in-process emulator, and the extras row it starts."""
        name = cluster.spec.name
        ex = DnsdExtras(name, len(cluster.services), cluster.endpoint_count)
        self.extras.append(ex)
        log(f"[{name}] loading {len(cluster.services):,} services / {cluster.endpoint_count:,} "
            "endpoints into the emulator (in-process)")
        dev, ex.emulator_load_s = self.emulator(cluster)
        return ex, dev

    def memory_suite(self, cluster: model.Cluster) -> None:
        """--memory-only: start-up timings, RSS at ready and the per-object memory figures,
        with dnsd started exactly as in the full suite (no dnsperf, no unbound comparison)."""
        ex, dev = self.loaded(cluster)
        try:
            d = self.start_and_measure(dev, cluster.spec.name, ex)
            self.stop_dnsd(d)
        finally:
            self.drop_emulator(dev)
        self.memory_baselines(cluster, ex)

    def memory_baselines(self, cluster: model.Cluster, ex: DnsdExtras) -> None:
        """dnsd's RSS 1 s after ready on an empty cluster and on the services alone."""
        for label, source, services_only in (("empty", None, False),
                                             ("services only", cluster, True)):
            log(f"[{cluster.spec.name}] memory baseline: {label}")
            dev, _ = self.emulator(source, services_only=services_only)
            try:
                d = self.start_dnsd(dev.url, f"{cluster.spec.name}.{label.replace(' ', '-')}")
                time.sleep(1.0)
                rss = d.rss() / MiB
                self.stop_dnsd(d)
            finally:
                self.drop_emulator(dev)
            if services_only:
                ex.rss_services_only_mib = rss
            else:
                ex.rss_empty_mib = rss
        if ex.services:
            ex.bytes_per_service = (ex.rss_services_only_mib - ex.rss_empty_mib) * MiB / ex.services
        if ex.endpoints:
            ex.bytes_per_endpoint = (ex.rss_ready_mib - ex.rss_services_only_mib) * MiB / ex.endpoints

    # --- unbound on one cluster ------------------------------------------------------------
    def unbound_suite(self, cluster: model.Cluster, files: Files,
                      expected: dict[tuple[str, str], set[str]]) -> None:
        name = cluster.spec.name
        run = ServerRun("unbound", name)
        self.runs.append(run)
        d = self.workdir / f"unbound.{name}"
        d.mkdir()
        log(f"[{name}] starting unbound with the cluster as local-data")
        proc, port, run.start_s = self.start_unbound(
            d, lambda: model.unbound_local_data(cluster), self.cores.server,
            cluster.services[0].fqdn, check=True)
        try:
            run.checked, run.mismatches = self.verify(port, cluster, expected, seed=3)
            log(f"[{name}] unbound answers checked against the model: "
                f"{run.checked - len(run.mismatches)}/{run.checked} match")
            self._max_and_latency(run, port, files.mix, lambda: srv.tree_cpu(proc.pid),
                                  lambda: srv.tree_rss(proc.pid))
            self.by_category(run, port, files, lambda: srv.tree_cpu(proc.pid))
            dnsd_run = next((r for r in self.runs if r.server == "dnsd" and r.cluster == name), None)
            if dnsd_run is not None and not math.isnan(dnsd_run.latency_rate):
                rate = dnsd_run.latency_rate
                log(f"[{name}] unbound: latency at dnsd's 50% rate, {rate:,.0f} qps")
                vfile = self.workdir / f"latency.unbound.{name}.same-rate.txt"
                lr = self.dnsperf(port, files.mix, seconds=self.s.seconds, clients=20,
                                  outstanding=500, max_qps=rate, verbose_to=vfile)
                with contextlib.suppress(OSError):
                    vfile.unlink()
                run.same_rate = rate
                run.same_rate_p50_ms = 1000 * lr.percentile(50)
                run.same_rate_p99_ms = 1000 * lr.percentile(99)
        finally:
            self.procs.stop(proc)

    # --- everything --------------------------------------------------------------------------
    def run(self) -> None:
        self.start_upstream()
        for i, size in enumerate(self.s.sizes):
            cluster = model.generate(model.SPECS[size])
            if self.s.memory_only:
                self.memory_suite(cluster)
                continue
            files = self.files(cluster)
            expected = model.expected_answers(cluster)
            self.dnsd_suite(cluster, files, expected, last=i == len(self.s.sizes) - 1)
            self.unbound_suite(cluster, files, expected)


# ----- report -------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def _ratio(a: float, b: float, digits: int = 2) -> str:
    if any(isinstance(x, float) and math.isnan(x) for x in (a, b)) or not b:
        return "n/a"
    return f"{a / b:.{digits}f}x"


def table(headers: list[str], rows: list[list[str]], numeric_from: int = 2) -> str:
    """A Markdown table; columns from `numeric_from` on are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = [i >= numeric_from for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                         for w, r in zip(widths, right, strict=True)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def comparison_table(runs: list[ServerRun]) -> str:
    headers = ["cluster", "server", "QPS", "QPS/core", "cores busy", "p50 ms @50%", "p99 ms @50%",
               "lost", "RSS MiB"]
    rows: list[list[str]] = []
    for cluster in dict.fromkeys(r.cluster for r in runs):
        by = {r.server: r for r in runs if r.cluster == cluster}
        for r in by.values():
            rows.append([cluster, r.server, _fmt(r.qps), _fmt(r.qps_per_core), _fmt(r.cpu_busy, 2),
                         _fmt(r.p50_ms, 3), _fmt(r.p99_ms, 3),
                         f"{r.lost:,}/{r.sent:,} + {r.latency_lost:,}", _fmt(r.rss_mib, 1)])
        if "dnsd" in by and "unbound" in by:
            a, b = by["dnsd"], by["unbound"]
            rows.append([cluster, "dnsd/unbound", _ratio(a.qps, b.qps),
                         _ratio(a.qps_per_core, b.qps_per_core), "", _ratio(a.p50_ms, b.p50_ms), _ratio(a.p99_ms, b.p99_ms), "",
                         _ratio(a.rss_mib, b.rss_mib)])
    return table(headers, rows)


def category_table(runs: list[ServerRun]) -> str:
    headers = ["cluster", "category", "share", "dnsd QPS", "dnsd QPS/core", "unbound QPS",
               "unbound QPS/core", "dnsd/unbound per core"]
    rows: list[list[str]] = []
    nan = (math.nan, math.nan, 0)
    for cluster in dict.fromkeys(r.cluster for r in runs):
        by = {r.server: r for r in runs if r.cluster == cluster}
        d = by["dnsd"].by_category if "dnsd" in by else {}
        u = by["unbound"].by_category if "unbound" in by else {}
        for category, share in model.MIX:
            dq, dc, _ = d.get(category, nan)
            uq, uc, _ = u.get(category, nan)
            rows.append([cluster, category, f"{100 * share:.0f}%", _fmt(dq), _fmt(dc), _fmt(uq),
                         _fmt(uc), _ratio(dc, uc, 3)])
    return table(headers, rows)


def calibration_table(runs: list[ServerRun]) -> str:
    """QPS per core of both servers under each calibration setting: the same client load for
    both (the headline compares each server at its own best setting)."""
    headers = ["cluster", "dnsperf", "dnsd QPS", "dnsd QPS/core", "unbound QPS",
               "unbound QPS/core", "dnsd/unbound per core"]
    rows: list[list[str]] = []
    nan = (math.nan, math.nan)
    for cluster in dict.fromkeys(r.cluster for r in runs):
        by = {r.server: r for r in runs if r.cluster == cluster}
        d = by["dnsd"].calibration if "dnsd" in by else {}
        u = by["unbound"].calibration if "unbound" in by else {}
        for setting in dict.fromkeys([*d, *u]):
            dq, dc = d.get(setting, nan)
            uq, uc = u.get(setting, nan)
            rows.append([cluster, setting, _fmt(dq), _fmt(dc), _fmt(uq), _fmt(uc), _ratio(dc, uc, 3)])
    return table(headers, rows)


def extras_row(extras: list[DnsdExtras], label: str, fn: Callable[[DnsdExtras], str]) -> list[str]:
    """A row of a dnsd-only table: ``label``, then ``fn`` of each cluster's measurements."""
    return [label] + [fn(e) for e in extras]


def memory_rows(extras: list[DnsdExtras], after_ready: list[list[str]] | None = None,
                peak: bool = False) -> list[list[str]]:
    """The start-up and memory rows of the full report and of the --memory-only one: the
    timings up to /ready, ``after_ready``, then RSS (``peak``: with the VmHWM row) and bytes
    per object."""

    def row(label: str, fn: Callable[[DnsdExtras], str]) -> list[str]:
        return extras_row(extras, label, fn)

    rows = [
        row("services / endpoint addresses", lambda e: f"{e.services:,} / {e.endpoints:,}"),
        row("start -> first list request (s)", lambda e: _fmt(e.to_first_list_s, 2)),
        row("list requests served (s)", lambda e: _fmt(e.list_served_s, 2)),
        row("list returned -> /ready 200 (s)", lambda e: _fmt(e.list_end_to_ready_s, 2)),
        row("start -> /ready 200 (s)", lambda e: _fmt(e.ready_s, 2)),
        *(after_ready or []),
        row("RSS at ready (MiB)", lambda e: _fmt(e.rss_ready_mib, 1)),
    ]
    if peak:
        rows.append(row("peak RSS up to then (VmHWM, MiB)", lambda e: _fmt(e.rss_peak_mib, 1)))
    return rows + [
        row("RSS empty cluster / services only (MiB)",
            lambda e: f"{_fmt(e.rss_empty_mib, 1)} / {_fmt(e.rss_services_only_mib, 1)}"),
        row("bytes per Service", lambda e: _fmt(e.bytes_per_service)),
        row("bytes per endpoint address", lambda e: _fmt(e.bytes_per_endpoint)),
    ]


def extras_table(extras: list[DnsdExtras], runs: list[ServerRun]) -> str:
    headers = ["measurement"] + [e.cluster for e in extras]
    unbound_start = {r.cluster: r.start_s for r in runs if r.server == "unbound"}

    def row(label: str, fn: Callable[[DnsdExtras], str]) -> list[str]:
        return extras_row(extras, label, fn)

    def watch_cell(kind: str) -> Callable[[DnsdExtras], str]:
        def cell(e: DnsdExtras) -> str:
            if kind not in e.watch_ms:
                return "not measured"
            p50, p99 = e.watch_ms[kind]
            return f"{_fmt(p50, 1)} / {_fmt(p99, 1)}"
        return cell

    rows = [
        *memory_rows(extras, after_ready=[
            row("start -> first DNS answer (s)", lambda e: _fmt(e.first_answer_s, 2)),
            row("unbound start -> first answer (s)",
                lambda e: _fmt(unbound_start.get(e.cluster, math.nan), 2)),
        ]),
        row("first-answer QPS (distinct names, once each)",
            lambda e: f"{_fmt(e.unique_qps)} ({e.unique_queries:,} q, lost {e.unique_lost})"),
        row("first-answer QPS per core", lambda e: _fmt(e.unique_qps_per_core)),
        row("no prepared answers: mix QPS (DNSD_PREPARED=0)",
            lambda e: f"{_fmt(e.noprep_qps)} (lost {e.noprep_lost})"),
        row("no prepared answers: mix QPS per core", lambda e: _fmt(e.noprep_qps_per_core)),
        row("no prepared answers: QPS per core by category",
            lambda e: ", ".join(f"{c} {_fmt(v[1])}" for c, v in e.noprep_by_category.items())),
        row("forwarded cache-hit QPS", lambda e: f"{_fmt(e.forward_qps)} (lost {e.forward_lost})"),
        row("forwarded cache-hit QPS per core", lambda e: _fmt(e.forward_qps_per_core)),
        row("watch -> new answer p50 / p99 ms (all)", watch_cell("all")),
        row("  ClusterIP change (delete + create)", watch_cell("service")),
        row("  EndpointSlice address change", watch_cell("slice")),
        row("  changes / timeouts", lambda e: f"{e.watch_changes} / {e.watch_timeouts}"),
    ]
    for e in extras:
        for w in e.workers:
            label = f"-workers {w['workers']} QPS (cores {','.join(map(str, w['cpus']))})"
            cells = []
            for e2 in extras:
                if e2 is not e:
                    cells.append("")
                elif w.get("status") != "ok":
                    cells.append(str(w.get("status")))
                else:
                    note = " dnsperf shares a core" if w.get("shared_core") else ""
                    cells.append(f"{_fmt(w['qps'])} ({_fmt(w['qps_per_core'])}/core, "
                                 f"{_fmt(w['cpu_busy'], 2)} cores busy, lost {w['lost']}){note}")
            rows.append([label, *cells])
    return table(headers, rows, numeric_from=len(headers))


def environment(cores: Cores) -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO)
            return (res.stdout or res.stderr).strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    model_name = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio (no uvloop)"
    if os.environ.get("DNSD_NO_UVLOOP"):
        loop = "asyncio (DNSD_NO_UVLOOP set)"
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": f"{model_name}, {os.cpu_count()} cores",
        "cores": f"server on {cores.server}, dnsperf and this process on {cores.client}"
        + (f" ({cores.note})" if cores.note else ""),
        "python": f"{platform.python_implementation()} {platform.python_version()}, {loop}",
        "dnsd": out([sys.executable, "-m", "dnsd", "-version"]).splitlines()[0]
        + f", commit {out(['git', 'rev-parse', '--short', 'HEAD'])}"
        + (" + uncommitted changes" if dirty else ""),
        "dnsperf": out(["dnsperf", "-h"]).splitlines()[-1] if out(["dnsperf", "-h"]) else "?",
        "unbound": out(["unbound", "-V"]).splitlines()[0],
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def kernel_monitors() -> dict[int, tuple[float, int]]:
    """CPU seconds and context switches of the kernel's DAMON threads (``kdamond``), by pid.

    Where DAMON watches physical memory (some VMs run it for the host's memory management),
    each of its samples runs on one of our two cores for about a millisecond, stopping the
    server or dnsperf: the latency runs' p99 sees it (docs/benchmarks.md)."""
    found: dict[int, tuple[float, int]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "comm").read_text().startswith("kdamond"):
                continue
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            status = (proc / "status").read_text().splitlines()
        except OSError:
            continue
        switches = sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
        found[int(proc.name)] = ((int(stat[11]) + int(stat[12])) / tick, switches)
    return found


def monitor_line(before: dict[int, tuple[float, int]], seconds: float) -> str:
    """The report line on the kdamond threads' work since ``before``."""
    after = kernel_monitors()
    if not after:
        return "- kernel memory monitor (DAMON kdamond): not running"
    cpu = sum(c - before.get(pid, (0.0, 0))[0] for pid, (c, _) in after.items())
    runs = sum(n - before.get(pid, (0.0, 0))[1] for pid, (_, n) in after.items())
    each = f", {1000 * cpu / runs:.1f} ms each" if runs else ""
    return (f"- kernel memory monitor (DAMON kdamond) during the run: {cpu:.1f} s of CPU in "
            f"{runs:,} runs over {seconds:,.0f} s{each}")


def environment_lines(bench: Bench) -> list[str]:
    """The reports' "Environment" section: what ``environment`` found, the load at the end and
    what the kernel's memory monitor took."""
    return ["## Environment", "", *(f"- {k}: {v}" for k, v in bench.env.items()),
            f"- load average at end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
            monitor_line(bench.monitors, time.monotonic() - bench.started)]


def notes_lines(bench: Bench) -> list[str]:
    """The notes each cluster's dnsd-only measurements left, one line each."""
    return [f"- {e.cluster}: {n}" for e in bench.extras for n in e.notes]


def report(bench: Bench, settings: Settings) -> str:
    lines = [
        *environment_lines(bench),
        f"- runs: {settings.seconds:g} s per measured run, query mix of {settings.mix_lines:,} "
        f"lines ({', '.join(f'{c} {int(100 * s)}%' for c, s in model.MIX)})",
        "", "## dnsd vs unbound", "",
        comparison_table(bench.runs), "",
        "lost = queries lost in the max-QPS run / queries sent there + lost in the 50% run.",
        "", "## QPS by query category (each category alone)", "",
        category_table(bench.runs), "",
        f"## The mix at each calibration setting ({settings.calibrate_seconds:g} s each)", "",
        calibration_table(bench.runs), "",
        "## dnsd only", "",
        extras_table(bench.extras, bench.runs), "",
    ]
    for r in bench.runs:
        if r.mismatches:
            lines.append(f"- {r.server} on {r.cluster}: {len(r.mismatches)} of {r.checked} checked "
                         f"answers differ from the model, e.g. {r.mismatches[0]}")
        elif r.checked:
            lines.append(f"- {r.server} on {r.cluster}: all {r.checked} checked answers match the model")
        if r.server == "unbound" and not math.isnan(r.same_rate):
            lines.append(f"- unbound on {r.cluster} at dnsd's 50% rate ({r.same_rate:,.0f} qps): "
                         f"p50 {r.same_rate_p50_ms:.3f} ms, p99 {r.same_rate_p99_ms:.3f} ms")
        if r.server == "unbound" and not math.isnan(r.cpu_busy) and r.cpu_busy < 0.85:
            lines.append(f"- unbound on {r.cluster} used {r.cpu_busy:.2f} of its core at max QPS: "
                         "the single dnsperf core is the limit, so its QPS is a lower bound")
        if r.server == "dnsd" and not math.isnan(r.cpu_busy) and r.cpu_busy < 0.85:
            lines.append(f"- dnsd on {r.cluster} used only {r.cpu_busy:.2f} of its core at max QPS "
                         "(another process took the core, or the client was the limit)")
    lines.extend(notes_lines(bench))
    return "\n".join(lines)


def memory_report(bench: Bench) -> str:
    """The --memory-only report: the start-up and memory rows of the dnsd-only table."""
    headers = ["measurement"] + [e.cluster for e in bench.extras]
    lines = [*environment_lines(bench),
             "", "## dnsd start-up and memory", "",
             table(headers, memory_rows(bench.extras, peak=True), numeric_from=len(headers)), "",
             *notes_lines(bench)]
    return "\n".join(lines)


# ----- main ---------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small cluster, 5 s runs (default)")
    mode.add_argument("--full", action="store_true", help="small and large clusters, 10 s runs")
    p.add_argument("--sizes", help="comma-separated clusters to run: small,large")
    p.add_argument("--seconds", type=float, help="length of each measured dnsperf run")
    p.add_argument("--watch-changes", type=int, help="changes for the watch-latency test (0: skip)")
    p.add_argument("--workers", help="comma-separated -workers values to try ('' to skip)")
    p.add_argument("--json", type=Path, help="also write every number here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    p.add_argument("--memory-only", action="store_true",
                   help="only start-up timings and memory (RSS at ready, bytes per Service and "
                        "per endpoint address); no dnsperf runs, no unbound comparison")
    args = p.parse_args(argv)

    needed = ("unbound", "taskset") if args.memory_only else ("dnsperf", "unbound", "unbound-checkconf", "taskset")
    missing = [t for t in needed if not shutil.which(t)]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install dnsperf unbound util-linux)",
              file=sys.stderr)
        return 2
    settings = settings_for(args)
    unknown = [s for s in settings.sizes if s not in model.SPECS]
    if unknown:
        print(f"unknown cluster size(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    cores = pick_cores()
    # This process hosts the emulator and the poller: keep it (and its threads, created
    # below) off the server's core.
    os.sched_setaffinity(0, {cores.client})
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with INT ignored
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    workdir = Path(tempfile.mkdtemp(prefix="dnsd-bench-"))
    bench = Bench(settings, cores, workdir)
    bench.env = environment(cores)
    bench.monitors, bench.started = kernel_monitors(), time.monotonic()
    bench.timer.install()
    started = time.monotonic()
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: stopping every process started")
        status = 130
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        status = 1
        raise
    finally:
        bench.close()
        log(f"total {time.monotonic() - started:.0f}s")
        if settings.memory_only and bench.extras:
            text = memory_report(bench)
            print(text)
            if args.json:
                args.json.write_text(json.dumps({
                    "environment": bench.env, "settings": asdict(settings),
                    "dnsd": [asdict(e) for e in bench.extras],
                }, indent=2, default=str))
        elif bench.runs:
            text = report(bench, settings)
            print(text)
            if args.json:
                args.json.write_text(json.dumps({
                    "environment": bench.env, "settings": asdict(settings),
                    "runs": [asdict(r) for r in bench.runs],
                    "dnsd": [asdict(e) for e in bench.extras],
                }, indent=2, default=str))
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
