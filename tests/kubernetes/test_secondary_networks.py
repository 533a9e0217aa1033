"""Secondary networks through real sockets: dnsd processes watching API emulators.

Covers the ten cases of ``/work/shared/reference/secondary_ips.md`` §7.9 (the pure parser
and the Corefile block are in ``test_secondary_parse.py``):

 1. the §1.4 example annotations A-D on pods, answered     6. multus-service slices change nothing
 2. unusable annotations: nothing, logged, hot good->bad   7. ``<nad>._net.<svc>`` names
 3. legacy ``networks-status``                             8. PTR overlap and precedence
 4. headless bound Services (replace and append)           9. hot-plug through the kubernetes client
 5. ClusterIP bound Services                              10. feature off = CoreDNS

plus pod records (``pod_records``), ``link_local``, the ``namespaces`` filter, custom
annotation names and a Corefile error from the real process.

Three emulated clusters share one object set ("the world"): A as written, B = A plus
multus-service EndpointSlices, C = A without any network annotation.  Eight dnsd processes
(started in parallel, once per module) watch them with different ``secondary_networks`` blocks.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from kubernetes import client
from support import ROOT, Dnsd, dig, free_port, query, wait_for_dns
from test_secondary_parse import EXAMPLE_A, EXAMPLE_B, EXAMPLE_C, EXAMPLE_D

from dnsd.devcluster import DevCluster
from dnsd.devcluster import resources as emulator_resources
from dnsd.devcluster.alloc import Allocator
from dnsd.plugins.kubernetes.secondary import PodNetworks, network_ref, parse_network_status

STATUS = "k8s.v1.cni.cncf.io/network-status"
LEGACY = "k8s.v1.cni.cncf.io/networks-status"
REQUEST = "k8s.v1.cni.cncf.io/networks"
SERVICE_NETWORK = "k8s.v1.cni.cncf.io/service-network"
CUSTOM_STATUS = "example.com/status"
CUSTOM_NETWORK = "example.com/net"
NETWORK_ANNOTATIONS = (STATUS, LEGACY, SERVICE_NETWORK, CUSTOM_STATUS, CUSTOM_NETWORK)
Z = "cluster.local."
RDMA = [{"name": "rdma", "port": 4791, "protocol": "UDP"}]
HTTP = [{"name": "http", "port": 80, "protocol": "TCP"}]


# ===== the world ================================================================================


def default(*ips: str) -> dict[str, Any]:
    return {"name": "kindnet", "interface": "eth0", "ips": list(ips), "default": True, "dns": {}}


def net(name: str, *ips: str, iface: str = "net1") -> dict[str, Any]:
    return {"name": name, "interface": iface, "ips": list(ips), "mac": "9a:a5:04:39:8d:54", "dns": {}}


def status(*entries: dict[str, Any]) -> str:
    return json.dumps(list(entries))


@dataclass
class P:
    """A pod: name, namespace, primary IPs, annotations, readiness."""

    name: str
    ns: str
    ips: tuple[str, ...]
    annotations: dict[str, str]
    ready: bool = True


@dataclass
class S:
    """A Service and the endpoints its controller would publish.

    ``members``: (pod, hostname, ready-in-the-slice).  ``network``: the service-network
    annotation (None = unbound)."""

    name: str
    ns: str
    network: str | None
    members: list[tuple[str, str, bool]]
    cluster_ip: str = "None"
    ports: tuple[dict[str, Any], ...] = tuple(RDMA)
    publish_not_ready: bool = False
    annotations: dict[str, str] | None = None
    external_name: str = ""


OVERSIZE = json.dumps([{"name": "macvlan", "ips": ["10.10.1.3"],
                        "org.example.pad": " " * (64 * 1024)}])
PODS = [
    # ns-a: the bound network is ns-a/macvlan
    P("db-0", "ns-a", ("10.244.1.10",), {STATUS: status(default("10.244.1.10"), net("ns-a/macvlan", "10.10.0.10", "fd10::10"))}),
    P("db-1", "ns-a", ("10.244.1.11",), {STATUS: status(default("10.244.1.11"), net("macvlan", "10.10.0.11/24"))}),
    P("db-2", "ns-a", ("10.244.1.12",), {STATUS: status(default("10.244.1.12"))}),
    P("db-3", "ns-a", ("10.244.1.13",), {STATUS: status(default("10.244.1.13"), net("macvlan", "10.10.0.13"))}, ready=False),
    P("web-0", "ns-a", ("10.244.2.20",), {STATUS: status(default("10.244.2.20"), net("macvlan", "10.10.0.20"))}),
    P("web-1", "ns-a", ("10.244.2.21",), {STATUS: status(default("10.244.2.21"), net("macvlan", "10.10.0.21"),
                                                        net("ns-a/data_net", "10.20.0.21", iface="net2"))}),
    P("pub-0", "ns-a", ("10.244.3.30",), {STATUS: status(default("10.244.3.30"), net("macvlan", "10.10.0.30"))}, ready=False),
    P("quick", "ns-a", ("10.244.1.73",), {REQUEST: "macvlan-conf", STATUS: EXAMPLE_A}),
    P("overlay-0", "ns-a", ("10.244.181.69", "fd00:10:244:37:a5bd:7eaf:211e:b544"),
      {REQUEST: "kube-system/macvlan-overlay", STATUS: EXAMPLE_B, LEGACY: EXAMPLE_B,
       "cni.projectcalico.org/podIPs": "10.244.181.69/32,fd00:10:244:37:a5bd:7eaf:211e:b544/128"}),
    P("antrea-0", "ns-a", ("192.0.1.18",), {STATUS: EXAMPLE_D}),
    P("leg-0", "ns-a", ("10.244.4.40",), {LEGACY: status(default("10.244.4.40"), net("macvlan", "10.10.0.40"))}),
    P("both-0", "ns-a", ("10.244.4.41",), {STATUS: status(default("10.244.4.41"), net("macvlan", "10.10.0.41")),
                                          LEGACY: status(default("10.244.4.41"), net("macvlan", "10.10.0.99"))}),
    P("noname-0", "ns-a", ("10.244.11.1",), {STATUS: json.dumps([
        {"name": "", "ips": ["10.244.11.1"], "default": True},
        {"name": "", "interface": "net1", "ips": ["10.10.5.5"]},
        {"name": "ns-a/macvlan", "interface": "net2", "ips": ["10.10.5.6"]}])}),
    P("broken-json", "ns-a", ("10.244.10.1",), {STATUS: '[{"name": "macvlan", "ips": ["10.10.1.1"]}'}),
    P("broken-object", "ns-a", ("10.244.10.2",), {STATUS: '{"name": "macvlan", "ips": ["10.10.1.2"]}'}),
    P("broken-size", "ns-a", ("10.244.10.3",), {STATUS: OVERSIZE}),
    P("broken-entries", "ns-a", ("10.244.10.4",), {STATUS: status(
        net("macvlan", "10.10.1.4"), *[{"name": f"filler-{i}"} for i in range(64)])}),
    P("broken-ips", "ns-a", ("10.244.10.5",), {STATUS: status(
        net("macvlan", *[f"10.10.2.{i}" for i in range(1, 34)]))}),
    P("link-0", "ns-a", ("10.244.5.50",), {STATUS: status(default("10.244.5.50"),
                                                          net("macvlan", "169.254.10.5", "fe80::5", "10.10.0.50"))}),
    P("plain-0", "ns-a", ("10.244.9.9",), {STATUS: status(default("10.244.9.9"))}),
    # blue-0's secondary addresses overlap red-0's (10.77.0.1), plain-0's primary IP and web's ClusterIP
    P("blue-0", "ns-a", ("10.244.6.60",), {STATUS: status(default("10.244.6.60"),
                                                          net("blue", "10.77.0.1", "10.244.9.9", "10.96.50.50"))}),
    P("stay-0", "ns-a", ("10.244.12.1",), {STATUS: status(default("10.244.12.1"), net("macvlan", "10.78.0.1"))}),
    P("cust-0", "ns-a", ("10.244.13.1",), {STATUS: status(default("10.244.13.1"), net("macvlan", "10.10.7.8")),
                                          CUSTOM_STATUS: status(default("10.244.13.1"), net("macvlan", "10.10.7.7"))}),
    # ns-b: same address 10.77.0.1 on another namespace's network
    P("red-0", "ns-b", ("10.244.7.70",), {STATUS: status(default("10.244.7.70"), net("red", "10.77.0.1"))}),
    P("gone-0", "ns-b", ("10.244.12.2",), {STATUS: status(default("10.244.12.2"), net("red", "10.78.0.1"))}),
    # namespace-b: example C (spec form)
    P("spec-c", "namespace-b", ("192.0.2.2", "2001:db8::2230"), {STATUS: EXAMPLE_C}),
    # hot: changed by the tests through the kubernetes client
    P("hp-0", "hot", ("10.244.8.80",), {STATUS: status(default("10.244.8.80"))}),
    P("bad-0", "hot", ("10.244.8.81",), {STATUS: status(default("10.244.8.81"), net("green", "10.88.0.9"))}),
]
BROKEN = ["broken-json", "broken-object", "broken-size", "broken-entries", "broken-ips"]
SERVICES = [
    S("db", "ns-a", "macvlan", [("db-0", "db-0", True), ("db-1", "db-1", True), ("db-2", "db-2", True),
                                ("db-3", "db-3", False)]),
    S("empty", "ns-a", "macvlan", [("db-2", "", True)]),
    S("v4", "ns-a", "macvlan", [("db-1", "", True)]),
    S("pub", "ns-a", "macvlan", [("pub-0", "", True)], publish_not_ready=True),
    S("web", "ns-a", "macvlan", [("web-0", "", True), ("web-1", "", True)], cluster_ip="10.96.50.50",
      ports=tuple(HTTP)),
    S("dn", "ns-a", "data_net", [("web-1", "", True)]),
    S("quickstart", "ns-a", "macvlan-conf", [("quick", "", True)]),
    S("overlay", "ns-a", "kube-system/macvlan-overlay", [("overlay-0", "", True)]),
    S("antrea", "ns-a", "net", [("antrea-0", "", True)]),
    S("legacy", "ns-a", "macvlan", [("leg-0", "", True)]),
    S("both", "ns-a", "macvlan", [("both-0", "", True)]),
    S("noname", "ns-a", " macvlan ", [("noname-0", "", True)]),
    S("broken", "ns-a", "macvlan", [(p, "", True) for p in BROKEN]),
    S("link", "ns-a", "macvlan", [("link-0", "", True)]),
    S("plain", "ns-a", None, [("plain-0", "plain-0", True)]),
    S("blue", "ns-a", "blue", [("blue-0", "blue-0", True)]),
    S("custom", "ns-a", None, [("cust-0", "", True)], annotations={CUSTOM_NETWORK: "macvlan"}),
    S("ext", "ns-a", "macvlan", [], external_name="www.example.org"),
    S("red", "ns-b", "red", [("red-0", "red-0", True)]),
    S("some", "namespace-b", "some-network", [("spec-c", "", True)]),
    S("ib", "namespace-b", "namespace-a/an-ip-over-infiniband-network", [("spec-c", "", True)]),
    S("sriov", "namespace-b", "sriov-network_a", [("spec-c", "", True)]),
    S("hot-h", "hot", "green", [("hp-0", "hp-0", True)]),
    S("hot-x", "hot", "hot/green", [("hp-0", "", True)]),
    S("hot-c", "hot", "green", [("hp-0", "", True)], cluster_ip="10.96.60.60", ports=tuple(HTTP)),
    S("hot-u", "hot", None, [("hp-0", "hp-0", True)]),
    S("bad-h", "hot", "green", [("bad-0", "bad-0", True)]),
]
NAMESPACES = ["ns-a", "ns-b", "namespace-b", "hot", "namespace-a"]
POD_BY_NAME = {(p.ns, p.name): p for p in PODS}


def family(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


def pod_object(p: P) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": p.name, "namespace": p.ns, "labels": {"app": p.name.split("-")[0]},
                     "annotations": dict(p.annotations)},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
        "status": {"phase": "Running", "podIP": p.ips[0], "podIPs": [{"ip": ip} for ip in p.ips],
                   "conditions": [{"type": "Ready", "status": "True" if p.ready else "False"}]},
    }


def service_object(s: S) -> dict[str, Any]:
    annotations = dict(s.annotations or {})
    if s.network is not None:
        annotations[SERVICE_NETWORK] = s.network
    meta = {"name": s.name, "namespace": s.ns, "annotations": annotations}
    if s.external_name:
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"type": "ExternalName", "externalName": s.external_name}}
    spec: dict[str, Any] = {"clusterIP": s.cluster_ip, "selector": {"app": s.name},
                            "ports": [dict(p) for p in s.ports]}
    if s.publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def endpoint(addresses: list[str], pod: str, ns: str, hostname: str, ready: bool) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": addresses,
                          "conditions": {"ready": ready, "serving": ready, "terminating": False},
                          "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}}
    if hostname:
        ep["hostname"] = hostname
    return ep


def kube_slices(s: S) -> list[dict[str, Any]]:
    """What the kube EndpointSlice controller writes: primary pod IPs, one slice per family."""
    out = []
    for fam in ("IPv4", "IPv6"):
        eps = [endpoint([ip for ip in POD_BY_NAME[(s.ns, pod)].ips if family(ip) == fam], pod, s.ns, host, ready)
               for pod, host, ready in s.members]
        eps = [e for e in eps if e["addresses"]]
        if not eps:
            continue
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{s.name}-k{fam[-1]}x7q", "namespace": s.ns,
                         "labels": {"kubernetes.io/service-name": s.name,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": fam, "endpoints": eps, "ports": [dict(p) for p in s.ports],
        })
    return out


def multus_slices(s: S) -> list[dict[str, Any]]:
    """What multus-service's controller writes for a bound Service: every IP of the pod's
    entries for the network (no family filter, no link-local filter) in one IPv4 slice."""
    if s.network is None or s.external_name:
        return []
    eps = []
    for pod, host, ready in s.members:
        p = POD_BY_NAME[(s.ns, pod)]
        ref = network_ref(s.network, s.ns)
        try:
            atts = parse_network_status(p.annotations.get(STATUS, "[]"), s.ns, link_local=True)
        except ValueError:
            continue
        ips = PodNetworks(atts, STATUS).secondary_ips(ref) if ref else []
        if ips:
            eps.append(endpoint(ips, pod, s.ns, host, ready or s.publish_not_ready))
    if not eps:
        return []
    labels = {"kubernetes.io/service-name": s.name,
              "endpointslice.kubernetes.io/managed-by": "multus-endpointslice-controller.npwg.k8s.io",
              "service.kubernetes.io/service-proxy-name": "multus-proxy"}
    if s.cluster_ip == "None":
        labels["service.kubernetes.io/headless"] = ""
    return [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": f"{s.name}-multus-x4k2p", "namespace": s.ns, "labels": labels},
             "addressType": "IPv4", "endpoints": eps, "ports": [dict(p) for p in s.ports]}]


def lenient_slices() -> Callable[[], None]:
    """Let the emulator store IPv6 addresses in an IPv4 slice, as multus-service writes them
    (the emulator, like kube-apiserver, checks families); returns the undo."""
    table = emulator_resources.PREPARE
    strict = table["endpointslices"]

    def prepare(obj: dict[str, Any], old: dict[str, Any] | None, alloc: Allocator) -> None:
        saved = []
        for ep in obj.get("endpoints") or []:
            saved.append(ep.get("addresses"))
            fitting = [a for a in ep.get("addresses") or [] if Allocator.family_of(a) == obj.get("addressType")]
            ep["addresses"] = fitting or ep.get("addresses")
        strict(obj, old, alloc)
        for ep, addresses in zip(obj.get("endpoints") or [], saved, strict=True):
            ep["addresses"] = addresses

    table["endpointslices"] = prepare
    return lambda: table.__setitem__("endpointslices", strict)


def world(variant: str) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                                  for n in NAMESPACES]
    objs += [service_object(s) for s in SERVICES]
    objs += [sl for s in SERVICES if not s.external_name for sl in kube_slices(s)]
    objs += [pod_object(p) for p in PODS]
    if variant == "multus":
        objs += [sl for s in SERVICES for sl in multus_slices(s)]
    if variant == "plain":
        objs = copy.deepcopy(objs)
        for obj in objs:
            for key in NETWORK_ANNOTATIONS:
                obj["metadata"].get("annotations", {}).pop(key, None)
    return objs


def start_cluster(variant: str) -> DevCluster:
    cluster = DevCluster(bookmark_interval=0.5).start()
    undo = lenient_slices() if variant == "multus" else None
    try:
        for obj in world(variant):
            cluster.apply(obj)
    finally:
        if undo is not None:
            undo()
    return cluster


# ===== the servers ================================================================================

COREFILE = """\
.:{{PORT}} {{
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint {url}
        pods verified
{block}    }}
}}
"""
CONFIGS = {
    # name: (cluster, secondary_networks block or None)
    "main": ("A", "secondary_networks {\n net_names\n }"),
    "append": ("A", "secondary_networks {\n headless append\n pod_records off\n }"),
    "scoped": ("A", "namespaces ns-a\n secondary_networks {\n link_local on\n net_names\n }"),
    "custom": ("A", f"secondary_networks {{\n status_annotation {CUSTOM_STATUS}\n"
                    f" service_annotation {CUSTOM_NETWORK}\n }}"),
    "multus": ("B", "secondary_networks {\n net_names\n }"),
    "off_a": ("A", None),
    "off_c": ("C", None),
    "on_c": ("C", "secondary_networks {\n }"),
}


class Env:
    """The three clusters and the eight servers; ``stop`` also cleans up a partial start."""

    def __init__(self) -> None:
        self.clusters: dict[str, DevCluster] = {}
        self.servers: dict[str, Dnsd] = {}
        self.api: client.ApiClient | None = None

    def start(self) -> None:
        for name, variant in (("A", "annotated"), ("B", "multus"), ("C", "plain")):
            self.clusters[name] = start_cluster(variant)
        for name, (cluster, block) in CONFIGS.items():
            text = ""
            if block is not None:
                text = "".join(f"        {line.strip()}\n" for line in block.splitlines())
            corefile = COREFILE.format(url=self.clusters[cluster].url, block=text)
            self.servers[name] = Dnsd(corefile)
            self.servers[name].start(wait=False)
        for server in self.servers.values():
            wait_for_dns(server.port, proc=server.proc, timeout=30)
        self.api = client.ApiClient(client.Configuration(host=self.clusters["A"].url))
        self.v1 = client.CoreV1Api(self.api)

    def port(self, name: str) -> int:
        return self.servers[name].port

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        for server in self.servers.values():
            server.stop()
        for cluster in self.clusters.values():
            cluster.stop()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    try:
        e.start()
        yield e
    finally:
        e.stop()


# ===== asking and comparing =======================================================================

NX = ("NXDOMAIN", [])
NODATA = ("NOERROR", [])
SERIAL = re.compile(r"(IN SOA \S+ \S+ )\d+")
SOA_SERIAL = re.compile(r"^(\S+\.\S* \S+\. )\d+( \d+ \d+ \d+ \d+)$")  # SOA rdata
MASK = r"\1<serial>\2"


def ok(*rrs: str) -> tuple[str, list[str]]:
    return "NOERROR", sorted(rrs)


def fqdn(name: str) -> str:
    if name.endswith("."):
        return name
    if re.fullmatch(r"[0-9a-f:.]+", name) and (":" in name or name.count(".") == 3):
        return dns.reversename.from_address(name).to_text()
    return f"{name}.{Z}"


def ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    msg = query(fqdn(name), rdtype, port=port)
    negative = msg.rcode() == dns.rcode.NXDOMAIN or not msg.answer
    if negative:  # every negative answer carries the zone's SOA
        assert [rrset.rdtype for rrset in msg.authority] == [dns.rdatatype.SOA], msg
    assert msg.flags & dns.flags.AA
    return msg


def result(port: int, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    """(rcode, sorted "TYPE rdata" of the answer section)."""
    msg = ask(port, name, rdtype)
    rrs = [f"{dns.rdatatype.to_text(rrset.rdtype)} {SOA_SERIAL.sub(MASK, rd.to_text())}"
           for rrset in msg.answer for rd in rrset]
    return dns.rcode.to_text(msg.rcode()), sorted(rrs)


def norm(msg: dns.message.Message) -> tuple[Any, ...]:
    """The whole message but its ID and the SOA serial (each process has its own)."""
    def section(rrsets: list[Any]) -> list[str]:
        return sorted(SERIAL.sub(r"\1<serial>", line) for rrset in rrsets for line in rrset.to_text().splitlines())
    return (dns.rcode.to_text(msg.rcode()), dns.flags.to_text(msg.flags), section(msg.answer),
            section(msg.authority), section(msg.additional))


def check(port: int, table: list[tuple[str, str, tuple[str, list[str]]]]) -> None:
    got = [(name, rdtype, result(port, name, rdtype)) for name, rdtype, _ in table]
    assert got == table


def poll(port: int, name: str, rdtype: str, expected: tuple[str, list[str]], within: float = 1.0) -> float:
    """Seconds until ``name`` answers ``expected``; fails after ``within`` seconds."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < within:
        last = result(port, name, rdtype)
        if last == expected:
            return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"{name} {rdtype}: still {last} after {within}s, expected {expected}")


def patch_status(env: Env, pod: str, ns: str, value: str | None) -> None:
    """A merge patch of the pod's network-status annotation (None removes it)."""
    env.v1.patch_namespaced_pod(pod, ns, {"metadata": {"annotations": {STATUS: value}}},
                                _content_type="application/merge-patch+json")


# ===== §7.9 case 1: the example annotations as pods ===============================================


def test_example_annotations_answer(env: Env) -> None:
    check(env.port("main"), [
        # A: bare NAD name macvlan-conf (pre-3.6 Multus), default entry without interface
        ("quickstart.ns-a.svc", "A", ok("A 192.168.1.205")),
        ("quickstart.ns-a.svc", "AAAA", NODATA),
        ("192-168-1-205.quickstart.ns-a.svc", "A", ok("A 192.168.1.205")),
        ("10-244-1-73.quickstart.ns-a.svc", "A", NX),
        ("192-168-1-205.ns-a.pod", "A", ok("A 192.168.1.205")),
        ("192.168.1.205", "PTR", ok("PTR 192-168-1-205.quickstart.ns-a.svc.cluster.local.")),
        # B: dual stack, namespaced names; the Service names a NAD of another namespace
        ("overlay.ns-a.svc", "A", ok("A 172.18.87.211")),
        ("overlay.ns-a.svc", "AAAA", ok("AAAA fc00:f853:ccd:e793::888d")),
        ("fc00:f853:ccd:e793::888d", "PTR", ok("PTR fc00-f853-ccd-e793--888d.overlay.ns-a.svc.cluster.local.")),
        ("fc00-f853-ccd-e793--888d.ns-a.pod", "AAAA", ok("AAAA fc00:f853:ccd:e793::888d")),
        # C: CIDR addresses, vendor keys, an IP-less device entry, an address shared with the default
        ("some.namespace-b.svc", "A", ok("A 192.0.2.2")),
        ("some.namespace-b.svc", "AAAA", ok("AAAA 2001:db8::2234")),
        ("ib.namespace-b.svc", "A", ok("A 198.51.100.1")),
        ("ib.namespace-b.svc", "AAAA", NODATA),
        ("sriov.namespace-b.svc", "A", NX),
        ("sriov.namespace-b.svc", "SRV", NX),
        ("198-51-100-1.namespace-b.pod", "A", ok("A 198.51.100.1")),
        ("2001-db8--2234.namespace-b.pod", "AAAA", ok("AAAA 2001:db8::2234")),
        # D: Antrea, "gateway" key, secondary entry without interface
        ("antrea.ns-a.svc", "A", ok("A 148.14.24.100")),
        ("148-14-24-100.antrea.ns-a.svc", "A", ok("A 148.14.24.100")),
        # "name": "" never matches a network; the service annotation " macvlan " is trimmed
        ("noname.ns-a.svc", "A", ok("A 10.10.5.6")),
        ("10-10-5-5.noname.ns-a.svc", "A", NX),
    ])


# ===== §7.9 case 2: unusable annotations ==========================================================


def test_unusable_annotations_give_nothing_and_are_logged(env: Env) -> None:
    port = env.port("main")
    check(port, [("broken.ns-a.svc", "A", NX), ("broken.ns-a.svc", "SRV", NX)]
          + [(f"10-10-1-{i}.ns-a.pod", "A", NX) for i in range(1, 6)]
          + [("10-10-2-1.ns-a.pod", "A", NX), ("macvlan._net.broken.ns-a.svc", "A", NODATA)])
    # Their primary PTRs are still CoreDNS's.
    assert result(port, "10.244.10.1", "PTR") == ok("PTR 10-244-10-1.broken.ns-a.svc.cluster.local.")
    log = env.servers["main"].output()
    reasons = dict(re.findall(
        r"\[WARNING\] plugin/kubernetes: pod ns-a/(broken-[a-z]+): unusable network-status annotation \((\w+)\)", log))
    assert reasons == {"broken-json": "invalid_json", "broken-object": "not_a_list",
                       "broken-size": "oversize", "broken-entries": "too_many_entries",
                       "broken-ips": "too_many_ips"}
    # The other ns-a pods' annotations are fine; each broken one is logged once.
    assert len(re.findall("pod ns-a/[^:]*: unusable network-status annotation", log)) == 5


def test_hot_update_from_good_to_bad_drops_the_previous_parse(env: Env) -> None:
    port = env.port("main")
    good = status(default("10.244.8.81"), net("green", "10.88.0.9"))
    check(port, [("bad-h.hot.svc", "A", ok("A 10.88.0.9")), ("bad-0.bad-h.hot.svc", "A", ok("A 10.88.0.9")),
                 ("10-88-0-9.hot.pod", "A", ok("A 10.88.0.9")),
                 ("10.88.0.9", "PTR", ok("PTR bad-0.bad-h.hot.svc.cluster.local."))])
    patch_status(env, "bad-0", "hot", good[:-1])  # cut: no longer JSON
    poll(port, "bad-h.hot.svc", "A", NX)
    check(port, [("bad-0.bad-h.hot.svc", "A", NX), ("10-88-0-9.hot.pod", "A", NX),
                 ("10.88.0.9", "PTR", NX), ("green._net.bad-h.hot.svc", "A", NODATA),
                 ("10.244.8.81", "PTR", ok("PTR bad-0.bad-h.hot.svc.cluster.local."))])
    assert re.search(r"\[WARNING\] plugin/kubernetes: pod hot/bad-0: unusable network-status "
                     r"annotation \(invalid_json\): annotation is not valid JSON", env.servers["main"].output())
    # an object instead of a list: still nothing (once dnsd has seen it, as its log shows)
    patch_status(env, "bad-0", "hot", json.dumps({"name": "green", "ips": ["10.88.0.9"]}))
    deadline = time.monotonic() + 1.0
    while "pod hot/bad-0: unusable network-status annotation (not_a_list)" not in env.servers["main"].output():
        assert time.monotonic() < deadline, "the not_a_list annotation was not seen within 1 s"
        time.sleep(0.02)
    assert result(port, "bad-h.hot.svc", "A") == NX
    patch_status(env, "bad-0", "hot", good)
    poll(port, "bad-h.hot.svc", "A", ok("A 10.88.0.9"))
    assert result(port, "10-88-0-9.hot.pod", "A") == ok("A 10.88.0.9")


# ===== §7.9 case 3: legacy annotation ============================================================


def test_legacy_networks_status(env: Env) -> None:
    check(env.port("main"), [
        ("legacy.ns-a.svc", "A", ok("A 10.10.0.40")),
        ("10-10-0-40.ns-a.pod", "A", ok("A 10.10.0.40")),
        # both present: network-status wins, the legacy copy is not read at all
        ("both.ns-a.svc", "A", ok("A 10.10.0.41")),
        ("10-10-0-99.ns-a.pod", "A", NX),
        ("10-10-0-41.ns-a.pod", "A", ok("A 10.10.0.41")),
        # example B carries an identical legacy copy: one set of answers
        ("overlay.ns-a.svc", "A", ok("A 172.18.87.211")),
    ])


# ===== §7.9 case 4: headless bound Services =======================================================


def test_headless_bound_service_replaces_primary(env: Env) -> None:
    check(env.port("main"), [
        ("db.ns-a.svc", "A", ok("A 10.10.0.10", "A 10.10.0.11")),
        ("db.ns-a.svc", "AAAA", ok("AAAA fd10::10")),
        ("db-0.db.ns-a.svc", "A", ok("A 10.10.0.10")),
        ("db-0.db.ns-a.svc", "AAAA", ok("AAAA fd10::10")),
        ("db-1.db.ns-a.svc", "A", ok("A 10.10.0.11")),
        ("db-1.db.ns-a.svc", "AAAA", NODATA),  # the missing family
        ("db-2.db.ns-a.svc", "A", NX),  # ready, but not on the network
        ("db-3.db.ns-a.svc", "A", NX),  # on the network, but not ready
        ("db-0.db.ns-a.svc", "SRV", ok("SRV 0 50 4791 db-0.db.ns-a.svc.cluster.local.")),  # 2 addresses
        ("empty.ns-a.svc", "A", NX),  # no ready pod has the network
        ("empty.ns-a.svc", "AAAA", NX),
        ("empty.ns-a.svc", "TXT", NX),
        ("v4.ns-a.svc", "A", ok("A 10.10.0.11")),
        ("v4.ns-a.svc", "AAAA", NODATA),
        # publishNotReadyAddresses: the slice says ready although the pod is not
        ("pub.ns-a.svc", "A", ok("A 10.10.0.30")),
        ("10-10-0-30.pub.ns-a.svc", "A", ok("A 10.10.0.30")),
        ("link.ns-a.svc", "A", ok("A 10.10.0.50")),  # link-local addresses are off by default
        ("link.ns-a.svc", "AAAA", NODATA),
    ])


def test_headless_srv_targets_are_the_secondary_names(env: Env) -> None:
    for name in ("_rdma._udp.db.ns-a.svc", "db.ns-a.svc"):
        msg = ask(env.port("main"), name, "SRV")
        assert norm(msg)[2:] == (
            [f"{fqdn(name)} 5 IN SRV 0 33 4791 db-0.db.ns-a.svc.cluster.local.",
             f"{fqdn(name)} 5 IN SRV 0 33 4791 db-1.db.ns-a.svc.cluster.local."],
            [],
            ["db-0.db.ns-a.svc.cluster.local. 5 IN A 10.10.0.10",
             "db-0.db.ns-a.svc.cluster.local. 5 IN AAAA fd10::10",
             "db-1.db.ns-a.svc.cluster.local. 5 IN A 10.10.0.11"],
        )
    assert result(env.port("main"), "_http._tcp.db.ns-a.svc", "SRV") == NX


def test_headless_append_gives_primary_and_secondary(env: Env) -> None:
    port = env.port("append")
    check(port, [
        ("db.ns-a.svc", "A", ok("A 10.10.0.10", "A 10.10.0.11", "A 10.244.1.10", "A 10.244.1.11", "A 10.244.1.12")),
        ("db.ns-a.svc", "AAAA", ok("AAAA fd10::10")),
        ("db-0.db.ns-a.svc", "A", ok("A 10.10.0.10", "A 10.244.1.10")),
        ("db-2.db.ns-a.svc", "A", ok("A 10.244.1.12")),
        ("db-3.db.ns-a.svc", "A", NX),
        ("empty.ns-a.svc", "A", ok("A 10.244.1.12")),
        ("_rdma._udp.db.ns-a.svc", "SRV", ok(*(f"SRV 0 16 4791 db-{i}.db.ns-a.svc.cluster.local." for i in range(3)))),
        # append is for headless services only: ClusterIP endpoint names stay replaced
        ("10-10-0-20.web.ns-a.svc", "A", ok("A 10.10.0.20")),
        ("10-244-2-20.web.ns-a.svc", "A", NX),
        ("10.244.1.10", "PTR", ok("PTR db-0.db.ns-a.svc.cluster.local.")),
        ("10.10.0.10", "PTR", ok("PTR db-0.db.ns-a.svc.cluster.local.")),
    ])


# ===== §7.9 case 5: ClusterIP bound Services ======================================================


def test_clusterip_bound_service(env: Env) -> None:
    port = env.port("main")
    check(port, [
        ("web.ns-a.svc", "A", ok("A 10.96.50.50")),  # the VIP is multus-proxy's business
        ("10-10-0-20.web.ns-a.svc", "A", ok("A 10.10.0.20")),
        ("10-10-0-21.web.ns-a.svc", "A", ok("A 10.10.0.21")),
        ("10-244-2-20.web.ns-a.svc", "A", NX),
        ("10-20-0-21.web.ns-a.svc", "A", NX),  # web-1's other network
        ("10.10.0.20", "PTR", ok("PTR 10-10-0-20.web.ns-a.svc.cluster.local.")),
        ("10.244.2.20", "PTR", ok("PTR 10-244-2-20.web.ns-a.svc.cluster.local.")),
        ("10.96.50.50", "PTR", ok("PTR web.ns-a.svc.cluster.local.")),
    ])
    msg = ask(port, "_http._tcp.web.ns-a.svc", "SRV")
    assert norm(msg)[2:] == (
        ["_http._tcp.web.ns-a.svc.cluster.local. 5 IN SRV 0 100 80 web.ns-a.svc.cluster.local."], [],
        ["web.ns-a.svc.cluster.local. 5 IN A 10.96.50.50"])
    assert norm(ask(port, "10-10-0-20.web.ns-a.svc", "SRV"))[2] == [
        "10-10-0-20.web.ns-a.svc.cluster.local. 5 IN SRV 0 100 80 10-10-0-20.web.ns-a.svc.cluster.local."]


def test_dig_shows_the_secondary_addresses(env: Env) -> None:
    port = env.port("main")
    assert sorted(dig("+short", "db.ns-a.svc.cluster.local", "A", port=port).split()) == ["10.10.0.10", "10.10.0.11"]
    assert sorted(dig("+short", "-x", "10.77.0.1", port=port).split()) == [
        "blue-0.blue.ns-a.svc.cluster.local.", "red-0.red.ns-b.svc.cluster.local."]
    out = dig("+noall", "+answer", "db-0.macvlan._net.db.ns-a.svc.cluster.local", "AAAA", port=port)
    assert out.split() == ["db-0.macvlan._net.db.ns-a.svc.cluster.local.", "5", "IN", "AAAA", "fd10::10"]


# ===== §7.9 case 6: multus-service slices =========================================================

FORWARD = [
    ("db.ns-a.svc", "A"), ("db.ns-a.svc", "AAAA"), ("db-0.db.ns-a.svc", "AAAA"), ("db-2.db.ns-a.svc", "A"),
    ("db-3.db.ns-a.svc", "A"), ("_rdma._udp.db.ns-a.svc", "SRV"), ("db.ns-a.svc", "SRV"),
    ("empty.ns-a.svc", "A"), ("v4.ns-a.svc", "AAAA"), ("pub.ns-a.svc", "A"),
    ("web.ns-a.svc", "A"), ("10-10-0-20.web.ns-a.svc", "A"), ("10-244-2-20.web.ns-a.svc", "A"),
    ("_http._tcp.web.ns-a.svc", "SRV"), ("dn.ns-a.svc", "A"), ("quickstart.ns-a.svc", "A"),
    ("overlay.ns-a.svc", "A"), ("overlay.ns-a.svc", "AAAA"), ("antrea.ns-a.svc", "A"),
    ("legacy.ns-a.svc", "A"), ("both.ns-a.svc", "A"), ("noname.ns-a.svc", "A"), ("broken.ns-a.svc", "A"),
    ("link.ns-a.svc", "A"), ("link.ns-a.svc", "AAAA"), ("blue.ns-a.svc", "A"), ("red.ns-b.svc", "A"),
    ("some.namespace-b.svc", "A"), ("some.namespace-b.svc", "AAAA"), ("ib.namespace-b.svc", "A"),
    ("sriov.namespace-b.svc", "A"), ("macvlan._net.db.ns-a.svc", "A"), ("macvlan._net.web.ns-a.svc", "A"),
    ("10-10-0-10.ns-a.pod", "A"), ("10-77-0-1.ns-b.pod", "A"),
]
REVERSE = ["10.10.0.10", "fd10::10", "10.10.0.11", "10.10.0.20", "10.244.1.10", "10.244.2.20", "10.77.0.1",
           "10.244.9.9", "10.96.50.50", "172.18.87.211", "fc00:f853:ccd:e793::888d", "169.254.10.5",
           "fe80::5", "192.0.2.2", "198.51.100.1", "10.10.0.30", "10.10.0.13"]


def test_multus_service_slices_change_nothing(env: Env) -> None:
    with_slices, without = env.port("multus"), env.port("main")
    # B really holds the multus slices, IPv6 addresses in an IPv4 slice included.
    held = env.clusters["B"].get("EndpointSlice", "overlay-multus-x4k2p", "ns-a")
    assert held is not None and held["addressType"] == "IPv4"
    assert held["endpoints"][0]["addresses"] == ["172.18.87.211", "fc00:f853:ccd:e793::888d"]
    queries = FORWARD + [(ip, "PTR") for ip in REVERSE]
    got = [(name, t, norm(ask(with_slices, name, t))) for name, t in queries]
    want = [(name, t, norm(ask(without, name, t))) for name, t in queries]
    assert got == want
    spot = {(name, t): r for name, t, r in got}
    assert spot[("overlay.ns-a.svc", "AAAA")][2] == [
        "overlay.ns-a.svc.cluster.local. 5 IN AAAA fc00:f853:ccd:e793::888d"]
    assert spot[("10.244.9.9", "PTR")][2] == [
        "9.9.244.10.in-addr.arpa. 5 IN PTR plain-0.plain.ns-a.svc.cluster.local."]
    assert spot[("169.254.10.5", "PTR")][0] == "NXDOMAIN"


# ===== §7.9 case 7: _net names ====================================================================


def test_net_names(env: Env) -> None:
    check(env.port("main"), [
        ("macvlan._net.db.ns-a.svc", "A", ok("A 10.10.0.10", "A 10.10.0.11")),
        ("macvlan._net.db.ns-a.svc", "AAAA", ok("AAAA fd10::10")),
        ("MacVlan._NET.db.ns-a.svc", "A", ok("A 10.10.0.10", "A 10.10.0.11")),
        ("db-0.macvlan._net.db.ns-a.svc", "A", ok("A 10.10.0.10")),
        ("db-0.macvlan._net.db.ns-a.svc", "AAAA", ok("AAAA fd10::10")),
        ("db-2.macvlan._net.db.ns-a.svc", "A", NODATA),
        ("db-3.macvlan._net.db.ns-a.svc", "A", NX),
        ("nope.macvlan._net.db.ns-a.svc", "A", NX),
        ("a.db-0.macvlan._net.db.ns-a.svc", "A", NX),
        ("macvlan._net.db.ns-a.svc", "SRV", NODATA),
        ("blue._net.db.ns-a.svc", "A", NODATA),  # known service, no pod on that network
        ("macvlan._net.nosuch.ns-a.svc", "A", NX),
        ("macvlan._net.db.nosuch.svc", "A", NX),
        ("macvlan._net.ext.ns-a.svc", "A", NX),  # ExternalName
        # ClusterIP services too, endpoint labels are the dashed secondary IPs
        ("macvlan._net.web.ns-a.svc", "A", ok("A 10.10.0.20", "A 10.10.0.21")),
        ("10-10-0-21.macvlan._net.web.ns-a.svc", "A", ok("A 10.10.0.21")),
        # no annotation needed: any service, any network of its namespace
        ("macvlan._net.custom.ns-a.svc", "A", ok("A 10.10.7.8")),
        ("blue._net.blue.ns-a.svc", "A", ok("A 10.244.9.9", "A 10.77.0.1", "A 10.96.50.50")),
        ("macvlan._net.plain.ns-a.svc", "A", NODATA),
        # a NAD name that is no DNS label: only the service annotation reaches it
        ("dn.ns-a.svc", "A", ok("A 10.20.0.21")),
        ("data_net._net.dn.ns-a.svc", "A", NX),
        ("data_net._net.web.ns-a.svc", "A", NX),
        ("sriov-network_a._net.sriov.namespace-b.svc", "A", NX),
        # a NAD of another namespace: only the service annotation reaches it
        ("macvlan-overlay._net.overlay.ns-a.svc", "A", NODATA),
        ("an-ip-over-infiniband-network._net.ib.namespace-b.svc", "A", NODATA),
        ("some-network._net.ib.namespace-b.svc", "A", ok("A 192.0.2.2")),
    ])


def test_net_names_off_is_stock_nxdomain(env: Env) -> None:
    check(env.port("append"), [
        ("macvlan._net.db.ns-a.svc", "A", NX),
        ("db-0.macvlan._net.db.ns-a.svc", "A", NX),
        ("macvlan._net.web.ns-a.svc", "A", NX),
        ("blue._net.db.ns-a.svc", "A", NX),
    ])


# ===== §7.9 case 8: PTR ===========================================================================


def test_ptr_overlap_and_precedence(env: Env) -> None:
    check(env.port("main"), [
        # one address on two networks in two namespaces: every name, sorted
        ("10.77.0.1", "PTR", ok("PTR blue-0.blue.ns-a.svc.cluster.local.", "PTR red-0.red.ns-b.svc.cluster.local.")),
        # a secondary address equal to a primary endpoint IP / a ClusterIP: the primary data wins
        ("10.244.9.9", "PTR", ok("PTR plain-0.plain.ns-a.svc.cluster.local.")),
        ("10.96.50.50", "PTR", ok("PTR web.ns-a.svc.cluster.local.")),
        ("10.10.0.10", "PTR", ok("PTR db-0.db.ns-a.svc.cluster.local.")),
        ("fd10::10", "PTR", ok("PTR db-0.db.ns-a.svc.cluster.local.")),
        ("10.244.1.10", "PTR", ok("PTR db-0.db.ns-a.svc.cluster.local.")),
        ("10.10.0.13", "PTR", NX),  # not ready
        ("169.254.10.5", "PTR", NX),  # link-local is off
        ("10.10.7.8", "PTR", NX),  # custom is not bound here: _net names have no PTR
    ])
    # the overlapping names come sorted on the wire too
    (rrset,) = ask(env.port("main"), "10.77.0.1", "PTR").answer
    assert [rd.target.to_text() for rd in rrset] == [
        "blue-0.blue.ns-a.svc.cluster.local.", "red-0.red.ns-b.svc.cluster.local."]


def test_ptr_namespaces_filter_and_link_local(env: Env) -> None:
    check(env.port("scoped"), [
        ("10.77.0.1", "PTR", ok("PTR blue-0.blue.ns-a.svc.cluster.local.")),
        ("10.244.7.70", "PTR", NX),
        ("red.ns-b.svc", "A", NX),
        ("10-77-0-1.ns-b.pod", "A", NX),
        ("10-77-0-1.ns-a.pod", "A", ok("A 10.77.0.1")),
        # link_local on
        ("link.ns-a.svc", "A", ok("A 10.10.0.50", "A 169.254.10.5")),
        ("link.ns-a.svc", "AAAA", ok("AAAA fe80::5")),
        ("169.254.10.5", "PTR", ok("PTR 169-254-10-5.link.ns-a.svc.cluster.local.")),
        ("fe80::5", "PTR", ok("PTR fe80--5.link.ns-a.svc.cluster.local.")),
        ("169-254-10-5.ns-a.pod", "A", ok("A 169.254.10.5")),
        ("fe80--5.ns-a.pod", "AAAA", ok("AAAA fe80::5")),
    ])


# ===== pod records ===============================================================================


def test_pod_records(env: Env) -> None:
    check(env.port("main"), [
        ("10-10-0-10.ns-a.pod", "A", ok("A 10.10.0.10")),
        ("fd10--10.ns-a.pod", "AAAA", ok("AAAA fd10::10")),
        ("fd10--10.ns-a.pod", "A", NODATA),
        ("x.10-10-0-10.ns-a.pod", "A", ok("A 10.10.0.10")),
        ("10-10-0-10.ns-b.pod", "A", NX),  # scoped by namespace
        ("10-10-0-10.nosuch.pod", "A", NX),
        ("10-244-1-10.ns-a.pod", "A", ok("A 10.244.1.10")),
        ("10-10-0-13.ns-a.pod", "A", ok("A 10.10.0.13")),  # a live pod, ready or not
        ("10-10-5-5.ns-a.pod", "A", ok("A 10.10.5.5")),  # a secondary IP, whatever its name
        ("10-20-0-21.ns-a.pod", "A", ok("A 10.20.0.21")),
        ("169-254-10-5.ns-a.pod", "A", NX),  # link-local is off
        ("fe80--5.ns-a.pod", "AAAA", NX),
        # the same address on pods of two namespaces
        ("10-77-0-1.ns-a.pod", "A", ok("A 10.77.0.1")),
        ("10-77-0-1.ns-b.pod", "A", ok("A 10.77.0.1")),
        ("10-77-0-1.hot.pod", "A", NX),
    ])
    check(env.port("append"), [  # pod_records off
        ("10-10-0-10.ns-a.pod", "A", NX),
        ("fd10--10.ns-a.pod", "AAAA", NX),
        ("10-244-1-10.ns-a.pod", "A", ok("A 10.244.1.10")),
    ])


def test_pod_records_overlap_survives_deleting_one_pod(env: Env) -> None:
    port = env.port("main")
    check(port, [("10-78-0-1.ns-a.pod", "A", ok("A 10.78.0.1")), ("10-78-0-1.ns-b.pod", "A", ok("A 10.78.0.1"))])
    env.v1.delete_namespaced_pod("gone-0", "ns-b")
    poll(port, "10-78-0-1.ns-b.pod", "A", NX)
    assert result(port, "10-78-0-1.ns-a.pod", "A") == ok("A 10.78.0.1")


# ===== custom annotation names ===================================================================


def test_custom_annotation_names(env: Env) -> None:
    check(env.port("custom"), [
        ("custom.ns-a.svc", "A", ok("A 10.10.7.7")),
        ("10-10-7-7.ns-a.pod", "A", ok("A 10.10.7.7")),
        ("10-10-7-8.ns-a.pod", "A", NX),
        ("db.ns-a.svc", "A", ok("A 10.244.1.10", "A 10.244.1.11", "A 10.244.1.12")),  # k8s.v1 key not read
        ("legacy.ns-a.svc", "A", ok("A 10.244.4.40")),
        ("10-10-0-40.ns-a.pod", "A", ok("A 10.10.0.40")),  # the legacy plural is still the fallback
    ])
    check(env.port("main"), [("custom.ns-a.svc", "A", ok("A 10.244.13.1"))])


# ===== §7.9 case 9: hot-plug =====================================================================


def test_hot_plug_changes_every_service_of_the_pod_within_a_second(env: Env) -> None:
    port = env.port("main")
    before = [
        ("hot-h.hot.svc", "A", NX),
        ("hot-h.hot.svc", "AAAA", NX),
        ("hp-0.hot-h.hot.svc", "A", NX),
        ("hot-x.hot.svc", "A", NX),
        ("hot-c.hot.svc", "A", ok("A 10.96.60.60")),
        ("10-88-0-5.hot-c.hot.svc", "A", NX),
        ("hot-u.hot.svc", "A", ok("A 10.244.8.80")),
        ("green._net.hot-h.hot.svc", "A", NODATA),
        ("10.88.0.5", "PTR", NX),
        ("10-88-0-5.hot.pod", "A", NX),
    ]
    after = [
        ("hot-h.hot.svc", "A", ok("A 10.88.0.5")),
        ("hot-h.hot.svc", "AAAA", ok("AAAA fd88::5")),
        ("hp-0.hot-h.hot.svc", "A", ok("A 10.88.0.5")),
        ("hot-x.hot.svc", "A", ok("A 10.88.0.5")),
        ("hot-c.hot.svc", "A", ok("A 10.96.60.60")),
        ("10-88-0-5.hot-c.hot.svc", "A", ok("A 10.88.0.5")),
        ("hot-u.hot.svc", "A", ok("A 10.244.8.80")),
        ("green._net.hot-h.hot.svc", "A", ok("A 10.88.0.5")),
        ("10.88.0.5", "PTR", ok("PTR 10-88-0-5.hot-c.hot.svc.cluster.local.",
                                "PTR 10-88-0-5.hot-x.hot.svc.cluster.local.",
                                "PTR hp-0.hot-h.hot.svc.cluster.local.")),
        ("10-88-0-5.hot.pod", "A", ok("A 10.88.0.5")),
    ]
    check(port, before)
    plugged = status(default("10.244.8.80"), net("green", "10.88.0.5", "fd88::5"))
    patch_status(env, "hp-0", "hot", plugged)
    poll(port, "hot-h.hot.svc", "A", ok("A 10.88.0.5"))
    poll(port, "10-88-0-5.hot-c.hot.svc", "A", ok("A 10.88.0.5"))
    poll(port, "hot-x.hot.svc", "A", ok("A 10.88.0.5"))
    check(port, after)
    (rrset,) = ask(port, "10.88.0.5", "PTR").answer  # sorted on the wire
    assert [rd.target.to_text() for rd in rrset] == [
        "10-88-0-5.hot-c.hot.svc.cluster.local.", "10-88-0-5.hot-x.hot.svc.cluster.local.",
        "hp-0.hot-h.hot.svc.cluster.local."]
    # a second attachment of the same network on another interface adds its address
    twice = status(default("10.244.8.80"), net("green", "10.88.0.5", "fd88::5"),
                   net("hot/green", "10.88.0.6", iface="net2"))
    patch_status(env, "hp-0", "hot", twice)
    poll(port, "hot-h.hot.svc", "A", ok("A 10.88.0.5", "A 10.88.0.6"))
    poll(port, "10-88-0-6.hot-c.hot.svc", "A", ok("A 10.88.0.6"))
    # unplug: the annotation goes away
    patch_status(env, "hp-0", "hot", None)
    poll(port, "hot-h.hot.svc", "A", NX)
    poll(port, "10-88-0-5.hot-c.hot.svc", "A", NX)
    poll(port, "hot-x.hot.svc", "A", NX)
    check(port, before + [("10-88-0-6.hot.pod", "A", NX)])


# ===== §7.9 case 10: feature off ==================================================================

CORE = [
    ("db.ns-a.svc", "A", ok("A 10.244.1.10", "A 10.244.1.11", "A 10.244.1.12")),
    ("db.ns-a.svc", "AAAA", NODATA),
    ("db-0.db.ns-a.svc", "A", ok("A 10.244.1.10")),
    ("db-2.db.ns-a.svc", "A", ok("A 10.244.1.12")),
    ("db-3.db.ns-a.svc", "A", NX),
    ("_rdma._udp.db.ns-a.svc", "SRV", ok(*(f"SRV 0 33 4791 db-{i}.db.ns-a.svc.cluster.local." for i in range(3)))),
    ("empty.ns-a.svc", "A", ok("A 10.244.1.12")),
    ("v4.ns-a.svc", "AAAA", NODATA),
    ("pub.ns-a.svc", "A", ok("A 10.244.3.30")),
    ("web.ns-a.svc", "A", ok("A 10.96.50.50")),
    ("10-244-2-20.web.ns-a.svc", "A", ok("A 10.244.2.20")),
    ("10-10-0-20.web.ns-a.svc", "A", NX),
    ("_http._tcp.web.ns-a.svc", "SRV", ok("SRV 0 100 80 web.ns-a.svc.cluster.local.")),
    ("quickstart.ns-a.svc", "A", ok("A 10.244.1.73")),
    ("overlay.ns-a.svc", "AAAA", ok("AAAA fd00:10:244:37:a5bd:7eaf:211e:b544")),
    ("antrea.ns-a.svc", "A", ok("A 192.0.1.18")),
    ("some.namespace-b.svc", "A", ok("A 192.0.2.2")),
    ("ib.namespace-b.svc", "AAAA", ok("AAAA 2001:db8::2230")),
    ("sriov.namespace-b.svc", "A", ok("A 192.0.2.2")),
    ("legacy.ns-a.svc", "A", ok("A 10.244.4.40")),
    ("both.ns-a.svc", "A", ok("A 10.244.4.41")),
    ("broken.ns-a.svc", "A", ok(*(f"A 10.244.10.{i}" for i in range(1, 6)))),
    ("link.ns-a.svc", "A", ok("A 10.244.5.50")),
    ("blue.ns-a.svc", "A", ok("A 10.244.6.60")),
    ("red.ns-b.svc", "A", ok("A 10.244.7.70")),
    ("dn.ns-a.svc", "A", ok("A 10.244.2.21")),
    ("custom.ns-a.svc", "A", ok("A 10.244.13.1")),
    ("noname.ns-a.svc", "A", ok("A 10.244.11.1")),
    ("ext.ns-a.svc", "CNAME", ok("CNAME www.example.org.")),
    ("macvlan._net.db.ns-a.svc", "A", NX),
    ("db-0.macvlan._net.db.ns-a.svc", "A", NX),
    ("macvlan._net.web.ns-a.svc", "A", NX),
    ("data_net._net.dn.ns-a.svc", "A", NX),
    ("10-10-0-10.ns-a.pod", "A", NX),
    ("fd10--10.ns-a.pod", "AAAA", NX),
    ("10-244-1-10.ns-a.pod", "A", ok("A 10.244.1.10")),
    ("192-168-1-205.ns-a.pod", "A", NX),
    ("10-77-0-1.ns-b.pod", "A", NX),
    ("10.10.0.10", "PTR", NX),
    ("fd10::10", "PTR", NX),
    ("10.244.1.10", "PTR", ok("PTR db-0.db.ns-a.svc.cluster.local.")),
    ("10.244.2.20", "PTR", ok("PTR 10-244-2-20.web.ns-a.svc.cluster.local.")),
    ("10.96.50.50", "PTR", ok("PTR web.ns-a.svc.cluster.local.")),
    ("10.77.0.1", "PTR", NX),
    ("10.244.9.9", "PTR", ok("PTR plain-0.plain.ns-a.svc.cluster.local.")),
    ("ns-a.svc", "A", NODATA),
    ("nosuch.ns-a.svc", "A", NX),
    ("db.ns-a.svc", "TXT", NODATA),
    ("a.b.c.db.ns-a.svc", "A", NX),
    (Z, "SOA", ok("SOA ns.dns.cluster.local. hostmaster.cluster.local. <serial> 7200 1800 86400 5")),
    ("dns-version.cluster.local.", "TXT", ok('TXT "1.1.0"')),
]


def test_feature_off_is_coredns(env: Env) -> None:
    queries = [(name, t) for name, t, _ in CORE]
    whole = {server: [norm(ask(env.port(server), name, t)) for name, t in queries]
             for server in ("off_a", "off_c", "on_c")}
    # the same bytes (but the ID and the serial) from all three
    assert whole["off_a"] == whole["off_c"]
    assert whole["on_c"] == whole["off_c"]
    # and those are CoreDNS's answers
    for server in ("off_a", "on_c"):
        check(env.port(server), CORE)


# ===== Corefile errors from the real process =====================================================


def test_corefile_error_in_the_block_stops_the_process(tmp_path: Any) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(
        ".:PORT {\n"
        "    kubernetes cluster.local {\n"
        "        endpoint http://127.0.0.1:1\n"
        "        secondary_networks {\n"
        "            net_names\n"
        "            headless both\n"
        "        }\n"
        "    }\n"
        "}\n".replace("PORT", str(free_port())))
    proc = subprocess.run([sys.executable, "-m", "dnsd", "-conf", str(conf)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).strip() == (
        f"{conf}:6 - Error during parsing: headless must be replace or append, got 'both'")
