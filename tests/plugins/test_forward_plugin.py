"""forward: pass-through, transports, timeouts, anti-spoofing, policies, health, limits, leaks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.flags
import dns.rcode
import pytest
from support import dig, free_port
from upstream import addresses, aquery, open_fds, serve_corefile

from dnsd import metrics
from dnsd.chain import SetupContext
from dnsd.corefile.ast import CorefileError, Directive
from dnsd.plugins.forward import Plugin
from dnsd.plugins.forward.setup import parse_forward


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    metrics.flush_hot_path()  # hot-path hits reach the metrics in batches
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def tag(msg: dns.message.Message) -> str:
    return msg.answer[0][0].strings[0].decode() if msg.answer else ""


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_answers_and_rcodes_pass_through(upstreams, tcp: bool) -> None:
    up = upstreams()
    async with serve_corefile(f".:{{PORT}} {{\n forward . {up.addr}\n}}\n") as srv:
        ok = await aquery(srv.port, "www.example.org", tcp=tcp)
        assert ok.rcode() == dns.rcode.NOERROR
        assert addresses(ok) == ["192.0.2.1"]
        assert ok.answer[0].ttl == 300
        assert ok.flags & dns.flags.AA and ok.flags & dns.flags.RA  # upstream's flags kept
        nx = await aquery(srv.port, "nope.example.org", tcp=tcp)
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert nx.authority[0].rdtype == dns.rdatatype.SOA and nx.authority[0].ttl == 300
        nodata = await aquery(srv.port, "www.example.org", "MX", tcp=tcp)
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    proto = "tcp" if tcp else "udp"
    assert up.count(proto=proto) == 3 and up.count() == 3  # same transport as the client


async def test_fresh_id_and_source_port_per_query(upstreams) -> None:
    up = upstreams()
    async with serve_corefile(f".:{{PORT}} {{\n forward . {up.addr}\n}}\n") as srv:
        replies = await asyncio.gather(*(aquery(srv.port, "www.example.org", id=4242)
                                         for _ in range(20)))
    assert all(r.id == 4242 for r in replies)  # the client's ID is restored
    assert len(set(up.ids)) >= 18 and 4242 not in up.ids
    assert len(set(up.source_ports)) >= 18


async def test_all_upstreams_dead_servfail_within_deadline(upstreams) -> None:
    dead, forger = upstreams(mode="dead"), upstreams(mode="spoof_only")
    conf = f".:{{PORT}} {{\n forward . {dead.addr} {forger.addr} {{\n max_fails 0\n }}\n}}\n"
    async with serve_corefile(conf) as srv:
        start = time.monotonic()
        reply = await aquery(srv.port, "www.example.org", timeout=10)
        elapsed = time.monotonic() - start
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert 4.5 <= elapsed <= 6.5  # 2 s per try, 5 s per query
    assert dead.count() >= 1 and forger.count() >= 1  # both tried, forged answers refused


@pytest.mark.parametrize("mode", ["spoof_id", "spoof_question", "garbage"])
async def test_spoofed_replies_are_ignored(upstreams, mode: str) -> None:
    up = upstreams(mode=mode, delay=0.1)
    async with serve_corefile(f".:{{PORT}} {{\n forward . {up.addr}\n}}\n") as srv:
        reply = await aquery(srv.port, "www.example.org")
    assert addresses(reply) == ["192.0.2.1"]  # the real answer that came after the forgery
    assert up.count() == 1


async def test_truncated_reply_goes_to_udp_client_and_tcp_client_gets_all(upstreams) -> None:
    up = upstreams(mode="truncate")
    async with serve_corefile(f".:{{PORT}} {{\n forward . {up.addr}\n}}\n") as srv:
        udp = await aquery(srv.port, "big.example.org", "TXT")
        assert udp.flags & dns.flags.TC and not udp.answer
        tcp = await aquery(srv.port, "big.example.org", "TXT", tcp=True)
    assert len(tcp.answer[0]) == 30
    assert up.count(proto="udp") == 1 and up.count(proto="tcp") == 1


async def test_prefer_udp_retries_truncated_reply_over_tcp(upstreams) -> None:
    up = upstreams(mode="truncate")
    conf = f".:{{PORT}} {{\n forward . {up.addr} {{\n prefer_udp\n }}\n}}\n"
    async with serve_corefile(conf) as srv:
        reply = await aquery(srv.port, "big.example.org", "TXT", tcp=True)
    assert len(reply.answer[0]) == 30 and not reply.flags & dns.flags.TC
    assert [p for p, n, _ in up.queries if n != "."] == ["udp", "tcp"]


async def test_force_tcp_reuses_connections(upstreams) -> None:
    up = upstreams()
    conf = f".:{{PORT}} {{\n forward . {up.addr} {{\n force_tcp\n expire 5s\n }}\n}}\n"
    async with serve_corefile(conf) as srv:
        for _ in range(5):
            assert addresses(await aquery(srv.port, "www.example.org")) == ["192.0.2.1"]
    assert up.count(proto="tcp") == 5 and up.count(proto="udp") == 0
    assert up.connections == 1


async def test_idle_tcp_connections_expire(upstreams) -> None:
    up = upstreams()
    conf = f".:{{PORT}} {{\n forward . {up.addr} {{\n force_tcp\n expire 200ms\n }}\n}}\n"
    async with serve_corefile(conf) as srv:
        proxy = srv.plugin("forward").forwarders[0].proxies[0]
        await aquery(srv.port, "www.example.org")
        assert len(proxy._conns) == 1
        await asyncio.sleep(0.4)
        assert proxy._conns == []
        await aquery(srv.port, "www.example.org")
    assert up.connections == 2


async def test_max_concurrent_answers_refused(upstreams) -> None:
    up = upstreams(mode="slow", delay=0.5)
    conf = f".:{{PORT}} {{\n forward . {up.addr} {{\n max_concurrent 2\n }}\n}}\n"
    before = metric("coredns_forward_max_concurrent_rejects_total")
    async with serve_corefile(conf) as srv:
        replies = await asyncio.gather(*(aquery(srv.port, f"q{i}.example.org") for i in range(5)))
    rcodes = sorted(r.rcode() for r in replies)
    assert rcodes.count(dns.rcode.REFUSED) == 3 and rcodes.count(dns.rcode.NXDOMAIN) == 2
    assert metric("coredns_forward_max_concurrent_rejects_total") - before == 3


@pytest.mark.parametrize("policy,expected", [
    ("sequential", [6, 0, 0]), ("round_robin", [2, 2, 2]),
])
async def test_policies(upstreams, policy: str, expected: list[int]) -> None:
    ups = [upstreams(tag=t) for t in "abc"]
    addrs = " ".join(u.addr for u in ups)
    conf = f".:{{PORT}} {{\n forward . {addrs} {{\n policy {policy}\n }}\n}}\n"
    async with serve_corefile(conf) as srv:
        for _ in range(6):
            await aquery(srv.port, "who.example.org", "TXT")
    assert [u.count() for u in ups] == expected


async def test_random_policy_uses_every_upstream(upstreams) -> None:
    ups = [upstreams(tag=t) for t in "ab"]
    conf = f".:{{PORT}} {{\n forward . {ups[0].addr} {ups[1].addr}\n}}\n"
    async with serve_corefile(conf) as srv:
        seen = {tag(await aquery(srv.port, "who.example.org", "TXT")) for _ in range(30)}
    assert seen == {"a", "b"}


async def test_next_rcode_hands_over_to_next_plugin(upstreams) -> None:
    up = upstreams()
    conf = f".:{{PORT}} {{\n forward . {up.addr} {{\n next NXDOMAIN\n }}\n whoami\n}}\n"
    async with serve_corefile(conf) as srv:
        nx = await aquery(srv.port, "nope.example.org")
        ok = await aquery(srv.port, "www.example.org")
    assert nx.rcode() == dns.rcode.NOERROR and not nx.answer
    assert any(r.rdtype == dns.rdatatype.A for r in nx.additional)  # whoami answered
    assert addresses(ok) == ["192.0.2.1"]


async def test_several_forwards_chain_with_next(upstreams) -> None:
    first, second = upstreams(tag="first"), upstreams(tag="second")
    first.records = {}  # everything is NXDOMAIN there (except who.example.org)
    conf = (f".:{{PORT}} {{\n forward . {first.addr} {{\n next NXDOMAIN SERVFAIL\n }}\n"
            f" forward . {second.addr}\n}}\n")
    async with serve_corefile(conf) as srv:
        assert addresses(await aquery(srv.port, "www.example.org")) == ["192.0.2.1"]
        assert tag(await aquery(srv.port, "who.example.org", "TXT")) == "first"
    assert first.count("www.example.org.") == 1 and second.count("www.example.org.") == 1


async def test_from_zone_and_except(upstreams) -> None:
    up = upstreams()
    conf = (f".:{{PORT}} {{\n forward example.org {up.addr} {{\n except private.example.org\n }}\n"
            " whoami\n}\n")
    async with serve_corefile(conf) as srv:
        assert addresses(await aquery(srv.port, "www.example.org")) == ["192.0.2.1"]
        outside = await aquery(srv.port, "www.other.test")
        hidden = await aquery(srv.port, "db.private.example.org")
    assert not outside.answer and outside.additional  # whoami
    assert not hidden.answer and hidden.additional
    assert up.count() == 1


async def test_health_check_marks_upstream_down_then_healthy(upstreams) -> None:
    port_a = free_port()  # nothing listens there yet: queries and checks are refused
    b = upstreams(tag="b")
    conf = (f".:{{PORT}} {{\n forward . 127.0.0.1:{port_a} {b.addr} {{\n policy sequential\n"
            "  health_check 0.1s\n  max_fails 1\n }\n}\n")
    async with serve_corefile(conf) as srv:
        proxy_a = srv.plugin("forward").forwarders[0].proxies[0]
        assert tag(await aquery(srv.port, "who.example.org", "TXT")) == "b"
        for _ in range(40):
            if proxy_a.down(1):
                break
            await asyncio.sleep(0.05)
        assert proxy_a.down(1)
        assert metric("coredns_proxy_healthcheck_failures_total",
                      {"proxy_name": "forward", "to": f"127.0.0.1:{port_a}"}) >= 2
        upstreams(tag="a", port=port_a)  # the upstream comes back
        for _ in range(60):
            if not proxy_a.down(1):
                break
            await asyncio.sleep(0.05)
        assert proxy_a.fails == 0
        assert tag(await aquery(srv.port, "who.example.org", "TXT")) == "a"


async def test_failfast_when_all_upstreams_unhealthy() -> None:
    ports = [free_port(), free_port()]  # nobody listens: refused
    to = " ".join(f"127.0.0.1:{p}" for p in ports)
    conf = (f".:{{PORT}} {{\n forward . {to} {{\n health_check 0.05s\n max_fails 1\n"
            "  failfast_all_unhealthy_upstreams\n }\n}\n")
    broken = metric("coredns_forward_healthcheck_broken_total")
    async with serve_corefile(conf) as srv:
        first = await aquery(srv.port, "www.example.org")
        assert first.rcode() == dns.rcode.SERVFAIL
        start = time.monotonic()
        again = await aquery(srv.port, "www.example.org")
        assert again.rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - start < 0.5
    assert metric("coredns_forward_healthcheck_broken_total") > broken


async def test_no_socket_or_task_leaks(upstreams) -> None:
    good, dead = upstreams(), upstreams(mode="dead")
    # round_robin starts at the second upstream: the warm-up query goes to the good one.
    conf = (f".:{{PORT}} {{\n forward . {dead.addr} {good.addr} {{\n policy round_robin\n"
            "  max_fails 0\n }\n}\n")
    baseline, base_tasks = open_fds(), len(asyncio.all_tasks())
    async with serve_corefile(conf) as srv:
        await aquery(srv.port, "www.example.org")
        await asyncio.sleep(0.1)
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        names = [f"n{i}.example.org" if i % 3 else "www.example.org" for i in range(200)]
        replies = await asyncio.gather(*(aquery(srv.port, n, tcp=i % 4 == 0, timeout=10)
                                         for i, n in enumerate(names)))
        assert all(r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) for r in replies)
        assert dead.count() >= 50  # about half of the queries timed out once first
        await asyncio.sleep(0.3)
        # Only idle TCP connections kept for reuse remain (each with the upstream's end).
        cached = sum(len(p._conns) for p in srv.plugin("forward").forwarders[0].proxies)
        assert open_fds() <= fds + 2 * cached + 2
        assert len(asyncio.all_tasks()) <= tasks
    await asyncio.sleep(0.3)
    assert open_fds() <= baseline + 1
    assert len(asyncio.all_tasks()) <= base_tasks


def test_dnsd_process_forwards_with_dig(dnsd, upstreams) -> None:
    up = upstreams()
    server = dnsd(f".:{{PORT}} {{\n forward . {up.addr}\n}}\n")
    out = dig("nope.example.org", "A", port=server.port)
    assert "status: NXDOMAIN" in out and "SOA" in out
    out = dig("+tcp", "+short", "www.example.org", "A", port=server.port)
    assert out.strip() == "192.0.2.1"


# --- setup -----------------------------------------------------------------------------------

def _d(args: str, *children: str) -> Directive:
    kids = [Directive(c.split()[0], c.split()[1:], line=i + 2) for i, c in enumerate(children)]
    return Directive("forward", args.split(), kids, line=1)


def test_setup_parses_options() -> None:
    cfg = parse_forward(_d("Example.ORG 10.0.0.1 dns://10.0.0.2:5353 [::1]:53 ::2",
                           "except a.example.org b.example.org", "force_tcp", "expire 20s",
                           "max_fails 3", "health_check 1s no_rec domain example.net",
                           "policy sequential", "max_concurrent 100", "next NXDOMAIN servfail"))
    assert cfg.zone == "example.org."
    assert cfg.upstreams == [("10.0.0.1", 53), ("10.0.0.2", 5353), ("::1", 53), ("::2", 53)]
    assert cfg.ignored == ["a.example.org.", "b.example.org."]
    assert cfg.force_tcp and cfg.expire == 20 and cfg.max_fails == 3 and cfg.max_concurrent == 100
    assert cfg.health.interval == 1 and not cfg.health.recursion_desired
    assert cfg.health.domain == "example.net."
    assert cfg.next_rcodes == {3, 2}


def test_setup_reads_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.org\nnameserver 10.0.0.1\nnameserver 10.0.0.2\noptions ndots:5\n")
    assert parse_forward(_d(f". {conf}")).upstreams == [("10.0.0.1", 53), ("10.0.0.2", 53)]
    conf.write_text("".join(f"nameserver 10.0.0.{i}\n" for i in range(16)))
    with pytest.raises(CorefileError, match="more than 15"):
        parse_forward(_d(f". {conf}"))


@pytest.mark.parametrize("args,children,message", [
    (". tls://1.1.1.1", [], "not supported"),
    (". 10.0.0.1", ["tls"], "not supported"),
    (". 10.0.0.1", ["tls_servername dns.example"], "not supported"),
    (". not-an-address", [], "not an IP address or file"),
    (".", [], "Wrong argument count"),
    (". 10.0.0.1", ["policy fastest"], "unknown policy"),
    (". 10.0.0.1", ["next NOPE"], "not a valid rcode"),
    (". 10.0.0.1", ["max_fails -1"], "out of range"),
    (". 10.0.0.1", ["bogus"], "unknown property"),
    (". 10.0.0.1:99999", [], "out of range"),
])
def test_setup_errors(args: str, children: list[str], message: str) -> None:
    with pytest.raises(CorefileError, match=message) as err:
        Plugin.setup([_d(args, *children)], SetupContext(zones=["."], port=53))
    assert err.value.line >= 1
