"""Prepared (hot-path) answers of the kubernetes plugin are invalidated precisely: a change
drops the answers that read the changed service, address or namespace, and no others.

The engine runs in-process (its hot path and general path called directly), fed by the real
``kubernetes`` client watching the API emulator over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
from k8s_support import endpoint, endpoint_slice, namespace, port, service, start_cluster

from dnsd.corefile import parse
from dnsd.serve.runtime import Runtime

NS = "prep"
http = port("http", 80)


def _objects() -> list[dict[str, Any]]:
    return [
        namespace(NS),
        service(NS, "a", ips=["10.96.9.1"], ports=[http]),
        service(NS, "b", ips=["10.96.9.2"], ports=[http]),
        service(NS, "hl", headless=True, ports=[http]),
        endpoint_slice(NS, "hl-x", "hl", [endpoint("10.9.0.1"), endpoint("10.9.0.2")], [http]),
    ]


async def _ask(engine: Any, name: str, rdtype: str = "A") -> tuple[dns.message.Message, bool]:
    """(reply, served from a prepared answer?)"""
    data = dns.message.make_query(name, rdtype).to_wire()
    before = engine.prepared.hits
    reply, key = engine.fast(data, "udp", "127.0.0.1")
    if reply is None:
        reply = await engine.handle(data, key=key)
    return dns.message.from_wire(reply), engine.prepared.hits > before


def _texts(msg: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in msg.answer for rd in rrset}


async def _until(engine: Any, name: str, rdtype: str, want: set[str], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg, _ = await _ask(engine, name, rdtype)
        if _texts(msg) == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} {rdtype} never became {want}")


def test_a_change_invalidates_only_the_answers_that_read_it() -> None:
    cluster = start_cluster(_objects())

    async def run() -> None:
        runtime = Runtime.build(parse(
            f"cluster.local:1053 in-addr.arpa:1053 {{\n kubernetes cluster.local in-addr.arpa {{\n"
            f"  endpoint {cluster.url}\n }}\n}}\n"))
        await runtime.start_plugins()
        engine = next(iter(runtime.engines.values()))
        try:
            a, b = f"a.{NS}.svc.cluster.local.", f"b.{NS}.svc.cluster.local."
            hl, missing = f"hl.{NS}.svc.cluster.local.", f"new.{NS}.svc.cluster.local."
            ptr_a = dns.reversename.from_address("10.96.9.1").to_text()
            ptr_new = dns.reversename.from_address("10.96.9.3").to_text()
            names = [(a, "A"), (b, "A"), (hl, "A"), (missing, "A"), (ptr_a, "PTR"), (ptr_new, "PTR")]
            for name, rdtype in names:  # prepare, then check each is served prepared
                await _ask(engine, name, rdtype)
                assert (await _ask(engine, name, rdtype))[1], name

            # b's endpoints change: only b's answers are re-made.
            cluster.apply(endpoint_slice(NS, "b-x", "b", [endpoint("10.9.1.1")], [http]))
            await asyncio.sleep(0.5)
            assert (await _ask(engine, a, "A"))[1]
            assert (await _ask(engine, hl, "A"))[1]
            assert (await _ask(engine, ptr_a, "PTR"))[1]
            msg, hit = await _ask(engine, b, "A")
            assert not hit and _texts(msg) == {"10.96.9.2"}

            # A new service: its name stops being NXDOMAIN, its ClusterIP gets a PTR; the
            # NXDOMAIN carried the SOA, whose serial changed too.
            cluster.apply(service(NS, "new", ips=["10.96.9.3"], ports=[http]))
            await _until(engine, missing, "A", {"10.96.9.3"})
            msg, _ = await _ask(engine, ptr_new, "PTR")
            assert _texts(msg) == {f"new.{NS}.svc.cluster.local."}
            assert (await _ask(engine, a, "A"))[1]

            # A headless service's endpoint goes: its answer changes, a's does not.
            cluster.apply(endpoint_slice(NS, "hl-x", "hl", [endpoint("10.9.0.1")], [http]))
            await _until(engine, hl, "A", {"10.9.0.1"})
            assert (await _ask(engine, a, "A"))[1]

            # Deleting a service drops its answers (and its PTR).
            cluster.delete("Service", "a", NS)
            msg, hit = await _ask(engine, a, "A")
            deadline = time.monotonic() + 5
            while msg.rcode() != dns.rcode.NXDOMAIN and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                msg, hit = await _ask(engine, a, "A")
            assert msg.rcode() == dns.rcode.NXDOMAIN
            msg, _ = await _ask(engine, ptr_a, "PTR")
            assert msg.rcode() == dns.rcode.NXDOMAIN
        finally:
            await runtime.stop_plugins()

    try:
        asyncio.run(run())
    finally:
        cluster.stop()
