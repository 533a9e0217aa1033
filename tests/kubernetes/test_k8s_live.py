"""Live behaviour against the API-server emulator: watch updates made through the official
``kubernetes`` client, 410 relists without flapping, an API outage, the pre-sync SERVFAIL
(§8, §10), the core/v1 Endpoints fallback, and the kubeadm Corefile.

The module shares one DevCluster + dnsd for the watch tests (the 30 s outage runs last); the
other tests start their own.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from k8s_support import (
    LOCAL_IPS,
    LOCAL_V4,
    ask,
    endpoint,
    endpoint_slice,
    expect,
    namespace,
    port,
    section_texts,
    serial_of,
    service,
    soa,
    start_cluster,
    start_dnsd,
    wait_for,
)
from kubernetes import client as k8s
from support import ROOT, Dnsd, free_port

from dnsd.chain import IMPLEMENTED
from dnsd.devcluster import DevCluster

pytestmark = pytest.mark.timeout(150)

NS = "live"
Z = "cluster.local."
http = port("http", 80)

STABLE = {  # names that exist before, during and after every fault, with their answers
    f"stable.{NS}.svc.{Z}": ["10.96.7.1"],
    f"s-0.stable.{NS}.svc.{Z}": ["10.7.0.1"],
    f"stablehl.{NS}.svc.{Z}": ["10.7.1.1", "10.7.1.2"],
}


def base_objects() -> list[dict]:
    return [
        namespace(NS),
        service(NS, "stable", ips=["10.96.7.1"], ports=[http]),
        endpoint_slice(NS, "stable-x", "stable", [endpoint("10.7.0.1", hostname="s-0")], [http]),
        service(NS, "stablehl", headless=True, ports=[http]),
        endpoint_slice(NS, "stablehl-x", "stablehl", [endpoint("10.7.1.1"), endpoint("10.7.1.2")], [http]),
    ]


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[DevCluster, int]]:
    cluster = start_cluster(base_objects())
    server = start_dnsd(f"cluster.local:{{PORT}} {{\n    kubernetes {{\n        endpoint {cluster.url}\n    }}\n}}\n",
                        ready_names=[(name, "A") for name in STABLE])
    try:
        yield cluster, server.port
    finally:
        server.stop()
        cluster.stop()


@pytest.fixture(scope="module")
def api(live: tuple[DevCluster, int]) -> Iterator[k8s.ApiClient]:
    conf = k8s.Configuration(host=live[0].url)
    with k8s.ApiClient(conf) as client:
        yield client


def addresses(port: int, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    r = ask(port, name, rdtype)
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def within_1s(predicate: Any, what: str) -> float:
    took = wait_for(predicate, 1.0, f"{what} within 1 s", interval=0.02)
    return took


class Prober:
    """Queries the stable names round robin from a thread; keeps every deviation."""

    def __init__(self, port: int, names: dict[str, list[str]], interval: float = 0.0) -> None:
        self.port, self.names, self.interval = port, names, interval
        self.queries = 0
        self.bad: list[tuple[float, str, str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        items = list(self.names.items())
        i = 0
        while not self._stop.is_set():
            name, want = items[i % len(items)]
            i += 1
            try:
                rcode, got = addresses(self.port, name)
            except Exception as exc:  # noqa: BLE001 - a timeout is a failure too
                rcode, got = type(exc).__name__, []
            self.queries += 1
            if rcode != "NOERROR" or got != sorted(want):
                self.bad.append((time.monotonic(), name, rcode, got))
            if self.interval:
                self._stop.wait(self.interval)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def lists_of(cluster: DevCluster, path_suffix: str) -> int:
    """How many list (not watch) requests for a collection the emulator received."""
    return sum(1 for method, path, q in cluster.request_log
               if method == "GET" and path.endswith(path_suffix) and q.get("watch") not in ("true", "1"))


# --- watch updates through the official client --------------------------------------------------

def test_service_create_modify_delete(live: tuple[DevCluster, int], api: k8s.ApiClient) -> None:
    cluster, dport = live
    core = k8s.CoreV1Api(api)
    name = f"web.{NS}.svc.{Z}"
    core.create_namespaced_service(NS, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                        "spec": {"ports": [{"name": "http", "port": 80}]}})
    ip = core.read_namespaced_service("web", NS).spec.cluster_ip
    within_1s(lambda: addresses(dport, name) == ("NOERROR", [ip]), "new service answers")
    expect(dport, f"_http._tcp.{name}", "SRV", answer=[f"_http._tcp.{name} 5 IN SRV 0 100 80 {name}"],
           additional=[f"{name} 5 IN A {ip}"])
    core.patch_namespaced_service("web", NS, {"spec": {"ports": [{"name": "https", "port": 443}]}})
    within_1s(lambda: addresses(dport, f"_https._tcp.{name}", "SRV") == ("NOERROR", [f"0 100 443 {name}"]),
              "modified port")
    expect(dport, f"_http._tcp.{name}", "SRV", "NXDOMAIN", authority=[soa(Z)])
    core.delete_namespaced_service("web", NS)
    within_1s(lambda: addresses(dport, name)[0] == "NXDOMAIN", "deleted service is gone")


def test_endpointslice_create_modify_delete(live: tuple[DevCluster, int], api: k8s.ApiClient) -> None:
    cluster, dport = live
    core, disco = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
    name = f"hl.{NS}.svc.{Z}"
    core.create_namespaced_service(NS, {"metadata": {"name": "hl"},
                                        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}})
    within_1s(lambda: addresses(dport, name)[0] == "NXDOMAIN", "headless without endpoints")
    body = endpoint_slice(NS, "hl-1", "hl", [endpoint("10.8.0.1", hostname="a")], [http])
    disco.create_namespaced_endpoint_slice(NS, body)
    within_1s(lambda: addresses(dport, name) == ("NOERROR", ["10.8.0.1"]), "slice added")
    body["endpoints"] = [endpoint("10.8.0.1", hostname="a", ready=False), endpoint("10.8.0.2", hostname="b")]
    disco.replace_namespaced_endpoint_slice("hl-1", NS, body)
    within_1s(lambda: addresses(dport, name) == ("NOERROR", ["10.8.0.2"]), "slice modified")
    expect(dport, f"a.{name}", "A", "NXDOMAIN", authority=[soa(Z)])
    expect(dport, f"b.{name}", "A", answer=[f"b.{name} 5 IN A 10.8.0.2"])
    disco.delete_namespaced_endpoint_slice("hl-1", NS)
    within_1s(lambda: addresses(dport, name)[0] == "NXDOMAIN", "slice deleted")
    core.delete_namespaced_service("hl", NS)


def test_serial_bumps_on_changes_not_on_namespaces(live: tuple[DevCluster, int]) -> None:
    cluster, dport = live
    before = serial_of(dport, Z)
    time.sleep(max(0.0, before + 1.05 - time.time()))  # the serial has one-second resolution
    cluster.apply(service(NS, "bump", ips=["10.96.7.9"], ports=[http]))
    within_1s(lambda: serial_of(dport, Z) > before, "serial bump after a service add")
    after = serial_of(dport, Z)
    assert after <= time.time() + 1
    time.sleep(max(0.0, after + 1.05 - time.time()))
    cluster.apply(namespace("quiet-ns"))
    within_1s(lambda: addresses(dport, f"quiet-ns.svc.{Z}") == ("NOERROR", []), "namespace visible")
    assert serial_of(dport, Z) == after  # Namespace events do not bump the serial
    cluster.delete("Service", "bump", NS)


@pytest.mark.skipif(LOCAL_V4 is None, reason="no non-loopback IPv4 on this machine")
def test_ns_discovery_follows_a_headless_service(live: tuple[DevCluster, int]) -> None:
    """§5.2: nothing fronts this server -> ns.dns with the local IPs; a headless service whose
    slice holds a local IP -> every address of that slice under its endpoint name."""
    cluster, dport = live
    fallback_glue = [f"ns.dns.{Z} 5 IN {'AAAA' if ':' in ip else 'A'} {ip}" for ip in LOCAL_IPS]
    expect(dport, Z, "NS", answer=[f"{Z} 5 IN NS ns.dns.{Z}"], additional=fallback_glue)
    cluster.apply(service(NS, "dns-hl", headless=True, ports=[port("dns", 53, "UDP")]))
    cluster.apply(endpoint_slice(NS, "dns-hl-x", "dns-hl", [endpoint(LOCAL_V4, hostname="dns-0"),
                                                          endpoint("172.0.9.2", hostname="dns-1")],
                                 [port("dns", 53, "UDP")]))
    names = [f"dns-0.dns-hl.{NS}.svc.{Z}", f"dns-1.dns-hl.{NS}.svc.{Z}"]
    within_1s(lambda: addresses(dport, Z, "NS") == ("NOERROR", names), "NS from the headless service")
    expect(dport, Z, "NS", answer=[f"{Z} 5 IN NS {n}" for n in names],
           additional=[f"{names[0]} 5 IN A {LOCAL_V4}", f"{names[1]} 5 IN A 172.0.9.2"])
    expect(dport, f"ns.dns.{Z}", "A", answer=[f"ns.dns.{Z} 5 IN A {LOCAL_V4}", f"ns.dns.{Z} 5 IN A 172.0.9.2"])
    cluster.delete("Service", "dns-hl", NS)
    cluster.delete("EndpointSlice", "dns-hl-x", NS)
    within_1s(lambda: addresses(dport, Z, "NS") == ("NOERROR", [f"ns.dns.{Z}"]), "back to ns.dns")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().strip()
    except urllib.error.HTTPError as err:
        return err.code, err.read().strip()


def test_kubeconfig_instead_of_endpoint(live: tuple[DevCluster, int], tmp_path: Path) -> None:
    """``kubeconfig FILE CONTEXT`` (§2) reaches the same cluster as ``endpoint``."""
    cluster, _ = live
    path = cluster.kubeconfig(tmp_path / "kubeconfig")
    server = start_dnsd(f"cluster.local:{{PORT}} {{\n    kubernetes {{\n        kubeconfig {path} dnsd-devcluster\n"
                        "    }\n}\n", ready_names=[(f"stable.{NS}.svc.{Z}", "A")])
    try:
        expect(server.port, f"stablehl.{NS}.svc.{Z}", "A",
               answer=[f"stablehl.{NS}.svc.{Z} 5 IN A 10.7.1.1", f"stablehl.{NS}.svc.{Z} 5 IN A 10.7.1.2"])
    finally:
        server.stop()


# --- 410 relists ---------------------------------------------------------------------------------

def test_expired_watches_relist_without_flapping(live: tuple[DevCluster, int]) -> None:
    cluster, dport = live
    lists_before = lists_of(cluster, "/api/v1/services")
    with Prober(dport, STABLE) as prober:
        cluster.faults.expire_all_watches()  # every watch gets 410 Gone, new ones too
        cluster.apply(service(NS, "after-expire", ips=["10.96.7.20"], ports=[http]))
        time.sleep(2.0)  # the reflectors relist, re-watch, get 410 again, back off
        expiring_lists = lists_of(cluster, "/api/v1/services") - lists_before
        cluster.faults.clear()
        # lists still work while watches expire: the change is there already
        wait_for(lambda: addresses(dport, f"after-expire.{NS}.svc.{Z}") == ("NOERROR", ["10.96.7.20"]),
                 10, "change made while watches expired")
        # every reflector gets its watch back after its backoff
        wait_for(lambda: cluster.open_watches >= 3, 15, "watches re-established")
        cluster.apply(service(NS, "after-clear", ips=["10.96.7.21"], ports=[http]))
        within_1s(lambda: addresses(dport, f"after-clear.{NS}.svc.{Z}") == ("NOERROR", ["10.96.7.21"]),
                  "watch events flow again")
    assert prober.queries > 50
    assert prober.bad == [], prober.bad[:5]
    assert expiring_lists >= 1, "no relist happened"
    assert expiring_lists <= 6, f"{expiring_lists} lists in 2 s: relisting in a tight loop"


def test_compacted_history_relists_without_flapping(live: tuple[DevCluster, int]) -> None:
    cluster, dport = live
    wait_for(lambda: cluster.open_watches >= 3, 15, "watches established")
    cluster.apply(service(NS, "doomed", ips=["10.96.7.30"], ports=[http]))
    within_1s(lambda: addresses(dport, f"doomed.{NS}.svc.{Z}")[0] == "NOERROR", "doomed exists")
    lists_before = lists_of(cluster, "/api/v1/services")
    with Prober(dport, STABLE) as prober:
        cluster.faults.down()  # watches drop; the reflectors keep their resourceVersion
        cluster.apply(service(NS, "after-compact", ips=["10.96.7.31"], ports=[http]))
        cluster.delete("Service", "doomed", NS)
        cluster.apply(endpoint_slice(NS, "stablehl-y", "stablehl", [endpoint("10.7.1.3")], [http]))
        cluster.faults.compact()  # their resourceVersion is now too old: 410 on re-watch
        cluster.faults.up()
        wait_for(lambda: addresses(dport, f"after-compact.{NS}.svc.{Z}") == ("NOERROR", ["10.96.7.31"])
                 and addresses(dport, f"doomed.{NS}.svc.{Z}")[0] == "NXDOMAIN", 20, "relist after compaction")
        wait_for(lambda: len(addresses(dport, f"stablehl.{NS}.svc.{Z}")[1]) == 3, 20, "slice relisted")
        prober.names = {**STABLE, f"stablehl.{NS}.svc.{Z}": ["10.7.1.1", "10.7.1.2", "10.7.1.3"]}
        time.sleep(0.3)
    bad = [b for b in prober.bad if not (b[1].startswith("stablehl.") and len(b[3]) in (2, 3) and b[2] == "NOERROR")]
    assert prober.queries > 50
    assert bad == [], bad[:5]
    assert lists_of(cluster, "/api/v1/services") > lists_before
    cluster.delete("EndpointSlice", "stablehl-y", NS)


# --- API server down (runs last in this module's shared setup) -----------------------------------

def test_api_outage_keeps_answering_then_catches_up(live: tuple[DevCluster, int]) -> None:
    cluster, dport = live
    with Prober(dport, STABLE, interval=0.5) as prober:
        cluster.faults.down()
        started = time.monotonic()
        time.sleep(3)
        cluster.apply(service(NS, "during-outage", ips=["10.96.7.40"], ports=[http]))
        time.sleep(max(0.0, 30 - (time.monotonic() - started)))
        cluster.faults.up()
        assert addresses(dport, f"during-outage.{NS}.svc.{Z}")[0] == "NXDOMAIN"  # not seen yet
    assert prober.queries >= 55  # every 0.5 s for 30 s
    assert prober.bad == [], prober.bad[:5]
    # Reconnection waits for the reflector's backoff (capped at 30 s, like client-go's).
    wait_for(lambda: addresses(dport, f"during-outage.{NS}.svc.{Z}") == ("NOERROR", ["10.96.7.40"]),
             40, "change made during the outage", interval=0.2)
    for name, want in STABLE.items():
        assert addresses(dport, name) == ("NOERROR", want)


# --- pre-sync ---------------------------------------------------------------------------------------

def test_presync_servfail_then_sync(tmp_path: Path) -> None:
    cluster = start_cluster([service("default", "kubernetes", ips=["10.96.0.1"], ports=[port("https", 443)])])
    cluster.faults.down()
    ready_port = free_port()
    corefile = (
        "cluster.local:{PORT} ft.local:{PORT} {\n"
        f"    ready 127.0.0.1:{ready_port}\n"
        "    kubernetes cluster.local ft.local {\n"
        f"        endpoint {cluster.url}\n"
        "        startup_timeout 1s\n"
        "        fallthrough ft.local\n"
        "    }\n"
        "    whoami\n"
        "}\n"
    )
    server = Dnsd(corefile)
    try:
        t0 = time.monotonic()
        server.start()  # returns once the server answers
        took = time.monotonic() - t0
        # ~2.5 s here: 1 s of waiting plus the interpreter's start-up (which alone takes
        # several seconds on a loaded machine; test_startup_timeout_bounds_the_wait times
        # the wait itself)
        assert took < 10, f"start-up took {took:.1f}s"
        log = server.output()
        # logged every 0.5 s while waiting: 2 lines for 1 s (10 with the default 5 s)
        assert 2 <= log.count("waiting for Kubernetes API before starting server") <= 3, log
        assert "starting server with unsynced Kubernetes API" in log
        # misses are SERVFAIL with the SOA (AA set), the apex still answers
        expect(server.port, "nosuch.default.svc.cluster.local.", "A", "SERVFAIL", authority=[soa(Z)])
        expect(server.port, "kubernetes.default.svc.cluster.local.", "A", "SERVFAIL", authority=[soa(Z)])
        expect(server.port, "foo.cluster.local.", "TXT", "SERVFAIL", authority=[soa(Z)])
        expect(server.port, Z, "SOA", answer=[soa(Z)])
        expect(server.port, "svc.cluster.local.", "A", authority=[soa(Z)])  # NODATA stays NODATA
        # fallthrough wins over the pre-sync SERVFAIL
        r = ask(server.port, "nosuch.default.svc.ft.local.", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert "nosuch.default.svc.ft.local. 0 IN A 127.0.0.1" in section_texts(r.additional)
        # readiness (§10): not ready until synced, and the ready plugin names us
        assert http_get(ready_port, "/ready") == (503, b"kubernetes")
        cluster.faults.up()
        # every informer must list before misses turn into NXDOMAIN (each retries on its own
        # backoff, so the services may be back before the namespaces)
        wait_for(lambda: addresses(server.port, "nosuch.default.svc.cluster.local.")[0] == "NXDOMAIN",
                 30, "sync after the API came up", interval=0.2)
        expect(server.port, "kubernetes.default.svc.cluster.local.", "A",
               answer=["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"])
        expect(server.port, "nosuch.default.svc.cluster.local.", "A", "NXDOMAIN", authority=[soa(Z)])
        assert http_get(ready_port, "/ready") == (200, b"OK")
    finally:
        server.stop()
        cluster.stop()


def test_startup_timeout_bounds_the_wait() -> None:
    """Plugin start-up against an API server that is down returns after startup_timeout
    (timed in-process, without the interpreter's start-up; the first, untimed-for-bounds run
    with 0s also pays the API client's one-time set-up)."""
    import asyncio

    from dnsd.corefile import parse
    from dnsd.serve.runtime import Runtime

    cluster = start_cluster()
    cluster.faults.down()

    async def start_and_stop(timeout: str) -> tuple[float, bool]:
        runtime = Runtime.build(parse(
            f"cluster.local:1053 {{\n kubernetes {{\n  endpoint {cluster.url}\n  startup_timeout {timeout}\n }}\n}}\n"))
        t0 = time.monotonic()
        await runtime.start_plugins()
        took = time.monotonic() - t0
        synced = runtime.plugins[0].ready()
        await runtime.stop_plugins()
        return took, synced

    try:
        asyncio.run(start_and_stop("0s"))
        no_wait, synced0 = asyncio.run(start_and_stop("0s"))
        one_second, synced1 = asyncio.run(start_and_stop("1s"))
    finally:
        cluster.stop()
    assert not synced0 and not synced1
    assert no_wait < 0.5, f"startup_timeout 0s still waited {no_wait:.2f}s"
    assert 0.95 <= one_second <= 1.8, f"startup_timeout 1s waited {one_second:.2f}s"


# --- core/v1 Endpoints fallback -------------------------------------------------------------------

FB = "fb"


def _fallback_services() -> list[dict]:
    svc6 = service(FB, "hl6", headless=True, ports=[http])
    svc6["spec"]["ipFamilies"] = ["IPv6"]
    return [
        namespace(FB),
        service(FB, "web", ips=["10.96.5.1"], ports=[http]),
        service(FB, "empty", ips=["10.96.5.2"], ports=[http]),
        service(FB, "hl", headless=True, ports=[http, port("metrics", 9090)]),
        svc6,
        service(FB, "multi", headless=True, ports=[http, port("grpc", 9000)]),
        service(FB, "nohl", headless=True, ports=[http]),
        service(FB, "ext", external="web.fb.svc.cluster.local"),
    ]


ENDPOINTS = {  # service -> (endpoints, ports), written with DevCluster.service_endpoints
    "web": ([{"ip": "10.5.0.1", "hostname": "web-0"}, {"ip": "10.5.0.2", "pod": "web-pod-2"},
             {"ip": "10.5.0.3", "ready": False}], [http]),
    "hl": ([{"ip": "10.5.1.1", "hostname": "a"}, {"ip": "10.5.1.2"}, {"ip": "10.5.1.3", "ready": False}],
           [http, port("metrics", 9090)]),
    "hl6": ([{"ip": "fd00:5::1", "hostname": "six"}, {"ip": "fd00:5::2"}], [http]),
    "nohl": ([{"ip": "10.5.3.1", "ready": False}], [http]),
}
# A Service whose endpoints have different ports: two slices, or one Endpoints with two subsets.
MULTI_SLICES = [
    endpoint_slice(FB, "multi-a", "multi", [endpoint("10.5.2.1", hostname="m-a")], [http]),
    endpoint_slice(FB, "multi-b", "multi", [endpoint("10.5.2.2")], [port("grpc", 9000)]),
]
MULTI_ENDPOINTS = {
    "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "multi", "namespace": FB},
    "subsets": [
        {"addresses": [{"ip": "10.5.2.1", "hostname": "m-a"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.5.2.2"}], "ports": [{"name": "grpc", "port": 9000, "protocol": "TCP"}]},
    ],
}

FALLBACK_QUERIES = [
    (f"{n}.{FB}.svc.{Z}", t) for n in ("web", "empty", "hl", "hl6", "multi", "nohl", "ext", "nosuch")
    for t in ("A", "AAAA", "SRV", "TXT", "CNAME")
] + [
    (f"_http._tcp.web.{FB}.svc.{Z}", "SRV"), (f"_http._tcp.hl.{FB}.svc.{Z}", "SRV"),
    (f"_metrics._tcp.hl.{FB}.svc.{Z}", "SRV"), (f"_http._tcp.multi.{FB}.svc.{Z}", "SRV"),
    (f"_grpc._tcp.multi.{FB}.svc.{Z}", "SRV"), (f"_grpc._tcp.hl.{FB}.svc.{Z}", "SRV"),
    (f"web-0.web.{FB}.svc.{Z}", "A"), (f"10-5-0-2.web.{FB}.svc.{Z}", "A"), (f"10-5-0-3.web.{FB}.svc.{Z}", "A"),
    (f"a.hl.{FB}.svc.{Z}", "A"), (f"a.hl.{FB}.svc.{Z}", "SRV"), (f"10-5-1-2.hl.{FB}.svc.{Z}", "A"),
    (f"six.hl6.{FB}.svc.{Z}", "AAAA"), (f"fd00-5--2.hl6.{FB}.svc.{Z}", "AAAA"),
    (f"m-a.multi.{FB}.svc.{Z}", "SRV"), (f"10-5-2-2.multi.{FB}.svc.{Z}", "SRV"),
    ("1.0.5.10.in-addr.arpa.", "PTR"), ("2.0.5.10.in-addr.arpa.", "PTR"), ("3.0.5.10.in-addr.arpa.", "PTR"),
    ("1.1.5.10.in-addr.arpa.", "PTR"), ("1.2.5.10.in-addr.arpa.", "PTR"), ("2.2.5.10.in-addr.arpa.", "PTR"),
    ("1.5.96.10.in-addr.arpa.", "PTR"),
    (dns.reversename.from_address("fd00:5::1").to_text(), "PTR"),
    (dns.reversename.from_address("fd00:5::2").to_text(), "PTR"),
    (Z, "NS"), (Z, "SOA"), (f"{FB}.svc.{Z}", "A"),
]


def _canonical(r: dns.message.Message) -> tuple:
    return (r.rcode(), r.flags, section_texts(r.answer), section_texts(r.authority), section_texts(r.additional))


def test_endpoints_fallback_answers_like_endpointslices() -> None:
    slices = start_cluster(_fallback_services())
    legacy = start_cluster(_fallback_services(), endpointslices=False)
    for svc, (eps, ports) in ENDPOINTS.items():
        slices.service_endpoints(FB, svc, eps, ports, write_slices=True, write_endpoints=True)
        legacy.service_endpoints(FB, svc, eps, ports, write_slices=False, write_endpoints=True)
    for obj in MULTI_SLICES:
        slices.apply(obj)
    legacy.apply(MULTI_ENDPOINTS)
    port2 = free_port()
    block = ("cluster.local:{P} in-addr.arpa:{P} ip6.arpa:{P} {{\n"
             "    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        endpoint {U}\n    }}\n}}\n")
    corefile = block.format(P="{PORT}", U=slices.url) + block.format(P=port2, U=legacy.url)
    ready = f"multi.{FB}.svc.{Z}"
    server = start_dnsd(corefile, ready_names=[(ready, "A")])
    try:
        wait_for(lambda: addresses(port2, ready)[0] == "NOERROR", 20, "Endpoints-only block synced")
        assert "falling back to core/v1 Endpoints" in server.output()
        differences = []
        positive = 0
        for qname, qtype in FALLBACK_QUERIES:
            a = _canonical(ask(server.port, qname, qtype))
            b = _canonical(ask(port2, qname, qtype))
            positive += bool(a[2])
            if a != b:
                differences.append((qname, qtype, a, b))
        assert differences == []
        assert positive >= 25  # the list is not just negative answers
        # the per-subset ports of the Endpoints object are kept apart
        expect(port2, f"_grpc._tcp.multi.{FB}.svc.{Z}", "SRV",
               answer=[f"_grpc._tcp.multi.{FB}.svc.{Z} 5 IN SRV 0 100 9000 10-5-2-2.multi.{FB}.svc.{Z}"],
               additional=[f"10-5-2-2.multi.{FB}.svc.{Z} 5 IN A 10.5.2.2"])
    finally:
        server.stop()
        slices.stop()
        legacy.stop()


# --- the kubeadm Corefile -----------------------------------------------------------------------

KUBEADM_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


class StubUpstream:
    """A UDP+TCP DNS server on 127.0.0.1 answering NXDOMAIN to everything (forward's upstream)."""

    def __init__(self) -> None:
        import socket
        import socketserver

        self.port = free_port()

        def reply(data: bytes) -> bytes:
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NXDOMAIN)
            return r.to_wire()

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(reply(data), self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    head = self.rfile.read(2)
                    if len(head) < 2:
                        return
                    out = reply(self.rfile.read(int.from_bytes(head, "big")))
                    self.wfile.write(len(out).to_bytes(2, "big") + out)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        for srv in (self.udp, self.tcp):
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        del socket

    def stop(self) -> None:
        for srv in (self.udp, self.tcp):
            srv.shutdown()
            srv.server_close()


def kubeadm_corefile_for_test(text: str, url: str, upstream: int) -> tuple[str, dict[str, int]]:
    """The kubeadm Corefile made runnable on loopback: a free DNS port, ``endpoint`` added,
    listener addresses on 127.0.0.1 free ports, forward to a local stub; a directive dnsd
    does not implement yet is replaced by a comment saying so."""
    ports = {"health": free_port(), "ready": free_port(), "prometheus": free_port()}
    out: list[str] = []
    skipping = 0  # brace depth of a dropped directive's block
    for line in text.splitlines():
        stripped = line.strip()
        if skipping:
            skipping += stripped.count("{") - stripped.count("}")
            continue
        if line.startswith(".:53"):
            out.append(line.replace(".:53", ".:{PORT}"))
            continue
        words = stripped.split()
        name = words[0] if words else ""
        indent = line[: len(line) - len(line.lstrip())]
        if name and name != "}" and line.startswith("    ") and not line.startswith("     ") \
                and name not in IMPLEMENTED:
            out.append(f"{indent}# {name}: not implemented in dnsd yet, removed for this test")
            skipping = stripped.count("{") - stripped.count("}")
            continue
        if name == "health":  # :8080 may be taken; 5 s of lameduck would only slow the test down
            out.append(f"{indent}health 127.0.0.1:{ports['health']} {{")
            continue
        if name == "lameduck":
            out.append(f"{indent}lameduck 100ms")
            continue
        if name == "ready":
            out.append(f"{indent}ready 127.0.0.1:{ports['ready']}")
            continue
        if name == "prometheus":
            out.append(f"{indent}prometheus 127.0.0.1:{ports['prometheus']}")
            continue
        if name == "forward":  # the machine's resolvers are not ours to query
            out.append(f"{indent}forward . 127.0.0.1:{upstream} {{")
            continue
        out.append(line)
        if name == "kubernetes":
            out.append(f"{indent}   endpoint {url}")
    return "\n".join(out) + "\n", ports


def test_kubeadm_corefile() -> None:
    example = ROOT / "Corefile.example"
    text = example.read_text() if example.exists() else KUBEADM_COREFILE
    assert re.search(r"kubernetes cluster\.local in-addr\.arpa ip6\.arpa", text)
    cluster = start_cluster([
        service("default", "kubernetes", ips=["10.96.0.1"], ports=[port("https", 443)]),
        endpoint_slice("default", "kubernetes-x", "kubernetes", [endpoint("172.18.0.2")], [port("https", 6443)]),
        service("kube-system", "kube-dns", ips=["10.96.0.10"],
                ports=[port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP"), port("metrics", 9153)]),
    ])
    upstream = StubUpstream()
    corefile, ports = kubeadm_corefile_for_test(text, cluster.url, upstream.port)
    server = None
    try:
        server = start_dnsd(corefile, ready_names=[("kubernetes.default.svc.cluster.local.", "A")])
        expect(server.port, "kubernetes.default.svc.cluster.local.", "A",
               answer=["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"])
        expect(server.port, "_https._tcp.kubernetes.default.svc.cluster.local.", "SRV",
               answer=["_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 0 100 443 "
                       "kubernetes.default.svc.cluster.local."],
               additional=["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"])
        expect(server.port, "kube-dns.kube-system.svc.cluster.local.", "SRV",
               answer=["kube-dns.kube-system.svc.cluster.local. 30 IN SRV 0 33 53 kube-dns.kube-system.svc.cluster.local.",
                       "kube-dns.kube-system.svc.cluster.local. 30 IN SRV 0 33 9153 kube-dns.kube-system.svc.cluster.local."],
               additional=["kube-dns.kube-system.svc.cluster.local. 30 IN A 10.96.0.10"])
        expect(server.port, "1.0.96.10.in-addr.arpa.", "PTR",
               answer=["1.0.96.10.in-addr.arpa. 30 IN PTR kubernetes.default.svc.cluster.local."])
        expect(server.port, "cluster.local.", "SOA", answer=[soa(Z, 30)])
        expect(server.port, "nosuch.default.svc.cluster.local.", "A", "NXDOMAIN", authority=[soa(Z, 30)])
        if "forward" in IMPLEMENTED:
            # a reverse miss falls through to forward, whose upstream says NXDOMAIN
            r = ask(server.port, "9.9.9.10.in-addr.arpa.", "PTR")
            assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
        if "ready" in IMPLEMENTED:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['ready']}/ready", timeout=3) as resp:
                assert (resp.status, resp.read().strip()) == (200, b"OK")
        if "health" in IMPLEMENTED:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['health']}/health", timeout=3) as resp:
                assert resp.status == 200
    finally:
        if server is not None:
            server.stop()
        upstream.stop()
        cluster.stop()
