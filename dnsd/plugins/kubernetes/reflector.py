"""List-then-watch of one resource through the official ``kubernetes`` client, in a thread.

Like client-go's reflector: list, then watch from the list's resourceVersion with bookmarks;
on a watch that ends, watch again from the last resourceVersion seen; on 410 Gone, list again;
on errors, retry with capped exponential backoff and jitter.  The HTTP work runs in a thread,
so it never blocks the event loop; converted objects are handed to ``sink`` (which posts them
to the loop).  Only JSON is parsed: the client's model classes are bypassed with
``_preload_content=False`` to keep memory and CPU low.

Lists are paged like client-go's (``limit`` 500, then ``continue``), so a big collection is
never decoded at once: each page's JSON is converted and dropped before the next is fetched.
A continue token that expired (410) falls back to one full list, as client-go's pager does.

``ApiCall`` sends the requests through the official client's ``ApiClient`` (its
``param_serialize`` and ``call_api``, the two steps every generated API method makes) without
the generated API classes: importing ``CoreV1Api`` alone pulls in ~260 model modules and builds
pydantic validators for its ~400 methods, about 22 MiB that dnsd would never use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from dnsd import metrics

log = logging.getLogger("dnsd")

# sink(resource, op, payload): op "replace" -> list of objects; op "event" -> (type, object)
Sink = Callable[[str, str, Any], None]
Convert = Callable[[dict[str, Any]], Any]


PAGE_SIZE = 500  # client-go's reflector pages its lists by 500

# Keyword arguments of the generated list methods -> query parameters.
_QUERY = {
    "watch": "watch", "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks", "timeout_seconds": "timeoutSeconds",
    "label_selector": "labelSelector", "field_selector": "fieldSelector", "limit": "limit",
    "_continue": "continue",
}


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


class ApiCall:
    """A GET of one API path through the official client's ``ApiClient``, called like the
    generated list methods with ``_preload_content=False``: keyword arguments as theirs
    (``watch``, ``resource_version``, ``label_selector``, ``limit``, ``_continue``...), the
    raw urllib3 response back, ``ApiException`` for a non-2xx status.  Authentication (bearer
    tokens, their refresh), TLS and the connection pool are the client's own.
    """

    def __init__(self, api: Any, path: str) -> None:
        self.api = api
        self.path = path

    @staticmethod
    def supported(api: Any) -> bool:
        """Does this client version have the generator's two-step request API?"""
        return hasattr(api, "param_serialize") and hasattr(ApiException, "from_response")

    def __call__(self, *, _preload_content: bool = False, _request_timeout: Any = None,
                 **params: Any) -> Any:
        query = [(_QUERY[k], v) for k, v in params.items() if v is not None]
        method, url, headers, body, post = self.api.param_serialize(
            method="GET", resource_path=self.path, query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(method, url, headers, body, post, _request_timeout=_request_timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        if _preload_content:
            resp.read()
            return json.loads(resp.data)
        return resp.response

    def __repr__(self) -> str:
        return f"ApiCall({self.path!r})"


class RateLimiter:
    """A token bucket shared by the reflectors (``apiserver_qps`` / ``apiserver_burst``)."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.capacity = float(max(1, burst or int(qps) or 1))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if self.qps <= 0:
            return
        while not stop.is_set():
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.qps)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                delay = (1 - self.tokens) / self.qps
            stop.wait(delay)


class Backoff:
    """Capped exponential backoff with jitter (client-go: 800ms doubling, capped at 30s)."""

    def __init__(self, base: float = 0.8, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.failures = 0


class Reflector:
    """Keeps ``sink`` fed with one resource's objects, until ``stop``."""

    def __init__(
        self, resource: str, list_call: Callable[..., Any] | Callable[[], Callable[..., Any]],
        convert: Convert, sink: Sink, *, label_selector: str = "", field_selector: str = "",
        limiter: RateLimiter | None = None, inflight: threading.BoundedSemaphore | None = None,
        backoff: Backoff | None = None, watch_timeout: int = 300, read_timeout: float = 90.0,
        resolve_call: bool = False, page_size: int = PAGE_SIZE,
    ) -> None:
        self.resource = resource
        self._list_call = list_call
        self._resolve_call = resolve_call  # list_call is a factory that picks the API (discovery)
        self.convert = convert
        self.sink = sink
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.limiter = limiter
        self.inflight = inflight
        self.backoff = backoff or Backoff()
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.page_size = page_size  # 0: one unpaged list
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self.resource_version = ""
        self.listed = threading.Event()
        self._listed_at = float("-inf")  # time.monotonic() of the last successful list

    # --- life ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"reflector-{self.resource}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._abort_response()
        if self._thread is not None:
            self._thread.join(timeout)

    def _abort_response(self) -> None:
        resp = self._response
        if resp is None:
            return
        with contextlib.suppress(Exception):
            shutdown = getattr(resp, "shutdown", None)
            if shutdown is not None:
                shutdown()
        with contextlib.suppress(Exception):
            resp.release_conn()
        with contextlib.suppress(Exception):
            resp.close()

    # --- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        call: Callable[..., Any] | None = None if self._resolve_call else self._list_call
        rv = ""
        reason = "initial"
        while not self._stop.is_set():
            try:
                if call is None:
                    call = self._list_call()  # type: ignore[call-arg]
                if not rv:
                    rv = self._list(call, reason)
                    self.listed.set()
                started = time.monotonic()
                rv, seen = self._watch(call, rv)
                if seen or time.monotonic() - started > 5:
                    self.backoff.reset()
                else:  # the server ends our watches at once: do not spin
                    self._stop.wait(self.backoff.next_delay())
            except Gone:
                rv, reason = "", "expired"
                if time.monotonic() - self._listed_at < 1.0:
                    # Expired again right after a fresh list: the server keeps refusing our
                    # watches.  Back off (client-go waits between ListAndWatch rounds) rather
                    # than relisting in a tight loop.
                    metrics.watch_errors.labels(self.resource).inc()
                    self._stop.wait(self.backoff.next_delay())
            except Exception as exc:  # noqa: BLE001 - any API or network trouble: back off
                if self._stop.is_set():
                    break
                metrics.watch_errors.labels(self.resource).inc()
                delay = self.backoff.next_delay()
                log.warning("[WARNING] plugin/kubernetes: %s: %s; retrying in %.1fs",
                            self.resource, _describe(exc), delay)
                if isinstance(exc, ApiException) and exc.status == 410:
                    rv, reason = "", "expired"
                elif not rv:
                    reason = "error"
                self._stop.wait(delay)

    def _before_request(self) -> None:
        if self.limiter is not None:
            self.limiter.wait(self._stop)

    def _list(self, call: Callable[..., Any], reason: str) -> str:
        """List every object, page by page; hand them to the sink at once (a relist replaces
        the whole store); returns the list's resourceVersion."""
        objects: list[Any] = []
        token = ""
        limit = self.page_size
        while True:
            if token and self._stop.is_set():
                raise ConnectionError("stopped while listing")
            try:
                body = self._list_page(call, limit, token)
            except ApiException as exc:
                if exc.status != 410 or not token:
                    raise
                # The continue token expired between pages (the server compacted): start
                # over with one full list, as client-go's pager does (FullListIfExpired).
                log.info("[INFO] plugin/kubernetes: %s: paged list expired; listing again in full",
                         self.resource)
                objects, token, limit = [], "", 0
                continue
            items = body.get("items") or []
            objects.extend(self.convert(item) for item in items)
            meta = body.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "") if limit else ""
            del body, items, meta  # this page's JSON goes before the next one comes
            if not token:
                break
        metrics.relists.labels(self.resource, reason).inc()
        self.sink(self.resource, "replace", objects)
        self.resource_version = rv
        self._listed_at = time.monotonic()
        return rv

    def _list_page(self, call: Callable[..., Any], limit: int, token: str) -> dict[str, Any]:
        self._before_request()
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": (10, 120)}
        if self.label_selector:
            kwargs["label_selector"] = self.label_selector
        if self.field_selector:
            kwargs["field_selector"] = self.field_selector
        if limit:
            kwargs["limit"] = limit
        if token:
            kwargs["_continue"] = token
        if self.inflight is not None:
            self.inflight.acquire()
        try:
            resp = call(**kwargs)
            try:
                body = json.loads(resp.data)
            finally:
                resp.release_conn()
        finally:
            if self.inflight is not None:
                self.inflight.release()
        if not isinstance(body, dict):
            raise ValueError(f"list response is a JSON {type(body).__name__}, not an object")
        return body

    def _watch(self, call: Callable[..., Any], rv: str) -> tuple[str, int]:
        """Stream events until the server ends the watch; returns the resourceVersion to
        resume from and how many events arrived."""
        self._before_request()
        timeout = self.watch_timeout + random.randint(0, self.watch_timeout)
        kwargs: dict[str, Any] = {
            "watch": True, "resource_version": rv, "allow_watch_bookmarks": True,
            "timeout_seconds": timeout, "_preload_content": False,
            "_request_timeout": (10, self.read_timeout),
        }
        if self.label_selector:
            kwargs["label_selector"] = self.label_selector
        if self.field_selector:
            kwargs["field_selector"] = self.field_selector
        resp = call(**kwargs)
        self._response = resp
        seen = 0
        try:
            for line in _lines(resp):
                if self._stop.is_set():
                    break
                rv = self._event(line, rv)
                seen += 1
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                resp.release_conn()
        return rv, seen

    def _event(self, line: bytes, rv: str) -> str:
        try:
            event = json.loads(line)
            etype = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError):
            raise ConnectionError("malformed watch event") from None
        metrics.watch_events.labels(self.resource, etype).inc()
        if etype == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise Gone()
            raise ConnectionError(f"watch error: {obj.get('message') if isinstance(obj, dict) else obj}")
        new_rv = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or rv)
        if etype in ("ADDED", "MODIFIED", "DELETED"):
            self.sink(self.resource, "event", (etype, self.convert(obj)))
        self.resource_version = new_rv
        return new_rv


def _lines(resp: Any) -> Any:
    """Complete newline-terminated lines of a streaming response."""
    buf = b""
    for chunk in resp.stream(65536, decode_content=True):
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1 :]
            if line.strip():
                yield line
    if buf.strip():
        # The stream ended inside a line (cut mid-JSON): what we got cannot be trusted.
        raise ConnectionError("watch stream ended mid-event")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
