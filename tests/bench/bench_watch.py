"""Watch-event-to-new-answer latency.

Each change goes through the API emulator (in this process; dnsd sees it as a watch event on
its HTTP watch stream) and the clock runs from just before the first API call until a DNS
answer from dnsd shows the new state.  Changes come in pairs that flip a value and flip it
back, so the cluster ends as it started:

* ``service``: a ClusterIP Service's address changes.  ClusterIPs are immutable in
  Kubernetes (and in the emulator), so this is a delete + re-create with the other address,
  as ``kubectl replace --force`` does; polled name: the Service's A record.
* ``slice``: one endpoint address in a headless Service's EndpointSlice changes (one
  MODIFIED event); polled name: that endpoint's hostname A record.

Polling is a UDP query roughly every 0.5 ms from this process (pinned to the client core).
"""

from __future__ import annotations

import copy
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dns.message
from bench_model import ALT_POD_V4, ALT_SERVICE_V4, Cluster, Service

HOST = "127.0.0.1"


@dataclass
class WatchResult:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"service": [], "slice": []})
    timeouts: int = 0

    def all(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(p / 100.0 * (len(data) - 1))))]


class Poller:
    """A UDP client that asks one name until `accept(answer_ips)` is true."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((HOST, port))
        self.sock.settimeout(0.2)

    def close(self) -> None:
        self.sock.close()

    def ask(self, name: str) -> set[str] | None:
        q = dns.message.make_query(name, "A")
        wire = q.to_wire()
        self.sock.send(wire)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            if data[:2] != wire[:2]:
                continue  # a late answer to an earlier poll
            msg = dns.message.from_wire(data)
            return {rd.to_text() for rrset in msg.answer for rd in rrset if rrset.rdtype == 1}
        return None

    def until(self, name: str, accept: Callable[[set[str]], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.ask(name)
            if got is not None and accept(got):
                return True
            time.sleep(0.0005)
        return False


def _is_only(want: str, got: set[str]) -> bool:
    return got == {want}


def _service_flip(dev: Any, svc: Service, ip: str) -> None:
    manifest = svc.manifest()
    manifest["spec"]["clusterIP"] = ip
    manifest["spec"]["clusterIPs"] = [ip]
    dev.delete("Service", svc.name, svc.namespace)
    dev.apply(manifest)


def _slice_flip(dev: Any, svc: Service, index: int, ip: str) -> None:
    name = f"{svc.name}-ipv4"
    sl = dev.get("EndpointSlice", name, svc.namespace)
    if sl is None:
        raise RuntimeError(f"no EndpointSlice {svc.namespace}/{name}")
    sl = copy.deepcopy(sl)
    sl["endpoints"][index]["addresses"] = [ip]
    sl["metadata"].pop("resourceVersion", None)
    dev.apply(sl)


def measure(dev: Any, cluster: Cluster, port: int, changes: int, seed: int,
            log: Callable[[str], None], timeout: float = 10.0) -> WatchResult:
    rng = random.Random(seed)
    services = [s for s in cluster.services if not s.headless and not s.dual_stack]
    headless = [s for s in cluster.services if s.headless and not s.dual_stack
                and any(ep.hostname for ep in s.endpoints)]
    if not services or not headless:
        raise ValueError("cluster has no single-stack ClusterIP or hostname headless services")
    result = WatchResult()
    poller = Poller(port)
    try:
        for pair in range(max(1, changes // 2)):
            if pair % 2 == 0:
                svc = rng.choice(services)
                orig, alt = svc.cluster_ips[0], str(ALT_SERVICE_V4 + pair % 4000 + 1)
                steps: list[tuple[Callable[[], None], str, str]] = [
                    (partial(_service_flip, dev, svc, alt), alt, svc.fqdn),
                    (partial(_service_flip, dev, svc, orig), orig, svc.fqdn),
                ]
                kind = "service"
            else:
                svc = rng.choice(headless)
                k = rng.randrange(sum(1 for ep in svc.endpoints if ":" not in ep.ip))
                ep = [e for e in svc.endpoints if ":" not in e.ip][k]
                orig, alt = ep.ip, str(ALT_POD_V4 + pair + 1)
                host = f"{ep.hostname}.{svc.fqdn}"
                steps = [
                    (partial(_slice_flip, dev, svc, k, alt), alt, host),
                    (partial(_slice_flip, dev, svc, k, orig), orig, host),
                ]
                kind = "slice"
            for change, want, name in steps:
                started = time.perf_counter()
                change()
                if poller.until(name, partial(_is_only, want), timeout):
                    result.latencies[kind].append(time.perf_counter() - started)
                else:
                    result.timeouts += 1
                    log(f"    watch: {name} did not show {want} within {timeout:.0f}s")
            if (pair + 1) % 100 == 0:
                log(f"    watch: {2 * (pair + 1)} changes")
    finally:
        poller.close()
    return result
