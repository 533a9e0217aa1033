"""Object store: objects, the global resourceVersion, event history and watchers.

Stored objects are never mutated after being committed, so events, lists and
watch streams can share them; callers that hand objects out to user code copy them.
"""

from __future__ import annotations

import base64
import copy
import json
import queue
import random
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from .alloc import Allocator
from .errors import ApiError, already_exists, conflict, expired, invalid, not_found
from .patch import json_patch, merge_patch
from .resources import (
    PREPARE,
    RESOURCES,
    ResourceType,
    check_body,
    release_service,
    validate_metadata,
)
from .selectors import FieldSelector, LabelSelector

Obj = dict[str, Any]
Key = tuple[str, str]

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

# Control messages pushed into watcher queues by fault injection and shutdown.
CUT, CUT_MID_JSON, EXPIRE, STOP = "cut", "cut-mid-json", "expire", "stop"

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SNAPSHOTS = 64


@dataclass(frozen=True)
class Event:
    """One committed change. `obj` is the new state (for DELETED the last state)."""

    rv: int
    type: str
    resource: str
    obj: Obj
    old: Obj | None


def _with_rv(obj: Obj, rv: int) -> Obj:
    out = dict(obj)
    out["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
    return out


class Watcher:
    """An open watch: a queue of events/control messages plus its filter."""

    def __init__(
        self, rt: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: queue.SimpleQueue[Event | str] = queue.SimpleQueue()

    def matches(self, obj: Obj) -> bool:
        """Whether `obj` is inside this watch's namespace and selectors."""
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def translate(self, ev: Event) -> tuple[str, Obj] | None:
        """The event this watcher should see for `ev`, if any.

        An object that stops matching the selectors is reported as DELETED
        (its previous state at the new resourceVersion), one that starts matching as ADDED.
        """
        now = self.matches(ev.obj)
        if ev.type != MODIFIED:
            return (ev.type, ev.obj) if now else None
        before = ev.old is not None and self.matches(ev.old)
        if before and now:
            return MODIFIED, ev.obj
        if now:
            return ADDED, ev.obj
        if before and ev.old is not None:
            return DELETED, _with_rv(ev.old, ev.rv)
        return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Thread-safe object store with a single resourceVersion counter."""

    def __init__(self, allocator: Allocator, history: int = 1000) -> None:
        self.lock = threading.RLock()
        self.allocator = allocator
        self.objects: dict[str, dict[Key, Obj]] = {name: {} for name in RESOURCES}
        self.rv = 0
        self.history_size = max(0, history)
        self.history: deque[Event] = deque()
        self.floor = 0
        self.watchers: set[Watcher] = set()
        self._snapshots: OrderedDict[str, tuple[int, list[Obj]]] = OrderedDict()
        self._watchers_changed = threading.Condition(self.lock)

    # ----- reads -------------------------------------------------------------------------

    @staticmethod
    def key(rt: ResourceType, namespace: str | None, name: str) -> Key:
        """Storage key of an object."""
        return ((namespace or "") if rt.namespaced else "", name)

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        """The stored object or ApiError(404)."""
        with self.lock:
            obj = self.objects[rt.name].get(self.key(rt, namespace, name))
        if obj is None:
            raise not_found(rt.name, name, rt.group)
        return obj

    def select(
        self, rt: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> list[Obj]:
        """Matching objects sorted by namespace and name."""
        with self.lock:
            items = list(self.objects[rt.name].items())
        items.sort(key=lambda kv: kv[0])
        out = []
        for (ns, _), obj in items:
            if namespace is not None and rt.namespaced and ns != namespace:
                continue
            meta = obj["metadata"]
            if labels.matches(meta.get("labels")) and fields.matches(obj):
                out.append(obj)
        return out

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], int, str, int | None]:
        """A page of matching objects: `(items, resourceVersion, continue, remaining)`.

        The first request of a paginated list takes a snapshot of every match; its pages and
        the later ones all come from it, so a paginated list is consistent (one
        resourceVersion, no object twice or missing).  A continue token names the snapshot
        and where the next page starts: like the real server's, it can be used again (a
        client retrying a page).  A token of a snapshot that was evicted (the last
        `_SNAPSHOTS` paginated lists are kept) or compacted away is 410 Expired.
        """
        with self.lock:
            start = 0
            if continue_token:
                try:
                    token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                    snap_id, snap_rv = str(token["id"]), int(token["rv"])
                    start = int(token.get("start", 0))
                    if start < 0:
                        raise ValueError("negative start")
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise ApiError(400, f"continue key is not valid: {exc}") from exc
                snap = self._snapshots.get(snap_id)
                if snap is None or snap[0] != snap_rv:
                    raise expired(
                        "The provided continue parameter is too old to display a consistent list "
                        "result. You can start a new list without the continue parameter."
                    )
                self._snapshots.move_to_end(snap_id)
                rv, items = snap
            else:
                rv = self.rv
                items = self.select(rt, namespace, labels, fields)
                snap_id = ""
            end = len(items) if limit <= 0 else start + limit
            page = items[start:end]
            if end >= len(items):
                return page, rv, "", None
            if not snap_id:
                snap_id = uuid.uuid4().hex
                self._snapshots[snap_id] = (rv, items)
                while len(self._snapshots) > _SNAPSHOTS:
                    self._snapshots.popitem(last=False)
            token_text = json.dumps({"rv": rv, "id": snap_id, "start": end}).encode()
            return page, rv, base64.urlsafe_b64encode(token_text).decode(), len(items) - end

    # ----- writes ------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, etype: str, key: Key, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj = _with_rv(obj, self.rv)
        if etype == DELETED:
            self.objects[rt.name].pop(key, None)
        else:
            self.objects[rt.name][key] = obj
        event = Event(self.rv, etype, rt.name, obj, old)
        if self.history_size == 0:
            self.floor = self.rv
        else:
            if len(self.history) >= self.history_size:
                self.floor = self.history.popleft().rv
            self.history.append(event)
        for watcher in self.watchers:
            if watcher.rt.name == rt.name:
                watcher.queue.put(event)
        return obj

    def _normalise(
        self, rt: ResourceType, body: Any, namespace: str | None, name: str | None
    ) -> Obj:
        obj = copy.deepcopy(check_body(rt, body))
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if name is not None:
            if meta.get("name") and meta["name"] != name:
                raise ApiError(
                    400,
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})",
                )
            meta["name"] = name
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and ("", namespace) not in self.objects["namespaces"]:
            raise not_found("namespaces", namespace)

    def create(self, rt: ResourceType, namespace: str | None, body: Any) -> Obj:
        """POST: store a new object (409 if it exists, 404 if its namespace does not)."""
        obj = self._normalise(rt, body, namespace, None)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
        if not meta.get("name"):
            raise invalid(
                rt.kind,
                "",
                [("metadata.name", "Required value: name or generateName is required")],
                rt.group,
            )
        with self.lock:
            return self._create_locked(rt, obj)

    def _create_locked(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = self.key(rt, meta.get("namespace"), meta["name"])
        self._check_namespace(rt, key[0])
        if key in self.objects[rt.name]:
            raise already_exists(rt.name, meta["name"], rt.group)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        validate_metadata(rt, obj)
        PREPARE[rt.name](obj, None, self.allocator)
        return self._commit(rt, ADDED, key, obj, None)

    def update(
        self, rt: ResourceType, namespace: str | None, name: str, body: Any, force: bool = False
    ) -> Obj:
        """PUT: replace an object; a stale `metadata.resourceVersion` is 409 unless `force`."""
        obj = self._normalise(rt, body, namespace, name)
        with self.lock:
            old = self.objects[rt.name].get(self.key(rt, namespace, name))
            if old is None:
                if rt.create_on_update or force:
                    return self._create_locked(rt, obj)
                raise not_found(rt.name, name, rt.group)
            return self._update_locked(rt, obj, old, force)

    def _update_locked(self, rt: ResourceType, obj: Obj, old: Obj, force: bool) -> Obj:
        meta = obj["metadata"]
        old_meta = old["metadata"]
        wanted = meta.get("resourceVersion")
        if wanted and not force and wanted != old_meta["resourceVersion"]:
            raise conflict(rt.name, meta["name"], rt.group)
        meta["uid"] = old_meta["uid"]
        meta["creationTimestamp"] = old_meta["creationTimestamp"]
        meta["resourceVersion"] = old_meta["resourceVersion"]
        validate_metadata(rt, obj)
        PREPARE[rt.name](obj, old, self.allocator)
        if obj == old:
            return old  # a no-op update does not bump the resourceVersion
        key = self.key(rt, meta.get("namespace"), meta["name"])
        return self._commit(rt, MODIFIED, key, obj, old)

    def patch(
        self, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: bytes
    ) -> Obj:
        """PATCH with merge, strategic-merge (treated as merge), JSON patch or apply (YAML merge)."""
        ctype = content_type.split(";")[0].strip().lower()
        try:
            if ctype == "application/apply-patch+yaml":
                doc = yaml.safe_load(body.decode() or "{}")
            else:
                doc = json.loads(body.decode() or "null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"error decoding patch: {exc}") from exc
        with self.lock:
            old = self.objects[rt.name].get(self.key(rt, namespace, name))
            if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if old is None:
                    raise not_found(rt.name, name, rt.group)
                if not isinstance(doc, dict):
                    raise ApiError(400, "merge patch body must be a JSON object")
                new = merge_patch(old, doc)
            elif ctype == "application/json-patch+json":
                if old is None:
                    raise not_found(rt.name, name, rt.group)
                new = json_patch(old, doc)
            elif ctype == "application/apply-patch+yaml":
                if not isinstance(doc, dict):
                    raise ApiError(400, "apply patch body must be an object")
                if old is None:
                    obj = self._normalise(rt, doc, namespace, name)
                    return self._create_locked(rt, obj)
                new = merge_patch(old, doc)
            else:
                raise ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ctype!r}",
                )
            obj = self._normalise(rt, new, namespace, name)
            return self._update_locked(rt, obj, old, force=False)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        preconditions: dict[str, Any] | None = None,
    ) -> Obj:
        """DELETE an object (a Namespace takes its contents with it); returns the last state."""
        with self.lock:
            key = self.key(rt, namespace, name)
            old = self.objects[rt.name].get(key)
            if old is None:
                raise not_found(rt.name, name, rt.group)
            pre = preconditions or {}
            if (
                pre.get("resourceVersion")
                and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
            ):
                raise conflict(rt.name, name, rt.group)
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise conflict(rt.name, name, rt.group)
            if rt.name == "namespaces":
                for other in RESOURCES.values():
                    if other.namespaced:
                        for okey in [k for k in self.objects[other.name] if k[0] == name]:
                            self._delete_locked(other, okey)
            return self._delete_locked(rt, key)

    def _delete_locked(self, rt: ResourceType, key: Key) -> Obj:
        old = self.objects[rt.name][key]
        if rt.name == "services":
            release_service(old, self.allocator)
        return self._commit(rt, DELETED, key, old, old)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> list[Obj]:
        """DELETE on a collection: remove every matching object."""
        with self.lock:
            victims = self.select(rt, namespace, labels, fields)
            return [
                self.delete(rt, v["metadata"].get("namespace"), v["metadata"]["name"])
                for v in victims
            ]

    # ----- watch -------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        resource_version: str | None,
        initial: bool,
    ) -> tuple[Watcher, list[tuple[str, Obj]], int]:
        """Register a watcher; returns it, the events to send before live ones and the current RV.

        `initial` (or an unset / "0" resourceVersion) yields synthetic ADDED events for the
        current objects; otherwise history after `resource_version` is replayed, or 410
        Expired is raised when that version is older than the retained window.
        """
        with self.lock:
            watcher = Watcher(rt, namespace if rt.namespaced else None, labels, fields)
            first: list[tuple[str, Obj]] = []
            if initial or resource_version in (None, "", "0"):
                first = [(ADDED, o) for o in self.select(rt, namespace, labels, fields)]
            else:
                try:
                    since = int(resource_version or "")
                except ValueError as exc:
                    raise ApiError(400, f"invalid resource version: {resource_version!r}") from exc
                if since < self.floor:
                    raise expired(f"too old resource version: {since} ({self.floor})")
                for ev in self.history:
                    if ev.rv > since and ev.resource == rt.name:
                        shown = watcher.translate(ev)
                        if shown is not None:
                            first.append(shown)
            self.watchers.add(watcher)
            self._watchers_changed.notify_all()
            return watcher, first, self.rv

    def unwatch(self, watcher: Watcher) -> None:
        """Forget a watcher."""
        with self.lock:
            self.watchers.discard(watcher)
            self._watchers_changed.notify_all()

    def wait_for_watchers(self, count: int, timeout: float) -> bool:
        """Block until at least `count` watches are open."""
        with self._watchers_changed:
            return self._watchers_changed.wait_for(lambda: len(self.watchers) >= count, timeout)

    def broadcast(self, control: str) -> int:
        """Push a control message to every open watcher; returns how many."""
        with self.lock:
            for watcher in self.watchers:
                watcher.queue.put(control)
            return len(self.watchers)

    def drained_rv(self, watcher: Watcher) -> int | None:
        """Current resourceVersion if `watcher` has consumed every event (for bookmarks)."""
        with self.lock:
            return self.rv if watcher.queue.empty() else None

    def compact(self) -> None:
        """Forget history: every resourceVersion before now becomes 410 Expired."""
        with self.lock:
            self.history.clear()
            self.floor = self.rv
            self._snapshots.clear()
