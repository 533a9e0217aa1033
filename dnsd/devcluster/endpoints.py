"""Build EndpointSlices and core/v1 Endpoints for a Service from one description.

A description is a list of endpoint dicts::

    {"ip": "10.244.0.5", "hostname": "web-0", "ready": True, "pod": "web-0", "node": "n1"}

(optional keys: `serving`, `terminating`, `zone`, `pod_uid`) plus a list of ports
`{"name": "http", "port": 80, "protocol": "TCP"}` (optional `appProtocol`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .alloc import Allocator

Obj = dict[str, Any]

MANAGED_BY = "dnsd-devcluster"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"


def _family(ip: str) -> str:
    family = Allocator.family_of(ip)
    if family is None:
        raise ValueError(f"not an IP address: {ip!r}")
    return family


def _target_ref(ep: Obj, namespace: str) -> Obj | None:
    if not ep.get("pod"):
        return None
    ref: Obj = {"kind": "Pod", "namespace": namespace, "name": ep["pod"]}
    if ep.get("pod_uid"):
        ref["uid"] = ep["pod_uid"]
    return ref


def _owner_refs(service: Obj | None) -> list[Obj]:
    if not service:
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": service["metadata"]["name"],
            "uid": service["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def slice_name(service: str, family: str) -> str:
    """Deterministic name of the slice written for `family`."""
    return f"{service}-{family.lower()}"


def build_slices(
    namespace: str,
    service: str,
    endpoints: Iterable[Obj],
    ports: Iterable[Obj],
    svc: Obj | None = None,
) -> list[Obj]:
    """One EndpointSlice per address family present (an empty IPv4 slice if none)."""
    by_family: dict[str, list[Obj]] = {"IPv4": [], "IPv6": []}
    for ep in endpoints:
        by_family[_family(ep["ip"])].append(ep)
    families = [f for f in ("IPv4", "IPv6") if by_family[f]]
    if not families:
        primary = ((svc or {}).get("spec", {}).get("ipFamilies") or ["IPv4"])[0]
        families = [primary]
    slice_ports = []
    for port in ports:
        entry: Obj = {
            "name": port.get("name", ""),
            "port": port["port"],
            "protocol": port.get("protocol", "TCP"),
        }
        if port.get("appProtocol"):
            entry["appProtocol"] = port["appProtocol"]
        slice_ports.append(entry)
    out = []
    for family in families:
        items = []
        for ep in by_family[family]:
            ready = bool(ep.get("ready", True))
            item: Obj = {
                "addresses": [ep["ip"]],
                "conditions": {
                    "ready": ready,
                    "serving": bool(ep.get("serving", ready)),
                    "terminating": bool(ep.get("terminating", False)),
                },
            }
            for key, field in (("hostname", "hostname"), ("node", "nodeName"), ("zone", "zone")):
                if ep.get(key):
                    item[field] = ep[key]
            ref = _target_ref(ep, namespace)
            if ref:
                item["targetRef"] = ref
            items.append(item)
        meta: Obj = {
            "name": slice_name(service, family),
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: MANAGED_BY},
        }
        owners = _owner_refs(svc)
        if owners:
            meta["ownerReferences"] = owners
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": meta,
                "addressType": family,
                "endpoints": items,
                "ports": slice_ports,
            }
        )
    return out


def build_endpoints(
    namespace: str,
    service: str,
    endpoints: Iterable[Obj],
    ports: Iterable[Obj],
    svc: Obj | None = None,
) -> Obj:
    """The core/v1 Endpoints object the endpoints controller would write.

    Like the real controller, only addresses of the Service's primary IP family are
    included when the Service exists (dual-stack Services expose one family here).
    """
    families = ((svc or {}).get("spec") or {}).get("ipFamilies") or []
    primary = families[0] if families else None
    ready: list[Obj] = []
    not_ready: list[Obj] = []
    for ep in endpoints:
        if primary is not None and _family(ep["ip"]) != primary:
            continue
        addr: Obj = {"ip": ep["ip"]}
        if ep.get("hostname"):
            addr["hostname"] = ep["hostname"]
        if ep.get("node"):
            addr["nodeName"] = ep["node"]
        ref = _target_ref(ep, namespace)
        if ref:
            addr["targetRef"] = ref
        (ready if ep.get("ready", True) else not_ready).append(addr)
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service, "namespace": namespace},
    }
    if svc and svc["metadata"].get("labels"):
        obj["metadata"]["labels"] = dict(svc["metadata"]["labels"])
    if ready or not_ready:
        subset: Obj = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subset["ports"] = [
            {
                k: v
                for k, v in (
                    ("name", p.get("name")),
                    ("port", p["port"]),
                    ("protocol", p.get("protocol", "TCP")),
                    ("appProtocol", p.get("appProtocol")),
                )
                if v
            }
            for p in ports
        ]
        obj["subsets"] = [subset]
    return obj


def describe_slices(slices: Iterable[Obj]) -> tuple[list[Obj], list[Obj]]:
    """Turn EndpointSlices back into `(endpoints, ports)` descriptions."""
    endpoints: list[Obj] = []
    ports: list[Obj] = []
    for es in slices:
        for port in es.get("ports") or []:
            entry = {
                "name": port.get("name") or "",
                "port": port.get("port"),
                "protocol": port.get("protocol", "TCP"),
            }
            if entry not in ports and entry["port"] is not None:
                ports.append(entry)
        for ep in es.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ref = ep.get("targetRef") or {}
            for ip in ep.get("addresses") or []:
                endpoints.append(
                    {
                        "ip": ip,
                        "hostname": ep.get("hostname"),
                        "ready": cond.get("ready") is not False,
                        "pod": ref.get("name") if ref.get("kind") == "Pod" else None,
                        "node": ep.get("nodeName"),
                    }
                )
    return endpoints, ports
