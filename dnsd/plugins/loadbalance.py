"""loadbalance: shuffle address and MX records in every successful reply.

Syntax::

    loadbalance [round_robin]

In each section of a NOERROR reply, CNAMEs come first in their original order, then the
records of other types (order kept), then the A/AAAA records shuffled, then the MX records
shuffled.  Zone transfers are left alone.  The ``weighted`` policy is not supported.
"""

from __future__ import annotations

import random
from typing import ClassVar

from dnslib import QTYPE, RCODE, RR, DNSRecord

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.request import Request

ADDRESS = (QTYPE.A, QTYPE.AAAA)
_CNAME, _MX, _OPT = QTYPE.CNAME, QTYPE.MX, QTYPE.OPT  # (QTYPE's attributes are looked up slowly)


def round_robin(records: list[RR]) -> list[RR]:
    """CNAMEs first, then other records, then shuffled addresses, then shuffled MX."""
    if len(records) < 2:
        return records
    cnames: list[RR] = []
    rest: list[RR] = []
    addresses: list[RR] = []
    mxs: list[RR] = []
    for rr in records:
        rtype = rr.rtype
        if rtype == _CNAME:
            cnames.append(rr)
        elif rtype in ADDRESS:
            addresses.append(rr)
        elif rtype == _MX:
            mxs.append(rr)
        else:
            rest.append(rr)
    random.shuffle(addresses)
    random.shuffle(mxs)
    return [*cnames, *rest, *addresses, *mxs]


class Plugin(Base):
    name: ClassVar[str] = "loadbalance"
    direct_role: ClassVar[str] = "pass"  # (the engine's direct path does its part itself)

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        if d.children:
            raise d.error("unexpected block after 'loadbalance'")
        if len(d.args) > 1 and d.args[0] != "weighted":
            raise d.error("Wrong argument count or unexpected line ending after 'loadbalance'")
        if d.args:
            policy = d.args[0]
            if policy == "weighted":
                raise d.error("loadbalance policy 'weighted' is not supported by dnsd")
            if policy != "round_robin":
                raise d.error(f"unknown policy: {policy}")
        return cls()

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        reply = await next_(req)
        if reply is None or reply.header.rcode != RCODE.NOERROR:
            return reply
        if req.qtype in (QTYPE.AXFR, QTYPE.IXFR):
            return reply
        if shufflable(reply):
            # A prepared hot-path reply must not freeze one order: it keeps several, made
            # with this (the engine calls it after packing the first).
            reply.reshuffle = shuffle  # type: ignore[attr-defined]
        shuffle(reply)
        return reply


def shuffle(reply: DNSRecord) -> None:
    """Round-robin every section of ``reply`` in place (the OPT record stays last)."""
    reply.rr = round_robin(list(reply.rr))
    reply.auth = round_robin(list(reply.auth))
    opt = [rr for rr in reply.ar if rr.rtype == _OPT]
    reply.ar = round_robin([rr for rr in reply.ar if rr.rtype != _OPT]) + opt


def shufflable(reply: DNSRecord) -> bool:
    """Would shuffling change anything (more than one address or MX record in a section)?"""
    return _shufflable(reply.rr) or _shufflable(reply.auth) or _shufflable(reply.ar)


def _shufflable(records: list[RR]) -> bool:
    if len(records) < 2:
        return False
    types = [rr.rtype for rr in records]
    return sum(t in ADDRESS for t in types) > 1 or types.count(_MX) > 1
