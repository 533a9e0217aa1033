"""The express lane (dnsd/wire/express.py): repeats answered by the UDP batch reader from the
finished reply bytes it keeps.

Each test runs a real listener (recvmmsg/sendmmsg when available) on an engine in an event
loop on a thread of this process, against the API emulator, and asks over real sockets with
dnspython.  The lane must give the hot path's bytes and counts, and must let go of a reply
the moment its writer's data changes: a kubernetes event, a cache entry let go of while
fresh, the cache's TTL countdown, a file or hosts reload, the prepared store's evictions.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype
import pytest
from k8s_support import endpoint, endpoint_slice, namespace, port, service, start_cluster, wait_for
from loop_support import ServedEngine
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

from dnsd.devcluster import DevCluster
from dnsd.serve import mmsg
from dnsd.wire import express

# The lane is served by the recvmmsg/sendmmsg reader only (Linux).
batched_only = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg not available here")

SVC_IP = "10.96.40.10"
SOLO_IP = "10.244.8.1"
NEW_IP = "10.244.8.2"
POD_IPS = ["10.244.7.1", "10.244.7.2", "10.244.7.3", "10.244.7.4"]


def _objects() -> list[dict[str, Any]]:
    return [
        namespace("lane"),
        service("lane", "web", ips=[SVC_IP], ports=[port("http", 80)]),
        service("lane", "db", headless=True, ports=[port("sql", 5432)]),
        endpoint_slice("lane", "db-1", "db", [endpoint(ip) for ip in POD_IPS]),
        service("lane", "solo", headless=True, ports=[port("sql", 5432)]),
        endpoint_slice("lane", "solo-1", "solo", [endpoint(SOLO_IP)]),
    ]


COREFILE = """\
.:{PORT} {{
    prometheus 127.0.0.1:{MPORT}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint {API}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30 {{
        success {CAP}
        disable success cluster.local
        disable denial cluster.local
    }}
    hosts {{
        192.0.2.1 one.cached.test
        192.0.2.2 two.cached.test
        192.0.2.3 three.cached.test
        fallthrough
    }}
    loadbalance
}}
hosts.test:{PORT} {{
    prometheus 127.0.0.1:{MPORT}
    hosts {HOSTS} {{
        reload 0.1s
    }}
}}
zone.test:{PORT} {{
    prometheus 127.0.0.1:{MPORT}
    file {ZONE} {{
        reload 0.1s
    }}
}}
"""

ZONE = """\
$ORIGIN zone.test.
@ 3600 IN SOA ns.zone.test. admin.zone.test. {SERIAL} 7200 3600 1209600 300
@ 3600 IN NS ns.zone.test.
ns 3600 IN A 192.0.2.53
www 300 IN A {ADDRESS}
"""


class Served(ServedEngine):
    """The test's Corefile served on a thread of this process."""

    def __init__(self, tmp: Path, cluster: DevCluster, express_on: bool = True,
                 cache_cap: int = 9984, batched: bool = True) -> None:
        self.tmp = tmp
        self.hosts = tmp / "hosts"
        self.hosts.write_text("198.51.100.1 www.hosts.test\n")
        self.zone = tmp / "zone.db"
        self.write_zone(1, "198.51.100.10")
        self.mport = free_port()
        text = COREFILE.format(PORT=1053, MPORT=self.mport, API=cluster.url, CAP=cache_cap,
                               HOSTS=self.hosts, ZONE=self.zone)
        super().__init__(text, batched=batched)
        self.engine.express = express_on  # (read per query)

    def write_zone(self, serial: int, address: str) -> None:
        self.zone.write_text(ZONE.format(SERIAL=serial, ADDRESS=address))

    def ask(self, name: str, rdtype: str = "A", qid: int = 4242) -> bytes:
        q = dns.message.make_query(name, rdtype)
        q.id = qid
        return self.exchange(q.to_wire())

    def express_hits(self) -> int:
        return int(self.call(lambda: self.engine.prepared.express_hits))


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    c = start_cluster(_objects())
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def served(tmp_path: Path, cluster: DevCluster) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(**kw: Any) -> Served:
        where = tmp_path / str(len(made))
        where.mkdir()
        s = Served(where, cluster, **kw)
        made.append(s)
        wait_for(lambda: _addresses(s.ask("solo.lane.svc.cluster.local.")) == [SOLO_IP], 20,
                 "the cluster never synced")
        return s

    yield make
    for s in made:
        s.close()


def _addresses(wire: bytes) -> list[str]:
    reply = dns.message.from_wire(wire)
    return [rd.address for rrset in reply.answer for rd in rrset
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]


def _serial_zeroed(wire: bytes) -> bytes:
    """The reply with the serial of any SOA record set to 0 (same layout otherwise)."""
    reply = dns.message.from_wire(wire)
    for section in (reply.answer, reply.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA:
                soa = rrset[0]
                rrset.clear()
                rrset.add(soa.replace(serial=0))
    return reply.to_wire()


def _ttls(wire: bytes) -> list[int]:
    return [rrset.ttl for rrset in dns.message.from_wire(wire).answer]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter, and the histograms' counts (which bucket a duration falls in depends on
    the machine's speed; the gauges are the process's, shared by the servers of a test)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram"):
            continue
        for s in family.samples:
            if s.name.startswith("coredns_") and s.name.endswith(("_total", "_count")):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


# Plain answers of every writer: kubernetes (A, AAAA NODATA, NXDOMAIN, SRV-less headless A
# is rotated: see the rotation test), the cache over the kubernetes PTR and over hosts, hosts
# and file in blocks of their own.  Spellings differ: the lane keeps each exact query.
PLAIN = [
    ("web.lane.svc.cluster.local.", "A"),
    ("WEB.Lane.svc.cluster.local.", "A"),
    ("web.lane.svc.cluster.local.", "AAAA"),
    ("nothing.lane.svc.cluster.local.", "A"),
    ("10.40.96.10.in-addr.arpa.", "PTR"),
    ("one.cached.test.", "A"),
    ("www.hosts.test.", "A"),
    ("www.zone.test.", "A"),
    ("Www.Zone.Test.", "A"),
]


def _round(s: Served, repeats: int) -> list[list[bytes]]:
    return [[s.ask(name, rdtype) for _ in range(repeats)] for name, rdtype in PLAIN]


@batched_only
def test_express_repeats_are_the_hot_paths_bytes_and_counts(served: Callable[..., Served]) -> None:
    """Asked five times, each query is answered by the chain (or the direct path), then the
    hot path, then the lane three times: the same bytes every time.  A server with the lane off gives the same bytes, and the
    same metrics (every counter, durations aside)."""
    off = served(express_on=False)
    on = served()
    results = {}
    deltas = {}
    for s in (off, on):
        hits_before = s.express_hits()
        before = _scrape(s.mport)
        results[s] = _round(s, 5)
        deltas[s] = _delta(before, _scrape(s.mport))
        lane = s.express_hits() - hits_before
        # (another spelling of a name asked before is a hot-path hit at once: 4 repeats)
        spellings = len(PLAIN) - len({(n.lower(), t) for n, t in PLAIN})
        assert lane == (3 * len(PLAIN) + spellings if s is on else 0)
    for (name, rdtype), got_off, got_on in zip(PLAIN, results[off], results[on], strict=True):
        # (the two kubernetes indexes were made in different seconds: their SOA serials may differ)
        assert [_serial_zeroed(w) for w in got_on] == [_serial_zeroed(w) for w in got_off], (name, rdtype)
        assert len(set(got_on[1:])) == 1, (name, rdtype)  # hot path == lane, byte for byte
        assert got_on[1] == got_on[0], (name, rdtype)
    assert deltas[on] == deltas[off]
    responses = sum(v for (n, _), v in deltas[on].items() if n == "coredns_dns_responses_total")
    assert responses == 5 * len(PLAIN)


@batched_only
def test_rotated_answers_lead_with_each_address_in_turn(served: Callable[..., Served]) -> None:
    s = served()
    name = "db.lane.svc.cluster.local."
    s.ask(name)  # prepared
    s.ask(name)  # the hot path makes the lane's item
    before = s.express_hits()
    leads = [_addresses(s.ask(name))[0] for _ in range(2 * len(POD_IPS))]
    assert s.express_hits() - before == 2 * len(POD_IPS)
    assert sorted(leads[: len(POD_IPS)]) == sorted(POD_IPS)
    assert leads[len(POD_IPS):] == leads[: len(POD_IPS)]  # the same cycle again
    assert all(sorted(_addresses(s.ask(name))) == sorted(POD_IPS) for _ in range(4))


@batched_only
def test_a_kubernetes_change_takes_effect_on_the_next_query(served: Callable[..., Served],
                                                             cluster: DevCluster) -> None:
    s = served()
    name = "solo.lane.svc.cluster.local."
    for _ in range(4):
        assert _addresses(s.ask(name)) == [SOLO_IP]
    assert s.express_hits() > 0
    plugin = next(p for p in s.engine.blocks[0].plugins if p.name == "kubernetes")
    version = s.call(lambda: plugin.index.version)
    cluster.apply(endpoint_slice("lane", "solo-1", "solo", [endpoint(NEW_IP)]))
    # Once the loop applied the event, the very next query has the new address.
    wait_for(lambda: s.call(lambda: plugin.index.version) != version, 10, "the event never came")
    assert _addresses(s.ask(name)) == [NEW_IP]
    for _ in range(3):
        assert _addresses(s.ask(name)) == [NEW_IP]


@batched_only
def test_the_cache_countdown_moves_through_the_lane(served: Callable[..., Served]) -> None:
    s = served()
    name = "10.40.96.10.in-addr.arpa."
    first = [_ttls(s.ask(name, "PTR")) for _ in range(4)]  # miss, then repeats in one second
    before = s.express_hits()
    time.sleep(1.1)
    later = [_ttls(s.ask(name, "PTR")) for _ in range(4)]
    assert s.express_hits() > before
    assert first[0] == [30]
    assert {t[0] for t in later} == {later[0][0]} and later[0][0] < first[-1][0]


@batched_only
def test_an_entry_the_cache_lets_go_of_while_fresh_leaves_the_lane(served: Callable[..., Served]) -> None:
    """With room for one success entry, asking another name evicts the first while it is
    fresh: the next repeat of the first is a cache miss again, not an express repeat."""
    s = served(cache_cap=1)
    for _ in range(4):
        assert _addresses(s.ask("one.cached.test.")) == ["192.0.2.1"]
    before = _scrape(s.mport)
    lane_before = s.express_hits()
    assert _addresses(s.ask("two.cached.test.")) == ["192.0.2.2"]  # evicts one.cached.test
    assert _addresses(s.ask("one.cached.test.")) == ["192.0.2.1"]
    assert s.express_hits() == lane_before
    misses = _delta(before, _scrape(s.mport))
    assert sum(v for (n, _), v in misses.items() if n == "coredns_cache_misses_total") == 2


@batched_only
@pytest.mark.parametrize("writer", ["file", "hosts"])
def test_a_reload_takes_effect_through_the_lane(served: Callable[..., Served], writer: str) -> None:
    s = served()
    name = "www.zone.test." if writer == "file" else "www.hosts.test."
    old = "198.51.100.10" if writer == "file" else "198.51.100.1"
    for _ in range(4):
        assert _addresses(s.ask(name)) == [old]
    assert s.express_hits() > 0
    time.sleep(0.05)  # (a later modification time)
    if writer == "file":
        s.write_zone(2, "198.51.100.20")
    else:
        s.hosts.write_text("198.51.100.2 www.hosts.test\n")
    new = "198.51.100.20" if writer == "file" else "198.51.100.2"
    wait_for(lambda: _addresses(s.ask(name)) == [new], 10, "the reload never showed")
    assert all(_addresses(s.ask(name)) == [new] for _ in range(4))


@batched_only
def test_evicted_prepared_entries_keep_their_counts(served: Callable[..., Served]) -> None:
    """A small prepared store evicts entries the lane has repeated: every repeat is still in
    the responses counter."""
    s = served()
    s.call(lambda: setattr(s.engine.prepared, "limit", 4))
    names = ["one.cached.test.", "two.cached.test.", "three.cached.test.",
             "web.lane.svc.cluster.local.", "www.hosts.test.", "www.zone.test."]
    before = _scrape(s.mport)
    lane_before = s.express_hits()
    asked = 0
    for _ in range(3):
        for name in names:
            for _ in range(4):
                s.ask(name)
                asked += 1
    assert s.express_hits() > lane_before
    delta = _delta(before, _scrape(s.mport))
    assert sum(v for (n, _), v in delta.items() if n == "coredns_dns_responses_total") == asked


def test_the_recvfrom_reader_keeps_only_keys(served: Callable[..., Served]) -> None:
    """Without the batch reader nobody serves the lane: repeats take the hot path, and the
    lane remembers query keys, not replies."""
    s = served(batched=False)
    assert s.listener.mode == "recvfrom"
    for name, rdtype in PLAIN:
        assert len({s.ask(name, rdtype) for _ in range(4)}) == 1
    assert s.express_hits() == 0
    items = s.call(lambda: list(s.engine.lane.values()))
    assert items and all(item.tails == () for item in items)


@batched_only
def test_the_batch_reader_serves_the_lane(served: Callable[..., Served]) -> None:
    """Also for a query whose key an engine caller that serves no lane learnt first."""
    s = served()
    assert s.listener.mode == "mmsg"
    q = dns.message.make_query("www.zone.test.", "A")
    q.id = 4242
    wire = q.to_wire()
    first = s.ask("www.zone.test.")  # prepared
    for _ in range(3):  # hits that keep only the key
        assert s.call(lambda: s.engine.fast(wire, "udp", "127.0.0.1")) == (first, None)
    before = s.express_hits()
    assert [s.ask("www.zone.test.") for _ in range(3)] == [first] * 3
    assert s.express_hits() - before == 2  # the hot path keeps the reply, then the lane


def test_the_lane_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DNSD_EXPRESS", raising=False)
    assert express.wanted()
    for off in ("0", "off", "false", "No"):
        monkeypatch.setenv("DNSD_EXPRESS", off)
        assert not express.wanted()
    monkeypatch.setenv("DNSD_EXPRESS", "1")
    assert express.wanted()
