"""The e2e DNS probes (k8s_dns_spec.md §3.2: T1, T3, T5, T6, T8, T9) with the real ``dig +search``
reading a pod's resolv.conf, against dnsd configured as kubeadm configures CoreDNS (kubernetes
+ ``forward`` to a real upstream + ``cache 30``), and the resolver side of that configuration:
forwarding of external names with the upstream's rcode, caching, serve_stale, dead upstreams.

Setup: the upstream is a second dnsd serving ``example.com`` (and a root zone) with the ``file``
plugin (tests/resolver_support.py); the pod resolv.conf is
``search <ns>.svc.cluster.local svc.cluster.local cluster.local node.example.com`` +
``options ndots:5``, bind-mounted on /etc/resolv.conf in a private mount namespace for each
dig (``unshare -m``).  ``dig +search`` moves to the next suffix only on NXDOMAIN, so each probe's
search walk (``+showsearch``) is asserted step by step and every wrong expansion is asked again
with ``+nosearch`` over UDP and TCP: it must be NXDOMAIN with an SOA.

Run with ``-s`` to see the transcripts of the probes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dns.rcode
import dns.reversename
import pytest
from k8s_support import namespace, port, service
from resolver_support import (
    NODE_DOMAIN,
    ZoneUpstream,
    answer_lines,
    dig_search,
    pod_resolv_conf,
    search_expansions,
    search_walk,
    status_of,
    transcript,
    wait_for_listener,
    wait_until,
)
from support import Dnsd, dig, free_port, query

from dnsd.devcluster import DevCluster

pytestmark = pytest.mark.timeout(90)

NS = "dns-8412"  # the e2e test's namespace ("dns-<random>")
Z = "cluster.local"
TTL = 30  # kubeadm's `ttl 30`
PROBE_POD = "dns-test-4b1d"  # the probe pod: hostname dns-querier-1, subdomain dns-test-service
POD_IP = "10.244.1.10"
POD2_IP = "10.244.1.11"  # dns-querier-2, subdomain dns-test-service-2
KUBERNETES_IP = "10.96.0.1"

# The kubeadm Corefile's kubernetes/forward/cache lines (Corefile.example), on loopback.
COREFILE = """\
.:{PORT} {
    bind 127.0.0.1
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       endpoint URL
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    forward . UPSTREAM {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
}
"""

http = port("http", 80)


def pod(ns: str, name: str, ip: str, labels: dict[str, str], hostname: str, subdomain: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"hostname": hostname, "subdomain": subdomain,
                 "containers": [{"name": "querier", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def with_selector(obj: dict, selector: dict[str, str]) -> dict:
    obj["spec"]["selector"] = selector
    return obj


def setup_e2e_objects(cluster: DevCluster) -> None:
    """What dns.go creates: the probe pod as the single endpoint of the headless
    ``dns-test-service`` (endpoint hostname dns-querier-1) and of ClusterIP ``test-service-2``;
    headless ``dns-test-service-2`` with pod dns-querier-2 (not Ready yet, see T8);
    ExternalName ``dns-test-service-3`` -> foo.example.com."""
    cluster.apply(namespace(NS))
    cluster.apply(service("default", "kubernetes", ips=[KUBERNETES_IP], ports=[port("https", 443)]))
    cluster.service_endpoints("default", "kubernetes", [{"ip": "172.18.0.2"}], [port("https", 6443)])
    cluster.apply(pod(NS, PROBE_POD, POD_IP, {"dns-test": "true"}, "dns-querier-1", "dns-test-service"))
    cluster.apply(with_selector(service(NS, "dns-test-service", headless=True, ports=[http]),
                                {"dns-test": "true"}))
    cluster.service_endpoints(NS, "dns-test-service",
                              [{"ip": POD_IP, "hostname": "dns-querier-1", "pod": PROBE_POD}], [http])
    cluster.apply(with_selector(service(NS, "test-service-2", ports=[http]), {"dns-test": "true"}))
    cluster.service_endpoints(NS, "test-service-2", [{"ip": POD_IP, "pod": PROBE_POD}], [http])
    cluster.apply(pod(NS, "dns-querier-2", POD2_IP, {"dns-test-hostname-attribute": "true"},
                      "dns-querier-2", "dns-test-service-2"))
    cluster.apply(with_selector(service(NS, "dns-test-service-2", headless=True, ports=[http]),
                                {"dns-test-hostname-attribute": "true"}))
    set_querier_2_ready(cluster, False)
    cluster.apply(service(NS, "dns-test-service-3", external="foo.example.com"))


def set_querier_2_ready(cluster: DevCluster, ready: bool) -> None:
    cluster.service_endpoints(NS, "dns-test-service-2", [
        {"ip": POD2_IP, "hostname": "dns-querier-2", "pod": "dns-querier-2", "ready": ready}], [http])


@dataclass
class Env:
    cluster: DevCluster
    upstream: ZoneUpstream
    server: Dnsd
    resolv: Path

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    upstream = ZoneUpstream().start()
    cluster = DevCluster().start()
    server = None
    try:
        setup_e2e_objects(cluster)
        server = Dnsd(COREFILE.replace("URL", cluster.url).replace("UPSTREAM", upstream.addr)).start()
        wait_until(lambda: _has_answer(server.port, f"dns-test-service.{NS}.svc.{Z}", "A"), 20,
                   "the kubernetes plugin never synced")
        resolv = pod_resolv_conf(tmp_path_factory.mktemp("pod") / "resolv.conf", NS)
        yield Env(cluster, upstream, server, resolv)
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        upstream.stop()


def _has_answer(port_: int, name: str, rdtype: str) -> bool:
    try:
        r = query(name, rdtype, port=port_, timeout=1.0)
    except Exception:  # noqa: BLE001 - starting
        return False
    return r.rcode() == dns.rcode.NOERROR and bool(r.answer)


def fq(name: str) -> str:
    return f"{name}.{NS}.svc.{Z}"


def cluster_ip(cluster: DevCluster, name: str) -> str:
    svc = cluster.get("Service", name, NS)
    assert svc is not None
    return str(svc["spec"]["clusterIP"])


# --- the probes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    name: str  # as the e2e test passes it to dig
    rdtype: str
    answer: tuple[str, ...]  # the exact answer lines expected (owner = the hit expansion)


def probes(test: str, cluster: DevCluster) -> list[Probe]:
    svc2_ip = cluster_ip(cluster, "test-service-2")
    ptr_name = dns.reversename.from_address(svc2_ip).to_text()
    k8s = (f"kubernetes.default.svc.{Z}. {TTL} IN A {KUBERNETES_IP}",)
    headless = (f"{fq('dns-test-service')}. {TTL} IN A {POD_IP}",)
    srv1 = f"SRV 0 100 80 dns-querier-1.{fq('dns-test-service')}."
    srv2 = f"SRV 0 100 80 {fq('test-service-2')}."
    ptr = (f"{ptr_name} {TTL} IN PTR {fq('test-service-2')}.",)
    table = {
        "T1": [Probe(f"kubernetes.default.svc.{Z}", "A", k8s)],
        "T3": [Probe("kubernetes.default", "A", k8s), Probe("kubernetes.default.svc", "A", k8s)],
        "T5": [
            Probe(fq("dns-test-service"), "A", headless),
            Probe(f"_http._tcp.{fq('dns-test-service')}", "SRV",
                  (f"_http._tcp.{fq('dns-test-service')}. {TTL} IN {srv1}",)),
            Probe(f"_http._tcp.{fq('test-service-2')}", "SRV",
                  (f"_http._tcp.{fq('test-service-2')}. {TTL} IN {srv2}",)),
            Probe(ptr_name, "PTR", ptr),
        ],
        "T6": [
            Probe("dns-test-service", "A", headless),
            Probe(f"dns-test-service.{NS}", "A", headless),
            Probe(f"dns-test-service.{NS}.svc", "A", headless),
            Probe(f"_http._tcp.dns-test-service.{NS}.svc", "SRV",
                  (f"_http._tcp.{fq('dns-test-service')}. {TTL} IN {srv1}",)),
            Probe(f"_http._tcp.test-service-2.{NS}.svc", "SRV",
                  (f"_http._tcp.{fq('test-service-2')}. {TTL} IN {srv2}",)),
            Probe(ptr_name, "PTR", ptr),
        ],
        "T8": [
            Probe(f"dns-querier-2.{fq('dns-test-service-2')}", "A",
                  (f"dns-querier-2.{fq('dns-test-service-2')}. {TTL} IN A {POD2_IP}",)),
            Probe(fq("dns-test-service-2"), "A", (f"{fq('dns-test-service-2')}. {TTL} IN A {POD2_IP}",)),
        ],
    }
    return table[test]


def check_probe(env: Env, probe: Probe, proto: str) -> list[str]:
    """Run one e2e probe exactly as createProbeCommand does, check the answer, the search walk
    and every wrong expansion; returns the transcript lines."""
    cmd = f"dig {proto} +noall +answer +search {probe.name} {probe.rdtype}"
    out = dig_search(env.resolv, env.port, proto, "+noall", "+answer", "+search", probe.name, probe.rdtype)
    got = answer_lines(out)
    assert got, f"{cmd}: empty answer (the e2e probe would never pass)\n{out}"
    # PTRs under in-addr.arpa are cached (`disable ... cluster.local` only): their TTL may have
    # counted down; cluster.local answers always carry the plugin's TTL.
    assert [_ttl_free(a) for a in got] == [_ttl_free(a) for a in probe.answer], \
        f"{cmd}:\n got  {got}\n want {list(probe.answer)}"
    for line in got:
        owner, ttl = line.split()[:2]
        in_zone = owner.endswith(f".{Z}.")
        assert (int(ttl) == TTL) if in_zone else (0 < int(ttl) <= TTL), line

    # The walk dig itself made: NXDOMAIN for every wrong expansion, then the hit.
    hit = probe.answer[0].split()[0].lower()
    expansions = search_expansions(probe.name, NS)
    assert hit in expansions, (hit, expansions)
    wrong = expansions[:expansions.index(hit)]
    shown = dig_search(env.resolv, env.port, proto, "+showsearch", "+noall", "+comments", "+question",
                       "+search", probe.name, probe.rdtype)
    walk = search_walk(shown)
    assert walk == [(w, "NXDOMAIN") for w in wrong] + [(hit, "NOERROR")], f"{cmd}: walk {walk}\n{shown}"

    # Each wrong expansion on its own, over both transports: NXDOMAIN with an SOA.
    for name in wrong:
        for p in ("+notcp", "+tcp"):
            alone = dig("+nosearch", p, "+noall", "+comments", "+authority", name, probe.rdtype, port=env.port)
            assert status_of(alone) == "NXDOMAIN", f"{name} {probe.rdtype} {p}:\n{alone}"
            assert " IN SOA " in " ".join(alone.split()), alone
    steps = " -> ".join(f"{n} {s}" for n, s in walk)
    return [transcript(cmd, out), f"  (search walk: {steps})"]


def _ttl_free(line: str) -> str:
    parts = line.split()
    return " ".join([parts[0], *parts[2:]])


@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
@pytest.mark.parametrize("test", ["T1", "T3", "T5", "T6"])
def test_e2e_probes_with_dig_search(env: Env, test: str, proto: str) -> None:
    lines = [f"--- {test} over {'UDP' if proto == '+notcp' else 'TCP'} (pod resolv.conf: "
             f"{' '.join(env.resolv.read_text().split())})"]
    for probe in probes(test, env.cluster):
        lines += check_probe(env, probe, proto)
    print("\n" + "\n".join(lines))


def test_t8_pod_subdomain_answers_once_ready(env: Env) -> None:
    """T8: dns-querier-2's per-endpoint name and the service name answer only once the pod is
    Ready; then both probes pass over UDP and TCP."""
    lines = ["--- T8 (endpoint not ready yet)"]
    for probe in probes("T8", env.cluster):
        out = dig_search(env.resolv, env.port, "+notcp", "+noall", "+answer", "+search", probe.name, "A")
        assert answer_lines(out) == [], out
        lines.append(transcript(f"dig +notcp +noall +answer +search {probe.name} A", out))
    set_querier_2_ready(env.cluster, True)
    took = wait_until(lambda: _has_answer(env.port, fq("dns-test-service-2"), "A"), 10,
                      "dns-test-service-2 never answered after the pod became Ready")
    lines.append(f"--- T8 (Ready; visible after {took:.2f}s)")
    for proto in ("+notcp", "+tcp"):
        for probe in probes("T8", env.cluster):
            lines += check_probe(env, probe, proto)
    print("\n" + "\n".join(lines))


def test_t9_externalname_updates_and_type_change(env: Env) -> None:
    """T9: ``dig +short <fqdn> CNAME`` is exactly foo.example.com., then bar.example.com. after
    the update; after the change to ClusterIP ``dig +short <fqdn> A`` is exactly the ClusterIP
    (no leftover CNAME line)."""
    name = fq("dns-test-service-3")
    lines = ["--- T9"]

    def short(*args: str) -> str:
        return dig("+short", *args, port=env.port).strip()

    for proto in ("+notcp", "+tcp"):
        assert short(proto, name, "CNAME") == "foo.example.com."
    lines.append(f"$ dig +short {name} CNAME\n  {short(name, 'CNAME')}")
    # An A query chases the target through forward: CNAME plus the upstream's address.
    assert short(name, "A").splitlines() == ["foo.example.com.", "192.0.2.123"]
    lines.append(f"$ dig +short {name} A\n  " + "\n  ".join(short(name, "A").splitlines()))

    svc = env.cluster.get("Service", "dns-test-service-3", NS)
    assert svc is not None
    svc["spec"]["externalName"] = "bar.example.com"
    env.cluster.apply(svc)
    took = wait_until(lambda: short(name, "CNAME") == "bar.example.com.", 10, "externalName update")
    for proto in ("+notcp", "+tcp"):
        assert short(proto, name, "CNAME") == "bar.example.com."
    lines.append(f"(externalName -> bar.example.com, visible after {took:.2f}s)")
    lines.append(f"$ dig +short {name} CNAME\n  {short(name, 'CNAME')}")

    svc = env.cluster.get("Service", "dns-test-service-3", NS)
    assert svc is not None
    svc["spec"] = {"type": "ClusterIP", "ports": [http]}
    env.cluster.apply(svc)
    ip = cluster_ip(env.cluster, "dns-test-service-3")
    took = wait_until(lambda: short(name, "A") == ip, 10, "type change to ClusterIP")
    for proto in ("+notcp", "+tcp"):
        assert short(proto, name, "A") == ip
    lines.append(f"(type -> ClusterIP {ip}, visible after {took:.2f}s)")
    lines.append(f"$ dig +short {name} A\n  {short(name, 'A')}")
    print("\n" + "\n".join(lines))


# --- forwarding and caching --------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
def test_external_names_walk_to_upstream(env: Env, proto: str) -> None:
    """An external name goes through the whole search walk: three in-zone NXDOMAINs from the
    kubernetes plugin, the node-domain expansion NXDOMAIN passed through from the upstream,
    then the upstream's answer.  A name the upstream does not know ends NXDOMAIN."""
    out = dig_search(env.resolv, env.port, proto, "+noall", "+answer", "+search", "www.example.com", "A")
    answers = answer_lines(out)
    assert len(answers) == 1 and answers[0].startswith("www.example.com. ")
    assert answers[0].split()[2:] == ["IN", "A", "192.0.2.10"]
    assert 0 < int(answers[0].split()[1]) <= 30, answers  # capped by `cache 30`
    shown = dig_search(env.resolv, env.port, proto, "+showsearch", "+noall", "+comments", "+question",
                       "+search", "www.example.com", "A")
    want = [(n, "NXDOMAIN") for n in search_expansions("www.example.com", NS)[:-1]]
    assert search_walk(shown) == [*want, ("www.example.com.", "NOERROR")], shown
    assert f"www.example.com.{NODE_DOMAIN}." in env.upstream.names()
    assert "www.example.com." in env.upstream.names()

    # the upstream's NXDOMAIN (and its SOA) arrive unchanged
    nx = dig_search(env.resolv, env.port, proto, "+showsearch", "+noall", "+comments", "+question",
                    "+search", "nosuch.example.com", "A")
    www_walk = search_walk(shown)
    walk = search_walk(nx)
    assert [s for _, s in walk] == ["NXDOMAIN"] * 5 and walk[-1][0] == "nosuch.example.com.", nx
    alone = dig("+nosearch", proto, "+noall", "+comments", "+authority", "nosuch.example.com.", port=env.port)
    assert status_of(alone) == "NXDOMAIN"
    soa = [" ".join(line.split()) for line in alone.splitlines() if " SOA" in line.replace("\t", " ")
           and not line.startswith(";")]
    assert len(soa) == 1 and soa[0].startswith("example.com. ")
    assert soa[0].endswith("IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 60")
    empty = dig_search(env.resolv, env.port, proto, "+noall", "+answer", "+search", "nosuch.example.com", "A")
    print("\n" + "\n".join([
        f"--- external names over {proto}",
        transcript(f"dig {proto} +noall +answer +search www.example.com A", out),
        "  (search walk: " + " -> ".join(f"{n} {s}" for n, s in www_walk) + ")",
        transcript(f"dig {proto} +noall +answer +search nosuch.example.com A", empty),
        "  (search walk: " + " -> ".join(f"{n} {s}" for n, s in walk) + ")"]))


def test_cache_answers_second_query_without_upstream(env: Env) -> None:
    """`cache 30`: the second query for an external name (and for an external NXDOMAIN) never
    reaches the upstream and its TTL has counted down; kubernetes answers are not cached
    (`disable success|denial cluster.local`) and keep the plugin's TTL."""
    before = env.upstream.count("cached.example.com.")
    first = query("cached.example.com", "A", port=env.port)
    nx_first = query("gone.example.com", "A", port=env.port)
    k8s_first = query(f"kubernetes.default.svc.{Z}", "A", port=env.port)
    assert first.rcode() == dns.rcode.NOERROR and nx_first.rcode() == dns.rcode.NXDOMAIN
    wait_until(lambda: env.upstream.count("cached.example.com.") == before + 1, 2, "upstream log")
    time.sleep(1.2)
    second = query("cached.example.com", "A", port=env.port, tcp=True)
    nx_second = query("gone.example.com", "A", port=env.port)
    k8s_second = query(f"kubernetes.default.svc.{Z}", "A", port=env.port)
    time.sleep(0.2)
    assert env.upstream.count("cached.example.com.") == before + 1, env.upstream.names()
    assert env.upstream.count("gone.example.com.") == 1, env.upstream.names()
    t1, t2 = first.answer[0].ttl, second.answer[0].ttl
    assert [rd.address for rd in second.answer[0]] == ["192.0.2.11"]
    assert t1 <= 30 and t2 < t1, (t1, t2)
    n1, n2 = nx_first.authority[0].ttl, nx_second.authority[0].ttl
    assert nx_second.rcode() == dns.rcode.NXDOMAIN and n2 < n1 <= 60, (n1, n2)
    assert k8s_first.answer[0].ttl == k8s_second.answer[0].ttl == TTL
    print(f"\n--- cache: cached.example.com TTL {t1} -> {t2} after 1.2s, upstream asked once; "
          f"gone.example.com NXDOMAIN SOA TTL {n1} -> {n2}, upstream asked once")


def test_serve_stale_while_upstream_is_down() -> None:
    """`serve_stale`: once the upstream is gone, an expired entry is served (TTL 0) at once."""
    corefile = """\
.:{PORT} {
    bind 127.0.0.1
    forward . UPSTREAM
    cache 30 {
       success 9984 30 0
       serve_stale 1h
    }
}
"""
    upstream = ZoneUpstream().start()
    server = Dnsd(corefile.replace("UPSTREAM", upstream.addr))
    try:
        server.start()
        fresh = query("flash.example.com", "A", port=server.port)
        assert fresh.rcode() == dns.rcode.NOERROR and fresh.answer[0].ttl == 1
        assert upstream.count("flash.example.com.") == 1
        upstream.stop()  # the node's resolver goes away
        time.sleep(1.3)  # the entry (TTL 1) has expired
        for tcp in (False, True):
            started = time.monotonic()
            stale = query("flash.example.com", "A", port=server.port, tcp=tcp, timeout=3)
            took = time.monotonic() - started
            assert stale.rcode() == dns.rcode.NOERROR, stale
            assert [rd.address for rd in stale.answer[0]] == ["192.0.2.77"]
            assert stale.answer[0].ttl == 0
            assert took < 1.0, took
        # a name never cached has nothing stale to give: SERVFAIL
        miss = query("www.example.com", "A", port=server.port, timeout=8)
        assert miss.rcode() == dns.rcode.SERVFAIL
        print(f"\n--- serve_stale: flash.example.com answered from the stale entry in {took * 1000:.0f} ms "
              "with TTL 0 while the upstream is down")
    finally:
        server.stop()
        upstream.stop()


def black_hole() -> tuple[socket.socket, socket.socket]:
    """A UDP socket and a TCP listener on one loopback port that never answer."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError("no free port pair")


def test_servfail_within_timeout_when_every_upstream_is_dead() -> None:
    """Every upstream dead (one refuses: nothing listens on its port; one swallows queries: a
    bound UDP socket and a TCP listener that never answer): SERVFAIL in under 6 s, over UDP and
    TCP at the same time, and the SERVFAIL is then cached for a moment."""
    refused = free_port()
    hole_udp, hole_tcp = black_hole()
    hole_port = hole_udp.getsockname()[1]
    server = Dnsd(f".:{{PORT}} {{\n bind 127.0.0.1\n forward . 127.0.0.1:{refused} 127.0.0.1:{hole_port}\n"
                  " cache 30\n}\n")
    try:
        server.start(wait=False)
        wait_for_listener(server)

        def timed(proto: str) -> tuple[str, float]:
            started = time.monotonic()
            out = dig(proto, "+time=10", "+tries=1", f"dead-{proto[1:]}.example.com", "A",
                      port=server.port, timeout=15)
            return out, time.monotonic() - started

        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(("+notcp", "+tcp"), pool.map(timed, ("+notcp", "+tcp")), strict=True))
        for proto, (out, took) in results.items():
            assert status_of(out) == "SERVFAIL", out
            assert took < 6.0, f"{proto}: SERVFAIL after {took:.2f}s"
        started = time.monotonic()
        again = query("dead-notcp.example.com", "A", port=server.port, timeout=6)
        assert again.rcode() == dns.rcode.SERVFAIL and time.monotonic() - started < 0.5
        print("\n--- dead upstreams: SERVFAIL after " + ", ".join(
            f"{p[1:]} {t:.2f}s" for p, (_, t) in results.items()))
    finally:
        server.stop()
        hole_udp.close()
        hole_tcp.close()

