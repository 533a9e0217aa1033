"""Every metric dnsd exports, with CoreDNS's names, types, labels and buckets.

One process-wide registry; the ``prometheus`` plugin serves it.  Plugins update these objects
directly; nothing here is on the query path unless the plugin that owns the metric is used.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from dnsd import COREDNS_COMPAT, __version__

disable_created_metrics()  # CoreDNS exposes no *_created series
REGISTRY = CollectorRegistry(auto_describe=True)

# CoreDNS's buckets (plugin/metrics/vars and plugin/pkg/...).
TIME_BUCKETS = tuple(0.00025 * 2**i for i in range(16))  # 0.25ms .. ~8s
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000)
PROGRAMMING_BUCKETS = tuple(0.001 * 2**i for i in range(20))  # 1ms .. ~524s

# --- server (plugin/metrics) ---
build_info = Gauge("coredns_build_info", "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
                   ["version", "revision", "goversion"], registry=REGISTRY)
build_info.labels(COREDNS_COMPAT, f"dnsd-{__version__}", f"python{platform.python_version()}").set(1)
panics = Counter("coredns_panics", "A metrics that counts the number of panics.", registry=REGISTRY)
plugin_enabled = Gauge("coredns_plugin_enabled", "A metric that indicates whether a plugin is enabled on per server and zone basis.",
                       ["server", "zone", "view", "name"], registry=REGISTRY)

# --- cache ---
cache_entries = Gauge("coredns_cache_entries", "The number of elements in the cache.",
                      ["server", "type", "zones", "view"], registry=REGISTRY)
cache_hits = Counter("coredns_cache_hits", "The count of cache hits.",
                     ["server", "type", "zones", "view"], registry=REGISTRY)
cache_misses = Counter("coredns_cache_misses", "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
                       ["server", "zones", "view"], registry=REGISTRY)
cache_requests = Counter("coredns_cache_requests", "The count of cache requests.",
                         ["server", "zones", "view"], registry=REGISTRY)
cache_prefetch = Counter("coredns_cache_prefetch", "The number of times the cache has prefetched a cached item.",
                         ["server", "zones", "view"], registry=REGISTRY)
cache_drops = Counter("coredns_cache_drops", "The number responses that are not cached, because the reply is malformed.",
                      ["server", "zones", "view"], registry=REGISTRY)
cache_served_stale = Counter("coredns_cache_served_stale", "The number of requests served from stale cache entries.",
                             ["server", "zones", "view"], registry=REGISTRY)
cache_evictions = Counter("coredns_cache_evictions", "The count of cache evictions.",
                          ["server", "type", "zones", "view"], registry=REGISTRY)

# --- forward / proxy ---
forward_healthcheck_broken = Counter("coredns_forward_healthcheck_broken", "Counter of the number of complete failures of the healthchecks.",
                                     registry=REGISTRY)
forward_max_concurrent_rejects = Counter("coredns_forward_max_concurrent_rejects", "Counter of the number of queries rejected because the concurrent queries were at maximum.",
                                         registry=REGISTRY)
proxy_request_duration = Histogram("coredns_proxy_request_duration_seconds", "Histogram of the time each request took.",
                                   ["proxy_name", "to", "rcode"], buckets=TIME_BUCKETS, registry=REGISTRY)
proxy_healthcheck_failures = Counter("coredns_proxy_healthcheck_failures", "Counter of the number of failed healthchecks.",
                                     ["proxy_name", "to"], registry=REGISTRY)
proxy_conn_cache_hits = Counter("coredns_proxy_conn_cache_hits", "Counter of connection cache hits per upstream and protocol.",
                                ["proxy_name", "to", "proto"], registry=REGISTRY)
proxy_conn_cache_misses = Counter("coredns_proxy_conn_cache_misses", "Counter of connection cache misses per upstream and protocol.",
                                  ["proxy_name", "to", "proto"], registry=REGISTRY)

# --- kubernetes ---
dns_programming_duration = Histogram("coredns_kubernetes_dns_programming_duration_seconds", "Histogram of the time (in seconds) it took to program a dns instance.",
                                     ["service_kind"], buckets=PROGRAMMING_BUCKETS, registry=REGISTRY)
secondary_annotation_errors = Counter("dnsd_secondary_annotation_errors", "Pod network-status annotations that could not be used, by reason.",
                                      ["reason"], registry=REGISTRY)
watch_events = Counter("dnsd_kubernetes_watch_events", "Watch events received from the API server.",
                       ["resource", "type"], registry=REGISTRY)
relists = Counter("dnsd_kubernetes_relists", "Full lists of a resource (start-up, 410 Gone, errors).",
                  ["resource", "reason"], registry=REGISTRY)
watch_errors = Counter("dnsd_kubernetes_watch_errors", "Failed list or watch requests to the API server.",
                       ["resource"], registry=REGISTRY)

# --- others ---
health_request_duration = Histogram("coredns_health_request_duration_seconds", "Histogram of the time (in seconds) each request took.",
                                    buckets=TIME_BUCKETS, registry=REGISTRY)
health_request_failures = Counter("coredns_health_request_failures", "The number of times the health check failed.", registry=REGISTRY)
reload_failed = Counter("coredns_reload_failed", "Counter of the number of failed reload attempts.", registry=REGISTRY)
reload_version_info = Gauge("coredns_reload_version_info", "A metric with a constant '1' value labeled by hash, and value which type of hash generated.",
                            ["hash", "value"], registry=REGISTRY)
hosts_entries = Gauge("coredns_hosts_entries", "The combined number of entries in hosts and Corefile.", registry=REGISTRY)
hosts_reload_timestamp = Gauge("coredns_hosts_reload_timestamp_seconds", "The timestamp of the last reload of hosts file.", registry=REGISTRY)
autopath_success = Counter("coredns_autopath_success", "Counter of requests that did autopath.", ["server"], registry=REGISTRY)


# --- the per-query server metrics, counted in plain dicts -----------------------------------
# Updating prometheus_client objects costs microseconds per call; the query path instead bumps
# dictionary entries and this collector turns them into CoreDNS's families at scrape time.

import weakref  # noqa: E402
from bisect import bisect_left  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

# CoreDNS's monitored types (plugin/metrics/vars/monitor.go); any other type is "other".
COMMON_TYPES = frozenset({
    "A", "AAAA", "AXFR", "ANY", "CNAME", "DNSKEY", "DS", "HTTPS", "IXFR", "MX", "NS", "NSEC",
    "NSEC3", "PTR", "RRSIG", "SOA", "SRV", "TXT",
})


class _Hist:
    __slots__ = ("counts", "total")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.total = 0.0


class QueryStats(Collector):
    """coredns_dns_* request/response families, filled by the prometheus plugin."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.do: dict[tuple[str, str], int] = {}
        self.responses: dict[tuple[str, str, str, str], int] = {}
        self.duration: dict[tuple[str, str], _Hist] = {}
        self.req_size: dict[tuple[str, str, str], _Hist] = {}
        self.resp_size: dict[tuple[str, str, str], _Hist] = {}
        # Prepared-answer stores whose hit counts are folded in before each scrape.
        self.sources: weakref.WeakSet[Any] = weakref.WeakSet()
        self._replayers: dict[tuple[Any, ...], Callable[[int, int, float], None]] = {}
        self._pending: dict[tuple[Any, ...], list[Any]] = {}  # see observe

    def observe(self, server: str, zone: str, proto: str, family: str, qtype: str, do: bool,
                rcode: str, plugin: str, seconds: float, qsize: int, rsize: int) -> None:
        """Count one query.  Queries alike in every label, size and duration bucket are
        counted together in ``_pending`` and folded into the families before they are read
        (``fold``): one dictionary update per query instead of six."""
        k = (server, zone, proto, family, qtype, do, rcode, plugin, qsize, rsize,
             bisect_left(TIME_BUCKETS, seconds))
        pending = self._pending
        v = pending.get(k)
        if v is None:
            if len(pending) >= MAX_PENDING:
                self.fold()
            self._pending[k] = [1, seconds]
        else:
            v[0] += 1
            v[1] += seconds

    def fold(self) -> None:
        """Move the pending counts into the families (before every read: ``collect``)."""
        pending, self._pending = self._pending, {}
        requests, dos, responses = self.requests, self.do, self.responses
        for (server, zone, proto, family, qtype, do, rcode, plugin, qsize, rsize, bucket), (n, seconds) \
                in pending.items():
            if qtype not in COMMON_TYPES:
                qtype = "other"
            k = (server, zone, proto, family, qtype)
            requests[k] = requests.get(k, 0) + n
            if do:
                dos[(server, zone)] = dos.get((server, zone), 0) + n
            r = (server, zone, rcode, plugin)
            responses[r] = responses.get(r, 0) + n
            h = _cell(self.duration, (server, zone), TIME_BUCKETS)
            h.counts[bucket] += n
            h.total += seconds
            h = _cell(self.req_size, (server, zone, proto), SIZE_BUCKETS)
            h.counts[bisect_left(SIZE_BUCKETS, qsize)] += n
            h.total += qsize * n
            h = _cell(self.resp_size, (server, zone, proto), SIZE_BUCKETS)
            h.counts[bisect_left(SIZE_BUCKETS, rsize)] += n
            h.total += rsize * n

    def replayer(self, server: str, zone: str, proto: str, qtype: str, do: bool, rcode: str,
                 plugin: str, qsize: int, rsize: int) -> Callable[[int, int, float], None]:
        """``observe`` for batches of hot-path hits of one prepared reply: every label fixed
        but the client's family; the keys and histogram cells are looked up once, here.  The
        batch's duration goes to the bucket of its average (hits take microseconds).

        Prepared replies with the same labels and sizes share one (they only add to the same
        cells): a closure per reply would cost ~0.5 KiB each, 50,000 of them in a full store."""
        if qtype not in COMMON_TYPES:
            qtype = "other"
        memo_key = (server, zone, proto, qtype, do, rcode, plugin, qsize, rsize)
        shared = self._replayers.get(memo_key)
        if shared is not None:
            return shared
        if len(self._replayers) >= 4096:
            self._replayers.clear()
        requests, key4, key6 = self.requests, (server, zone, proto, "1", qtype), (server, zone, proto, "2", qtype)
        rkey = (server, zone, rcode, plugin)
        self.responses.setdefault(rkey, 0)
        responses = self.responses
        do_key = (server, zone)
        dos = self.do
        dur = _cell(self.duration, (server, zone), TIME_BUCKETS)
        qsz = _cell(self.req_size, (server, zone, proto), SIZE_BUCKETS)
        rsz = _cell(self.resp_size, (server, zone, proto), SIZE_BUCKETS)
        qbucket = bisect_left(SIZE_BUCKETS, qsize)
        rbucket = bisect_left(SIZE_BUCKETS, rsize)

        def on_hits(hits4: int, hits6: int, seconds: float) -> None:
            n = hits4 + hits6
            if hits4:
                requests[key4] = requests.get(key4, 0) + hits4
            if hits6:
                requests[key6] = requests.get(key6, 0) + hits6
            responses[rkey] += n
            if do:
                dos[do_key] = dos.get(do_key, 0) + n
            dur.counts[bisect_left(TIME_BUCKETS, seconds / n)] += n
            dur.total += seconds
            qsz.counts[qbucket] += n
            qsz.total += qsize * n
            rsz.counts[rbucket] += n
            rsz.total += rsize * n

        self._replayers[memo_key] = on_hits
        return on_hits

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        self.fold()
        c = CounterMetricFamily("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
                                labels=["server", "zone", "view", "proto", "family", "type"])
        for (server, zone, proto, family, qtype), n in list(self.requests.items()):
            c.add_metric([server, zone, "", proto, family, qtype], n)
        yield c
        c = CounterMetricFamily("coredns_dns_do_requests", "Counter of DNS requests with DO bit set per zone.",
                                labels=["server", "zone", "view"])
        for (server, zone), n in list(self.do.items()):
            c.add_metric([server, zone, ""], n)
        yield c
        c = CounterMetricFamily("coredns_dns_responses", "Counter of response status codes.",
                                labels=["server", "zone", "view", "rcode", "plugin"])
        for (server, zone, rcode, plugin), n in list(self.responses.items()):
            c.add_metric([server, zone, "", rcode, plugin], n)
        yield c
        yield _family("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took per zone.",
                      ["server", "zone", "view"], self.duration, TIME_BUCKETS, lambda k: [k[0], k[1], ""])
        yield _family("coredns_dns_request_size_bytes", "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
                      ["server", "zone", "view", "proto"], self.req_size, SIZE_BUCKETS, lambda k: [k[0], k[1], "", k[2]])
        yield _family("coredns_dns_response_size_bytes", "Size of the returned response in bytes.",
                      ["server", "zone", "view", "proto"], self.resp_size, SIZE_BUCKETS, lambda k: [k[0], k[1], "", k[2]])


def _cell(table: dict, key: tuple, buckets: tuple) -> _Hist:  # type: ignore[type-arg]
    h = table.get(key)
    if h is None:
        h = table[key] = _Hist(len(buckets))
    return h  # type: ignore[no-any-return]


def _family(name: str, doc: str, labels: list[str], table: dict, buckets: tuple,  # type: ignore[type-arg]
            values: object) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, h in list(table.items()):
        running, points = 0, []
        for bound, n in zip(buckets, h.counts, strict=False):
            running += n
            points.append((_bound(bound), running))
        running += h.counts[-1]
        points.append(("+Inf", running))
        fam.add_metric(values(key), points, h.total)  # type: ignore[operator]
    return fam


def _bound(value: float) -> str:
    return repr(float(value))


MAX_PENDING = 4096  # distinct pending kinds of query before observe folds them in

QUERY_STATS = QueryStats()
REGISTRY.register(QUERY_STATS)


def flush_hot_path() -> None:
    """Fold the hot path's pending hit counts into every metric (call before a scrape)."""
    for source in list(QUERY_STATS.sources):
        source.flush_all()
