"""Compact views of API objects: only what answers need, built from the API's JSON once.

The reflector threads convert every listed or watched object with these functions, so the
event loop never sees raw JSON and memory holds tuples of strings rather than client models.

Memory matters here (100,000 endpoints are common): strings that repeat across objects
(namespaces, service names, port names, protocols) are interned, identical port lists are one
shared tuple, fields no answer reads (resourceVersions of services and slices, node names) are
not kept, and an endpoint that is only its address is kept as that address string (see
``Slice.items``).
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Port = tuple[str, str, int]  # (name, protocol lower-case, port); port -1 = none

_intern = sys.intern
_NO_PORTS: tuple[Port, ...] = (("", "", -1),)
# One tuple for each distinct port list (most slices and services share a handful); cleared
# when it grows past _SHARED_MAX, so port lists that come and go cannot grow it for ever.
_shared_ports: dict[tuple[Port, ...], tuple[Port, ...]] = {_NO_PORTS: _NO_PORTS}
_SHARED_MAX = 4096


def _share(ports: tuple[Port, ...]) -> tuple[Port, ...]:
    shared = _shared_ports.get(ports)
    if shared is None:
        if len(_shared_ports) >= _SHARED_MAX:
            _shared_ports.clear()
        _shared_ports[ports] = shared = ports
    return shared


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    kind: str  # "ClusterIP" (incl. NodePort/LoadBalancer), "headless", "ExternalName", "" (no type)
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[Port, ...]
    service_network: str = ""  # k8s.v1.cni.cncf.io/service-network (secondary networks)

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
    # The endpoint's own ports when they differ from its slice's: a core/v1 Endpoints object
    # has one port list per subset, folded into one Slice here.  () = the slice's ports.
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True, slots=True)
class Slice:
    """An EndpointSlice (or one subset of a core/v1 Endpoints object).

    ``items`` holds the ready endpoints, each as its ``Endpoint``, or as its address string
    alone when that is all it has (one address, no hostname, no pod kept, the slice's ports):
    most endpoints, and a string costs nothing beyond the address itself.  ``endpoints``
    gives every one as an ``Endpoint``."""

    namespace: str
    name: str
    service: str
    items: tuple[str | Endpoint, ...]
    ports: tuple[Port, ...]
    trigger_time: str = ""  # endpoints.kubernetes.io/last-change-trigger-time

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        ns = self.namespace
        return tuple(Endpoint((e,), "", "", ns) if type(e) is str else e for e in self.items)


def endpoint_item(addresses: tuple[str, ...], hostname: str, pod: str, pod_namespace: str,
                  namespace: str, ports: tuple[Port, ...] = ()) -> str | Endpoint:
    """A slice's item for an endpoint: its address alone when that says everything."""
    if len(addresses) == 1 and not hostname and not pod and not ports and pod_namespace == namespace:
        return addresses[0]
    return Endpoint(addresses, hostname, pod, pod_namespace, ports)


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
            _intern(str(p.get("name") or "")),
            _intern(str(p.get("protocol") or "").lower()),
            port if isinstance(port, int) else -1,
        ))
    return _share(tuple(ports)) if ports else _NO_PORTS


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
        namespace=_intern(str(meta.get("namespace") or "")), name=_intern(str(meta.get("name") or "")),
        kind=kind, cluster_ips=cluster_ips, external_name=str(spec.get("externalName") or ""),
        ports=_ports(spec.get("ports")),
        service_network=str(annotations.get("k8s.v1.cni.cncf.io/service-network") or ""),
    )


def _pod_ref(ref: Any, keep_pods: bool) -> tuple[str, str]:
    if keep_pods and isinstance(ref, dict) and ref.get("kind") == "Pod":
        name = str(ref.get("name") or "")
        return (name if len(name) < 64 else ""), _intern(str(ref.get("namespace") or ""))
    return "", ""


def endpoint_slice(obj: dict[str, Any], keep_pods: bool = True) -> Slice:
    """An EndpointSlice's ready endpoints.  ``keep_pods=False`` drops the endpoints' pod names
    (``targetRef``), which only ``endpoint_pod_names`` and secondary networks read."""
    meta = _meta(obj)
    labels = meta.get("labels") or {}
    ns = _intern(str(meta.get("namespace") or ""))
    items: list[str | Endpoint] = []
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, dict):
            continue
        conditions = ep.get("conditions") or {}
        if conditions.get("ready") is False:
            continue
        addresses = tuple(str(a) for a in ep.get("addresses") or [] if _valid_ip(a))
        if not addresses:
            continue
        pod, pod_ns = _pod_ref(ep.get("targetRef"), keep_pods)
        items.append(endpoint_item(addresses, str(ep.get("hostname") or ""), pod, pod_ns or ns, ns))
    annotations = meta.get("annotations") or {}
    return Slice(
        namespace=ns, name=str(meta.get("name") or ""),
        service=_intern(str(labels.get(SERVICE_NAME_LABEL) or "")),
        items=tuple(items), ports=_ports(obj.get("ports")),
        trigger_time=str(annotations.get("endpoints.kubernetes.io/last-change-trigger-time") or ""),
    )


def endpoints_object(obj: dict[str, Any], keep_pods: bool = True) -> Slice:
    """A core/v1 Endpoints object as one Slice (ready addresses of every subset)."""
    meta = _meta(obj)
    ns = _intern(str(meta.get("namespace") or ""))
    name = _intern(str(meta.get("name") or ""))
    found: list[tuple[tuple[str], str, str, str, tuple[Port, ...]]] = []
    ports: list[Port] = []
    for subset in obj.get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        subset_ports = _ports(subset.get("ports"))
        for addr in subset.get("addresses") or []:
            if not isinstance(addr, dict) or not _valid_ip(addr.get("ip")):
                continue
            pod, pod_ns = _pod_ref(addr.get("targetRef"), keep_pods)
            found.append(((str(addr["ip"]),), str(addr.get("hostname") or ""), pod, pod_ns or ns,
                          subset_ports))
        ports.extend(p for p in subset_ports if p[2] != -1)
    all_ports = _share(tuple(dict.fromkeys(ports))) if ports else _NO_PORTS
    # Each address keeps its own subset's ports when they are not the object's (subsets may
    # differ in ports).
    items = [endpoint_item(addrs, host, pod, pod_ns, ns, () if own == all_ports else own)
             for addrs, host, pod, pod_ns, own in found]
    annotations = meta.get("annotations") or {}
    return Slice(
        namespace=ns, name=name, service=name, items=tuple(items), ports=all_ports,
        trigger_time=str(annotations.get("endpoints.kubernetes.io/last-change-trigger-time") or ""),
    )


def pod(obj: dict[str, Any], keep_annotations: tuple[str, ...] = ()) -> Pod:
    meta = _meta(obj)
    status = obj.get("status") or {}
    ips = tuple(str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip"))
    annotations = meta.get("annotations") or {}
    kept = tuple((k, str(annotations[k])) for k in keep_annotations if k in annotations)
    return Pod(
        namespace=_intern(str(meta.get("namespace") or "")), name=str(meta.get("name") or ""),
        ip=str(status.get("podIP") or ""), ips=ips,
        deleting=bool(meta.get("deletionTimestamp")), annotations=kept,
        rv=str(meta.get("resourceVersion") or ""),
    )


def namespace(obj: dict[str, Any]) -> Namespace:
    meta = _meta(obj)
    return Namespace(name=str(meta.get("name") or ""), rv=str(meta.get("resourceVersion") or ""))
