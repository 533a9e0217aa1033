"""acl: allow, block, filter or drop queries by source network and query type (CoreDNS's acl).

Syntax::

    acl [ZONES...] {
        ACTION [type QTYPE...] [net SOURCE...]
        ...
    }

ACTION is one of:

* ``allow``  - the query goes on to the next plugin;
* ``block``  - REFUSED;
* ``filter`` - NOERROR with an empty answer (NODATA);
* ``drop``   - no reply at all.

``type`` lists query types (``A``, ``AAAA``... or ``*`` for every type; default ``*``) and
``net`` source addresses or CIDRs, IPv4 or IPv6 (``*`` for every address; default ``*``).  A
rule matches when both its type and its network match.  ZONES default to the server block's
zones.  The directive may be repeated: every ``acl`` whose zones cover the query name is checked
in order, and within one the rules in order; the first matching rule decides (an ``allow``
ends the checking).  A query no rule matches is allowed.  Syntax and semantics are CoreDNS's.

Prepared answers (the hot path) are keyed by the question only, so when any rule looks at the
source network, replies passing through this plugin are not offered to the hot path: a prepared
answer could otherwise reach a client this plugin would refuse.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from dnslib import QTYPE, RCODE, DNSRecord

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.plugins.file import covers, zone_args
from dnsd.request import Request, error_reply

ALLOW, BLOCK, FILTER, DROP = "allow", "block", "filter", "drop"
ACTIONS = (ALLOW, BLOCK, FILTER, DROP)
ANY_TYPE = -1  # ``type *``

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
EVERYWHERE: tuple[Network, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


@dataclass(frozen=True)
class Policy:
    action: str
    qtypes: frozenset[int]  # contains ANY_TYPE for every type
    nets: tuple[Network, ...]

    @property
    def every_source(self) -> bool:
        return any(n.prefixlen == 0 for n in self.nets if n.version == 4) and any(
            n.prefixlen == 0 for n in self.nets if n.version == 6)

    def matches(self, qtype: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ANY_TYPE not in self.qtypes and qtype not in self.qtypes:
            return False
        return any(ip in net for net in self.nets if net.version == ip.version)


@dataclass(frozen=True)
class Rule:
    zones: list[str]
    policies: tuple[Policy, ...]


@functools.lru_cache(maxsize=4096)
def _client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Plugin(Base):
    name: ClassVar[str] = "acl"
    repeatable: ClassVar[bool] = True

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        # Does the decision depend on the client's address?  (See the module docstring.)
        self.by_source = any(not p.every_source for r in rules for p in r.policies)

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        rules = []
        for d in directives:
            zones = zone_args(d, d.args, ctx.zones)
            rules.append(Rule(zones, tuple(_policy(c) for c in d.children)))
        return cls(rules)

    def decide(self, req: Request) -> str:
        """The action for ``req``: the first matching policy of the first acl covering the
        name that has one (ALLOW when none matches)."""
        ip = _client_address(req.client_ip)
        name = req.qname_lower
        for rule in self.rules:
            if not covers(rule.zones, name):
                continue
            if ip is None:
                return BLOCK  # CoreDNS blocks what it cannot place
            for policy in rule.policies:
                if policy.matches(req.qtype, ip):
                    return policy.action  # ALLOW ends the checking too
        return ALLOW

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        action = self.decide(req)
        if action == BLOCK:
            return error_reply(req, RCODE.REFUSED)
        if action == FILTER:
            return error_reply(req, RCODE.NOERROR)
        if action == DROP:
            reply = error_reply(req, RCODE.NOERROR)
            reply.drop = True  # type: ignore[attr-defined]  # the engine sends nothing
            return reply
        reply = await next_(req)
        if reply is not None and self.by_source:
            reply.__dict__.pop("valid", None)  # keep it off the hot path
        return reply


def _policy(c: Directive) -> Policy:
    action = c.name.lower()
    if action not in ACTIONS:
        raise c.error(f"unexpected token '{c.name}'; expect 'allow', 'block', 'filter' or 'drop'")
    if c.children:
        raise c.error(f"unexpected block after '{c.name}'")
    qtypes: set[int] = set()
    nets: list[Network] = []
    has_type = has_net = False
    tokens = list(c.args)
    while tokens:
        section = tokens[0].lower()
        if section not in ("type", "net"):
            raise c.error(f"unexpected token '{tokens[0]}'; expect 'type | net'")
        values = []
        i = 1
        while i < len(tokens) and tokens[i].lower() not in ("type", "net"):
            values.append(tokens[i])
            i += 1
        tokens = tokens[i:]
        if not values:
            raise c.error(f"no token specified in '{section}' section")
        if section == "type":
            has_type = True
            for value in values:
                if value == "*":
                    qtypes.add(ANY_TYPE)
                    continue
                qtype = QTYPE.reverse.get(value)
                if not isinstance(qtype, int):
                    raise c.error(f"unexpected token '{value}'; expect legal QTYPE")
                qtypes.add(qtype)
        else:
            has_net = True
            for value in values:
                if value == "*":
                    nets.extend(EVERYWHERE)
                    continue
                nets.append(_network(c, value))
    if not has_type:
        qtypes.add(ANY_TYPE)
    if not has_net:
        nets.extend(EVERYWHERE)
    return Policy(action, frozenset(qtypes), tuple(dict.fromkeys(nets)))


def _network(c: Directive, text: str) -> Network:
    cidr = text if "/" in text else text + ("/128" if ":" in text else "/32")
    try:
        return ipaddress.ip_network(cidr, strict=False)  # host bits are masked off, as Go does
    except ValueError:
        raise c.error(f"illegal CIDR notation '{cidr}'") from None
