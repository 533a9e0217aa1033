"""forward (with cache in front) against misbehaving upstreams: dead, slow, truncating, garbage,
spoofed IDs and questions, SERVFAIL.  Clients always get an answer within the forward deadline,
forged replies are never passed on nor cached, and nothing leaks: file descriptors of the dnsd
process, asyncio tasks of an in-process server."""

from __future__ import annotations

import asyncio
import os
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnslib import RCODE, DNSRecord
from support import Dnsd, query
from upstream import Upstream, addresses, aquery, open_fds, serve_corefile

FORWARD_DEADLINE = 5.0  # dnsd.plugins.forward.plugin.FORWARD_TIMEOUT (CoreDNS's 5 s)


def conf(*ups: Upstream, cache: bool = True, extra: str = "") -> str:
    addrs = " ".join(u.addr for u in ups)
    cache_block = " cache 30 {\n  servfail 0\n }\n" if cache else ""
    return f".:{{PORT}} {{\n{cache_block} forward . {addrs} {{\n  max_fails 0\n{extra} }}\n}}\n"


async def timed(port: int, name: str, rdtype: str = "A", tcp: bool = False, **kw: object):  # noqa: ANN201
    start = time.monotonic()
    reply = await aquery(port, name, rdtype, tcp=tcp, timeout=FORWARD_DEADLINE + 5, **kw)
    return reply, time.monotonic() - start


async def test_servfail_within_the_deadline(upstreams) -> None:
    """Dead, too slow (3 s > the 2 s read timeout) and forging-only upstreams, asked at once
    over UDP and TCP: every client gets SERVFAIL within the forward deadline."""
    dead, slow, forger = (upstreams(mode="dead"), upstreams(mode="slow", delay=3.0),
                          upstreams(mode="spoof_only"))
    text = "".join(f"{zone}:{{PORT}} {{\n forward . {up.addr} {{\n  max_fails 0\n }}\n}}\n"
                   for zone, up in (("dead.test", dead), ("slow.test", slow), ("forged.test", forger)))
    async with serve_corefile(text) as srv:
        asks = [timed(srv.port, f"www.{zone}", tcp=tcp)
                for zone in ("dead.test", "slow.test", "forged.test") for tcp in (False, True)]
        for reply, took in await asyncio.gather(*asks):
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert took < FORWARD_DEADLINE + 1.0
        assert dead.count() >= 4 and slow.count() >= 4  # it kept trying within the deadline
        # the late answers to abandoned tries arrive at closed sockets: nothing breaks; the
        # forger turns honest: its real answer comes through, nothing forged was kept
        await asyncio.sleep(0.5)
        forger.mode = "normal"
        fixed = await aquery(srv.port, "www.forged.test")
        assert fixed.rcode() == dns.rcode.NXDOMAIN and "6.6.6.6" not in addresses(fixed)


async def test_slow_upstream_within_the_read_timeout(upstreams) -> None:
    slow = upstreams(mode="slow", delay=0.4)
    async with serve_corefile(conf(slow)) as srv:
        reply, took = await timed(srv.port, "www.example.org")
        assert addresses(reply) == ["192.0.2.1"] and 0.4 <= took < 2.0


async def test_truncating_upstream(upstreams) -> None:
    trunc = upstreams(mode="truncate")
    async with serve_corefile(conf(trunc)) as srv:
        udp = await aquery(srv.port, "www.example.org")
        assert udp.flags & dns.flags.TC and not udp.answer  # passed on as it came
        tcp = await aquery(srv.port, "www.example.org", tcp=True)
        assert not tcp.flags & dns.flags.TC and addresses(tcp) == ["192.0.2.1"]
        # the truncated reply was not cached as the answer: UDP asks again and is truncated
        again = await aquery(srv.port, "www.example.org")
        assert again.flags & dns.flags.TC or addresses(again) == ["192.0.2.1"]
    async with serve_corefile(conf(trunc, extra="  prefer_udp\n")) as srv:
        # prefer_udp: the forwarder retries a truncated reply over TCP itself
        full = await aquery(srv.port, "big.example.org", "TXT", tcp=True)
        assert len(full.answer[0]) == 30


async def test_garbage_before_the_answer(upstreams) -> None:
    junk = upstreams(mode="garbage", delay=0.05)
    async with serve_corefile(conf(junk)) as srv:
        for tcp in (False, True):
            reply, took = await timed(srv.port, "www.example.org", tcp=tcp)
            assert addresses(reply) == ["192.0.2.1"] and took < 1.5


@pytest.mark.parametrize("mode", ["spoof_id", "spoof_question"])
async def test_spoofed_replies_are_dropped_and_never_cached(upstreams, mode: str) -> None:
    up = upstreams(mode=mode, delay=0.1)
    async with serve_corefile(conf(up)) as srv:
        first = await aquery(srv.port, "www.example.org")
        assert addresses(first) == ["192.0.2.1"]  # the real answer, not 6.6.6.6
        seen = up.count()
        again = await aquery(srv.port, "www.example.org")
        assert addresses(again) == ["192.0.2.1"]
        assert up.count() == seen  # from the cache: the real answer is what was cached
        tcp = await aquery(srv.port, "WWW.example.org", tcp=True)
        assert addresses(tcp) == ["192.0.2.1"]


async def test_upstream_servfail_is_passed_on_at_once(upstreams) -> None:
    def servfail(q: DNSRecord, proto: str) -> DNSRecord:
        reply = q.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply

    up = upstreams(handler=servfail)
    async with serve_corefile(conf(up)) as srv:
        reply, took = await timed(srv.port, "www.example.org")
        assert reply.rcode() == dns.rcode.SERVFAIL and took < 1.0
        assert up.count() == 1


async def test_no_task_or_fd_leaks_in_process(upstreams) -> None:
    dead, junk, forger, good = (upstreams(mode="dead"), upstreams(mode="garbage"),
                                upstreams(mode="spoof_only"), upstreams())
    base_fds, base_tasks = open_fds(), len(asyncio.all_tasks())
    async with serve_corefile(conf(dead, junk, forger, good, cache=False,
                                   extra="  policy round_robin\n")) as srv:
        await aquery(srv.port, "www.example.org")
        await asyncio.sleep(0.2)
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        names = [f"n{i}.example.org" for i in range(120)]
        replies = await asyncio.gather(*(aquery(srv.port, n, tcp=i % 3 == 0, timeout=12)
                                         for i, n in enumerate(names)))
        assert all(r.rcode() in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL) for r in replies)
        await asyncio.sleep(0.5)
        cached = sum(len(p._conns) for p in srv.plugin("forward").forwarders[0].proxies)
        assert open_fds() <= fds + 2 * cached + 2
        assert len(asyncio.all_tasks()) <= tasks
    await asyncio.sleep(0.3)
    assert open_fds() <= base_fds + 1
    assert len(asyncio.all_tasks()) <= base_tasks


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_no_fd_leaks_in_the_dnsd_process(upstreams) -> None:
    dead, junk, forger, truncating = (upstreams(mode="dead"), upstreams(mode="garbage"),
                                      upstreams(mode="spoof_id"), upstreams(mode="truncate"))
    # expire 1s: idle upstream TCP connections (kept for reuse) are closed soon after
    text = conf(dead, junk, forger, truncating, cache=False,
                extra="  policy round_robin\n  expire 1s\n")
    server = Dnsd(text).start()
    try:
        pid = server.proc.pid  # type: ignore[union-attr]
        query("warm.example.org", port=server.port, timeout=8)
        time.sleep(0.3)
        before = proc_fds(pid)

        async def burst() -> list[dns.message.Message]:
            return await asyncio.gather(*(aquery(server.port, f"x{i}.example.org", tcp=i % 4 == 0,
                                                 timeout=12) for i in range(200)))

        replies = asyncio.run(burst())
        assert all(r.rcode() in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.NOERROR)
                   for r in replies)
        during = proc_fds(pid)
        time.sleep(3.0)  # late replies land; idle upstream connections expire
        after = proc_fds(pid)
        print(f"\n[dnsd fds] before={before} right-after={during} settled={after}")
        assert after <= before, (before, during, after)
        assert query("warm.example.org", port=server.port, timeout=8).rcode() in (
            dns.rcode.NXDOMAIN, dns.rcode.NOERROR)
    finally:
        server.stop()
