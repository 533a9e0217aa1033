"""CoreDNS's kubernetes answers as a pure function of (query, index, options).

``answer()`` returns a ``Result``; the plugin turns it into a message (adding the SOA, handling
fallthrough, the pre-sync SERVFAIL and CNAME chasing through the server).  See
``../shared/reference/coredns_kubernetes.md`` §4–§9 for the rules implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dnslib import QTYPE

from dnsd import memos
from dnsd.plugins.kubernetes.index import Address, Index, ServiceView
from dnsd.plugins.kubernetes.names import (
    INVALID,
    Parsed,
    Shape,
    ip_family,
    is_reverse_zone,
    parse,
    pod_label_text,
    pod_label_to_ip,
    relative_labels,
    reverse_to_ip,
)

# Answers are light records (tuples), built on the query path: the direct path packs them
# as they are, the general path turns them into dnslib records (light.to_rr).
from dnsd.wire.light import Rec

NOERROR, NXDOMAIN, REFUSED = 0, 3, 5
# Record types as plain ints (dnslib's QTYPE.X is a Python-level attribute lookup).
T_A = QTYPE.A
T_AAAA = QTYPE.AAAA
T_AXFR = QTYPE.AXFR
T_CNAME = QTYPE.CNAME
T_IXFR = QTYPE.IXFR
T_NS = QTYPE.NS
T_PTR = QTYPE.PTR
T_SOA = QTYPE.SOA
T_SRV = QTYPE.SRV
T_TXT = QTYPE.TXT
DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800


@dataclass
class Options:
    """The answer-relevant part of the plugin's configuration."""

    primary_zone: str = "cluster.local."
    ttl: int = 5
    pods: str = "disabled"  # disabled | insecure | verified
    namespaces: frozenset[str] = frozenset()
    ignore_empty_service: bool = False
    noendpoints: bool = False
    net_names: bool = False
    local_ips: tuple[str, ...] = ()
    # Secondary-network pod records: (ns, ip) -> count, consulted in `pods verified` mode.
    extra_pod_ips: dict[tuple[str, str], int] | None = None


@dataclass(slots=True)
class Result:
    rcode: int = NOERROR
    answer: list[Rec] = field(default_factory=list)
    additional: list[Rec] = field(default_factory=list)
    soa: bool = False  # put the zone's SOA in authority (negative answers)
    soa_answer: bool = False  # the SOA is the answer (apex SOA query)
    chase: str = ""  # ExternalName target outside the zone to resolve through the server
    chase_cname: Rec | None = None
    # What the answer read from the index (see Index.unchanged); None = anything.
    deps: tuple[tuple[str, ...], ...] | None = None

    @property
    def name_error(self) -> bool:
        return self.rcode == NXDOMAIN


class NameError_(Exception):
    """The name does not exist (NXDOMAIN)."""


class Entry(NamedTuple):
    """An entry of a name's record set: an address, optionally with a port and SRV target.
    (A tuple: headless answers build one per endpoint and port, as plain tuples.)"""

    ip: str
    port: int = -1
    target: str = ""  # relative SRV target ("web.demo.svc"); zone appended at answer time


def nodata() -> Result:
    return Result(soa=True)


def nxdomain() -> Result:
    return Result(rcode=NXDOMAIN, soa=True)


def answer(ix: Index, opt: Options, qname: str, qtype: int, zone: str) -> Result:
    """Answer ``qname`` (as the client spelled it) of ``qtype`` inside the plugin zone ``zone``."""
    lower = qname.lower()
    where, parsed = _name_of(lower, zone, opt.net_names)
    if where == OUTSIDE:
        return nxdomain()
    zone_spelled = qname[len(qname) - len(zone):] if zone != "." else "."
    if qtype in (T_AXFR, T_IXFR):
        return Result(rcode=REFUSED)
    if where != APEX and qtype == T_PTR:
        ip = reverse_to_ip(lower)
        if ip is not None:
            res = _ptr(ix, opt, qname, ip)
            if not opt.namespaces:  # (with a namespace filter, namespaces matter too)
                res.deps = (("ip", ip),)
            return res
    res = _by_name(ix, opt, qname, qtype, zone, zone_spelled, where, parsed)
    res.deps = _dependencies(ix, opt, parsed)
    return res


# Names parsed before, by (lower-cased name, zone): where a name stands (OUTSIDE the zone,
# the zone's APEX, BELOW it, or DNS_VERSION, the one name below it answered by its labels)
# and how it parses depend on nothing else (net_names is part of the key); emptied when full.
OUTSIDE, APEX, BELOW, DNS_VERSION = 0, 1, 2, 3
_NAMES: dict[tuple[str, str], tuple[int, Parsed]] = {}


def _name_of(lower: str, zone: str, net_names: bool) -> tuple[int, Parsed]:
    key = (lower, zone) if not net_names else (lower, zone + "\x00net")
    named = _NAMES.get(key)
    if named is None:
        labels = relative_labels(lower, zone)
        if labels is None:
            named = (OUTSIDE, INVALID)
        else:
            where = APEX if not labels else DNS_VERSION if labels == ["dns-version"] else BELOW
            named = (where, parse(labels, net_names))
        memos.keep(_NAMES, key, named)
    return named


def _dependencies(ix: Index, opt: Options, p: Parsed) -> tuple[tuple[str, ...], ...] | None:
    """The index keys an answer for a name of this shape depends on (None: anything)."""
    shape = p.shape
    # (Whether a namespace exists matters to most names; a namespace change invalidates
    # every prepared answer at once, see Index._new_epoch.)
    if shape in (Shape.INVALID, Shape.NAMESPACE, Shape.POD_NAMESPACE):
        return ()
    if shape is Shape.POD:
        return () if opt.pods != "verified" else None
    if shape in (Shape.SERVICE, Shape.ENDPOINT, Shape.PORT):
        view = ix.views.get((p.namespace, p.service))
        if view is not None and view.svc.kind == "ExternalName":
            return None  # the answer may follow the CNAME into other services
        return (("svc", p.namespace, p.service),)
    return None  # the apex, ns.dns, _net names: read more of the index


def _by_name(ix: Index, opt: Options, qname: str, qtype: int, zone: str, zone_spelled: str,
             where: int, parsed: Parsed) -> Result:
    if parsed.shape is Shape.APEX:
        return _apex(ix, opt, qname, qtype, zone_spelled)
    if parsed.namespace and is_reverse_zone(zone):
        # CoreDNS's Records() refuses every svc/pod-shaped name under a reverse zone
        # ("svc1.testns.svc.0.10.in-addr.arpa." is NXDOMAIN, §5.9); the bare "svc"/"pod"
        # label is still NODATA and SOA below the apex still NODATA (checked first there).
        if qtype == T_SOA:
            return nodata()
        return nxdomain()
    if qtype == T_SOA:
        return nodata()  # SOA below the apex: always NODATA, even for names that do not exist
    if qtype == T_TXT and where == DNS_VERSION:
        return Result(answer=[(qname, T_TXT, DNS_VERSION_TTL, DNS_SCHEMA_VERSION)])
    try:
        entries, view = _records(ix, opt, parsed, qtype == T_SRV)
    except NameError_:
        return nxdomain()
    if qtype == T_TXT:
        if parsed.shape is Shape.NS_DNS or not (entries or (view and view.svc.kind == "ExternalName")):
            return nxdomain()
        return nodata()
    if view is not None and view.svc.kind == "ExternalName":
        return _external(ix, opt, qname, qtype, zone, zone_spelled, view)
    if qtype in (T_A, T_AAAA):
        six = qtype == T_AAAA
        ips = dict.fromkeys([ip for ip in entries if ip and (":" in ip) is six])
        if not ips:
            return nodata()
        ttl = opt.ttl
        # (plain tuples: a NamedTuple's constructor costs a Python call per record)
        return Result(answer=[(qname, qtype, ttl, ip) for ip in ips])
    if qtype == T_SRV and parsed.shape in (Shape.SERVICE, Shape.ENDPOINT, Shape.PORT):
        return _srv(opt, qname, entries, zone_spelled)
    return nodata()


def _apex(ix: Index, opt: Options, qname: str, qtype: int, zone_spelled: str) -> Result:
    if qtype == T_SOA:
        return Result(soa_answer=True)
    if qtype == T_NS:
        res = Result()
        seen: set[str] = set()
        for name, ips in ns_records(ix, opt):
            target = f"{name}.{zone_spelled}" if zone_spelled != "." else f"{name}."
            if name not in seen:
                seen.add(name)
                res.answer.append((qname, T_NS, opt.ttl, target))
            res.additional.extend(_address_rr(target, ip, opt.ttl) for ip in ips)
        return res
    if qtype == T_TXT:
        return nxdomain()
    return nodata()


def ns_records(ix: Index, opt: Options) -> list[tuple[str, list[str]]]:
    """NS discovery: (relative name, addresses) for the services that front this server."""
    found: list[tuple[str, list[str]]] = []
    for ip in opt.local_ips:
        for (_label, svc, ns) in ix.endpoint_owners.get(ip, {}):
            view = ix.views.get((ns, svc))
            if view is None:
                continue
            if view.svc.kind == "ClusterIP" and view.svc.cluster_ips:
                found.append((f"{svc}.{ns}.svc", list(view.svc.cluster_ips)))
            elif view.headless:
                # Every ready address of the slice(s) holding the local IP, each under its
                # own endpoint name (CoreDNS walks the whole slice, §5.2 step 3).
                same_slice = {
                    a for sl in ix.slices.get((ns, svc), {}).values()
                    if any(ip in ep.addresses for ep in sl.endpoints)
                    for ep in sl.endpoints for a in ep.addresses
                }
                for addr in view.addresses:
                    if addr.ip in same_slice:
                        found.append((f"{addr.label}.{svc}.{ns}.svc", [addr.ip]))
    if not found and opt.local_ips:
        found.append(("ns.dns", list(opt.local_ips)))
    return found


def _exposed(ix: Index, opt: Options, ns: str) -> bool:
    return (not opt.namespaces or ns in opt.namespaces) and ns in ix.namespaces


def _records(ix: Index, opt: Options, p: Parsed,
             targets: bool = True) -> tuple[list[Any], ServiceView | None]:
    """The record set behind a name; raises NameError_ for NXDOMAIN.  With ``targets`` (for
    SRV) one Entry per address and port; without (only addresses are asked for) the address
    texts, one per address that has a (matching) port, which stands for all its entries."""
    shape = p.shape
    if shape is Shape.INVALID:
        raise NameError_
    if shape is Shape.NS_DNS:
        # The addresses NS discovery found (§5.2): the ClusterIPs of the service fronting
        # this server when there is one, else the local IPs themselves.
        ips = list(dict.fromkeys([ip for _, addrs in ns_records(ix, opt) for ip in addrs]))
        return ([Entry(ip) for ip in ips] if targets else ips), None
    if shape is Shape.TYPE_ONLY:
        return [], None
    if not _exposed(ix, opt, p.namespace):
        raise NameError_
    if shape is Shape.NAMESPACE:
        return [], None
    if shape is Shape.POD_NAMESPACE:
        if opt.pods == "disabled":
            raise NameError_
        return [], None
    if shape is Shape.POD:
        ip = _pod_ip(ix, opt, p)
        return ([Entry(ip)] if targets else [ip]), None
    view = ix.views.get((p.namespace, p.service))
    if view is None:
        raise NameError_
    svc = view.svc
    if svc.kind == "ExternalName":
        if shape is not Shape.SERVICE or not _cname_target(svc.external_name):
            # No sub-names; and an IP-literal externalName is skipped, so the service name
            # itself does not exist, for every qtype (TXT and SRV included).
            raise NameError_
        return [], view
    if shape is Shape.NET:
        from dnsd.plugins.kubernetes.secondary import net_entries

        found = net_entries(ix, view, p)
        return (found if targets else [e.ip for e in found]), view
    if opt.noendpoints:
        addresses: list[Address] = []
    else:
        addresses = view.addresses
    if shape is Shape.ENDPOINT:
        matched = [] if opt.noendpoints else view.by_label.get(p.endpoint, [])
        if not matched:
            raise NameError_
        if not targets:
            return [a.ip for a in matched if a.ports], view
        return [(a.ip, port[2], _ep_target(a, p)) for a in matched for port in a.ports], view
    if view.headless:
        if not addresses:
            raise NameError_
        if targets:
            entries = [(a.ip, port[2], _ep_target(a, p)) for a in addresses for port in a.ports
                       if _port_matches(port, p)]
        elif shape is Shape.PORT:
            entries = [a.ip for a in addresses if any(_port_matches(port, p) for port in a.ports)]
        else:
            entries = [a.ip for a in addresses if a.ports]
    else:
        if opt.ignore_empty_service and not addresses:
            raise NameError_
        if not targets:
            ports = svc.ports if shape is not Shape.PORT else [
                port for port in svc.ports if _port_matches(port, p)]
            entries = list(svc.cluster_ips) if ports else []
        else:
            target = f"{svc.name}.{svc.namespace}.svc"
            entries = [(ip, port[2], target) for ip in svc.cluster_ips for port in svc.ports
                       if _port_matches(port, p)]
    if shape is Shape.PORT and not entries:
        raise NameError_
    return entries, view


def _ep_target(a: Address, p: Parsed) -> str:
    return f"{a.label}.{p.service}.{p.namespace}.svc"


def _port_matches(port: tuple[str, str, int], p: Parsed) -> bool:
    if p.shape is not Shape.PORT:
        return True
    return port[0].lower() == p.port and port[1] == p.protocol


def _pod_ip(ix: Index, opt: Options, p: Parsed) -> str:
    if opt.pods == "disabled":
        raise NameError_
    ip = pod_label_to_ip(p.endpoint)
    if ip is None:
        raise NameError_
    if opt.pods == "verified":
        # CoreDNS compares the label's text with status.podIP as a string, so a
        # non-canonical spelling of a pod's address (fd00-0-0-0-0-0-0-1) does not match.
        raw = pod_label_text(p.endpoint)
        if (p.namespace, raw) not in ix.pod_ips and not (
                opt.extra_pod_ips and (p.namespace, ip) in opt.extra_pod_ips):
            raise NameError_
    return ip


def _srv(opt: Options, qname: str, entries: list[Entry], zone_spelled: str) -> Result:
    if not entries:
        return nodata()
    weight = max(1, 100 // len(entries))
    ttl = opt.ttl
    answers: list[Any] = []
    extra: list[Any] = []
    seen_srv: set[tuple[str, int]] = set()
    seen_glue: set[tuple[str, str]] = set()
    full: dict[str, str] = {}  # relative target -> absolute, as the asker spells the zone
    for ip, port, target in entries:  # (plain tuples: one record per entry and port)
        if port == -1:
            continue
        name = full.get(target)
        if name is None:
            name = full[target] = f"{target}.{zone_spelled}"
        if (target, port) not in seen_srv:
            seen_srv.add((target, port))
            answers.append((qname, T_SRV, ttl, (0, weight, port, name)))
        if (target, ip) not in seen_glue:
            seen_glue.add((target, ip))
            extra.append((name, T_AAAA if ":" in ip else T_A, ttl, ip))
    if not answers:
        return nodata()
    return Result(answer=answers, additional=extra)


def _address_rr(owner: str, ip: str, ttl: int) -> Rec:
    return (owner, T_AAAA if ip_family(ip) == 6 else T_A, ttl, ip)


def _cname_target(external_name: str) -> str:
    """The CNAME target of an externalName, or "" when it is empty or an IP literal."""
    target = external_name.rstrip(".").lower()
    if not target or _is_ip(target):
        return ""
    return target + "."


def _external(ix: Index, opt: Options, qname: str, qtype: int, zone: str, zone_spelled: str,
              view: ServiceView) -> Result:
    target = _cname_target(view.svc.external_name)
    if not target:
        return nxdomain()  # an IP-literal externalName is ignored
    cname = (qname, T_CNAME, opt.ttl, target)
    if qtype == T_CNAME:
        return Result(answer=[cname])
    if qtype not in (T_A, T_AAAA):
        return nodata()
    if target == qname.lower():
        return nodata()  # a CNAME to itself is skipped
    if target == zone or target.endswith("." + zone):
        return _chase_internal(ix, opt, cname, target, qtype, zone, zone_spelled)
    return Result(answer=[cname], chase=target, chase_cname=cname)


def _chase_internal(ix: Index, opt: Options, cname: Rec, target: str, qtype: int, zone: str,
                    zone_spelled: str, hops: int = 0) -> Result:
    """Follow an ExternalName pointing inside the zone (up to 10 hops)."""
    chained = [cname]
    name = target
    for _ in range(10):
        res = answer(ix, opt, name, qtype, zone)
        if res.chase_cname is not None:  # another ExternalName pointing outside
            return Result(answer=chained + [res.chase_cname], chase=res.chase, chase_cname=cname)
        cnames = [rr for rr in res.answer if rr[1] == T_CNAME]
        if res.answer and not cnames:
            return Result(answer=chained + res.answer)
        if not cnames:
            return nodata()  # an unresolvable in-zone target drops the CNAME
        chained.append(cnames[0])
        name = cnames[0][3].lower()
        if not (name == zone or name.endswith("." + zone)):
            return Result(answer=chained, chase=name, chase_cname=cname)
    return nodata()


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _ptr(ix: Index, opt: Options, qname: str, ip: str) -> Result:
    zone = opt.primary_zone
    # With a `namespaces` list, CoreDNS keeps only exposed namespaces (listed *and* backed by
    # a Namespace object); without one, nothing is filtered (not even by namespace_labels).
    for ns, name in ix.cluster_ip_owners.get(ip, ()):
        if opt.namespaces and not _exposed(ix, opt, ns):
            continue
        return Result(answer=[(qname, T_PTR, opt.ttl, f"{name}.{ns}.svc.{zone}")])
    rrs = []
    for (label, svc, ns) in ix.endpoint_owners.get(ip, {}):
        if opt.namespaces and not _exposed(ix, opt, ns):
            continue
        rrs.append((qname, T_PTR, opt.ttl, f"{label}.{svc}.{ns}.svc.{zone}"))
    if not rrs:
        from dnsd.plugins.kubernetes.secondary import secondary_ptr

        rrs = secondary_ptr(ix, opt, qname, ip)
    if rrs:
        return Result(answer=rrs)
    return nxdomain()
