"""Floods against a dnsd process: UDP at twice the rate it can answer, and 1,000 idle or slow
TCP connections (slowloris).  The process must not crash, its memory must stay bounded, and
real clients (a probing resolver over UDP, new TCP clients) must keep getting answers.

The flood lasts ``DNSD_FLOOD_SECONDS`` (default 20).  The long run::

    DNSD_FLOOD_SECONDS=60 python -m pytest -q -s tests/reliability/test_floods.py -k udp_flood

The UDP flood comes from ``dnsperf -Q <2 x max rate>`` when dnsperf is installed (a Python
sender cannot reach twice the rate dnsd answers), with dnsd and dnsperf each pinned to its own
core when there are two; else from a Python sender.  ``DNSD_FLOOD_SENDER=python`` (or
``dnsperf``) forces one.

The test process holds up to 1,000 client sockets at once and dnsd as many: the soft
RLIMIT_NOFILE is raised to the hard limit (dnsd inherits it) and the test is skipped if that
is still below 2,500.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from k8s_support import port, service, wait_for
from socket_support import frame, frame_exchange, raw_query, tcp_connect, udp_client
from support import ROOT, Dnsd, query

from dnsd.devcluster import DevCluster

FLOOD_SECONDS = float(os.environ.get("DNSD_FLOOD_SECONDS", "20"))
MEMORY_LIMIT_MB = 50
FLOOD_SENDER = os.environ.get("DNSD_FLOOD_SENDER", "auto")  # auto | dnsperf | python
ZONE_FILE = str(ROOT / "zones" / "example.org")


@pytest.fixture(scope="module", autouse=True)
def enough_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2500:
        pytest.skip("RLIMIT_NOFILE too low for 1,000 connections on each side")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[DevCluster]:
    c = DevCluster().start()
    c.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}})
    for i in range(20):
        c.apply(service("app", f"web-{i}", ports=[port("http", 80)]))
    yield c
    c.stop()


def start_dnsd(cluster: DevCluster, env: dict[str, str] | None = None, extra: str = "") -> Dnsd:
    conf = (f"cluster.local:{{PORT}} {{\n kubernetes {{\n  endpoint {cluster.url}\n }}\n}}\n"
            f"example.org:{{PORT}} {{\n file {ZONE_FILE}\n{extra}}}\n.:{{PORT}} {{\n whoami\n}}\n")
    server = Dnsd(conf, env=env).start()
    try:
        wait_for(lambda: _answers(server.port), 20, "kubernetes synced")
    except BaseException:
        server.stop()
        raise
    return server


def _answers(port_: int) -> bool:
    try:
        return bool(query("web-1.app.svc.cluster.local.", port=port_, timeout=1).answer)
    except Exception:  # noqa: BLE001
        return False


# --- UDP flood ----------------------------------------------------------------------------------


@dataclass
class Flood:
    """Sends ``rate`` queries/s from one socket (random unique names: the costly path, and
    1 in 5 repeated names) and counts the replies."""

    port: int
    rate: float
    sent: int = 0
    replies: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = udp_client(self.port, 0.2)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rng = random.Random(4242)
        self.packets = [
            raw_query(rng.randrange(65536),
                      f"r{rng.getrandbits(48):x}.app.svc.cluster.local." if i % 5 else
                      f"web-{i % 20}.app.svc.cluster.local.")
            for i in range(20000)
        ]
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._recv, daemon=True)]

    def _send(self) -> None:
        start = time.monotonic()
        i = 0
        n = len(self.packets)
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                data = self.packets[i % n]
                if i >= n:  # unique again: another name for the same slot
                    data = data[:13] + f"{i:08x}"[-8:].encode() + data[21:] if data[13:14] == b"r" else data
                with contextlib.suppress(OSError):
                    self.sock.send(data)
                self.sent += 1
                i += 1
            time.sleep(0.002)

    def _recv(self) -> None:
        while not self.stop.is_set():
            try:
                self.sock.recv(4096)
                self.replies += 1
            except (TimeoutError, OSError):
                continue

    def __enter__(self) -> Flood:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()


def capacity(port_: int, seconds: float = 2.0, window: int = 200) -> float:
    """The max rate: replies per second with ``window`` queries kept in flight (the same
    query mix as the flood), so the server is never idle yet nothing is dropped."""
    rng = random.Random(99)
    with udp_client(port_, 0.05) as s:
        def send() -> None:
            name = (f"c{rng.getrandbits(48):x}.app.svc.cluster.local." if rng.random() < 0.8
                    else f"web-{rng.randrange(20)}.app.svc.cluster.local.")
            s.send(raw_query(rng.randrange(65536), name))

        for _ in range(window):
            send()
        replies = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            try:
                s.recv(4096)
            except TimeoutError:
                for _ in range(window // 4):  # replies lost: top the window up
                    send()
                continue
            replies += 1
            send()
        return replies / (time.monotonic() - start)


# --- the same flood from dnsperf ----------------------------------------------------------------


def use_dnsperf() -> bool:
    if FLOOD_SENDER == "python":
        return False
    if FLOOD_SENDER == "dnsperf" and not shutil.which("dnsperf"):
        pytest.fail("DNSD_FLOOD_SENDER=dnsperf but dnsperf is not installed")
    return shutil.which("dnsperf") is not None


def two_cores() -> tuple[int, int] | None:
    """(dnsd's core, the clients' core), if there are two cores to pin to."""
    cores = sorted(os.sched_getaffinity(0))
    return (cores[0], cores[1]) if len(cores) >= 2 else None


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def query_file(path: Path, prefix: str, lines: int, seed: int) -> Path:
    """The flood's mix as a dnsperf data file: 4 in 5 random unique names (the costly path),
    1 in 5 repeated names."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.writelines(f"{prefix}{rng.getrandbits(48):x}.app.svc.cluster.local A\n" if i % 5 else
                     f"web-{i % 20}.app.svc.cluster.local A\n" for i in range(lines))
    return path


def dnsperf(port_: int, datafile: Path, seconds: float, cpu: int | None, *extra: str) -> list[str]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port_), "-m", "udp", "-d", str(datafile),
            "-l", f"{seconds:g}", "-T", "1", "-b", "4096",
            "-O", "suppress=timeouts,unexpected,congestion,sendfailed,sockready", *extra]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    return argv


def dnsperf_summary(out: str) -> dict[str, float]:
    found = {key: re.search(rf"{label}:\s+([0-9.]+)", out) for key, label in (
        ("sent", "Queries sent"), ("completed", "Queries completed"), ("runtime", r"Run time \(s\)"))}
    if not all(found.values()):
        raise AssertionError(f"unexpected dnsperf output:\n{out}")
    return {key: float(m.group(1)) for key, m in found.items()}  # type: ignore[union-attr]


def capacity_dnsperf(port_: int, workdir: Path, cpu: int | None, seconds: float = 3.0,
                     window: int = 200) -> float:
    """``capacity`` measured by dnsperf: ``window`` queries in flight from one socket."""
    data = query_file(workdir / "capacity.txt", "c", 400_000, 99)
    proc = subprocess.run(dnsperf(port_, data, seconds, cpu, "-c", "1", "-q", str(window), "-t", "1"),
                          capture_output=True, text=True, timeout=seconds + 30, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = dnsperf_summary(proc.stdout)
    return summary["completed"] / summary["runtime"]


class DnsperfFlood:
    """``Flood`` from dnsperf: ``rate`` queries/s (``-Q``) for ``seconds``, never two queries
    for the same random name, up to 60,000 queries outstanding (each times out after 1 s)."""

    def __init__(self, port_: int, rate: float, seconds: float, workdir: Path, cpu: int | None) -> None:
        data = query_file(workdir / "flood.txt", "r", int(rate * seconds * 1.05) + 1000, 4242)
        self.argv = dnsperf(port_, data, seconds, cpu, "-c", "4", "-q", "60000", "-t", "1",
                            "-Q", str(int(rate)))
        self.seconds = seconds
        self.sent = self.replies = 0

    def __enter__(self) -> DnsperfFlood:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # the test failed: stop the flood, keep the first error
            self.proc.kill()
            self.proc.communicate()
            return
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        assert self.proc.returncode == 0, err
        summary = dnsperf_summary(out)
        self.sent, self.replies = int(summary["sent"]), int(summary["completed"])


@dataclass
class Prober:
    """A client asking a real name every 50 ms from its own socket; a probe counts as
    answered when its reply comes within 1 s."""

    port: int
    asked: int = 0
    answered_at: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _send(self) -> None:
        i = 0
        while not self.stop.is_set():
            qid = i % 65536
            self._sent[qid] = time.monotonic()
            with contextlib.suppress(OSError):
                self.sock.send(raw_query(qid, f"web-{i % 20}.app.svc.cluster.local."))
            self.asked += 1
            i += 1
            self.stop.wait(0.05)

    def _recv(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            sent = self._sent.pop(struct.unpack("!H", data[:2])[0], None)
            now = time.monotonic()
            if sent is not None and now - sent <= 1.0 and data[3] & 0xF == 0:
                self.answered_at.append(now)

    @property
    def answered(self) -> int:
        return len(self.answered_at)

    def __enter__(self) -> Prober:
        self._sent: dict[int, float] = {}
        self.sock = udp_client(self.port, 0.2)
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._recv, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()


@pytest.mark.timeout(FLOOD_SECONDS * 2 + 120)
def test_udp_flood_at_twice_the_max_rate(cluster: DevCluster) -> None:
    server = start_dnsd(cluster)
    workdir = Path(tempfile.mkdtemp(prefix="dnsd-flood-"))
    own_cpus = os.sched_getaffinity(0)
    try:
        pid = server.proc.pid  # type: ignore[union-attr]
        start_rss = rss_mb(pid)
        cores = two_cores() if use_dnsperf() else None
        client_cpu = cores[1] if cores else None
        if cores is not None:  # dnsd alone on its core; dnsperf and this process on the other
            pin(pid, {cores[0]})
            pin(os.getpid(), {cores[1]})
        max_rate = capacity(server.port)
        sender = "python"
        if use_dnsperf():
            python_rate = max_rate
            max_rate = max(python_rate, capacity_dnsperf(server.port, workdir, client_cpu))
            sender = (f"dnsperf{f' on core {cores[1]}, dnsd on core {cores[0]}' if cores else ''}; "
                      f"max of closed loops: dnsperf {max_rate:,.0f}, python {python_rate:,.0f} q/s")
        assert max_rate > 100, "dnsd barely answers"
        flood: Flood | DnsperfFlood = (
            DnsperfFlood(server.port, 2 * max_rate, FLOOD_SECONDS, workdir, client_cpu)
            if use_dnsperf() else Flood(server.port, rate=2 * max_rate))
        time.sleep(1.0)
        base_rss = rss_mb(pid)
        peak = base_rss
        with Prober(server.port) as probe:
            with flood:
                flood_start = time.monotonic()
                end = flood_start + FLOOD_SECONDS
                while time.monotonic() < end:
                    time.sleep(0.5)
                    assert server.proc.poll() is None, "dnsd died"  # type: ignore[union-attr]
                    peak = max(peak, rss_mb(pid))
            peak = max(peak, rss_mb(pid))
        gaps = [b - a for a, b in zip([flood_start, *probe.answered_at],
                                      [*probe.answered_at, end], strict=True)]
        print(f"\n[udp flood {FLOOD_SECONDS:g}s, {sender}] max rate {max_rate:,.0f} q/s; "
              f"sent {flood.sent:,} ({flood.sent / FLOOD_SECONDS:,.0f}/s, "
              f"{flood.sent / FLOOD_SECONDS / max_rate:.2f}x the max rate), answered {flood.replies:,} "
              f"({flood.replies / FLOOD_SECONDS:,.0f}/s); probes {probe.answered}/{probe.asked}, "
              f"longest gap {max(gaps):.1f}s; RSS {base_rss:.0f} -> peak {peak:.0f} MB "
              f"(+{peak - base_rss:.1f}; {start_rss:.0f} MB before the max rate was measured)")
        assert server.proc.poll() is None  # type: ignore[union-attr]
        assert peak - base_rss < MEMORY_LIMIT_MB
        assert peak - start_rss < MEMORY_LIMIT_MB  # the max-rate measurement's names included
        assert flood.replies >= 0.5 * max_rate * FLOOD_SECONDS  # kept answering at full speed
        if isinstance(flood, DnsperfFlood):
            assert flood.sent >= 1.9 * max_rate * FLOOD_SECONDS  # really twice the max rate
        # Half of what arrives must be dropped at twice the capacity, real queries included:
        # they still get through, and never stop getting through for long.
        assert probe.answered >= 0.2 * probe.asked
        assert max(gaps) < 3.0
        after = [query(f"web-{i}.app.svc.cluster.local.", port=server.port, timeout=2) for i in range(20)]
        assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in after)
    finally:
        pin(os.getpid(), own_cpus)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- slowloris ---------------------------------------------------------------------------------


class Loris:
    """Many TCP connections from one thread: ``idle`` ones send nothing, ``slow`` ones send a
    query frame one byte every ``every`` seconds.  Counts connections the server closed."""

    def __init__(self, port_: int, idle: int, slow: int, every: float = 0.5) -> None:
        self.port = port_
        self.every = every
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.slow: dict[socket.socket, bytes] = {}
        self.closed = 0
        query_frame = frame(dns.message.make_query("slow.example.org.", "A").to_wire())
        for i in range(idle + slow):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port_))
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ)
            if i >= idle:
                self.slow[s] = query_frame
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_drip = time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the server hung up on us
                    self.closed += 1
                    self.sel.unregister(s)
                    self.slow.pop(s, None)  # type: ignore[arg-type]
            if time.monotonic() >= next_drip:
                next_drip += self.every
                for s, rest in list(self.slow.items()):
                    if rest:
                        try:
                            s.send(rest[:1])
                        except OSError:
                            continue
                        self.slow[s] = rest[1:]

    def __enter__(self) -> Loris:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sel.close()
        for s in self.socks:
            s.close()


def served(port_: int) -> tuple[bool, bool]:
    udp = query("www.example.org.", port=port_, timeout=2).answer != []
    tcp = query("www.example.org.", port=port_, tcp=True, timeout=2).answer != []
    return udp, tcp


def keep_alive_client(port_: int) -> socket.socket:
    """A new TCP client that asks once and keeps its connection (it is answered)."""
    s = tcp_connect(port_, timeout=3)
    q = dns.message.make_query("www.example.org.", "A").to_wire()
    assert dns.message.from_wire(frame_exchange(s, q)).answer
    return s


@pytest.mark.timeout(120)
def test_slowloris_1000_connections(cluster: DevCluster) -> None:
    server = start_dnsd(cluster, env={"DNSD_TCP_IDLE_TIMEOUT": "30"})  # default limit: 1000
    try:
        pid = server.proc.pid  # type: ignore[union-attr]
        base = fds(pid)
        with Loris(server.port, idle=700, slow=300, every=0.5) as loris:
            wait_for(lambda: fds(pid) >= base + 990, 20, "the server accepted them all")
            peak = fds(pid)
            results = [served(server.port) for _ in range(10)]
            keepers = [keep_alive_client(server.port) for _ in range(30)]  # each takes a slot
            time.sleep(0.5)
            during = fds(pid)
            evicted = loris.closed
            for s in keepers:
                s.close()
        print(f"\n[slowloris 1000] dnsd fds {base} -> {peak} (held) -> {during}; "
              f"{evicted} of the oldest idle connections closed to admit 30 new ones")
        assert all(udp and tcp for udp, tcp in results)
        assert during <= base + 1000 + 5  # never more than the connection limit
        assert evicted >= 29  # new clients took the place of the oldest idle ones
        wait_for(lambda: fds(pid) <= base + 2, 10, "connections released")
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_connection_limit_and_timeouts_are_configurable(cluster: DevCluster) -> None:
    env = {"DNSD_TCP_MAX_CONNECTIONS": "100", "DNSD_TCP_IDLE_TIMEOUT": "1.5"}
    server = start_dnsd(cluster, env=env)
    try:
        pid = server.proc.pid  # type: ignore[union-attr]
        base = fds(pid)
        with Loris(server.port, idle=200, slow=100, every=0.3) as loris:
            time.sleep(0.5)
            assert fds(pid) <= base + 100 + 5  # the limit holds (the rest closed at once)
            assert all(all(served(server.port)) for _ in range(5))
            # idle ones time out; slow ones (a frame never complete) too, a frame's deadline
            # being the whole frame, not each byte
            wait_for(lambda: loris.closed >= 300, 10, "every loris connection closed")
            assert fds(pid) <= base + 2
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_timeouts_plugin_sets_read_and_idle(cluster: DevCluster) -> None:
    # The plugin wins over the environment's 30 s.
    server = start_dnsd(cluster, env={"DNSD_TCP_IDLE_TIMEOUT": "30"},
                        extra=" timeouts {\n  read 1s\n  idle 2s\n  write 5s\n }\n")
    try:
        with Loris(server.port, idle=50, slow=50, every=0.2) as loris:
            start = time.monotonic()
            keeper = keep_alive_client(server.port)  # answered, then quiet: the idle timeout
            wait_for(lambda: loris.closed >= 100, 5, "read timeout (1 s) closes them all")
            assert 0.8 < time.monotonic() - start < 3.0
            keeper.settimeout(5)
            assert keeper.recv(1) == b""  # closed too, once idle for 2 s
            assert 1.8 < time.monotonic() - start < 4.5
            keeper.close()
    finally:
        server.stop()


@pytest.mark.parametrize(("body", "message"), [
    ("", "timeouts block with no timeouts specified"),
    ("  read 500ms\n", "needs to be between 1 second and 24 hours"),
    ("  idle 25h\n", "needs to be between 1 second and 24 hours"),
    ("  read soon\n", "invalid duration 'soon'"),
    ("  linger 5s\n", "unknown option: 'linger'"),
    ("  read\n", "Wrong argument count"),
])
def test_timeouts_setup_errors(body: str, message: str) -> None:
    from dnsd.corefile import CorefileError, parse
    from dnsd.serve.runtime import Runtime

    with pytest.raises(CorefileError, match=message):
        Runtime.build(parse(f".:53 {{\n timeouts {{\n{body} }}\n whoami\n}}\n"))


def test_timeouts_setup_values() -> None:
    from dnsd.corefile import parse
    from dnsd.serve.runtime import Runtime

    runtime = Runtime.build(parse(".:53 {\n timeouts {\n  read 30\n  idle 1m30s\n }\n whoami\n}\n"))
    plugin = next(p for p in runtime.plugins if p.name == "timeouts")
    assert (plugin.read, plugin.write, plugin.idle) == (30.0, None, 90.0)
