"""Zone transfer of a kubernetes zone (read by the ``transfer`` plugin).

The stream follows CoreDNS (``../shared/reference/coredns_kubernetes.md`` §12):

1. the SOA;
2. one NS per distinct NS-discovery name, then the discovered A/AAAA records;
3. for each exposed Service, sorted by name (then namespace):
   * ClusterIP/NodePort/LoadBalancer with a ClusterIP: A/AAAA per ClusterIP at
     ``<svc>.<ns>.svc.<zone>``; per port an SRV there (weight 100, target the service name);
     per *named* port also an SRV at ``_<port>._<proto>.<svc>...``;
   * headless (and a ClusterIP-type service without a ClusterIP): per EndpointSlice, per ready
     address: A/AAAA at the service name and at ``<ep-label>.<svc>...``, and per named port an
     SRV at ``_<port>._<proto>.<svc>...`` to the endpoint name, weight floor(100/N) for the N
     addresses of that slice;
   * ExternalName: a CNAME (none for an IP-literal externalName);
   * services without a ``spec.type`` (and no ClusterIP) are skipped;
4. the SOA again.

An IXFR whose serial equals the current one gets the SOA alone.  Everything uses the plugin's
``ttl`` (the SOA its usual min(ttl, 300)); owner names are lower case.  Not in the stream, as
in CoreDNS: pod records, PTRs, secondary-network records.  Two departures from CoreDNS: a
service without ports gets no SRV (CoreDNS writes one for port 65535, its -1 sentinel), and
only the plugin's forward zones themselves transfer (CoreDNS also "transfers" any name below
them, and reverse zones, with service names put under that name).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dnslib import AAAA, CNAME, NS, QTYPE, RR, SRV, A

from dnsd.plugins.kubernetes.answer import _cname_target, _exposed, ns_records
from dnsd.plugins.kubernetes.index import ServiceView
from dnsd.plugins.kubernetes.names import dashed_ip, ip_family, is_reverse_zone
from dnsd.plugins.kubernetes.objects import Slice
from dnsd.wire.light import to_rr

if TYPE_CHECKING:
    from dnsd.plugins.kubernetes.plugin import Plugin


def srv_weight(n: int) -> int:
    """CoreDNS's calcSRVWeight: floor((100 / (100 * n)) * 100) in float64 arithmetic."""
    if n <= 0:
        return 0
    return int(math.floor((100.0 / float(100 * n)) * 100)) & 0xFFFF


def transfer_records(plugin: Plugin, zone: str, serial: int = 0) -> Iterator[RR] | None:
    """The records of an AXFR of ``zone`` (lower case, fully qualified), or None when the
    plugin does not serve that zone.  The services are snapshotted now, so the stream is one
    consistent view even if the index changes while it is being sent."""
    zone = zone.lower()
    if zone not in plugin.zones or is_reverse_zone(zone):
        return None
    ix, opts = plugin.index, plugin.opts
    soa = to_rr(plugin.soa(zone))
    if serial and serial == soa.rdata.times[0]:
        return iter([soa])
    ns = ns_records(ix, opts)
    views = sorted((v for v in ix.views.values()
                    if _exposed(ix, opts, v.svc.namespace) and v.svc.kind),
                   key=lambda v: (v.svc.name, v.svc.namespace))
    snapshot = [(v, tuple(sorted(ix.slices.get(v.svc.key, {}).values(), key=lambda s: s.name)))
                for v in views]
    return _stream(plugin, zone, soa, ns, snapshot)


def _stream(plugin: Plugin, zone: str, soa: RR, ns: list[tuple[str, list[str]]],
            services: list[tuple[ServiceView, tuple[Slice, ...]]]) -> Iterator[RR]:
    ttl = plugin.opts.ttl
    yield soa
    seen: set[str] = set()
    for name, _ in ns:
        if name not in seen:
            seen.add(name)
            yield RR(zone, QTYPE.NS, ttl=ttl, rdata=NS(_fqdn(name, zone)))
    for name, ips in ns:
        for ip in ips:
            yield _address(_fqdn(name, zone), ip, ttl)
    for view, slices in services:
        yield from _service(plugin, zone, view, slices, ttl)
    yield soa


def _service(plugin: Plugin, zone: str, view: ServiceView, slices: tuple[Slice, ...],
             ttl: int) -> Iterator[RR]:
    svc = view.svc
    base = f"{svc.name}.{svc.namespace}.svc.{zone}".lower()
    if svc.kind == "ExternalName":
        target = _cname_target(svc.external_name)
        if target:
            yield RR(base, QTYPE.CNAME, ttl=ttl, rdata=CNAME(target))
        return
    if svc.kind == "ClusterIP" and svc.cluster_ips:
        for ip in svc.cluster_ips:
            yield _address(base, ip, ttl)
        for name, proto, port in svc.ports:
            if port < 0:
                continue  # no ports: CoreDNS's -1 sentinel, not a port
            yield RR(base, QTYPE.SRV, ttl=ttl, rdata=SRV(0, 100, port, base))
            if name:
                yield RR(f"_{name}._{proto}.{base}".lower(), QTYPE.SRV, ttl=ttl,
                         rdata=SRV(0, 100, port, base))
        return
    if plugin.opts.noendpoints:
        return
    pod_names = plugin.index.endpoint_pod_names
    for sl in slices:
        weight = srv_weight(sum(len(ep.addresses) for ep in sl.endpoints))
        for ep in sl.endpoints:
            for ip in ep.addresses:
                label = (ep.hostname or (ep.pod if pod_names and ep.pod else "") or dashed_ip(ip))
                host = f"{label}.{base}".lower()
                yield _address(base, ip, ttl)
                yield _address(host, ip, ttl)
                for name, proto, port in ep.ports or sl.ports:
                    if name and port >= 0:
                        yield RR(f"_{name}._{proto}.{base}".lower(), QTYPE.SRV, ttl=ttl,
                                 rdata=SRV(0, weight, port, host))


def _fqdn(relative: str, zone: str) -> str:
    return f"{relative}.{zone}" if zone != "." else f"{relative}."


def _address(owner: str, ip: str, ttl: int) -> RR:
    if ip_family(ip) == 6:
        return RR(owner, QTYPE.AAAA, ttl=ttl, rdata=AAAA(ip))
    return RR(owner, QTYPE.A, ttl=ttl, rdata=A(ip))
