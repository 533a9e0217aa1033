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
_HH = struct.Struct("!HH")

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
        buf, names = self.buf, self.names
        if not names and len(buf) < 0x3F00:  # the first name (the question): nothing to point at
            if len(labels) + sum(map(len, labels)) > 254:
                raise Unsupported("name longer than 255 octets")
            at = len(buf)
            for i, label in enumerate(labels):
                if len(label) > 63:
                    raise Unsupported("label too long")
                names[labels[i:]] = at
                at += 1 + len(label)
            buf += _wire_name(labels)
            return
        write_name(buf, names, labels)


def write_name(buf: bytearray, names: dict[tuple[bytes, ...], int], labels: tuple[bytes, ...],
               shared: int = 0, qroot: int = 0) -> None:
    """A name at the end of ``buf``, compressed against ``names`` (the suffixes written so
    far, by offset), which it extends; raises Unsupported for a name that cannot be written.

    ``shared``: how many last labels the name has in common with the question's name, whose
    root byte is at ``qroot``; those suffixes are pointed at there without being in
    ``names`` (the bytes are the same as with the question's suffixes put in ``names``)."""
    n = len(labels)
    rest = n + sum(map(len, labels))  # the bytes of the suffix at label i, before the root
    pointer = names.get(labels)
    if pointer is None and shared == n and n:
        pointer = qroot - rest
    if pointer is not None:  # the whole name was written before (and checked then)
        buf += _U16.pack(0xC000 | pointer)
        return
    if rest > 254:
        raise Unsupported("name longer than 255 octets")
    for i in range(n):
        suffix = labels[i:]
        if i:
            pointer = names.get(suffix)
            if pointer is None and n - i <= shared:
                pointer = qroot - rest
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
        rest -= len(label) + 1
    buf.append(0)


def _wire_name(labels: tuple[bytes, ...]) -> bytes:
    """A name written in full (labels of 63 octets at most, checked by the caller)."""
    return b"".join([bytes((len(label),)) + label for label in labels]) + b"\x00"


def _rdata(w: _Writer, rtype: int, rd: object) -> None:
    buf = w.buf
    if rtype in (A, AAAA):
        buf += bytes(rd.data)  # type: ignore[attr-defined]
    elif rtype in (CNAME, PTR, NS):
        w.name(rd.__dict__["_label"].label)  # (dnslib's property getters cost a call each)
    elif rtype == SRV:
        d = rd.__dict__
        buf += _SRV.pack(d["_priority"], d["_weight"], d["_port"])
        w.plain_name(d["_target"].label)
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


def pack(msg: DNSRecord, ends: list[int] | None = None) -> bytes:
    """The wire form of ``msg`` (as dnslib would write it); raises Unsupported.

    With ``ends``, appends the offset where the question section ends, then where each
    record ends (answer, authority, additional in order): a prefix of the message up to
    one of those is exactly how a message holding only the records before it packs."""
    w = _Writer()
    buf, name = w.buf, w.name
    h = msg.header
    questions, answers, auth, extra = msg.questions, msg.rr, msg.auth, msg.ar
    buf += _HEADER.pack(h.id, h.bitmap, len(questions), len(answers), len(auth), len(extra))
    for q in questions:
        name(q.qname.label)
        buf += _HH.pack(q.qtype, q.qclass)
    if ends is not None:
        ends.append(len(buf))
    for section in (answers, auth, extra):
        for rr in section:
            d = rr.__dict__  # dnslib keeps the fields here; its getters cost a call each
            try:
                rname, rtype, rclass, ttl, rd = d["_rname"], d["_rtype"], d["_rclass"], d["_ttl"], d["rdata"]
            except KeyError:
                raise Unsupported("record without dnslib's fields") from None
            name(rname.label)
            at = len(buf)
            buf += _RR.pack(rtype, rclass, ttl & 0xFFFFFFFF, 0)
            _rdata(w, rtype, rd)
            length = len(buf) - at - 10
            if length > 0xFFFF:
                raise Unsupported("rdata too long")
            _U16.pack_into(buf, at + 8, length)
            if ends is not None:
                ends.append(len(buf))
    return bytes(buf)
