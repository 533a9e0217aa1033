"""Compact views of API objects: only what answers need, built from the API's JSON once.

The reflector threads convert every listed or watched object with these functions, so the
event loop never sees raw JSON and memory holds tuples of strings rather than client models.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Port = tuple[str, str, int]  # (name, protocol lower-case, port); port -1 = none


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    kind: str  # "ClusterIP" (incl. NodePort/LoadBalancer), "headless", "ExternalName", "" (no type)
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[Port, ...]
    service_network: str = ""  # k8s.v1.cni.cncf.io/service-network (secondary networks)
    rv: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready endpoint of a slice (CoreDNS drops endpoints with ready: false)."""

    addresses: tuple[str, ...]
    hostname: str
    pod: str  # targetRef name when the target is a Pod and the name is < 64 chars, else ""
    pod_namespace: str
    node: str
    # The endpoint's own ports when they differ from its slice's: a core/v1 Endpoints object
    # has one port list per subset, folded into one Slice here.  () = the slice's ports.
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True, slots=True)
class Slice:
    """An EndpointSlice (or one subset of a core/v1 Endpoints object)."""

    namespace: str
    name: str
    service: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[Port, ...]
    trigger_time: str = ""  # endpoints.kubernetes.io/last-change-trigger-time
    rv: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ip: str  # status.podIP (primary only, as CoreDNS)
    ips: tuple[str, ...]  # status.podIPs
    deleting: bool
    annotations: tuple[tuple[str, str], ...] = ()  # only the ones a feature asked to keep
    networks: Any = None  # parsed secondary-network attachments (secondary.PodNetworks)
    rv: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    rv: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return "", self.name


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _ports(raw: Any) -> tuple[Port, ...]:
    ports: list[Port] = []
    for p in raw if isinstance(raw, list) else []:
        if not isinstance(p, dict):
            continue
        port = p.get("port")
        ports.append((
            str(p.get("name") or ""),
            str(p.get("protocol") or "").lower(),
            port if isinstance(port, int) else -1,
        ))
    return tuple(ports) or (("", "", -1),)


def _valid_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


def service(obj: dict[str, Any]) -> Service:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    ips = [str(ip) for ip in (spec.get("clusterIPs") or []) if ip]
    if not ips and spec.get("clusterIP"):
        ips = [str(spec["clusterIP"])]
    stype = str(spec.get("type") or "")
    if stype == "ExternalName":
        kind = "ExternalName"
    elif ips and ips[0] == "None":
        kind = "headless"
    elif stype:
        kind = "ClusterIP"
    else:
        kind = "ClusterIP" if ips else ""
    cluster_ips = tuple(ip for ip in ips if ip != "None" and _valid_ip(ip))
    annotations = meta.get("annotations") or {}
    return Service(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""), kind=kind,
        cluster_ips=cluster_ips, external_name=str(spec.get("externalName") or ""),
        ports=_ports(spec.get("ports")),
        service_network=str(annotations.get("k8s.v1.cni.cncf.io/service-network") or ""),
        rv=str(meta.get("resourceVersion") or ""),
    )


def _pod_ref(ref: Any) -> tuple[str, str]:
    if isinstance(ref, dict) and ref.get("kind") == "Pod":
        name = str(ref.get("name") or "")
        return (name if len(name) < 64 else ""), str(ref.get("namespace") or "")
    return "", ""


def endpoint_slice(obj: dict[str, Any]) -> Slice:
    meta = _meta(obj)
    labels = meta.get("labels") or {}
    ns = str(meta.get("namespace") or "")
    endpoints: list[Endpoint] = []
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, dict):
            continue
        conditions = ep.get("conditions") or {}
        if conditions.get("ready") is False:
            continue
        addresses = tuple(str(a) for a in ep.get("addresses") or [] if _valid_ip(a))
        if not addresses:
            continue
        pod, pod_ns = _pod_ref(ep.get("targetRef"))
        endpoints.append(Endpoint(addresses, str(ep.get("hostname") or ""), pod, pod_ns or ns,
                                  str(ep.get("nodeName") or "")))
    annotations = meta.get("annotations") or {}
    return Slice(
        namespace=ns, name=str(meta.get("name") or ""), service=str(labels.get(SERVICE_NAME_LABEL) or ""),
        endpoints=tuple(endpoints), ports=_ports(obj.get("ports")),
        trigger_time=str(annotations.get("endpoints.kubernetes.io/last-change-trigger-time") or ""),
        rv=str(meta.get("resourceVersion") or ""),
    )


def endpoints_object(obj: dict[str, Any]) -> Slice:
    """A core/v1 Endpoints object as one Slice (ready addresses of every subset)."""
    meta = _meta(obj)
    ns = str(meta.get("namespace") or "")
    name = str(meta.get("name") or "")
    endpoints: list[Endpoint] = []
    ports: list[Port] = []
    for subset in obj.get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        subset_ports = _ports(subset.get("ports"))
        for addr in subset.get("addresses") or []:
            if not isinstance(addr, dict) or not _valid_ip(addr.get("ip")):
                continue
            pod, pod_ns = _pod_ref(addr.get("targetRef"))
            # Each address keeps its own subset's ports (subsets may differ in ports).
            endpoints.append(Endpoint((str(addr["ip"]),), str(addr.get("hostname") or ""), pod,
                                      pod_ns or ns, str(addr.get("nodeName") or ""),
                                      subset_ports))
        ports.extend(p for p in subset_ports if p[2] != -1)
    annotations = meta.get("annotations") or {}
    return Slice(
        namespace=ns, name=name, service=name, endpoints=tuple(endpoints),
        ports=tuple(dict.fromkeys(ports)) or (("", "", -1),),
        trigger_time=str(annotations.get("endpoints.kubernetes.io/last-change-trigger-time") or ""),
        rv=str(meta.get("resourceVersion") or ""),
    )


def pod(obj: dict[str, Any], keep_annotations: tuple[str, ...] = ()) -> Pod:
    meta = _meta(obj)
    status = obj.get("status") or {}
    ips = tuple(str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip"))
    annotations = meta.get("annotations") or {}
    kept = tuple((k, str(annotations[k])) for k in keep_annotations if k in annotations)
    return Pod(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
        ip=str(status.get("podIP") or ""), ips=ips,
        deleting=bool(meta.get("deletionTimestamp")), annotations=kept,
        rv=str(meta.get("resourceVersion") or ""),
    )


def namespace(obj: dict[str, Any]) -> Namespace:
    meta = _meta(obj)
    return Namespace(name=str(meta.get("name") or ""), rv=str(meta.get("resourceVersion") or ""))
