"""autopath @kubernetes (coredns_kubernetes.md §14): the server walks a pod's search path, so a
short name costs the pod one round trip.

A Pod in namespace ``default`` has ``status.podIP: 127.0.0.2``; ``dig -b 127.0.0.2`` is that pod
(the whole 127/8 is local on Linux), ``dig`` from 127.0.0.1 is a client that is not a pod.  The
pod's resolv.conf is the ClusterFirst one (``default.svc.cluster.local svc.cluster.local
cluster.local node.example.com``, ndots:5) and dnsd itself runs with the node's resolv.conf
(``search node.example.com``) as a CoreDNS pod with ``dnsPolicy: Default`` does, so its autopath
list is ``default.svc.cluster.local``, ``svc.cluster.local``, ``cluster.local``,
``node.example.com``, then the bare name.  Round trips are counted in dnsd's query log (one
line per client query; autopath's internal candidates are not client queries) and the
upstream's query log (tests/resolver_support.py).

Cases: (a) ``web.other`` / ``kubernetes.default`` (services found only under the
``svc.cluster.local`` expansion) answer CNAME + A to the first query; (b) an external name is
answered with a CNAME to it plus the upstream's A; (c) clients that are not pods (and pod
queries not under the pod's first search domain) get the plain answers; (d) when every
candidate is NXDOMAIN the first candidate's NXDOMAIN is returned; (e) once the Pod is deleted
its IP is an ordinary client again.  Corefile errors: no ``pods verified``, no kubernetes
plugin in the block, an unknown ``@plugin``.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rcode
import pytest
from k8s_support import namespace, port, service
from resolver_support import (
    NODE_DOMAIN,
    NodeResolvDnsd,
    ZoneUpstream,
    answer_lines,
    dig_search,
    logged_queries,
    pod_resolv_conf,
    status_of,
    transcript,
    wait_until,
)
from support import free_port, query

from dnsd.devcluster import DevCluster

pytestmark = pytest.mark.timeout(90)

Z = "cluster.local"
POD_IP = "127.0.0.2"  # the client pod in namespace default
WEB_IP = "10.96.7.7"  # service web in namespace other
KUBERNETES_IP = "10.96.0.1"

COREFILE = """\
.:{PORT} {
    bind 127.0.0.1
    errors
    log
    prometheus 127.0.0.1:METRICS
    autopath @kubernetes
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       endpoint URL
       pods verified
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    forward . UPSTREAM
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
}
"""


def client_pod() -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}]},
        "status": {"phase": "Running", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


@dataclass
class Env:
    cluster: DevCluster
    upstream: ZoneUpstream
    server: NodeResolvDnsd
    resolv: Path  # the pod's resolv.conf
    metrics_port: int

    @property
    def port(self) -> int:
        return self.server.port

    def mark(self) -> int:
        return len(logged_queries(self.server.output()))

    def client_queries(self, since: int) -> list[tuple[str, str, str]]:
        """(client, name, rcode) of the queries dnsd answered since ``since``."""
        return [(q.client, q.name, q.rcode) for q in logged_queries(self.server.output())[since:]
                if q.name != "health.check."]

    def autopath_successes(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:
            text = r.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("coredns_autopath_success_total"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    upstream = ZoneUpstream().start()
    cluster = DevCluster().start()
    server = None
    try:
        cluster.apply(namespace("other"))
        cluster.apply(service("default", "kubernetes", ips=[KUBERNETES_IP], ports=[port("https", 443)]))
        cluster.apply(service("other", "web", ips=[WEB_IP], ports=[port("http", 80)]))
        cluster.apply(client_pod())
        metrics_port = free_port()
        corefile = (COREFILE.replace("URL", cluster.url).replace("UPSTREAM", upstream.addr)
                    .replace("METRICS", str(metrics_port)))
        # dnsd sees the node's resolv.conf: its search domains extend every pod's autopath list.
        server = NodeResolvDnsd(corefile, f"nameserver 127.0.0.1\nsearch {NODE_DOMAIN}\n")
        server.start()
        resolv = pod_resolv_conf(tmp_path_factory.mktemp("pod") / "resolv.conf", "default")
        env = Env(cluster, upstream, server, resolv, metrics_port)
        wait_until(lambda: _autopaths(env), 20, "the kubernetes plugin never knew the client pod")
        yield env
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        upstream.stop()


def _autopaths(env: Env) -> bool:
    out = dig_search(env.resolv, env.port, "+nosearch", "+noall", "+answer",
                     f"web.other.default.svc.{Z}", "A", source=POD_IP)
    return bool(answer_lines(out))


def pod_dig(env: Env, *args: str) -> str:
    return dig_search(env.resolv, env.port, *args, source=POD_IP)


@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
def test_a_short_name_answers_in_one_round_trip(env: Env, proto: str) -> None:
    """(a) ``web.other`` from the pod: dig asks ``web.other.default.svc.cluster.local`` first and
    gets CNAME -> ``web.other.svc.cluster.local`` + its A at once; one client query, nothing
    upstream.  Same for ``kubernetes.default`` (T3's probe)."""
    lines = [f"--- autopath (a) over {proto}, from the pod {POD_IP}"]
    for short, real, ip in (("web.other", f"web.other.svc.{Z}.", WEB_IP),
                            ("kubernetes.default", f"kubernetes.default.svc.{Z}.", KUBERNETES_IP)):
        asked = f"{short}.default.svc.{Z}."
        mark, up_mark, successes = env.mark(), env.upstream.mark(), env.autopath_successes()
        out = pod_dig(env, proto, "+noall", "+answer", "+search", short, "A")
        assert answer_lines(out) == [f"{asked} 30 IN CNAME {real}", f"{real} 30 IN A {ip}"], out
        wait_until(lambda m=mark: env.client_queries(m), 2, "query log")
        assert env.client_queries(mark) == [(POD_IP, asked, "NOERROR")]  # ONE round trip
        assert env.upstream.names(up_mark) == []
        assert env.autopath_successes() == successes + 1
        lines.append(transcript(f"dig -b {POD_IP} {proto} +noall +answer +search {short} A", out))
        lines.append(f"  (dnsd saw {len(env.client_queries(mark))} client query: {asked})")
    print("\n" + "\n".join(lines))


@pytest.mark.parametrize("proto", ["+notcp", "+tcp"])
def test_b_external_name_cname_to_upstream_answer(env: Env, proto: str) -> None:
    """(b) ``www.example.com`` from the pod: the first expansion is answered with a CNAME to
    ``www.example.com.`` and the upstream's A; autopath itself tried the node domain (upstream
    NXDOMAIN) and the bare name (upstream answer)."""
    asked = f"www.example.com.default.svc.{Z}."
    mark, up_mark = env.mark(), env.upstream.mark()
    out = pod_dig(env, proto, "+noall", "+answer", "+search", "www.example.com", "A")
    lines = answer_lines(out)
    assert len(lines) == 2, out
    cname, a = lines[0].split(), lines[1].split()
    assert cname[0] == asked and cname[2:] == ["IN", "CNAME", "www.example.com."], out
    assert a[0] == "www.example.com." and a[2:] == ["IN", "A", "192.0.2.10"], out
    assert cname[1] == a[1]  # the CNAME carries the answer's TTL
    wait_until(lambda: env.client_queries(mark), 2, "query log")
    assert env.client_queries(mark) == [(POD_IP, asked, "NOERROR")]
    wait_until(lambda: len(env.upstream.names(up_mark)) >= 2, 2, "upstream log")
    assert env.upstream.names(up_mark) == [f"www.example.com.{NODE_DOMAIN}.", "www.example.com."]
    print("\n" + "\n".join([f"--- autopath (b) over {proto}",
                            transcript(f"dig -b {POD_IP} {proto} +noall +answer +search www.example.com A", out),
                            f"  (dnsd saw 1 client query; upstream saw {env.upstream.names(up_mark)})"]))


def test_c_clients_that_are_not_pods_get_plain_answers(env: Env) -> None:
    """(c) From 127.0.0.1 (no Pod has that IP) the same name is plain NXDOMAIN, and a
    ``+search`` lookup walks every suffix itself (five round trips) and ends without a CNAME.
    A pod's query that is not under its first search domain is not rewritten either."""
    asked = f"www.example.com.default.svc.{Z}"
    for proto in ("+notcp", "+tcp"):
        out = dig_search(env.resolv, env.port, proto, "+nosearch", "+noall", "+comments", "+answer",
                         "+authority", asked, "A")
        assert status_of(out) == "NXDOMAIN", out
        assert "CNAME" not in out and f"{Z}.\t" in out and "SOA" in out, out
    mark = env.mark()
    out = dig_search(env.resolv, env.port, "+noall", "+answer", "+search", "www.example.com", "A")
    assert [line.split()[2:] for line in answer_lines(out)] == [["IN", "A", "192.0.2.10"]], out
    wait_until(lambda: len(env.client_queries(mark)) >= 5, 2, "query log")
    seen = env.client_queries(mark)
    assert [c for c, _, _ in seen] == ["127.0.0.1"] * 5
    assert [r for _, _, r in seen] == ["NXDOMAIN"] * 4 + ["NOERROR"]

    # from the pod, but already the real name: answered as is, no CNAME
    plain = pod_dig(env, "+nosearch", "+noall", "+answer", f"web.other.svc.{Z}", "A")
    assert answer_lines(plain) == [f"web.other.svc.{Z}. 30 IN A {WEB_IP}"]
    print("\n" + "\n".join(["--- autopath (c) from 127.0.0.1 (not a pod)",
                            transcript("dig +noall +answer +search www.example.com A", out),
                            f"  (dnsd saw {len(seen)} client queries: {[n for _, n, _ in seen]})"]))


def test_d_every_candidate_nxdomain_returns_the_first_reply(env: Env) -> None:
    """(d) ``web`` from the pod: ``web.default.svc``, ``web.svc``, ``web.cluster.local``,
    ``web.node.example.com`` and ``web.`` are all NXDOMAIN, so the reply is the first
    candidate's: NXDOMAIN for the asked name with the cluster.local SOA, no CNAME."""
    asked = f"web.default.svc.{Z}."
    for proto in ("+notcp", "+tcp"):
        up_mark = env.upstream.mark()
        out = pod_dig(env, proto, "+nosearch", "+noall", "+comments", "+question", "+answer",
                      "+authority", asked, "A")
        assert status_of(out) == "NXDOMAIN", out
        assert f";{asked}" in out.replace("\t", " ") and "CNAME" not in out
        soa = [" ".join(line.split()) for line in out.splitlines() if "SOA" in line and not line.startswith(";")]
        assert len(soa) == 1 and soa[0].startswith(f"{Z}. ") and " IN SOA ns.dns.cluster.local. " in soa[0]
        wait_until(lambda m=up_mark: len(env.upstream.names(m)) >= 2, 2, "upstream log")
        assert env.upstream.names(up_mark) == [f"web.{NODE_DOMAIN}.", "web."]
    # with +search dig goes on with the next suffixes (no longer under the first search
    # domain, so no autopath) and the lookup fails like without autopath
    walked = pod_dig(env, "+noall", "+answer", "+search", "web", "A")
    assert answer_lines(walked) == []


def test_e_deleted_pod_is_an_ordinary_client(env: Env) -> None:
    """(e) After the Pod is deleted, 127.0.0.2 gets what everybody gets; re-created, autopath
    is back.  (Runs last in this module: it removes the pod for a moment.)"""
    asked = f"web.other.default.svc.{Z}"
    env.cluster.delete("Pod", "client", "default")
    took = wait_until(lambda: status_of(pod_dig(env, "+nosearch", asked, "A")) == "NXDOMAIN", 10,
                      "autopath still applied to a deleted pod's IP")
    env.cluster.apply(client_pod())
    wait_until(lambda: _autopaths(env), 10, "autopath not back for the re-created pod")
    print(f"\n--- autopath (e): the deleted pod's IP lost autopath after {took:.2f}s")


# --- Corefile errors ------------------------------------------------------------------------------

K8S = "    kubernetes cluster.local {{\n        endpoint http://127.0.0.1:1\n        pods {mode}\n    }}\n"
ERRORS = {
    "pods insecure": (".:{port} {{\n    autopath @kubernetes\n" + K8S + "}}\n", 2,
                      "autopath @kubernetes needs 'pods verified' in the kubernetes plugin"),
    "no kubernetes": (".:{port} {{\n    autopath @kubernetes\n    forward . 127.0.0.1:1\n}}\n", 2,
                      "autopath @kubernetes needs the kubernetes plugin in the same server block"),
    "kubernetes in another block": (
        "cluster.local:{port} {{\n" + K8S + "}}\n.:{port} {{\n    autopath @kubernetes\n"
        "    forward . 127.0.0.1:1\n}}\n", 8,
        "autopath @kubernetes needs the kubernetes plugin in the same server block"),
    "unknown @plugin": (".:{port} {{\n    autopath @etcd\n" + K8S + "}}\n", 2,
                        "plugin 'etcd' cannot provide a search path to autopath"),
}


def test_corefile_errors(tmp_path: Path) -> None:
    """Each broken configuration exits 1 with CoreDNS's ``FILE:LINE - Error during parsing``."""
    procs = {}
    for case, (text, _, _) in ERRORS.items():
        conf = tmp_path / f"{case.replace(' ', '-').replace('@', '')}.Corefile"
        conf.write_text(text.format(port=free_port(), mode="verified" if "pods" not in case else "insecure"))
        procs[case] = (conf, subprocess.Popen([sys.executable, "-m", "dnsd", "-conf", str(conf)],
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for case, (conf, proc) in procs.items():
        try:
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        _, line, message = ERRORS[case]
        assert proc.returncode == 1, (case, err)
        assert f"{conf}:{line} - Error during parsing: {message}" in err, (case, err)


def test_resolves_normally_for_a_pod_without_autopath_candidates(env: Env) -> None:
    """A pod's plain external FQDN (``www.example.com.``, not under its search domains) is
    forwarded as is: one upstream query, no CNAME."""
    r = query("www.example.com.", "A", port=env.port)
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1
    out = pod_dig(env, "+noall", "+answer", "www.example.com.", "A")
    assert [line.split()[2:] for line in answer_lines(out)] == [["IN", "A", "192.0.2.10"]]



# --- the walk itself, in-process (static search path from a resolv.conf) --------------------------

def _walk(tmp_path: Path, answers: dict[str, int], asked: str) -> tuple[object, list[str], float]:
    """Run ``autopath RESOLV-CONF`` on one query over a fake next plugin that answers each
    candidate with ``answers[name]`` (an rcode; NOERROR gets an A record); returns the reply,
    the candidates asked and how much coredns_autopath_success grew."""
    import asyncio

    from dnslib import QTYPE, RCODE, RR, A, DNSRecord

    from dnsd import metrics
    from dnsd.chain import SetupContext
    from dnsd.plugins.autopath import Plugin as Autopath
    from dnsd.request import Request, make_reply

    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"search default.svc.{Z} svc.{Z} {Z} {NODE_DOMAIN}\n")
    plugin = Autopath(["."], str(resolv), SetupContext(zones=["."], port=53))
    seen: list[str] = []

    async def next_(req: Request) -> DNSRecord:
        seen.append(req.qname)
        reply = make_reply(req, rcode=answers.get(req.qname.lower(), RCODE.NXDOMAIN))
        if reply.header.rcode == RCODE.NOERROR:
            reply.add_answer(RR(req.qname, QTYPE.A, ttl=17, rdata=A("192.0.2.99")))
        return reply

    server = "dns://:53"
    before = metrics.REGISTRY.get_sample_value("coredns_autopath_success_total", {"server": server}) or 0.0
    req = Request(msg=DNSRecord.question(asked, "A"), qname=asked, qtype=QTYPE.A, qclass=1,
                  client_ip="10.9.9.9", server=server)
    reply = asyncio.run(plugin.serve(req, next_))
    after = metrics.REGISTRY.get_sample_value("coredns_autopath_success_total", {"server": server}) or 0.0
    return reply, seen, after - before


def test_walk_first_non_nxdomain_wins_with_a_cname(tmp_path: Path) -> None:
    reply, seen, counted = _walk(tmp_path, {"db.cluster.local.": 0}, "DB.default.svc.cluster.local.")
    assert seen == ["DB.default.svc.cluster.local.", "DB.svc.cluster.local.", "DB.cluster.local."]
    assert str(reply.q.qname) == "DB.default.svc.cluster.local."
    assert [(str(rr.rname), rr.rtype, rr.ttl, str(rr.rdata)) for rr in reply.rr] == [
        ("DB.default.svc.cluster.local.", 5, 17, "DB.cluster.local."),
        ("DB.cluster.local.", 1, 17, "192.0.2.99")]
    assert counted == 1


def test_walk_all_nxdomain_returns_the_first_reply(tmp_path: Path) -> None:
    reply, seen, counted = _walk(tmp_path, {}, "x.default.svc.cluster.local.")
    assert seen == ["x.default.svc.cluster.local.", "x.svc.cluster.local.", "x.cluster.local.",
                    f"x.{NODE_DOMAIN}.", "x."]
    assert reply.header.rcode == 3 and not reply.rr and str(reply.q.qname) == "x.default.svc.cluster.local."
    assert counted == 0


def test_walk_servfail_ends_it_with_the_question_restored_and_is_not_counted(tmp_path: Path) -> None:
    reply, seen, counted = _walk(tmp_path, {f"x.{NODE_DOMAIN}.": 2}, "x.default.svc.cluster.local.")
    assert seen[-1] == f"x.{NODE_DOMAIN}." and len(seen) == 4  # the bare name is not tried
    assert reply.header.rcode == 2 and str(reply.q.qname) == "x.default.svc.cluster.local."
    assert counted == 0


def test_walk_skips_names_not_under_the_first_search_domain(tmp_path: Path) -> None:
    reply, seen, counted = _walk(tmp_path, {}, "x.svc.cluster.local.")
    assert seen == ["x.svc.cluster.local."] and counted == 0
