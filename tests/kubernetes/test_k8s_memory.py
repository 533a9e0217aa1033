"""The kubernetes plugin's memory measures: paged lists (and their expired continue tokens)
through the official client against the API emulator, the requests made without the generated
API classes, returning freed memory after a big list, and the compact object and index forms
(plain endpoints kept as address strings, shared port lists, small owner sets as tuples).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from k8s_support import (
    endpoint,
    endpoint_slice,
    expect,
    namespace,
    port,
    service,
    soa,
    start_cluster,
    start_dnsd,
    wait_for,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import query

from dnsd.devcluster import DevCluster
from dnsd.plugins.kubernetes import objects
from dnsd.plugins.kubernetes.answer import Options, answer
from dnsd.plugins.kubernetes.index import Index
from dnsd.plugins.kubernetes.plugin import release_free_memory
from dnsd.plugins.kubernetes.reflector import ApiCall, Reflector
from dnsd.wire.light import to_rr

NS = "mem"
Z = "cluster.local."
http = port("http", 80)


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    c = start_cluster([namespace(NS)])
    yield c
    c.stop()


def list_requests(cluster: DevCluster, path: str) -> list[dict[str, str]]:
    return [q for method, p, q in cluster.request_log
            if method == "GET" and p == path and q.get("watch") not in ("true", "1")]


def run_list(resource: str, call: Any, convert: Any, page_size: int) -> list[Any]:
    """One reflector's first list (it keeps watching until stopped); what it handed over."""
    got: list[Any] = []
    done = threading.Event()

    def sink(res: str, op: str, payload: Any) -> None:
        if op == "replace":
            got.append(payload)
            done.set()

    r = Reflector(resource, call, convert, sink, page_size=page_size)
    r.start()
    try:
        assert done.wait(10), "the list never reached the sink"
    finally:
        r.stop()
    assert len(got) == 1
    return list(got[0])


# --- paged lists ----------------------------------------------------------------------------

def test_paged_list_through_the_client(cluster: DevCluster, api: client.ApiClient) -> None:
    for i in range(23):
        cluster.apply(service(NS, f"s{i:02d}", ips=[f"10.96.50.{i + 1}"], ports=[http]))
    want = sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in cluster.list("Service"))
    before = len(cluster.request_log)
    got = run_list("services", ApiCall(api, "/api/v1/services"), objects.service, page_size=5)
    assert sorted(s.key for s in got) == want and len(got) == len(want)  # each exactly once
    pages = [q for method, p, q in list(cluster.request_log)[before:]
             if p == "/api/v1/services" and q.get("watch") not in ("true", "1")]
    assert len(pages) == -(-len(want) // 5)
    assert pages[0].get("limit") == "5" and "continue" not in pages[0]
    assert all(q.get("limit") == "5" and q.get("continue") for q in pages[1:])


def test_paged_list_is_one_consistent_snapshot(cluster: DevCluster, api: client.ApiClient) -> None:
    for i in range(6):
        cluster.apply(service(NS, f"s{i}", ips=[f"10.96.51.{i + 1}"], ports=[http]))
    added = []

    def convert(obj: dict[str, Any]) -> objects.Service:
        if not added:  # a change between the pages is not in this list (its watch gets it)
            added.append(cluster.apply(service(NS, "late", ips=["10.96.51.99"], ports=[http])))
        return objects.service(obj)

    got = run_list("services", ApiCall(api, "/api/v1/services"), convert, page_size=2)
    names = [s.name for s in got if s.namespace == NS]
    assert names == [f"s{i}" for i in range(6)]


def test_expired_continue_token_falls_back_to_a_full_list(cluster: DevCluster,
                                                          api: client.ApiClient) -> None:
    for i in range(7):
        cluster.apply(service(NS, f"s{i}", ips=[f"10.96.52.{i + 1}"], ports=[http]))
    compacted = []

    def convert(obj: dict[str, Any]) -> objects.Service:
        if not compacted:  # the server forgets the first page's snapshot: 410 for its token
            compacted.append(True)
            cluster.faults.compact()
        return objects.service(obj)

    got = run_list("services", ApiCall(api, "/api/v1/services"), convert, page_size=3)
    want = sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in cluster.list("Service"))
    assert sorted(s.key for s in got) == want and len(got) == len(want)  # no page twice
    reqs = list_requests(cluster, "/api/v1/services")
    assert [("limit" in q, "continue" in q) for q in reqs[-3:]] == [
        (True, False), (True, True), (False, False)]  # first page, expired token, full list


def test_api_call_errors_and_parameters(cluster: DevCluster, api: client.ApiClient) -> None:
    cluster.apply(service(NS, "web", ips=["10.96.53.1"], ports=[http], labels={"tier": "web"}))
    cluster.apply(service(NS, "db", ips=["10.96.53.2"], ports=[http]))
    call = ApiCall(api, "/api/v1/services")
    doc = call(_preload_content=True, label_selector="tier=web")
    assert [o["metadata"]["name"] for o in doc["items"]] == ["web"]
    first = call(_preload_content=True, limit=1)
    assert first["metadata"]["continue"] and len(first["items"]) == 1
    cluster.faults.compact()
    with pytest.raises(ApiException) as info:
        call(limit=1, _continue=first["metadata"]["continue"])
    assert info.value.status == 410
    with pytest.raises(ApiException) as info:
        ApiCall(api, "/api/v1/nosuchthings")()
    assert info.value.status == 404
    groups = ApiCall(api, "/apis")(_preload_content=True)["groups"]
    assert any(g["name"] == "discovery.k8s.io" for g in groups)
    assert ApiCall.supported(api)


def test_plugin_runs_without_the_generated_api_classes(cluster: DevCluster) -> None:
    """The plugin lists, watches and discovers without importing CoreV1Api and friends
    (about 22 MiB of model modules and validators)."""
    cluster.apply(service(NS, "web", ips=["10.96.54.1"], ports=[http]))
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parents[1])!r})
from upstream import serve_corefile, aquery, addresses

async def main():
    async with serve_corefile('''.:{{PORT}} {{
        kubernetes cluster.local {{
            endpoint {cluster.url}
        }}
    }}''') as run:
        reply = await aquery(run.port, "web.{NS}.svc.cluster.local.")
        print(addresses(reply))
    loaded = sorted(m for m in sys.modules if m.startswith("kubernetes.client.api."))
    print(loaded)

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "['10.96.54.1']"
    assert lines[-1] == "[]", "generated API modules were imported: " + lines[-1]
    assert any(q.get("limit") == "500" for _, p, q in cluster.request_log if p == "/api/v1/services")


# --- returning freed memory -----------------------------------------------------------------

def test_release_free_memory_is_harmless() -> None:
    data = [bytes(100_000) for _ in range(50)]
    kept = data[::10]
    del data
    ok = release_free_memory()
    assert ok is release_free_memory()  # stable answer; True wherever glibc is the C library
    assert all(len(b) == 100_000 and not any(b[:100]) for b in kept)
    if sys.platform == "linux" and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert ok is True


def test_big_list_then_trim_still_answers() -> None:
    """More than 1,000 objects in a list: dnsd freezes them out of the GC's reach and trims
    the C heap; every name still answers, and watch events still apply afterwards."""
    objs: list[dict[str, Any]] = [namespace(NS)]
    for i in range(1100):
        objs.append(service(NS, f"s{i:04d}", ips=[f"10.96.{100 + i // 250}.{i % 250 + 1}"], ports=[http]))
    objs.append(service(NS, "hl", headless=True, ports=[http]))
    objs.append(endpoint_slice(NS, "hl-a", "hl", [endpoint(f"10.244.9.{i}") for i in range(1, 4)], [http]))
    cluster = start_cluster(objs)
    corefile = (".:{PORT} {\n    kubernetes cluster.local in-addr.arpa {\n"
                f"        endpoint {cluster.url}\n    }}\n}}\n")
    dnsd = None
    try:
        dnsd = start_dnsd(corefile, [(f"s1099.{NS}.svc.{Z}", "A")], timeout=40)
        for i in (0, 499, 500, 1099):
            expect(dnsd.port, f"s{i:04d}.{NS}.svc.{Z}", "A",
                   answer=[f"s{i:04d}.{NS}.svc.{Z} 5 IN A 10.96.{100 + i // 250}.{i % 250 + 1}"])
        expect(dnsd.port, f"hl.{NS}.svc.{Z}", "A",
               answer=[f"hl.{NS}.svc.{Z} 5 IN A 10.244.9.{i}" for i in range(1, 4)])
        expect(dnsd.port, "2.9.244.10.in-addr.arpa.", "PTR",
               answer=[f"2.9.244.10.in-addr.arpa. 5 IN PTR 10-244-9-2.hl.{NS}.svc.{Z}"])
        cluster.apply(service(NS, "late", ips=["10.96.109.9"], ports=[http]))
        wait_for(lambda: query(f"late.{NS}.svc.{Z}", "A", port=dnsd.port).rcode() == 0, 10,
                 "a watch event after the trim")
        expect(dnsd.port, f"nope.{NS}.svc.{Z}", "A", rcode="NXDOMAIN",
               authority=[soa("cluster.local.")])
        lists = [q for _, p, q in cluster.request_log
                 if p == "/api/v1/services" and q.get("watch") not in ("true", "1")]
        assert [q.get("continue") is not None for q in lists] == [False, True, True]  # 3 pages
    finally:
        if dnsd is not None:
            dnsd.stop()
        cluster.stop()


# --- compact objects -------------------------------------------------------------------------

def slice_doc(name: str, svc: str, eps: list[dict[str, Any]], ns: str = NS) -> dict[str, Any]:
    return endpoint_slice(ns, name, svc, eps, [http, port("dns", 53, "UDP")])


def test_plain_endpoints_are_address_strings() -> None:
    eps = [endpoint("10.1.0.1"), endpoint("10.1.0.2", hostname="web-0"),
           endpoint("10.1.0.3", pod="web-1"), endpoint("10.1.0.4", ready=False)]
    kept = objects.endpoint_slice(slice_doc("a", "web", eps))
    assert kept.items[0] == "10.1.0.1"
    assert kept.items[1] == objects.Endpoint(("10.1.0.2",), "web-0", "", NS)
    assert kept.items[2] == objects.Endpoint(("10.1.0.3",), "", "web-1", NS)
    assert len(kept.items) == 3  # not ready: dropped
    # Every item as an Endpoint, the plain one included.
    assert kept.endpoints[0] == objects.Endpoint(("10.1.0.1",), "", "", NS)
    assert [e.addresses for e in kept.endpoints] == [("10.1.0.1",), ("10.1.0.2",), ("10.1.0.3",)]
    # Without pod names (neither endpoint_pod_names nor secondary networks read them), the
    # pod's endpoint is plain too.
    lean = objects.endpoint_slice(slice_doc("a", "web", eps), keep_pods=False)
    assert lean.items == ("10.1.0.1", kept.items[1], "10.1.0.3")


def test_repeated_strings_and_port_lists_are_shared() -> None:
    a = objects.endpoint_slice(slice_doc("a", "web", [endpoint("10.1.0.1")]))
    b = objects.endpoint_slice(slice_doc("b", "web", [endpoint("10.1.0.2")]))
    s = objects.service(service(NS, "web", ips=["10.96.0.9"], ports=[http, port("dns", 53, "UDP")]))
    assert a.ports is b.ports
    assert a.ports == (("http", "tcp", 80), ("dns", "udp", 53))
    assert a.namespace is b.namespace is s.namespace
    assert a.service is s.name
    assert s.ports[0][1] is a.ports[0][1]  # "tcp"


def test_core_endpoints_keep_their_subset_ports() -> None:
    obj = {"metadata": {"name": "web", "namespace": NS}, "subsets": [
        {"addresses": [{"ip": "10.2.0.1"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.2.0.2", "hostname": "h"}],
         "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    ]}
    sl = objects.endpoints_object(obj)
    assert sl.ports == (("http", "tcp", 80), ("dns", "udp", 53))
    assert [e.ports for e in sl.endpoints] == [(("http", "tcp", 80),), (("dns", "udp", 53),)]
    one = objects.endpoints_object({"metadata": {"name": "db", "namespace": NS}, "subsets": [
        {"addresses": [{"ip": "10.2.0.3"}], "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]})
    assert one.items == ("10.2.0.3",)  # its subset's ports are the object's: plain


# --- the index's owner sets ------------------------------------------------------------------

def ask(ix: Index, name: str, qtype: str) -> tuple[int, list[str]]:
    zone = "in-addr.arpa." if name.endswith("in-addr.arpa.") else Z
    res = answer(ix, Options(), name, getattr(__import__("dnslib").QTYPE, qtype), zone)
    return res.rcode, sorted(str(to_rr(rr).rdata) for rr in res.answer)


def test_one_address_owned_by_many_services() -> None:
    ix = Index()
    ix.set_namespace(objects.Namespace(NS))
    names = [f"h{i:02d}" for i in range(12)]  # more owners than a tuple holds (8)
    for name in names:
        ix.set_service(objects.service(service(NS, name, headless=True, ports=[http])))
        ix.set_slice(objects.endpoint_slice(slice_doc(f"{name}-x", name, [endpoint("10.3.0.1")])))
    ptr = "1.0.3.10.in-addr.arpa."
    assert ask(ix, ptr, "PTR") == (0, sorted(f"10-3-0-1.{n}.{NS}.svc.{Z}" for n in names))
    assert isinstance(ix.endpoint_owners["10.3.0.1"], dict)
    for i, name in enumerate(names[:-1]):
        ix.delete_slice((NS, f"{name}-x"))
        assert ask(ix, ptr, "PTR") == (0, sorted(f"10-3-0-1.{n}.{NS}.svc.{Z}" for n in names[i + 1:]))
    assert ix.endpoint_owners["10.3.0.1"] == (("10-3-0-1", names[-1], NS),)
    ix.delete_service((NS, names[-1]))
    assert "10.3.0.1" not in ix.endpoint_owners
    assert ask(ix, ptr, "PTR")[0] == 3


def test_address_in_two_slices_of_one_service() -> None:
    ix = Index()
    ix.set_namespace(objects.Namespace(NS))
    ix.set_service(objects.service(service(NS, "hl", headless=True, ports=[http])))
    ix.set_slice(objects.endpoint_slice(slice_doc("hl-a", "hl", [endpoint("10.4.0.1")])))
    ix.set_slice(objects.endpoint_slice(slice_doc("hl-b", "hl", [endpoint("10.4.0.1"), endpoint("10.4.0.2")])))
    ptr = "1.0.4.10.in-addr.arpa."
    assert ask(ix, ptr, "PTR") == (0, [f"10-4-0-1.hl.{NS}.svc.{Z}"])  # once
    assert ask(ix, f"10-4-0-1.hl.{NS}.svc.{Z}", "A") == (0, ["10.4.0.1"])
    ix.delete_slice((NS, "hl-a"))
    assert ask(ix, ptr, "PTR") == (0, [f"10-4-0-1.hl.{NS}.svc.{Z}"])  # still in hl-b
    ix.delete_slice((NS, "hl-b"))
    assert ask(ix, ptr, "PTR")[0] == 3
    assert ix.endpoint_owners == {}


def test_cluster_ip_owners() -> None:
    ix = Index()
    ix.set_namespace(objects.Namespace(NS))
    ix.set_service(objects.service(service(NS, "a", ips=["10.96.60.1"], ports=[http])))
    ix.set_service(objects.service(service(NS, "b", ips=["10.96.60.1"], ports=[http])))  # a replace in flight
    assert ix.cluster_ip_owners["10.96.60.1"] == ((NS, "a"), (NS, "b"))
    assert ask(ix, "1.60.96.10.in-addr.arpa.", "PTR") == (0, [f"a.{NS}.svc.{Z}"])
    ix.delete_service((NS, "a"))
    assert ask(ix, "1.60.96.10.in-addr.arpa.", "PTR") == (0, [f"b.{NS}.svc.{Z}"])
    ix.delete_service((NS, "b"))
    assert ix.cluster_ip_owners == {}


def test_memory_per_endpoint_address() -> None:
    """What the index keeps per endpoint address (1,000 services, 10 addresses each; a fifth
    of them headless with hostnames): ~920 bytes before the compact forms, ~500 with them."""
    services, slices = [], []
    for i in range(1000):
        name = f"svc-{i}"
        headless = i % 5 == 0
        services.append(service(NS, name, headless=headless, ports=[http],
                                ips=() if headless else [f"10.96.{i // 250}.{i % 250 + 1}"]))
        eps = [endpoint(f"10.{100 + i // 250}.{i % 250}.{j + 1}",
                        hostname=f"{name}-{j}" if headless else None) for j in range(10)]
        slices.append(endpoint_slice(NS, f"{name}-abcde", name, eps, [http]))
    raw_services, raw_slices = json.dumps(services).encode(), json.dumps(slices).encode()
    del services, slices
    gc.collect()
    tracemalloc.start()
    try:
        ix = Index()
        ix.set_namespace(objects.Namespace(NS))
        ix.replace("services", [objects.service(o) for o in json.loads(raw_services)])
        gc.collect()
        with_services = tracemalloc.get_traced_memory()[0]
        ix.replace("endpointslices", [objects.endpoint_slice(o, keep_pods=False)
                                      for o in json.loads(raw_slices)])
        gc.collect()
        per_endpoint = (tracemalloc.get_traced_memory()[0] - with_services) / 10_000
    finally:
        tracemalloc.stop()
    assert len(ix.endpoint_owners) == 10_000
    assert per_endpoint < 650, f"{per_endpoint:.0f} bytes per endpoint address"
