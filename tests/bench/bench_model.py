"""Deterministic benchmark clusters, the DNS records they imply, and dnsperf query files.

The model here is the single source of truth for the benchmark: the same `Cluster` is loaded
into the API emulator (which dnsd lists and watches), turned into `local-data` for unbound, and
turned into query files.  The expected records follow CoreDNS's kubernetes plugin rules
(ClusterIP and headless services, endpoint names = hostname or dashed IP, SRV weight
``max(1, 100 // entries)``, PTR for ClusterIPs and every endpoint address).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ZONE = "cluster.local"
TTL = 30
SOA_SERIAL = 1

# Address plan (all private, never routed: the benchmark only talks to 127.0.0.1).
SERVICE_V4 = ipaddress.IPv4Address("10.96.0.0")
SERVICE_V6 = ipaddress.IPv6Address("fd00:10:96::")
SERVICE_OFFSET = 16  # first ClusterIP used: 10.96.0.16
POD_V4 = ipaddress.IPv4Address("10.244.0.0")
POD_V6 = ipaddress.IPv6Address("fd00:10:244::")
# Alternative addresses the watch-latency test flips to (outside every range above).
ALT_SERVICE_V4 = ipaddress.IPv4Address("10.96.192.0")
ALT_POD_V4 = ipaddress.IPv4Address("10.250.0.0")

# Query mix: (category, share).  Shares add up to 1.
MIX: tuple[tuple[str, float], ...] = (
    ("clusterip_a", 0.40),
    ("aaaa", 0.10),
    ("headless_a", 0.15),
    ("srv", 0.15),
    ("ptr", 0.10),
    ("nxdomain", 0.10),
)


@dataclass(frozen=True)
class ClusterSpec:
    """Size and shape of a generated cluster."""

    name: str
    services: int
    endpoints: int  # endpoint addresses in EndpointSlices (a dual-stack pod counts twice)
    namespaces: int
    headless_fraction: float = 0.2
    dual_stack_fraction: float = 0.1  # of ClusterIP services: IPv4+IPv6 ClusterIPs
    headless_v6_fraction: float = 0.25  # of headless services: pods with IPv4+IPv6 addresses
    seed: int = 20240601


SPECS: dict[str, ClusterSpec] = {
    "empty": ClusterSpec("empty", 0, 0, 0),
    "small": ClusterSpec("small", 100, 1_000, 5),
    "large": ClusterSpec("large", 10_000, 100_000, 100),
}


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    label: str  # hostname, else the dashed IP (CoreDNS's endpoint name)
    hostname: str | None = None


@dataclass
class Service:
    index: int
    namespace: str
    name: str
    headless: bool
    cluster_ips: list[str]  # [] for headless; [v4] or [v4, v6]
    ports: list[Port]
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{ZONE}."

    @property
    def dual_stack(self) -> bool:
        if self.headless:
            return any(":" in ep.ip for ep in self.endpoints)
        return len(self.cluster_ips) > 1

    def manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in self.ports],
            "selector": {"app": self.name},
        }
        if self.headless:
            spec["clusterIP"] = "None"
            if self.dual_stack:
                spec["ipFamilyPolicy"] = "RequireDualStack"
                spec["ipFamilies"] = ["IPv4", "IPv6"]
        else:
            spec["clusterIP"] = self.cluster_ips[0]
            spec["clusterIPs"] = list(self.cluster_ips)
            if self.dual_stack:
                spec["ipFamilyPolicy"] = "RequireDualStack"
                spec["ipFamilies"] = ["IPv4", "IPv6"]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": {"bench": "1"}},
            "spec": spec,
        }

    def endpoint_descriptions(self) -> list[dict[str, Any]]:
        """The `DevCluster.service_endpoints` / `build_slices` description of the endpoints."""
        out: list[dict[str, Any]] = []
        for ep in self.endpoints:
            item: dict[str, Any] = {"ip": ep.ip, "ready": True, "node": "node-1"}
            if ep.hostname:
                item["hostname"] = ep.hostname
            out.append(item)
        return out

    def port_descriptions(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in self.ports]


@dataclass
class Cluster:
    spec: ClusterSpec
    namespaces: list[str]
    services: list[Service]

    @property
    def endpoint_count(self) -> int:
        return sum(len(s.endpoints) for s in self.services)


def dashed(ip: str) -> str:
    return ip.replace(".", "-") if ":" not in ip else ip.replace(":", "-")


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    if not weights:
        return []
    scale = total / sum(weights)
    raw = [w * scale for w in weights]
    counts = [int(r) for r in raw]
    short = total - sum(counts)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[:short]:
        counts[i] += 1
    return counts


def generate(spec: ClusterSpec) -> Cluster:
    """A deterministic cluster for `spec` (same seed, same cluster, on any machine)."""
    rng = random.Random(spec.seed)
    namespaces = [f"ns-{k}" for k in range(spec.namespaces)]
    n = spec.services
    if n == 0:
        return Cluster(spec, namespaces, [])
    if spec.endpoints < n:
        raise ValueError("need at least one endpoint per service")
    kinds: list[tuple[bool, bool]] = []  # (headless, dual)
    for _ in range(n):
        headless = rng.random() < spec.headless_fraction
        frac = spec.headless_v6_fraction if headless else spec.dual_stack_fraction
        kinds.append((headless, rng.random() < frac))
    # Heavy-tailed endpoint counts (a few big deployments, many small), at least 1 each;
    # headless services (StatefulSets, databases) get 2x weight.
    weights = [rng.lognormvariate(0.0, 1.0) * (2.0 if h else 1.0) for h, _ in kinds]
    counts = [c + 1 for c in _largest_remainder(spec.endpoints - n, weights)]
    # A dual-stack headless service has pairs of addresses: make its count even by trading
    # one address with a single-stack service that has more than one.
    spare = [i for i, (h, d) in enumerate(kinds) if not (h and d)]
    for i, (h, d) in enumerate(kinds):
        if h and d and counts[i] % 2:
            if counts[i] == 1:
                counts[i] += 1
                donor = next(j for j in spare if counts[j] > 1)
                counts[donor] -= 1
            else:
                counts[i] -= 1
                counts[spare[i % len(spare)]] += 1
    v4_pod = 1
    v6_pod = 1
    services: list[Service] = []
    for i, ((headless, dual), count) in enumerate(zip(kinds, counts, strict=True)):
        ns = namespaces[i % len(namespaces)]
        name = f"svc-{i}"
        ports = [Port("http", 80)]
        if rng.random() < 0.3:
            ports.append(Port("grpc", 9090))
        if headless:
            cluster_ips: list[str] = []
        else:
            v4 = str(SERVICE_V4 + SERVICE_OFFSET + i)
            cluster_ips = [v4, str(SERVICE_V6 + SERVICE_OFFSET + i)] if dual else [v4]
        svc = Service(i, ns, name, headless, cluster_ips, ports)
        with_hostnames = headless and (dual or rng.random() < 0.5)
        pods = count // 2 if (headless and dual) else count
        for k in range(pods):
            hostname = f"{name}-{k}" if with_hostnames else None
            ip4 = str(POD_V4 + v4_pod)
            v4_pod += 1
            svc.endpoints.append(Endpoint(ip4, hostname or dashed(ip4), hostname))
            if headless and dual:
                ip6 = str(POD_V6 + v6_pod)
                v6_pod += 1
                svc.endpoints.append(Endpoint(ip6, hostname or dashed(ip6), hostname))
        services.append(svc)
    return Cluster(spec, namespaces, services)


# ----- loading into the emulator ------------------------------------------------------------


def load_into(dev: Any, cluster: Cluster) -> None:
    """Apply the cluster to a `DevCluster` in-process (no HTTP: dnsd still lists over HTTP).

    EndpointSlices are built with the emulator's own `build_slices` and applied directly:
    `service_endpoints()` scans every slice of the namespace per call, which is quadratic at
    10,000 services.
    """
    from dnsd.devcluster.endpoints import build_slices

    for ns in cluster.namespaces:
        dev.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for svc in cluster.services:
        stored = dev.apply(svc.manifest())
        for sl in build_slices(
            svc.namespace, svc.name, svc.endpoint_descriptions(), svc.port_descriptions(), stored
        ):
            dev.apply(sl)


# ----- expected records ---------------------------------------------------------------------


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def _rtype(ip: str) -> str:
    return "AAAA" if ":" in ip else "A"


def records(cluster: Cluster) -> Iterator[tuple[str, str, str]]:
    """Every (owner, type, rdata) dnsd should serve for the cluster's services.

    SRV additional-section glue is not included (unbound's local-data cannot add it).
    """
    for svc in cluster.services:
        owner = svc.fqdn
        base = owner
        if svc.headless:
            for ep in svc.endpoints:
                yield owner, _rtype(ep.ip), ep.ip
            by_label: dict[str, list[Endpoint]] = {}
            for ep in svc.endpoints:
                by_label.setdefault(ep.label, []).append(ep)
            for label, eps in by_label.items():
                ep_owner = f"{label}.{base}"
                for ep in eps:
                    yield ep_owner, _rtype(ep.ip), ep.ip
                weight = max(1, 100 // (len(eps) * len(svc.ports)))
                for p in svc.ports:
                    yield ep_owner, "SRV", f"0 {weight} {p.port} {ep_owner}"
            # Service-name SRV (all ports) and per-port SRV.
            weight = max(1, 100 // (len(svc.endpoints) * len(svc.ports)))
            for label in by_label:
                for p in svc.ports:
                    yield owner, "SRV", f"0 {weight} {p.port} {label}.{base}"
            for p in svc.ports:
                weight = max(1, 100 // len(svc.endpoints))
                for label in by_label:
                    yield (f"_{p.name}._{p.protocol.lower()}.{base}", "SRV",
                           f"0 {weight} {p.port} {label}.{base}")
        else:
            for ip in svc.cluster_ips:
                yield owner, _rtype(ip), ip
            weight = max(1, 100 // (len(svc.cluster_ips) * len(svc.ports)))
            for p in svc.ports:
                yield owner, "SRV", f"0 {weight} {p.port} {owner}"
            for p in svc.ports:
                weight = max(1, 100 // len(svc.cluster_ips))
                yield f"_{p.name}._{p.protocol.lower()}.{base}", "SRV", f"0 {weight} {p.port} {owner}"
            for ip in svc.cluster_ips:
                yield reverse_name(ip), "PTR", owner
        for ep in svc.endpoints:
            yield reverse_name(ep.ip), "PTR", f"{ep.label}.{base}"


def expected_answers(cluster: Cluster) -> dict[tuple[str, str], set[str]]:
    """(lower-case owner, type) -> set of rdata texts (lower case)."""
    out: dict[tuple[str, str], set[str]] = {}
    for owner, rtype, rdata in records(cluster):
        out.setdefault((owner.lower(), rtype), set()).add(rdata.lower())
    return out


# ----- unbound ------------------------------------------------------------------------------


def soa(zone: str) -> str:
    return (f'local-data: "{zone} {TTL} IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. '
            f'{SOA_SERIAL} 7200 1800 86400 {TTL}"')


REVERSE_ZONES = ("10.in-addr.arpa.", "d.f.ip6.arpa.")


def unbound_local_data(cluster: Cluster) -> Iterator[str]:
    """`server:` lines for unbound: static zones (misses are NXDOMAIN) and the records."""
    for zone in (f"{ZONE}.", *REVERSE_ZONES):
        yield f'local-zone: "{zone}" static'
        yield soa(zone)
    for owner, rtype, rdata in records(cluster):
        yield f'local-data: "{owner} {TTL} IN {rtype} {rdata}"'


# ----- query files --------------------------------------------------------------------------


def _nx_name(rng: random.Random, cluster: Cluster) -> str:
    """A search-path expansion that does not exist (what ndots:5 resolvers send first)."""
    svc = rng.choice(cluster.services)
    other = rng.choice(cluster.namespaces)
    short = f"{svc.name}.{svc.namespace}"
    return rng.choice(
        (
            f"{short}.svc.{other}.svc.{ZONE}",  # "svc.ns.svc" searched from namespace `other`
            f"{short}.{other}.svc.{ZONE}",  # "svc.ns" searched from `other`
            f"{short}.svc.{ZONE}.{other}.svc.{ZONE}",  # a full name without the trailing dot
            f"{short}.svc.{ZONE}.svc.{ZONE}",
            f"www.example-{rng.randrange(1000)}.com.{other}.svc.{ZONE}",  # external names
            f"api.example-{rng.randrange(1000)}.com.svc.{ZONE}",
            f"cdn.example-{rng.randrange(1000)}.com.{ZONE}",
        )
    )


class QueryMaker:
    """Draws queries of each mix category from a cluster."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        svcs = cluster.services
        self.clusterip = [s for s in svcs if not s.headless]
        self.headless = [s for s in svcs if s.headless]
        self.dual = [s for s in svcs if s.dual_stack]
        self.single = [s for s in svcs if not s.dual_stack]
        if not self.clusterip or not self.headless or not self.dual:
            raise ValueError("cluster too small for the query mix")

    def draw(self, category: str) -> tuple[str, str]:
        rng = self.rng
        if category == "clusterip_a":
            return rng.choice(self.clusterip).fqdn, "A"
        if category == "aaaa":
            # Three in four ask a dual-stack service (answered), one in four a single-stack
            # one (NOERROR/NODATA, as happy-eyeballs clients do).
            pool = self.dual if rng.random() < 0.75 else self.single
            return rng.choice(pool).fqdn, "AAAA"
        if category == "headless_a":
            svc = rng.choice(self.headless)
            if rng.random() < 2 / 3:
                return svc.fqdn, "A"
            v4 = [ep for ep in svc.endpoints if ":" not in ep.ip]
            return f"{rng.choice(v4).label}.{svc.fqdn}", "A"
        if category == "srv":
            return f"_http._tcp.{rng.choice(self.cluster.services).fqdn}", "SRV"
        if category == "ptr":
            if rng.random() < 0.5:
                svc = rng.choice(self.clusterip)
                return reverse_name(rng.choice(svc.cluster_ips)), "PTR"
            svc = rng.choice(self.cluster.services)
            return reverse_name(rng.choice(svc.endpoints).ip), "PTR"
        if category == "nxdomain":
            return _nx_name(rng, self.cluster), "A"
        raise ValueError(category)

    def all_unique(self, category: str) -> list[tuple[str, str]]:
        """Every distinct query of a category (NXDOMAIN: a large generated set)."""
        c = self.cluster
        if category == "clusterip_a":
            return [(s.fqdn, "A") for s in self.clusterip]
        if category == "aaaa":
            return [(s.fqdn, "AAAA") for s in c.services]
        if category == "headless_a":
            out = [(s.fqdn, "A") for s in self.headless]
            out += [(f"{ep.label}.{s.fqdn}", "A") for s in self.headless for ep in s.endpoints
                    if ":" not in ep.ip and ep.hostname is None]
            out += [(f"{h}.{s.fqdn}", "A") for s in self.headless
                    for h in dict.fromkeys(ep.hostname for ep in s.endpoints if ep.hostname)]
            return out
        if category == "srv":
            return [(f"_{p.name}._tcp.{s.fqdn}", "SRV") for s in c.services for p in s.ports]
        if category == "ptr":
            ips = [ip for s in self.clusterip for ip in s.cluster_ips]
            ips += [ep.ip for s in c.services for ep in s.endpoints]
            return [(reverse_name(ip), "PTR") for ip in ips]
        if category == "nxdomain":
            return [(f"{s.name}.{s.namespace}.svc.{ns}.svc.{ZONE}", "A")
                    for s in c.services for ns in c.namespaces]
        raise ValueError(category)


def mix_queries(cluster: Cluster, count: int, seed: int) -> list[tuple[str, str]]:
    """`count` queries in the MIX proportions, shuffled."""
    rng = random.Random(seed)
    maker = QueryMaker(cluster, rng)
    out: list[tuple[str, str]] = []
    for category, share in MIX:
        out.extend(maker.draw(category) for _ in range(round(count * share)))
    rng.shuffle(out)
    return out


def unique_queries(cluster: Cluster, count: int, seed: int) -> list[tuple[str, str]]:
    """Up to `count` distinct queries, in the MIX proportions as far as the cluster allows."""
    rng = random.Random(seed)
    maker = QueryMaker(cluster, rng)
    out: list[tuple[str, str]] = []
    for category, share in MIX:
        pool = maker.all_unique(category)
        rng.shuffle(pool)
        out.extend(pool[: round(count * share)])
    out = list(dict.fromkeys(out))
    rng.shuffle(out)
    return out


def write_queries(path: str, queries: list[tuple[str, str]]) -> None:
    with open(path, "w") as f:
        for name, qtype in queries:
            f.write(f"{name} {qtype}\n")


EXTERNAL_ZONE = "bench.example."


def external_names(count: int) -> list[str]:
    return [f"host-{k}.{EXTERNAL_ZONE}" for k in range(count)]


def external_local_data(count: int) -> Iterator[str]:
    """The upstream's zone for the forward/cache test (TTL 300: the cache's 30 s cap rules)."""
    yield f'local-zone: "{EXTERNAL_ZONE}" static'
    yield soa(EXTERNAL_ZONE).replace(f"{TTL} IN SOA", "300 IN SOA")
    for k, name in enumerate(external_names(count)):
        yield f'local-data: "{name} 300 IN A 192.0.2.{k % 250 + 1}"'
