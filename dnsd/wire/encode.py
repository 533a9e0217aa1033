"""A fast packer for the replies dnsd builds: dnslib messages to wire bytes.

dnslib's own ``pack()`` spends most of its time in generic buffer and label machinery; this
writes the common record types directly, with the same case-sensitive name compression, and
raises ``Unsupported`` for anything else so the caller can fall back to ``pack()``.
"""

from __future__ import annotations

import struct

from dnslib import DNSRecord

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_SRV = struct.Struct("!HHH")
_SOA_TIMES = struct.Struct("!IIIII")
_U16 = struct.Struct("!H")

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41


class Unsupported(Exception):
    """A record this packer does not write; use dnslib's pack()."""


class _Writer:
    __slots__ = ("buf", "names")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.names: dict[tuple[bytes, ...], int] = {}

    def plain_name(self, labels: tuple[bytes, ...]) -> None:
        """A name written in full and not offered for compression (RFC 2782 SRV targets)."""
        buf = self.buf
        for label in labels:
            if len(label) > 63:
                raise Unsupported("label too long")
            buf.append(len(label))
            buf += label
        buf.append(0)

    def name(self, labels: tuple[bytes, ...]) -> None:
        if sum(len(label) + 1 for label in labels) > 254:
            raise Unsupported("name longer than 255 octets")
        buf, names = self.buf, self.names
        for i in range(len(labels)):
            suffix = labels[i:]
            pointer = names.get(suffix)
            if pointer is not None:
                buf += _U16.pack(0xC000 | pointer)
                return
            if len(buf) < 0x4000:
                names[suffix] = len(buf)
            label = labels[i]
            if len(label) > 63:
                raise Unsupported("label too long")
            buf.append(len(label))
            buf += label
        buf.append(0)


def _rdata(w: _Writer, rtype: int, rd: object) -> None:
    buf = w.buf
    if rtype in (A, AAAA):
        buf += bytes(rd.data)  # type: ignore[attr-defined]
    elif rtype in (CNAME, PTR, NS):
        w.name(rd.label.label)  # type: ignore[attr-defined]
    elif rtype == SRV:
        buf += _SRV.pack(rd.priority, rd.weight, rd.port)  # type: ignore[attr-defined]
        w.plain_name(rd.target.label)  # type: ignore[attr-defined]
    elif rtype == MX:
        buf += _U16.pack(rd.preference)  # type: ignore[attr-defined]
        w.name(rd.label.label)  # type: ignore[attr-defined]
    elif rtype == SOA:
        w.name(rd.mname.label)  # type: ignore[attr-defined]
        w.name(rd.rname.label)  # type: ignore[attr-defined]
        buf += _SOA_TIMES.pack(*rd.times)  # type: ignore[attr-defined]
    elif rtype == TXT:
        for s in rd.data:  # type: ignore[attr-defined]
            if len(s) > 255:
                raise Unsupported("TXT string too long")
            buf.append(len(s))
            buf += s
    elif rtype == OPT:
        for opt in rd or ():  # type: ignore[attr-defined]
            buf += _U16.pack(opt.code) + _U16.pack(len(opt.data)) + opt.data
    else:
        raise Unsupported(f"type {rtype}")


def pack(msg: DNSRecord) -> bytes:
    """The wire form of ``msg`` (as dnslib would write it); raises Unsupported."""
    w = _Writer()
    h = msg.header
    w.buf += _HEADER.pack(h.id, h.bitmap, len(msg.questions), len(msg.rr), len(msg.auth), len(msg.ar))
    for q in msg.questions:
        w.name(q.qname.label)
        w.buf += _U16.pack(q.qtype) + _U16.pack(q.qclass)
    for section in (msg.rr, msg.auth, msg.ar):
        for rr in section:
            w.name(rr.rname.label)
            at = len(w.buf)
            w.buf += _RR.pack(rr.rtype, rr.rclass, rr.ttl & 0xFFFFFFFF, 0)
            start = len(w.buf)
            _rdata(w, rr.rtype, rr.rdata)
            length = len(w.buf) - start
            if length > 0xFFFF:
                raise Unsupported("rdata too long")
            w.buf[at + 8 : at + 10] = _U16.pack(length)
    return bytes(w.buf)
