"""The operator endpoints a kubelet probes, over real HTTP against a dnsd process.

/ready (ready plugin): 503 naming ``kubernetes`` until the first full sync, then 200 ``OK``;
a 410 relist never flips it back.  /health (health plugin): 200 while running; on SIGTERM with
``lameduck`` it answers 503 while DNS keeps answering, /ready says ``Shutting down``, and the
process exits 0 once the lameduck is over.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import threading
import time
from collections.abc import Iterator

import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, Dnsd, free_port, query, wait_for_dns

from dnsd.devcluster import DevCluster

DEMO = ROOT / "deploy" / "demo" / "cluster.yaml"
API_NAME = "kubernetes.default.svc.cluster.local."


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of one GET on 127.0.0.1; raises OSError while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def answer_ips(port: int, name: str = API_NAME) -> list[str]:
    msg = query(name, "A", port=port)
    assert msg.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(msg.rcode())
    return sorted(rr.address for rrset in msg.answer for rr in rrset)


def corefile(url: str, health: int, ready: int, metrics: int, *, lameduck: str = "",
             ready_opts: str = "", k8s_opts: str = "") -> str:
    lame = f" {{\n        lameduck {lameduck}\n    }}" if lameduck else ""
    ready_block = f" {{\n        {ready_opts}\n    }}" if ready_opts else ""
    return f"""cluster.local:{{PORT}} in-addr.arpa:{{PORT}} {{
    bind 127.0.0.1
    health 127.0.0.1:{health}{lame}
    ready 127.0.0.1:{ready}{ready_block}
    prometheus 127.0.0.1:{metrics}
    kubernetes cluster.local in-addr.arpa {{
        endpoint {url}
        {k8s_opts}
    }}
}}
"""


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    c = DevCluster().start()
    c.load_yaml(DEMO)
    try:
        yield c
    finally:
        c.faults.clear()
        c.stop()


@pytest.fixture
def ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def poll_ready_until_ok(port: int, proc: Dnsd, timeout: float) -> list[tuple[int, str]]:
    """Every /ready answer, every 50 ms, until the first 200 (connection errors skipped)."""
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc is not None and proc.proc.poll() is None, proc.output()
        with contextlib.suppress(OSError):  # the listener may not be up yet
            seen.append(http_get(port, "/ready"))
        if seen and seen[-1][0] == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"/ready never answered 200; last answers {seen[-3:]}")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


# --- start-up ------------------------------------------------------------------------------

def test_ready_names_kubernetes_while_the_first_lists_are_slow(cluster: DevCluster,
                                                               ports: tuple[int, int, int]) -> None:
    health, ready, metrics = ports
    cluster.faults.slow_lists(3)  # every list (not watch) response takes 3 s
    d = Dnsd(corefile(cluster.url, health, ready, metrics, k8s_opts="startup_timeout 20s"))
    try:
        d.start(wait=False)
        seen = poll_ready_until_ok(ready, d, timeout=20)
        assert seen[-1] == (200, "OK")
        waiting = seen[:-1]
        # Python start-up plus 3 s lists: well over a second of polls at 50 ms.
        assert len(waiting) >= 10, seen
        # "kubernetes" while the lists are slow; then possibly "dns" for the moment between the
        # sync and the DNS sockets opening (ready only once queries can arrive).
        assert (503, "kubernetes") in set(waiting) and set(waiting) <= {(503, "kubernetes"), (503, "dns")}
        assert http_get(health, "/health") == (200, "OK")
        cluster.faults.clear()
        wait_for_dns(d.port, proc=d.proc)
        assert answer_ips(d.port) == ["10.96.0.1"]
        assert http_get(ready, "/ready") == (200, "OK")
    finally:
        assert d.stop() == 0


def test_ready_stays_503_past_startup_timeout_until_the_api_comes_back(
        cluster: DevCluster, ports: tuple[int, int, int]) -> None:
    health, ready, metrics = ports
    cluster.faults.down()  # connection refused on the emulator's port
    d = Dnsd(corefile(cluster.url, health, ready, metrics, k8s_opts="startup_timeout 1s"))
    try:
        d.start(wait=False)
        # After startup_timeout the server serves anyway (CoreDNS: SERVFAIL for misses)...
        wait_for_dns(d.port, proc=d.proc)
        assert query(API_NAME, "A", port=d.port).rcode() == dns.rcode.SERVFAIL
        # ...but is not ready, and /health is fine.
        assert http_get(ready, "/ready") == (503, "kubernetes")
        assert http_get(health, "/health") == (200, "OK")
        time.sleep(0.5)
        assert http_get(ready, "/ready") == (503, "kubernetes")
        cluster.faults.up()
        seen = poll_ready_until_ok(ready, d, timeout=15)
        assert set(seen[:-1]) <= {(503, "kubernetes")}  # the sockets were open already
        assert answer_ips(d.port) == ["10.96.0.1"]
    finally:
        assert d.stop() == 0


# --- a 410 relist --------------------------------------------------------------------------

@pytest.mark.parametrize("ready_opts", ["", "monitor continuously"], ids=["until-ready", "continuously"])
def test_ready_stays_200_through_a_410_relist(cluster: DevCluster, ports: tuple[int, int, int],
                                              ready_opts: str) -> None:
    health, ready, metrics = ports
    d = Dnsd(corefile(cluster.url, health, ready, metrics, ready_opts=ready_opts))
    answers: list[tuple[int, str]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                answers.append(http_get(ready, "/ready"))
            except OSError as exc:  # a refused or dropped probe is a failed probe
                answers.append((0, repr(exc)))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        d.start()
        assert poll_ready_until_ok(ready, d, timeout=10)[-1] == (200, "OK")
        poller.start()
        time.sleep(0.3)
        cluster.faults.expire_all_watches()  # open and new watches get 410 Gone until clear()
        cluster.apply({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "late", "namespace": "default"},
            "spec": {"clusterIP": "10.96.50.50", "ports": [{"name": "http", "port": 80}]},
        })
        late = "late.default.svc.cluster.local."
        deadline = time.monotonic() + 10
        while query(late, "A", port=d.port).rcode() != dns.rcode.NOERROR:
            assert time.monotonic() < deadline, "the relist never brought the new Service"
            time.sleep(0.05)
        cluster.faults.clear()
        time.sleep(0.5)
        done.set()
        poller.join(5)
        assert answer_ips(d.port, late) == ["10.96.50.50"]
        assert len(answers) >= 10
        assert set(answers) == {(200, "OK")}
        samples = scrape(metrics)
        expired = samples.get(("dnsd_kubernetes_relists_total",
                               (("reason", "expired"), ("resource", "services"))), 0.0)
        assert expired >= 1
    finally:
        done.set()
        assert d.stop() == 0


# --- shutdown ------------------------------------------------------------------------------

def test_sigterm_lameduck_keeps_dns_while_probes_report_shutdown(
        cluster: DevCluster, ports: tuple[int, int, int]) -> None:
    health, ready, metrics = ports
    d = Dnsd(corefile(cluster.url, health, ready, metrics, lameduck="2s"))
    try:
        d.start()
        assert poll_ready_until_ok(ready, d, timeout=10)[-1] == (200, "OK")
        assert http_get(health, "/health") == (200, "OK")
        assert d.proc is not None
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        checks = 0
        time.sleep(0.2)
        while time.monotonic() - started < 1.6:
            assert http_get(health, "/health") == (503, "lameduck: shutting down\n")
            assert http_get(ready, "/ready") == (503, "Shutting down")
            assert answer_ips(d.port) == ["10.96.0.1"]
            assert query(API_NAME, "A", port=d.port, tcp=True).rcode() == dns.rcode.NOERROR
            checks += 1
            time.sleep(0.1)
        assert checks >= 5
        assert d.proc.wait(10) == 0
        elapsed = time.monotonic() - started
        assert 2.0 <= elapsed < 6.0, elapsed
        log = d.output()
        assert "[INFO] plugin/health: Going into lameduck mode for 2s" in log
        assert "[INFO] SIGTERM: Shutting down servers then terminating" in log
        with pytest.raises(OSError):
            http_get(health, "/health")
    finally:
        d.stop()


def test_a_second_sigterm_cuts_the_lameduck_short(cluster: DevCluster,
                                                  ports: tuple[int, int, int]) -> None:
    health, ready, metrics = ports
    d = Dnsd(corefile(cluster.url, health, ready, metrics, lameduck="30s"))
    try:
        d.start()
        assert d.proc is not None
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert http_get(health, "/health")[0] == 503
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        d.stop()
