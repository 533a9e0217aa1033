"""cache: hits without the upstream, TTL countdown, denial TTLs, disable, stale, prefetch."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from upstream import Running, Upstream, addresses, aquery, serve_corefile

from dnsd import metrics
from dnsd.chain import SetupContext
from dnsd.corefile.ast import CorefileError, Directive
from dnsd.plugins.cache import Item, Plugin, classify, message_ttl
from dnsd.request import Request


def _fail_handler(query: DNSRecord, proto: str) -> DNSRecord | None:
    if str(query.q.qname).lower().startswith("fail."):
        reply = query.reply(ra=1)
        reply.header.rcode = RCODE.SERVFAIL
        return reply
    return None


@pytest.fixture
def up() -> Iterator[Upstream]:
    upstream = Upstream(handler=_fail_handler).start()
    upstream.records[("tiny.example.org.", QTYPE.A)] = [
        RR("tiny.example.org.", QTYPE.A, ttl=1, rdata=A("192.0.2.9"))]
    yield upstream
    upstream.stop()


def conf(up: Upstream, cache: str = "cache", block: str = "") -> str:
    body = f" {{\n{block}\n }}" if block else ""
    return f".:{{PORT}} {{\n {cache}{body}\n forward . {up.addr}\n}}\n"


def sample(name: str, labels: dict[str, str]) -> float:
    metrics.flush_hot_path()  # hot-path hits reach the metrics in batches
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_second_query_is_served_from_cache(up: Upstream) -> None:
    async with serve_corefile(conf(up)) as srv:
        labels = {"server": f"dns://:{srv.port}", "zones": ".", "view": ""}
        first = await aquery(srv.port, "www.example.org", id=1)
        second = await aquery(srv.port, "www.example.org", id=2)
        tcp = await aquery(srv.port, "www.example.org", tcp=True)
    assert up.count() == 1
    assert addresses(first) == addresses(second) == addresses(tcp) == ["192.0.2.1"]
    assert second.id == 2 and second.flags & dns.flags.RA
    assert sample("coredns_cache_hits_total", {**labels, "type": "success"}) == 2
    assert sample("coredns_cache_requests_total", labels) == 3
    assert sample("coredns_cache_misses_total", labels) == 1
    assert sample("coredns_cache_entries", {**labels, "type": "success"}) == 1


async def test_ttl_counts_down_and_question_case_is_kept(up: Upstream) -> None:
    async with serve_corefile(conf(up)) as srv:
        first = await aquery(srv.port, "www.example.org")
        await asyncio.sleep(1.1)
        later = await aquery(srv.port, "WWW.Example.ORG")
    assert first.answer[0].ttl == 300
    assert 290 <= later.answer[0].ttl <= 299
    assert later.question[0].name.to_text() == "WWW.Example.ORG."
    assert later.answer[0].name.to_text() == "WWW.Example.ORG."
    assert up.count() == 1


async def test_max_ttl_caps_entries(up: Upstream) -> None:
    async with serve_corefile(conf(up, "cache 30")) as srv:
        first = await aquery(srv.port, "www.example.org")
        second = await aquery(srv.port, "www.example.org")
    assert first.answer[0].ttl == 30 and second.answer[0].ttl <= 30
    assert up.count() == 1


@pytest.mark.parametrize("name,rdtype,rcode", [
    ("nope.example.org", "A", dns.rcode.NXDOMAIN), ("www.example.org", "MX", dns.rcode.NOERROR),
])
async def test_denial_cached_for_soa_minimum(up: Upstream, name: str, rdtype: str, rcode: int) -> None:
    async with serve_corefile(conf(up)) as srv:
        first = await aquery(srv.port, name, rdtype)
        second = await aquery(srv.port, name, rdtype)
    assert first.rcode() == second.rcode() == rcode
    assert first.authority[0].ttl == 60  # min(SOA TTL 300, SOA MINIMUM 60)
    assert second.authority[0].ttl <= 60 and not second.answer
    assert up.count() == 1


async def test_disable_success_for_zone(up: Upstream) -> None:
    async with serve_corefile(conf(up, "cache", "  disable success example.org")) as srv:
        for _ in range(2):
            await aquery(srv.port, "www.example.org")
            await aquery(srv.port, "nope.example.org")
            await aquery(srv.port, "www.other.test")
    assert up.count("www.example.org.") == 2  # success not cached in example.org
    assert up.count("nope.example.org.") == 1  # denial still cached
    assert up.count("www.other.test.") == 1  # other zones still cached


async def test_cache_zones_limit_what_is_cached(up: Upstream) -> None:
    async with serve_corefile(conf(up, "cache 300 other.test")) as srv:
        for _ in range(2):
            await aquery(srv.port, "www.example.org")
            await aquery(srv.port, "www.other.test")
    assert up.count("www.example.org.") == 2 and up.count("www.other.test.") == 1


@pytest.mark.parametrize("servfail,expected", [("", 1), ("  servfail 0", 2)])
async def test_servfail_cached_for_servfail_duration(up: Upstream, servfail: str, expected: int) -> None:
    async with serve_corefile(conf(up, "cache", servfail)) as srv:
        for _ in range(2):
            assert (await aquery(srv.port, "fail.example.org")).rcode() == dns.rcode.SERVFAIL
    assert up.count("fail.example.org.") == expected


async def test_truncated_replies_are_not_cached(up: Upstream) -> None:
    async with serve_corefile(conf(up)) as srv:
        for _ in range(2):
            reply = await aquery(srv.port, "big.example.org", "TXT")
            assert reply.flags & dns.flags.TC
    assert up.count("big.example.org.") == 2


async def test_do_bit_is_part_of_the_key(up: Upstream) -> None:
    async with serve_corefile(conf(up)) as srv:
        await aquery(srv.port, "www.example.org")
        await aquery(srv.port, "www.example.org", want_dnssec=True)
        await aquery(srv.port, "www.example.org", want_dnssec=True)
    assert up.count() == 2


async def test_serve_stale_immediate_while_upstream_is_down(up: Upstream) -> None:
    block = "  success 9984 3600 0\n  serve_stale 1h"
    async with serve_corefile(conf(up, "cache", block)) as srv:
        labels = {"server": f"dns://:{srv.port}", "zones": ".", "view": ""}
        assert addresses(await aquery(srv.port, "tiny.example.org")) == ["192.0.2.9"]
        await asyncio.sleep(1.2)
        up.mode = "dead"
        start = time.monotonic()
        stale = await aquery(srv.port, "tiny.example.org")
        assert time.monotonic() - start < 1.0  # not waiting for the dead upstream
        assert addresses(stale) == ["192.0.2.9"] and stale.answer[0].ttl == 0
        assert sample("coredns_cache_served_stale_total", labels) == 1
        await asyncio.sleep(0.1)
        assert up.count("tiny.example.org.") == 2  # a background refresh was tried


async def test_serve_stale_verify_tries_upstream_first(up: Upstream) -> None:
    block = "  success 9984 3600 0\n  serve_stale 1h verify"
    async with serve_corefile(conf(up, "cache", block)) as srv:
        await aquery(srv.port, "tiny.example.org")
        await asyncio.sleep(1.2)
        fresh = await aquery(srv.port, "tiny.example.org")  # upstream fine: its answer
        assert fresh.answer[0].ttl == 1 and up.count("tiny.example.org.") == 2
        await asyncio.sleep(1.2)
        up.handler = lambda q, p: _servfail(q)  # the upstream now fails quickly
        stale = await aquery(srv.port, "tiny.example.org")
        assert addresses(stale) == ["192.0.2.9"] and stale.answer[0].ttl == 0
        assert up.count("tiny.example.org.") == 3


def _servfail(query: DNSRecord) -> DNSRecord:
    reply = query.reply(ra=1)
    reply.header.rcode = RCODE.SERVFAIL
    return reply


async def test_prefetch_refreshes_popular_entries(up: Upstream) -> None:
    up.records[("four.example.org.", QTYPE.A)] = [
        RR("four.example.org.", QTYPE.A, ttl=4, rdata=A("192.0.2.4"))]
    block = "  success 9984 3600 0\n  prefetch 2 1m 50%"
    async with serve_corefile(conf(up, "cache", block)) as srv:
        labels = {"server": f"dns://:{srv.port}", "zones": ".", "view": ""}
        await aquery(srv.port, "four.example.org")
        await aquery(srv.port, "four.example.org")  # 1st hit, 4 s left: too early
        await asyncio.sleep(0.2)
        assert up.count("four.example.org.") == 1
        await asyncio.sleep(1.9)
        hit = await aquery(srv.port, "four.example.org")  # 2nd hit, 2 s (50 %) left: prefetch
        assert hit.answer[0].ttl == 2
        await asyncio.sleep(0.2)
        assert up.count("four.example.org.") == 2
        again = await aquery(srv.port, "four.example.org")
        assert again.answer[0].ttl == 4 and up.count("four.example.org.") == 2
        assert sample("coredns_cache_prefetch_total", labels) == 1


# --- units -----------------------------------------------------------------------------------

def _reply(rcode: int = 0, answers: int = 1, soa: bool = False) -> DNSRecord:
    reply = DNSRecord.question("www.example.org", "A").reply()
    reply.header.rcode = rcode
    for i in range(answers):
        reply.add_answer(RR("www.example.org.", QTYPE.A, ttl=100 + i, rdata=A("192.0.2.1")))
    if soa:
        reply.add_auth(*RR.fromZone("example.org. 900 IN SOA ns. host. 1 2 3 4 30"))
    return reply


def test_classify_and_message_ttl() -> None:
    assert classify(_reply()) == "success"
    assert classify(_reply(3, 0, soa=True)) == "denial"
    assert classify(_reply(0, 0, soa=True)) == "denial"
    assert classify(_reply(3, 0)) is None  # NXDOMAIN without SOA
    assert classify(_reply(2, 0)) == "servfail"
    assert classify(_reply(5, 0)) is None
    truncated = _reply()
    truncated.header.tc = 1
    assert classify(truncated) is None
    assert message_ttl(_reply(answers=3), "success") == 100
    assert message_ttl(_reply(3, 0, soa=True), "denial") == 30


def test_keepttl_and_stale_ttls() -> None:
    query = DNSRecord.question("www.example.org", "A")
    req = Request(msg=query, qname="www.example.org.", qtype=1, qclass=1)
    now = time.monotonic()
    item = Item.of(_reply(answers=2), "success", now - 10, 100)
    assert [rr.ttl for rr in item.to_reply(req, now, keepttl=False).rr] == [90, 90]
    assert [rr.ttl for rr in item.to_reply(req, now, keepttl=True).rr] == [100, 101]
    assert [rr.ttl for rr in item.to_reply(req, now + 200, keepttl=False).rr] == [0, 0]


def _d(args: str, *children: str) -> Directive:
    kids = [Directive(c.split()[0], c.split()[1:], line=i + 2) for i, c in enumerate(children)]
    return Directive("cache", args.split(), kids, line=1)


def test_setup_options() -> None:
    ctx = SetupContext(zones=["cluster.local."], port=53)
    p = Plugin.setup([_d("30", "success 100 60 2", "denial 50", "prefetch 2 30s 20%",
                         "serve_stale 10m verify", "servfail 1s", "disable success",
                         "keepttl")], ctx)
    s = p.s
    assert s.zones == ["cluster.local."]
    assert (s.success_cap, s.success_ttl, s.success_min) == (100, 60, 2)
    assert (s.denial_cap, s.denial_ttl) == (50, 30)
    assert (s.prefetch, s.prefetch_window, s.prefetch_percent) == (2, 30, 20)
    assert s.stale == 600 and s.verify_stale and s.servfail_ttl == 1 and s.keepttl
    assert s.no_success == ["cluster.local."]
    assert Plugin.setup([_d("example.org")], ctx).s.zones == ["example.org."]


@pytest.mark.parametrize("args,children,message", [
    ("0", [], "zero or negative"),
    ("", ["servfail 10m"], "over 5 minutes"),
    ("", ["prefetch 1 1m 5%"], "range"),
    ("", ["serve_stale 1h later"], "refresh mode"),
    ("", ["disable everything"], "success"),
    ("", ["bogus"], "unknown property"),
])
def test_setup_errors(args: str, children: list[str], message: str) -> None:
    with pytest.raises(CorefileError, match=message):
        Plugin.setup([_d(args, *children)], SetupContext(zones=["."], port=53))


def test_cache_and_forward_in_front_of_a_dnsd_file_upstream(dnsd) -> None:
    """Two real dnsd processes: a zone-file server, and a caching forwarder in front of it."""
    from support import ROOT, dig

    zone = ROOT / "zones" / "example.org"
    origin = dnsd(f"example.org:{{PORT}} {{\n log\n file {zone}\n}}\n")
    front = dnsd(f".:{{PORT}} {{\n cache\n forward . 127.0.0.1:{origin.port}\n}}\n")
    first = dig("+noall", "+answer", "www.example.org", "A", port=front.port).split()
    assert first[-1] == "192.0.2.10" and first[1] == "3600"
    time.sleep(1.1)
    second = dig("+noall", "+answer", "www.example.org", "A", port=front.port).split()
    assert second[-1] == "192.0.2.10" and int(second[1]) < 3600
    nx = dig("nope.example.org", "A", port=front.port)
    assert "status: NXDOMAIN" in nx and "aa" in nx.split("flags:")[1].split(";")[0]
    dig("nope.example.org", "A", port=front.port)
    log = origin.output()
    assert log.count("www.example.org.") == 1 and log.count("nope.example.org.") == 1


# --- the hot path: cache hits stay prepared for the entry's whole life -----------------------

async def _raw(port: int, wire: bytes) -> bytes:
    """One UDP exchange of raw bytes with 127.0.0.1:port."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, wire)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)


def _query(name: str, rdtype: str = "A", general: bool = False, **kw: object) -> bytes:
    """A query's wire form; ``general``: with the header's Z bit set, which keeps a query off
    the hot path (its key parser refuses it) without changing the reply."""
    wire = bytearray(dns.message.make_query(name, rdtype, **kw).to_wire())  # type: ignore[arg-type]
    if general:
        wire[3] |= 0x40
    return bytes(wire)


def _ttls(reply: bytes) -> list[int]:
    msg = dns.message.from_wire(reply)
    return [rrset.ttl for section in (msg.answer, msg.authority, msg.additional) for rrset in section]


class _Probe:
    """Asks one name on the hot path and on the general path, and tells which answered."""

    def __init__(self, srv: Running, name: str, rdtype: str = "A", **kw: object) -> None:
        self.srv, self.name, self.rdtype, self.kw = srv, name, rdtype, kw
        self.engine = next(iter(srv.server.runtime.engines.values()))

    async def hot(self) -> tuple[bytes, bool]:
        """(reply, whether the hot path served it)."""
        before = self.engine.prepared.hits
        reply = await _raw(self.srv.port, _query(self.name, self.rdtype, **self.kw))
        return reply, self.engine.prepared.hits == before + 1

    async def general(self) -> bytes:
        before = self.engine.prepared.hits
        reply = await _raw(self.srv.port, _query(self.name, self.rdtype, general=True, **self.kw))
        assert self.engine.prepared.hits == before
        return reply


async def _until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


def _entry(srv: Running, name: str, qtype: int = QTYPE.A, do: bool = False) -> Item:
    return srv.plugin("cache").pcache[(name, qtype, do, False)]


@pytest.mark.parametrize("dnssec", [False, True])
async def test_hot_path_cache_hits_are_renewed_each_second_byte_identical(
        up: Upstream, dnssec: bool) -> None:
    """A prepared cache hit stays on the hot path while its TTL counts down, and every second
    it is byte for byte (ID aside) what the general path sends at that moment; the OPT record
    (DO in its TTL field) is left alone.  When the entry expires it is dropped."""
    kw = {"want_dnssec": True} if dnssec else {}
    async with serve_corefile(conf(up, "cache 4")) as srv:
        labels = {"server": f"dns://:{srv.port}", "zones": ".", "view": ""}
        probe = _Probe(srv, "WWW.example.org", **kw)
        first, _ = await probe.hot()  # the miss
        stored = _entry(srv, "www.example.org.", do=dnssec).stored
        assert _ttls(first)[0] == 4
        seen = []
        for second in range(4):
            await _until(stored + second + 0.5)
            hot1, was_hot1 = await probe.hot()
            general = await probe.general()
            hot2, was_hot2 = await probe.hot()
            seen.append((was_hot1, was_hot2))
            assert _ttls(hot2)[0] == _ttls(general)[0] == 4 - second
            if second == 0:
                continue  # the miss's own reply (its header comes from forward): one second
            assert hot2[2:] == general[2:]
            assert hot1[2:] == general[2:]
            if dnssec:
                assert dns.message.from_wire(hot2).ednsflags & dns.flags.DO
        # Second 1 re-prepares the reply from the entry; later seconds only renew it.
        assert seen == [(True, True), (False, True), (True, True), (True, True)]
        assert up.count() == 1
        await _until(stored + 4.3)
        expired, was_hot = await probe.hot()  # expired: dropped, fetched again
        assert not was_hot and up.count() == 2 and _ttls(expired)[0] == 4
        again, was_hot = await probe.hot()
        assert was_hot and again[2:] == expired[2:]
        queries = 1 + 4 * 3 + 2
        assert sample("coredns_cache_requests_total", labels) == queries
        assert sample("coredns_cache_misses_total", labels) == 2
        assert sample("coredns_cache_hits_total", {**labels, "type": "success"}) == queries - 2
        assert sample("coredns_cache_entries", {**labels, "type": "success"}) == 1


async def test_hot_path_denials_are_renewed_too(up: Upstream) -> None:
    async with serve_corefile(conf(up, "cache 3")) as srv:
        labels = {"server": f"dns://:{srv.port}", "zones": ".", "view": ""}
        probe = _Probe(srv, "nope.example.org")
        await probe.hot()
        stored = srv.plugin("cache").ncache[("nope.example.org.", QTYPE.A, False, False)].stored
        for second in (1, 2):
            await _until(stored + second + 0.5)
            await probe.hot()
            general = await probe.general()
            hot, was_hot = await probe.hot()
            assert was_hot and hot[2:] == general[2:]
            assert dns.message.from_wire(hot).rcode() == dns.rcode.NXDOMAIN
            assert _ttls(hot) == [3 - second]
        assert up.count() == 1
        assert sample("coredns_cache_hits_total", {**labels, "type": "denial"}) == 6
        assert sample("coredns_cache_requests_total", labels) == 7


async def test_hot_path_renews_every_loadbalanced_order(up: Upstream) -> None:
    corefile = f".:{{PORT}} {{\n loadbalance\n cache 3\n forward . {up.addr}\n}}\n"
    async with serve_corefile(corefile) as srv:
        probe = _Probe(srv, "multi.example.org")
        await probe.hot()
        stored = _entry(srv, "multi.example.org.").stored
        for second in (1, 2):
            await _until(stored + second + 0.5)
            await probe.hot()  # second 1: prepared from the entry; second 2: renewed
            general = dns.message.from_wire(await probe.general())
            orders = set()
            for _ in range(16):
                hot, was_hot = await probe.hot()
                assert was_hot
                msg = dns.message.from_wire(hot)
                assert msg.answer[0].ttl == general.answer[0].ttl == 3 - second
                assert sorted(map(str, msg.answer[0])) == sorted(map(str, general.answer[0]))
                assert msg.flags == general.flags
                orders.add(tuple(str(rd) for rd in msg.answer[0]))
            assert len(orders) > 1
        assert up.count() == 1


async def test_hot_path_drops_an_evicted_entry(up: Upstream) -> None:
    async with serve_corefile(conf(up, "cache 30", "  success 1")) as srv:
        probe = _Probe(srv, "www.example.org")
        await probe.hot()
        stored = _entry(srv, "www.example.org.").stored
        await _until(stored + 1.5)
        await probe.hot()  # prepared from the entry
        _, was_hot = await probe.hot()
        assert was_hot
        await aquery(srv.port, "www.other.test")  # capacity 1: evicts www.example.org
        await _until(stored + 2.2)  # the next second: renewing must notice the eviction
        reply, was_hot = await probe.hot()
        assert not was_hot and up.count("www.example.org.") == 2
        assert _ttls(reply) == [30]


async def test_hot_path_hands_expired_entries_to_serve_stale(up: Upstream) -> None:
    """serve_stale: once the entry expires, the hot path lets the general path serve it stale
    (TTL 0, refreshed in the background), as before."""
    block = "  success 9984 3600 0\n  serve_stale 1h"
    async with serve_corefile(conf(up, "cache", block)) as srv:
        labels = {"server": f"dns://:{srv.port}", "zones": ".", "view": ""}
        probe = _Probe(srv, "short.example.org")  # TTL 3
        await probe.hot()
        stored = _entry(srv, "short.example.org.").stored
        await _until(stored + 1.5)
        await probe.hot()
        hot, was_hot = await probe.hot()
        assert was_hot and _ttls(hot) == [2]
        await _until(stored + 2.5)
        hot, was_hot = await probe.hot()
        assert was_hot and _ttls(hot) == [1]
        up.mode = "dead"
        await _until(stored + 3.3)
        stale, was_hot = await probe.hot()
        assert not was_hot and _ttls(stale) == [0]
        assert sample("coredns_cache_served_stale_total", labels) == 1
        await asyncio.sleep(0.1)
        assert up.count("short.example.org.") == 2  # the background refresh was tried


@pytest.mark.parametrize("name,rdtype,shared", [
    ("www.example.org", "A", False),  # only the answer's owner: any spelling is patched in
    ("nope.example.org", "A", True),  # the SOA owner (example.org.) ends like the question
    ("alias.example.org", "A", True),  # a CNAME chain within example.org.
    ("mx.example.org", "MX", True),  # exchanges named under example.org.
])
async def test_hot_path_serves_other_spellings_as_the_general_path_does(
        up: Upstream, name: str, rdtype: str, shared: bool) -> None:
    """The hot path answers another spelling by patching the question bytes, so names
    compressed against the question follow the asker's spelling; a cache hit keeps the stored
    spelling of every name but the answer's owners.  Replies holding such names are repeated
    only for the very same spelling."""
    async with serve_corefile(conf(up, "cache 30")) as srv:
        first = _Probe(srv, name, rdtype)
        await first.hot()
        stored = srv.plugin("cache")._get((name + ".", getattr(QTYPE, rdtype), False, False),
                                          time.monotonic()).stored
        await _until(stored + 1.2)
        await first.hot()  # prepared from the entry, for this spelling
        _, was_hot = await first.hot()
        assert was_hot
        other = _Probe(srv, name.upper().replace("EXAMPLE", "Example"), rdtype)
        hot, was_hot = await other.hot()
        general = await other.general()
        assert was_hot is not shared
        assert hot[2:] == general[2:]
        again, was_hot = await other.hot()  # now prepared for this spelling
        assert was_hot and again[2:] == general[2:]
    assert up.count() == 1
