"""A query as the plugins see it, and helpers to build replies to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnslib import CLASS, OPCODE, QTYPE, RCODE, RR, DNSHeader, DNSQuestion, DNSRecord

# Record types a handler may see as integers; names for logs and metrics.
TYPE_NAMES: dict[int, str] = dict(QTYPE.forward)  # type: ignore[arg-type]


def type_name(qtype: int) -> str:
    """``A``, ``AAAA``... or ``TYPE123`` for unknown types."""
    return TYPE_NAMES.get(qtype, f"TYPE{qtype}")


@dataclass(slots=True)
class Request:
    """One DNS query in flight through a plugin chain."""

    msg: DNSRecord  # the parsed query
    qname: str  # as the client spelled it, fully qualified ("Foo.Example.org.")
    qtype: int
    qclass: int
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    proto: str = "udp"  # "udp" or "tcp"
    local_ip: str = ""
    local_port: int = 0
    edns: bool = False
    udp_size: int = 512  # the client's advertised UDP payload size (512 without EDNS)
    do: bool = False  # DNSSEC OK bit
    zone: str = "."  # the server block zone that matched
    server: str = "dns://:53"  # the listener, as CoreDNS names it in metrics
    size: int = 0  # the query's size on the wire
    start: float = 0.0  # time.perf_counter() when the query arrived
    meta: dict[str, Any] = field(default_factory=dict)
    # The engine that routed this query: plugins resolve other names through the whole server
    # with ``await req.engine.resolve(req.with_name(...))`` (CoreDNS's "upstream").
    engine: Any = None
    # Called by the engine once the reply is packed: (request, reply, wire size).  The log
    # and prometheus plugins use this, so they see the final size and rcode.
    on_done: list[Callable[[Request, DNSRecord, int], None]] | None = None
    _lower: str | None = None

    @property
    def qname_lower(self) -> str:
        if self._lower is None:
            self._lower = self.qname.lower()
        return self._lower

    @property
    def family(self) -> int:
        """1 for IPv4 clients, 2 for IPv6 (CoreDNS's metric label)."""
        return 2 if ":" in self.client_ip else 1

    @property
    def max_udp_size(self) -> int:
        return max(512, self.udp_size) if self.edns else 512

    @property
    def type_name(self) -> str:
        return type_name(self.qtype)

    def when_done(self, callback: Callable[[Request, DNSRecord, int], None]) -> None:
        """Run ``callback(request, reply, size)`` once the reply has been packed."""
        if self.on_done is None:
            self.on_done = []
        self.on_done.append(callback)

    def with_name(self, qname: str, qtype: int | None = None) -> Request:
        """A copy asking another name (and type): used by rewrite, autopath and CNAME chasing."""
        qtype = self.qtype if qtype is None else qtype
        msg = DNSRecord(
            DNSHeader(id=self.msg.header.id, rd=self.msg.header.rd),
            q=DNSQuestion(qname, qtype, self.qclass),
        )
        return Request(
            msg=msg, qname=qname if qname.endswith(".") else qname + ".", qtype=qtype,
            qclass=self.qclass, client_ip=self.client_ip, client_port=self.client_port,
            proto=self.proto, local_ip=self.local_ip, local_port=self.local_port,
            edns=self.edns, udp_size=self.udp_size, do=self.do, zone=self.zone,
            server=self.server, size=self.size, start=self.start, meta=self.meta,
            engine=self.engine,
        )


def make_reply(req: Request, rcode: int = RCODE.NOERROR, aa: bool = True, ra: bool = False) -> DNSRecord:
    """An empty reply to ``req``: same ID, question as asked, RD and CD copied, AA and RA as
    given (built without dnslib's per-field validation: this is on every query's path)."""
    from dnsd.wire import quick

    h = req.msg.header
    bits = h.bitmap
    bitmap = (0x8000 | (bits & 0x7800) | (0x0400 if aa else 0) | (bits & 0x0110)
              | (0x0080 if ra else 0) | (rcode & 0xF))
    asked = req.msg.questions[0] if req.msg.questions else None
    if asked is not None and asked.qtype == req.qtype and asked.qclass == req.qclass:
        q = quick.question(asked.qname, req.qtype, req.qclass)
    else:
        q = DNSQuestion(req.qname, req.qtype, req.qclass)
    return quick.record(quick.header(h.id, bitmap), [q])


def error_reply(req: Request, rcode: int) -> DNSRecord:
    """A non-authoritative error reply (SERVFAIL, REFUSED...)."""
    return make_reply(req, rcode=rcode, aa=False)


def header_only_reply(data: bytes, rcode: int) -> bytes | None:
    """A reply carrying only a copy of the query's header bits and ``rcode`` (for FORMERR,
    NOTIMP on unparseable queries).  None if not even a header can be read."""
    if len(data) < 12:
        return None
    flags = int.from_bytes(data[2:4], "big")
    if flags & 0x8000:  # a response, not a query: never answer it (reflection loops)
        return None
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100
    out_flags = 0x8000 | (opcode << 11) | rd | (rcode & 0xF)
    return data[:2] + out_flags.to_bytes(2, "big") + b"\x00" * 8


def soa_rr(zone: str, ttl: int, mname: str, rname: str, serial: int, refresh: int,
           retry: int, expire: int, minimum: int) -> RR:
    from dnslib import SOA

    return RR(zone, QTYPE.SOA, CLASS.IN, ttl, SOA(mname, rname, (serial, refresh, retry, expire, minimum)))


__all__ = [
    "CLASS", "OPCODE", "QTYPE", "RCODE", "Request", "error_reply", "header_only_reply",
    "make_reply", "soa_rr", "type_name",
]
