"""log: one query-log line per request, in CoreDNS's Common Log Format by default.

Syntax::

    log [NAMES...] [FORMAT] {
        class success|denial|error|all ...
    }

NAMES limits logging to queries below those zones (default ``.``).  FORMAT may use
``{remote} {port} {local} {>id} {type} {class} {name} {proto} {size} {>do} {>bufsize}
{rcode} {>rflags} {rsize} {duration} {>opcode}`` or the shorthands ``{common}`` and
``{combined}``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import ClassVar

from dnslib import CLASS, OPCODE, RCODE, DNSRecord

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.address import normalize_zone
from dnsd.corefile.ast import Directive
from dnsd.request import Request

log = logging.getLogger("dnsd")

COMMON = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
          "{rcode} {>rflags} {rsize} {duration}")
COMBINED = COMMON + ' "{>opcode}"'
CLASSES = ("success", "denial", "error", "all")


def classify(reply: DNSRecord) -> str:
    """CoreDNS's response class: success, denial (NXDOMAIN or NODATA) or error."""
    rcode = reply.header.rcode
    if rcode == RCODE.NXDOMAIN:
        return "denial"
    if rcode != RCODE.NOERROR:
        return "error"
    if not reply.rr and any(rr.rtype == 6 for rr in reply.auth):
        return "denial"
    return "success"


def rflags(reply: DNSRecord) -> str:
    h = reply.header
    names = [("qr", h.qr), ("aa", h.aa), ("tc", h.tc), ("rd", h.rd), ("ra", h.ra),
             ("ad", h.ad), ("cd", h.cd)]
    return ",".join(n for n, on in names if on)


def _fields(req: Request, reply: DNSRecord, size: int) -> dict[str, str]:
    remote = f"[{req.client_ip}]" if ":" in req.client_ip else req.client_ip
    return {
        "remote": remote, "port": str(req.client_port), "local": req.local_ip,
        ">id": str(req.msg.header.id), "type": req.type_name,
        "class": CLASS.get(req.qclass, f"CLASS{req.qclass}"), "name": req.qname,
        "proto": req.proto, "size": str(req.size), ">do": "true" if req.do else "false",
        ">bufsize": str(req.udp_size), "rcode": RCODE.get(reply.header.rcode, str(reply.header.rcode)),
        ">rflags": rflags(reply), "rsize": str(size),
        "duration": f"{time.perf_counter() - req.start:.9f}".rstrip("0").rstrip(".") + "s",
        ">opcode": OPCODE.get(req.msg.header.opcode, "QUERY"),
    }


_PLACEHOLDER = re.compile(r"\{(>?[a-z]+)\}")


def formatter(fmt: str) -> Callable[[Request, DNSRecord, int], str]:
    fmt = fmt.replace("{common}", COMMON).replace("{combined}", COMBINED)

    def render(req: Request, reply: DNSRecord, size: int) -> str:
        fields = _fields(req, reply, size)
        return _PLACEHOLDER.sub(lambda m: fields.get(m.group(1), m.group(0)), fmt)

    return render


class Rule:
    def __init__(self, zones: list[str], fmt: str, classes: set[str]) -> None:
        self.zones = zones
        self.render = formatter(fmt)
        self.classes = classes

    def matches(self, qname_lower: str) -> bool:
        return any(z == "." or qname_lower == z or qname_lower.endswith("." + z) for z in self.zones)


class Plugin(Base):
    name: ClassVar[str] = "log"
    repeatable: ClassVar[bool] = True

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        rules = []
        for d in directives:
            args = list(d.args)
            fmt = COMMON
            if args and ("{" in args[-1] or " " in args[-1]):
                fmt = args.pop()
            zones = [normalize_zone(a) for a in args] or ["."]
            classes: set[str] = set()
            for child in d.children:
                if child.name != "class" or not child.args:
                    raise child.error(f"unknown property '{child.name}'")
                for c in child.args:
                    if c not in CLASSES:
                        raise child.error(f"unknown class '{c}'")
                    classes.add(c)
            rules.append(Rule(zones, fmt, classes or {"all"}))
        return cls(rules)

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        req.when_done(self._log)
        return await next_(req)

    def _log(self, req: Request, reply: DNSRecord, size: int) -> None:
        for rule in self.rules:
            if not rule.matches(req.qname_lower):
                continue
            if "all" not in rule.classes and classify(reply) not in rule.classes:
                continue
            log.info("[INFO] %s", rule.render(req, reply, size))
            return
