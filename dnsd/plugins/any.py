"""any: minimal answers to ANY queries (RFC 8482), as CoreDNS's ``any`` plugin.

Syntax::

    any

With the plugin, a query of type ANY for any name of the block gets one record instead of
everything the name has: ``<qname> 8482 IN HINFO "RFC8482" ""`` (NOERROR, AA clear, RD copied).
Other query types pass on untouched.  Without the plugin ANY goes through the chain like any
other type.
"""

from __future__ import annotations

from typing import ClassVar

from dnslib import QTYPE, RD, RR, DNSRecord

from dnsd.chain import Next
from dnsd.chain import Plugin as Base
from dnsd.request import Request, make_reply
from dnsd.wire import express

HINFO_TTL = 8482
# HINFO rdata: two <character-string>s, CPU "RFC8482" and OS "" (dnslib has no HINFO class).
HINFO_RDATA = b"\x07RFC8482\x00"


def _always() -> bool:
    return True


express.lasting(_always)  # (never changes)


class Plugin(Base):
    name: ClassVar[str] = "any"
    direct_role: ClassVar[str] = "pass"  # ANY queries never take the direct path

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        if req.qtype != QTYPE.ANY:
            return await next_(req)
        reply = make_reply(req, aa=False)
        reply.add_answer(RR(req.qname, QTYPE.HINFO, ttl=HINFO_TTL, rdata=RD(HINFO_RDATA)))
        reply.valid = _always  # type: ignore[attr-defined]  # the same for every asker, always
        return reply
