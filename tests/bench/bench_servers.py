"""Starting, probing, measuring and stopping the processes under test (dnsd and unbound).

Every process is started in its own session, recorded in a `Procs` registry, and stopped by
its own process-group id (SIGTERM, then SIGKILL), so nothing outlives the benchmark even on
Ctrl-C or an exception.  CPU time and memory come from /proc.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


_GIVEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, never the same twice in a run.

    Picked at random below the kernel's ephemeral range, so that outgoing connections of
    other programs on a shared machine do not take it between this check and the bind.
    """
    low = _ephemeral_low()
    lo, hi = (10000, low - 1) if low > 12000 else (10000, 65535)
    for _ in range(1000):
        port = random.randint(lo, hi)
        if port in _GIVEN:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s1, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s2:
                s1.bind((HOST, port))
                s2.bind((HOST, port))
        except OSError:
            continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port")


class Procs:
    """The processes this benchmark started; `stop_all()` ends them (own ids only)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], log: Path, cpus: Iterable[int] | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        cmd = list(argv)
        if cpus is not None:
            cmd = ["taskset", "-c", ",".join(str(c) for c in cpus), *cmd]
        out = open(log, "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group we created for `proc`, SIGKILL it if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Workers forked by the server are in the same group; make sure none is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=3.0)


# ----- /proc --------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return list(dict.fromkeys(out))


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


def rss_bytes(pids: Iterable[int], field: str = "VmRSS") -> int:
    """Sum of VmRSS (shared pages of forked workers are counted in each); ``field="VmHWM"``
    for the peak."""
    total = 0
    prefix = field + ":"
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(prefix):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    return cpu_seconds(descendants(pid))


def tree_rss(pid: int) -> int:
    return rss_bytes(descendants(pid))


def tree_hwm(pid: int) -> int:
    """Peak RSS (VmHWM) summed over the process tree."""
    return rss_bytes(descendants(pid), "VmHWM")


# ----- probes -------------------------------------------------------------------------------


def query(port: int, name: str, qtype: str, timeout: float = 1.0) -> dns.message.Message:
    q = dns.message.make_query(name, qtype)
    return dns.query.udp(q, HOST, port=port, timeout=timeout)


def answer_set(msg: dns.message.Message) -> set[str]:
    """The answer section's rdata texts (lower case), for the question's type only."""
    qtype = msg.question[0].rdtype
    return {rd.to_text().lower() for rrset in msg.answer if rrset.rdtype == qtype for rd in rrset}


def wait_dns(port: int, name: str, qtype: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Poll until the server answers (any rcode but REFUSED/SERVFAIL); returns the time it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with contextlib.suppress(Exception):
            msg = query(port, name, qtype, timeout=0.2)
            if msg.rcode() not in (dns.rcode.REFUSED, dns.rcode.SERVFAIL):
                return time.monotonic() - start
        time.sleep(0.02)
    raise TimeoutError(f"no DNS answer on port {port} after {timeout:.0f}s")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float, started: float) -> float:
    """Poll the ready plugin every 10 ms; returns seconds from `started` to the first 200."""
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"dnsd exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{url} not 200 after {timeout:.0f}s")


# ----- configurations -----------------------------------------------------------------------


@dataclass
class DnsdConfig:
    dns_port: int
    ready_port: int
    health_port: int
    metrics_port: int
    api_url: str
    upstream_port: int

    def corefile(self) -> str:
        # The repository's Corefile.example (kubeadm's default with cluster.local kept out of
        # the cache), with every listener on 127.0.0.1 and the upstream a local unbound.
        return f"""\
.:{self.dns_port} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{self.health_port}
    ready 127.0.0.1:{self.ready_port}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       endpoint {self.api_url}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
       startup_timeout 300s
    }}
    prometheus 127.0.0.1:{self.metrics_port}
    forward . 127.0.0.1:{self.upstream_port} {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success cluster.local
       disable denial cluster.local
    }}
    loop
    reload
    loadbalance
}}
"""


def dnsd_argv(corefile: Path, workers: int = 1) -> list[str]:
    argv = [sys.executable, "-m", "dnsd", "-conf", str(corefile), "-quiet"]
    if workers != 1:
        argv += ["-workers", str(workers)]
    return argv


def unbound_conf(workdir: Path, port: int, lines: Iterable[str]) -> Path:
    """A foreground, single-thread, unprivileged unbound on 127.0.0.1:`port`."""
    conf = workdir / "unbound.conf"
    with open(conf, "w") as f:
        f.write(f"""\
server:
  interface: {HOST}
  port: {port}
  do-ip6: no
  do-tcp: yes
  num-threads: 1
  chroot: ""
  username: ""
  directory: "{workdir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  log-queries: no
  module-config: "iterator"
  local-zone: "." refuse
""")
        for line in lines:
            f.write(f"  {line}\n")
        f.write("remote-control:\n  control-enable: no\n")
    return conf


def unbound_argv(conf: Path) -> list[str]:
    return ["unbound", "-d", "-c", str(conf)]


def check_unbound_conf(conf: Path) -> None:
    res = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"unbound-checkconf: {res.stdout}{res.stderr}")


def rdtype(text: str) -> int:
    return int(dns.rdatatype.from_text(text))


def query_tcp(port: int, name: str, qtype: str, timeout: float = 2.0) -> dns.message.Message:
    """A query over TCP: full answers for the record-set checks (UDP truncates big sets)."""
    q = dns.message.make_query(name, qtype)
    return dns.query.tcp(q, HOST, port=port, timeout=timeout)


def udp_sockets(port: int) -> int:
    """How many UDP sockets are bound to 127.0.0.1:`port` (one per SO_REUSEPORT worker)."""
    local = f"0100007F:{port:04X}"
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1 and parts[1] == local:
                count += 1
    return count
