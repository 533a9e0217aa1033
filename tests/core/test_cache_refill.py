"""The cache's in-place refill (cache.Plugin._refill, engine._refilling): when an entry the
direct path filled expires and the records behind it are unchanged, the prepared reply goes
on as the reply of the miss its expiry causes, instead of that miss being answered afresh.

It must look exactly like the miss: a full TTL again, one cache miss, the response counted as
written by the plugin below the cache; the TTLs then count down again; and a change behind
the entry ends the refills (the next miss is answered afresh, with the new records).

Each test runs a real listener on an engine in an event loop on a thread of this process,
against the API emulator, and asks over real sockets with dnspython.  Entries live 2 s
(kubernetes ``ttl 2``), so each test runs a few seconds.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from k8s_support import endpoint, endpoint_slice, namespace, port, service, start_cluster, wait_for
from loop_support import ServedEngine
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

from dnsd.devcluster import DevCluster

SVC_IP = "10.96.41.10"
OLD_IP = "10.244.9.1"
NEW_IP = "10.244.9.2"
TTL = 2

COREFILE = """\
.:1053 {{
    prometheus 127.0.0.1:{MPORT}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint {API}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl {TTL}
    }}
    cache 30 {{
        success 9984 30 1
        denial 9984 30 1
    }}
    loadbalance
}}
"""


class Served(ServedEngine):
    """The test's Corefile served on a thread of this process."""

    def __init__(self, cluster: DevCluster) -> None:
        self.mport = free_port()
        super().__init__(COREFILE.format(MPORT=self.mport, API=cluster.url, TTL=TTL))

    def ask(self, name: str, rdtype: str, rd: bool = True) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        if not rd:
            q.flags &= ~dns.flags.RD
        return dns.message.from_wire(self.exchange(q.to_wire()))

    def prepared_hits(self) -> int:
        return int(self.call(lambda: self.engine.prepared.hits))


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    c = start_cluster([
        namespace("fill"),
        service("fill", "web", ips=[SVC_IP], ports=[port("http", 80)]),
        service("fill", "synced", ips=["10.96.41.11"], ports=[port("http", 80)]),  # (asked once the server is up)
        service("fill", "solo", headless=True, ports=[port("sql", 5432)]),
        endpoint_slice("fill", "solo-1", "solo", [endpoint(OLD_IP)]),
    ])
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def served(cluster: DevCluster) -> Iterator[Callable[[], Served]]:
    made: list[Served] = []

    def make() -> Served:
        s = Served(cluster)
        made.append(s)
        wait_for(lambda: s.ask("synced.fill.svc.cluster.local.", "A").answer, 20, "the cluster never synced")
        return s

    yield make
    for s in made:
        s.close()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("coredns_") and s.name.endswith("_total"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in scraped.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def _ttl(reply: dns.message.Message) -> int:
    rrsets = reply.answer or reply.authority
    ttls = {rrset.ttl for rrset in rrsets}
    assert len(ttls) == 1, reply
    return ttls.pop()


def _poll(s: Served, name: str, rdtype: str, seconds: float, rd: bool = True) -> list[dns.message.Message]:
    replies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        replies.append(s.ask(name, rdtype, rd))
        time.sleep(0.02)
    return replies


@pytest.mark.parametrize(("name", "rdtype", "rcode"), [
    ("10.41.96.10.in-addr.arpa.", "PTR", dns.rcode.NOERROR),
    ("web.fill.svc.cluster.local.", "A", dns.rcode.NOERROR),
    ("missing.fill.svc.cluster.local.", "A", dns.rcode.NXDOMAIN),
])
def test_expired_entries_refill_like_the_miss_they_stand_for(
        served: Callable[[], Served], name: str, rdtype: str, rcode: int) -> None:
    """Asked every 20 ms over 2.6 entry lifetimes: the TTL goes 2, 1, 2, 1... (never 0, never
    stale); every 1 -> 2 step is one miss (so misses = 1 + refills); the responses counted as
    written by kubernetes are the first miss with its repeats in its first second (the reply
    of the miss is repeated as such, see engine._handing_over) and each refill, every other
    as the cache's (hits); all but the very first are served from prepared replies, so the
    refills did not go through the direct path."""
    s = served()
    before = _scrape(s.mport)
    hits_before = s.prepared_hits()
    replies = _poll(s, name, rdtype, 2.6 * TTL)
    after = _scrape(s.mport)
    prepared = s.prepared_hits() - hits_before

    assert {r.rcode() for r in replies} == {rcode}
    ttls = [_ttl(r) for r in replies]
    assert set(ttls) == {1, 2}, ttls
    refills = sum(1 for a, b in pairwise(ttls) if (a, b) == (1, 2))
    assert refills >= 2, ttls

    def delta(metric: str, **labels: str) -> float:
        return _sum(after, metric, **labels) - _sum(before, metric, **labels)

    assert delta("coredns_cache_requests_total") == len(replies)
    assert delta("coredns_cache_misses_total") == 1 + refills, ttls
    kind = "success" if rcode == dns.rcode.NOERROR else "denial"
    assert delta("coredns_cache_hits_total", type=kind) == len(replies) - 1 - refills
    first_second = ttls.index(1)
    assert delta("coredns_dns_responses_total", plugin="kubernetes") == first_second + refills
    assert delta("coredns_dns_responses_total", plugin="cache") == len(replies) - first_second - refills
    assert delta("coredns_dns_requests_total") == len(replies)
    assert prepared == len(replies) - 1
    # the same records every time
    assert len({tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset)) for r in replies}) == 1


def test_a_prepared_hit_refills_too(served: Callable[[], Served]) -> None:
    """A query that first met the entry as a cache hit (here: RD clear, after a query with RD
    set filled the entry; the prepared replies differ, the cache entry is the same) is
    prepared as the hit; at expiry it refills the entry in place as well, counted the same."""
    s = served()
    name = "10.41.96.10.in-addr.arpa."
    before = _scrape(s.mport)
    filled = s.ask(name, "PTR")
    assert _ttl(filled) == TTL
    hits_before = s.prepared_hits()
    replies = _poll(s, name, "PTR", 2.6 * TTL, rd=False)
    after = _scrape(s.mport)
    assert all(not r.flags & dns.flags.RD for r in replies)
    ttls = [_ttl(r) for r in replies]
    assert set(ttls) == {1, 2}, ttls
    refills = sum(1 for a, b in pairwise([TTL, *ttls]) if (a, b) == (1, 2))
    assert refills >= 2, ttls

    def delta(metric: str, **labels: str) -> float:
        return _sum(after, metric, **labels) - _sum(before, metric, **labels)

    assert delta("coredns_cache_requests_total") == 1 + len(replies)
    assert delta("coredns_cache_misses_total") == 1 + refills
    assert delta("coredns_cache_hits_total") == len(replies) - refills
    # the filling query and the refills; every other reply was a hit
    assert delta("coredns_dns_responses_total", plugin="kubernetes") == 1 + refills
    assert delta("coredns_dns_responses_total", plugin="cache") == len(replies) - refills
    # the first RD-clear query was the direct path's hit; every other one a prepared reply
    assert s.prepared_hits() - hits_before == len(replies) - 1


def test_a_change_behind_the_entry_ends_the_refills(served: Callable[[], Served],
                                                    cluster: DevCluster) -> None:
    """The cache keeps serving what it stored until the entry expires (a cache's contract);
    then, the records having changed, the miss is answered afresh: the new address, once."""
    s = served()
    name = "solo.fill.svc.cluster.local."

    def address(reply: dns.message.Message) -> str:
        return reply.answer[0][0].address

    first = s.ask(name, "A")
    assert address(first) == OLD_IP and _ttl(first) == TTL
    stored = time.monotonic()
    cluster.apply(endpoint_slice("fill", "solo-1", "solo", [endpoint(NEW_IP)]))
    wait_for(lambda: _kubernetes_sees(s, NEW_IP), 10, "the change never reached the index")
    seen = []
    while time.monotonic() - stored < TTL + 1.5:
        reply = s.ask(name, "A")
        seen.append((time.monotonic() - stored, address(reply), _ttl(reply)))
        time.sleep(0.02)
    # until the entry expired: the old address; from a moment after: only the new one
    olds = [t for t, a, _ in seen if a == OLD_IP]
    news = [t for t, a, _ in seen if a == NEW_IP]
    assert olds and news, seen
    assert max(olds) < min(news) and max(olds) < TTL + 0.1 and min(news) >= TTL - 0.1, seen
    assert [ttl for t, a, ttl in seen if a == NEW_IP][0] == TTL


def _kubernetes_sees(s: Served, ip: str) -> bool:
    """The kubernetes plugin answers ``ip`` for solo (asked past the cache, as its own zone's
    answer: a PTR for the pod address the index now holds)."""
    octets = ip.split(".")
    reply = s.ask(".".join(reversed(octets)) + ".in-addr.arpa.", "PTR")
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def test_refills_switch_off(served: Callable[[], Served], monkeypatch: pytest.MonkeyPatch) -> None:
    """DNSD_REFILL=0 (for measurements): the same TTLs and counts, every refill answered
    afresh by the direct path (so fewer prepared hits)."""
    monkeypatch.setenv("DNSD_REFILL", "0")
    s = served()
    before = _scrape(s.mport)
    hits_before = s.prepared_hits()
    replies = _poll(s, "10.41.96.10.in-addr.arpa.", "PTR", 2.5 * TTL)
    after = _scrape(s.mport)
    ttls = [_ttl(r) for r in replies]
    misses = 1 + sum(1 for a, b in pairwise(ttls) if (a, b) == (1, 2))
    assert misses >= 2, ttls
    assert (_sum(after, "coredns_cache_misses_total") - _sum(before, "coredns_cache_misses_total")
            == misses)
    assert s.prepared_hits() - hits_before == len(replies) - misses
