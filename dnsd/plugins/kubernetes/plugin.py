"""The ``kubernetes`` plugin: watches the API and answers the cluster zones.

Setup syntax is in ``setup.py``; the answer rules are in ``answer.py`` (pure); the watching is
in ``reflector.py`` (threads) feeding ``index.py`` (event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from dnslib import QTYPE, RCODE, DNSRecord

from dnsd import __version__, memos
from dnsd.chain import DirectAnswer, Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.plugins.kubernetes import objects
from dnsd.plugins.kubernetes.answer import REFUSED, T_SOA, Options, answer
from dnsd.plugins.kubernetes.index import Index
from dnsd.plugins.kubernetes.reflector import ApiCall, RateLimiter, Reflector
from dnsd.plugins.kubernetes.setup import Config, parse_config
from dnsd.request import Request, make_reply
from dnsd.wire import express
from dnsd.wire.light import Rec, to_rr

log = logging.getLogger("dnsd")

# Record types whose rdata names must not be re-spelled by the hot path (see serve()).
_SPELLING_RDATA = frozenset((int(QTYPE.SRV), int(QTYPE.CNAME)))
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
CHASE_DEPTH = "kubernetes.chase"


def make_api_client(cfg: Config) -> Any:
    """A kubernetes ApiClient for the configured endpoint, kubeconfig or in-cluster account."""
    from kubernetes import client, config

    conf = client.Configuration()
    if cfg.kubeconfig:
        config.load_kube_config(config_file=cfg.kubeconfig, context=cfg.context or None,
                                client_configuration=conf)
    elif cfg.endpoint:
        conf.host = cfg.endpoint.rstrip("/")
        if cfg.tls:
            conf.cert_file, conf.key_file, conf.ssl_ca_cert = cfg.tls
    else:
        try:
            config.load_incluster_config(client_configuration=conf)
        except config.ConfigException as exc:
            raise RuntimeError(
                f"plugin/kubernetes: no 'endpoint' or 'kubeconfig' set and not running in a cluster: {exc}"
            ) from None
    conf.connection_pool_maxsize = 8
    api = client.ApiClient(conf)
    api.user_agent = f"dnsd/{__version__}"
    return api


def resolv_search(path: str) -> list[str]:
    """The search domains of a resolv.conf (the last ``search`` line wins), fully qualified."""
    domains: list[str] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("search", "domain"):
                    domains = [d.lower().rstrip(".") + "." for d in parts[1:] if d != "."]
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return []
    return domains


def local_addresses(hosts: list[str] | None) -> tuple[str, ...]:
    """This server's non-loopback addresses: the bind addresses, else every interface's."""
    from dnsd.plugins.bind import interface_addresses

    if hosts and any(h for h in hosts):
        candidates = [h for h in hosts if h]
    else:
        candidates = []
        for _, name in socket.if_nameindex():
            candidates.extend(interface_addresses(name))
    out = []
    for ip in candidates:
        if ip.startswith("127.") or ip == "::1" or ip in ("0.0.0.0", "::"):
            continue
        out.append(ip)
    return tuple(dict.fromkeys(out))


class Plugin(Base):
    name: ClassVar[str] = "kubernetes"
    reports_readiness: ClassVar[bool] = True

    def __init__(self, cfg: Config, ctx: SetupContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.zones = sorted(cfg.zones, key=len, reverse=True)
        self._dotted = [(z, "." + z) for z in self.zones]  # (zone_for: no concatenation per query)
        self._soas: dict[tuple[str, int], Rec] = {}  # soa(): by (zone as spelled, serial)
        self.index = Index(endpoint_pod_names=cfg.endpoint_pod_names)
        self.index.listeners.append(express.changed)  # (prepared replies' express lane)
        self.opts = Options(
            primary_zone=cfg.primary_zone, ttl=cfg.ttl, pods=cfg.pods,
            namespaces=frozenset(cfg.namespaces), ignore_empty_service=cfg.ignore_empty_service,
            noendpoints=cfg.noendpoints,
        )
        self.secondary: Any = None
        if cfg.secondary is not None:
            from dnsd.plugins.kubernetes.secondary import Secondary

            self.secondary = Secondary(cfg.secondary, self.index, self.opts)
        self.reflectors: list[Reflector] = []
        self._pending: set[str] = set()  # resources whose first list has not reached the index
        self._loop: asyncio.AbstractEventLoop | None = None
        self.endpoints_api = "discovery.k8s.io/v1"
        self.started_at = 0.0
        self.host_search = resolv_search("/etc/resolv.conf")

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        return cls(parse_config(directives[0], ctx.zones), ctx)

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        bind = self.ctx.plugins.get("bind")
        self.opts.local_ips = local_addresses(getattr(bind, "hosts", None))
        api = await self._loop.run_in_executor(None, make_api_client, self.cfg)
        self._make_reflectors(api)
        # The first lists create most of the heap at once; automatic full collections in
        # between would walk it again and again (measured: ~0.7 s of 10-130 ms pauses with
        # 100k endpoints).  Each big list is collected and frozen once applied (``_apply``).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for r in self.reflectors:
                r.start()
            await self._wait_for_sync()
        finally:
            if collecting:
                _settle()
                gc.enable()

    def _make_reflectors(self, api: Any) -> None:
        cfg = self.cfg
        limiter = RateLimiter(cfg.qps, cfg.burst) if cfg.qps > 0 else None
        inflight = threading.BoundedSemaphore(cfg.max_inflight) if cfg.max_inflight else None
        common: dict[str, Any] = {"limiter": limiter, "inflight": inflight}
        calls = _list_calls(api)

        def add(resource: str, call: Callable[..., Any], convert: Callable[[dict[str, Any]], Any],
                **kw: Any) -> None:
            self._pending.add(resource)
            self.reflectors.append(Reflector(resource, call, convert, self._sink, **common, **kw))

        convert_service = objects.service if self.secondary is None else self.secondary.convert_service
        add("services", calls["services"], convert_service, label_selector=cfg.labels)
        add("namespaces", calls["namespaces"], objects.namespace, label_selector=cfg.namespace_labels)
        if not cfg.noendpoints:
            add("endpoints", self._endpoints_api_picker(api, calls), self._convert_endpoints,
                label_selector=cfg.labels, resolve_call=True)
        if cfg.pods == "verified" or self.secondary is not None:
            convert_pod = objects.pod if self.secondary is None else self.secondary.convert_pod
            add("pods", calls["pods"], convert_pod,
                label_selector=cfg.labels, field_selector=POD_FIELD_SELECTOR)

    def _endpoints_api_picker(self, api: Any, calls: dict[str, Callable[..., Any]]
                              ) -> Callable[[], Callable[..., Any]]:
        """Discovery, run in the reflector thread: EndpointSlices if served, else Endpoints."""

        def pick() -> Callable[..., Any]:
            if _serves_discovery_v1(api, calls):
                self.endpoints_api = "discovery.k8s.io/v1"
                return calls["endpointslices"]
            self.endpoints_api = "v1/endpoints"
            log.warning("[WARNING] plugin/kubernetes: discovery.k8s.io/v1 is not served; "
                        "falling back to core/v1 Endpoints")
            return calls["endpoints"]

        return pick

    def _convert_endpoints(self, obj: dict[str, Any]) -> Any:
        # Endpoints' pod names are read only for endpoint_pod_names and secondary networks.
        keep_pods = self.cfg.endpoint_pod_names or self.secondary is not None
        if self.endpoints_api == "v1/endpoints":
            return objects.endpoints_object(obj, keep_pods)
        return objects.endpoint_slice(obj, keep_pods)

    async def _wait_for_sync(self) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout
        while not self.synced() and time.monotonic() < deadline:
            log.info("[INFO] plugin/kubernetes: waiting for Kubernetes API before starting server")
            await asyncio.sleep(min(0.5, max(0.01, deadline - time.monotonic())))
            if self.synced():
                break
        if not self.synced():
            log.warning("[WARNING] plugin/kubernetes: starting server with unsynced Kubernetes API")

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        reflectors, self.reflectors = self.reflectors, []
        if reflectors:
            await loop.run_in_executor(None, lambda: [r.stop() for r in reflectors])

    # --- events (posted from reflector threads) ----------------------------------------------
    def _sink(self, resource: str, op: str, payload: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed while stopping
            loop.call_soon_threadsafe(self._apply, resource, op, payload)

    def _apply(self, resource: str, op: str, payload: Any) -> None:
        ix = self.index
        kind = "endpointslices" if resource == "endpoints" else resource
        if op == "replace":
            ix.replace(kind, payload)
            self._pending.discard(resource)
            memos.fit(len(ix.services) + len(ix.endpoint_owners) + len(ix.pods))
            if len(payload) > 1000 and gc.isenabled():  # (at start-up: once, after the sync)
                _settle()
            return
        etype, obj = payload
        if kind == "services":
            ix.delete_service(obj.key) if etype == "DELETED" else ix.set_service(obj)
        elif kind == "endpointslices":
            if etype == "DELETED":
                ix.delete_slice(obj.key)
            else:
                ix.set_slice(obj)
                _observe_programming(obj, ix)
        elif kind == "pods":
            ix.delete_pod(obj.key) if etype == "DELETED" else ix.set_pod(obj)
        elif kind == "namespaces":
            ix.delete_namespace(obj.key) if etype == "DELETED" else ix.set_namespace(obj)

    def autopath_search(self, client_ip: str) -> list[str] | None:
        """The search path of the pod at ``client_ip`` (``pods verified`` only), as CoreDNS
        builds it: <podns>.svc.<zone>, svc.<zone>, <zone>, this server's own resolv.conf
        search domains, then the bare name (""); None when the client is not a known pod."""
        if self.cfg.pods != "verified":
            return None
        namespaces = self.index.pod_namespaces.get(client_ip)
        if not namespaces:
            return None
        ns = next(iter(namespaces))
        zone = self.cfg.primary_zone
        return [f"{ns}.svc.{zone}", f"svc.{zone}", zone, *self.host_search, ""]

    def synced(self) -> bool:
        return bool(self.reflectors) and not self._pending

    def ready(self) -> bool:
        return self.synced()

    # --- queries -----------------------------------------------------------------------------
    def zone_for(self, qname_lower: str) -> str | None:
        for zone, dotted in self._dotted:
            if zone == "." or qname_lower == zone or qname_lower.endswith(dotted):
                return zone
        return None

    def _falls_through(self, qname_lower: str) -> bool:
        ft = self.cfg.fallthrough
        if ft is None:
            return False
        return not ft or any(z == "." or qname_lower == z or qname_lower.endswith("." + z) for z in ft)

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        zone = self.zone_for(req.qname_lower)
        if zone is None:
            return await next_(req)
        res = answer(self.index, self.opts, req.qname, req.qtype, zone)
        if res.rcode == REFUSED:
            return make_reply(req, rcode=RCODE.REFUSED, aa=False)
        if res.name_error and self._falls_through(req.qname_lower):
            return await next_(req)
        rcode = res.rcode
        if res.name_error and not self.synced():
            rcode = RCODE.SERVFAIL
        reply = make_reply(req, rcode=rcode)
        answers = [to_rr(rec) for rec in res.answer]
        if res.chase:
            chased = await self._chase(req, res.chase)
            if chased is None:
                answers, res.soa = [], True  # the target failed: drop the CNAME
            else:
                answers += chased.rr
                if chased.header.tc:
                    reply.header.tc = 1
        zone_spelled = req.qname[len(req.qname) - len(zone):] if zone != "." else "."
        # (dnslib's add_answer recounts the header per record: extend, count once)
        if res.soa_answer:
            reply.rr.append(to_rr(self.soa(zone_spelled)))
        reply.rr.extend(answers)
        reply.ar.extend(to_rr(rec) for rec in res.additional)
        if res.soa or (not answers and not res.soa_answer):
            reply.auth.append(to_rr(self.soa(zone_spelled)))
        reply.set_header_qa()
        if not res.chase and self.synced():
            # The hot path may reuse this reply until the index changes.  It serves other
            # spellings of the question by patching the question bytes only, so a reply with
            # SRV targets (written uncompressed, yet spelled with the asker's zone, §1 Case) or
            # CNAME targets (compressed against the question, yet spelled as the object has
            # them) is reused only for the very same spelling.
            reply.valid = self._validity(res, bool(reply.auth) or res.soa_answer)  # type: ignore[attr-defined]
            if any(rr.rtype in _SPELLING_RDATA for rr in reply.rr):
                reply.case_sensitive = True  # type: ignore[attr-defined]
        return reply

    direct_role: ClassVar[str] = "answer"

    def direct_answer(self, qname: str, qname_lower: str, qtype: int) -> DirectAnswer | None:
        """``serve``'s reply as its parts, for the engine's direct path; None whenever
        ``serve`` would do anything more than answer from the index (fall through, chase an
        ExternalName, refuse, answer before the first sync)."""
        zone = self.zone_for(qname_lower)
        if zone is None or not self.synced():
            return None
        res = answer(self.index, self.opts, qname, qtype, zone)
        if res.rcode == REFUSED or res.chase:
            return None
        if res.name_error and self._falls_through(qname_lower):
            return None
        zone_spelled = qname[len(qname) - len(zone):] if zone != "." else "."
        answers = [self.soa(zone_spelled), *res.answer] if res.soa_answer else res.answer
        auth = [self.soa(zone_spelled)] if res.soa or not answers else []
        spelled = False
        for rr in answers:  # (a loop: any() over a generator costs twice as much)
            if rr[1] in _SPELLING_RDATA:
                spelled = True
                break
        return DirectAnswer(res.rcode, answers, auth, res.additional,
                            Validity(self.index, res.deps, bool(auth) or res.soa_answer), spelled)

    def _validity(self, res: Any, has_soa: bool) -> Callable[[], bool]:
        """How the hot path tells a reply is still what this plugin would answer: none of
        the index keys it read changed (precise), or, when those are not known, nothing
        changed at all; a reply carrying the SOA also needs the same serial."""
        return Validity(self.index, res.deps, has_soa)

    def soa(self, zone_spelled: str) -> Rec:
        """The zone's SOA record (a light record), owned by the zone as the asker spelled it
        (kept by spelling and serial: every negative answer carries one)."""
        serial = self.index.serial & 0xFFFFFFFF
        key = (zone_spelled, serial)
        rec = self._soas.get(key)
        if rec is None:
            ttl = self.cfg.ttl
            rec = (zone_spelled, T_SOA, min(ttl, 300),
                   (f"ns.dns.{zone_spelled}".replace("..", "."),
                    f"hostmaster.{zone_spelled}".replace("..", "."),
                    (serial, 7200, 1800, 86400, ttl)))
            if len(self._soas) >= 64:  # (spellings are few; serials only go up)
                self._soas.clear()
            self._soas[key] = rec
        return rec

    async def _chase(self, req: Request, target: str) -> DNSRecord | None:
        """Resolve an ExternalName target through the whole server (cache, forward...)."""
        depth = int(req.meta.get(CHASE_DEPTH, 0))
        if depth >= 8 or req.engine is None:
            return None
        sub = req.with_name(target, req.qtype)
        sub.meta = {CHASE_DEPTH: depth + 1}
        sub.on_done = None
        try:
            reply = await req.engine.resolve(sub)
        except Exception:  # noqa: BLE001
            log.exception("[ERROR] plugin/kubernetes: resolving %s", target)
            return None
        if reply is None or reply.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
            return None
        return reply


class Validity:
    """A prepared reply's validity check (a small object: a full store holds 50,000)."""

    __slots__ = ("ix", "version", "epoch", "serial", "deps", "seen")

    def __init__(self, ix: Index, deps: tuple[tuple[str, ...], ...] | None, has_soa: bool) -> None:
        self.ix, self.version, self.epoch, self.deps = ix, ix.version, ix.epoch, deps
        self.serial = ix.serial if has_soa else None
        self.seen = ix.version  # the latest index version this reply was found valid at

    def until_change(self) -> float:
        """(dnsd/wire/express.py) Holds until the index changes: every change is announced."""
        return express.FOREVER

    def __call__(self) -> bool:
        ix = self.ix
        now = ix.version
        if now == self.seen:  # nothing changed since the last check: the common case
            return True
        if self.deps is None:
            return False
        if self.serial is not None and ix.serial != self.serial:
            return False
        if ix.unchanged(self.deps, self.version, self.epoch):
            self.seen = now
            return True
        return False


def _settle() -> None:
    """After a big list: move the many long-lived objects it left out of the cyclic GC's
    reach, or every full collection walks them all (100+ ms pauses with 100k endpoints);
    objects freed later are still freed by reference counting.  Then hand freed memory back."""
    gc.collect()
    gc.freeze()
    release_free_memory()


_malloc_trim: Any = None


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim(0)``), after a big
    list freed its buffers: glibc keeps them otherwise, and the process's RSS with them.
    Harmless anywhere: returns False where the C library has no ``malloc_trim`` (musl,
    macOS) and does nothing there."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        with contextlib.suppress(OSError, AttributeError, TypeError):
            import ctypes

            trim = ctypes.CDLL(None).malloc_trim  # the C library linked into the interpreter
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            _malloc_trim = trim
    if not _malloc_trim:
        return False
    _malloc_trim(0)
    return True


def _list_calls(api: Any) -> dict[str, Callable[..., Any]]:
    """The list/watch calls of each collection dnsd watches.  With a client that has the
    generator's two-step request API, plain ``ApiCall``s (see reflector.py: the generated API
    classes cost ~22 MiB of imports); with an older one, the generated methods."""
    if ApiCall.supported(api):
        return {
            "services": ApiCall(api, "/api/v1/services"),
            "namespaces": ApiCall(api, "/api/v1/namespaces"),
            "pods": ApiCall(api, "/api/v1/pods"),
            "endpoints": ApiCall(api, "/api/v1/endpoints"),
            "endpointslices": ApiCall(api, "/apis/discovery.k8s.io/v1/endpointslices"),
            "apis": ApiCall(api, "/apis"),
        }
    from kubernetes import client

    core = client.CoreV1Api(api)

    def apis(**_: Any) -> Any:
        return client.ApisApi(api).get_api_versions().to_dict()

    return {
        "services": core.list_service_for_all_namespaces,
        "namespaces": core.list_namespace,
        "pods": core.list_pod_for_all_namespaces,
        "endpoints": core.list_endpoints_for_all_namespaces,
        "endpointslices": client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
        "apis": apis,
    }


def _serves_discovery_v1(api: Any, calls: dict[str, Callable[..., Any]]) -> bool:
    """Does the API server serve discovery.k8s.io/v1 (GET /apis)?"""
    doc = calls["apis"](_preload_content=True, _request_timeout=(10, 60))
    groups = doc.get("groups") if isinstance(doc, dict) else None
    for group in groups or []:
        if not isinstance(group, dict) or group.get("name") != "discovery.k8s.io":
            continue
        if any(isinstance(v, dict) and v.get("version") == "v1" for v in group.get("versions") or []):
            return True
    return False


def _observe_programming(sl: objects.Slice, ix: Index) -> None:
    """coredns_kubernetes_dns_programming_duration_seconds from the slice's trigger time."""
    if not sl.trigger_time:
        return
    from datetime import datetime

    from dnsd import metrics

    try:
        then = datetime.fromisoformat(sl.trigger_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return
    view = ix.views.get((sl.namespace, sl.service))
    if view is None:
        return
    kind = "headless_with_selector" if view.headless else "cluster_ip"
    metrics.dns_programming_duration.labels(kind).observe(max(0.0, time.time() - then))


__all__ = ["Plugin", "QTYPE"]
