"""DevCluster driven through the official, unpatched `kubernetes` Python client."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from dnsd.devcluster import DevCluster

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo" / "cluster.yaml"


# ----- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    c = DevCluster(bookmark_interval=0.2).start()
    yield c
    c.stop()


@pytest.fixture
def v1(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def disc(api: client.ApiClient) -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api)


def svc_body(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def pod_body(
    name: str, ip: str, labels: dict[str, str] | None = None, phase: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"podIP": ip}
    if phase:
        status["phase"] = phase
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": status,
    }


class WatchThread:
    """Run `watch.Watch().stream(func, **kwargs)` in a thread, collecting raw events."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.append((event["type"], event["raw_object"]))
        except BaseException as exc:  # recorded for the test to inspect
            self.error = exc

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "watch did not end"

    def wait_for(
        self, predicate: Callable[[list[tuple[str, dict[str, Any]]]], bool], timeout: float = 5.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(list(self.events)):
            assert time.monotonic() < deadline, f"condition not met; events: {self.typed()}"
            time.sleep(0.02)

    def typed(self) -> list[tuple[str, str | None]]:
        return [(t, o.get("metadata", {}).get("name")) for t, o in self.events]


def names(items: list[Any]) -> list[str]:
    return sorted(i.metadata.name for i in items)


# ----- discovery ------------------------------------------------------------------------------


def test_discovery_documents(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().major == "1"
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = client.ApisApi(api).get_api_versions().groups
    assert [g.name for g in groups] == ["discovery.k8s.io"]
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"namespaces", "services", "pods", "endpoints", "pods/status"} <= set(core)
    assert core["namespaces"].namespaced is False and core["services"].kind == "Service"
    assert "watch" in core["services"].verbs
    slices = client.DiscoveryV1Api(api).get_api_resources().resources
    assert [r.name for r in slices] == ["endpointslices"]


def test_default_namespaces_and_list_metadata(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    result = v1.list_namespace()
    assert {"default", "kube-system", "kube-public"} <= set(names(result.items))
    assert result.metadata.resource_version == str(cluster.resource_version)
    v1.create_namespaced_service("default", svc_body("a"))
    item = v1.list_service_for_all_namespaces().items[0]
    assert item.metadata.namespace == "default"
    assert item.metadata.uid and item.metadata.creation_timestamp
    assert int(item.metadata.resource_version) == cluster.resource_version


def test_non_json_accept_is_406(cluster: DevCluster) -> None:
    req = urllib.request.Request(
        cluster.url + "/api/v1/namespaces",
        headers={"Accept": "application/vnd.kubernetes.protobuf"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 406
    assert json.loads(info.value.read())["reason"] == "NotAcceptable"


# ----- list with selectors and pagination --------------------------------------------------------


def test_label_selectors(v1: client.CoreV1Api) -> None:
    v1.create_namespaced_service("default", svc_body("a", {"app": "web", "tier": "front"}))
    v1.create_namespaced_service("default", svc_body("b", {"app": "web", "tier": "back"}))
    v1.create_namespaced_service("default", svc_body("c", {"app": "db"}))
    v1.create_namespaced_service("default", svc_body("d"))

    def sel(selector: str) -> list[str]:
        return names(v1.list_namespaced_service("default", label_selector=selector).items)

    assert sel("app=web") == ["a", "b"]
    assert sel("app==web,tier=back") == ["b"]
    assert sel("app!=web") == ["c", "d"]
    assert sel("app in (web, db)") == ["a", "b", "c"]
    assert sel("app notin (web)") == ["c", "d"]
    assert sel("tier") == ["a", "b"]
    assert sel("!tier") == ["c", "d"]
    assert sel("app in (web,db),!tier") == ["c"]
    assert sel("") == ["a", "b", "c", "d"]
    with pytest.raises(ApiException) as info:
        sel("app in web")
    assert info.value.status == 400


def test_field_selectors(v1: client.CoreV1Api) -> None:
    v1.create_namespace({"metadata": {"name": "other"}})
    v1.create_namespaced_pod("default", pod_body("p1", "10.244.0.1"))
    v1.create_namespaced_pod("default", pod_body("p2", "10.244.0.2", phase="Pending"))
    v1.create_namespaced_pod("other", pod_body("p3", "10.244.0.3"))
    assert v1.read_namespaced_pod("p1", "default").status.phase == "Running"

    def sel(selector: str) -> list[str]:
        return names(v1.list_pod_for_all_namespaces(field_selector=selector).items)

    assert sel("metadata.name=p1") == ["p1"]
    assert sel("metadata.namespace=other") == ["p3"]
    assert sel("status.phase!=Running") == ["p2"]
    assert sel("status.phase=Running,metadata.namespace=default") == ["p1"]
    assert sel("status.podIP==10.244.0.3") == ["p3"]
    with pytest.raises(ApiException) as info:
        sel("spec.bogus=1")
    assert info.value.status == 400
    with pytest.raises(ApiException) as info:
        v1.list_service_for_all_namespaces(field_selector="status.phase=Running")
    assert info.value.status == 400


def test_pagination(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    for i in range(5):
        v1.create_namespaced_service("default", svc_body(f"s{i}"))
    page = v1.list_namespaced_service("default", limit=2)
    seen = names(page.items)
    assert page.metadata.remaining_item_count == 3 and page.metadata._continue
    rv = page.metadata.resource_version
    v1.create_namespaced_service("default", svc_body("late"))  # not in the snapshot
    while page.metadata._continue:
        page = v1.list_namespaced_service("default", limit=2, _continue=page.metadata._continue)
        assert page.metadata.resource_version == rv
        seen += names(page.items)
    assert seen == [f"s{i}" for i in range(5)]

    first = v1.list_namespaced_service("default", limit=1)
    cluster.faults.compact()
    with pytest.raises(ApiException) as info:
        v1.list_namespaced_service("default", limit=1, _continue=first.metadata._continue)
    assert info.value.status == 410


def test_continue_tokens_are_reusable_until_evicted(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    from dnsd.devcluster import store

    for i in range(7):
        v1.create_namespaced_service("default", svc_body(f"s{i}"))
    first = v1.list_namespaced_service("default", limit=3)
    token = first.metadata._continue
    again = v1.list_namespaced_service("default", limit=3, _continue=token)
    retry = v1.list_namespaced_service("default", limit=3, _continue=token)  # a retried page
    assert names(again.items) == names(retry.items) == ["s3", "s4", "s5"]
    assert again.metadata.remaining_item_count == 1
    last = v1.list_namespaced_service("default", limit=3, _continue=again.metadata._continue)
    assert names(last.items) == ["s6"] and not last.metadata._continue
    assert last.metadata.remaining_item_count is None
    # A different page size on the way is fine; no limit at all gives the rest at once.
    rest = v1.list_namespaced_service("default", _continue=token)
    assert names(rest.items) == ["s3", "s4", "s5", "s6"] and not rest.metadata._continue
    with pytest.raises(ApiException) as info:
        v1.list_namespaced_service("default", limit=3, _continue="bm90IGpzb24=")
    assert info.value.status == 400
    # Only the last _SNAPSHOTS paginated lists are kept: older tokens expire.
    for _ in range(store._SNAPSHOTS):
        v1.list_namespaced_service("default", limit=1)
    with pytest.raises(ApiException) as info:
        v1.list_namespaced_service("default", limit=3, _continue=token)
    assert info.value.status == 410


# ----- writes -------------------------------------------------------------------------------------


def test_service_create_replace_patch_delete(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    created = v1.create_namespaced_service("default", svc_body("web", {"app": "web"}))
    assert created.spec.type == "ClusterIP" and created.spec.ports[0].target_port == 80
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_service("default", svc_body("web"))
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"

    current = v1.read_namespaced_service("web", "default")
    current.metadata.labels["version"] = "2"
    replaced = v1.replace_namespaced_service("web", "default", current)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.spec.cluster_ip == created.spec.cluster_ip
    assert replaced.metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as info:  # `current` carries a stale resourceVersion now
        v1.replace_namespaced_service("web", "default", current)
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "Conflict"

    # The client sends a dict patch as strategic-merge-patch; merge-patch and JSON patch too.
    patched = v1.patch_namespaced_service(
        "web", "default", {"metadata": {"annotations": {"a": "1"}}}
    )
    assert patched.metadata.annotations == {"a": "1"}
    patched = v1.patch_namespaced_service(
        "web",
        "default",
        {"metadata": {"annotations": {"a": None, "b": "2"}}},
        _content_type="application/merge-patch+json",
    )
    assert patched.metadata.annotations == {"b": "2"}
    patched = v1.patch_namespaced_service(
        "web", "default", [{"op": "add", "path": "/metadata/labels/tier", "value": "front"}]
    )
    assert patched.metadata.labels == {"app": "web", "version": "2", "tier": "front"}
    rv = cluster.resource_version
    v1.patch_namespaced_service("web", "default", {"metadata": {"labels": {"tier": "front"}}})
    assert cluster.resource_version == rv, "a no-op patch must not bump the resourceVersion"

    deleted = v1.delete_namespaced_service("web", "default")
    assert deleted.metadata.name == "web"
    for call in (
        lambda: v1.read_namespaced_service("web", "default"),
        lambda: v1.delete_namespaced_service("web", "default"),
        lambda: v1.patch_namespaced_service("web", "default", {"metadata": {}}),
    ):
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 404 and json.loads(info.value.body)["reason"] == "NotFound"


def test_write_errors(v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_service("nowhere", svc_body("web"))
    assert info.value.status == 404
    assert json.loads(info.value.body)["message"] == 'namespaces "nowhere" not found'
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_service("default", svc_body("Bad_Name"))
    assert info.value.status == 422 and json.loads(info.value.body)["reason"] == "Invalid"
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_service("default", svc_body("noports", ports=[]))
    assert info.value.status == 422
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert info.value.status == 422


def test_endpointslice_crud(disc: client.DiscoveryV1Api) -> None:
    body = {
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.244.0.5"],
                "conditions": {"ready": True},
                "hostname": "web-0",
                "nodeName": "n1",
                "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"},
            }
        ],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }
    created = disc.create_namespaced_endpoint_slice("default", body)
    assert created.endpoints[0].target_ref.name == "web-0"
    listed = disc.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web"
    )
    assert isinstance(listed, client.V1EndpointSliceList)
    ep = listed.items[0].endpoints[0]
    assert (ep.addresses, ep.hostname, ep.node_name, ep.conditions.ready) == (
        ["10.244.0.5"],
        "web-0",
        "n1",
        True,
    )
    assert listed.items[0].ports[0].name == "http"

    current = listed.items[0]
    current.endpoints[0].conditions.ready = False
    replaced = disc.replace_namespaced_endpoint_slice("web-abc", "default", current)
    assert replaced.endpoints[0].conditions.ready is False
    patched = disc.patch_namespaced_endpoint_slice(
        "web-abc",
        "default",
        {"endpoints": [{"addresses": ["10.244.0.6"], "conditions": {"ready": True}}]},
    )
    assert patched.endpoints[0].addresses == ["10.244.0.6"]
    with pytest.raises(ApiException) as info:
        disc.patch_namespaced_endpoint_slice(
            "web-abc", "default", {"endpoints": [{"addresses": ["fd00::1"]}]}
        )
    assert info.value.status == 422
    disc.delete_namespaced_endpoint_slice("web-abc", "default")
    assert disc.list_endpoint_slice_for_all_namespaces().items == []


def test_pod_status_subresource(v1: client.CoreV1Api) -> None:
    v1.create_namespaced_pod("default", pod_body("p", "10.244.0.9"))
    status = {"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}}
    patched = v1.patch_namespaced_pod_status("p", "default", status)
    assert patched.metadata.annotations == {"k8s.v1.cni.cncf.io/network-status": "[]"}
    pod = v1.read_namespaced_pod("p", "default")
    pod.status.pod_ip = "10.244.0.10"
    pod.status.pod_ips = None
    assert v1.replace_namespaced_pod_status("p", "default", pod).status.pod_ip == "10.244.0.10"


def test_namespace_delete_cascades(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    v1.create_namespace({"metadata": {"name": "tmp"}})
    v1.create_namespaced_service("tmp", svc_body("x"))
    v1.delete_namespace("tmp")
    assert cluster.get("Service", "x", "tmp") is None
    assert "tmp" not in names(v1.list_namespace().items)


# ----- ClusterIP allocation --------------------------------------------------------------------


def test_cluster_ip_allocation(v1: client.CoreV1Api) -> None:
    ips = [
        v1.create_namespaced_service("default", svc_body(f"s{i}")).spec.cluster_ip
        for i in range(12)
    ]
    net = ipaddress.ip_network("10.96.0.0/16")
    assert all(ipaddress.ip_address(ip) in net for ip in ips) and len(set(ips)) == 12
    assert "10.96.0.1" not in ips and "10.96.0.10" not in ips and "10.96.0.0" not in ips

    dns = v1.create_namespaced_service("kube-system", svc_body("kube-dns", cluster_ip="10.96.0.10"))
    assert dns.spec.cluster_ips == ["10.96.0.10"] and dns.spec.ip_families == ["IPv4"]
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_service("default", svc_body("dup", cluster_ip="10.96.0.10"))
    assert (
        info.value.status == 422 and "already allocated" in json.loads(info.value.body)["message"]
    )
    with pytest.raises(ApiException) as info:
        v1.create_namespaced_service("default", svc_body("outside", cluster_ip="10.0.0.1"))
    assert info.value.status == 422
    with pytest.raises(ApiException) as info:  # ClusterIPs are immutable
        v1.patch_namespaced_service(
            "kube-dns", "kube-system", {"spec": {"clusterIP": "10.96.0.11"}}
        )
    assert info.value.status == 422
    v1.delete_namespaced_service("kube-dns", "kube-system")
    again = v1.create_namespaced_service("default", svc_body("reuse", cluster_ip="10.96.0.10"))
    assert again.spec.cluster_ip == "10.96.0.10"

    headless = v1.create_namespaced_service("default", svc_body("headless", cluster_ip="None"))
    assert headless.spec.cluster_ips == ["None"]
    ext = v1.create_namespaced_service(
        "default", svc_body("ext", type="ExternalName", external_name="www.example.org", ports=None)
    )
    assert ext.spec.cluster_ip is None and ext.spec.external_name == "www.example.org"


def test_dual_stack_allocation(v1: client.CoreV1Api) -> None:
    dual = v1.create_namespaced_service(
        "default", svc_body("dual", ip_family_policy="PreferDualStack")
    )
    v4, v6 = dual.spec.cluster_ips
    assert ipaddress.ip_address(v4) in ipaddress.ip_network("10.96.0.0/16")
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:10:96::/112")
    assert dual.spec.ip_families == ["IPv4", "IPv6"] and dual.spec.cluster_ip == v4

    v6first = v1.create_namespaced_service(
        "default", svc_body("v6first", ip_families=["IPv6", "IPv4"])
    )
    assert [ipaddress.ip_address(ip).version for ip in v6first.spec.cluster_ips] == [6, 4]
    assert v6first.spec.ip_family_policy == "RequireDualStack"

    explicit = v1.create_namespaced_service(
        "default",
        svc_body(
            "explicit",
            cluster_ips=["10.96.100.100", "fd00:10:96::100"],
            ip_family_policy="RequireDualStack",
        ),
    )
    assert explicit.spec.cluster_ip == "10.96.100.100"
    assert explicit.spec.cluster_ips == ["10.96.100.100", "fd00:10:96::100"]
    # Upgrading a single-stack Service keeps its IPv4 address and adds an IPv6 one.
    single = v1.create_namespaced_service("default", svc_body("single"))
    upgraded = v1.patch_namespaced_service(
        "single", "default", {"spec": {"ipFamilyPolicy": "PreferDualStack"}}
    )
    assert (
        upgraded.spec.cluster_ips[0] == single.spec.cluster_ip
        and len(upgraded.spec.cluster_ips) == 2
    )


# ----- watch -------------------------------------------------------------------------------------


def test_watch_events_in_order_with_bookmarks(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    rv = v1.list_service_for_all_namespaces().metadata.resource_version
    w = WatchThread(
        v1.list_service_for_all_namespaces,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=2,
    )
    assert cluster.wait_for_watches(1)
    v1.create_namespaced_service("default", svc_body("web"))
    v1.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "y"}}})
    v1.delete_namespaced_service("web", "default")
    w.join()
    assert w.error is None
    changes = [(t, o["metadata"]["name"]) for t, o in w.events if t != "BOOKMARK"]
    assert changes == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in w.events]
    assert versions == sorted(versions)
    bookmarks = [o for t, o in w.events if t == "BOOKMARK"]
    assert bookmarks and bookmarks[-1]["metadata"]["resourceVersion"] == str(
        cluster.resource_version
    )
    assert bookmarks[-1]["kind"] == "Service" and set(bookmarks[-1]) == {
        "kind",
        "apiVersion",
        "metadata",
    }
    assert w.watch.resource_version == str(cluster.resource_version)


def test_watch_replay_and_initial_state(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    start = str(cluster.resource_version)
    v1.create_namespaced_service("default", svc_body("a"))
    v1.create_namespaced_service("default", svc_body("b"))
    v1.delete_namespaced_service("a", "default")
    replay = WatchThread(
        v1.list_namespaced_service, "default", resource_version=start, timeout_seconds=1
    )
    initial = WatchThread(v1.list_namespaced_service, "default", timeout_seconds=1)
    replay.join()
    initial.join()
    assert replay.typed() == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert initial.typed() == [("ADDED", "b")]


def test_watch_selector_transitions(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    v1.create_namespaced_service("default", svc_body("web", {"app": "web"}))
    w = WatchThread(
        v1.list_namespaced_service,
        "default",
        label_selector="app=web",
        resource_version=str(cluster.resource_version),
        timeout_seconds=2,
    )
    assert cluster.wait_for_watches(1)
    v1.create_namespaced_service("default", svc_body("other", {"app": "other"}))
    v1.patch_namespaced_service("web", "default", {"metadata": {"labels": {"app": "gone"}}})
    v1.patch_namespaced_service("other", "default", {"metadata": {"labels": {"app": "web"}}})
    v1.patch_namespaced_service("other", "default", {"metadata": {"annotations": {"k": "v"}}})
    w.wait_for(lambda evs: len(evs) >= 3)
    w.watch.stop()
    w.join()
    assert w.typed() == [("DELETED", "web"), ("ADDED", "other"), ("MODIFIED", "other")]


def test_watch_from_compacted_version_is_410(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    old = str(cluster.resource_version)
    v1.create_namespaced_service("default", svc_body("a"))
    cluster.faults.compact()
    with pytest.raises(ApiException) as info:
        for _ in watch.Watch().stream(
            v1.list_service_for_all_namespaces, resource_version=old, timeout_seconds=2
        ):
            pass
    assert info.value.status == 410
    # The current version is still fine.
    w = WatchThread(
        v1.list_service_for_all_namespaces,
        resource_version=str(cluster.resource_version),
        timeout_seconds=1,
    )
    w.join()
    assert w.error is None


def test_bounded_history_window() -> None:
    with (
        DevCluster(history=3) as small,
        client.ApiClient(client.Configuration(host=small.url)) as api,
    ):
        v1 = client.CoreV1Api(api)
        start = str(small.resource_version)
        for i in range(5):
            v1.create_namespaced_service("default", svc_body(f"s{i}"))
        with pytest.raises(ApiException) as info:
            for _ in watch.Watch().stream(
                v1.list_namespaced_service, "default", resource_version=start, timeout_seconds=1
            ):
                pass
        assert info.value.status == 410
        recent = str(small.resource_version - 3)
        events = [
            e["type"]
            for e in watch.Watch().stream(
                v1.list_namespaced_service, "default", resource_version=recent, timeout_seconds=1
            )
        ]
        assert events == ["ADDED", "ADDED", "ADDED"]


def test_watch_timeout_closes_stream(v1: client.CoreV1Api) -> None:
    began = time.monotonic()
    list(watch.Watch().stream(v1.list_namespace, resource_version="0", timeout_seconds=1))
    assert 0.9 <= time.monotonic() - began < 3


# ----- endpoints helper and the no-EndpointSlice mode ---------------------------------------------


def test_service_endpoints_writes_slices_and_endpoints(
    cluster: DevCluster, v1: client.CoreV1Api, disc: client.DiscoveryV1Api
) -> None:
    v1.create_namespaced_service("default", svc_body("web", ip_family_policy="PreferDualStack"))
    v1.create_namespaced_pod("default", pod_body("web-0", "10.244.0.5"))
    endpoints = [
        {"ip": "10.244.0.5", "hostname": "web-0", "ready": True, "pod": "web-0", "node": "n1"},
        {"ip": "10.244.0.6", "ready": False, "pod": "web-1"},
        {"ip": "fd00:10:244::5", "ready": True, "pod": "web-0"},
    ]
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}]
    cluster.service_endpoints("default", "web", endpoints, ports)

    slices = disc.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web"
    ).items
    assert sorted((s.metadata.name, s.address_type) for s in slices) == [
        ("web-ipv4", "IPv4"),
        ("web-ipv6", "IPv6"),
    ]
    v4 = next(s for s in slices if s.address_type == "IPv4")
    first = v4.endpoints[0]
    assert (first.hostname, first.node_name, first.conditions.ready) == ("web-0", "n1", True)
    assert first.target_ref.kind == "Pod" and first.target_ref.uid
    assert v4.endpoints[1].conditions.ready is False
    assert v4.metadata.owner_references[0].kind == "Service"

    ep = v1.read_namespaced_endpoints("web", "default")
    subset = ep.subsets[0]
    assert [a.ip for a in subset.addresses] == [
        "10.244.0.5"
    ]  # primary family only, like the controller
    assert (
        subset.addresses[0].hostname == "web-0" and subset.addresses[0].target_ref.name == "web-0"
    )
    assert [a.ip for a in subset.not_ready_addresses] == ["10.244.0.6"]
    assert subset.ports[0].port == 80

    cluster.service_endpoints("default", "web", endpoints[:1], ports)  # the IPv6 slice goes away
    remaining = disc.list_namespaced_endpoint_slice("default").items
    assert [s.metadata.name for s in remaining] == ["web-ipv4"]


def test_without_endpointslices_api() -> None:
    with (
        DevCluster(endpointslices=False) as c,
        client.ApiClient(client.Configuration(host=c.url)) as api,
    ):
        assert client.ApisApi(api).get_api_versions().groups == []
        with pytest.raises(ApiException) as info:
            client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces()
        assert info.value.status == 404
        with pytest.raises(ApiException) as info:
            client.DiscoveryV1Api(api).get_api_resources()
        assert info.value.status == 404
        v1 = client.CoreV1Api(api)
        v1.create_namespaced_service("default", svc_body("web"))
        result = c.service_endpoints(
            "default", "web", [{"ip": "10.244.0.5", "ready": True}], [{"name": "http", "port": 80}]
        )
        assert result["slices"] == []
        assert (
            v1.list_endpoints_for_all_namespaces().items[0].subsets[0].addresses[0].ip
            == "10.244.0.5"
        )


# ----- faults --------------------------------------------------------------------------------------


def test_fault_down_and_up(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    port = cluster.port
    w = WatchThread(v1.list_namespace, timeout_seconds=10)
    assert cluster.wait_for_watches(1)
    cluster.faults.down()
    w.join()
    assert isinstance(w.error, urllib3.exceptions.ProtocolError)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        v1.list_namespace(_request_timeout=2)
    cluster.faults.up()
    assert cluster.port == port
    assert "default" in names(v1.list_namespace().items)


def test_fault_error_burst(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    cluster.faults.error_burst(2, code=503)
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            v1.list_namespace()
        assert info.value.status == 503
    assert v1.list_namespace().items


def test_fault_cut_watches(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    w = WatchThread(v1.list_namespace, timeout_seconds=10)
    assert cluster.wait_for_watches(1)
    w.wait_for(lambda evs: len(evs) >= 4)  # the synthetic ADDED events arrived
    assert cluster.faults.cut_watches() == 1
    w.join()
    assert isinstance(w.error, urllib3.exceptions.ProtocolError)
    assert cluster.open_watches == 0


def test_fault_cut_watches_mid_json(cluster: DevCluster) -> None:
    http = urllib3.PoolManager()
    resp = http.request(
        "GET",
        f"{cluster.url}/api/v1/namespaces?watch=true&resourceVersion={cluster.resource_version}",
        preload_content=False,
    )
    assert cluster.wait_for_watches(1)
    assert cluster.faults.cut_watches_mid_json() == 1
    received = b""
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for chunk in resp.stream(amt=None, decode_content=False):
            received += chunk
    assert received and not received.endswith(b"\n")
    with pytest.raises(ValueError):
        json.loads(received)
    http.clear()


def test_fault_expire_all_watches(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    w = WatchThread(v1.list_namespace, timeout_seconds=10)
    assert cluster.wait_for_watches(1)
    cluster.faults.expire_all_watches()
    w.join()
    assert isinstance(w.error, ApiException) and w.error.status == 410
    with pytest.raises(ApiException) as info:
        list(
            watch.Watch().stream(
                v1.list_namespace, resource_version=str(cluster.resource_version), timeout_seconds=1
            )
        )
    assert info.value.status == 410
    cluster.faults.clear()
    assert (
        list(
            watch.Watch().stream(
                v1.list_namespace, resource_version=str(cluster.resource_version), timeout_seconds=1
            )
        )
        == []
    )


def test_fault_slow_lists(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    cluster.faults.slow_lists(0.5)
    began = time.monotonic()
    v1.list_namespace()
    assert time.monotonic() - began >= 0.5
    began = time.monotonic()
    v1.read_namespace("default")
    assert time.monotonic() - began < 0.4
    cluster.faults.clear()
    began = time.monotonic()
    v1.list_namespace()
    assert time.monotonic() - began < 0.4


def test_request_log(cluster: DevCluster, v1: client.CoreV1Api) -> None:
    v1.list_namespaced_service("default", label_selector="a=b", limit=5)
    list(watch.Watch().stream(v1.list_service_for_all_namespaces, timeout_seconds=1))
    log = list(cluster.request_log)
    assert (
        "GET",
        "/api/v1/namespaces/default/services",
        {"labelSelector": "a=b", "limit": "5"},
    ) in log
    watches = [q for m, p, q in log if p == "/api/v1/services"]
    assert watches and watches[0]["watch"] == "true" and watches[0]["timeoutSeconds"] == "1"


# ----- demo file, kubeconfig and CLI ----------------------------------------------------------------


def _schema_problems(data: Any, model: str, path: str = "") -> list[str]:
    """Field names unknown to the client's OpenAPI models, recursively."""
    cls = getattr(client.models, model, None)
    if cls is None or not isinstance(data, dict):
        return []
    by_json = {v: k for k, v in cls.attribute_map.items()}
    problems = []
    for key, value in data.items():
        if key not in by_json:
            problems.append(f"{path}{key}")
            continue
        kind = cls.openapi_types[by_json[key]]
        if m := re.fullmatch(r"List\[(\w+)\]", kind):
            for i, item in enumerate(value or []):
                problems += _schema_problems(item, m.group(1), f"{path}{key}[{i}].")
        else:
            problems += _schema_problems(value, kind, f"{path}{key}.")
    return problems


def test_demo_yaml_is_valid_and_listable(
    cluster: DevCluster, v1: client.CoreV1Api, disc: client.DiscoveryV1Api
) -> None:
    models = {
        "Namespace": "V1Namespace",
        "Service": "V1Service",
        "Pod": "V1Pod",
        "EndpointSlice": "V1EndpointSlice",
    }
    docs = [d for d in yaml.safe_load_all(DEMO.read_text()) if d]
    for doc in docs:
        model = models[doc["kind"]]
        assert _schema_problems(doc, model) == [], doc["metadata"]["name"]
        getattr(client.models, model).from_dict(doc)  # types check out too
    cluster.load_yaml(DEMO)

    services = {
        (s.metadata.namespace, s.metadata.name): s
        for s in v1.list_service_for_all_namespaces().items
    }
    assert services["default", "kubernetes"].spec.cluster_ip == "10.96.0.1"
    assert services["kube-system", "kube-dns"].spec.cluster_ip == "10.96.0.10"
    assert services["demo", "db"].spec.cluster_ip == "None"
    assert services["demo", "search"].spec.external_name == "www.example.org"
    assert services["demo", "dual"].spec.cluster_ips == ["10.96.100.100", "fd00:10:96::100"]
    assert {p.name for p in services["demo", "web"].spec.ports} == {"http", "metrics"}
    assert {"default", "kube-system", "demo"} <= set(names(v1.list_namespace().items))
    slices = disc.list_endpoint_slice_for_all_namespaces().items
    db = next(s for s in slices if s.metadata.labels["kubernetes.io/service-name"] == "db")
    assert sorted(e.hostname for e in db.endpoints) == ["db-0", "db-1", "db-2"]
    web = v1.read_namespaced_endpoints("web", "demo").subsets[0]
    assert len(web.addresses) == 2 and len(web.not_ready_addresses) == 1
    pods = v1.list_pod_for_all_namespaces().items
    assert all(p.status.phase == "Running" and p.status.pod_ip for p in pods) and len(pods) >= 9
    pod_ips = {p.status.pod_ip for p in pods}
    pod_ips |= {ip.ip for p in pods for ip in p.status.pod_ips}
    for s in slices:
        for e in s.endpoints:
            if e.target_ref is not None:
                assert e.addresses[0] in pod_ips, e
    assert v1.list_endpoints_for_all_namespaces().items


def test_kubeconfig(cluster: DevCluster, tmp_path: Path) -> None:
    path = cluster.kubeconfig(tmp_path / "kubeconfig")
    with config.new_client_from_config(config_file=path) as api:
        assert "default" in names(client.CoreV1Api(api).list_namespace().items)


def test_cli_serves_demo_file() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dnsd.devcluster",
            "--port",
            "0",
            "--load",
            str(DEMO),
            "--no-endpointslices",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with client.ApiClient(client.Configuration(host=url)) as api:
            services = client.CoreV1Api(api).list_namespaced_service("demo").items
            assert {"db", "dual", "search", "web"} <= set(names(services))
            assert client.CoreV1Api(api).read_namespaced_endpoints("db", "demo").subsets
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_concurrent_writers_and_watch_see_every_version(
    cluster: DevCluster, v1: client.CoreV1Api
) -> None:
    start = cluster.resource_version
    w = WatchThread(
        v1.list_service_for_all_namespaces, resource_version=str(start), timeout_seconds=5
    )
    assert cluster.wait_for_watches(1)

    def writer(k: int) -> None:
        with client.ApiClient(client.Configuration(host=cluster.url)) as api:
            for i in range(10):
                client.CoreV1Api(api).create_namespaced_service("default", svc_body(f"w{k}-{i}"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cluster.resource_version == start + 60
    w.wait_for(lambda evs: len(evs) == 60)
    w.watch.stop()
    w.join()
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in w.events]
    assert versions == list(range(start + 1, start + 61))
    assert len({o["spec"]["clusterIP"] for _, o in w.events}) == 60


def test_python_api(cluster: DevCluster) -> None:
    created = cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "a"},
            "spec": {"ports": [{"port": 53, "protocol": "UDP"}]},
        }
    )
    assert created["metadata"]["namespace"] == "default" and created["spec"]["clusterIP"]
    replaced = cluster.apply(
        {
            **created,
            "metadata": {**created["metadata"], "resourceVersion": "1", "labels": {"x": "y"}},
        }
    )
    assert (
        replaced["metadata"]["labels"] == {"x": "y"}
        and replaced["spec"]["clusterIP"] == created["spec"]["clusterIP"]
    )
    assert cluster.get("svc", "a")["metadata"]["uid"] == created["metadata"]["uid"]
    assert [s["metadata"]["name"] for s in cluster.list("services", label_selector="x=y")] == ["a"]
    assert cluster.delete("Service", "a") is not None and cluster.delete("Service", "a") is None
    loaded = cluster.load_yaml(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Service, metadata: {name: s, namespace: late}, spec: {clusterIP: None}}\n"
        "- {apiVersion: v1, kind: Namespace, metadata: {name: late}}\n"
    )
    assert [o["kind"] for o in loaded] == ["Namespace", "Service"]
