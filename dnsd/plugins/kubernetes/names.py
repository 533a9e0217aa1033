"""The cluster name grammar as pure functions: query names to parsed shapes, IPs to labels.

Everything here is case-insensitive input (callers pass lower-case names) and does no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple


class Shape:
    """What a name under the zone names (plain class attributes compared with ``is``: an
    Enum member lookup costs twice as much, and answers look up several per query)."""

    APEX = "apex"
    NS_DNS = "ns.dns"  # ns.dns.<zone>
    TYPE_ONLY = "type-only"  # svc.<zone> / pod.<zone>
    NAMESPACE = "namespace"  # <ns>.svc.<zone>
    POD_NAMESPACE = "pod-namespace"  # <ns>.pod.<zone>
    SERVICE = "service"  # <svc>.<ns>.svc.<zone>
    ENDPOINT = "endpoint"  # <ep>.<svc>.<ns>.svc.<zone>
    PORT = "port"  # _<port>._<proto>.<svc>.<ns>.svc.<zone>
    POD = "pod"  # [anything.]<dashed-ip>.<ns>.pod.<zone>
    NET = "net"  # <net>._net.<svc>... and <host>.<net>._net.<svc>... (secondary networks)
    INVALID = "invalid"  # a name error (NXDOMAIN)


class Parsed(NamedTuple):
    """A parsed name (a tuple: one is made per query)."""

    shape: str  # a Shape attribute
    namespace: str = ""
    service: str = ""
    endpoint: str = ""  # endpoint label, pod label, or hostname under _net
    port: str = ""  # port name without leading underscore
    protocol: str = ""  # protocol without leading underscore
    network: str = ""  # NAD name under _net


INVALID = Parsed(Shape.INVALID)


def relative_labels(qname_lower: str, zone: str) -> list[str] | None:
    """The labels of ``qname_lower`` left of ``zone`` (both fully qualified), or None."""
    if zone == ".":
        rest = qname_lower[:-1]
    elif qname_lower == zone:
        return []
    elif qname_lower.endswith("." + zone):
        rest = qname_lower[: -len(zone) - 1]
    else:
        return None
    return rest.split(".") if rest else []


def parse(labels: list[str], net_names: bool = False) -> Parsed:
    """Parse the labels left of the zone (CoreDNS reads them right to left)."""
    n = len(labels)
    if n == 0:
        return Parsed(Shape.APEX)
    if labels == ["ns", "dns"]:
        return Parsed(Shape.NS_DNS)
    kind = labels[-1]
    if kind not in ("svc", "pod"):
        return INVALID
    if n == 1:
        return Parsed(Shape.TYPE_ONLY)
    ns = labels[-2]
    if n == 2:
        return Parsed(Shape.NAMESPACE if kind == "svc" else Shape.POD_NAMESPACE, namespace=ns)
    if kind == "pod":
        # One or two labels left of the pod label (CoreDNS's endpoint / port.protocol slots)
        # are ignored (§5.7); three or more are "too long", a name error like any other
        # name (§4).
        if n > 5:
            return INVALID
        return Parsed(Shape.POD, namespace=ns, endpoint=labels[-3])
    svc = labels[-3]
    left = labels[:-3]
    if not left:
        return Parsed(Shape.SERVICE, namespace=ns, service=svc)
    if len(left) == 1:
        return Parsed(Shape.ENDPOINT, namespace=ns, service=svc, endpoint=left[0])
    if net_names and left[-1] == "_net" and len(left) in (2, 3):
        host = left[0] if len(left) == 3 else ""
        return Parsed(Shape.NET, namespace=ns, service=svc, endpoint=host, network=left[-2])
    if len(left) == 2:
        port, proto = left
        return Parsed(Shape.PORT, namespace=ns, service=svc,
                      port=port[1:] if port.startswith("_") else port,
                      protocol=proto[1:] if proto.startswith("_") else proto)
    return INVALID


def dashed_ip(ip: str) -> str:
    """CoreDNS's endpoint label for an address: dots or colons become dashes.

    Like CoreDNS, a text with a dot is treated as IPv4 first (so an IPv4-mapped IPv6 text
    keeps its colons); otherwise colons become dashes and a trailing dash gets a ``0``."""
    if "." in ip:
        return ip.replace(".", "-")
    if ":" in ip:
        label = ip.replace(":", "-")
        return label + "0" if label.endswith("-") else label
    return ip


def pod_label_text(label: str) -> str:
    """The address text a pod label stands for, unparsed: exactly 3 dashes and no ``--`` is
    IPv4 (dashes become dots), anything else IPv6 (dashes become colons)."""
    if label.count("-") == 3 and "--" not in label:
        return label.replace("-", ".")
    return label.replace("-", ":")


def pod_label_to_ip(label: str) -> str | None:
    """The IP a pod label stands for (``10-0-0-1``, ``fd00--1``), or None if it is none."""
    text = pod_label_text(label)
    if "%" in text:
        return None  # Go's net.ParseIP takes no IPv6 zone; Python's parser would
    try:
        if "." in text:
            return str(ipaddress.IPv4Address(text))  # rejects leading zeros, like Go
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def reverse_to_ip(qname_lower: str) -> str | None:
    """The address a full reverse name stands for, or None for partial/other names."""
    if qname_lower.endswith(".in-addr.arpa."):
        parts = qname_lower[: -len(".in-addr.arpa.")].split(".")
        if len(parts) != 4:
            return None
        if all(p.isascii() and p.isdigit() and len(p) <= 3 and (p[0] != "0" or p == "0")
               and int(p) <= 255 for p in parts):
            return ".".join(reversed(parts))  # (what ipaddress makes of it, without parsing)
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return None
    if qname_lower.endswith(".ip6.arpa."):
        nibbles = qname_lower[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) != 32 or any(len(x) != 1 or x not in "0123456789abcdef" for x in nibbles):
            return None
        hexstr = "".join(reversed(nibbles))
        return str(ipaddress.IPv6Address(int(hexstr, 16)))
    return None


def is_reverse_zone(zone: str) -> bool:
    return zone.endswith("in-addr.arpa.") or zone.endswith("ip6.arpa.")


def ip_family(ip: str) -> int:
    """4 or 6."""
    return 6 if ":" in ip else 4
