"""Secondary-network records: answers for pods' extra interfaces (Multus network-status).

Enabled by a ``secondary_networks`` block inside ``kubernetes`` (absent = every answer stays
CoreDNS's)::

    secondary_networks {
        status_annotation k8s.v1.cni.cncf.io/network-status   # legacy plural read as fallback
        service_annotation k8s.v1.cni.cncf.io/service-network
        headless replace|append
        net_names
        pod_records on|off
        link_local off|on
    }

Design: ``../shared/reference/secondary_ips.md`` §7.  Pods' annotations are parsed once per
pod version in the reflector thread (fail closed: a bad annotation gives the pod no secondary
addresses, never the previous ones); a Service bound to a network with the service annotation
has its endpoints re-addressed onto that network; ``<nad>._net.<svc>...`` names answer per
network; secondary IPs answer ``<dashed-ip>.<ns>.pod.<zone>`` with ``pods verified`` and get PTRs
after ClusterIPs and primary endpoints.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from dnslib import QTYPE

from dnsd import metrics
from dnsd.plugins.kubernetes import objects
from dnsd.plugins.kubernetes.index import Address, Index, ServiceView, primary_addresses
from dnsd.plugins.kubernetes.names import Parsed, dashed_ip
from dnsd.plugins.kubernetes.objects import Service, Slice
from dnsd.plugins.kubernetes.setup import SecondaryConfig
from dnsd.wire.light import Rec

log = logging.getLogger("dnsd")

MAX_ANNOTATION_BYTES = 64 * 1024
MAX_ENTRIES = 64
MAX_IPS_PER_ENTRY = 32

NetworkRef = tuple[str, str]  # (namespace, NAD name)
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1123 label (NAD names)


@dataclass(frozen=True, slots=True)
class Attachment:
    network: NetworkRef | None  # None: unusable name (empty, several "/")
    raw_name: str
    interface: str
    ips: tuple[str, ...]
    is_default: bool


@dataclass(frozen=True, slots=True)
class PodNetworks:
    attachments: tuple[Attachment, ...]
    source: str  # the annotation it came from, "" if none
    error: str = ""

    def secondary_ips(self, network: NetworkRef) -> list[str]:
        out: list[str] = []
        for att in self.attachments:
            if not att.is_default and att.network == network:
                out.extend(ip for ip in att.ips if ip not in out)
        return out

    def all_secondary_ips(self) -> list[str]:
        out: list[str] = []
        for att in self.attachments:
            if not att.is_default:
                out.extend(ip for ip in att.ips if ip not in out)
        return out


class AnnotationError(ValueError):
    """The annotation cannot be used at all; ``reason`` labels the metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def network_ref(name: str, default_namespace: str) -> NetworkRef | None:
    """``ns/nad`` as is, ``nad`` in the pod's (or service's) namespace; else None.

    Spaces are stripped (multus-service strips them from the service annotation)."""
    parts = [part.strip() for part in name.split("/")]
    if len(parts) == 1 and parts[0]:
        return default_namespace, parts[0]
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return None


def _ip(text: Any, link_local: bool) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        # "/prefix" (the spec's CIDR form) and an IPv6 "%zone" suffix are not part of the address.
        ip = ipaddress.ip_address(text.split("/", 1)[0].split("%", 1)[0].strip())
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return None
    if ip.is_link_local and not link_local:
        return None
    return str(ip)


def parse_network_status(value: str, pod_namespace: str, link_local: bool = False,
                         primary_ips: Iterable[str] = ()) -> tuple[Attachment, ...]:
    """Parse a network-status annotation; raises AnnotationError when it is unusable."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ANNOTATION_BYTES:
        raise AnnotationError("oversize", f"annotation larger than {MAX_ANNOTATION_BYTES} bytes")
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        raise AnnotationError("invalid_json", "annotation is not valid JSON") from None
    if not isinstance(data, list):
        raise AnnotationError("not_a_list", "annotation is not a JSON list")
    if len(data) > MAX_ENTRIES:
        raise AnnotationError("too_many_entries", f"more than {MAX_ENTRIES} entries")
    attachments: list[Attachment] = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        raw_ips = entry.get("ips")
        ips: list[str] = []
        if isinstance(raw_ips, list):
            if len(raw_ips) > MAX_IPS_PER_ENTRY:
                raise AnnotationError("too_many_ips", f"more than {MAX_IPS_PER_ENTRY} IPs in one entry")
            for raw in raw_ips:
                ip = _ip(raw, link_local)
                if ip is not None and ip not in ips:
                    ips.append(ip)
        iface = entry.get("interface")
        attachments.append(Attachment(
            network=network_ref(entry["name"], pod_namespace), raw_name=entry["name"],
            interface=iface if isinstance(iface, str) else "", ips=tuple(ips),
            is_default=entry.get("default") is True,
        ))
    if not any(a.is_default for a in attachments):
        # No entry claims the default network: the one carrying the pod's own IPs is it.
        primary = {ip for ip in (_ip(p, True) for p in primary_ips) if ip}  # normalised by _ip
        if primary:
            attachments = [
                Attachment(a.network, a.raw_name, a.interface, a.ips, True)
                if a.ips and set(a.ips) <= primary else a
                for a in attachments
            ]
    return tuple(attachments)


class Secondary:
    """The feature's state: pod parsing, the address builder, pod records, PTR and _net."""

    def __init__(self, cfg: SecondaryConfig, index: Index, opts: Any) -> None:
        self.cfg = cfg
        self.index = index
        self.opts = opts
        opts.net_names = cfg.net_names
        index.address_builder = self.build_addresses
        index.pod_hooks.append(self._pod_changed)
        self.pod_ips: dict[tuple[str, str], int] = {}  # (ns, secondary ip) -> live pods
        if cfg.pod_records:
            opts.extra_pod_ips = self.pod_ips
        self._logged: set[tuple[str, str, str]] = set()
        self._log_lock = threading.Lock()

    # --- pods (reflector thread) --------------------------------------------------------------
    def convert_pod(self, obj: dict[str, Any]) -> objects.Pod:
        """The compact pod with its attachments parsed (runs in the reflector thread)."""
        pod = objects.pod(obj)
        annotations = ((obj.get("metadata") or {}).get("annotations")) or {}
        if not isinstance(annotations, dict):
            annotations = {}
        source = ""
        value = annotations.get(self.cfg.status_annotation)
        if value is not None:
            source = self.cfg.status_annotation
        elif self.cfg.legacy_annotation in annotations:
            value = annotations.get(self.cfg.legacy_annotation)
            source = self.cfg.legacy_annotation
        if value is None:
            return _with_networks(pod, None)
        try:
            if not isinstance(value, str):
                raise AnnotationError("not_a_string", "annotation value is not a string")
            atts = parse_network_status(value, pod.namespace, self.cfg.link_local, pod.ips or (pod.ip,))
            networks = PodNetworks(atts, source)
        except AnnotationError as exc:
            networks = PodNetworks((), source, exc.reason)
            self._report(pod, exc)
        return _with_networks(pod, networks)

    def convert_service(self, obj: dict[str, Any]) -> Service:
        """The compact service, its binding read from the configured ``service_annotation``."""
        svc = objects.service(obj)
        annotations = ((obj.get("metadata") or {}).get("annotations")) or {}
        value = annotations.get(self.cfg.service_annotation) if isinstance(annotations, dict) else None
        return replace(svc, service_network=value if isinstance(value, str) else "")

    def _report(self, pod: objects.Pod, exc: AnnotationError) -> None:
        metrics.secondary_annotation_errors.labels(exc.reason).inc()
        key = (pod.namespace, pod.name, pod.rv)
        with self._log_lock:
            if key in self._logged:
                return
            if len(self._logged) > 10000:
                self._logged.clear()
            self._logged.add(key)
        log.warning("[WARNING] plugin/kubernetes: pod %s/%s: unusable network-status annotation (%s): %s",
                    pod.namespace, pod.name, exc.reason, exc)

    # --- index hooks (event loop) --------------------------------------------------------------
    def _pod_changed(self, old: objects.Pod | None, new: objects.Pod | None) -> None:
        for pod, delta in ((old, -1), (new, 1)):
            if pod is None or pod.networks is None:
                continue
            for ip in pod.networks.all_secondary_ips():
                k = (pod.namespace, ip)
                n = self.pod_ips.get(k, 0) + delta
                if n > 0:
                    self.pod_ips[k] = n
                else:
                    self.pod_ips.pop(k, None)

    def service_network(self, svc: Service) -> NetworkRef | None:
        if not svc.service_network or svc.kind == "ExternalName":
            return None
        ref = network_ref(svc.service_network, svc.namespace)
        if ref is None:
            log.warning("[WARNING] plugin/kubernetes: service %s/%s: ignoring malformed %s %r",
                        svc.namespace, svc.name, self.cfg.service_annotation, svc.service_network)
        return ref

    def _pod_networks(self, ns: str, pod: str) -> PodNetworks | None:
        p = self.index.pods.get((ns, pod))
        return None if p is None else p.networks

    def _label(self, hostname: str, pod: str, ip: str) -> str:
        if hostname:
            return hostname.lower()
        if self.index.endpoint_pod_names and pod:
            return pod.lower()
        return dashed_ip(ip)

    def build_addresses(self, ix: Index, svc: Service, slices: Iterable[Slice]) -> list[Address]:
        """The service's addresses: CoreDNS's, re-addressed onto the bound network if any."""
        slices = list(slices)
        network = self.service_network(svc)
        primary = primary_addresses(ix, svc, slices)
        if network is None:
            return primary
        out: list[Address] = []
        seen_pods: set[tuple[str, str]] = set()
        append = self.cfg.headless == "append" and svc.kind == "headless"
        for sl in slices:
            for ep in sl.endpoints:
                if not ep.pod:
                    continue  # endpoints without a Pod targetRef are kept as they are (below)
                key = (ep.pod_namespace, ep.pod)
                if key in seen_pods:
                    continue
                seen_pods.add(key)
                nets = self._pod_networks(*key)
                # An endpoint's own ports (a core/v1 Endpoints subset's) win over its slice's.
                ports = getattr(ep, "ports", ()) or sl.ports
                for ip in nets.secondary_ips(network) if nets is not None else []:
                    out.append(Address(ip, self._label(ep.hostname, ep.pod, ip), ports,
                                       ep.pod, ep.pod_namespace, role="secondary"))
        for addr in primary:
            if addr.pod and _not_a_pod_ip(ix, addr):
                # A third-party slice (multus-service) listing the pod's secondary addresses:
                # the pod's attachments were answered above; such an address is no primary
                # address (PTR precedence) and is never answered as one (append).
                continue
            if not addr.pod or append:
                out.append(addr)
            else:
                out.append(Address(addr.ip, addr.label, addr.ports, addr.pod, addr.pod_namespace, role="ptr"))
        return out


def _not_a_pod_ip(ix: Index, addr: Address) -> bool:
    """Is ``addr`` none of its (known) pod's own IPs (``status.podIPs``)?"""
    pod = ix.pods.get((addr.pod_namespace, addr.pod))
    if pod is None or not (pod.ip or pod.ips):
        return False  # unknown yet: keep what the slice says
    own = {_canonical(ip) for ip in (pod.ip, *pod.ips) if ip}
    return _canonical(addr.ip) not in own


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _with_networks(pod: objects.Pod, networks: PodNetworks | None) -> objects.Pod:
    return replace(pod, networks=networks)


def net_entries(ix: Index, view: ServiceView, p: Parsed) -> list[Any]:
    """Entries of ``[<host>.]<nad>._net.<svc>.<ns>.svc.<zone>`` (A/AAAA only)."""
    from dnsd.plugins.kubernetes.answer import Entry, NameError_

    sec: Secondary | None = getattr(ix.address_builder, "__self__", None)
    if sec is None or not _LABEL.fullmatch(p.network):
        # Only a NAD name that is a DNS-1123 label is reachable here (§7.3 B); any other
        # spelling ("data_net") keeps the stock "too long" name error.
        raise NameError_
    network = (view.svc.namespace, p.network)
    entries: list[Any] = []
    host_seen = False
    seen_pods: set[tuple[str, str]] = set()
    for sl in ix.slices.get(view.svc.key, {}).values():
        for ep in sl.endpoints:
            if not ep.pod or (ep.pod_namespace, ep.pod) in seen_pods:
                continue
            seen_pods.add((ep.pod_namespace, ep.pod))
            nets = sec._pod_networks(ep.pod_namespace, ep.pod)
            ips = nets.secondary_ips(network) if nets is not None else []
            if p.endpoint:
                fixed = ep.hostname.lower() or (ep.pod.lower() if ix.endpoint_pod_names else "")
                if fixed:
                    if fixed != p.endpoint:
                        continue
                else:
                    ips = [ip for ip in ips if dashed_ip(ip) == p.endpoint]
                    if not ips:
                        continue
                host_seen = True
            entries.extend(Entry(ip) for ip in ips)
    if p.endpoint and not host_seen:
        raise NameError_
    return entries


def secondary_ptr(ix: Index, opt: Any, qname: str, ip: str) -> list[Rec]:
    """PTRs for a secondary IP (consulted after ClusterIPs and primary endpoints)."""
    owners = ix.secondary_owners.get(ip)
    if not owners:
        return []
    names = sorted(
        f"{label}.{svc}.{ns}.svc.{opt.primary_zone}" for (label, svc, ns) in owners
        if not opt.namespaces or (ns in opt.namespaces and ns in ix.namespaces)
    )
    return [(qname, QTYPE.PTR, opt.ttl, n) for n in names]
