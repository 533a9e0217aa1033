"""Running dnsperf and reading its output.

dnsperf's summary gives QPS, completed and lost queries; its `-v` mode prints one line per
answered query, ``> RCODE NAME TYPE SECONDS``, which is where the latency percentiles come
from (dnsperf itself only prints the average and standard deviation).
"""

from __future__ import annotations

import re
import resource
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


@dataclass
class PerfResult:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    runtime: float = 0.0
    avg_latency: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, with -v
    server_cpu: float = 0.0  # the `sample` difference (server CPU seconds)
    client_cpu: float = 0.0  # dnsperf's own CPU seconds
    settings: str = ""
    clients: int = 0
    outstanding: int = 0
    # saturate(): each calibration run as (clients, outstanding, QPS, answers per server
    # CPU second: NaN without a `sample`)
    trials: list[tuple[int, int, float, float]] = field(default_factory=list)

    @property
    def lost_pct(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = min(len(data) - 1, max(0, round(p / 100.0 * (len(data) - 1))))
        return data[k]


_NUM = r"([0-9.]+)"


def parse(text: str) -> PerfResult:
    r = PerfResult()
    patterns: dict[str, str] = {
        "sent": rf"Queries sent:\s+{_NUM}",
        "completed": rf"Queries completed:\s+{_NUM}",
        "lost": rf"Queries lost:\s+{_NUM}",
        "qps": rf"Queries per second:\s+{_NUM}",
        "runtime": rf"Run time \(s\):\s+{_NUM}",
        "avg_latency": rf"Average Latency \(s\):\s+{_NUM}",
    }
    for attr, pat in patterns.items():
        m = re.search(pat, text)
        if m:
            value = float(m.group(1))
            setattr(r, attr, int(value) if attr in ("sent", "completed", "lost") else value)
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        for code, count in re.findall(r"([A-Z]+) (\d+) \(", m.group(1)):
            r.rcodes[code] = int(count)
    return r


def parse_verbose(path: Path) -> list[float]:
    """Latencies (s) of the `> RCODE NAME TYPE SECONDS` lines; timeouts carry no number."""
    out: list[float] = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("> "):
                continue
            parts = line.split()
            try:
                out.append(float(parts[-1]))
            except (ValueError, IndexError):
                continue
    return out


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(
    port: int,
    datafile: Path,
    *,
    seconds: float,
    clients: int = 20,
    outstanding: int = 500,
    max_qps: float | None = None,
    once: bool = False,
    verbose_to: Path | None = None,
    cpu: int | None = None,
    timeout: float = 2.0,
    sample: Callable[[], float] | None = None,
) -> PerfResult:
    """One dnsperf run (UDP, 127.0.0.1), optionally pinned to core `cpu`.

    `sample` is called right before and after the run (e.g. the server's CPU seconds); the
    difference lands in `server_cpu`.
    """
    argv: list[str] = [
        "dnsperf", "-s", HOST, "-p", str(port), "-d", str(datafile), "-m", "udp",
        "-c", str(clients), "-q", str(outstanding), "-t", f"{timeout:g}",
        "-l", f"{seconds:g}", "-T", "1",
    ]
    if once:
        argv += ["-n", "1"]
    if max_qps:
        argv += ["-Q", str(int(max_qps))]
    if verbose_to is not None:
        argv += ["-v"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = sample() if sample else 0.0
    client_before = _children_cpu()
    if verbose_to is not None:
        with open(verbose_to, "w") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True,
                                  timeout=seconds + timeout + 60)
        text = Path(verbose_to).read_text(errors="replace")
    else:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout + 60)
        text = proc.stdout
    after = sample() if sample else 0.0
    client_cpu = _children_cpu() - client_before
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    result = parse(text)
    result.server_cpu = after - before
    result.client_cpu = client_cpu
    result.clients, result.outstanding = clients, outstanding
    result.settings = f"-c {clients} -q {outstanding}" + (f" -Q {int(max_qps)}" if max_qps else "")
    if verbose_to is not None:
        result.latencies = parse_verbose(verbose_to)
    return result


def saturate(
    port: int,
    datafile: Path,
    *,
    calibrate_seconds: float,
    seconds: float,
    settings: Sequence[tuple[int, int]],
    cpu: int | None,
    sample: Callable[[], float] | None,
    log: Callable[[str], None],
) -> PerfResult:
    """Max QPS: short runs over (clients, outstanding) settings; the best one (the lowest
    loss among those within 3% of the top QPS, of the runs that lost under 0.5%) is then run
    for `seconds`.  The result also keeps every calibration run's QPS and QPS per server core
    (`trials`), which compare servers at the same client load."""
    trials: list[tuple[PerfResult, int, int]] = []
    for clients, outstanding in settings:
        r = run(port, datafile, seconds=calibrate_seconds, clients=clients,
                outstanding=outstanding, cpu=cpu, sample=sample)
        log(f"    calibrate -c {clients} -q {outstanding}: {r.qps:,.0f} qps, lost {r.lost_pct:.2f}%")
        trials.append((r, clients, outstanding))
    good = [t for t in trials if t[0].lost_pct < 0.5] or trials
    top = max(t[0].qps for t in good)
    best = min((t for t in good if t[0].qps >= 0.97 * top), key=lambda t: t[0].lost_pct)
    _, clients, outstanding = best
    result = run(port, datafile, seconds=seconds, clients=clients, outstanding=outstanding,
                 cpu=cpu, sample=sample)
    nan = float("nan")
    result.trials = [(c, q, r.qps, r.completed / r.server_cpu if sample and r.server_cpu > 0 else nan)
                     for r, c, q in trials]
    return result
