"""Parsing of the ``kubernetes`` directive.

Syntax (CoreDNS's, minus ``multicluster`` and ``zonal``)::

    kubernetes [ZONES...] {
        endpoint URL
        tls CERT KEY CACERT
        kubeconfig KUBECONFIG [CONTEXT]
        apiserver_qps QPS
        apiserver_burst BURST
        apiserver_max_inflight MAX
        namespaces NAMESPACE...
        namespace_labels EXPRESSION
        labels EXPRESSION
        pods disabled|insecure|verified
        endpoint_pod_names
        ttl TTL
        noendpoints
        fallthrough [ZONES...]
        ignore empty_service
        startup_timeout DURATION
        secondary_networks { ... }     # dnsd extension, see secondary.py
    }
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from dataclasses import dataclass, field

from dnsd.corefile.address import normalize_zone, reverse_zones_for_cidr
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity, duration_arg, int_arg, no_block
from dnsd.plugins.kubernetes.names import is_reverse_zone

log = logging.getLogger("dnsd")


@dataclass
class SecondaryConfig:
    status_annotation: str = "k8s.v1.cni.cncf.io/network-status"
    legacy_annotation: str = "k8s.v1.cni.cncf.io/networks-status"
    service_annotation: str = "k8s.v1.cni.cncf.io/service-network"
    headless: str = "replace"  # replace | append
    net_names: bool = False
    pod_records: bool = True
    link_local: bool = False


@dataclass
class Config:
    zones: list[str]
    primary_zone: str
    endpoint: str = ""
    tls: tuple[str, str, str] | None = None
    kubeconfig: str = ""
    context: str = ""
    qps: float = 0.0
    burst: int = 0
    max_inflight: int = 0
    namespaces: list[str] = field(default_factory=list)
    namespace_labels: str = ""
    labels: str = ""
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = 5
    noendpoints: bool = False
    fallthrough: list[str] | None = None  # None: off; []: every zone
    ignore_empty_service: bool = False
    startup_timeout: float = 5.0
    secondary: SecondaryConfig | None = None


def _zones(d: Directive, block_zones: list[str]) -> list[str]:
    raw = d.args or block_zones
    zones: list[str] = []
    for z in raw:
        if "/" in z:
            try:
                zones.extend(reverse_zones_for_cidr(z))
            except ValueError:
                raise d.error(f"invalid CIDR '{z}'") from None
        else:
            zones.append(normalize_zone(z))
    return list(dict.fromkeys(zones))


def _selector(d: Directive) -> str:
    from dnsd.devcluster.errors import ApiError
    from dnsd.devcluster.selectors import LabelSelector

    text = " ".join(arity(d, 1))
    try:
        LabelSelector.parse(text)
    except ApiError:
        raise d.error(f"unable to parse label selector value: '{text}'") from None
    return text


def parse_config(d: Directive, block_zones: list[str]) -> Config:
    zones = _zones(d, block_zones)
    forward = [z for z in zones if not is_reverse_zone(z)]
    if not forward:
        raise d.error("non-reverse zone name must be used")
    cfg = Config(zones=zones, primary_zone=forward[0])
    seen: set[str] = set()
    for c in d.children:
        if c.name in seen and c.name != "fallthrough":
            raise c.error(f"duplicate property '{c.name}'")
        seen.add(c.name)
        _option(cfg, c)
    if cfg.namespaces and cfg.namespace_labels:
        raise d.error("namespaces and namespace_labels cannot both be set")
    return cfg


def _option(cfg: Config, c: Directive) -> None:  # noqa: C901 - one branch per option
    name = c.name
    if name == "endpoint":
        args = arity(c, 1)
        cfg.endpoint = args[0]
        if len(args) > 1:
            log.warning("[WARNING] plugin/kubernetes: multiple endpoints have been deprecated, "
                        "using the first one: %s", args[0])
        if not cfg.endpoint.startswith(("http://", "https://")):
            raise c.error(f"endpoint must be an http:// or https:// URL, got '{cfg.endpoint}'")
    elif name == "tls":
        a = arity(c, 3, 3)
        cfg.tls = (a[0], a[1], a[2])
    elif name == "kubeconfig":
        a = arity(c, 1, 2)
        cfg.kubeconfig = a[0]
        cfg.context = a[1] if len(a) > 1 else ""
    elif name == "apiserver_qps":
        a = arity(c, 1, 1)
        try:
            cfg.qps = float(a[0])
        except ValueError:
            raise c.error(f"invalid apiserver_qps '{a[0]}'") from None
        if not math.isfinite(cfg.qps):  # Go's ParseFloat(.., 32) rejects out-of-range values
            raise c.error(f"invalid apiserver_qps '{a[0]}'")
        if cfg.qps < 0:
            raise c.error("apiserver_qps must be >= 0")
    elif name == "apiserver_burst":
        cfg.burst = _int(c, arity(c, 1, 1)[0], lo=0)
    elif name == "apiserver_max_inflight":
        cfg.max_inflight = _int(c, arity(c, 1, 1)[0], lo=0)
    elif name == "namespaces":
        cfg.namespaces = [n.lower() for n in arity(c, 1)]
    elif name == "namespace_labels":
        cfg.namespace_labels = _selector(c)
    elif name == "labels":
        cfg.labels = _selector(c)
    elif name == "pods":
        mode = arity(c, 1, 1)[0]
        if mode not in ("disabled", "insecure", "verified"):
            raise c.error(f"invalid pods mode '{mode}': must be disabled, insecure or verified")
        cfg.pods = mode
    elif name == "endpoint_pod_names":
        arity(c, 0, 0)
        cfg.endpoint_pod_names = True
    elif name == "ttl":
        cfg.ttl = _int(c, arity(c, 1, 1)[0], lo=0, hi=3600)
    elif name == "noendpoints":
        arity(c, 0, 0)
        cfg.noendpoints = True
    elif name == "fallthrough":
        cfg.fallthrough = [normalize_zone(z) for z in c.args]
    elif name == "ignore":
        args = c.args
        if args and args[0] != "empty_service":
            raise c.error(f"unable to parse ignore value: '{args[0]}'")
        if args:
            cfg.ignore_empty_service = True
    elif name == "startup_timeout":
        cfg.startup_timeout = duration_arg(c, arity(c, 1, 1)[0])
    elif name == "secondary_networks":
        cfg.secondary = parse_secondary(c)
    elif name in ("multicluster", "zonal"):
        raise c.error(f"kubernetes option '{name}' is not available yet in dnsd")
    else:
        raise c.error(f"unknown property '{name}'")


def _int(c: Directive, text: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer as Go's strconv.Atoi reads it: ASCII digits with an optional sign only
    (Python's int() would also take "1_000", spaces and non-ASCII digits)."""
    if not _INT.fullmatch(text):
        raise c.error(f"invalid number '{text}'")
    return int_arg(c, text, lo=lo, hi=hi)


_INT = re.compile(r"[+-]?[0-9]+")


def parse_secondary(d: Directive) -> SecondaryConfig:
    arity(d, 0, 0)
    sc = SecondaryConfig()
    seen: set[str] = set()
    for c in d.children:
        if c.name in seen:
            raise c.error(f"duplicate secondary_networks property '{c.name}'")
        seen.add(c.name)
        no_block(c)
        if c.name == "status_annotation":
            sc.status_annotation = arity(c, 1, 1)[0]
        elif c.name == "service_annotation":
            sc.service_annotation = arity(c, 1, 1)[0]
        elif c.name == "headless":
            mode = arity(c, 1, 1)[0]
            if mode not in ("replace", "append"):
                raise c.error(f"headless must be replace or append, got '{mode}'")
            sc.headless = mode
        elif c.name == "net_names":
            arity(c, 0, 0)
            sc.net_names = True
        elif c.name in ("pod_records", "link_local"):
            value = arity(c, 1, 1)[0]
            if value not in ("on", "off"):
                raise c.error(f"{c.name} must be on or off, got '{value}'")
            setattr(sc, c.name, value == "on")
        else:
            raise c.error(f"unknown secondary_networks property '{c.name}'")
    return sc


def valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
