"""Server block key normalisation: ``dns://example.org:1053`` to Address values."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from dnsd.corefile.ast import Address, CorefileError

SUPPORTED_TRANSPORTS = frozenset({"dns"})
_PORT_RE = re.compile(r"[0-9]+")
_BAD_ZONE_CHARS = frozenset(' \t\n"(){}[];@,:/\\')
_MAX_NAME_LEN = 253  # text form without the trailing dot
_MAX_LABEL_LEN = 63

_Fail = Callable[[str], CorefileError]


def normalize_zone(name: str) -> str:
    """Lower-case ``name`` and make it fully qualified; ``""`` and ``"."`` give ``"."``."""
    name = name.strip().lower()
    if name in ("", "."):
        return "."
    return name if name.endswith(".") else name + "."


def reverse_zones_for_cidr(cidr: str) -> list[str]:
    """The reverse zones covering ``cidr``, e.g. ``10.0.0.0/24`` -> ``0.0.10.in-addr.arpa.``.

    A prefix not on an octet (IPv4) or nibble (IPv6) boundary expands to every zone
    at the next boundary that it covers. Host bits are ignored. Raises ValueError.
    """
    net = ipaddress.ip_network(cidr.strip(), strict=False)
    step = 8 if net.version == 4 else 4
    boundary = -(-net.prefixlen // step) * step
    subnets = net.subnets(new_prefix=boundary) if boundary != net.prefixlen else [net]
    return [_reverse_name(sub, step) for sub in subnets]


def _reverse_name(net: ipaddress.IPv4Network | ipaddress.IPv6Network, step: int) -> str:
    """The reverse zone of a network whose prefix is on an octet/nibble boundary."""
    count = net.prefixlen // step
    if net.version == 4:
        parts = str(net.network_address).split(".")[:count]
        suffix = "in-addr.arpa."
    else:
        parts = list(net.network_address.exploded.replace(":", ""))[:count]
        suffix = "ip6.arpa."
    return ".".join([*reversed(parts), suffix]) if parts else suffix


def normalize_key(key: str, default_port: int, file: str, line: int) -> list[Address]:
    """Normalise one server block key into its addresses (several for a split CIDR).

    Accepts ``.``, ``:1053``, ``example.org``, ``Example.ORG.:1053``, ``dns://...`` and
    reverse CIDRs such as ``10.0.0.0/8`` or ``fd00::/64``; raises CorefileError otherwise.
    """

    def fail(message: str) -> CorefileError:
        return CorefileError(file, line, message)

    transport, rest = _split_transport(key, fail)
    host, port = _split_port(rest, key, default_port, fail)
    if "/" in host:
        try:
            zones = reverse_zones_for_cidr(host)
        except ValueError:
            raise fail(f"Invalid CIDR '{host}' in server block key '{key}'") from None
    else:
        zones = [_checked_zone(host, key, fail)]
    return [Address(transport, zone, port) for zone in zones]


def _split_transport(key: str, fail: _Fail) -> tuple[str, str]:
    """Split off an optional ``scheme://`` prefix; only ``dns`` is supported."""
    if "://" not in key:
        return "dns", key
    scheme, rest = key.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SUPPORTED_TRANSPORTS:
        raise fail(f"Transport '{scheme}://' in server block key '{key}' is not supported by dnsd")
    return scheme, rest


def _split_port(rest: str, key: str, default_port: int, fail: _Fail) -> tuple[str, int]:
    """Split ``host:port``; the port is the digits after the last colon, if any."""
    colon = rest.rfind(":")
    if colon < 0:
        return rest, default_port
    host, tail = rest[:colon], rest[colon + 1 :]
    if not tail:
        raise fail(f"Expecting a port after the last colon in server block key '{key}'")
    if _PORT_RE.fullmatch(tail):
        port = int(tail)
        if not 1 <= port <= 65535:
            raise fail(f"Port {tail} in server block key '{key}' is out of range (1-65535)")
        return host, port
    if "/" in rest:  # an IPv6 CIDR without a port
        return rest, default_port
    raise fail(f"Invalid port '{tail}' in server block key '{key}'")


def _checked_zone(host: str, key: str, fail: _Fail) -> str:
    """Normalise ``host`` and check it looks like a domain name."""
    zone = normalize_zone(host)
    if zone == ".":
        return zone
    labels = zone[:-1].split(".")
    if (
        _BAD_ZONE_CHARS.intersection(zone)
        or len(zone) - 1 > _MAX_NAME_LEN
        or any(not label or len(label) > _MAX_LABEL_LEN for label in labels)
    ):
        raise fail(f"Server block key '{key}' is not a valid zone name")
    return zone
