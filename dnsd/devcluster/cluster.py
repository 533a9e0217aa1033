"""`DevCluster`: the Kubernetes API-server emulator's public Python API."""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .alloc import Allocator
from .endpoints import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    build_endpoints,
    build_slices,
    describe_slices,
)
from .errors import ApiError
from .faults import Faults
from .httpapi import Server
from .resources import RESOURCES, ResourceType, resolve_kind
from .selectors import FieldSelector, LabelSelector
from .store import STOP, Store

log = logging.getLogger("dnsd.devcluster")

Obj = dict[str, Any]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DISCOVERY_GROUP = "discovery.k8s.io"


class RequestLog:
    """Thread-safe record of `(method, path, query)` for every request received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, str, dict[str, str]]] = []

    def append(self, entry: tuple[str, str, dict[str, str]]) -> None:
        """Record one request."""
        with self._lock:
            self._items.append(entry)

    def snapshot(self) -> list[tuple[str, str, dict[str, str]]]:
        """A copy of the log."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()

    def __iter__(self) -> Iterator[tuple[str, str, dict[str, str]]]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __getitem__(self, index: int) -> tuple[str, str, dict[str, str]]:
        with self._lock:
            return self._items[index]


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"DevCluster has no authentication and only binds loopback, not {host!r}")


class DevCluster:
    """An in-process Kubernetes API server speaking enough REST for the official client.

    Serves core/v1 namespaces, services, pods, endpoints and (unless
    `endpointslices=False`) discovery.k8s.io/v1 endpointslices over plain HTTP.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        endpointslices: bool = True,
        bookmark_interval: float = 1.0,
        history: int = 1000,
        service_cidr: str = "10.96.0.0/16",
        service_cidr_v6: str = "fd00:10:96::/112",
        watch_timeout: float = 1800.0,
    ) -> None:
        _check_loopback(host)
        self.host = host
        self.port = port
        self.endpointslices = endpointslices
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.store = Store(Allocator(service_cidr, service_cidr_v6), history)
        self.faults = Faults(self)
        self.request_log = RequestLog()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._down = False
        self._life = threading.Lock()
        for name in DEFAULT_NAMESPACES:
            self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ----- serving -----------------------------------------------------------------------

    def served(self, group: str | None = None) -> list[ResourceType]:
        """Resources served (optionally only those of API `group`, "" for core)."""
        out = [
            rt for rt in RESOURCES.values() if self.endpointslices or rt.group != DISCOVERY_GROUP
        ]
        return [rt for rt in out if group is None or rt.group == group]

    def served_groups(self) -> list[str]:
        """Named API groups listed under /apis."""
        return [DISCOVERY_GROUP] if self.endpointslices else []

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:36111` (known once started or with a fixed port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> None:
        server = Server((self.host, self.port), self)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"devcluster:{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _unbind(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self.store.broadcast(STOP)
        server.shutdown()
        server.server_close()
        server.abort_connections()
        if thread is not None:
            thread.join(timeout=5)

    def start(self) -> DevCluster:
        """Serve in a background thread; returns self."""
        with self._life:
            if self._server is None and not self._down:
                self._bind()
        return self

    def stop(self) -> None:
        """Stop serving and drop all connections."""
        with self._life:
            self._down = False
            self._unbind()

    def _go_down(self) -> None:
        with self._life:
            if self._server is None or self._down:
                return
            self._down = True
            self._unbind()

    def _go_up(self) -> None:
        with self._life:
            if not self._down:
                return
            self._bind()
            self._down = False

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def resource_version(self) -> int:
        """The store's current resourceVersion."""
        return self.store.rv

    @property
    def open_watches(self) -> int:
        """Number of watch streams currently open."""
        return len(self.store.watchers)

    def wait_for_watches(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least `count` watch streams are open; False on timeout."""
        return self.store.wait_for_watchers(count, timeout)

    # ----- object API --------------------------------------------------------------------

    def _rt(self, kind: str) -> ResourceType:
        rt = resolve_kind(kind)
        if rt not in self.served():
            raise ApiError(
                404,
                f"the server could not find the requested resource ({rt.name}.{rt.group})",
                "NotFound",
            )
        return rt

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str | None:
        return (namespace or "default") if rt.namespaced else None

    def apply(self, obj: Obj) -> Obj:
        """Create, or replace whatever is stored under the same kind/namespace/name.

        A replace ignores `metadata.resourceVersion` in `obj`. Raises ApiError on
        invalid objects. Returns a copy of the stored object.
        """
        rt = self._rt(obj.get("kind") or "")
        if obj.get("apiVersion") not in (None, rt.api_version):
            raise ValueError(
                f"{rt.kind} has apiVersion {rt.api_version}, not {obj.get('apiVersion')}"
            )
        meta = obj.get("metadata") or {}
        ns = self._ns(rt, meta.get("namespace"))
        stored = self.store.update(rt, ns, meta.get("name") or "", obj, force=True)
        return copy.deepcopy(stored)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """Delete an object; returns its last state, or None if it did not exist."""
        rt = self._rt(kind)
        try:
            return copy.deepcopy(self.store.delete(rt, self._ns(rt, namespace), name))
        except ApiError as err:
            if err.code == 404:
                return None
            raise

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of a stored object, or None."""
        rt = self._rt(kind)
        try:
            return copy.deepcopy(self.store.get(rt, self._ns(rt, namespace), name))
        except ApiError:
            return None

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        """Copies of every object of `kind` (optionally in one namespace / matching labels)."""
        rt = self._rt(kind)
        labels = LabelSelector.parse(label_selector)
        return copy.deepcopy(self.store.select(rt, namespace, labels, FieldSelector()))

    def load_yaml(self, source: str | os.PathLike[str], mirror_endpoints: bool = True) -> list[Obj]:
        """Apply a multi-document YAML file or text (Namespaces first, then in order).

        `kind: List` documents are expanded. EndpointSlices are skipped when the
        discovery API is disabled. With `mirror_endpoints`, every Service that gets
        EndpointSlices from this source but no Endpoints object also gets the
        core/v1 Endpoints the endpoints controller would write. Returns stored objects.
        """
        if isinstance(source, os.PathLike) or ("\n" not in source and Path(source).is_file()):
            text = Path(source).read_text()
        else:
            text = str(source)
        docs: list[Obj] = []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            if doc.get("kind") == "List":
                docs.extend(item for item in doc.get("items") or [] if item)
            else:
                docs.append(doc)
        docs.sort(key=lambda d: d.get("kind") != "Namespace")  # stable: namespaces first
        stored: list[Obj] = []
        slices: dict[tuple[str, str], list[Obj]] = {}
        have_endpoints: set[tuple[str, str]] = set()
        for doc in docs:
            meta = doc.get("metadata") or {}
            ns = meta.get("namespace") or "default"
            if doc.get("kind") == "EndpointSlice":
                svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
                if svc:
                    slices.setdefault((ns, svc), []).append(doc)
                if not self.endpointslices:
                    log.info(
                        "devcluster: skipping EndpointSlice %s/%s (API disabled)",
                        ns,
                        meta.get("name"),
                    )
                    continue
            elif doc.get("kind") == "Endpoints":
                have_endpoints.add((ns, meta.get("name") or ""))
            stored.append(self.apply(doc))
        if mirror_endpoints:
            for (ns, svc), group in slices.items():
                if (ns, svc) in have_endpoints:
                    continue
                endpoints, ports = describe_slices(group)
                service = self.get("Service", svc, ns)
                stored.append(self.apply(build_endpoints(ns, svc, endpoints, ports, service)))
        return stored

    def service_endpoints(
        self,
        namespace: str,
        service: str,
        endpoints: list[Obj],
        ports: list[Obj],
        write_slices: bool | None = None,
        write_endpoints: bool = True,
    ) -> dict[str, Any]:
        """Write a Service's EndpointSlice(s) and/or core/v1 Endpoints from one description.

        Slices are named `<service>-ipv4` / `<service>-ipv6` (one per family present),
        labelled `kubernetes.io/service-name`; slices this helper wrote earlier for the
        service that are no longer needed are deleted. `write_slices` defaults to
        whether the discovery API is served. Returns `{"slices": [...], "endpoints": obj}`.
        """
        svc = self.get("Service", service, namespace)
        described = []
        for ep in endpoints:
            ep = dict(ep)
            if ep.get("pod") and not ep.get("pod_uid"):
                pod = self.get("Pod", ep["pod"], namespace)
                if pod:
                    ep["pod_uid"] = pod["metadata"]["uid"]
            described.append(ep)
        result: dict[str, Any] = {"slices": [], "endpoints": None}
        if write_slices is None:
            write_slices = self.endpointslices
        if write_slices:
            wanted = build_slices(namespace, service, described, ports, svc)
            names = {s["metadata"]["name"] for s in wanted}
            selector = f"{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={MANAGED_BY}"
            for old in self.list("EndpointSlice", namespace, selector):
                if old["metadata"]["name"] not in names:
                    self.delete("EndpointSlice", old["metadata"]["name"], namespace)
            result["slices"] = [self.apply(s) for s in wanted]
        if write_endpoints:
            result["endpoints"] = self.apply(
                build_endpoints(namespace, service, described, ports, svc)
            )
        return result

    def kubeconfig(self, path: str | os.PathLike[str]) -> str:
        """Write a kubeconfig (no auth) pointing at this server; returns the path."""
        if not self.port:
            raise RuntimeError("start() the DevCluster before writing a kubeconfig")
        name = "dnsd-devcluster"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
            ],
            "current-context": name,
            "preferences": {},
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        return str(path)
