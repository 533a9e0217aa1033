"""transfer: AXFR/IXFR of the kubernetes zone (the reference's §12 stream) and of file zones,
only over TCP and only to the ``to`` addresses; multi-message streams within 64 KiB each."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from k8s_support import (
    LOCAL_IPS,
    LOCAL_V4,
    drop_namespace_object,
    endpoint,
    endpoint_slice,
    namespace,
    port,
    service,
    start_cluster,
    wait_for,
)
from support import ROOT
from upstream import serve_corefile

from dnsd.corefile import CorefileError, parse
from dnsd.plugins.kubernetes import objects
from dnsd.plugins.kubernetes.xfr import srv_weight
from dnsd.serve.engine import Engine, Stream
from dnsd.serve.runtime import Runtime

ZONE_FILE = str(ROOT / "zones" / "example.org")
Z = "cluster.local."


# --- a raw TCP transfer client ------------------------------------------------------------------


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def transfer(port: int, zone: str, rdtype: str = "AXFR", serial: int | None = None,
             timeout: float = 10.0) -> list[tuple[bytes, dns.message.Message]]:
    """Every message of one transfer, as (wire, parsed), until the closing SOA (or the first
    message when it is an error or a lone SOA)."""
    q = dns.message.make_query(zone, rdtype)
    if serial is not None:
        q.authority.append(dns.rrset.from_text(zone, 0, "IN", "SOA",
                                               f"ns. host. {serial} 1 1 1 1"))
    wire = q.to_wire()
    out: list[tuple[bytes, dns.message.Message]] = []
    soas = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        while True:
            size = struct.unpack("!H", recv_exact(s, 2))[0]
            data = recv_exact(s, size)
            msg = dns.message.from_wire(data, one_rr_per_rrset=True)
            out.append((data, msg))
            soas += sum(1 for rrset in msg.answer if rrset.rdtype == dns.rdatatype.SOA)
            if msg.rcode() != dns.rcode.NOERROR or soas >= 2 or (soas == 1 and len(out) == 1
                                                                    and len(msg.answer) == 1):
                return out


def records(messages: list[tuple[bytes, dns.message.Message]]) -> list[str]:
    return [f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
            for _, msg in messages for rrset in msg.answer for rd in rrset]


def check_messages(messages: list[tuple[bytes, dns.message.Message]], qid: int | None = None) -> None:
    for data, msg in messages:
        assert len(data) <= 65535
        assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA
        assert not msg.flags & dns.flags.TC
        assert msg.rcode() == dns.rcode.NOERROR
        assert len(msg.question) == 1
        if qid is not None:
            assert msg.id == qid


# --- the kubernetes zone: the exact §12 stream ------------------------------------------------------


def xfr_objects() -> list[dict[str, Any]]:
    kube_dns_ep = LOCAL_V4 or "10.244.0.2"
    dns_ports = [port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP"), port("metrics", 9153)]
    return [
        namespace("xfr"), namespace("other"), namespace("ghostns"),
        service("kube-system", "kube-dns", ips=["10.96.0.10"], ports=dns_ports),
        endpoint_slice("kube-system", "kube-dns-x", "kube-dns", [endpoint(kube_dns_ep)], dns_ports),
        # dual-stack ClusterIP; a single unnamed port gets no _port._proto SRV
        service("xfr", "alpha", ips=["10.96.5.1", "fd00:10:96::51"], ports=[port("http", 80)]),
        service("xfr", "solo", ips=["10.96.5.2"], ports=[port("", 5000, "UDP")]),
        # the same name in another namespace sorts by namespace
        service("other", "alpha", ips=["10.96.6.1"], ports=[port("dns", 53, "UDP")]),
        # headless, two slices: weights are floor(100/N) per slice; not-ready addresses are out
        service("xfr", "beta", headless=True, ports=[port("http", 8080)]),
        endpoint_slice("xfr", "beta-a", "beta", [
            endpoint("172.16.0.1", hostname="web-0"), endpoint("172.16.0.2"),
            endpoint("172.16.0.3", ready=False), endpoint("172.16.0.4", pod="beta-pod"),
        ], [port("http", 8080), port("", 9000)]),
        endpoint_slice("xfr", "beta-b", "beta", [endpoint("fd00::7")], [port("http", 8080)],
                       family="IPv6"),
        service("xfr", "gamma", external="Www.Example.COM"),
        service("xfr", "delta", external="192.0.2.1"),  # an IP literal: no CNAME
        # a namespace without a Namespace object is not exposed
        service("ghostns", "zeta", ips=["10.96.5.10"], ports=[port("http", 80)]),
    ]


def expected_stream(serial: int) -> list[str]:
    soa = f"{Z} 5 IN SOA ns.dns.{Z} hostmaster.{Z} {serial} 7200 1800 86400 5"
    kd = f"kube-dns.kube-system.svc.{Z}"
    if LOCAL_V4:
        ns = [f"{Z} 5 IN NS {kd}", f"{kd} 5 IN A 10.96.0.10"]
    elif LOCAL_IPS:  # no IPv4 here: NS discovery falls back to ns.dns and the local addresses
        ns = [f"{Z} 5 IN NS ns.dns.{Z}"] + [
            f"ns.dns.{Z} 5 IN {'AAAA' if ':' in ip else 'A'} {ip}" for ip in LOCAL_IPS]
    else:
        ns = []
    a_x, a_o = f"alpha.xfr.svc.{Z}", f"alpha.other.svc.{Z}"
    b = f"beta.xfr.svc.{Z}"
    return [
        soa, *ns,
        f"{a_o} 5 IN A 10.96.6.1",
        f"{a_o} 5 IN SRV 0 100 53 {a_o}", f"_dns._udp.{a_o} 5 IN SRV 0 100 53 {a_o}",
        f"{a_x} 5 IN A 10.96.5.1", f"{a_x} 5 IN AAAA fd00:10:96::51",
        f"{a_x} 5 IN SRV 0 100 80 {a_x}", f"_http._tcp.{a_x} 5 IN SRV 0 100 80 {a_x}",
        # beta-a: 3 ready addresses -> weight 33; beta-b: 1 -> 100
        f"{b} 5 IN A 172.16.0.1", f"web-0.{b} 5 IN A 172.16.0.1",
        f"_http._tcp.{b} 5 IN SRV 0 33 8080 web-0.{b}",
        f"{b} 5 IN A 172.16.0.2", f"172-16-0-2.{b} 5 IN A 172.16.0.2",
        f"_http._tcp.{b} 5 IN SRV 0 33 8080 172-16-0-2.{b}",
        f"{b} 5 IN A 172.16.0.4", f"172-16-0-4.{b} 5 IN A 172.16.0.4",
        f"_http._tcp.{b} 5 IN SRV 0 33 8080 172-16-0-4.{b}",
        f"{b} 5 IN AAAA fd00::7", f"fd00--7.{b} 5 IN AAAA fd00::7",
        f"_http._tcp.{b} 5 IN SRV 0 100 8080 fd00--7.{b}",
        f"gamma.xfr.svc.{Z} 5 IN CNAME www.example.com.",
        f"{kd} 5 IN A 10.96.0.10",
        f"{kd} 5 IN SRV 0 100 53 {kd}", f"_dns._udp.{kd} 5 IN SRV 0 100 53 {kd}",
        f"{kd} 5 IN SRV 0 100 53 {kd}", f"_dns-tcp._tcp.{kd} 5 IN SRV 0 100 53 {kd}",
        f"{kd} 5 IN SRV 0 100 9153 {kd}", f"_metrics._tcp.{kd} 5 IN SRV 0 100 9153 {kd}",
        f"solo.xfr.svc.{Z} 5 IN A 10.96.5.2", f"solo.xfr.svc.{Z} 5 IN SRV 0 100 5000 solo.xfr.svc.{Z}",
        soa,
    ]


@contextlib.asynccontextmanager
async def k8s_server(to: str = "127.0.0.1", objs: list[dict[str, Any]] | None = None):  # noqa: ANN201
    cluster = start_cluster(xfr_objects() if objs is None else objs)
    drop_namespace_object(cluster, "ghostns")  # keeps its service: CoreDNS's `nsnoexist` case
    conf = (f"{Z}:{{PORT}} {{\n transfer {{\n  to {to}\n }}\n"
            f" kubernetes {{\n  endpoint {cluster.url}\n }}\n}}\n")
    try:
        async with serve_corefile(conf) as srv:
            yield srv, cluster
    finally:
        cluster.stop()


async def test_kubernetes_axfr_is_the_reference_stream() -> None:
    async with k8s_server() as (srv, _cluster):
        serial = srv.plugin("kubernetes").index.serial
        messages = await asyncio.to_thread(transfer, srv.port, "Cluster.Local.")
        check_messages(messages)
        assert records(messages) == expected_stream(serial)
        assert messages[0][1].question[0].name.to_text() == "Cluster.Local."  # as asked
        # dnspython's own transfer client accepts the stream too
        zone = await asyncio.to_thread(dns.zone.from_xfr, dns.query.xfr("127.0.0.1", Z, port=srv.port))
        assert zone.get_rdataset("gamma.xfr.svc", "CNAME") is not None


async def test_ixfr() -> None:
    async with k8s_server() as (srv, _cluster):
        serial = srv.plugin("kubernetes").index.serial
        current = await asyncio.to_thread(transfer, srv.port, Z, "IXFR", serial)
        assert len(current) == 1
        assert records(current) == expected_stream(serial)[:1]  # the SOA alone
        older = await asyncio.to_thread(transfer, srv.port, Z, "IXFR", serial - 100)
        check_messages(older)
        assert records(older) == expected_stream(serial)  # a full AXFR-style stream
        bad = await asyncio.to_thread(transfer, srv.port, Z, "IXFR")  # no SOA in authority
        assert bad[0][1].rcode() == dns.rcode.SERVFAIL


async def test_refusals() -> None:
    async with k8s_server(to="10.0.0.1 192.168.0.0/16") as (srv, _cluster):
        refused = await asyncio.to_thread(transfer, srv.port, Z)
        assert [m.rcode() for _, m in refused] == [dns.rcode.REFUSED]
        assert not refused[0][1].answer
        q = dns.message.make_query(Z, "AXFR")
        udp = await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", port=srv.port, timeout=3)
        assert udp.rcode() == dns.rcode.REFUSED
        # the kubernetes plugin itself refuses transfers it is asked for directly (no transfer)
    async with k8s_server(to="*") as (srv, _cluster):
        udp = await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", port=srv.port, timeout=3)
        assert udp.rcode() == dns.rcode.REFUSED  # UDP: never
        # a name below the zone is no zone any plugin transfers: SERVFAIL (CoreDNS's rule)
        sub = await asyncio.to_thread(transfer, srv.port, f"svc.{Z}")
        assert sub[0][1].rcode() == dns.rcode.SERVFAIL


async def test_changes_show_in_the_next_transfer() -> None:
    async with k8s_server() as (srv, cluster):
        ix = srv.plugin("kubernetes").index
        before = ix.version
        cluster.apply(service("xfr", "aaa-new", ips=["10.96.5.20"], ports=[port("http", 80)]))
        await asyncio.to_thread(wait_for, lambda: ix.version > before, 10, "the new service")
        got = records(await asyncio.to_thread(transfer, srv.port, Z))
        assert got[0] == got[-1] and got[0].split()[3] == "SOA"
        assert f"aaa-new.xfr.svc.{Z} 5 IN A 10.96.5.20" in got
        assert got[0].split()[6] == str(ix.serial)


# --- sans-IO: empty types, sizes ---------------------------------------------------------------------


def k8s_engine(objs: list[dict[str, Any]]) -> tuple[Engine, Any]:
    text = (f"{Z}:53 {{\n transfer {{\n  to *\n }}\n"
            " kubernetes {\n  endpoint http://127.0.0.1:9\n }\n}\n")
    runtime = Runtime.build(parse(text), default_port=53)
    plugin = next(p for p in runtime.plugins if p.name == "kubernetes")
    ix = plugin.index
    ix.replace("namespaces", [objects.namespace(o) for o in objs if o["kind"] == "Namespace"])
    ix.replace("services", [objects.service(o) for o in objs if o["kind"] == "Service"])
    ix.replace("endpointslices", [objects.endpoint_slice(o) for o in objs if o["kind"] == "EndpointSlice"])
    return runtime.engines[("", 53)], plugin


def stream_of(engine: Engine, zone: str = Z, proto: str = "tcp") -> list[bytes]:
    q = dns.message.make_query(zone, "AXFR", use_edns=0)
    first = asyncio.run(engine.handle(q.to_wire(), "127.0.0.1", 5353, proto))
    assert first is not None
    return [first, *getattr(first, "more", ())]


def test_services_without_a_type_or_ports() -> None:
    # Objects the emulator's validation would refuse, put straight into the index.
    untyped = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "untyped", "namespace": "xfr"},
               "spec": {}}
    engine, _ = k8s_engine([namespace("xfr"), service("xfr", "typed", ips=["10.96.9.1"]), untyped])
    texts = records([(w, dns.message.from_wire(w)) for w in stream_of(engine)])
    # no ports: the A only (CoreDNS would write an SRV for its -1 sentinel, port 65535)
    assert [t for t in texts if "typed" in t] == [f"typed.xfr.svc.{Z} 5 IN A 10.96.9.1"]


def test_large_zone_is_several_messages_within_64k() -> None:
    n = 3000
    objs: list[dict[str, Any]] = [namespace("big")]
    for i in range(n):
        svc = service("big", f"a-service-with-a-long-name-to-fill-messages-{i:05d}",
                      ips=[f"10.97.{i // 250}.{i % 250 + 1}"], ports=[port("http", 80)])
        objs.append(svc)
    engine, _ = k8s_engine(objs)
    wires = stream_of(engine)
    assert isinstance(wires[0], Stream)
    assert len(wires) > 10
    msgs = [dns.message.from_wire(w, one_rr_per_rrset=True) for w in wires]
    check_messages(list(zip(wires, msgs, strict=True)))
    assert all(len(m.answer) <= 500 for m in msgs)
    texts = records(list(zip(wires, msgs, strict=True)))
    assert len(texts) == 2 + 3 * n  # SOA, (A, SRV, named SRV) per service, SOA
    assert all(m.opt is not None for m in msgs)  # the client's EDNS answered in each


def test_udp_through_the_engine_is_refused() -> None:
    engine, _ = k8s_engine([namespace("xfr")])
    [wire] = stream_of(engine, proto="udp")
    assert dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(("n", "weight"), [(1, 100), (2, 50), (3, 33), (6, 16), (7, 14), (100, 1),
                                            (101, 0), (0, 0)])
def test_srv_weight_is_coredns_float_floor(n: int, weight: int) -> None:
    assert srv_weight(n) == weight


# --- file zones ---------------------------------------------------------------------------------


async def test_file_zone_axfr_and_ixfr() -> None:
    conf = f"example.org:{{PORT}} {{\n transfer {{\n  to 127.0.0.1\n }}\n file {ZONE_FILE}\n}}\n"
    async with serve_corefile(conf) as srv:
        messages = await asyncio.to_thread(transfer, srv.port, "example.org.")
        check_messages(messages)
        got = records(messages)
        soa = "example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300"
        assert got[0] == got[-1] == soa
        assert got[1:3] == ["example.org. 3600 IN NS ns1.example.org.",
                            "example.org. 3600 IN NS ns2.example.org."]
        # exactly the zone file's records (the SOA twice)
        zone = dns.zone.from_file(ZONE_FILE, "example.org.", relativize=False)
        want = sorted(f"{name} {rds.ttl} IN {dns.rdatatype.to_text(rds.rdtype)} {rd}"
                      for name, rds in zone.iterate_rdatasets() for rd in rds)
        assert sorted(got[:-1]) == want
        current = await asyncio.to_thread(transfer, srv.port, "example.org.", "IXFR", 2024010101)
        assert records(current) == [soa]
        out = await asyncio.to_thread(
            subprocess.run, ["dig", "@127.0.0.1", "-p", str(srv.port), "axfr", "example.org"],
            capture_output=True, text=True, timeout=10)
        assert f"XFR size: {len(got)} records" in out.stdout


async def test_large_file_zone_over_the_socket(tmp_path) -> None:  # noqa: ANN001
    lines = ["$ORIGIN big.test.", "$TTL 60", "@ IN SOA ns hostmaster 7 3600 600 86400 60",
             "@ IN NS ns", "ns IN A 192.0.2.1"]
    lines += [f"host-number-{i:06d}-with-padding IN TXT \"{'x' * 100}\"" for i in range(4000)]
    path = tmp_path / "big.zone"
    path.write_text("\n".join(lines) + "\n")
    conf = f"big.test:{{PORT}} {{\n transfer {{\n  to *\n }}\n file {path}\n}}\n"
    async with serve_corefile(conf) as srv:
        messages = await asyncio.to_thread(transfer, srv.port, "big.test.")
        check_messages(messages)
        assert len(messages) >= 8 and len(records(messages)) == 4000 + 4
        z = await asyncio.to_thread(dns.zone.from_xfr, dns.query.xfr("127.0.0.1", "big.test.", port=srv.port))
        assert len(list(z.iterate_rdatas("TXT"))) == 4000


# --- setup ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ("", "'to' is required"),
    ("  to\n", "Wrong argument count"),
    ("  from 1.2.3.4\n", "unknown property 'from'"),
    ("  to example.org\n", "invalid address 'example.org' in 'to'"),
    ("  to 10.0.0.0/33\n", "invalid address '10.0.0.0/33' in 'to'"),
])
def test_setup_errors(body: str, message: str) -> None:
    with pytest.raises(CorefileError) as err:
        Runtime.build(parse(f"example.org:53 {{\n transfer {{\n{body} }}\n file {ZONE_FILE}\n}}\n"))
    assert message in str(err.value)


@pytest.mark.parametrize("to", ["*", "127.0.0.1", "127.0.0.1:53", "[::1]:53", "::1", "10.0.0.0/8 *"])
def test_setup_accepts(to: str) -> None:
    Runtime.build(parse(f"example.org:53 {{\n transfer {{\n  to {to}\n }}\n file {ZONE_FILE}\n}}\n"))

