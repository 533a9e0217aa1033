"""The resource kinds the emulator serves, with their defaulting and validation."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .alloc import AllocationError, Allocator
from .errors import ApiError, invalid

Obj = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceType:
    """Static description of one served resource."""

    name: str
    singular: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...]
    fields: frozenset[str]
    name_rule: str  # "label", "label1035" or "subdomain"
    subresources: tuple[str, ...] = ()
    delete_returns_object: bool = True
    create_on_update: bool = False

    @property
    def api_version(self) -> str:
        """`v1` or `group/version`."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """The kind of a list response."""
        return f"{self.kind}List"


RESOURCES: dict[str, ResourceType] = {
    rt.name: rt
    for rt in (
        ResourceType(
            "namespaces",
            "namespace",
            "Namespace",
            "",
            "v1",
            False,
            ("ns",),
            _META_FIELDS | {"status.phase"},
            "label",
            ("status",),
        ),
        ResourceType(
            "services",
            "service",
            "Service",
            "",
            "v1",
            True,
            ("svc",),
            _META_FIELDS | {"spec.clusterIP", "spec.type"},
            "label1035",
            ("status",),
        ),
        ResourceType(
            "pods",
            "pod",
            "Pod",
            "",
            "v1",
            True,
            ("po",),
            _META_FIELDS
            | {
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            },
            "subdomain",
            ("status",),
        ),
        ResourceType(
            "endpoints",
            "endpoints",
            "Endpoints",
            "",
            "v1",
            True,
            ("ep",),
            _META_FIELDS,
            "subdomain",
            (),
            delete_returns_object=False,
            create_on_update=True,
        ),
        ResourceType(
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            "discovery.k8s.io",
            "v1",
            True,
            (),
            _META_FIELDS,
            "subdomain",
            (),
            delete_returns_object=False,
        ),
    )
}


def resolve_kind(kind: str) -> ResourceType:
    """Map `Service`, `services`, `service` or `svc` (any case) to its ResourceType."""
    wanted = kind.lower()
    for rt in RESOURCES.values():
        if wanted in (rt.name, rt.singular, rt.kind.lower(), *rt.short_names):
            return rt
    raise KeyError(f"unknown kind {kind!r}")


def validate_metadata(rt: ResourceType, obj: Obj) -> None:
    """Name and label syntax checks shared by every kind."""
    meta = obj["metadata"]
    name = meta.get("name", "")
    causes: list[tuple[str, str]] = []
    rule = {"label": _DNS1123_LABEL, "label1035": _DNS1035_LABEL, "subdomain": _DNS1123_SUBDOMAIN}[
        rt.name_rule
    ]
    limit = 253 if rt.name_rule == "subdomain" else 63
    if not rule.match(name) or len(name) > limit:
        causes.append(
            ("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 name is required")
        )
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, base = key.rpartition("/")
        if (
            (prefix and not _DNS1123_SUBDOMAIN.match(prefix))
            or not _LABEL_NAME.match(base)
            or len(base) > 63
        ):
            causes.append(("metadata.labels", f"Invalid value: {key!r}: invalid label key"))
        if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
            causes.append(("metadata.labels", f"Invalid value: {value!r}: invalid label value"))
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            causes.append(
                (f"metadata.annotations[{key}]", "Invalid value: annotation values must be strings")
            )
    if causes:
        raise invalid(rt.kind, name, causes, rt.group)


def _valid_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_port(
    value: Any, field: str, causes: list[tuple[str, str]], allow_zero: bool = False
) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        causes.append(
            (field, f"Invalid value: {value!r}: must be between {low} and 65535, inclusive")
        )


def _check_protocol(port: Obj, field: str, causes: list[tuple[str, str]]) -> None:
    proto = port.setdefault("protocol", "TCP")
    if proto not in ("TCP", "UDP", "SCTP"):
        causes.append(
            (field, f'Unsupported value: "{proto}": supported values: "SCTP", "TCP", "UDP"')
        )


def prepare_namespace(obj: Obj, old: Obj | None, alloc: Allocator) -> None:
    """Default labels, finalizers and phase like the API server."""
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _service_ports(rt: ResourceType, spec: Obj, causes: list[tuple[str, str]]) -> None:
    ports = spec.get("ports") or []
    names: set[str] = set()
    for i, port in enumerate(ports):
        field = f"spec.ports[{i}]"
        _check_port(port.get("port"), f"{field}.port", causes)
        _check_protocol(port, f"{field}.protocol", causes)
        port.setdefault("targetPort", port.get("port"))
        pname = port.get("name", "")
        if len(ports) > 1 and not pname:
            causes.append((f"{field}.name", "Required value"))
        elif pname and (not _PORT_NAME.match(pname) or len(pname) > 63):
            causes.append((f"{field}.name", f"Invalid value: {pname!r}: must be a DNS label"))
        key = pname
        if key in names and pname:
            causes.append((f"{field}.name", f'Duplicate value: "{pname}"'))
        names.add(key)


def prepare_service(obj: Obj, old: Obj | None, alloc: Allocator) -> None:
    """Default a Service and allocate its ClusterIP(s) and NodePorts."""
    meta = obj["metadata"]
    name = meta["name"]
    owner = f"{meta.get('namespace')}/{name}"
    spec: Obj = obj.setdefault("spec", {})
    old_spec: Obj = (old or {}).get("spec") or {}
    causes: list[tuple[str, str]] = []
    stype = spec.setdefault("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(("spec.type", f'Unsupported value: "{stype}"'))
    spec.setdefault("sessionAffinity", "None")
    _service_ports(RESOURCES["services"], spec, causes)

    if stype == "ExternalName":
        ext = spec.get("externalName") or ""
        if not ext or not _DNS1123_SUBDOMAIN.match(ext.rstrip(".").lower()):
            causes.append(
                ("spec.externalName", f"Invalid value: {ext!r}: must be a valid DNS name")
            )
        if old is None and spec.get("clusterIP"):
            causes.append(
                ("spec.clusterIP", "Invalid value: must be empty for ExternalName services")
            )
        if causes:
            raise invalid("Service", name, causes)
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            spec.pop(key, None)
        alloc.release_owner(owner)
        return

    spec.setdefault("internalTrafficPolicy", "Cluster")
    old_ips: list[str] = []
    if old_spec.get("type") != "ExternalName":
        old_ips = list(
            old_spec.get("clusterIPs")
            or ([old_spec["clusterIP"]] if old_spec.get("clusterIP") else [])
        )
    ips = list(spec.get("clusterIPs") or [])
    cip = spec.get("clusterIP") or ""
    if cip and not ips:
        ips = [cip]
    elif cip and ips and ips[0] != cip:
        causes.append(("spec.clusterIPs[0]", f"Invalid value: {ips[0]!r}: must match `clusterIP`"))
    if not ips and old_ips:
        ips = list(old_ips)
        if not spec.get("ipFamilies"):
            spec["ipFamilies"] = list(old_spec.get("ipFamilies") or [])
        spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy"))
    if old_ips and ips and ips[0] != old_ips[0]:
        causes.append(("spec.clusterIPs[0]", f"Invalid value: {ips[0]!r}: may not change once set"))
    headless = ips[:1] == ["None"]

    families = list(spec.get("ipFamilies") or [])
    for i, fam in enumerate(families):
        if fam not in ("IPv4", "IPv6"):
            causes.append((f"spec.ipFamilies[{i}]", f'Unsupported value: "{fam}"'))
    if len(set(families)) != len(families) or len(families) > 2:
        causes.append(
            ("spec.ipFamilies", f"Invalid value: {families!r}: must be distinct families")
        )
    if not headless:
        for i, ip in enumerate(ips):
            fam = Allocator.family_of(ip)
            if fam is None:
                causes.append(
                    (f"spec.clusterIPs[{i}]", f"Invalid value: {ip!r}: must be a valid IP address")
                )
            elif i < len(families) and families[i] != fam:
                causes.append(
                    (
                        f"spec.clusterIPs[{i}]",
                        f"Invalid value: {ip!r}: expected an {families[i]} value",
                    )
                )
            elif i >= len(families):
                families.append(fam)
    if not families:
        families = ["IPv4"]
    policy = spec.get("ipFamilyPolicy") or (
        "RequireDualStack" if len(families) > 1 or len(ips) > 1 else "SingleStack"
    )
    if policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
        causes.append(("spec.ipFamilyPolicy", f'Unsupported value: "{policy}"'))
    elif policy != "SingleStack" and len(families) == 1:
        families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    elif policy == "SingleStack" and len(families) > 1:
        causes.append(
            (
                "spec.ipFamilies",
                "Invalid value: must be a single family when ipFamilyPolicy is SingleStack",
            )
        )
    if not headless and len(ips) > len(families):
        causes.append(("spec.clusterIPs", f"Invalid value: {ips!r}: too many addresses"))
    if not headless and not spec.get("ports"):
        causes.append(("spec.ports", "Required value"))
    if stype == "ClusterIP":
        for i, port in enumerate(spec.get("ports") or []):
            if port.get("nodePort"):
                causes.append(
                    (
                        f"spec.ports[{i}].nodePort",
                        "Forbidden: may not be used when `type` is 'ClusterIP'",
                    )
                )
    if causes:
        raise invalid("Service", name, causes)

    if headless:
        new_ips = ["None"]
    else:
        new_ips = []
        try:
            for i, fam in enumerate(families):
                new_ips.append(
                    alloc.reserve_ip(ips[i], owner)
                    if i < len(ips)
                    else alloc.allocate_ip(fam, owner)
                )
        except AllocationError as exc:
            for ip in new_ips:
                if ip not in old_ips:
                    alloc.release_ip(ip, owner)
            raise invalid(
                "Service", name, [("spec.clusterIPs", f"Invalid value: {ips!r}: {exc}")]
            ) from exc
    for ip in old_ips:
        if ip not in new_ips:
            alloc.release_ip(ip, owner)
    spec["clusterIP"] = new_ips[0]
    spec["clusterIPs"] = new_ips
    spec["ipFamilies"] = families
    spec["ipFamilyPolicy"] = policy

    kept: list[int] = []
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        try:
            for port in spec.get("ports") or []:
                if port.get("nodePort"):
                    alloc.reserve_port(int(port["nodePort"]), owner)
                else:
                    port["nodePort"] = alloc.allocate_port(owner)
                kept.append(int(port["nodePort"]))
        except AllocationError as exc:
            alloc.release_ports(owner, [p for p in kept if p in _node_ports(old_spec)])
            raise invalid(
                "Service", name, [("spec.ports.nodePort", f"Invalid value: {exc}")]
            ) from exc
    alloc.release_ports(owner, kept)
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _node_ports(spec: Obj) -> list[int]:
    return [int(p["nodePort"]) for p in spec.get("ports") or [] if p.get("nodePort")]


def release_service(obj: Obj, alloc: Allocator) -> None:
    """Free a deleted Service's addresses and ports."""
    meta = obj["metadata"]
    alloc.release_owner(f"{meta.get('namespace')}/{meta['name']}")


def prepare_pod(obj: Obj, old: Obj | None, alloc: Allocator) -> None:
    """Validate containers; default phase Running and keep podIP/podIPs in step."""
    name = obj["metadata"]["name"]
    spec = obj.setdefault("spec", {})
    causes: list[tuple[str, str]] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(("spec.containers", "Required value"))
    for i, container in enumerate(containers):
        if not container.get("name"):
            causes.append((f"spec.containers[{i}].name", "Required value"))
        if not container.get("image"):
            causes.append((f"spec.containers[{i}].image", "Required value"))
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Running")
    if status.get("podIP") and not status.get("podIPs"):
        status["podIPs"] = [{"ip": status["podIP"]}]
    elif status.get("podIPs") and not status.get("podIP"):
        status["podIP"] = status["podIPs"][0].get("ip")
    for i, entry in enumerate(status.get("podIPs") or []):
        if not _valid_ip(entry.get("ip")):
            causes.append(
                (
                    f"status.podIPs[{i}].ip",
                    f"Invalid value: {entry.get('ip')!r}: must be a valid IP address",
                )
            )
    if causes:
        raise invalid("Pod", name, causes)


def prepare_endpoints(obj: Obj, old: Obj | None, alloc: Allocator) -> None:
    """Validate core/v1 Endpoints subsets."""
    name = obj["metadata"]["name"]
    causes: list[tuple[str, str]] = []
    subsets = obj.get("subsets") or []
    for i, subset in enumerate(subsets):
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(subset.get(key) or []):
                if not _valid_ip(addr.get("ip")):
                    causes.append(
                        (
                            f"subsets[{i}].{key}[{j}].ip",
                            f"Invalid value: {addr.get('ip')!r}: must be a valid IP address",
                        )
                    )
        for j, port in enumerate(subset.get("ports") or []):
            _check_port(port.get("port"), f"subsets[{i}].ports[{j}].port", causes)
            _check_protocol(port, f"subsets[{i}].ports[{j}].protocol", causes)
    if causes:
        raise invalid("Endpoints", name, causes)


def prepare_endpointslice(obj: Obj, old: Obj | None, alloc: Allocator) -> None:
    """Validate an EndpointSlice (addressType, addresses per family, ports)."""
    name = obj["metadata"]["name"]
    causes: list[tuple[str, str]] = []
    atype = obj.get("addressType")
    if atype not in ("IPv4", "IPv6", "FQDN"):
        causes.append(
            (
                "addressType",
                f'Unsupported value: "{atype}": supported values: "FQDN", "IPv4", "IPv6"',
            )
        )
    if old is not None and old.get("addressType") != atype:
        causes.append(("addressType", "Invalid value: field is immutable"))
    if obj.get("endpoints") is None:
        obj["endpoints"] = []
    for i, ep in enumerate(obj["endpoints"]):
        addrs = ep.get("addresses") or []
        if not 1 <= len(addrs) <= 100:
            causes.append(
                (f"endpoints[{i}].addresses", "Required value: must contain at least 1 address")
            )
        for j, addr in enumerate(addrs):
            fam = Allocator.family_of(addr)
            if atype in ("IPv4", "IPv6") and fam != atype:
                causes.append(
                    (
                        f"endpoints[{i}].addresses[{j}]",
                        f"Invalid value: {addr!r}: must be a valid {atype} address",
                    )
                )
    for i, port in enumerate(obj.get("ports") or []):
        if port.get("port") is not None:
            _check_port(port["port"], f"ports[{i}].port", causes, allow_zero=True)
        _check_protocol(port, f"ports[{i}].protocol", causes)
    if causes:
        raise invalid("EndpointSlice", name, causes, "discovery.k8s.io")


Prepare = Callable[[Obj, "Obj | None", Allocator], None]

PREPARE: dict[str, Prepare] = {
    "namespaces": prepare_namespace,
    "services": prepare_service,
    "pods": prepare_pod,
    "endpoints": prepare_endpoints,
    "endpointslices": prepare_endpointslice,
}


def check_body(rt: ResourceType, obj: Any) -> Obj:
    """Reject bodies that are not an object of this resource's kind."""
    if not isinstance(obj, dict):
        raise ApiError(400, "the request body must be a JSON object")
    kind = obj.get("kind")
    if kind not in (None, "", rt.kind):
        raise ApiError(
            400, f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
        )
    api_version = obj.get("apiVersion")
    if api_version not in (None, "", rt.api_version):
        raise ApiError(
            400,
            f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})",
        )
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ApiError(400, "metadata must be an object")
    return obj
