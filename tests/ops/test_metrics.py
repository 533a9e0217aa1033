"""/metrics after a known set of queries: CoreDNS's names, types, labels, buckets and counts.

One dnsd process (kubernetes + cache in one block, forward + cache in another, health, ready,
prometheus) answers a fixed list of queries over UDP and TCP; the exposition is parsed with
prometheus_client's own parser and compared with what CoreDNS would export for the same
traffic.  Query and reply sizes are measured on the wire by the test, so the size histograms
are checked bucket by bucket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import socket
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from support import ROOT, Dnsd, free_port
from upstream import Upstream

from dnsd import COREDNS_COMPAT, __version__
from dnsd.devcluster import DevCluster

DEMO = ROOT / "deploy" / "demo" / "cluster.yaml"
K8S, FWD, REV = "cluster.local.", "example.org.", "in-addr.arpa."

TIME_BOUNDS = [0.00025 * 2**i for i in range(16)] + [float("inf")]
SIZE_BOUNDS = [0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000,
               float("inf")]
PROGRAMMING_BOUNDS = [0.001 * 2**i for i in range(20)] + [float("inf")]


@dataclass(frozen=True)
class Q:
    name: str
    qtype: str
    tcp: bool
    zone: str
    rcode: str
    plugin: str  # the plugin that wrote the reply (dnsd: the innermost one)
    do: bool = False


# The traffic.  Every query of the kubernetes block is distinct: a repeated one would be
# answered by the hot path (prepared answers), see test_cache_hits_counted_for_prepared_answers.
QUERIES = [
    Q("kubernetes.default.svc.cluster.local.", "A", False, K8S, "NOERROR", "kubernetes"),
    Q("kubernetes.default.svc.cluster.local.", "AAAA", False, K8S, "NOERROR", "kubernetes"),
    Q("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV", False, K8S, "NOERROR", "kubernetes"),
    Q("nonexistent.default.svc.cluster.local.", "A", False, K8S, "NXDOMAIN", "kubernetes"),
    Q("web.demo.svc.cluster.local.", "A", True, K8S, "NOERROR", "kubernetes"),
    Q("cluster.local.", "AXFR", True, K8S, "REFUSED", "kubernetes"),
    Q("db.demo.svc.cluster.local.", "A", False, K8S, "NOERROR", "kubernetes", do=True),
    Q("10.0.96.10.in-addr.arpa.", "PTR", False, REV, "NOERROR", "kubernetes"),
    Q("www.example.org.", "A", False, FWD, "NOERROR", "forward"),
    Q("www.example.org.", "A", True, FWD, "NOERROR", "cache"),  # a cache hit (any transport)
    Q("multi.example.org.", "A", True, FWD, "NOERROR", "forward"),
    Q("mx.example.org.", "MX", False, FWD, "NOERROR", "forward"),
    Q("www.example.org.", "CAA", False, FWD, "NOERROR", "forward"),  # type label "other"
    Q("www.example.org.", "SVCB", False, FWD, "NOERROR", "forward"),  # "other" too
    Q("www.example.org.", "HTTPS", True, FWD, "NOERROR", "forward"),  # one of CoreDNS's types
    Q("missing.example.org.", "A", False, FWD, "NXDOMAIN", "forward"),
]

BAD_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "bad-network-status", "namespace": "demo",
                 "annotations": {"k8s.v1.cni.cncf.io/network-status": "not json"}},
    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    "status": {"phase": "Running", "podIP": "10.244.9.9", "podIPs": [{"ip": "10.244.9.9"}]},
}

Labels = tuple[tuple[str, str], ...]


def labels(**kw: str) -> Labels:
    return tuple(sorted(kw.items()))


@dataclass
class Scenario:
    server: str
    upstream: str
    port: int
    metrics_port: int
    families: dict[str, tuple[str, list[Sample]]] = field(default_factory=dict)
    qsizes: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    rsizes: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def samples(self, name: str, family: str | None = None) -> dict[Labels, float]:
        """Samples called ``name`` (of ``family``, default: the name minus _total/_bucket...)."""
        fam = family or name.removesuffix("_total")
        return {tuple(sorted(s.labels.items())): s.value
                for s in self.families[fam][1] if s.name == name}

    def nonzero(self, name: str) -> dict[Labels, float]:
        """Like ``samples``, without series at 0 (a plugin may create its series up front)."""
        return {k: v for k, v in self.samples(name).items() if v}


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> dict[str, tuple[str, list[Sample]]]:
    status, text = http_get(port, "/metrics")
    assert status == 200
    return {fam.name: (fam.type, list(fam.samples)) for fam in text_string_to_metric_families(text)}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def exchange(port: int, wire: bytes, tcp: bool) -> bytes:
    """One query on the wire; returns the raw reply (without TCP's length prefix)."""
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(len(wire).to_bytes(2, "big") + wire)
            return _recv_exact(s, int.from_bytes(_recv_exact(s, 2), "big"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire, ("127.0.0.1", port))
        return s.recvfrom(65535)[0]


def corefile(url: str, upstream: str, health: int, ready: int, metrics: int) -> str:
    return f"""cluster.local:{{PORT}} in-addr.arpa:{{PORT}} {{
    bind 127.0.0.1
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    prometheus 127.0.0.1:{metrics}
    kubernetes cluster.local in-addr.arpa {{
        endpoint {url}
        secondary_networks
    }}
    cache 30
}}
example.org:{{PORT}} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    forward . {upstream}
    cache 30
}}
"""


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    cluster = DevCluster().start()
    upstream = Upstream().start()
    d: Dnsd | None = None
    try:
        cluster.load_yaml(DEMO)
        cluster.apply(BAD_POD)
        health, ready, metrics = free_port(), free_port(), free_port()
        # No DNS query before the scenario's (Dnsd.start() would send one): wait for /ready and
        # for the TCP listener to accept (a connection without a query counts nothing).
        d = Dnsd(corefile(cluster.url, upstream.addr, health, ready, metrics)).start(wait=False)
        wait_until(lambda: _status(ready, "/ready") == 200)
        wait_until(lambda: _accepts(d.port))
        sc = Scenario(server=f"dns://127.0.0.1:{d.port}", upstream=upstream.addr, port=d.port,
                      metrics_port=metrics)
        for q in QUERIES:
            msg = dns.message.make_query(q.name, q.qtype, want_dnssec=q.do)
            wire = msg.to_wire()
            reply = dns.message.from_wire(raw := exchange(d.port, wire, q.tcp))
            assert reply.id == msg.id
            assert dns.rcode.to_text(reply.rcode()) == q.rcode, q
            proto = "tcp" if q.tcp else "udp"
            sc.qsizes.setdefault((q.zone, proto), []).append(len(wire))
            sc.rsizes.setdefault((q.zone, proto), []).append(len(raw))
        # A change whose EndpointSlice carries the endpoints controller's trigger time, 10 s ago.
        then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
        cluster.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "web-extra", "namespace": "demo",
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {
                    "endpoints.kubernetes.io/last-change-trigger-time": then.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.7.7"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        })

        def settled() -> bool:
            fams = scrape(metrics)
            prog = [s for s in fams["coredns_kubernetes_dns_programming_duration_seconds"][1]
                    if s.name.endswith("_count")]
            hc = [s for s in fams["coredns_health_request_duration_seconds"][1]
                  if s.name.endswith("_count")]
            return bool(prog) and bool(hc) and hc[0].value >= 1

        wait_until(settled)
        sc.families = scrape(metrics)
        yield sc
    finally:
        if d is not None:
            d.stop()
        upstream.stop()
        cluster.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _status(port: int, path: str) -> int:
    with contextlib.suppress(OSError):
        return http_get(port, path)[0]
    return 0


# --- the server families -----------------------------------------------------------------

TYPES = {
    "coredns_build_info": "gauge",
    "coredns_panics": "counter",
    "coredns_plugin_enabled": "gauge",
    "coredns_dns_requests": "counter",
    "coredns_dns_do_requests": "counter",
    "coredns_dns_responses": "counter",
    "coredns_dns_request_duration_seconds": "histogram",
    "coredns_dns_request_size_bytes": "histogram",
    "coredns_dns_response_size_bytes": "histogram",
    "coredns_cache_entries": "gauge",
    "coredns_cache_hits": "counter",
    "coredns_cache_misses": "counter",
    "coredns_cache_requests": "counter",
    "coredns_cache_prefetch": "counter",
    "coredns_cache_drops": "counter",
    "coredns_cache_served_stale": "counter",
    "coredns_cache_evictions": "counter",
    "coredns_forward_healthcheck_broken": "counter",
    "coredns_forward_max_concurrent_rejects": "counter",
    "coredns_proxy_request_duration_seconds": "histogram",
    "coredns_proxy_healthcheck_failures": "counter",
    "coredns_proxy_conn_cache_hits": "counter",
    "coredns_proxy_conn_cache_misses": "counter",
    "coredns_kubernetes_dns_programming_duration_seconds": "histogram",
    "coredns_health_request_duration_seconds": "histogram",
    "coredns_health_request_failures": "counter",
    "coredns_reload_failed": "counter",
    "dnsd_secondary_annotation_errors": "counter",
    "dnsd_kubernetes_watch_events": "counter",
    "dnsd_kubernetes_relists": "counter",
    "dnsd_kubernetes_watch_errors": "counter",
}


def test_families_have_coredns_names_and_types(scenario: Scenario) -> None:
    got = {name: scenario.families[name][0] for name in TYPES if name in scenario.families}
    assert got == TYPES


def test_exposition_declares_type_lines_with_total_suffixes(scenario: Scenario) -> None:
    _, text = http_get(scenario.metrics_port, "/metrics")
    for name in ("coredns_dns_requests_total", "coredns_dns_responses_total",
                 "coredns_dns_do_requests_total", "coredns_panics_total",
                 "coredns_cache_hits_total", "coredns_reload_failed_total"):
        assert f"# TYPE {name} counter\n" in text
    for name in ("coredns_dns_request_duration_seconds", "coredns_dns_request_size_bytes",
                 "coredns_dns_response_size_bytes"):
        assert f"# TYPE {name} histogram\n" in text
    assert "_created" not in text  # CoreDNS exports no *_created series


def test_build_info_and_panics(scenario: Scenario) -> None:
    info = scenario.samples("coredns_build_info")
    assert list(info.values()) == [1.0]
    (key,) = info
    assert dict(key) == {"version": COREDNS_COMPAT, "revision": f"dnsd-{__version__}",
                         "goversion": dict(key)["goversion"]}
    assert dict(key)["goversion"].startswith("python3.")
    assert scenario.samples("coredns_panics_total") == {(): 0.0}


def test_plugin_enabled_lists_each_blocks_handler_plugins(scenario: Scenario) -> None:
    s = scenario.server
    expected = {labels(server=s, zone=zone, view="", name=name): 1.0
                for zone in (K8S, REV) for name in ("kubernetes", "cache", "prometheus")}
    expected |= {labels(server=s, zone=FWD, view="", name=name): 1.0
                 for name in ("forward", "cache", "prometheus")}
    # bind, health and ready configure the server and never see a query: like CoreDNS's
    # handler list, they are not "enabled" plugins of the zone.
    assert scenario.samples("coredns_plugin_enabled") == expected


def test_requests_total_exact(scenario: Scenario) -> None:
    counts = Counter((q.zone, "tcp" if q.tcp else "udp", q.qtype) for q in QUERIES)
    other = {"CAA", "SVCB"}  # not in CoreDNS's list of monitored types
    expected: dict[Labels, float] = {}
    for (zone, proto, qtype), n in counts.items():
        key = labels(server=scenario.server, zone=zone, view="", proto=proto, family="1",
                     type="other" if qtype in other else qtype)
        expected[key] = expected.get(key, 0.0) + n
    assert scenario.samples("coredns_dns_requests_total") == expected


def test_responses_total_exact(scenario: Scenario) -> None:
    counts = Counter((q.zone, q.rcode, q.plugin) for q in QUERIES)
    expected = {labels(server=scenario.server, zone=zone, view="", rcode=rcode, plugin=plugin): float(n)
                for (zone, rcode, plugin), n in counts.items()}
    assert scenario.samples("coredns_dns_responses_total") == expected


def test_do_requests_total_exact(scenario: Scenario) -> None:
    assert scenario.samples("coredns_dns_do_requests_total") == {
        labels(server=scenario.server, zone=K8S, view=""): 1.0,
    }


def _histograms(sc: Scenario, family: str) -> dict[Labels, tuple[list[tuple[float, float]], float, float]]:
    """{labels without le: ([(le, cumulative count)...], count, sum)}."""
    out: dict[Labels, tuple[list[tuple[float, float]], float, float]] = {}
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    counts: dict[Labels, float] = {}
    sums: dict[Labels, float] = {}
    for s in sc.families[family][1]:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        if s.name == family + "_bucket":
            buckets.setdefault(key, []).append((float(s.labels["le"]), s.value))
        elif s.name == family + "_count":
            counts[key] = s.value
        elif s.name == family + "_sum":
            sums[key] = s.value
    for key, points in buckets.items():
        out[key] = (sorted(points), counts[key], sums[key])
    assert set(out) == set(counts) == set(sums)
    return out


def _cumulative(values: list[int], bounds: list[float]) -> list[tuple[float, float]]:
    per = [0] * len(bounds)
    for v in values:
        per[bisect_left(bounds, v)] += 1
    running, out = 0, []
    for bound, n in zip(bounds, per, strict=True):
        running += n
        out.append((bound, float(running)))
    return out


@pytest.mark.parametrize("family, sizes_attr", [
    ("coredns_dns_request_size_bytes", "qsizes"),
    ("coredns_dns_response_size_bytes", "rsizes"),
])
def test_size_histograms_bucket_by_bucket(scenario: Scenario, family: str, sizes_attr: str) -> None:
    sizes: dict[tuple[str, str], list[int]] = getattr(scenario, sizes_attr)
    expected = {
        labels(server=scenario.server, zone=zone, view="", proto=proto):
            (_cumulative(values, SIZE_BOUNDS), float(len(values)), float(sum(values)))
        for (zone, proto), values in sizes.items()
    }
    assert _histograms(scenario, family) == expected


def test_request_duration_histogram_has_coredns_buckets(scenario: Scenario) -> None:
    hists = _histograms(scenario, "coredns_dns_request_duration_seconds")
    per_zone = Counter(q.zone for q in QUERIES)
    assert set(hists) == {labels(server=scenario.server, zone=z, view="") for z in per_zone}
    for key, (points, count, total) in hists.items():
        assert [le for le, _ in points] == TIME_BOUNDS
        assert count == per_zone[dict(key)["zone"]]
        assert points[-1][1] == count
        cumulative = [n for _, n in points]
        assert cumulative == sorted(cumulative)
        assert 0 < total < count * 2  # every query took well under two seconds


# --- cache and forward -----------------------------------------------------------------------

def test_cache_families(scenario: Scenario) -> None:
    s, kz, fz = scenario.server, f"{K8S},{REV}", FWD
    assert scenario.nonzero("coredns_cache_entries") == {
        # kubernetes block: A, SRV, web (TCP), db (DO), PTR / AAAA NODATA, NXDOMAIN
        labels(server=s, type="success", zones=kz, view=""): 5.0,
        labels(server=s, type="denial", zones=kz, view=""): 2.0,
        # forward block: www, multi, mx / www CAA, SVCB, HTTPS (NODATA), missing (NXDOMAIN)
        labels(server=s, type="success", zones=fz, view=""): 3.0,
        labels(server=s, type="denial", zones=fz, view=""): 4.0,
    }
    k8s_queries = sum(q.zone in (K8S, REV) for q in QUERIES)
    fwd_queries = sum(q.zone == FWD for q in QUERIES)
    assert scenario.nonzero("coredns_cache_requests_total") == {
        labels(server=s, zones=kz, view=""): float(k8s_queries),
        labels(server=s, zones=fz, view=""): float(fwd_queries),
    }
    assert scenario.nonzero("coredns_cache_hits_total") == {
        labels(server=s, type="success", zones=fz, view=""): 1.0,
    }
    assert scenario.nonzero("coredns_cache_misses_total") == {
        labels(server=s, zones=kz, view=""): float(k8s_queries),
        labels(server=s, zones=fz, view=""): float(fwd_queries - 1),
    }
    for empty in ("coredns_cache_prefetch_total", "coredns_cache_drops_total",
                  "coredns_cache_served_stale_total", "coredns_cache_evictions_total"):
        assert scenario.nonzero(empty) == {}, empty


def test_forward_and_proxy_families(scenario: Scenario) -> None:
    assert scenario.samples("coredns_forward_healthcheck_broken_total") == {(): 0.0}
    assert scenario.samples("coredns_forward_max_concurrent_rejects_total") == {(): 0.0}
    hists = _histograms(scenario, "coredns_proxy_request_duration_seconds")
    to = scenario.upstream
    upstream_rcodes = Counter(q.rcode for q in QUERIES if q.plugin == "forward")
    assert {k: count for k, (_, count, _) in hists.items()} == {
        labels(proxy_name="forward", to=to, rcode=rcode): float(n) for rcode, n in upstream_rcodes.items()
    }
    for points, _, _ in hists.values():
        assert [le for le, _ in points] == TIME_BOUNDS
    # Two TCP exchanges upstream (multi, HTTPS): one new connection, then one reused.  UDP is
    # not counted (CoreDNS counts its UDP connection cache too: a known gap of dnsd's forward).
    assert scenario.samples("coredns_proxy_conn_cache_misses_total") == {
        labels(proxy_name="forward", to=to, proto="tcp"): 1.0,
    }
    assert scenario.samples("coredns_proxy_conn_cache_hits_total") == {
        labels(proxy_name="forward", to=to, proto="tcp"): 1.0,
    }
    assert scenario.samples("coredns_proxy_healthcheck_failures_total") == {}


# --- kubernetes ------------------------------------------------------------------------------

def test_dns_programming_duration_from_the_trigger_time(scenario: Scenario) -> None:
    hists = _histograms(scenario, "coredns_kubernetes_dns_programming_duration_seconds")
    assert set(hists) == {labels(service_kind="cluster_ip")}
    points, count, total = hists[labels(service_kind="cluster_ip")]
    assert [le for le, _ in points] == PROGRAMMING_BOUNDS
    assert count == 1.0
    assert 10.0 <= total < 20.0  # the trigger time was 10 s (whole seconds) before the change
    assert dict(points)[8.192] == 0.0 and dict(points)[16.384] == 1.0


def test_secondary_annotation_errors(scenario: Scenario) -> None:
    assert scenario.samples("dnsd_secondary_annotation_errors_total") == {
        labels(reason="invalid_json"): 1.0,
    }


def test_watch_and_relist_counters(scenario: Scenario) -> None:
    assert scenario.samples("dnsd_kubernetes_relists_total") == {
        labels(resource=r, reason="initial"): 1.0
        for r in ("services", "namespaces", "endpoints", "pods")
    }
    events = scenario.samples("dnsd_kubernetes_watch_events_total")
    assert events[labels(resource="endpoints", type="ADDED")] == 1.0
    assert {dict(k)["type"] for k in events} <= {"ADDED", "MODIFIED", "DELETED", "BOOKMARK"}
    assert scenario.samples("dnsd_kubernetes_watch_errors_total") == {}


def test_health_self_check_metrics(scenario: Scenario) -> None:
    hists = _histograms(scenario, "coredns_health_request_duration_seconds")
    (points, count, _), = hists.values()
    assert [le for le, _ in points] == TIME_BOUNDS
    assert count >= 1
    assert scenario.samples("coredns_health_request_failures_total") == {(): 0.0}


# --- after the snapshot: deltas of further queries -----------------------------------------

def _delta(before: dict[Labels, float], after: dict[Labels, float]) -> dict[Labels, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def test_refused_outside_every_zone_is_counted_as_dropped(scenario: Scenario) -> None:
    before = Scenario(scenario.server, scenario.upstream, scenario.port, scenario.metrics_port,
                      scrape(scenario.metrics_port))
    msg = dns.message.make_query("nothing.test.", "A")
    assert dns.message.from_wire(exchange(scenario.port, msg.to_wire(), False)).rcode() == dns.rcode.REFUSED
    after = Scenario(scenario.server, scenario.upstream, scenario.port, scenario.metrics_port,
                     scrape(scenario.metrics_port))
    # CoreDNS: queries that enter no server block are counted under zone "dropped", no plugin.
    s = scenario.server
    assert _delta(before.samples("coredns_dns_requests_total"), after.samples("coredns_dns_requests_total")) == {
        labels(server=s, zone="dropped", view="", proto="udp", family="1", type="A"): 1.0,
    }
    assert _delta(before.samples("coredns_dns_responses_total"), after.samples("coredns_dns_responses_total")) == {
        labels(server=s, zone="dropped", view="", rcode="REFUSED", plugin=""): 1.0,
    }


def test_cache_hits_counted_for_prepared_answers(scenario: Scenario) -> None:
    """A repeat answered by the engine's hot path (prepared answers) is still a cache hit."""
    msg = dns.message.make_query("dual.demo.svc.cluster.local.", "A")
    before = scenario.samples("coredns_cache_hits_total")
    for _ in range(2):
        exchange(scenario.port, msg.to_wire(), False)
    after = Scenario(scenario.server, scenario.upstream, scenario.port, scenario.metrics_port,
                     scrape(scenario.metrics_port))
    assert _delta(before, after.samples("coredns_cache_hits_total")) == {
        labels(server=scenario.server, type="success", zones=f"{K8S},{REV}", view=""): 1.0,
    }
