"""Shared helpers for the kubernetes plugin tests (tests/kubernetes/).

- API object builders and the fixture cluster that covers every case of
  ``../shared/reference/coredns_kubernetes.md`` §5-§9 (``fixture_objects``);
- ``start_cluster`` (a DevCluster loaded with objects) and ``start_dnsd`` (a dnsd process whose
  every block is known to have synced before it returns);
- ``expect``: one query through a real socket and an assertion on the *whole* response: rcode,
  QR=1, AA, RA=0, TC=0, the question echoed as asked, and the answer/authority/additional
  sections as sorted sets of ``"owner ttl IN TYPE rdata"`` texts (TTLs included).  SOA serials
  are checked for plausibility and written as ``SERIAL`` in the texts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from support import Dnsd, query

from dnsd.devcluster import DevCluster
from dnsd.plugins.kubernetes.plugin import local_addresses

Obj = dict[str, Any]

# This machine's non-loopback addresses, as dnsd's NS discovery sees them (§5.2).
LOCAL_IPS: tuple[str, ...] = local_addresses(None)
LOCAL_V4: str | None = next((ip for ip in LOCAL_IPS if ":" not in ip), None)
LOCAL_V6: tuple[str, ...] = tuple(ip for ip in LOCAL_IPS if ":" in ip)


# --- API object builders ----------------------------------------------------------------------

def namespace(name: str, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def port(name: str, number: int, protocol: str = "TCP", target: int | None = None) -> Obj:
    p: Obj = {"port": number, "protocol": protocol}
    if name:
        p["name"] = name
    if target is not None:
        p["targetPort"] = target
    return p


def service(ns: str, name: str, *, ips: Iterable[str] = (), headless: bool = False,
            external: str | None = None, ports: Iterable[Obj] = (),
            labels: dict[str, str] | None = None) -> Obj:
    """A Service: ClusterIP with the given ``ips`` (allocated if empty), headless, or
    ExternalName (``external``)."""
    meta: Obj = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    spec: Obj = {"ports": list(ports)}
    if not spec["ports"]:
        del spec["ports"]
    if external is not None:
        spec["type"] = "ExternalName"
        spec["externalName"] = external
    elif headless:
        spec["type"] = "ClusterIP"
        spec["clusterIP"] = "None"
    else:
        spec["type"] = "ClusterIP"
        ips = list(ips)
        if ips:
            spec["clusterIP"] = ips[0]
            spec["clusterIPs"] = ips
            spec["ipFamilies"] = ["IPv6" if ":" in ip else "IPv4" for ip in ips]
            spec["ipFamilyPolicy"] = "RequireDualStack" if len(ips) > 1 else "SingleStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def endpoint(ip: str, hostname: str | None = None, ready: bool | None = True,
             pod: str | None = None, pod_ns: str | None = None) -> Obj:
    """One EndpointSlice endpoint (``ready=None`` leaves the condition unset)."""
    ep: Obj = {"addresses": [ip], "conditions": {}}
    if ready is not None:
        ep["conditions"] = {"ready": ready, "serving": ready, "terminating": False}
    if hostname:
        ep["hostname"] = hostname
    if pod:
        ep["targetRef"] = {"kind": "Pod", "name": pod, **({"namespace": pod_ns} if pod_ns else {})}
    return ep


def endpoint_slice(ns: str, name: str, svc: str, endpoints: Iterable[Obj],
                   ports: Iterable[Obj] = (), family: str = "IPv4",
                   labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc, **(labels or {})}},
        "addressType": family,
        "endpoints": list(endpoints),
        "ports": [{k: v for k, v in p.items() if k != "targetPort"} for p in ports],
    }


def pod(ns: str, name: str, ip: str, phase: str = "Running") -> Obj:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


LONG_POD = "p" * 64  # a targetRef name of 64 characters: too long for endpoint_pod_names
KUBE_DNS_EP = LOCAL_V4 or "10.244.0.2"  # the machine's IPv4 (NS discovery), or a stand-in


def fixture_objects() -> list[Obj]:
    """The records fixture: one object per case of §5-§9 (see tests/kubernetes/README)."""
    http = port("http", 80)
    objs: list[Obj] = [
        namespace("testns", {"exposed": "yes"}), namespace("podns"), namespace("otherns"),
        namespace("nsnoexist"),  # its Namespace object is removed after loading (see below)
        # default/kubernetes and kube-system/kube-dns as kubeadm installs them; kube-dns's
        # endpoint is this machine's own IPv4 so apex NS discovery finds it (§5.2).
        service("default", "kubernetes", ips=["10.96.0.1"], ports=[port("https", 443)]),
        endpoint_slice("default", "kubernetes-x", "kubernetes", [endpoint("172.18.0.2")],
                       [port("https", 6443)]),
        service("kube-system", "kube-dns", ips=["10.96.0.10"],
                ports=[port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP"), port("metrics", 9153)]),
        endpoint_slice("kube-system", "kube-dns-x", "kube-dns",
                       [endpoint(KUBE_DNS_EP, pod="coredns-a")],
                       [port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP"), port("metrics", 9153)]),
        # ClusterIP with two ready endpoints: one with a hostname, one named by its IP (or its
        # pod with endpoint_pod_names), and one whose pod name is too long; target port 8080.
        service("testns", "svc1", ips=["10.96.1.1"], ports=[port("http", 80, target=8080)]),
        endpoint_slice("testns", "svc1-x", "svc1", [
            endpoint("172.0.0.1", hostname="ep1a"),
            endpoint("172.0.0.2", pod="svc1-pod-b"),
            endpoint("172.0.0.3", pod=LONG_POD, ready=None),  # ready unset counts as ready
        ], [port("http", 8080)]),
        # ClusterIP whose only endpoint is not ready (zero ready endpoints).
        service("testns", "svcempty", ips=["10.96.1.2"], ports=[http]),
        endpoint_slice("testns", "svcempty-x", "svcempty", [endpoint("172.0.0.5", ready=False)],
                       [http]),
        # IPv6-only ClusterIP without endpoints; dual-stack ClusterIP.
        service("testns", "svc6", ips=["fd00:10:96::6"], ports=[http]),
        service("testns", "dual", ips=["10.96.1.3", "fd00:10:96::3"], ports=[http]),
        endpoint_slice("testns", "dual-x", "dual", [endpoint("172.0.0.30")], [http]),
        # Headless: two endpoints sharing a hostname, one IP present in two slices (skew),
        # a not-ready endpoint, and IPv6 endpoints (one whose dashed form ends in "--0").
        service("testns", "hdls1", headless=True, ports=[http]),
        endpoint_slice("testns", "hdls1-a", "hdls1", [
            endpoint("172.0.0.11", hostname="dup-name"),
            endpoint("172.0.0.12", hostname="dup-name"),
            endpoint("172.0.0.13"),
            endpoint("172.0.0.99", hostname="notready", ready=False),
        ], [http]),
        endpoint_slice("testns", "hdls1-b", "hdls1", [endpoint("172.0.0.13")], [http]),
        endpoint_slice("testns", "hdls1-v6", "hdls1",
                       [endpoint("5678:abcd::1"), endpoint("2001:db8::")], [http], family="IPv6"),
        # Headless with 6 ready endpoints x 1 port: SRV weight floor(100/6) = 16.
        service("testns", "hdls6", headless=True, ports=[http]),
        endpoint_slice("testns", "hdls6-x", "hdls6",
                       [endpoint(f"172.0.1.{i}") for i in range(1, 7)], [http]),
        # Headless without ready endpoints, and without any slice.
        service("testns", "hdlsempty", headless=True, ports=[http]),
        endpoint_slice("testns", "hdlsempty-x", "hdlsempty", [endpoint("172.0.2.1", ready=False)],
                       [http]),
        service("testns", "hdlsnone", headless=True, ports=[http]),
        # Headless without ports: the slice has none either (port -1 internally).
        service("testns", "noports", headless=True),
        endpoint_slice("testns", "noports-x", "noports", [endpoint("172.0.3.1", hostname="np-0")]),
        # ExternalName: to a ClusterIP service in the zone, to a missing name in the zone, to
        # an IP literal, and to names outside the zone (resolved by the hosts plugin).
        service("testns", "ext", external="svc1.testns.svc.cluster.local"),
        service("testns", "extmissing", external="nosuch.testns.svc.cluster.local"),
        service("testns", "extip", external="1.2.3.4"),
        service("testns", "extout", external="www.example.org"),
        service("testns", "extnx", external="nothere.example.org"),
        service("testns", "extself", external="extself.testns.svc.cluster.local"),  # to itself
        service("testns", "extchain", external="ext.testns.svc.cluster.local"),  # -> ext -> svc1
        # Headless where one slice has a port and the other none: the port -1 entry counts
        # towards the SRV weight (N = 2) but gives no record.
        service("testns", "mixed", headless=True, ports=[http]),
        endpoint_slice("testns", "mixed-a", "mixed", [endpoint("172.0.5.1")], [http]),
        endpoint_slice("testns", "mixed-b", "mixed", [endpoint("172.0.5.2")]),
        # Two ClusterIP services selecting the same endpoint IP: two PTRs.
        service("testns", "sel1", ips=["10.96.1.41"], ports=[http]),
        service("testns", "sel2", ips=["10.96.1.42"], ports=[http]),
        endpoint_slice("testns", "sel1-x", "sel1", [endpoint("172.0.0.40")], [http]),
        endpoint_slice("testns", "sel2-x", "sel2", [endpoint("172.0.0.40")], [http]),
        # For the `namespaces testns` + `labels dns!=hidden` block (reverse zone 10.96.200/24).
        service("testns", "filtersvc", ips=["10.96.200.1"], ports=[http]),
        service("otherns", "othersvc", ips=["10.96.200.2"], ports=[http]),
        service("testns", "hiddensvc", ips=["10.96.200.3"], ports=[http], labels={"dns": "hidden"}),
        service("testns", "partial", headless=True, ports=[http]),
        endpoint_slice("testns", "partial-a", "partial", [endpoint("172.0.4.1")], [http]),
        endpoint_slice("testns", "partial-h", "partial", [endpoint("172.0.4.2")], [http],
                       labels={"dns": "hidden"}),
        # A service whose namespace has no Namespace object (CoreDNS's `nsnoexist`).
        service("nsnoexist", "ghost", ips=["10.96.1.50"], ports=[http]),
        # Pods for `pods verified`.
        pod("podns", "pod1", "10.240.0.1"),
        pod("podns", "pod6", "fd00:240::1"),
        pod("podns", "pod-done", "10.240.0.3", phase="Succeeded"),
        pod("testns", "pod-t", "10.240.0.5"),
        pod("podns", "pod-terminating", "10.240.0.4"),  # marked terminating after loading
    ]
    return objs


def mark_terminating(cluster: DevCluster, ns: str, name: str) -> None:
    """Give a stored Pod a deletionTimestamp (DevCluster.apply drops that field, as the API
    server does for clients); only lists made after this call see it."""
    from dnsd.devcluster.resources import resolve_kind

    with cluster.store.lock:
        obj = cluster.store.objects[resolve_kind("Pod").name][(ns, name)]
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"


def drop_namespace_object(cluster: DevCluster, name: str) -> None:
    """Delete a Namespace object but keep what is in it.

    A real API server (and DevCluster.delete) takes the namespace's contents with it, so this
    goes to the store directly: it recreates CoreDNS's test fixture of a service whose
    namespace has no Namespace object (§3 "Namespace exposure").
    """
    from dnsd.devcluster.resources import resolve_kind

    with cluster.store.lock:
        cluster.store._delete_locked(resolve_kind("Namespace"), ("", name))


def start_cluster(objects: Iterable[Obj] = (), **kw: Any) -> DevCluster:
    cluster = DevCluster(**kw).start()
    for obj in objects:
        cluster.apply(obj)
    return cluster


def start_dnsd(corefile: str, ready_names: Iterable[tuple[str, str]] = (),
               timeout: float = 20.0) -> Dnsd:
    """Start dnsd on ``corefile`` and wait until every ``(name, type)`` gets a NOERROR answer
    with records (one per server block proves that block's informers synced)."""
    server = Dnsd(corefile).start()
    try:
        for name, rdtype in ready_names:
            wait_for(lambda n=name, t=rdtype: _answers(server.port, n, t), timeout,
                     f"{name} {rdtype} never answered")
    except BaseException:
        print(server.output())
        server.stop()
        raise
    return server


def _answers(port: int, name: str, rdtype: str) -> bool:
    try:
        r = query(name, rdtype, port=port, timeout=1.0)
    except Exception:  # noqa: BLE001 - a timeout while starting
        return False
    return r.rcode() == dns.rcode.NOERROR and bool(r.answer)


def wait_for(predicate: Any, timeout: float, message: str = "condition", interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(interval)


# --- response assertions ----------------------------------------------------------------------

def soa(zone: str, ttl: int = 5, minimum: int | None = None) -> str:
    """The SOA text dnsd puts in answers/authority for ``zone`` (spelled as asked)."""
    minimum = ttl if minimum is None else minimum
    return (f"{zone} {min(ttl, 300)} IN SOA ns.dns.{zone} hostmaster.{zone} SERIAL "
            f"7200 1800 86400 {minimum}")


def section_texts(section: Iterable[Any]) -> list[str]:
    """``"owner ttl IN TYPE rdata"`` for every record of a dnspython section (SOA serials
    replaced by ``SERIAL`` after a plausibility check)."""
    out = []
    for rrset in section:
        rtype = dns.rdatatype.to_text(rrset.rdtype)
        for rd in rrset:
            text = rd.to_text()
            if rrset.rdtype == dns.rdatatype.SOA:
                serial = rd.serial
                now = time.time()
                assert now - 7 * 86400 < serial <= now + 2, f"implausible SOA serial {serial}"
                text = text.replace(f" {serial} ", " SERIAL ", 1)
            out.append(f"{rrset.name.to_text()} {rrset.ttl} IN {rtype} {text}")
    return sorted(set(out))


def _norm(texts: Iterable[str]) -> list[str]:
    return sorted({" ".join(t.split()) for t in texts})


def ask(port: int, qname: str, qtype: str, tcp: bool = False) -> dns.message.Message:
    """One query with EDNS (payload 1232, as dig sends), so that big answers keep their glue
    over UDP; the OPT record is not part of ``additional`` in dnspython."""
    return query(qname, qtype, port=port, tcp=tcp, timeout=3.0, use_edns=0, payload=1232)


def expect(port: int, qname: str, qtype: str, rcode: str = "NOERROR", answer: Iterable[str] = (),
           authority: Iterable[str] = (), additional: Iterable[str] = (), *, aa: bool = True,
           tcp: bool = False) -> dns.message.Message:
    """Query and assert the complete response (see the module docstring)."""
    r = ask(port, qname, qtype, tcp=tcp)
    where = f"{qname} {qtype} ({'tcp' if tcp else 'udp'})"
    got = {
        "rcode": dns.rcode.to_text(r.rcode()),
        "answer": section_texts(r.answer),
        "authority": section_texts(r.authority),
        "additional": section_texts(r.additional),
    }
    want = {
        "rcode": rcode, "answer": _norm(answer), "authority": _norm(authority),
        "additional": _norm(additional),
    }
    assert got == want, f"{where}:\n got  {got}\n want {want}"
    assert r.flags & dns.flags.QR, where
    assert bool(r.flags & dns.flags.AA) == aa, f"{where}: AA should be {int(aa)}"
    assert not r.flags & dns.flags.RA, f"{where}: RA must be 0"
    assert not r.flags & dns.flags.TC, f"{where}: unexpected TC"
    assert r.flags & dns.flags.RD, f"{where}: RD is copied from the query"
    assert [q.name.to_text() for q in r.question] == [qname], f"{where}: question not echoed as asked"
    return r


def serial_of(port: int, zone: str) -> int:
    r = ask(port, zone, "SOA")
    return next(rd.serial for rrset in r.answer for rd in rrset)
