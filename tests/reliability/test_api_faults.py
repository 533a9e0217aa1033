"""The kubernetes plugin under API-server faults, through the emulator's fault switches.

Each test serves a cluster zone in-process from a DevCluster, keeps a thread querying names
that exist before and after the fault (over UDP, like a pod would), injects one kind of fault
while changing the cluster, then heals it.  Throughout, every one of those queries must be
answered from the last good state (zero failures); afterwards the plugin's whole index must
equal an index built from a fresh list of the emulator (and every service name and PTR answers
as the API says), without any restart: recovery is automatic.

The reflector's backoff cap is shortened from 30 s to ``DNSD_FAULT_BACKOFF_CAP`` (default 2 s)
so that recovery after a long outage stays within a short test run; the outage lasts
``DNSD_FAULT_OUTAGE`` seconds (default 20).  The long run, with the real backoff::

    DNSD_FAULT_OUTAGE=60 DNSD_FAULT_BACKOFF_CAP=30 python -m pytest -q -s \\
        tests/reliability/test_api_faults.py -k api_server_gone
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from k8s_support import port, service
from upstream import Running, serve_corefile

from dnsd.devcluster import DevCluster
from dnsd.plugins.kubernetes import objects, reflector
from dnsd.plugins.kubernetes.index import Index

OUTAGE = float(os.environ.get("DNSD_FAULT_OUTAGE", "20"))
BACKOFF_CAP = float(os.environ.get("DNSD_FAULT_BACKOFF_CAP", "2"))
RECOVERY = BACKOFF_CAP * 2 + 15  # seconds allowed to converge once the fault is gone
NS = "app"
ZONE = "cluster.local."


# --- the cluster --------------------------------------------------------------------------------


def svc_name(i: int) -> str:
    return f"svc-{i:03d}"


def add_service(cluster: DevCluster, name: str, ns: str = NS) -> None:
    cluster.apply(service(ns, name, ports=[port("http", 80)]))
    cluster.service_endpoints(ns, name, [{"ip": f"10.244.{len(name)}.{hash(name) % 200 + 1}"}],
                              [{"name": "http", "port": 8080}])


def build_world(n: int = 40) -> DevCluster:
    cluster = DevCluster(bookmark_interval=0.5).start()
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for i in range(n):
        add_service(cluster, svc_name(i))
    cluster.apply(service(NS, "db", headless=True, ports=[port("pg", 5432)]))
    cluster.service_endpoints(NS, "db", [{"ip": f"10.244.9.{i}", "hostname": f"db-{i}"} for i in (1, 2, 3)],
                              [{"name": "pg", "port": 5432}])
    return cluster


def cluster_ip(cluster: DevCluster, name: str, ns: str = NS) -> str:
    obj = cluster.get("Service", name, ns)
    assert obj is not None
    return str(obj["spec"]["clusterIP"])


# --- comparing the index with the API -----------------------------------------------------------


def fresh_index(cluster: DevCluster) -> Index:
    ix = Index()
    ix.replace("namespaces", [objects.namespace(o) for o in cluster.list("Namespace")])
    ix.replace("services", [objects.service(o) for o in cluster.list("Service")])
    ix.replace("endpointslices", [objects.endpoint_slice(o) for o in cluster.list("EndpointSlice")])
    return ix


def index_state(ix: Index) -> dict[str, Any]:
    """Everything answers are made of, without resourceVersions."""
    return {
        "namespaces": set(ix.namespaces),
        "services": dict(ix.services),
        "slices": {k: dict(group) for k, group in ix.slices.items()},
        "slice_owner": dict(ix.slice_owner),
        "views": {k: (v.svc, v.addresses, v.endpoint_ips, v.ptr_only)
                  for k, v in ix.views.items()},
        "cluster_ip_owners": {ip: sorted(keys) for ip, keys in ix.cluster_ip_owners.items()},
        "endpoint_owners": {ip: sorted(o) for ip, o in ix.endpoint_owners.items()},
    }


async def converged(plugin: Any, cluster: DevCluster, timeout: float = RECOVERY) -> float:
    """Wait until the plugin's index equals a fresh list of the emulator; seconds taken."""
    start = time.monotonic()
    while True:
        want = index_state(fresh_index(cluster))
        if index_state(plugin.index) == want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            got = index_state(plugin.index)
            diff = {k: (len(got[k]), len(want[k])) for k in want if got[k] != want[k]}
            raise AssertionError(f"index never matched the API server: {diff}")
        await asyncio.sleep(0.1)


def check_every_name(port_: int, cluster: DevCluster) -> None:
    """Every service of the API answers its ClusterIP, and that IP's PTR names it."""
    for obj in cluster.list("Service"):
        meta, spec = obj["metadata"], obj["spec"]
        name = f"{meta['name']}.{meta['namespace']}.svc.{ZONE}"
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port_, timeout=3)
        assert r.rcode() == dns.rcode.NOERROR, name
        got = sorted(rd.address for rrset in r.answer for rd in rrset)
        if spec.get("clusterIP") not in (None, "None"):
            assert got == [spec["clusterIP"]], name
            ptr = dns.query.udp(dns.message.make_query(
                dns.reversename.from_address(spec["clusterIP"]), "PTR"), "127.0.0.1", port=port_, timeout=3)
            assert [rd.target.to_text() for rrset in ptr.answer for rd in rrset] == [name], name


# --- a client that never stops asking ------------------------------------------------------------


@dataclass
class Querier:
    """Asks ``names`` (qname, type, expected sorted answers) in a loop from a thread."""

    port: int
    names: list[tuple[str, str, list[str]]]
    asked: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="querier", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for qname, rdtype, want in self.names:
                if self._stop.is_set():
                    return
                try:
                    r = dns.query.udp(dns.message.make_query(qname, rdtype), "127.0.0.1",
                                      port=self.port, timeout=3)
                    got = sorted(rd.to_text() for rrset in r.answer for rd in rrset)
                    if r.rcode() != dns.rcode.NOERROR or got != want:
                        self.failures.append(f"{qname} {rdtype}: {dns.rcode.to_text(r.rcode())} {got}")
                except Exception as exc:  # noqa: BLE001 - a timeout is a failure too
                    self.failures.append(f"{qname} {rdtype}: {type(exc).__name__}")
                self.asked += 1
                self._stop.wait(0.005)

    async def __aenter__(self) -> Querier:
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Joined from a worker thread: the query in flight needs the event loop to answer.
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 10)


def known_names(cluster: DevCluster, indices: range) -> list[tuple[str, str, list[str]]]:
    out = []
    for i in indices:
        ip = cluster_ip(cluster, svc_name(i))
        out.append((f"{svc_name(i)}.{NS}.svc.{ZONE}", "A", [ip]))
        out.append((dns.reversename.from_address(ip).to_text(), "PTR",
                    [f"{svc_name(i)}.{NS}.svc.{ZONE}"]))
    out.append((f"db.{NS}.svc.{ZONE}", "A", [f"10.244.9.{i}" for i in (1, 2, 3)]))
    out.append((f"db-2.db.{NS}.svc.{ZONE}", "A", ["10.244.9.2"]))
    return out


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[DevCluster]:
    monkeypatch.setattr(reflector.Backoff.__init__, "__defaults__", (0.2, BACKOFF_CAP))
    c = build_world()
    yield c
    c.stop()


def corefile(cluster: DevCluster) -> str:
    return (f"{ZONE}:{{PORT}} in-addr.arpa:{{PORT}} {{\n kubernetes {ZONE} in-addr.arpa {{\n"
            f"  endpoint {cluster.url}\n }}\n}}\n")


def watch_requests(cluster: DevCluster) -> int:
    return sum(1 for _, _, q in cluster.request_log if q.get("watch") in ("true", "1"))


async def settle(cluster: DevCluster, since: int = 0, timeout: float = 10.0) -> None:
    """Wait until the three reflectors (services, endpoints, namespaces) watch again: at
    least ``since`` + 3 watch requests made and 3 watches open."""
    deadline = time.monotonic() + timeout
    while watch_requests(cluster) < since + 3 or cluster.open_watches < 3:
        assert time.monotonic() < deadline, "the reflectors never watched again"
        await asyncio.sleep(0.05)


def report(what: str, q: Querier, took: float) -> None:
    print(f"\n[{what}] queries={q.asked} failures={len(q.failures)} converged_in={took:.1f}s")


@contextlib.asynccontextmanager
async def scenario(cluster: DevCluster) -> AsyncIterator[tuple[Running, Any]]:
    """The cluster served in-process, once its index matches the API and the three reflectors
    watch: the server and its kubernetes plugin."""
    async with serve_corefile(corefile(cluster)) as srv:
        plugin = srv.plugin("kubernetes")
        await converged(plugin, cluster)
        await settle(cluster)
        yield srv, plugin


async def recovered(what: str, q: Querier, took: float, srv: Running, cluster: DevCluster,
                    min_asked: float | None = None) -> None:
    """After the fault: report, no query failed (``min_asked``: and at least that many were
    asked), and every name of the API answers."""
    report(what, q, took)
    assert q.failures == [], q.failures[:10]
    if min_asked is not None:
        assert q.asked >= min_asked
    await asyncio.to_thread(check_every_name, srv.port, cluster)


# --- the faults ---------------------------------------------------------------------------------------


@pytest.mark.timeout(OUTAGE + 120)
async def test_api_server_gone(cluster: DevCluster) -> None:
    async with scenario(cluster) as (srv, plugin):
        async with Querier(srv.port, known_names(cluster, range(0, 30))) as q:
            cluster.faults.down()
            # The world moves on while dnsd cannot see it.
            add_service(cluster, "born-in-outage")
            for i in range(30, 40):
                cluster.delete("Service", svc_name(i), NS)
            await asyncio.sleep(OUTAGE)
            assert q.asked > 0 and q.failures == []  # answered from the last good state
            cluster.faults.up()
            took = await converged(plugin, cluster)
            await asyncio.sleep(0.3)
        await recovered(f"api server gone {OUTAGE:g}s", q, took, srv, cluster, min_asked=OUTAGE * 20)


async def test_error_bursts(cluster: DevCluster) -> None:
    async with scenario(cluster) as (srv, plugin):
        async with Querier(srv.port, known_names(cluster, range(0, 30))) as q:
            for code in (500, 503, 429):
                cluster.faults.error_burst(6, code)
                cluster.faults.compact()  # the re-watches fail, then lists must run again
                cluster.faults.cut_watches()
                add_service(cluster, f"after-{code}")
                cluster.delete("Service", svc_name(30 + code % 10), NS)
                await asyncio.sleep(1.0)
            took = await converged(plugin, cluster)
        await recovered("5xx bursts", q, took, srv, cluster)


async def test_watches_cut_mid_stream_and_mid_json(cluster: DevCluster) -> None:
    async with scenario(cluster) as (srv, plugin):
        async with Querier(srv.port, known_names(cluster, range(0, 30))) as q:
            for round_ in range(4):
                before = watch_requests(cluster)
                if round_ % 2:
                    assert cluster.faults.cut_watches_mid_json() == 3
                else:
                    assert cluster.faults.cut_watches() == 3
                # changes land while the watches are being re-established
                add_service(cluster, f"cut-{round_}")
                cluster.delete("Service", svc_name(30 + round_), NS)
                await settle(cluster, since=before)
            took = await converged(plugin, cluster)
        await recovered("watches cut", q, took, srv, cluster)


async def test_every_watch_gone_410_for_a_while(cluster: DevCluster) -> None:
    async with scenario(cluster) as (srv, plugin):
        async with Querier(srv.port, known_names(cluster, range(0, 30))) as q:
            cluster.faults.expire_all_watches()
            for i in range(3):
                add_service(cluster, f"during-410-{i}")
                cluster.delete("Service", svc_name(30 + i), NS)
                await asyncio.sleep(1.0)
            cluster.faults.clear()
            took = await converged(plugin, cluster)
        await recovered("410 on every watch", q, took, srv, cluster)


async def test_very_slow_lists(cluster: DevCluster) -> None:
    async with scenario(cluster) as (srv, plugin):
        async with Querier(srv.port, known_names(cluster, range(0, 30))) as q:
            cluster.faults.slow_lists(3.0)
            cluster.faults.expire_all_watches()  # every reflector must list again, slowly
            await asyncio.sleep(0.3)
            cluster.faults.clear()  # the lists already asked for still take 3 s
            cluster.faults.slow_lists(3.0)
            add_service(cluster, "while-listing")
            cluster.delete("Service", svc_name(35), NS)
            await asyncio.sleep(2.0)
            assert q.failures == []  # the lists are still running: the old state answers
            assert "while-listing" not in {k[1] for k in plugin.index.services}
            took = await converged(plugin, cluster)
            cluster.faults.clear()
        await recovered("slow lists", q, took, srv, cluster)


async def test_relist_returns_a_very_different_world(cluster: DevCluster) -> None:
    async with scenario(cluster) as (srv, plugin):
        survivors = range(0, 40, 2)  # every other service survives
        async with Querier(srv.port, known_names(cluster, survivors)) as q:
            cluster.faults.expire_all_watches()
            gone = [svc_name(i) for i in range(1, 40, 2)]
            for name in gone:
                cluster.delete("Service", name, NS)
            for i in range(25):
                add_service(cluster, f"new-{i:02d}")
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}})
            add_service(cluster, "fresh-svc", ns="fresh")
            cluster.faults.compact()
            await asyncio.sleep(1.5)
            cluster.faults.clear()
            took = await converged(plugin, cluster)
        await recovered("very different world", q, took, srv, cluster)
        for name in gone[:3]:
            r = await asyncio.to_thread(dns.query.udp, dns.message.make_query(
                f"{name}.{NS}.svc.{ZONE}", "A"), "127.0.0.1", port=srv.port, timeout=3)
            assert r.rcode() == dns.rcode.NXDOMAIN
