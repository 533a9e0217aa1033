"""The kubernetes plugin's answers, row by row (coredns_kubernetes.md §4-§9), through real sockets.

One DevCluster holds ``k8s_support.fixture_objects()``; one dnsd serves it with several
server blocks, each a different ``kubernetes`` configuration over the same cluster:

==================  ==========================================================================
zone                configuration
==================  ==========================================================================
cluster.local,      kubeadm style: ``pods insecure``, ``fallthrough in-addr.arpa ip6.arpa``;
in-addr.arpa,       ``whoami`` follows in the chain, so a query that falls through gets
ip6.arpa            whoami's reply (how these tests observe fallthrough).
verified.local      ``pods verified``, ``endpoint_pod_names``
disabled.local      ``pods disabled`` (default), ``ttl 30``, ``ignore empty_service``
filtered.local +    ``namespaces testns``, ``labels dns!=hidden``
200.96.10.in-addr
noep.local          ``noendpoints``, ``namespace_labels exposed=yes``, ``ttl 600``
ft.local            ``fallthrough`` (every zone), then ``whoami``
example.org         a ``file`` zone: the upstream for ExternalName targets outside the zone
==================  ==========================================================================

Every row asserts the whole response (rcode, AA=1, RA=0, all three sections with TTLs).
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.flags
import dns.rcode
import dns.reversename
import pytest
from k8s_support import (
    KUBE_DNS_EP,
    LOCAL_IPS,
    LOCAL_V4,
    LOCAL_V6,
    ask,
    drop_namespace_object,
    expect,
    fixture_objects,
    mark_terminating,
    section_texts,
    soa,
    start_cluster,
    start_dnsd,
)

pytestmark = pytest.mark.timeout(120)

# zone -> (ttl, SOA minimum) of its block
ZONES = {
    "cluster.local.": (5, 5), "in-addr.arpa.": (5, 5), "ip6.arpa.": (5, 5),
    "verified.local.": (5, 5), "disabled.local.": (30, 30), "filtered.local.": (5, 5),
    "200.96.10.in-addr.arpa.": (5, 5), "noep.local.": (600, 600), "ft.local.": (5, 5),
}

EXAMPLE_ORG_ZONE = """\
$ORIGIN example.org.
$TTL 3600
@    IN SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 300
     IN NS  ns1
ns1  IN A   192.0.2.2
www  IN A   192.0.2.53
"""

COREFILE = """\
.:{PORT} {
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        endpoint URL
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    whoami
}
example.org:{PORT} {
    file ZONEFILE
}
verified.local:{PORT} {
    kubernetes {
        endpoint URL
        pods verified
        endpoint_pod_names
    }
}
disabled.local:{PORT} {
    kubernetes {
        endpoint URL
        ttl 30
        ignore empty_service
    }
}
filtered.local:{PORT} 200.96.10.in-addr.arpa:{PORT} {
    kubernetes filtered.local 10.96.200.0/24 {
        endpoint URL
        namespaces testns
        labels dns!=hidden
    }
}
noep.local:{PORT} {
    kubernetes {
        endpoint URL
        noendpoints
        namespace_labels exposed=yes
        ttl 600
    }
}
ft.local:{PORT} {
    kubernetes {
        endpoint URL
        fallthrough
    }
    whoami
}
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cluster = start_cluster(fixture_objects())
    drop_namespace_object(cluster, "nsnoexist")
    mark_terminating(cluster, "podns", "pod-terminating")
    zonefile = tmp_path_factory.mktemp("zones") / "example.org"
    zonefile.write_text(EXAMPLE_ORG_ZONE)
    corefile = COREFILE.replace("URL", cluster.url).replace("ZONEFILE", str(zonefile))
    server = start_dnsd(corefile, ready_names=[
        ("svc1.testns.svc.cluster.local.", "A"), ("svc1.testns.svc.verified.local.", "A"),
        ("svc1.testns.svc.disabled.local.", "A"), ("svc1.testns.svc.filtered.local.", "A"),
        ("svc1.testns.svc.noep.local.", "A"), ("svc1.testns.svc.ft.local.", "A"),
        ("hdls1.testns.svc.cluster.local.", "A"), ("hdls1.testns.svc.verified.local.", "A"),
        ("hdls1.testns.svc.disabled.local.", "A"), ("partial.testns.svc.filtered.local.", "A"),
        ("10-240-0-1.podns.pod.verified.local.", "A"),
    ])
    try:
        yield server.port
    finally:
        server.stop()
        cluster.stop()


# --- row builders ---------------------------------------------------------------------------

def _zone_of(qname: str) -> tuple[str, int, int]:
    """The longest configured zone of ``qname`` spelled as in the query, with ttl/minimum."""
    lower = qname.lower()
    best = max((z for z in ZONES if lower == z or lower.endswith("." + z)), key=len)
    ttl, minimum = ZONES[best]
    return qname[len(qname) - len(best):], ttl, minimum


def _soa(qname: str) -> str:
    zone, ttl, minimum = _zone_of(qname)
    return soa(zone, ttl, minimum)


def pos(qname: str, qtype: str, answer: list[str], additional: tuple[str, ...] | list[str] = (),
        marks: tuple = ()) -> object:
    return pytest.param(qname, qtype, "NOERROR", answer, [], list(additional),
                        id=f"{qname} {qtype}", marks=marks)


def nodata(qname: str, qtype: str, marks: tuple = ()) -> object:
    return pytest.param(qname, qtype, "NOERROR", [], [_soa(qname)], [], id=f"{qname} {qtype} NODATA",
                        marks=marks)


def nx(qname: str, qtype: str, marks: tuple = ()) -> object:
    return pytest.param(qname, qtype, "NXDOMAIN", [], [_soa(qname)], [], id=f"{qname} {qtype} NXDOMAIN",
                        marks=marks)


def rr(owner: str, rtype: str, rdata: str, ttl: int = 5) -> str:
    return f"{owner} {ttl} IN {rtype} {rdata}"


def nibbles(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text()


needs_local_v4 = pytest.mark.skipif(LOCAL_V4 is None, reason="no non-loopback IPv4 on this machine")

S = "testns.svc.cluster.local."  # suffix of the test namespace
KD = "kube-dns.kube-system.svc.cluster.local."

# --- §5.1 apex, §5.2 ns.dns, §5.3 dns-version, §4 grammar -----------------------------------------
APEX = [
    pos("cluster.local.", "SOA", [soa("cluster.local.")]),
    pos("cluster.local.", "NS", [rr("cluster.local.", "NS", KD)], [rr(KD, "A", "10.96.0.10")],
        marks=(needs_local_v4,)),
    nodata("cluster.local.", "A"),
    nodata("cluster.local.", "AAAA"),
    nx("cluster.local.", "TXT"),
    nodata("cluster.local.", "SRV"),
    nodata("cluster.local.", "HINFO"),
    nodata("cluster.local.", "MX"),
    nodata("cluster.local.", "CNAME"),
    nodata("cluster.local.", "PTR"),
    # ns.dns.<zone>: the addresses discovery found (kube-dns's ClusterIP here).
    pos("ns.dns.cluster.local.", "A", [rr("ns.dns.cluster.local.", "A", "10.96.0.10")],
        marks=(needs_local_v4,)),
    nodata("ns.dns.cluster.local.", "AAAA", marks=(needs_local_v4,)),
    nx("ns.dns.cluster.local.", "TXT"),
    nodata("ns.dns.cluster.local.", "MX"),
    nodata("ns.dns.cluster.local.", "SRV"),
    nx("dns.cluster.local.", "A"),
    pos("dns-version.cluster.local.", "TXT", [rr("dns-version.cluster.local.", "TXT", '"1.1.0"', 28800)]),
    pos("dns-version.disabled.local.", "TXT",
        [rr("dns-version.disabled.local.", "TXT", '"1.1.0"', 28800)]),  # ignores ttl 30
    nx("dns-version.cluster.local.", "A"),
    # grammar: type label not svc/pod, too many labels, no wildcards
    nx("foo.cluster.local.", "A"),
    nx("100.0.0.10.cluster.local.", "A"),
    nx("a.b.c.svc1." + S, "A"),
    nx("*." + S, "A"),
    nx("any." + S, "A"),
    nx("*.svc1." + S, "A"),
    nx("_tcp.svc1." + S, "A"),  # an endpoint called "_tcp"
]

# --- §5.4 svc./pod./<ns>.svc/<ns>.pod -----------------------------------------------------------
TYPE_AND_NAMESPACE = [
    nodata("svc.cluster.local.", "A"),
    nodata("svc.cluster.local.", "SRV"),
    nx("svc.cluster.local.", "TXT"),
    nodata("pod.cluster.local.", "A"),
    nx("pod.cluster.local.", "TXT"),
    nodata("testns.svc.cluster.local.", "A"),
    nodata("testns.svc.cluster.local.", "AAAA"),
    nx("testns.svc.cluster.local.", "TXT"),
    nx("nosuchns.svc.cluster.local.", "A"),
    nx("nsnoexist.svc.cluster.local.", "A"),  # no Namespace object
    nx("ghost.nsnoexist.svc.cluster.local.", "A"),
    nodata("podns.pod.cluster.local.", "A"),  # pods insecure
    nx("podns.pod.cluster.local.", "TXT"),
    nx("nosuchns.pod.cluster.local.", "A"),
    nodata("podns.pod.verified.local.", "A"),  # pods verified
    nx("podns.pod.disabled.local.", "A"),  # pods disabled
    nodata("svc.disabled.local.", "A"),
    nodata("pod.disabled.local.", "A"),
    nodata("testns.svc.disabled.local.", "A"),
]

# --- §5.5 services ------------------------------------------------------------------------------
SERVICES = [
    pos("svc1." + S, "A", [rr("svc1." + S, "A", "10.96.1.1")]),
    nodata("svc1." + S, "AAAA"),
    nodata("svc1." + S, "TXT"),
    pos("kubernetes.default.svc.cluster.local.", "A",
        [rr("kubernetes.default.svc.cluster.local.", "A", "10.96.0.1")]),
    pos("svc6." + S, "AAAA", [rr("svc6." + S, "AAAA", "fd00:10:96::6")]),  # zero endpoints
    nodata("svc6." + S, "A"),
    pos("dual." + S, "A", [rr("dual." + S, "A", "10.96.1.3")]),
    pos("dual." + S, "AAAA", [rr("dual." + S, "AAAA", "fd00:10:96::3")]),
    pos("svcempty." + S, "A", [rr("svcempty." + S, "A", "10.96.1.2")]),  # only a not-ready endpoint
    nx("nosuch." + S, "A"),
    nx("nosuch." + S, "AAAA"),
    # ignore empty_service (+ ttl 30): ClusterIP without ready endpoints is NXDOMAIN
    nx("svcempty.testns.svc.disabled.local.", "A"),
    nx("svc6.testns.svc.disabled.local.", "AAAA"),
    pos("svc1.testns.svc.disabled.local.", "A", [rr("svc1.testns.svc.disabled.local.", "A", "10.96.1.1", 30)]),
    pos("hdls1.testns.svc.disabled.local.", "AAAA",
        [rr("hdls1.testns.svc.disabled.local.", "AAAA", ip, 30) for ip in ("5678:abcd::1", "2001:db8::")]),
    # headless: ready endpoints of every slice, duplicates collapsed, not-ready left out
    pos("hdls1." + S, "A", [rr("hdls1." + S, "A", f"172.0.0.{i}") for i in (11, 12, 13)]),
    pos("hdls1." + S, "AAAA", [rr("hdls1." + S, "AAAA", ip) for ip in ("5678:abcd::1", "2001:db8::")]),
    nodata("hdls1." + S, "TXT"),
    nodata("hdls1." + S, "MX"),
    nx("hdlsempty." + S, "A"),  # only not-ready endpoints: NXDOMAIN for every qtype
    nx("hdlsempty." + S, "AAAA"),
    nx("hdlsempty." + S, "SRV"),
    nx("hdlsempty." + S, "TXT"),
    nx("hdlsempty." + S, "HINFO"),
    nx("hdlsnone." + S, "A"),  # no slice at all
    nx("hdlsnone.testns.svc.disabled.local.", "A"),
    # ExternalName -> a ClusterIP service inside the zone: CNAME, then the chased A
    pos("ext." + S, "CNAME", [rr("ext." + S, "CNAME", "svc1." + S)]),
    pos("ext." + S, "A", [rr("ext." + S, "CNAME", "svc1." + S), rr("svc1." + S, "A", "10.96.1.1")]),
    nodata("ext." + S, "AAAA"),  # the target has no AAAA: the CNAME is dropped
    nodata("ext." + S, "SRV"),
    nodata("ext." + S, "TXT"),
    nodata("ext." + S, "MX"),
    nodata("ext." + S, "HINFO"),
    nx("x.ext." + S, "A"),
    nx("a.b.ext." + S, "A"),
    nx("_http._tcp.ext." + S, "SRV"),
    # ExternalName -> a missing in-zone name: the CNAME is dropped, NODATA
    nodata("extmissing." + S, "A"),
    pos("extmissing." + S, "CNAME", [rr("extmissing." + S, "CNAME", "nosuch." + S)]),
    # ExternalName that is an IP literal: ignored, so the name does not exist at all
    nx("extip." + S, "A"),
    nx("extip." + S, "CNAME"),
    nx("extip." + S, "TXT"),
    nx("extip." + S, "SRV"),
    # ExternalName outside the zone: resolved through the server (the file zone here);
    # the upstream records keep their own TTL
    pos("extout." + S, "A", [rr("extout." + S, "CNAME", "www.example.org."),
                             rr("www.example.org.", "A", "192.0.2.53", 3600)]),
    pos("extout." + S, "AAAA", [rr("extout." + S, "CNAME", "www.example.org.")]),
    pos("extout." + S, "CNAME", [rr("extout." + S, "CNAME", "www.example.org.")]),
    pos("extnx." + S, "A", [rr("extnx." + S, "CNAME", "nothere.example.org.")]),
    # a CNAME to itself is skipped; a chain inside the zone is followed
    nodata("extself." + S, "A"),
    pos("extself." + S, "CNAME", [rr("extself." + S, "CNAME", "extself." + S)]),
    pos("extchain." + S, "A", [rr("extchain." + S, "CNAME", "ext." + S), rr("ext." + S, "CNAME", "svc1." + S),
                               rr("svc1." + S, "A", "10.96.1.1")]),
    # ignore empty_service does not apply to ExternalName; the target is outside
    # disabled.local, so it is chased through the server (and answered by cluster.local).
    pos("ext.testns.svc.disabled.local.", "A", [
        rr("ext.testns.svc.disabled.local.", "CNAME", "svc1." + S, 30),
        rr("svc1." + S, "A", "10.96.1.1"),
    ]),
]

# --- §5.6 endpoint names ------------------------------------------------------------------------
ENDPOINTS = [
    pos("ep1a.svc1." + S, "A", [rr("ep1a.svc1." + S, "A", "172.0.0.1")]),  # ClusterIP service
    pos("172-0-0-2.svc1." + S, "A", [rr("172-0-0-2.svc1." + S, "A", "172.0.0.2")]),
    pos("172-0-0-3.svc1." + S, "A", [rr("172-0-0-3.svc1." + S, "A", "172.0.0.3")]),  # ready unset
    nx("svc1-pod-b.svc1." + S, "A"),  # no endpoint_pod_names here
    nx("nosuch.svc1." + S, "A"),
    nodata("ep1a.svc1." + S, "AAAA"),
    nodata("ep1a.svc1." + S, "TXT"),
    pos("dup-name.hdls1." + S, "A", [rr("dup-name.hdls1." + S, "A", "172.0.0.11"),
                                     rr("dup-name.hdls1." + S, "A", "172.0.0.12")]),
    pos("172-0-0-13.hdls1." + S, "A", [rr("172-0-0-13.hdls1." + S, "A", "172.0.0.13")]),
    pos("5678-abcd--1.hdls1." + S, "AAAA", [rr("5678-abcd--1.hdls1." + S, "AAAA", "5678:abcd::1")]),
    nodata("5678-abcd--1.hdls1." + S, "A"),
    pos("2001-db8--0.hdls1." + S, "AAAA", [rr("2001-db8--0.hdls1." + S, "AAAA", "2001:db8::")]),
    nx("notready.hdls1." + S, "A"),
    nx("172-0-0-99.hdls1." + S, "A"),
    # endpoint_pod_names: hostname first, then a pod name under 64 characters, then the IP
    pos("svc1-pod-b.svc1.testns.svc.verified.local.", "A",
        [rr("svc1-pod-b.svc1.testns.svc.verified.local.", "A", "172.0.0.2")]),
    nx("172-0-0-2.svc1.testns.svc.verified.local.", "A"),
    pos("ep1a.svc1.testns.svc.verified.local.", "A",
        [rr("ep1a.svc1.testns.svc.verified.local.", "A", "172.0.0.1")]),
    pos("172-0-0-3.svc1.testns.svc.verified.local.", "A",
        [rr("172-0-0-3.svc1.testns.svc.verified.local.", "A", "172.0.0.3")]),
    # noendpoints: no endpoint names, headless NXDOMAIN, ClusterIP still fine
    nx("ep1a.svc1.testns.svc.noep.local.", "A"),
    nx("hdls1.testns.svc.noep.local.", "A"),
    pos("svc1.testns.svc.noep.local.", "A", [rr("svc1.testns.svc.noep.local.", "A", "10.96.1.1", 600)]),
]

# --- §5.7 pods ----------------------------------------------------------------------------------
P = "podns.pod.cluster.local."
PV = "podns.pod.verified.local."
PODS = [
    pos("10-240-0-1." + P, "A", [rr("10-240-0-1." + P, "A", "10.240.0.1")]),
    pos("10-240-0-99." + P, "A", [rr("10-240-0-99." + P, "A", "10.240.0.99")]),  # no pod needed
    pos("fd00-240--1." + P, "AAAA", [rr("fd00-240--1." + P, "AAAA", "fd00:240::1")]),
    nodata("fd00-240--1." + P, "A"),  # IPv6 label asked for A
    nodata("10-240-0-1." + P, "AAAA"),
    nodata("10-240-0-1." + P, "TXT"),
    nx("010-240-0-1." + P, "A"),  # leading zero
    nx("notanip." + P, "A"),
    nx("1-2-3-4-5." + P, "A"),
    pos("x.10-240-0-1." + P, "A", [rr("x.10-240-0-1." + P, "A", "10.240.0.1")]),  # ignored label
    pos("_a._b.10-240-0-1." + P, "A", [rr("_a._b.10-240-0-1." + P, "A", "10.240.0.1")]),
    nx("a.b.c.10-240-0-1." + P, "A"),  # three extra labels: too long (§4)
    nx("10-240-0-1.nsnoexist.pod.cluster.local.", "A"),  # namespace object required
    nx("10-240-0-1.nosuchns.pod.cluster.local.", "A"),
    pos("fd00-240-0-0-0-0-0-1." + P, "AAAA", [rr("fd00-240-0-0-0-0-0-1." + P, "AAAA", "fd00:240::1")]),
    # verified: a live pod with that status.podIP in that namespace
    pos("10-240-0-1." + PV, "A", [rr("10-240-0-1." + PV, "A", "10.240.0.1")]),
    pos("fd00-240--1." + PV, "AAAA", [rr("fd00-240--1." + PV, "AAAA", "fd00:240::1")]),
    nx("fd00-240-0-0-0-0-0-1." + PV, "AAAA"),  # compared with status.podIP as text
    pos("10-240-0-5.testns.pod.verified.local.", "A",
        [rr("10-240-0-5.testns.pod.verified.local.", "A", "10.240.0.5")]),
    nx("10-240-0-1.testns.pod.verified.local.", "A"),  # right IP, wrong namespace
    nx("10-240-0-99." + PV, "A"),
    nx("10-240-0-3." + PV, "A"),  # pod phase Succeeded is not watched
    nx("10-240-0-4." + PV, "A"),  # a pod with a deletionTimestamp is skipped
    pos("10-240-0-4." + P, "A", [rr("10-240-0-4." + P, "A", "10.240.0.4")]),  # insecure: no pod needed
    # disabled
    nx("10-240-0-1.podns.pod.disabled.local.", "A"),
]


# --- §5.8 SRV -----------------------------------------------------------------------------------
def _srv(owner: str, targets: list[tuple[int, int, str]], glue: list[tuple[str, str]], ttl: int = 5) -> object:
    return pos(owner, "SRV", [rr(owner, "SRV", f"0 {w} {p} {t}", ttl) for w, p, t in targets],
               [rr(t, "AAAA" if ":" in ip else "A", ip, ttl) for t, ip in glue])


H1 = "hdls1." + S
SRV = [
    _srv("svc1." + S, [(100, 80, "svc1." + S)], [("svc1." + S, "10.96.1.1")]),  # service port
    _srv("_http._tcp.svc1." + S, [(100, 80, "svc1." + S)], [("svc1." + S, "10.96.1.1")]),
    _srv("http.tcp.svc1." + S, [(100, 80, "svc1." + S)], [("svc1." + S, "10.96.1.1")]),
    _srv("_HTTP._Tcp.svc1." + S, [(100, 80, "svc1." + S)], [("svc1." + S, "10.96.1.1")]),
    _srv("ep1a.svc1." + S, [(100, 8080, "ep1a.svc1." + S)], [("ep1a.svc1." + S, "172.0.0.1")]),  # slice port
    _srv("dual." + S, [(50, 80, "dual." + S)], [("dual." + S, "10.96.1.3"), ("dual." + S, "fd00:10:96::3")]),
    _srv("hdls6." + S, [(16, 80, f"172-0-1-{i}.hdls6.{S}") for i in range(1, 7)],
         [(f"172-0-1-{i}.hdls6.{S}", f"172.0.1.{i}") for i in range(1, 7)]),
    # 6 entries before de-duplication (3 + 1 skewed duplicate + 2 IPv6): weight 16; the two
    # dup-name endpoints give one SRV and two glue records
    _srv(H1, [(16, 80, "dup-name." + H1), (16, 80, "172-0-0-13." + H1), (16, 80, "5678-abcd--1." + H1),
              (16, 80, "2001-db8--0." + H1)],
         [("dup-name." + H1, "172.0.0.11"), ("dup-name." + H1, "172.0.0.12"), ("172-0-0-13." + H1, "172.0.0.13"),
          ("5678-abcd--1." + H1, "5678:abcd::1"), ("2001-db8--0." + H1, "2001:db8::")]),
    _srv("dup-name." + H1, [(50, 80, "dup-name." + H1)],
         [("dup-name." + H1, "172.0.0.11"), ("dup-name." + H1, "172.0.0.12")]),
    # kube-dns: 3 ports -> weight 33; dns/UDP 53 and dns-tcp/TCP 53 collapse into one record
    _srv(KD, [(33, 53, KD), (33, 9153, KD)], [(KD, "10.96.0.10")]),
    _srv("_dns._udp." + KD, [(100, 53, KD)], [(KD, "10.96.0.10")]),
    _srv("_dns-tcp._tcp." + KD, [(100, 53, KD)], [(KD, "10.96.0.10")]),
    _srv("svc1.testns.svc.disabled.local.", [(100, 80, "svc1.testns.svc.disabled.local.")],
         [("svc1.testns.svc.disabled.local.", "10.96.1.1")], ttl=30),
    nx("_foo._tcp.svc1." + S, "SRV"),
    nx("_http._udp.svc1." + S, "SRV"),
    nx("_foo._tcp.svc1." + S, "A"),
    nodata("noports." + S, "SRV"),  # only port -1
    nodata("np-0.noports." + S, "SRV"),
    nx("_http._tcp.noports." + S, "SRV"),
    pos("noports." + S, "A", [rr("noports." + S, "A", "172.0.3.1")]),
    _srv("mixed." + S, [(50, 80, "172-0-5-1.mixed." + S)], [("172-0-5-1.mixed." + S, "172.0.5.1")]),
    nodata("172-0-5-2.mixed." + S, "SRV"),
    # A/AAAA on SRV-shaped names answer the addresses
    pos("_http._tcp.svc1." + S, "A", [rr("_http._tcp.svc1." + S, "A", "10.96.1.1")]),
    nodata("_http._tcp.svc1." + S, "AAAA"),
    pos("_http._tcp." + H1, "A", [rr("_http._tcp." + H1, "A", f"172.0.0.{i}") for i in (11, 12, 13)]),
    nodata("_http._tcp.svc1." + S, "TXT"),
]

# --- §5.9 PTR -----------------------------------------------------------------------------------
FR = "200.96.10.in-addr.arpa."
PTRS = [
    pos("1.1.96.10.in-addr.arpa.", "PTR", [rr("1.1.96.10.in-addr.arpa.", "PTR", "svc1." + S)]),
    pos("10.0.96.10.in-addr.arpa.", "PTR", [rr("10.0.96.10.in-addr.arpa.", "PTR", KD)]),
    pos("1.0.0.172.in-addr.arpa.", "PTR", [rr("1.0.0.172.in-addr.arpa.", "PTR", "ep1a.svc1." + S)]),
    pos("11.0.0.172.in-addr.arpa.", "PTR", [rr("11.0.0.172.in-addr.arpa.", "PTR", "dup-name." + H1)]),
    # the same IP in two slices of one service: one PTR
    pos("13.0.0.172.in-addr.arpa.", "PTR", [rr("13.0.0.172.in-addr.arpa.", "PTR", "172-0-0-13." + H1)]),
    # one IP selected by two services: two PTRs
    pos("40.0.0.172.in-addr.arpa.", "PTR", [rr("40.0.0.172.in-addr.arpa.", "PTR", "172-0-0-40.sel1." + S),
                                             rr("40.0.0.172.in-addr.arpa.", "PTR", "172-0-0-40.sel2." + S)]),
    pos(nibbles("fd00:10:96::6"), "PTR", [rr(nibbles("fd00:10:96::6"), "PTR", "svc6." + S)]),
    pos(nibbles("5678:abcd::1"), "PTR", [rr(nibbles("5678:abcd::1"), "PTR", "5678-abcd--1." + H1)]),
    pos(nibbles("2001:db8::"), "PTR", [rr(nibbles("2001:db8::"), "PTR", "2001-db8--0." + H1)]),
    # Without a `namespaces` list the namespace is not checked for PTRs (§5.9).
    pos("50.1.96.10.in-addr.arpa.", "PTR", [rr("50.1.96.10.in-addr.arpa.", "PTR", "ghost.nsnoexist.svc.cluster.local.")]),
    # PTR on forward names: by existence
    nodata("svc1." + S, "PTR"),
    nx("nosuch." + S, "PTR"),
    nodata("ext." + S, "PTR"),
    # the filtered block: reverse zone 10.96.200.0/24, namespaces testns, labels dns!=hidden;
    # PTR targets use that block's primary zone
    pos("1." + FR, "PTR", [rr("1." + FR, "PTR", "filtersvc.testns.svc.filtered.local.")]),
    nx("2." + FR, "PTR"),  # otherns is not listed
    nx("3." + FR, "PTR"),  # hidden by the labels selector
    nx("9." + FR, "PTR"),  # no service or endpoint: no fallthrough in this block
    pos(FR, "SOA", [soa(FR)]),
    nx("5." + FR, "A"),  # not a full address: a forward name with a bad type label
    nx("svc1.testns.svc." + FR, "A"),  # forward-shaped name in a reverse zone
    nx("testns.svc." + FR, "A"),
    nodata("svc." + FR, "A"),
    nodata("svc1.testns.svc." + FR, "SOA"),
]

# --- namespaces / namespace_labels / labels -----------------------------------------------------
FILTERS = [
    pos("svc1.testns.svc.filtered.local.", "A", [rr("svc1.testns.svc.filtered.local.", "A", "10.96.1.1")]),
    nodata("testns.svc.filtered.local.", "A"),
    nx("default.svc.filtered.local.", "A"),
    nx("kubernetes.default.svc.filtered.local.", "A"),
    nx("othersvc.otherns.svc.filtered.local.", "A"),
    pos("othersvc.otherns.svc.cluster.local.", "A", [rr("othersvc.otherns.svc.cluster.local.", "A", "10.96.200.2")]),
    nx("hiddensvc.testns.svc.filtered.local.", "A"),
    pos("hiddensvc." + S, "A", [rr("hiddensvc." + S, "A", "10.96.200.3")]),
    # a slice labelled dns=hidden is invisible too
    pos("partial.testns.svc.filtered.local.", "A", [rr("partial.testns.svc.filtered.local.", "A", "172.0.4.1")]),
    pos("partial." + S, "A", [rr("partial." + S, "A", "172.0.4.1"), rr("partial." + S, "A", "172.0.4.2")]),
    # namespace_labels exposed=yes (noep block): only testns is exposed
    nx("othersvc.otherns.svc.noep.local.", "A"),
    nx("kubernetes.default.svc.noep.local.", "A"),
    nx("otherns.svc.noep.local.", "A"),
    nodata("testns.svc.noep.local.", "A"),
]

# --- §6/§8 qtype dispatch, NXDOMAIN vs NODATA -----------------------------------------------------
DISPATCH = [
    nodata("nosuch." + S, "SOA"),  # SOA below the apex: NODATA even for missing names
    nodata("foo.cluster.local.", "SOA"),
    nodata("a.b.c.svc1." + S, "SOA"),
    nodata("svc1." + S, "SOA"),
    nodata("svc1." + S, "NS"),
    nx("nosuch." + S, "NS"),
    nodata("svc1." + S, "HINFO"),
    nx("nosuch." + S, "HINFO"),
    nodata("svc1." + S, "CAA"),
    nx("nosuch." + S, "CAA"),
    nodata("svc1." + S, "MX"),
    nx("nosuch." + S, "MX"),
    nodata("svc1." + S, "CNAME"),
    nx("nosuch." + S, "CNAME"),
    nx("nosuch." + S, "TXT"),
    nodata("10-240-0-1." + P, "MX"),
]

# --- §9 SOA, TTLs, case -------------------------------------------------------------------------
SOA_AND_CASE = [
    pos("disabled.local.", "SOA", [soa("disabled.local.", 30)]),
    pos("noep.local.", "SOA", [soa("noep.local.", 600)]),  # TTL min(600, 300), minimum 600
    nx("nosuch.testns.svc.disabled.local.", "A"),  # negative SOA with ttl 30
    nx("nosuch.testns.svc.noep.local.", "A"),
    pos("cLuStEr.LoCaL.", "SOA", [soa("cLuStEr.LoCaL.")]),
    nx("NoSuch.testns.svc.CLUSTER.local.", "A"),  # SOA owner/MNAME/RNAME as spelled
    nodata("SVC1.TestNS.svc.Cluster.Local.", "AAAA"),
    pos("SVC1.TestNS.svc.Cluster.Local.", "A", [rr("SVC1.TestNS.svc.Cluster.Local.", "A", "10.96.1.1")]),
    # SRV targets: lower-case object names + the zone as the client spelled it
    _srv("svc1.testns.svc.cLuStEr.LoCaL.", [(100, 80, "svc1.testns.svc.cLuStEr.LoCaL.")],
         [("svc1.testns.svc.cLuStEr.LoCaL.", "10.96.1.1")]),
    _srv("_HTTP._TCP.HDLS6.TESTNS.svc.cluster.LOCAL.",
         [(16, 80, f"172-0-1-{i}.hdls6.testns.svc.cluster.LOCAL.") for i in range(1, 7)],
         [(f"172-0-1-{i}.hdls6.testns.svc.cluster.LOCAL.", f"172.0.1.{i}") for i in range(1, 7)]),
    pos("1.1.96.10.IN-ADDR.ARPA.", "PTR", [rr("1.1.96.10.IN-ADDR.ARPA.", "PTR", "svc1." + S)]),
    pos("Ep1A.Svc1.testns.svc.cluster.local.", "A", [rr("Ep1A.Svc1.testns.svc.cluster.local.", "A", "172.0.0.1")]),
    pos("10-240-0-1.PodNS.pod.cluster.local.", "A", [rr("10-240-0-1.PodNS.pod.cluster.local.", "A", "10.240.0.1")]),
    pos("EXT." + S, "A", [rr("EXT." + S, "CNAME", "svc1." + S), rr("svc1." + S, "A", "10.96.1.1")]),
]

ROWS = APEX + TYPE_AND_NAMESPACE + SERVICES + ENDPOINTS + PODS + SRV + PTRS + FILTERS + DISPATCH + SOA_AND_CASE


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "authority", "additional"), ROWS)
def test_record(port: int, qname: str, qtype: str, rcode: str, answer: list[str],
                authority: list[str], additional: list[str]) -> None:
    expect(port, qname, qtype, rcode, answer, authority, additional)


# A representative subset over TCP as well.
TCP_IDS = {
    "cluster.local. SOA", "cluster.local. TXT NXDOMAIN", "svc1.testns.svc.cluster.local. A",
    "hdls1.testns.svc.cluster.local. SRV", "ext.testns.svc.cluster.local. A",
    "extout.testns.svc.cluster.local. A", "fd00-240--1.podns.pod.cluster.local. A NODATA",
    "40.0.0.172.in-addr.arpa. PTR", "nosuch.testns.svc.cluster.local. A NXDOMAIN",
    "kube-dns.kube-system.svc.cluster.local. SRV", "dns-version.cluster.local. TXT",
    "svc1.testns.svc.cLuStEr.LoCaL. SRV", "1." + FR + " PTR",
}
TCP_ROWS = [row for row in ROWS if row.id in TCP_IDS]  # type: ignore[attr-defined]


def test_tcp_subset_is_complete() -> None:
    assert len(TCP_ROWS) == len(TCP_IDS)


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "authority", "additional"), TCP_ROWS)
def test_record_tcp(port: int, qname: str, qtype: str, rcode: str, answer: list[str],
                    authority: list[str], additional: list[str]) -> None:
    expect(port, qname, qtype, rcode, answer, authority, additional, tcp=True)


# --- rows that need more than the table ---------------------------------------------------------

def assert_fell_through(port: int, qname: str, qtype: str) -> None:
    """The kubernetes plugin passed the query on: whoami answered (its A record in additional)."""
    r = ask(port, qname, qtype)
    assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
    assert not r.answer and not r.authority
    assert f"{qname} 0 IN A 127.0.0.1" in section_texts(r.additional)
    assert any(rrset.name.to_text() == f"_udp.{qname}" for rrset in r.additional)


@pytest.mark.parametrize(("qname", "qtype"), [
    ("99.0.0.172.in-addr.arpa.", "PTR"),  # a not-ready endpoint has no PTR
    ("1.0.240.10.in-addr.arpa.", "PTR"),  # a pod IP that is no endpoint
    ("9.9.9.10.in-addr.arpa.", "PTR"),
    (nibbles("fd00::99"), "PTR"),
    ("in-addr.arpa.", "TXT"),  # TXT at a reverse apex is a name error too
    ("svc1.testns.svc.in-addr.arpa.", "A"),  # forward-shaped in a reverse zone: NXDOMAIN, so it falls through
    ("10.in-addr.arpa.", "PTR"),  # a partial reverse name
    # fallthrough with no zones covers every zone of its block, forward names too
    ("nosuch.testns.svc.ft.local.", "A"),
    ("ft.local.", "TXT"),
    ("10-240-0-1.podns.pod.ft.local.", "A"),  # pods disabled
])
def test_fallthrough(port: int, qname: str, qtype: str) -> None:
    assert_fell_through(port, qname, qtype)


def test_fallthrough_only_on_name_errors(port: int) -> None:
    # NODATA and answers are not passed on, and the forward zone has no fallthrough at all.
    expect(port, "svc1.testns.svc.ft.local.", "A", answer=[rr("svc1.testns.svc.ft.local.", "A", "10.96.1.1")])
    expect(port, "testns.svc.ft.local.", "A", authority=[soa("ft.local.")])
    expect(port, "nosuch.testns.svc.cluster.local.", "A", "NXDOMAIN", authority=[soa("cluster.local.")])
    expect(port, "in-addr.arpa.", "SOA", answer=[soa("in-addr.arpa.")])


@pytest.mark.parametrize(("qtype", "tcp"), [("AXFR", True), ("IXFR", True), ("IXFR", False)])
def test_transfers_refused(port: int, qtype: str, tcp: bool) -> None:
    """The handler itself refuses transfers (only the transfer plugin serves them)."""
    expect(port, "cluster.local.", qtype, "REFUSED", aa=False, tcp=tcp)


@needs_local_v4
def test_ns_discovery_finds_kube_dns_by_local_ip(port: int) -> None:
    """The kube-dns EndpointSlice holds this machine's own IPv4: apex NS is the service name
    with its ClusterIP as glue (and the SOA MNAME stays ns.dns)."""
    assert KUBE_DNS_EP == LOCAL_V4
    expect(port, "cluster.local.", "NS", answer=[rr("cluster.local.", "NS", KD)],
           additional=[rr(KD, "A", "10.96.0.10")])
    expect(port, "Cluster.Local.", "NS", answer=[rr("Cluster.Local.", "NS", "kube-dns.kube-system.svc.Cluster.Local.")],
           additional=[rr("kube-dns.kube-system.svc.Cluster.Local.", "A", "10.96.0.10")])
    expect(port, "cluster.local.", "SOA", answer=[soa("cluster.local.")])


@pytest.mark.skipif(not LOCAL_IPS, reason="no non-loopback address on this machine")
def test_ns_discovery_falls_back_to_ns_dns(port: int) -> None:
    """With noendpoints nothing is discovered: NS is ns.dns.<zone> with the local IPs."""
    z = "noep.local."
    glue = [rr("ns.dns." + z, "AAAA" if ":" in ip else "A", ip, 600) for ip in LOCAL_IPS]
    expect(port, z, "NS", answer=[rr(z, "NS", "ns.dns." + z, 600)], additional=glue)
    v4 = [rr("ns.dns." + z, "A", ip, 600) for ip in LOCAL_IPS if ":" not in ip]
    v6 = [rr("ns.dns." + z, "AAAA", ip, 600) for ip in LOCAL_V6]
    no = [soa(z, 600)]
    expect(port, "ns.dns." + z, "A", answer=v4, authority=[] if v4 else no)
    expect(port, "ns.dns." + z, "AAAA", answer=v6, authority=[] if v6 else no)


def test_soa_serial_is_recent_unix_time(port: int) -> None:
    import time

    r = ask(port, "cluster.local.", "SOA")
    serial = r.answer[0][0].serial
    assert time.time() - 600 < serial <= time.time() + 1
    assert r.answer[0][0].mname.to_text() == "ns.dns.cluster.local."
    assert r.answer[0][0].rname.to_text() == "hostmaster.cluster.local."


def test_flags_rd_copied(port: int) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query("svc1." + S, "A")
    q.flags &= ~dns.flags.RD
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
    assert not r.flags & dns.flags.RD
    assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA


def test_case_of_one_asker_never_leaks_into_another(port: int) -> None:
    """Repeated questions in different letter case (0x20 resolvers): owners follow each asker,
    SRV targets follow each asker's zone spelling, CNAME targets keep the object's spelling."""
    for qname in ("svc1.testns.svc.cluster.local.", "SVC1.testns.svc.CLUSTER.local.",
                  "svc1.testns.svc.cluster.local."):
        zone = qname[-len("cluster.local."):]
        target = f"svc1.testns.svc.{zone}"
        expect(port, qname, "SRV", answer=[rr(qname, "SRV", f"0 100 80 {target}")],
               additional=[rr(target, "A", "10.96.1.1")])
        expect(port, qname, "A", answer=[rr(qname, "A", "10.96.1.1")])
    for qname in ("ext.testns.svc.cluster.local.", "ext.TESTNS.svc.Cluster.Local.", "ext.testns.svc.cluster.local."):
        expect(port, qname, "CNAME", answer=[rr(qname, "CNAME", "svc1." + S)])
        expect(port, qname, "A", answer=[rr(qname, "CNAME", "svc1." + S), rr("svc1." + S, "A", "10.96.1.1")])
    for qname in ("nosuch.testns.svc.cluster.local.", "NOSUCH.testns.svc.Cluster.LOCAL.", "nosuch.testns.svc.cluster.local."):
        expect(port, qname, "A", "NXDOMAIN", authority=[soa(qname[-len("cluster.local."):])])
    for qname in ("cluster.local.", "CLUSTER.local.", "cluster.local."):
        if LOCAL_V4 is not None:
            kd = f"kube-dns.kube-system.svc.{qname}"
            expect(port, qname, "NS", answer=[rr(qname, "NS", kd)], additional=[rr(kd, "A", "10.96.0.10")])
        expect(port, qname, "SOA", answer=[soa(qname)])
