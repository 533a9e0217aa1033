"""whoami: tells clients their address, port and transport.

Syntax: ``whoami``.  The reply has an empty answer section; the additional section holds an
A/AAAA record with the client's address and an SRV record ``_udp|_tcp.<qname>`` with its port.
"""

from __future__ import annotations

from typing import ClassVar

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSRecord

from dnsd.chain import Next
from dnsd.chain import Plugin as Base
from dnsd.request import Request, error_reply, make_reply


class Plugin(Base):
    name: ClassVar[str] = "whoami"

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        reply = make_reply(req)
        if ":" in req.client_ip:
            reply.add_ar(RR(req.qname, QTYPE.AAAA, ttl=0, rdata=AAAA(req.client_ip)))
        else:
            reply.add_ar(RR(req.qname, QTYPE.A, ttl=0, rdata=A(req.client_ip)))
        owner = f"_{req.proto}.{req.qname}" if req.qname != "." else f"_{req.proto}."
        if len(owner) > 254:  # a query name near 255 octets leaves no room for "_udp."
            return error_reply(req, RCODE.SERVFAIL)  # (CoreDNS fails to pack it: silence)
        reply.add_ar(RR(owner, QTYPE.SRV, ttl=0, rdata=SRV(0, 0, req.client_port, ".")))
        return reply
