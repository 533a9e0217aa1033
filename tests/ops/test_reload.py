"""Changing the Corefile of a running dnsd: the reload plugin's polling and SIGHUP.

A client thread asks over UDP every 10 ms throughout.  A good new Corefile (a `hosts` entry
added) takes effect without a lost answer; a broken one is logged, counted in
``coredns_reload_failed_total``, and the running configuration keeps serving.
"""

from __future__ import annotations

import hashlib
import http.client
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, Dnsd, free_port

from dnsd.devcluster import DevCluster

DEMO = ROOT / "deploy" / "demo" / "cluster.yaml"
NAMES = ("one.example.", "two.example.", "kubernetes.default.svc.cluster.local.")


@dataclass
class Answer:
    at: float
    name: str
    rcode: int | None  # None: no answer within the timeout (lost)
    ips: tuple[str, ...] = ()


class Client:
    """Asks NAMES in turn over UDP every 10 ms from a thread, recording every outcome."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            name = NAMES[i % len(NAMES)]
            i += 1
            self.answers.append(self._ask(name))
            time.sleep(0.01)

    def _ask(self, name: str) -> Answer:
        q = dns.message.make_query(name, "A")
        now = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            try:
                s.sendto(q.to_wire(), ("127.0.0.1", self.port))
                while True:
                    reply = dns.message.from_wire(s.recvfrom(65535)[0])
                    if reply.id == q.id:
                        break
            except (TimeoutError, OSError):
                return Answer(now, name, None)
        ips = tuple(sorted(rr.address for rrset in reply.answer for rr in rrset))
        return Answer(now, name, reply.rcode(), ips)

    def wait_for(self, check: Callable[[Answer], bool], timeout: float) -> float:
        """Wait for an answer after now that satisfies ``check``; returns its time."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            for a in list(reversed(self.answers)):
                if a.at < start:
                    break
                if check(a):
                    return a.at
            time.sleep(0.05)
        raise AssertionError("no such answer in time")


def corefile(url: str, metrics: int, hosts: str, reload: str = "reload 2s 1s",
             extra: str = "") -> str:
    return f""".:{{PORT}} {{
    bind 127.0.0.1
    {reload}
    prometheus 127.0.0.1:{metrics}
    hosts {{
        {hosts}
        fallthrough cluster.local
    }}
    kubernetes cluster.local {{
        endpoint {url}
    }}
    {extra}
}}
"""


ONE = "192.0.2.1 one.example."
TWO = "192.0.2.2 two.example."
BROKEN = "no_such_plugin"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def failed_reloads(port: int) -> float:
    return scrape(port)[("coredns_reload_failed_total", ())]


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def check_answers(answers: list[Answer], switched_at: float) -> None:
    """Nothing lost; one.example and the API service always answer; two.example is SERVFAIL
    before the switch (hosts without fallthrough for it: CoreDNS's answer for an unknown name)
    and 192.0.2.2 after it (never back)."""
    assert answers, "the client asked nothing"
    lost = [a for a in answers if a.rcode is None]
    assert lost == []
    for a in answers:
        if a.name == "one.example.":
            assert (a.rcode, a.ips) == (dns.rcode.NOERROR, ("192.0.2.1",))
        elif a.name == "kubernetes.default.svc.cluster.local.":
            assert (a.rcode, a.ips) == (dns.rcode.NOERROR, ("10.96.0.1",))
    two = [a for a in answers if a.name == "two.example."]
    before = [a for a in two if a.at < switched_at]
    after = [a for a in two if a.at >= switched_at]
    assert before and after
    first_new = next(i for i, a in enumerate(two) if a.rcode == dns.rcode.NOERROR)
    assert all((a.rcode, a.ips) == (dns.rcode.SERVFAIL, ()) for a in two[:first_new])
    assert all((a.rcode, a.ips) == (dns.rcode.NOERROR, ("192.0.2.2",)) for a in two[first_new:])


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    c = DevCluster().start()
    c.load_yaml(DEMO)
    try:
        yield c
    finally:
        c.stop()


def test_reload_plugin_applies_a_good_corefile_and_keeps_serving_on_a_broken_one(
        cluster: DevCluster) -> None:
    metrics = free_port()
    d = Dnsd(corefile(cluster.url, metrics, ONE))
    try:
        d.start()
        v2 = corefile(cluster.url, metrics, f"{ONE}\n        {TWO}").replace("{PORT}", str(d.port))
        with Client(d.port) as client:
            time.sleep(0.3)
            d.conf.write_text(v2)
            written = time.monotonic()
            switched = client.wait_for(lambda a: a.name == "two.example." and a.rcode == 0, timeout=8)
            assert switched - written < 5  # 2s ± 1s polling, plus the new configuration's start
            # A broken Corefile: logged, counted, and the running configuration keeps serving.
            d.conf.write_text(v2.replace("    prometheus", f"    {BROKEN}\n    prometheus"))
            wait_until(lambda: failed_reloads(metrics) == 1.0, timeout=8)
            failed = time.monotonic()
            time.sleep(0.5)
        check_answers(client.answers, switched)
        # The client asked all through both reloads (their timing follows the jittered interval,
        # so the span itself may be under 2 s).
        assert client.answers[0].at < written and client.answers[-1].at > failed
        samples = scrape(metrics)
        assert samples[("coredns_reload_failed_total", ())] == 1.0  # not retried every interval
        version = {k: v for k, v in samples.items() if k[0] == "coredns_reload_version_info"}
        assert version == {
            ("coredns_reload_version_info",
             (("hash", hashlib.sha512(v2.encode()).hexdigest()), ("value", "sha512"))): 1.0,
        }
        log = d.output()
        assert log.count("[INFO] Reloading complete") == 1
        assert f"[ERROR] Restart failed: {d.conf}:4 - Error during parsing: unknown directive '{BROKEN}'" in log
    finally:
        assert d.stop() == 0


def test_sighup_reloads_at_once_and_a_broken_corefile_keeps_the_old_one(cluster: DevCluster) -> None:
    metrics = free_port()
    d = Dnsd(corefile(cluster.url, metrics, ONE, reload=""))  # no reload plugin: only SIGHUP
    try:
        d.start()
        assert d.proc is not None
        v2 = corefile(cluster.url, metrics, f"{ONE}\n        {TWO}", reload="").replace("{PORT}", str(d.port))
        with Client(d.port) as client:
            time.sleep(0.3)
            d.conf.write_text(v2)
            time.sleep(0.3)  # no reload plugin: nothing happens on its own
            assert all(a.rcode != 0 for a in client.answers if a.name == "two.example.")
            d.proc.send_signal(signal.SIGHUP)
            hup = time.monotonic()
            switched = client.wait_for(lambda a: a.name == "two.example." and a.rcode == 0, timeout=5)
            assert switched - hup < 1.5
            d.conf.write_text(v2.replace("    prometheus", f"    {BROKEN}\n    prometheus"))
            d.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: failed_reloads(metrics) == 1.0, timeout=5)
            time.sleep(0.3)
        check_answers(client.answers, switched)
        assert "[ERROR] Restart failed:" in d.output()
    finally:
        assert d.stop() == 0


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def handles_sighup(pid: int) -> bool:
    """Has the process installed its SIGHUP handler (serve() does, once it serves)?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_sighup_reloads_every_worker(cluster: DevCluster) -> None:
    metrics = free_port()
    d = Dnsd(corefile(cluster.url, metrics, ONE, reload=""), args=["-workers", "2"])
    try:
        d.start()
        assert d.proc is not None
        main = d.proc.pid
        # The worker process is up (synced, sockets open) once it handles SIGHUP.
        wait_until(lambda: len(children(main)) == 1 and handles_sighup(children(main)[0]), 15)
        d.conf.write_text(corefile(cluster.url, metrics, f"{ONE}\n        {TWO}", reload="")
                          .replace("{PORT}", str(d.port)))
        d.proc.send_signal(signal.SIGHUP)
        client = Client(d.port)

        def all_reloaded() -> bool:
            # Fresh sockets (new source ports) spread over both processes by SO_REUSEPORT.
            answers = {(a.rcode, a.ips) for a in (client._ask("two.example.") for _ in range(30))}
            return answers == {(dns.rcode.NOERROR, ("192.0.2.2",))}

        wait_until(all_reloaded, 8)  # without SIGHUP reaching the worker, half stay SERVFAIL
    finally:
        assert d.stop() == 0


# --- the HTTP endpoints across reloads -------------------------------------------------------

def http_status(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError as exc:
        return 0, type(exc).__name__
    finally:
        conn.close()


def endpoints_corefile(url: str, health: int, ready: int, metrics: int, hosts: str,
                       k8s_extra: str = "", reload: str = "") -> str:
    return corefile(url, metrics, hosts, reload=reload).replace(
        "    prometheus", f"    health 127.0.0.1:{health}\n    ready 127.0.0.1:{ready}\n    prometheus"
    ).replace(f"endpoint {url}", f"endpoint {url}\n        {k8s_extra}")


def test_ready_stays_200_while_a_reload_waits_for_its_first_sync(cluster: DevCluster) -> None:
    health, ready, metrics = free_port(), free_port(), free_port()
    d = Dnsd(endpoints_corefile(cluster.url, health, ready, metrics, ONE))
    try:
        d.start()
        assert d.proc is not None
        wait_until(lambda: http_status(ready, "/ready") == (200, "OK"), 10)
        cluster.faults.slow_lists(2)  # the new configuration's first lists take 2 s
        d.conf.write_text(endpoints_corefile(cluster.url, health, ready, metrics, f"{ONE}\n        {TWO}")
                          .replace("{PORT}", str(d.port)))
        d.proc.send_signal(signal.SIGHUP)
        seen = []
        with Client(d.port) as client:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and "[INFO] Reloading complete" not in d.output():
                seen.append(http_status(ready, "/ready"))
                time.sleep(0.05)
            time.sleep(0.3)
            seen.append(http_status(ready, "/ready"))
        assert "[INFO] Reloading complete" in d.output()
        assert len(seen) >= 20  # the reload took the 2 s of slow lists
        assert set(seen) == {(200, "OK")}
        assert [a for a in client.answers if a.rcode is None] == []
    finally:
        cluster.faults.clear()
        assert d.stop() == 0


def test_a_reload_that_fails_to_start_keeps_the_http_endpoints(cluster: DevCluster, tmp_path: Path) -> None:
    health, ready, metrics = free_port(), free_port(), free_port()
    d = Dnsd(endpoints_corefile(cluster.url, health, ready, metrics, ONE, reload="reload"))
    try:
        d.start()
        assert d.proc is not None
        running = hashlib.sha512(d.conf.read_bytes()).hexdigest()
        wait_until(lambda: http_status(ready, "/ready") == (200, "OK"), 10)
        # Parses and builds, but the kubernetes plugin cannot start: no such kubeconfig.
        broken = endpoints_corefile(cluster.url, health, ready, metrics, f"{ONE}\n        {TWO}",
                                    k8s_extra=f"kubeconfig {tmp_path / 'missing.kubeconfig'}",
                                    reload="reload")
        d.conf.write_text(broken.replace(f"endpoint {cluster.url}\n", "").replace("{PORT}", str(d.port)))
        with Client(d.port) as client:
            d.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "[ERROR] Restart failed" in d.output(), 10)
            time.sleep(0.3)
        assert http_status(health, "/health") == (200, "OK")
        assert http_status(ready, "/ready") == (200, "OK")
        assert failed_reloads(metrics) == 1.0
        # The version shown is still the running configuration's, not the one that failed.
        assert {k for k in scrape(metrics) if k[0] == "coredns_reload_version_info"} == {
            ("coredns_reload_version_info", (("hash", running), ("value", "sha512"))),
        }
        answers = client.answers
        assert answers and [a for a in answers if a.rcode is None] == []
        assert {(a.rcode, a.ips) for a in answers if a.name == "two.example."} == {(dns.rcode.SERVFAIL, ())}
    finally:
        assert d.stop() == 0
