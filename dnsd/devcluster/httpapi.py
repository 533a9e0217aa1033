"""HTTP/1.1 front end: routing, JSON responses and chunked watch streams."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import discovery
from .errors import ApiError, expired, status_object, success_status
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import CUT, CUT_MID_JSON, EXPIRE, STOP, Event

if TYPE_CHECKING:
    from .cluster import DevCluster

log = logging.getLogger("dnsd.devcluster")

Obj = dict[str, Any]


class _Aborted(Exception):
    """The connection was dropped on purpose; no response must follow."""


@dataclass(frozen=True)
class Target:
    """What a request path addresses."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks open connections so they can be dropped at once."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], cluster: DevCluster) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.cluster = cluster
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: D102
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:  # noqa: D102
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def abort_connections(self) -> None:
        """Reset every open client connection."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """One client connection; requests are dispatched to the cluster's store."""

    protocol_version = "HTTP/1.1"
    server_version = "dnsd-devcluster"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # ----- plumbing ----------------------------------------------------------------------

    @property
    def cluster(self) -> DevCluster:
        return self.server.cluster

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, code: int, obj: Any) -> None:
        body = _compact_json(obj)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.cluster.request_log.append((method, url.path, query))
        faults = self.cluster.faults
        if faults.is_down:
            self._abort()
            return
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self._abort()
            return
        code = faults.take_error()
        if code is not None:
            self._send_json(code, status_object(code, f"injected fault: HTTP {code}"))
            return
        try:
            self._check_accept()
            self._route(method, url.path, query, body)
        except ApiError as err:
            self._send_json(err.code, err.status())
        except _Aborted:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug: report it like the API server would
            log.exception("devcluster: %s %s failed", method, self.path)
            self._send_json(500, status_object(500, f"internal error: {exc}"))

    def _check_accept(self) -> None:
        accept = self.headers.get("Accept")
        if not accept:
            return
        for item in accept.split(","):
            media = item.split(";")[0].strip().lower()
            if "json" in media or media in ("*/*", "application/*"):
                return
        raise ApiError(406, f"only application/json is served, not {accept!r}", "NotAcceptable")

    # ----- routing -----------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        cluster = self.cluster
        if parts in (["healthz"], ["livez"], ["readyz"]):
            self._send_text(200, "ok")
            return
        if method == "GET" and parts == ["version"]:
            self._send_json(200, discovery.VERSION)
            return
        if method == "GET" and parts == ["api"]:
            host, port = self.server.server_address[:2]
            self._send_json(200, discovery.api_versions(f"{host}:{port}"))
            return
        if method == "GET" and parts == ["apis"]:
            self._send_json(200, discovery.api_group_list(cluster.served_groups()))
            return
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif len(parts) >= 2 and parts[0] == "apis" and parts[1] in cluster.served_groups():
            if len(parts) == 2 and method == "GET":
                self._send_json(200, discovery.api_group(parts[1]))
                return
            if len(parts) < 3 or parts[2] != "v1":
                raise self._no_such_path()
            group, rest = parts[1], parts[3:]
        else:
            raise self._no_such_path()
        if not rest and method == "GET":
            self._send_json(
                200,
                discovery.resource_list(f"{group}/v1" if group else "v1", cluster.served(group)),
            )
            return
        target = self._resolve(group, rest)
        self._dispatch(method, target, query, body)

    @staticmethod
    def _no_such_path() -> ApiError:
        return ApiError(404, "the server could not find the requested resource", "NotFound")

    def _resolve(self, group: str, rest: list[str]) -> Target:
        served = {rt.name: rt for rt in self.cluster.served(group)}
        watch_path = rest[:1] == ["watch"]
        if watch_path:
            rest = rest[1:]
        if len(rest) == 1 and rest[0] in served:
            return Target(served[rest[0]], None, None, None, watch_path)
        if len(rest) >= 2 and rest[0] == "namespaces":
            namespace = rest[1]
            if len(rest) >= 3 and rest[2] in served and served[rest[2]].namespaced:
                rt = served[rest[2]]
                name = rest[3] if len(rest) >= 4 else None
                sub = rest[4] if len(rest) == 5 else None
                if len(rest) > 5 or (sub is not None and sub not in rt.subresources):
                    raise self._no_such_path()
                return Target(rt, namespace, name, sub, watch_path)
            if "namespaces" in served and len(rest) <= 3:
                sub = rest[2] if len(rest) == 3 else None
                if sub is not None and sub not in served["namespaces"].subresources:
                    raise self._no_such_path()
                return Target(served["namespaces"], None, namespace, sub, watch_path)
        raise self._no_such_path()

    def _dispatch(self, method: str, target: Target, query: dict[str, str], body: bytes) -> None:
        rt, ns, name = target.rt, target.namespace, target.name
        store = self.cluster.store
        if name is None:
            labels = LabelSelector.parse(query.get("labelSelector"))
            fields = FieldSelector.parse(query.get("fieldSelector"), rt.fields)
            if method == "GET":
                if target.watch_path or _truthy(query.get("watch")):
                    self._serve_watch(rt, ns, labels, fields, query)
                else:
                    self._serve_list(rt, ns, labels, fields, query)
                return
            if method == "POST" and (ns is not None or not rt.namespaced):
                self._send_json(201, store.create(rt, ns, self._json(body)))
                return
            if method == "DELETE" and (ns is not None or not rt.namespaced):
                deleted = store.delete_collection(rt, ns, labels, fields)
                self._send_json(200, self._list_doc(rt, deleted, store.rv))
                return
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                "MethodNotAllowed",
            )
        if method == "GET":
            if target.watch_path or _truthy(query.get("watch")):
                fields = FieldSelector.parse(query.get("fieldSelector"), rt.fields)
                by_name = FieldSelector((*fields.terms, ("metadata.name", "=", name)))
                labels = LabelSelector.parse(query.get("labelSelector"))
                self._serve_watch(rt, ns, labels, by_name, query)
                return
            self._send_json(200, store.get(rt, ns, name))
            return
        if method == "PUT":
            existed = self._exists(rt, ns, name)
            self._send_json(200 if existed else 201, store.update(rt, ns, name, self._json(body)))
            return
        if method == "PATCH":
            ctype = self.headers.get("Content-Type", "")
            existed = self._exists(rt, ns, name)
            obj = store.patch(rt, ns, name, ctype, body)
            self._send_json(200 if existed else 201, obj)
            return
        if method == "DELETE":
            options = self._json(body) if body.strip() else {}
            old = store.delete(rt, ns, name, (options or {}).get("preconditions"))
            if rt.delete_returns_object:
                self._send_json(200, old)
            else:
                self._send_json(
                    200, success_status(name, rt.name, rt.group, old["metadata"]["uid"])
                )
            return
        raise ApiError(
            405,
            "the server does not allow this method on the requested resource",
            "MethodNotAllowed",
        )

    def _exists(self, rt: ResourceType, ns: str | None, name: str) -> bool:
        try:
            self.cluster.store.get(rt, ns, name)
        except ApiError:
            return False
        return True

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body.decode() or "null")
        except ValueError as exc:
            raise ApiError(400, f"error decoding request body: {exc}") from exc

    # ----- list --------------------------------------------------------------------------

    @staticmethod
    def _list_doc(
        rt: ResourceType, items: list[Obj], rv: int, token: str = "", remaining: int | None = None
    ) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        # Like the real server, list items carry no kind/apiVersion of their own.
        bare = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": bare}

    def _serve_list(
        self,
        rt: ResourceType,
        ns: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        query: dict[str, str],
    ) -> None:
        delay = self.cluster.faults.list_delay
        if delay:
            time.sleep(delay)
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise ApiError(400, f"invalid limit {query.get('limit')!r}") from exc
        items, rv, token, remaining = self.cluster.store.list(
            rt, ns, labels, fields, limit, query.get("continue") or None
        )
        self._send_json(200, self._list_doc(rt, items, rv, token, remaining))

    # ----- watch -------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_event(self, etype: str, obj: Obj) -> None:
        self._chunk(_compact_json({"type": etype, "object": obj}) + b"\n")

    def _serve_watch(
        self,
        rt: ResourceType,
        ns: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        query: dict[str, str],
    ) -> None:
        cluster = self.cluster
        store = cluster.store
        try:
            timeout = float(query.get("timeoutSeconds") or cluster.watch_timeout)
        except ValueError as exc:
            raise ApiError(400, f"invalid timeoutSeconds {query.get('timeoutSeconds')!r}") from exc
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        initial = _truthy(query.get("sendInitialEvents"))
        watcher = None
        error: ApiError | None = None
        first: list[tuple[str, Obj]] = []
        start_rv = store.rv
        if cluster.faults.watches_expired:
            error = expired(
                f"too old resource version: {query.get('resourceVersion') or 0} ({store.rv})"
            )
        else:
            try:
                watcher, first, start_rv = store.watch(
                    rt, ns, labels, fields, query.get("resourceVersion"), initial
                )
            except ApiError as err:
                if err.code != 410:
                    raise
                error = err
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if error is not None or watcher is None:
                if error is not None:
                    self._write_event("ERROR", error.status())
                self.wfile.write(b"0\r\n\r\n")
                return
            for etype, obj in first:
                self._write_event(etype, obj)
            if initial and bookmarks:
                self._write_event("BOOKMARK", self._bookmark(rt, start_rv, initial_end=True))
            self._stream(rt, watcher, timeout, bookmarks)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            if watcher is not None:
                store.unwatch(watcher)

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    def _stream(self, rt: ResourceType, watcher: Any, timeout: float, bookmarks: bool) -> None:
        cluster = self.cluster
        interval = max(0.01, cluster.bookmark_interval)
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + interval if bookmarks else float("inf")
        while True:
            now = time.monotonic()
            if now >= deadline:
                cluster.store.unwatch(watcher)
                self.wfile.write(b"0\r\n\r\n")
                return
            if now >= next_bookmark:
                rv = cluster.store.drained_rv(watcher)
                if rv is not None:
                    self._write_event("BOOKMARK", self._bookmark(rt, rv))
                next_bookmark = now + interval
                continue
            try:
                item = watcher.queue.get(timeout=min(deadline, next_bookmark) - now)
            except queue.Empty:
                continue
            if isinstance(item, Event):
                shown = watcher.translate(item)
                if shown is not None:
                    self._write_event(*shown)
                continue
            # A control message ends the stream; forget the watcher before the client notices.
            cluster.store.unwatch(watcher)
            if item in (CUT, STOP):
                self._abort()
                raise _Aborted
            elif item == CUT_MID_JSON:
                line = _compact_json(
                    {"type": "BOOKMARK", "object": self._bookmark(rt, cluster.store.rv)}
                )
                self._chunk(line[: len(line) // 2])
                self._abort()
                raise _Aborted
            elif item == EXPIRE:
                self._write_event("ERROR", expired("too old resource version").status())
                self.wfile.write(b"0\r\n\r\n")
                return
