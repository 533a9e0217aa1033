"""Parsing of one ``forward`` directive into the settings of a Forwarder."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from dnslib import RCODE

from dnsd.corefile.address import normalize_zone
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import duration_arg, int_arg
from dnsd.plugins.forward.policy import Policy, make_policy, random_order
from dnsd.plugins.forward.proxy import HealthConfig

MAX_UPSTREAMS = 15
DEFAULT_PORT = 53
UNSUPPORTED_SCHEMES = ("tls://", "https://", "grpc://", "quic://", "h3://")


@dataclass
class ForwardConfig:
    """Everything one ``forward FROM TO... { ... }`` says."""

    zone: str
    upstreams: list[tuple[str, int]]
    ignored: list[str] = field(default_factory=list)
    force_tcp: bool = False
    prefer_udp: bool = False
    expire: float = 10.0
    max_fails: int = 2
    health: HealthConfig = field(default_factory=HealthConfig)
    policy: Policy = random_order
    max_concurrent: int = 0
    next_rcodes: set[int] = field(default_factory=set)
    failfast: bool = False


def split_host_port(d: Directive, text: str) -> tuple[str, int] | None:
    """``IP``, ``IP:port``, ``[v6]:port`` or a bare IPv6 address; None if not an address."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = int_arg(d, rest[1:], 1, 65535)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int_arg(d, port_text, 1, 65535)
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    return host, port


def resolv_conf_servers(path: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf-style file."""
    servers = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1])
    return servers


def parse_to(d: Directive, text: str) -> list[tuple[str, int]]:
    """One TO argument: an address (``dns://`` optional) or a resolv.conf file."""
    lower = text.lower()
    for scheme in UNSUPPORTED_SCHEMES:
        if lower.startswith(scheme):
            raise d.error(f"{scheme.rstrip(':/')} upstreams are not supported by dnsd: {text}")
    plain = text[len("dns://"):] if lower.startswith("dns://") else text
    addr = split_host_port(d, plain)
    if addr is not None:
        return [addr]
    if os.path.isfile(plain):
        try:
            names = resolv_conf_servers(plain)
        except OSError as exc:
            raise d.error(f"cannot read {plain}: {exc.strerror or exc}") from None
        found = [a for a in (split_host_port(d, n) for n in names) if a is not None]
        if not found:
            raise d.error(f"no nameservers found in {plain}")
        return found
    raise d.error(f"not an IP address or file: \"{text}\"")


def parse_forward(d: Directive) -> ForwardConfig:
    """Build the settings of one forward directive or raise a CorefileError at its line."""
    if len(d.args) < 2:
        raise d.error("Wrong argument count or unexpected line ending after 'forward'")
    upstreams: list[tuple[str, int]] = []
    for to in d.args[1:]:
        upstreams.extend(parse_to(d, to))
    if len(upstreams) > MAX_UPSTREAMS:
        raise d.error(f"more than {MAX_UPSTREAMS} TOs configured: {len(upstreams)}")
    cfg = ForwardConfig(zone=normalize_zone(d.args[0]), upstreams=upstreams)
    for child in d.children:
        _option(cfg, child)
    if cfg.force_tcp:
        cfg.prefer_udp = False  # CoreDNS: force_tcp takes precedence
    return cfg


def _no_args(c: Directive) -> None:
    if c.args:
        raise c.error(f"Wrong argument count or unexpected line ending after '{c.name}'")


def _one_arg(c: Directive) -> str:
    if len(c.args) != 1:
        raise c.error(f"Wrong argument count or unexpected line ending after '{c.name}'")
    return c.args[0]


def _option(cfg: ForwardConfig, c: Directive) -> None:  # noqa: C901 - one branch per option
    name = c.name
    if name == "except":
        if not c.args:
            raise c.error("Wrong argument count or unexpected line ending after 'except'")
        cfg.ignored.extend(normalize_zone(a) for a in c.args)
    elif name == "force_tcp":
        _no_args(c)
        cfg.force_tcp = True
    elif name == "prefer_udp":
        _no_args(c)
        cfg.prefer_udp = True
    elif name == "failfast_all_unhealthy_upstreams":
        _no_args(c)
        cfg.failfast = True
    elif name == "expire":
        cfg.expire = duration_arg(c, _one_arg(c))
    elif name == "max_fails":
        cfg.max_fails = int_arg(c, _one_arg(c), 0)
    elif name == "max_concurrent":
        cfg.max_concurrent = int_arg(c, _one_arg(c), 0)
    elif name == "policy":
        policy = make_policy(_one_arg(c))
        if policy is None:
            raise c.error(f"unknown policy '{c.args[0]}'")
        cfg.policy = policy
    elif name == "health_check":
        cfg.health = _health(c)
    elif name == "next":
        if not c.args:
            raise c.error("Wrong argument count or unexpected line ending after 'next'")
        for text in c.args:
            code = RCODE.reverse.get(text.upper())
            if code is None:
                raise c.error(f"{text} is not a valid rcode")
            cfg.next_rcodes.add(code)
    elif name in ("tls", "tls_servername"):
        raise c.error(f"'{name}' is not supported by dnsd (no DNS-over-TLS upstreams)")
    else:
        raise c.error(f"unknown property '{name}'")


def _health(c: Directive) -> HealthConfig:
    if not c.args:
        raise c.error("Wrong argument count or unexpected line ending after 'health_check'")
    health = HealthConfig(interval=duration_arg(c, c.args[0]))
    rest = c.args[1:]
    while rest:
        word = rest.pop(0)
        if word == "no_rec":
            health.recursion_desired = False
        elif word == "domain" and rest:
            health.domain = normalize_zone(rest.pop(0))
        else:
            raise c.error(f"health_check: unknown option '{word}'")
    return health
