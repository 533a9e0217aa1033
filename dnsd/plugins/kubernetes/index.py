"""The record index: stores of compact objects plus prepared per-service views.

Every watch event lands here (on the event loop thread) and updates only what its object
touches: one service's view, its PTR entries, one pod's address entry.  Queries then read
dictionaries; nothing scans the stores.

Memory: a large cluster has ~10 endpoint addresses per service, so what is kept per address
counts most.  Per address there is one ``Address`` (its IP string shared with the slice, its
label string shared by ``by_label`` and the PTR owner key), one entry in ``by_label`` and one
in ``endpoint_owners``.  Containers that nearly always hold one element are tuples, not lists
or dicts (``by_label`` values, the owner sets of ``endpoint_owners``/``cluster_ip_owners``,
which turn into dicts only past a few owners), and empty ones are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from dnsd.plugins.kubernetes.names import dashed_ip, ip_family
from dnsd.plugins.kubernetes.objects import Namespace, Pod, Port, Service, Slice

Key = tuple[str, str]  # (namespace, name)
MAX_STAMPS = 100_000  # past this many changed keys, start a new epoch (drops them all)
_FEW = 8  # an owner set is a tuple up to this many owners, a dict (keys only) past it

_NO_PODS: frozenset[Key] = frozenset()
_NO_LABELS: Mapping[str, tuple[Any, ...]] = MappingProxyType({})


def add_owner(table: dict[str, Any], ip: str, key: Any) -> None:
    """Record ``key`` as an owner of ``ip`` (once)."""
    owners = table.get(ip)
    if owners is None:
        table[ip] = (key,)
    elif key in owners:
        return
    elif type(owners) is tuple:
        table[ip] = owners + (key,) if len(owners) < _FEW else dict.fromkeys((*owners, key))
    else:
        owners[key] = None


def remove_owner(table: dict[str, Any], ip: str, key: Any) -> None:
    """Forget ``key`` as an owner of ``ip``; the entry goes with its last owner."""
    owners = table.get(ip)
    if owners is None or key not in owners:
        return
    if type(owners) is tuple:
        rest = tuple(k for k in owners if k != key)
    else:
        del owners[key]
        rest = owners if len(owners) > _FEW // 2 else tuple(owners)
    if rest:
        table[ip] = rest
    else:
        del table[ip]


def _lower(text: str) -> str:
    """``text.lower()``, but ``text`` itself (not a copy) when it is lower-case already."""
    low = text.lower()
    return text if low == text else low


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
    addresses: tuple[Address, ...] = ()  # every ready address, all slices
    by_label: Mapping[str, tuple[Address, ...]] = field(default_factory=lambda: _NO_LABELS)
    pods: frozenset[Key] = _NO_PODS  # pods named by the service's slices (membership)
    ptr_only: tuple[Address, ...] = ()  # see Address.role

    @property
    def headless(self) -> bool:
        return self.svc.kind == "headless"

    @property
    def endpoint_ips(self) -> tuple[str, ...]:
        """The distinct endpoint addresses, in order."""
        return tuple(dict.fromkeys(a.ip for a in self.addresses))


# Builds a view's addresses from the service, its slices and the index (secondary networks
# plug their own builder in here).
AddressBuilder = Callable[["Index", Service, Iterable[Slice]], list[Address]]


def primary_addresses(index: Index, svc: Service, slices: Iterable[Slice]) -> list[Address]:
    """CoreDNS's addresses: every address of every ready endpoint."""
    out: list[Address] = []
    pod_names = index.endpoint_pod_names
    for sl in slices:
        ports, ns = sl.ports, sl.namespace
        for ep in sl.items:
            if type(ep) is str:  # an endpoint that is only its address
                out.append(Address(ep, _lower(dashed_ip(ep)), ports, "", ns))
                continue
            for ip in ep.addresses:
                label = ep.hostname or (ep.pod if pod_names and ep.pod else "") or dashed_ip(ip)
                out.append(Address(ip, _lower(label), ep.ports or ports, ep.pod, ep.pod_namespace))
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
        # ip -> owners, a tuple (or, past a few owners, a dict): iterate it, never index it.
        self.cluster_ip_owners: dict[str, Any] = {}  # ClusterIP -> (ns, svc) keys
        self.endpoint_owners: dict[str, Any] = {}  # endpoint IP -> (label, svc, ns) keys
        self.secondary_owners: dict[str, Any] = {}  # same, secondary IPs
        # Called with (old, new) pod on every pod change (either may be None).
        self.pod_hooks: list[Callable[[Pod | None, Pod | None], None]] = []
        self.pod_services: dict[Key, set[Key]] = {}  # pod -> services whose endpoints name it
        self.serial = int(time.time())
        self.version = 0  # bumps on every change that can alter an answer
        # Precise invalidation of prepared answers: the version at which each dependency key
        # last changed (("svc", ns, name), ("ip", ip)); see ``unchanged``.
        # Bulk replacement (the initial list, relists) and a full table start a new epoch,
        # which invalidates everything instead of stamping every key.
        self.stamps: dict[tuple[str, ...], int] = {}
        self.epoch = 0
        self.listeners: list[Callable[[], None]] = []
        self._bulk = False

    # --- change bookkeeping -------------------------------------------------------------------
    def _touch(self, key: tuple[str, ...]) -> None:
        """Mark one dependency key as changed by the change in progress."""
        if self._bulk:
            return
        self.stamps[key] = self.version + 1

    def _new_epoch(self) -> None:
        """Invalidate every prepared answer at once (namespaces come and go rarely, and
        whether one exists decides many answers: per-key stamps would not pay)."""
        self.stamps.clear()
        self.epoch += 1

    def unchanged(self, deps: tuple[tuple[str, ...], ...], version: int, epoch: int) -> bool:
        """Did none of ``deps`` change since ``version`` (read in epoch ``epoch``)?"""
        if epoch != self.epoch:
            return False
        stamps = self.stamps
        for key in deps:  # noqa: SIM110 (a loop is faster than all() over a generator)
            if stamps.get(key, 0) > version:
                return False
        return True

    def _changed(self, bump_serial: bool = True) -> None:
        if len(self.stamps) > MAX_STAMPS:
            self._new_epoch()
        self.version += 1
        if bump_serial:
            self.serial = int(time.time())
        for listener in self.listeners:
            listener()

    # --- services -----------------------------------------------------------------------------
    def set_service(self, svc: Service) -> None:
        old = self.services.get(svc.key)
        if old is not None and old == svc:
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
        if old is not None and replace(old, trigger_time="") == replace(sl, trigger_time=""):
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
            self._new_epoch()
            self._changed(bump_serial=False)

    def delete_namespace(self, key: Key) -> None:
        if key[1] in self.namespaces:
            self.namespaces.discard(key[1])
            self._new_epoch()
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
        self._bulk = True  # no per-key stamps: the new epoch below invalidates everything
        try:
            wanted = {obj.key for obj in objects}
            for key in [k for k in current if k not in wanted]:
                deleter(key)
            for obj in objects:
                setter(obj)
        finally:
            self.listeners = listeners
            self._bulk = False
        if self.version != before:
            self._new_epoch()
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
        slices = self.slices.get(key)
        if svc.kind != "ExternalName" and slices:
            built = self.address_builder(self, svc, slices.values())
            view.addresses = tuple(a for a in built if a.role != "ptr")
            if len(view.addresses) != len(built):
                view.ptr_only = tuple(a for a in built if a.role == "ptr")
            if view.addresses:
                view.by_label = _by_label(view.addresses)
            pods = frozenset(
                (ep.pod_namespace, ep.pod)
                for sl in slices.values() for ep in sl.items if type(ep) is not str and ep.pod
            )
            if pods:
                view.pods = pods
        self.views[key] = view
        self._index_view(view)

    def _index_view(self, view: ServiceView) -> None:
        self._walk_view(view, add_owner)
        for pod_key in view.pods:
            self.pod_services.setdefault(pod_key, set()).add(view.svc.key)

    def _walk_view(self, view: ServiceView, update: Callable[[dict[str, Any], str, Any], None]) -> None:
        """Add or remove (``update``: add_owner/remove_owner) a view's reverse-lookup owner
        entries, stamping on the way every key its answers depend on: its service and each of
        its addresses (see ``unchanged``)."""
        key = view.svc.key
        touch = None if self._bulk else self._touch
        if touch is not None:
            touch(("svc", key[0], key[1]))
        for ip in view.svc.cluster_ips:
            update(self.cluster_ip_owners, ip, key)
            if touch is not None:
                touch(("ip", ip))
        name, ns = key[1], key[0]
        for addresses in (view.addresses, view.ptr_only):
            for addr in addresses:
                table = self.secondary_owners if addr.role == "secondary" else self.endpoint_owners
                update(table, addr.ip, (addr.label, name, ns))
                if touch is not None:
                    touch(("ip", addr.ip))

    def _unindex_view(self, view: ServiceView) -> None:
        key = view.svc.key
        self._walk_view(view, remove_owner)
        for pod_key in view.pods:
            services = self.pod_services.get(pod_key)
            if services is not None:
                services.discard(key)
                if not services:
                    del self.pod_services[pod_key]

    # --- reads used by answers -----------------------------------------------------------------
    def addresses_by_family(self, ips: Iterable[str], family: int) -> list[str]:
        return [ip for ip in ips if ip_family(ip) == family]


def _by_label(addresses: tuple[Address, ...]) -> dict[str, tuple[Address, ...]]:
    """label -> its addresses, in order (nearly always one: a 1-tuple)."""
    out: dict[str, tuple[Address, ...]] = {}
    shared: dict[str, list[Address]] | None = None
    for addr in addresses:
        label = addr.label
        got = out.get(label)
        if got is None:
            out[label] = (addr,)
            continue
        if shared is None:
            shared = {}
        more = shared.get(label)
        if more is None:
            shared[label] = more = list(got)
        more.append(addr)
    if shared:
        for label, more in shared.items():
            out[label] = tuple(more)
    return out
