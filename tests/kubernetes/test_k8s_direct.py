"""The engine's direct path (dnsd/serve/direct.py) writes exactly what the general path
writes: the same bytes for every shape of cluster query, the same metrics, and it declines
whatever it cannot do the same way.

Two engines are built from one Corefile against the same API emulator (the real ``kubernetes``
client over HTTP); in one of them the blocks have no direct plan, so every query takes the
coroutine chain.  Prepared answers are switched off in both, so every query is a first answer.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, NamedTuple

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import dns.reversename
import pytest
from k8s_support import fixture_objects, start_cluster
from prometheus_client import generate_latest

from dnsd import metrics
from dnsd.corefile import parse
from dnsd.serve.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upstream import Upstream  # noqa: E402

COREFILE = """\
.:1053 {{
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint {url}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus 127.0.0.1:0
    forward . 127.0.0.1:{upstream}
    cache 30 {{
        disable success cluster.local
        disable denial cluster.local
    }}
    loop
}}
"""

NAMES = [
    ("svc1.testns.svc.cluster.local.", "A"), ("SVC1.TestNS.svc.Cluster.Local.", "A"),
    ("svc1.testns.svc.cluster.local.", "AAAA"), ("dual.testns.svc.cluster.local.", "AAAA"),
    ("svc6.testns.svc.cluster.local.", "AAAA"), ("svcempty.testns.svc.cluster.local.", "A"),
    ("hdls1.testns.svc.cluster.local.", "A"), ("hdls1.testns.svc.cluster.local.", "AAAA"),
    ("dup-name.hdls1.testns.svc.cluster.local.", "A"), ("hdls6.testns.svc.cluster.local.", "A"),
    ("hdlsempty.testns.svc.cluster.local.", "A"), ("hdlsnone.testns.svc.cluster.local.", "A"),
    ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV"),
    ("_HTTP._TCP.hdls6.testns.svc.cluster.local.", "SRV"),
    ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV"), ("svc1.testns.svc.cluster.local.", "SRV"),
    ("_foo._tcp.svc1.testns.svc.cluster.local.", "SRV"), ("noports.testns.svc.cluster.local.", "SRV"),
    ("svc1.testns.svc.cluster.local.", "TXT"), ("nosuch.testns.svc.cluster.local.", "A"),
    ("svc1.nons.svc.cluster.local.", "A"), ("a.b.c.d.e.svc.cluster.local.", "A"),
    ("testns.svc.cluster.local.", "A"), ("svc.cluster.local.", "A"),
    ("cluster.local.", "SOA"), ("cluster.local.", "NS"), ("cluster.local.", "A"),
    ("dns-version.cluster.local.", "TXT"), ("svc1.testns.svc.cluster.local.", "SOA"),
    ("10-240-0-1.podns.pod.cluster.local.", "A"), ("1-2-3-4.nopods.pod.cluster.local.", "A"),
    ("ext.testns.svc.cluster.local.", "A"), ("extout.testns.svc.cluster.local.", "A"),
    ("ghost.nsnoexist.svc.cluster.local.", "A"),
    (dns.reversename.from_address("10.96.1.1").to_text(), "PTR"),
    (dns.reversename.from_address("172.0.0.1").to_text(), "PTR"),
    (dns.reversename.from_address("10.99.99.99").to_text(), "PTR"),
    ("www.example.org.", "A"),
]


def _queries() -> list[bytes]:
    out = []
    for i, (name, rdtype) in enumerate(NAMES):
        for variant in range(4):
            q = dns.message.make_query(name, rdtype, use_edns=variant > 0,
                                       payload=[0, 512, 1232, 4096][variant],
                                       want_dnssec=variant == 3)
            q.id = i * 4 + variant
            if variant == 2:
                q.flags |= dns.flags.CD
            out.append(q.to_wire())
    return out


def _counters() -> dict[str, float]:
    """Every per-query counter series (durations excluded: they differ by nature)."""
    metrics.flush_hot_path()
    out = {}
    for line in generate_latest(metrics.REGISTRY).decode().splitlines():
        if line.startswith(("coredns_dns_requests_total", "coredns_dns_responses_total",
                            "coredns_dns_do_requests_total", "coredns_cache_requests_total",
                            "coredns_cache_misses_total", "coredns_cache_hits_total",
                            "coredns_dns_response_size_bytes_bucket",
                            "coredns_dns_request_size_bytes_bucket")):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_direct_answers_equal_the_general_path_byte_for_byte() -> None:
    g_out, d_out, took_direct, g_delta, d_delta, _, _ = _compared(COREFILE, _queries(), _answer)
    for (name, rdtype), i in zip(NAMES, range(0, len(d_out), 4), strict=False):
        for j in range(i, i + 4):
            assert d_out[j] == g_out[j], (name, rdtype, j - i, dns.message.from_wire(g_out[j]),
                                          dns.message.from_wire(d_out[j]))
    # The direct path answered most cluster queries; it declined the ExternalName that is
    # chased outside the zone and the forwarded name.  A PTR (the cache keeps in-addr.arpa)
    # is answered directly when the cache has no entry for it, and the entry is stored as
    # serve() stores it; the later variants that hit it are answered directly from the entry
    # (on the general engine, by serve()), and their bytes are compared above too.
    direct_names = {NAMES[j // 4] for j, took in enumerate(took_direct) if took}
    assert ("svc1.testns.svc.cluster.local.", "A") in direct_names
    assert ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV") in direct_names
    assert ("nosuch.testns.svc.cluster.local.", "A") in direct_names
    assert not any(n.startswith("extout") or n.startswith("www") for n, t in direct_names)
    assert len(direct_names) >= 25
    for j, (name, rdtype) in enumerate(NAMES):
        if rdtype != "PTR":
            continue
        if name.startswith("99.99.99.10."):  # no such address: falls through to forward
            assert took_direct[j * 4 : j * 4 + 4] == [False] * 4
            continue
        # no EDNS and EDNS without DO or CD share one cache key: a miss, then a hit, both
        # answered directly; CD and DO are keys of their own: misses again (direct)
        assert took_direct[j * 4 : j * 4 + 4] == [True] * 4, name
    assert g_delta == d_delta
    assert g_delta  # something was counted at all


# The whole zone cached (answers, NXDOMAIN and NODATA denials, SRV with additional
# records), no fallthrough (PTR denials come from kubernetes), with and without keepttl.
ALL_CACHED = COREFILE.replace("        fallthrough in-addr.arpa ip6.arpa\n", "").replace(
    "    cache 30 {{\n        disable success cluster.local\n        disable denial cluster.local\n    }}\n",
    "    cache 30 {{\n%s    }}\n")
assert "disable" not in ALL_CACHED and "fallthrough" not in ALL_CACHED


@pytest.mark.parametrize("options", ["", "        keepttl\n"], ids=["countdown", "keepttl"])
def test_cache_hits_answered_directly_equal_serve_byte_for_byte(options: str) -> None:
    """Every query of the first test, each name also asked in other spellings, twice over
    with a pause between: the first round fills the cache (misses), the second round and
    the repeats hit it.  With prepared answers off, every hit on the direct engine is a
    direct answer from the entry; bytes and counters equal the general path's."""
    queries = _queries()
    respelled = []
    for i, (name, rdtype) in enumerate(NAMES):
        for variant, spelled in enumerate((name.upper(), name.title())):
            q = dns.message.make_query(spelled, rdtype, use_edns=variant > 0, payload=1232)
            q.id = 1000 + i * 2 + variant
            respelled.append(q.to_wire())
    asked = queries + respelled + queries + respelled

    def caches(general: Runtime, direct: Runtime) -> tuple[int, int]:
        cache = next(p for p in direct.plugins if p.name == "cache")
        return len(cache.pcache), len(cache.ncache)

    g_out, d_out, took, g_delta, d_delta, _, (positive, negative) = _compared(
        ALL_CACHED, asked, _answer, options=options, pause=1.1, at=(len(asked) // 2,),
        inspect=caches)
    assert positive > 20 and negative > 5
    _assert_same(g_out, d_out)
    # the second round: cluster names are hits, answered directly (not the chased
    # ExternalName, and not the forwarded names, whose entries hold dnslib records)
    second = took[len(asked) // 2 :]
    assert sum(second) >= 0.8 * len(second)
    hits = {k: v for k, v in d_delta.items() if k.startswith("coredns_cache_hits_total")}
    assert sum(hits.values()) >= 0.8 * len(second)
    assert any('coredns_dns_responses_total' in k and 'plugin="cache"' in k for k in d_delta)
    assert g_delta == d_delta


class Compared(NamedTuple):
    """What ``_compared`` measured."""

    g_out: list[bytes]  # the general engine's replies
    d_out: list[bytes]  # the direct engine's replies
    took: list[bool]  # which direct-engine replies came without the chain
    g_delta: dict[str, float]  # each engine's counter deltas
    d_delta: dict[str, float]
    prepared_hits: int  # the direct engine's hot-path hits
    extra: Any  # what ``inspect`` returned


def _compared(corefile: str, queries: list[bytes], ask_general: Any, options: str = "",
              prepared: int = 0, pause: float = 0.0, at: tuple[int, ...] = (),
              inspect: Any = None) -> Compared:
    """``queries`` on a general and a direct engine of ``corefile`` (``options`` in its
    cache block, ``prepared`` replies kept by both) against the fixture cluster (see
    ``_both``); ``inspect(general, direct)`` looks at both runtimes before they stop."""
    cluster = start_cluster(fixture_objects())
    upstream = Upstream(delay=0).start()

    async def run() -> Compared:
        text = corefile.format(url=cluster.url, upstream=upstream.port).replace("%s", options)
        general, direct, g_engine, d_engine = await _two_engines(text)
        try:
            assert all(block.direct is not None for block in d_engine.blocks)
            g_engine.prepared.limit = d_engine.prepared.limit = prepared
            g_out, d_out, took, g_delta, d_delta = await _both(
                g_engine, d_engine, queries, ask_general, pause=pause, at=at)
            extra = inspect(general, direct) if inspect is not None else None
            return Compared(g_out, d_out, took, g_delta, d_delta, d_engine.prepared.hits, extra)
        finally:
            await general.stop_plugins()
            await direct.stop_plugins()

    try:
        return asyncio.run(run())
    finally:
        cluster.stop()
        upstream.stop()


def _assert_same(g_out: list[bytes], d_out: list[bytes]) -> None:
    for j, (g, d) in enumerate(zip(g_out, d_out, strict=True)):
        assert d == g, (j, dns.message.from_wire(g), dns.message.from_wire(d))


async def _two_engines(text: str) -> tuple[Runtime, Runtime, Any, Any]:
    """Two started runtimes of ``text``: the first one's engine never goes direct and keeps
    no prepared answers; both indexes carry the same SOA serial (each is the second its last
    change came in)."""
    general = Runtime.build(parse(text), 1053)
    direct = Runtime.build(parse(text), 1053)
    await general.start_plugins()
    await direct.start_plugins()
    g_engine = next(iter(general.engines.values()))
    d_engine = next(iter(direct.engines.values()))
    for block in g_engine.blocks:
        block.direct = None
    g_engine.prepared.limit = 0
    k8s = [next(p for p in rt.plugins if p.name == "kubernetes") for rt in (general, direct)]
    k8s[1].index.serial = k8s[0].index.serial
    return general, direct, g_engine, d_engine


async def _answer(engine: Any, q: bytes) -> bytes:
    reply, key = engine.fast(q, "udp", "127.0.0.1")
    assert reply is None  # no prepared answers, no direct path here
    out = await engine.handle(q, key=key)
    assert out is not None
    return out


def _delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: v - a.get(k, 0) for k, v in b.items() if v - a.get(k, 0)}


def test_blocks_whose_chain_must_see_each_query_have_no_direct_plan() -> None:
    def plan(extra: str) -> Any:
        text = f".:1053 {{\n {extra}\n kubernetes cluster.local\n}}\n"
        engine = next(iter(Runtime.build(parse(text), 1053).engines.values()))
        return engine.blocks[0].direct

    assert plan("errors") is not None
    assert plan("log") is None  # the query log must see every query
    assert plan("rewrite name foo.cluster.local bar.cluster.local") is None
    assert plan("whoami") is not None  # (after kubernetes in the chain: never reached first)
    assert plan("acl {\n  block net 10.0.0.0/8\n }") is None


def test_shuffled_direct_answers_hold_the_same_records_and_prepare_several_orders() -> None:
    cluster = start_cluster(fixture_objects())
    upstream = Upstream(delay=0).start()
    text = COREFILE.format(url=cluster.url, upstream=upstream.port).replace("    loop\n", "    loop\n    loadbalance\n")
    name = "hdls6.testns.svc.cluster.local."

    async def run() -> tuple[list[dns.message.Message], list[dns.message.Message], set[tuple[str, ...]]]:
        general, direct, g_engine, d_engine = await _two_engines(text)
        try:
            queries = _queries()
            g_out = [dns.message.from_wire(await _answer(g_engine, q)) for q in queries]
            d_out = []
            for q in queries:
                d_engine.prepared.clear()
                reply, key = d_engine.fast(q, "udp", "127.0.0.1")
                d_out.append(dns.message.from_wire(reply or await d_engine.handle(q, key=key)))
            # Then the hot path serves the prepared orders in turn.
            q = dns.message.make_query(name, "A").to_wire()
            orders = set()
            for _ in range(20):
                reply, key = d_engine.fast(q, "udp", "127.0.0.1")
                msg = dns.message.from_wire(reply or await d_engine.handle(q, key=key))
                orders.add(tuple(rd.to_text() for rd in msg.answer[0]))
            assert d_engine.prepared.hits >= 19
            return g_out, d_out, orders
        finally:
            await general.stop_plugins()
            await direct.stop_plugins()

    try:
        g_out, d_out, orders = asyncio.run(run())
    finally:
        cluster.stop()
        upstream.stop()
    for g, d in zip(g_out, d_out, strict=True):
        assert (g.id, g.flags, g.rcode(), g.question) == (d.id, d.flags, d.rcode(), d.question)
        for section in ("answer", "authority", "additional"):
            if g.flags & dns.flags.TC:  # a random order decides which records fitted
                assert len(_records(getattr(g, section))) == len(_records(getattr(d, section)))
            else:
                assert _records(getattr(g, section)) == _records(getattr(d, section))
    assert len(orders) > 2


def _records(section: list[Any]) -> list[str]:
    return sorted(f"{rrset.name} {rrset.ttl} {rrset.rdtype} {rd.to_text()}" for rrset in section for rd in rrset)


def test_a_cache_miss_answered_directly_fills_the_cache_and_is_repeated_as_serve_would() -> None:
    """A PTR (kept by the cache) asked five times on each engine, prepared answers on: the
    first ask is a miss (answered directly on one engine, through the chain on the other),
    the others are hot-path repeats of it; then twice more a second later (a hit on the
    entry: on the direct engine the miss's prepared reply, its TTLs rewritten, goes on as
    the hit's), and twice more another second later (its TTLs counted down again).
    Replies, cache entries and every counter agree."""
    name = dns.reversename.from_address("10.96.1.1").to_text()
    queries = []
    for i in range(5):
        q = dns.message.make_query(name, "PTR")
        q.id = i
        queries.append(q.to_wire())

    def entries(general: Runtime, direct: Runtime) -> list[Any]:
        caches = [next(p for p in rt.plugins if p.name == "cache") for rt in (general, direct)]
        return [[(k, str(i.answer[0].rdata), i.ttl) for k, i in c.pcache.items()] for c in caches]

    g_out, d_out, took, g_delta, d_delta, prepared_hits, entries_ = _compared(
        COREFILE, queries + queries[:2] + queries[2:4], _answer_any, prepared=1000, pause=1.1,
        at=(5, 7), inspect=entries)
    # the miss's four repeats, then every later ask: the reply handed over to the hit
    assert prepared_hits == 8
    assert d_out == g_out
    # the miss directly, then the prepared reply; a second later, as on the general path,
    # the entry's own reply (a hit: the plugin that wrote it is the cache, in the counters
    # compared below), then its repeats
    assert took == [True] * 9
    ttls = [[rr.ttl for rr in dns.message.from_wire(d_out[i]).answer] for i in (4, 6, 8)]
    assert ttls[0] == [30] and ttls[1] in ([29], [28]) and ttls[2][0] == ttls[1][0] - 1
    assert entries_[0] == entries_[1] and len(entries_[0]) == 1
    assert g_delta == d_delta
    assert any("coredns_cache_misses_total" in k for k in d_delta)
    assert any("coredns_cache_hits_total" in k for k in d_delta)
    assert any('coredns_dns_responses_total' in k and 'plugin="cache"' in k for k in d_delta)


@pytest.mark.parametrize("options", ["", "        keepttl\n"], ids=["countdown", "keepttl"])
def test_repeated_misses_hand_over_to_hits_as_serve_would(options: str) -> None:
    """Prepared answers on, the whole zone cached: every kind of cluster answer (addresses,
    SRV with additional records, NXDOMAIN and NODATA with the SOA, PTR) asked twice, three
    times a second apart.  On the direct engine the misses are answered directly and their
    repeats, once the first second is over, go on as the entry's hits; the replies and every
    counter equal the general path's."""
    names = [("svc1.testns.svc.cluster.local.", "A"), ("svc1.testns.svc.cluster.local.", "AAAA"),
             ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV"),
             ("nosuch.testns.svc.cluster.local.", "A"), ("svc1.testns.svc.cluster.local.", "TXT"),
             (dns.reversename.from_address("10.96.1.1").to_text(), "PTR")]
    queries = []
    for i, (name, rdtype) in enumerate(names):
        q = dns.message.make_query(name, rdtype, use_edns=True, payload=1232)
        q.id = i
        queries.append(q.to_wire())
    asked = queries * 6  # three rounds of two
    n = len(queries)
    g_out, d_out, took, g_delta, d_delta, prepared_hits, _ = _compared(
        ALL_CACHED, asked, _answer_any, options=options, prepared=1000, pause=1.1,
        at=(2 * n, 4 * n))
    assert all(took)
    _assert_same(g_out, d_out)
    # only the first ask of each name took the direct path: its repeat in the first second,
    # and every later ask, were the prepared reply (handed over to the hit)
    assert prepared_hits == 5 * n
    assert g_delta == d_delta
    # (with keepttl the miss's reply stays valid for the entry's whole life, on both paths,
    # so its repeats never become hits written by the cache)
    assert any('plugin="cache"' in k for k in d_delta) == (not options)


async def _both(g_engine: Any, d_engine: Any, queries: list[bytes], ask_general: Any,
                pause: float = 0.0, at: tuple[int, ...] = (),
                ) -> tuple[list[bytes], list[bytes], list[bool], dict[str, float], dict[str, float]]:
    """The queries on the general engine (through ``ask_general``), then on the direct one
    (with ``pause`` seconds before each query numbered in ``at`` on each): both engines'
    replies, which direct replies came without the chain, and each engine's counter deltas."""

    async def ask(i: int, engine: Any, q: bytes, how: Any) -> Any:
        if pause and i in at:
            await asyncio.sleep(pause)
        return await how(engine, q)

    before = _counters()
    g_out = [await ask(i, g_engine, q, ask_general) for i, q in enumerate(queries)]
    middle = _counters()
    answered = [await ask(i, d_engine, q, _fast_or_chain) for i, q in enumerate(queries)]
    after = _counters()
    return (g_out, [a for a, _ in answered], [t for _, t in answered], _delta(before, middle),
            _delta(middle, after))


async def _answer_any(engine: Any, q: bytes) -> bytes:
    return (await _fast_or_chain(engine, q))[0]


async def _fast_or_chain(engine: Any, q: bytes) -> tuple[bytes, bool]:
    """The reply to ``q`` and whether the engine's synchronous paths (prepared reply or
    direct path) wrote it, rather than the coroutine chain."""
    reply, key = engine.fast(q, "udp", "127.0.0.1")
    if reply is not None:
        return reply, True
    out = await engine.handle(q, key=key)
    assert out is not None
    return out, False
