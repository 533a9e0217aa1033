"""transfer: outgoing zone transfers (AXFR, IXFR) of the block's kubernetes and file zones.

Syntax (CoreDNS's)::

    transfer [ZONES...] {
        to ADDRESS...
    }

ZONES default to the server block's zones.  ``to`` (required, repeatable) lists who may
transfer: ``*`` for anyone, an IP address (a ``:port`` suffix is accepted and ignored) or a
CIDR.  The directive may be repeated for other zones; the longest zone covering the query name
decides.

Behaviour, as CoreDNS:

* only AXFR and IXFR queries are handled here; everything else passes on;
* over UDP: REFUSED;  from an address not in ``to``: REFUSED;
* IXFR needs the client's SOA in the authority section (else SERVFAIL); with the current
  serial the reply is that SOA alone, otherwise a full AXFR-style stream (no incremental
  history is kept);
* the records come from the first plugin of the block that serves exactly the query's zone:
  ``kubernetes`` (``kubernetes/xfr.py``, the order of the reference's §12) then ``file``
  (``file.Zone.transfer_records``); none → SERVFAIL;
* the stream is several messages (AA set, the question in each), each at most 500 records
  and 64 KiB; the engine's ``reply.stream`` carries the ones after the first.

Not implemented: NOTIFY to the ``to`` addresses when a zone changes, TSIG.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.label import DNSBuffer

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.plugins.file import covers, zone_args
from dnsd.request import Request, error_reply, make_reply

log = logging.getLogger("dnsd")

MAX_MESSAGE = 65535
MAX_RECORDS = 500  # per message, as CoreDNS groups them
# Room kept in each message for the header, the question (<= 259 bytes) and an OPT record.
OVERHEAD = 12 + 259 + 11 + 64

# provider(zone, serial) -> the zone's records in transfer order, or None if not its zone
Provider = Callable[[str, int], Iterator[RR] | None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Xfr:
    zones: list[str]
    anyone: bool
    allowed: list[Network]

    def allows(self, client_ip: str) -> bool:
        if self.anyone:
            return True
        try:
            ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.allowed)


class Plugin(Base):
    name: ClassVar[str] = "transfer"
    direct_role: ClassVar[str] = "pass"  # zone transfers (AXFR/IXFR) never take the direct path
    repeatable: ClassVar[bool] = True

    def __init__(self, xfrs: list[Xfr], providers: list[Provider]) -> None:
        self.xfrs = xfrs
        self.providers = providers

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        xfrs = [_xfr(d, ctx) for d in directives]
        return cls(xfrs, providers(ctx.plugins))

    def _xfr_for(self, name: str) -> Xfr | None:
        best: Xfr | None = None
        best_len = -1
        for x in self.xfrs:
            for zone in x.zones:
                if len(zone) > best_len and covers([zone], name):
                    best, best_len = x, len(zone)
        return best

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        if req.qtype not in (QTYPE.AXFR, QTYPE.IXFR):
            return await next_(req)
        if req.proto != "tcp":
            return error_reply(req, RCODE.REFUSED)
        x = self._xfr_for(req.qname_lower)
        if x is None:
            return await next_(req)
        if not x.allows(req.client_ip):
            log.debug("plugin/transfer: refused transfer of %s to %s", req.qname_lower, req.client_ip)
            return error_reply(req, RCODE.REFUSED)
        serial = 0
        if req.qtype == QTYPE.IXFR:
            auth = req.msg.auth
            if len(auth) != 1 or auth[0].rtype != QTYPE.SOA:
                return error_reply(req, RCODE.SERVFAIL)
            serial = auth[0].rdata.times[0]
        records = None
        for provider in self.providers:
            records = provider(req.qname_lower, serial)
            if records is not None:
                break
        if records is None:
            return error_reply(req, RCODE.SERVFAIL)
        log.info("[INFO] plugin/transfer: Outgoing transfer of zone %s to %s started with serial %d",
                 req.qname_lower, req.client_ip, serial)
        messages = _messages(req, records)
        first = next(messages)
        first.stream = messages  # type: ignore[attr-defined]  # the engine sends the rest
        return first


def providers(plugins: dict[str, Any]) -> list[Provider]:
    """The block's transfer sources, in CoreDNS's plugin order (kubernetes before file)."""
    out: list[Provider] = []
    k8s = plugins.get("kubernetes")
    if k8s is not None:
        from dnsd.plugins.kubernetes.xfr import transfer_records

        out.append(lambda zone, serial: transfer_records(k8s, zone, serial))
    files = plugins.get("file")
    if files is not None:
        def from_files(zone: str, serial: int) -> Iterator[RR] | None:
            zf = files.by_origin.get(zone)
            z = zf.zones.get(zone) if zf is not None else None
            return None if z is None else z.transfer_records(serial)

        out.append(from_files)
    return out


def _messages(req: Request, records: Iterator[RR]) -> Iterator[DNSRecord]:
    """Group the records into messages of at most MAX_RECORDS records and 64 KiB (sizes
    are estimated by packing each record on its own, which compression can only shrink)."""
    budget = MAX_MESSAGE - OVERHEAD
    batch: list[RR] = []
    size = 0
    for rr in records:
        buf = DNSBuffer()
        rr.pack(buf)
        n = len(buf.data)
        if batch and (size + n > budget or len(batch) >= MAX_RECORDS):
            yield _message(req, batch)
            batch, size = [], 0
        batch.append(rr)
        size += n
    if batch:
        yield _message(req, batch)


def _message(req: Request, records: list[RR]) -> DNSRecord:
    msg = make_reply(req, aa=True)
    msg.rr = records
    return msg


def _xfr(d: Directive, ctx: SetupContext) -> Xfr:
    zones = zone_args(d, d.args, ctx.zones)
    anyone = False
    allowed: list[Network] = []
    seen_to = False
    for c in d.children:
        if c.name != "to":
            raise c.error(f"unknown property '{c.name}'")
        if not c.args or c.children:
            raise c.error("Wrong argument count or unexpected line ending after 'to'")
        seen_to = True
        for arg in c.args:
            if arg == "*":
                anyone = True
            else:
                allowed.append(_network(c, arg))
    if not seen_to:
        raise d.error("'to' is required")
    return Xfr(zones, anyone, allowed)


def _network(c: Directive, text: str) -> Network:
    """An address, ``address:port``, ``[v6]:port`` or a CIDR."""
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates = [text[1:text.index("]")]]
    elif text.count(":") == 1:
        candidates.append(text.rsplit(":", 1)[0])  # IPv4 with a port
    for candidate in candidates:
        try:
            return ipaddress.ip_network(candidate, strict=False)
        except ValueError:
            continue
    raise c.error(f"invalid address '{text}' in 'to'")
