"""The record index: stores of compact objects plus prepared per-service views.

Every watch event lands here (on the event loop thread) and updates only what its object
touches: one service's view, its PTR entries, one pod's address entry.  Queries then read
dictionaries; nothing scans the stores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dnsd.plugins.kubernetes.names import dashed_ip, ip_family
from dnsd.plugins.kubernetes.objects import Namespace, Pod, Port, Service, Slice

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Address:
    """One ready address of one endpoint, as answers use it."""

    ip: str
    label: str  # endpoint label: hostname, pod name (endpoint_pod_names) or dashed IP
    ports: tuple[Port, ...]  # the ports of the slice it came from
    pod: str = ""
    pod_namespace: str = ""
    # "primary": from the slice, answered and reverse-mapped (CoreDNS's only kind);
    # "secondary": a pod's secondary-network address, answered and reverse-mapped after the
    # primaries; "ptr": a primary address a bound service no longer answers with, kept only
    # so its PTR stays as CoreDNS gives it.
    role: str = "primary"


@dataclass(slots=True)
class ServiceView:
    """A Service with its ready endpoint addresses, prepared for lookups."""

    svc: Service
    addresses: list[Address] = field(default_factory=list)  # every ready address, all slices
    by_label: dict[str, list[Address]] = field(default_factory=dict)
    endpoint_ips: tuple[str, ...] = ()  # distinct, in order
    pods: frozenset[Key] = frozenset()  # pods named by the service's slices (membership)
    ptr_only: list[Address] = field(default_factory=list)  # see Address.role

    @property
    def headless(self) -> bool:
        return self.svc.kind == "headless"


# Builds a view's addresses from the service, its slices and the index (secondary networks
# plug their own builder in here).
AddressBuilder = Callable[["Index", Service, Iterable[Slice]], list[Address]]


def primary_addresses(index: Index, svc: Service, slices: Iterable[Slice]) -> list[Address]:
    """CoreDNS's addresses: every address of every ready endpoint."""
    out: list[Address] = []
    pod_names = index.endpoint_pod_names
    for sl in slices:
        for ep in sl.endpoints:
            for ip in ep.addresses:
                label = ep.hostname or (ep.pod if pod_names and ep.pod else "") or dashed_ip(ip)
                out.append(Address(ip, label.lower(), ep.ports or sl.ports, ep.pod, ep.pod_namespace))
    return out


class Index:
    """All cluster state dnsd answers from."""

    def __init__(self, endpoint_pod_names: bool = False,
                 address_builder: AddressBuilder = primary_addresses) -> None:
        self.endpoint_pod_names = endpoint_pod_names
        self.address_builder = address_builder
        self.services: dict[Key, Service] = {}
        self.slices: dict[Key, dict[str, Slice]] = {}  # (ns, service) -> slice name -> Slice
        self.slice_owner: dict[Key, Key] = {}  # (ns, slice) -> (ns, service)
        self.views: dict[Key, ServiceView] = {}
        self.namespaces: set[str] = set()
        self.pods: dict[Key, Pod] = {}
        self.pod_ips: dict[tuple[str, str], int] = {}  # (ns, ip) -> live pods with that podIP
        self.pod_namespaces: dict[str, dict[str, int]] = {}  # podIP -> {ns: pods} (autopath)
        self.cluster_ip_owners: dict[str, list[Key]] = {}
        self.endpoint_owners: dict[str, dict[tuple[str, str, str], int]] = {}  # ip -> (label, svc, ns)
        self.secondary_owners: dict[str, dict[tuple[str, str, str], int]] = {}  # same, secondary IPs
        # Called with (old, new) pod on every pod change (either may be None).
        self.pod_hooks: list[Callable[[Pod | None, Pod | None], None]] = []
        self.pod_services: dict[Key, set[Key]] = {}  # pod -> services whose endpoints name it
        self.serial = int(time.time())
        self.version = 0  # bumps on every change that can alter an answer
        self.listeners: list[Callable[[], None]] = []

    # --- change bookkeeping -------------------------------------------------------------------
    def _changed(self, bump_serial: bool = True) -> None:
        self.version += 1
        if bump_serial:
            self.serial = int(time.time())
        for listener in self.listeners:
            listener()

    # --- services -----------------------------------------------------------------------------
    def set_service(self, svc: Service) -> None:
        old = self.services.get(svc.key)
        if old is not None and replace(old, rv="") == replace(svc, rv=""):
            self.services[svc.key] = svc
            return
        self.services[svc.key] = svc
        self._rebuild(svc.key)
        self._changed()

    def delete_service(self, key: Key) -> None:
        if key in self.services:
            del self.services[key]
            self._rebuild(key)
            self._changed()

    # --- endpoint slices ----------------------------------------------------------------------
    def set_slice(self, sl: Slice) -> None:
        owner = (sl.namespace, sl.service)
        previous_owner = self.slice_owner.get(sl.key)
        if previous_owner is not None and previous_owner != owner:
            self._drop_slice(sl.key)
            self._rebuild(previous_owner)
        group = self.slices.setdefault(owner, {})
        old = group.get(sl.name)
        group[sl.name] = sl
        self.slice_owner[sl.key] = owner
        if old is not None and replace(old, rv="", trigger_time="") == replace(sl, rv="", trigger_time=""):
            return
        self._rebuild(owner)
        self._changed()

    def delete_slice(self, key: Key) -> None:
        if key in self.slice_owner:
            owner = self._drop_slice(key)
            self._rebuild(owner)
            self._changed()

    def _drop_slice(self, key: Key) -> Key:
        owner = self.slice_owner.pop(key)
        group = self.slices.get(owner, {})
        group.pop(key[1], None)
        if not group:
            self.slices.pop(owner, None)
        return owner

    # --- namespaces and pods ------------------------------------------------------------------
    def set_namespace(self, ns: Namespace) -> None:
        if ns.name not in self.namespaces:
            self.namespaces.add(ns.name)
            self._changed(bump_serial=False)

    def delete_namespace(self, key: Key) -> None:
        if key[1] in self.namespaces:
            self.namespaces.discard(key[1])
            self._changed(bump_serial=False)

    def set_pod(self, pod: Pod) -> None:
        old = self.pods.get(pod.key)
        if pod.deleting:
            # CoreDNS skips terminating pods on add/update; drop what we had.
            if old is not None:
                self.delete_pod(pod.key)
            return
        if old is not None and replace(old, rv="") == replace(pod, rv=""):
            self.pods[pod.key] = pod
            return
        if old is not None:
            self._unindex_pod(old)
        self.pods[pod.key] = pod
        if pod.ip:
            k = (pod.namespace, pod.ip)
            self.pod_ips[k] = self.pod_ips.get(k, 0) + 1
            by_ns = self.pod_namespaces.setdefault(pod.ip, {})
            by_ns[pod.namespace] = by_ns.get(pod.namespace, 0) + 1
        for hook in self.pod_hooks:
            hook(old, pod)
        self._pod_touched(pod.key)
        self._changed(bump_serial=old is None or old.ip != pod.ip)

    def delete_pod(self, key: Key) -> None:
        old = self.pods.pop(key, None)
        if old is not None:
            self._unindex_pod(old)
            for hook in self.pod_hooks:
                hook(old, None)
            self._pod_touched(key)
            self._changed()

    def _unindex_pod(self, pod: Pod) -> None:
        if pod.ip:
            k = (pod.namespace, pod.ip)
            n = self.pod_ips.get(k, 0) - 1
            if n > 0:
                self.pod_ips[k] = n
            else:
                self.pod_ips.pop(k, None)
            by_ns = self.pod_namespaces.get(pod.ip, {})
            left = by_ns.get(pod.namespace, 0) - 1
            if left > 0:
                by_ns[pod.namespace] = left
            else:
                by_ns.pop(pod.namespace, None)
                if not by_ns:
                    self.pod_namespaces.pop(pod.ip, None)

    def _pod_touched(self, key: Key) -> None:
        """Rebuild the services naming this pod, when their addresses depend on pods."""
        if self.address_builder is primary_addresses:
            return
        for svc_key in list(self.pod_services.get(key, ())):
            self._rebuild(svc_key)

    # --- bulk replacement (initial list and relists) --------------------------------------------
    def replace(self, kind: str, objects: Iterable[Any]) -> None:
        """Make the store of ``kind`` equal ``objects`` with per-object updates (no flap:
        names that exist before and after never disappear in between)."""
        objects = list(objects)
        if kind == "services":
            current, setter, deleter = self.services, self.set_service, self.delete_service
        elif kind in ("endpointslices", "endpoints"):
            current, setter, deleter = self.slice_owner, self.set_slice, self.delete_slice
        elif kind == "pods":
            current, setter, deleter = self.pods, self.set_pod, self.delete_pod
        elif kind == "namespaces":
            current = {("", n): n for n in self.namespaces}
            setter, deleter = self.set_namespace, self.delete_namespace
        else:
            raise ValueError(kind)
        listeners, self.listeners = self.listeners, []
        before = self.version
        try:
            wanted = {obj.key for obj in objects}
            for key in [k for k in current if k not in wanted]:
                deleter(key)
            for obj in objects:
                setter(obj)
        finally:
            self.listeners = listeners
        if self.version != before:
            self._changed(bump_serial=kind != "namespaces")

    # --- prepared views -----------------------------------------------------------------------
    def _rebuild(self, key: Key) -> None:
        old = self.views.pop(key, None)
        if old is not None:
            self._unindex_view(old)
        svc = self.services.get(key)
        if svc is None:
            return
        view = ServiceView(svc)
        if svc.kind != "ExternalName":
            built = self.address_builder(self, svc, self.slices.get(key, {}).values())
            view.addresses = [a for a in built if a.role != "ptr"]
            view.ptr_only = [a for a in built if a.role == "ptr"]
            for addr in view.addresses:
                view.by_label.setdefault(addr.label, []).append(addr)
            view.endpoint_ips = tuple(dict.fromkeys(a.ip for a in view.addresses))
            view.pods = frozenset(
                (ep.pod_namespace, ep.pod)
                for sl in self.slices.get(key, {}).values() for ep in sl.endpoints if ep.pod
            )
        self.views[key] = view
        self._index_view(view)

    def _index_view(self, view: ServiceView) -> None:
        key = view.svc.key
        for ip in view.svc.cluster_ips:
            self.cluster_ip_owners.setdefault(ip, []).append(key)
        for addr in (*view.addresses, *view.ptr_only):
            table = self.secondary_owners if addr.role == "secondary" else self.endpoint_owners
            owners = table.setdefault(addr.ip, {})
            k = (addr.label, key[1], key[0])
            owners[k] = owners.get(k, 0) + 1
        for pod_key in view.pods:
            self.pod_services.setdefault(pod_key, set()).add(key)

    def _unindex_view(self, view: ServiceView) -> None:
        key = view.svc.key
        for ip in view.svc.cluster_ips:
            owners = self.cluster_ip_owners.get(ip)
            if owners and key in owners:
                owners.remove(key)
                if not owners:
                    del self.cluster_ip_owners[ip]
        for addr in (*view.addresses, *view.ptr_only):
            table = self.secondary_owners if addr.role == "secondary" else self.endpoint_owners
            owners2 = table.get(addr.ip)
            if owners2 is None:
                continue
            k = (addr.label, key[1], key[0])
            n = owners2.get(k, 0) - 1
            if n > 0:
                owners2[k] = n
            else:
                owners2.pop(k, None)
                if not owners2:
                    del table[addr.ip]
        for pod_key in view.pods:
            services = self.pod_services.get(pod_key)
            if services is not None:
                services.discard(key)
                if not services:
                    del self.pod_services[pod_key]

    # --- reads used by answers -----------------------------------------------------------------
    def addresses_by_family(self, ips: Iterable[str], family: int) -> list[str]:
        return [ip for ip in ips if ip_family(ip) == family]
