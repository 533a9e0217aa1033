"""The Kubernetes DNS specification checklist (k8s_dns_spec.md §2, S0-S5) and the shapes of
the e2e DNS probes (§3: T1, T3, T5, T6, T8, T9, T14), as queries against dnsd + DevCluster.

The e2e probes run ``dig +notcp`` and ``dig +tcp`` with ``+noall +answer`` and only need a
non-empty answer; here every answer is also checked exactly.  ``dig +search`` moves to the next
search suffix only on NXDOMAIN, so the wrong expansions a pod's resolv.conf produces
(``<ns>.svc.<zone>``, ``svc.<zone>``, ``<zone>`` suffixes) are asserted NXDOMAIN one by one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import dns.rcode
import dns.reversename
import pytest
from k8s_support import (
    ask,
    endpoint,
    endpoint_slice,
    expect,
    namespace,
    port,
    service,
    soa,
    start_cluster,
    start_dnsd,
    wait_for,
)
from support import dig

from dnsd.devcluster import DevCluster

pytestmark = pytest.mark.timeout(120)

NS = "e2e-dns-4711"
Z = "cluster.local."
TTL = 30  # kubeadm's ttl
POD_IP = "10.244.1.7"  # the probe pod dns-querier-1 (subdomain dns-test-service)
POD2_IP = "10.244.1.8"  # dns-querier-2 (subdomain dns-test-service-2)

EXAMPLE_COM = """\
$ORIGIN example.com.
$TTL 300
@    IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 300
     IN NS  ns1
ns1  IN A   192.0.2.2
foo  IN A   192.0.2.123
bar  IN A   192.0.2.124
"""

COREFILE = """\
.:{PORT} {
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        endpoint URL
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    whoami
}
example.com:{PORT} {
    file ZONEFILE
}
"""

http = port("http", 80)


def objects() -> list[dict]:
    return [
        namespace(NS),
        service("default", "kubernetes", ips=["10.96.0.1"], ports=[port("https", 443)]),
        endpoint_slice("default", "kubernetes-x", "kubernetes", [endpoint("172.18.0.2")],
                       [port("https", 6443)]),
        # T5/T6: headless dns-test-service and ClusterIP test-service-2 share the probe pod;
        # only the headless one gives it the hostname dns-querier-1 (pod subdomain).
        service(NS, "dns-test-service", headless=True, ports=[http]),
        endpoint_slice(NS, "dns-test-service-x", "dns-test-service",
                       [endpoint(POD_IP, hostname="dns-querier-1", pod="dns-querier-1")], [http]),
        service(NS, "test-service-2", ports=[http]),  # ClusterIP allocated by the cluster
        endpoint_slice(NS, "test-service-2-x", "test-service-2", [endpoint(POD_IP, pod="dns-querier-1")],
                       [http]),
        # T8: headless dns-test-service-2 with pod dns-querier-2
        service(NS, "dns-test-service-2", headless=True, ports=[http]),
        endpoint_slice(NS, "dns-test-service-2-x", "dns-test-service-2",
                       [endpoint(POD2_IP, hostname="dns-querier-2", pod="dns-querier-2")], [http]),
        # T9: ExternalName dns-test-service-3 -> foo.example.com
        service(NS, "dns-test-service-3", external="foo.example.com"),
        # S2.2/S2.5: an IPv6 ClusterIP
        service(NS, "v6svc", ips=["fd00:10:96::a"], ports=[http]),
        # S3: headless with IPv4 + IPv6 endpoints, one without a hostname, one not ready,
        # two named ports
        service(NS, "pets", headless=True, ports=[port("http", 80), port("metrics", 9090)]),
        endpoint_slice(NS, "pets-v4", "pets", [
            endpoint("10.244.2.1", hostname="my-pet"),
            endpoint("10.244.2.2"),
            endpoint("10.244.2.3", hostname="sick-pet", ready=False),
        ], [port("http", 80), port("metrics", 9090)]),
        endpoint_slice(NS, "pets-v6", "pets", [endpoint("fd00:244::1", hostname="my-pet6")],
                       [port("http", 80), port("metrics", 9090)], family="IPv6"),
        # S3.3: headless with no ready endpoint
        service(NS, "nobody-home", headless=True, ports=[http]),
        endpoint_slice(NS, "nobody-home-x", "nobody-home", [endpoint("10.244.3.1", ready=False)], [http]),
    ]


def apply_relaxed_name(cluster: DevCluster, obj: dict) -> None:
    """Apply a Service whose name starts with a digit.

    Kubernetes accepts these with the RelaxedServiceNameValidation feature (T14); DevCluster
    still applies the older DNS-1035 rule to Service names, so its rule is relaxed to an
    RFC 1123 label for this one call.
    """
    from dataclasses import replace
    from unittest import mock

    from dnsd.devcluster.resources import RESOURCES

    relaxed = replace(RESOURCES["services"], name_rule="label")
    with mock.patch.dict(RESOURCES, {"services": relaxed}):
        cluster.apply(obj)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, int]]:
    cluster = start_cluster(objects())
    # T14: a service name that starts with a digit, unnamed port 443
    apply_relaxed_name(cluster, service(NS, "1kubernetes", ports=[port("", 443)]))
    zonefile = tmp_path_factory.mktemp("zones") / "example.com"
    zonefile.write_text(EXAMPLE_COM)
    server = start_dnsd(COREFILE.replace("URL", cluster.url).replace("ZONEFILE", str(zonefile)),
                        ready_names=[(f"dns-test-service.{NS}.svc.{Z}", "A")])
    try:
        yield cluster, server.port
    finally:
        server.stop()
        cluster.stop()


@pytest.fixture(scope="module")
def dns_port(env: tuple[DevCluster, int]) -> int:
    return env[1]


def cluster_ip(cluster: DevCluster, name: str) -> str:
    svc = cluster.get("Service", name, NS)
    assert svc is not None
    return str(svc["spec"]["clusterIP"])


def rr(owner: str, rtype: str, rdata: str, ttl: int = TTL) -> str:
    return f"{owner} {ttl} IN {rtype} {rdata}"


def fq(name: str) -> str:
    return f"{name}.{NS}.svc.{Z}"


def dig_answer(port: int, *args: str) -> list[str]:
    """``dig +noall +answer`` lines, whitespace-normalised."""
    out = dig("+noall", "+answer", *args, port=port)
    return sorted(" ".join(line.split()) for line in out.splitlines() if line and not line.startswith(";"))


def dig_short(port: int, *args: str) -> str:
    return dig("+short", *args, port=port).strip()


# --- S0 definitions -----------------------------------------------------------------------------

def test_s0_4_case_insensitive_and_echoed(dns_port: int) -> None:
    expect(dns_port, "KUBERNETES.Default.svc.Cluster.Local.", "A",
           answer=[rr("KUBERNETES.Default.svc.Cluster.Local.", "A", "10.96.0.1")])


def test_s0_2_system_assigned_endpoint_name_is_a_real_name(dns_port: int) -> None:
    """An endpoint without hostname gets a stable identifier (the dashed IP) that appears as
    SRV target and resolves itself."""
    r = ask(dns_port, f"_http._tcp.{fq('pets')}", "SRV")
    targets = sorted(rd.target.to_text() for rrset in r.answer for rd in rrset)
    assert f"10-244-2-2.{fq('pets')}" in targets
    expect(dns_port, f"10-244-2-2.{fq('pets')}", "A", answer=[rr(f"10-244-2-2.{fq('pets')}", "A", "10.244.2.2")])


def test_s0_3_only_ready_endpoints(dns_port: int) -> None:
    expect(dns_port, f"sick-pet.{fq('pets')}", "A", "NXDOMAIN", authority=[soa(Z, TTL)])
    r = ask(dns_port, fq("pets"), "A")
    assert "10.244.2.3" not in {rd.address for rrset in r.answer for rd in rrset}


# --- S1 schema version --------------------------------------------------------------------------

def test_s1_dns_version(dns_port: int) -> None:
    expect(dns_port, "dns-version.cluster.local.", "TXT",
           answer=['dns-version.cluster.local. 28800 IN TXT "1.1.0"'])


# --- S2 ClusterIP services ----------------------------------------------------------------------

def test_s2_1_a(dns_port: int, env: tuple[DevCluster, int]) -> None:
    ip = cluster_ip(env[0], "test-service-2")
    expect(dns_port, fq("test-service-2"), "A", answer=[rr(fq("test-service-2"), "A", ip)])


def test_s2_2_aaaa_and_wrong_family_nodata(dns_port: int) -> None:
    expect(dns_port, fq("v6svc"), "AAAA", answer=[rr(fq("v6svc"), "AAAA", "fd00:10:96::a")])
    expect(dns_port, fq("v6svc"), "A", authority=[soa(Z, TTL)])
    expect(dns_port, fq("test-service-2"), "AAAA", authority=[soa(Z, TTL)])


def test_s2_3_srv_named_port(dns_port: int, env: tuple[DevCluster, int]) -> None:
    ip = cluster_ip(env[0], "test-service-2")
    owner = f"_http._tcp.{fq('test-service-2')}"
    expect(dns_port, owner, "SRV", answer=[rr(owner, "SRV", f"0 100 80 {fq('test-service-2')}")],
           additional=[rr(fq("test-service-2"), "A", ip)])
    expect(dns_port, "_https._tcp.kubernetes.default.svc.cluster.local.", "SRV",
           answer=[rr("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV",
                      "0 100 443 kubernetes.default.svc.cluster.local.")],
           additional=[rr("kubernetes.default.svc.cluster.local.", "A", "10.96.0.1")])
    # the protocol label is the lower-cased protocol; another one is a name error
    expect(dns_port, f"_http._udp.{fq('test-service-2')}", "SRV", "NXDOMAIN", authority=[soa(Z, TTL)])


def test_s2_4_ptr_ipv4(dns_port: int, env: tuple[DevCluster, int]) -> None:
    ip = cluster_ip(env[0], "test-service-2")
    name = dns.reversename.from_address(ip).to_text()
    expect(dns_port, name, "PTR", answer=[rr(name, "PTR", fq("test-service-2"))])
    expect(dns_port, "1.0.96.10.in-addr.arpa.", "PTR",
           answer=[rr("1.0.96.10.in-addr.arpa.", "PTR", "kubernetes.default.svc.cluster.local.")])


def test_s2_5_ptr_ipv6(dns_port: int) -> None:
    name = dns.reversename.from_address("fd00:10:96::a").to_text()
    assert name.count(".") == 34  # 32 nibbles + ip6.arpa
    expect(dns_port, name, "PTR", answer=[rr(name, "PTR", fq("v6svc"))])


# --- S3 headless services -----------------------------------------------------------------------

def test_s3_1_and_s3_2_service_name_sets(dns_port: int) -> None:
    expect(dns_port, fq("pets"), "A", answer=[rr(fq("pets"), "A", "10.244.2.1"), rr(fq("pets"), "A", "10.244.2.2")])
    expect(dns_port, fq("pets"), "AAAA", answer=[rr(fq("pets"), "AAAA", "fd00:244::1")])


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_s3_3_no_ready_endpoints_nxdomain(dns_port: int, qtype: str) -> None:
    expect(dns_port, fq("nobody-home"), qtype, "NXDOMAIN", authority=[soa(Z, TTL)])


def test_s3_4_per_endpoint_records(dns_port: int) -> None:
    expect(dns_port, f"my-pet.{fq('pets')}", "A", answer=[rr(f"my-pet.{fq('pets')}", "A", "10.244.2.1")])
    expect(dns_port, f"my-pet6.{fq('pets')}", "AAAA", answer=[rr(f"my-pet6.{fq('pets')}", "AAAA", "fd00:244::1")])
    expect(dns_port, f"my-pet.{fq('pets')}", "AAAA", authority=[soa(Z, TTL)])


def test_s3_5_srv_n_endpoints_times_m_named_ports(dns_port: int) -> None:
    names = [f"my-pet.{fq('pets')}", f"10-244-2-2.{fq('pets')}", f"my-pet6.{fq('pets')}"]
    glue = [rr(names[0], "A", "10.244.2.1"), rr(names[1], "A", "10.244.2.2"), rr(names[2], "AAAA", "fd00:244::1")]
    for pname, number in (("http", 80), ("metrics", 9090)):
        owner = f"_{pname}._tcp.{fq('pets')}"
        # 3 ready endpoints x 1 matching port: weight floor(100/3)
        expect(dns_port, owner, "SRV", answer=[rr(owner, "SRV", f"0 33 {number} {t}") for t in names],
               additional=glue)


def test_s3_6_ptr_for_endpoints(dns_port: int) -> None:
    for ip, target in (("10.244.2.1", f"my-pet.{fq('pets')}"), ("10.244.2.2", f"10-244-2-2.{fq('pets')}"),
                       ("fd00:244::1", f"my-pet6.{fq('pets')}")):
        name = dns.reversename.from_address(ip).to_text()
        expect(dns_port, name, "PTR", answer=[rr(name, "PTR", target)])
    # the probe pod is an endpoint of two services: one PTR per service
    name = dns.reversename.from_address(POD_IP).to_text()
    expect(dns_port, name, "PTR", answer=[rr(name, "PTR", f"dns-querier-1.{fq('dns-test-service')}"),
                                         rr(name, "PTR", f"10-244-1-7.{fq('test-service-2')}")])


# --- S4 ExternalName ----------------------------------------------------------------------------

def test_s4_externalname_cname_and_chase(dns_port: int) -> None:
    name = fq("dns-test-service-3")
    expect(dns_port, name, "CNAME", answer=[rr(name, "CNAME", "foo.example.com.")])
    expect(dns_port, name, "A", answer=[rr(name, "CNAME", "foo.example.com."),
                                        rr("foo.example.com.", "A", "192.0.2.123", 300)])
    # dns_configmap's "Forward external name lookup": exactly the CNAME then the address
    assert dig_short(dns_port, name, "A").splitlines() == ["foo.example.com.", "192.0.2.123"]


# --- S5 extensions ------------------------------------------------------------------------------

def test_s5_extensions_coexist_with_spec_records(dns_port: int) -> None:
    """Extensions (pod records with ``pods insecure``, bare-service SRV with every port) are
    served on top of the spec's records, which stay exactly as required."""
    name = f"10-244-1-7.{NS}.pod.{Z}"
    expect(dns_port, name, "A", answer=[rr(name, "A", POD_IP)])
    expect(dns_port, fq("pets"), "SRV",
           answer=[rr(fq("pets"), "SRV", f"0 16 {p} {t}") for p in (80, 9090)
                   for t in (f"my-pet.{fq('pets')}", f"10-244-2-2.{fq('pets')}", f"my-pet6.{fq('pets')}")],
           additional=[rr(f"my-pet.{fq('pets')}", "A", "10.244.2.1"), rr(f"10-244-2-2.{fq('pets')}", "A", "10.244.2.2"),
                       rr(f"my-pet6.{fq('pets')}", "AAAA", "fd00:244::1")])


# --- e2e probe shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
def test_t1_kubernetes_default(dns_port: int, proto: str) -> None:
    assert dig_answer(dns_port, proto, "kubernetes.default.svc.cluster.local", "A") == [
        "kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]


@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
def test_t5_services(dns_port: int, env: tuple[DevCluster, int], proto: str) -> None:
    ip = cluster_ip(env[0], "test-service-2")
    assert dig_answer(dns_port, proto, fq("dns-test-service"), "A") == [f"{fq('dns-test-service')} 30 IN A {POD_IP}"]
    assert dig_answer(dns_port, proto, f"_http._tcp.{fq('dns-test-service')}", "SRV") == [
        f"_http._tcp.{fq('dns-test-service')} 30 IN SRV 0 100 80 dns-querier-1.{fq('dns-test-service')}"]
    assert dig_answer(dns_port, proto, f"_http._tcp.{fq('test-service-2')}", "SRV") == [
        f"_http._tcp.{fq('test-service-2')} 30 IN SRV 0 100 80 {fq('test-service-2')}"]
    rev = dns.reversename.from_address(ip).to_text()
    assert dig_answer(dns_port, proto, rev, "PTR") == [f"{rev} 30 IN PTR {fq('test-service-2')}"]


SEARCH = [f"{NS}.svc.{Z}", f"svc.{Z}", Z]  # a ClusterFirst pod's search list in NS


def search_walk(port: int, short: str, qtype: str) -> list[tuple[str, str]]:
    """What ``dig +search`` does with ndots:5: each suffix in turn while NXDOMAIN, then the
    name as is.  Returns [(fqdn, rcode)] up to the first non-NXDOMAIN."""
    tried = []
    for suffix in [*SEARCH, ""]:
        name = f"{short}.{suffix}" if suffix else f"{short}."
        rcode = dns.rcode.to_text(ask(port, name, qtype).rcode())
        tried.append((name, rcode))
        if rcode != "NXDOMAIN":
            break
    return tried


@pytest.mark.parametrize(("short", "qtype", "hit"), [
    # T3 partial names (kubernetes.default)
    ("kubernetes.default", "A", "kubernetes.default.svc.cluster.local."),
    ("kubernetes.default.svc", "A", "kubernetes.default.svc.cluster.local."),
    # T6 partial names for services
    ("dns-test-service", "A", fq("dns-test-service")),
    (f"dns-test-service.{NS}", "A", fq("dns-test-service")),
    (f"dns-test-service.{NS}.svc", "A", fq("dns-test-service")),
    (f"_http._tcp.dns-test-service.{NS}.svc", "SRV", f"_http._tcp.{fq('dns-test-service')}"),
    (f"_http._tcp.test-service-2.{NS}.svc", "SRV", f"_http._tcp.{fq('test-service-2')}"),
])
def test_t3_t6_search_expansions(dns_port: int, short: str, qtype: str, hit: str) -> None:
    tried = search_walk(dns_port, short, qtype)
    assert tried[-1] == (hit, "NOERROR"), tried
    assert all(rcode == "NXDOMAIN" for _, rcode in tried[:-1]), tried
    assert ask(dns_port, hit, qtype).answer, hit


def test_t8_pod_subdomain(dns_port: int) -> None:
    host = f"dns-querier-2.{fq('dns-test-service-2')}"
    expect(dns_port, host, "A", answer=[rr(host, "A", POD2_IP)])
    expect(dns_port, fq("dns-test-service-2"), "A", answer=[rr(fq("dns-test-service-2"), "A", POD2_IP)])
    # over TCP too, as the probes do
    expect(dns_port, host, "A", answer=[rr(host, "A", POD2_IP)], tcp=True)


def test_t9_externalname_update_and_type_change(dns_port: int, env: tuple[DevCluster, int]) -> None:
    cluster = env[0]
    name = fq("dns-test-service-3")
    assert dig_short(dns_port, name, "CNAME") == "foo.example.com."
    cluster.apply(service(NS, "dns-test-service-3", external="bar.example.com"))
    wait_for(lambda: dig_short(dns_port, name, "CNAME") == "bar.example.com.", 30, "externalName update")
    cluster.apply(service(NS, "dns-test-service-3", ports=[http]))  # now a ClusterIP service
    ip = cluster_ip(cluster, "dns-test-service-3")
    wait_for(lambda: dig_short(dns_port, name, "A") == ip, 30, "type change to ClusterIP")
    expect(dns_port, name, "A", answer=[rr(name, "A", ip)])  # no leftover CNAME
    expect(dns_port, name, "CNAME", authority=[soa(Z, TTL)])


@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
def test_t14_digit_leading_service(dns_port: int, env: tuple[DevCluster, int], proto: str) -> None:
    ip = cluster_ip(env[0], "1kubernetes")
    assert dig_answer(dns_port, proto, fq("1kubernetes"), "A") == [f"{fq('1kubernetes')} 30 IN A {ip}"]


def test_dig_sees_aa_and_no_ra(dns_port: int) -> None:
    out = dig("kubernetes.default.svc.cluster.local", "A", port=dns_port)
    flags = next(line for line in out.splitlines() if line.startswith(";; flags:"))
    assert " aa" in flags and " ra" not in flags, flags
    assert "status: NOERROR" in out


def test_dig_available() -> None:
    assert subprocess.run(["dig", "-v"], capture_output=True, check=False).returncode == 0
