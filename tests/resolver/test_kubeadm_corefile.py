"""The kubeadm default Corefile (Corefile.example, coredns_kubernetes.md §16) runs as is.

Only what a test machine forces is changed, line by line:
- ``.:53`` -> ``.:<free port>``;
- ``health``, ``ready`` and ``prometheus`` listen on free 127.0.0.1 ports (``lameduck 5s`` kept);
- ``forward . /etc/resolv.conf`` -> ``forward . 127.0.0.1:<upstream port>``: a resolv.conf
  ``nameserver`` line cannot carry a port, so the loopback upstream (a dnsd serving
  example.com and a root zone with the file plugin, tests/resolver_support.py) is named directly;
- ``endpoint <DevCluster URL>`` is added to the kubernetes block.
Every other line (errors, ``pods insecure``, ``fallthrough``, ``ttl 30``, ``max_concurrent``,
``cache 30 { disable ... }``, ``loop``, ``reload``, ``loadbalance``) is kept unchanged.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import dns.rcode
import pytest
from k8s_support import endpoint, endpoint_slice, port, service
from resolver_support import ZoneUpstream, wait_until
from support import ROOT, Dnsd, dig, free_port, query

from dnsd.devcluster import DevCluster

pytestmark = pytest.mark.timeout(90)


@dataclass
class Env:
    cluster: DevCluster
    upstream: ZoneUpstream
    server: Dnsd
    health: int
    ready: int
    metrics: int
    original: list[str]
    corefile: str

    @property
    def port(self) -> int:
        return self.server.port


def adapt(text: str, url: str, upstream: str, health: int, ready: int, metrics: int) -> str:
    """Corefile.example with the test machine's ports and addresses (see the module docstring)."""
    replacements = {
        ".:53 {": ".:{PORT} {",
        "    health {": f"    health 127.0.0.1:{health} {{",
        "    ready": f"    ready 127.0.0.1:{ready}",
        "    prometheus :9153": f"    prometheus 127.0.0.1:{metrics}",
        "    forward . /etc/resolv.conf {": f"    forward . {upstream} {{",
    }
    out = []
    for line in text.splitlines():
        if line in replacements:
            out.append(replacements.pop(line))
        else:
            out.append(line)
        if line.startswith("    kubernetes cluster.local in-addr.arpa ip6.arpa {"):
            out.append(f"       endpoint {url}")
    assert not replacements, f"Corefile.example changed shape; not found: {list(replacements)}"
    return "\n".join(out) + "\n"


def http_get(port_: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port_}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    upstream = ZoneUpstream().start()
    cluster = DevCluster().start()
    dns_ports = [port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP"), port("metrics", 9153)]
    for obj in (
        service("default", "kubernetes", ips=["10.96.0.1"], ports=[port("https", 443)]),
        endpoint_slice("default", "kubernetes-x", "kubernetes", [endpoint("172.18.0.2")], [port("https", 6443)]),
        service("kube-system", "kube-dns", ips=["10.96.0.10"], ports=dns_ports),
        endpoint_slice("kube-system", "kube-dns-x", "kube-dns", [endpoint("10.244.0.2", pod="coredns-a")],
                       dns_ports),
    ):
        cluster.apply(obj)
    original = (ROOT / "Corefile.example").read_text().splitlines()
    health, ready, metrics = free_port(), free_port(), free_port()
    corefile = adapt("\n".join(original), cluster.url, upstream.addr, health, ready, metrics)
    server = Dnsd(corefile)
    try:
        server.start()
        yield Env(cluster, upstream, server, health, ready, metrics, original, corefile)
    finally:
        server.stop()
        cluster.stop()
        upstream.stop()


def test_only_the_machine_specific_lines_changed(env: Env) -> None:
    adapted = env.corefile.replace("{PORT}", str(env.port)).splitlines()
    changed = [line for line in adapted if line not in env.original]
    assert [re.sub(r":\d+", ":N", line).strip() for line in changed] == [
        ".:N {", "health 127.0.0.1:N {", "ready 127.0.0.1:N", "endpoint http://127.0.0.1:N",
        "prometheus 127.0.0.1:N", "forward . 127.0.0.1:N {"]
    kept = [line for line in env.original if line in adapted]
    assert len(kept) == len(env.original) - 5
    for line in ("    loop", "    reload", "    loadbalance", "       pods insecure",
                 "       disable success cluster.local", "       max_concurrent 1000"):
        assert line in adapted
    print("\n--- the Corefile under test\n" + env.server.conf.read_text())


def test_ready_health_and_metrics(env: Env) -> None:
    took = wait_until(lambda: http_get(env.ready, "/ready") == (200, "OK"), 20, "/ready never 200")
    assert http_get(env.health, "/health") == (200, "OK")
    status, text = http_get(env.metrics, "/metrics")
    assert status == 200 and "coredns_dns_requests_total" in text
    enabled = set(re.findall(r'coredns_plugin_enabled\{[^}]*name="(\w+)"', text))
    assert {"kubernetes", "forward", "cache", "loop", "loadbalance", "errors"} <= enabled, enabled
    print(f"\n--- /ready 200 after {took:.2f}s")


def test_cluster_names(env: Env) -> None:
    wait_until(lambda: http_get(env.ready, "/ready")[0] == 200, 20, "/ready")
    for tcp in (False, True):
        r = query("kube-dns.kube-system.svc.cluster.local", "A", port=env.port, tcp=tcp)
        assert [(rrset.ttl, [rd.address for rd in rrset]) for rrset in r.answer] == [(30, ["10.96.0.10"])]
        r = query("kubernetes.default.svc.cluster.local", "A", port=env.port, tcp=tcp)
        assert [rd.address for rrset in r.answer for rd in rrset] == ["10.96.0.1"]
        r = query("10.0.96.10.in-addr.arpa.", "PTR", port=env.port, tcp=tcp)
        assert [rd.target.to_text() for rrset in r.answer for rd in rrset] == [
            "kube-dns.kube-system.svc.cluster.local."]
        r = query("10-244-0-5.default.pod.cluster.local", "A", port=env.port, tcp=tcp)  # pods insecure
        assert [rd.address for rrset in r.answer for rd in rrset] == ["10.244.0.5"]
        r = query("nothere.default.svc.cluster.local", "A", port=env.port, tcp=tcp)
        assert r.rcode() == dns.rcode.NXDOMAIN and r.authority
    assert env.upstream.count("kube-dns.kube-system.svc.cluster.local.") == 0


def test_external_names_forwarded(env: Env) -> None:
    for tcp in (False, True):
        r = query("www.example.com", "A", port=env.port, tcp=tcp)
        assert [rd.address for rrset in r.answer for rd in rrset] == ["192.0.2.10"]
        r = query("nosuch.example.com", "A", port=env.port, tcp=tcp)
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert r.authority[0].name.to_text() == "example.com."  # the upstream's SOA
    # a reverse name the cluster does not own falls through to forward
    r = query("4.3.2.1.in-addr.arpa.", "PTR", port=env.port)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].name.to_text() == "."
    names = env.upstream.names()
    assert names.count("www.example.com.") == 1  # the TCP query was a cache hit
    assert "nosuch.example.com." in names and "4.3.2.1.in-addr.arpa." in names
    out = dig("+noall", "+answer", "www.example.com", port=env.port)
    print("\n--- kubeadm Corefile, external name\n$ dig +noall +answer www.example.com\n  "
          + " ".join(out.split()))


def test_loop_plugin_probes_once_and_does_not_fire(env: Env) -> None:
    """loop sends "<n>.<n>. HINFO" through itself; forwarded to the upstream it comes back once
    (NXDOMAIN from the root zone) and dnsd keeps running."""
    probe = re.compile(r"^\d+\.\d+\.$")

    def probes() -> list[str]:
        return [q.name for q in env.upstream.queries() if q.qtype == "HINFO" and probe.match(q.name)]

    wait_until(probes, 10, "the loop probe never reached the upstream")
    time.sleep(2.5)  # the plugin stops looking 2 s after its probe was answered
    assert len(set(probes())) == 1 and len(probes()) <= 2, probes()
    assert env.server.proc is not None and env.server.proc.poll() is None
    assert "plugin/loop" not in env.server.output(), env.server.output()
    assert query("www.example.com", "A", port=env.port).rcode() == dns.rcode.NOERROR


def test_zz_lameduck_keeps_answering_then_exits_cleanly(env: Env) -> None:
    """SIGTERM with ``health { lameduck 5s }``: DNS still answers during the lameduck, then dnsd
    exits 0.  (Runs last: it stops the module's server.)"""
    proc = env.server.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    time.sleep(0.3)
    r = query("kube-dns.kube-system.svc.cluster.local", "A", port=env.port)
    assert [rd.address for rrset in r.answer for rd in rrset] == ["10.96.0.10"]
    assert proc.wait(10) == 0
    took = time.monotonic() - started
    assert 4.5 <= took < 8, took
    print(f"\n--- SIGTERM: answered during lameduck, exited 0 after {took:.1f}s")
