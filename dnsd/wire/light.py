"""Light records: plain tuples for the records dnsd writes itself, packed straight to bytes.

A first answer built from dnslib objects spends most of its time creating and walking those
objects.  Answer code writes ``Rec`` tuples instead; ``to_rr`` turns one into a dnslib
record for the general path, and ``Packer`` writes a whole reply from them, with exactly the
bytes ``encode.pack`` writes for the same message (its compression, ``encode.write_name``:
owners, NS/CNAME/PTR targets and SOA names compressed, SRV targets written in full).

``rdata`` by type: A/AAAA the address text, NS/CNAME/PTR the target name, SRV a tuple
(priority, weight, port, target), TXT one string, SOA (mname, rname, (serial, refresh,
retry, expire, minimum)).  Names are absolute text names ("a.b.")."""

from __future__ import annotations

import struct
from random import randbytes
from socket import AF_INET6, inet_aton, inet_pton
from typing import Any, NamedTuple

from dnslib import CNAME, NS, RR, SOA, TXT

from dnsd import memos
from dnsd.wire import quick
from dnsd.wire.encode import Unsupported
from dnsd.wire.encode import write_name as _name

A, NS_, CNAME_, SOA_, PTR, MX, TXT_, AAAA, SRV = 1, 2, 5, 6, 12, 15, 16, 28, 33
_RR = struct.Struct("!HHIH")
_RR_SRV = struct.Struct("!HHIHHHH")  # an SRV record's fixed part, then its priority, weight, port
_SOA_TIMES = struct.Struct("!IIIII")
_U16 = struct.Struct("!H")
_COUNTS = struct.Struct("!HHHH")
_FLAGS_COUNTS = struct.Struct("!HHHHH")
# An A record owned by the question, up to its address, by TTL.
_OWN_A: dict[int, bytes] = {}


class Rec(NamedTuple):
    """One resource record of class IN (see the module docstring for ``rdata``).  Code
    that makes many records may use plain tuples of the same four fields: everything here
    reads records by position."""

    rname: str
    rtype: int
    ttl: int
    rdata: Any


def to_rr(rec: Rec | tuple[str, int, int, Any]) -> RR:
    """The dnslib record for a light one (a ``Rec`` or a plain tuple of the same fields)."""
    rname, rtype, ttl, rd = rec
    if rtype == A:
        rdata: object = quick.a(rd)
    elif rtype == AAAA:
        rdata = quick.aaaa(rd)
    elif rtype == PTR:
        rdata = quick.ptr(rd)
    elif rtype == SRV:
        rdata = quick.srv(*rd)
    elif rtype == NS_:
        rdata = NS(rd)
    elif rtype == CNAME_:
        rdata = CNAME(rd)
    elif rtype == TXT_:
        rdata = TXT(rd)
    elif rtype == SOA_:
        rdata = SOA(rd[0], rd[1], rd[2])
    else:
        raise ValueError(f"no light form for type {rtype}")
    return quick.rr(rname, rtype, ttl=ttl, rdata=rdata)


def round_robin(records: list[Rec]) -> list[Rec]:
    """loadbalance's order (CNAMEs, then other records, then the addresses shuffled, then
    the MX records shuffled) for light records."""
    if len(records) < 2:
        return records
    cnames, rest, addresses, mxs = [], [], [], []
    for rec in records:
        rtype = rec[1]
        if rtype in (A, AAAA):
            addresses.append(rec)
        elif rtype == CNAME_:
            cnames.append(rec)
        elif rtype == MX:
            mxs.append(rec)
        else:
            rest.append(rec)
    if not (cnames or rest or mxs):
        return _shuffled(addresses)
    return [*cnames, *rest, *_shuffled(addresses), *_shuffled(mxs)]


def _shuffled(items: list[Rec]) -> list[Rec]:
    """``items`` in a random order: sorted by 16 random bits each (ties, 1 in 65,536, keep
    their order).  A sort with a C key costs a fraction of random.shuffle's Python loop."""
    n = len(items)
    if n < 2:
        return items
    keys = memoryview(randbytes(2 * n)).cast("H")
    return [items[i] for i in sorted(range(n), key=keys.__getitem__)]


def shufflable(sections: tuple[list[Rec], ...]) -> bool:
    """Would round_robin change anything (two address or MX records in one section)?"""
    for records in sections:
        if len(records) > 1:
            types = [rec[1] for rec in records]
            if types.count(A) + types.count(AAAA) > 1 or types.count(MX) > 1:
                return True
    return False


def _labels(name: str) -> tuple[bytes, ...]:
    """The wire labels of an absolute text name written without escapes."""
    if name == ".":
        return ()
    if "\\" in name or not name.endswith("."):
        raise Unsupported("escaped or relative name")
    try:
        labels = tuple(name.encode("ascii").split(b".")[:-1])
    except UnicodeEncodeError:
        raise Unsupported("non-ASCII name") from None
    if b"" in labels:
        raise Unsupported("empty label")
    return labels


# Names seen in replies, kept between replies (the same targets and owners come back): their
# labels (question names' too) and SRV targets written in full.
# Each memo is emptied when it reaches memos.size entries (memos.keep: the size follows the
# cluster's), so memory stays bounded.
_LABELS: dict[str, tuple[bytes, ...]] = {}
_TARGETS: dict[str, bytes] = {}


def _labels_of(name: str) -> tuple[bytes, ...]:
    labels = _LABELS.get(name)
    if labels is None:
        labels = _labels(name)
        memos.keep(_LABELS, name, labels)
    return labels


def _write_name(buf: bytearray, names: dict[tuple[bytes, ...], int], name: str, qname: str) -> None:
    """``name`` (text, plain labels) at the end of ``buf``, compressed against ``names`` (the
    suffixes written so far in this reply) and the question's name ``qname`` (written at
    offset 12; a text label and its dot take as many bytes as the wire label and its length
    octet, so its root byte is at 12 + len(qname)) without making a table of its suffixes."""
    labels = _LABELS.get(name)
    if labels is None:
        labels = _labels_of(name)
    qlabels = _LABELS.get(qname)
    if qlabels is None:
        qlabels = _labels_of(qname)
    n, qn = len(labels), len(qlabels)
    shared = 0  # how many last labels the question has too
    while shared < n and shared < qn and labels[n - 1 - shared] == qlabels[qn - 1 - shared]:
        shared += 1
    _name(buf, names, labels, shared, 12 + len(qname))


def _target(name: str) -> bytes:
    """An SRV target's wire form, written in full (RFC 2782: never compressed)."""
    wire = _TARGETS.get(name)
    if wire is None:
        labels = _labels_of(name)
        if any(len(label) > 63 for label in labels):
            raise Unsupported("label too long")
        wire = b"".join([bytes((len(label),)) + label for label in labels]) + b"\x00"
        if len(wire) > 255:
            raise Unsupported("name longer than 255 octets")
        memos.keep(_TARGETS, name, wire)
    return wire


class Packer:
    """Writes replies to one question: the header and question bytes are the query's own."""

    __slots__ = ("question", "qname")

    def __init__(self, question: bytes, qname: str) -> None:
        self.question = question  # the question section as the query has it
        self.qname = qname  # its text form (answers' owner), a name of plain labels

    def pack(self, id_flags: bytes, sections: tuple[list[Rec], list[Rec], list[Rec]],
             opt: bytes, limit: int) -> tuple[bytes, int]:
        """The reply within ``limit`` bytes, and how many records it holds: ``id_flags``
        (4 bytes), the question, the records, then ``opt`` (an OPT record's bytes, or b"").

        Like miekg/dns (CoreDNS), a reply that does not fit keeps the records that do (the
        longest prefix, sections in order) and the OPT record, with TC set: writing stops
        at the first record that crosses the limit.  Compression only points backwards, so
        that prefix is exactly what packing those records alone writes.  Raises Unsupported
        when not even the question fits."""
        qname = self.qname
        if qname == ".":  # (encode.pack never points at the root name: the general path)
            raise Unsupported("the root name asked")
        answers, auth, extra = sections
        buf = bytearray(id_flags)
        buf += _COUNTS.pack(1, len(answers), len(auth), len(extra) + (1 if opt else 0))
        buf += self.question
        room = limit - len(opt)
        if len(buf) > room:
            raise Unsupported("not even the question fits")
        names: dict[tuple[bytes, ...], int] = {}  # suffixes written after the question
        kept = 0
        for section in sections:
            for rname, rtype, ttl, rd in section:
                end = len(buf)
                if rtype == A and rname is qname:  # the usual answer record
                    head = _OWN_A.get(ttl)
                    if head is None:
                        head = b"\xc0\x0c" + _RR.pack(A, 1, ttl & 0xFFFFFFFF, 4)
                        if len(_OWN_A) < 64:  # (TTLs come from the configuration: few)
                            _OWN_A[ttl] = head
                    buf += head
                    buf += inet_aton(rd)
                else:
                    if rname is qname or rname == qname:
                        buf += b"\xc0\x0c"
                    else:
                        _write_name(buf, names, rname, qname)
                    if rtype == A:
                        buf += _RR.pack(A, 1, ttl & 0xFFFFFFFF, 4)
                        buf += inet_aton(rd)
                    elif rtype == AAAA:
                        buf += _RR.pack(AAAA, 1, ttl & 0xFFFFFFFF, 16)
                        buf += inet_pton(AF_INET6, rd)
                    elif rtype == SRV:
                        target = _TARGETS.get(rd[3])
                        if target is None:
                            target = _target(rd[3])
                        buf += _RR_SRV.pack(SRV, 1, ttl & 0xFFFFFFFF, 6 + len(target), rd[0], rd[1], rd[2])
                        buf += target
                    else:
                        at = len(buf)
                        buf += _RR.pack(rtype, 1, ttl & 0xFFFFFFFF, 0)
                        _rdata(buf, names, rtype, rd, qname)
                        length = len(buf) - at - 10
                        if length > 0xFFFF:
                            raise Unsupported("rdata too long")
                        _U16.pack_into(buf, at + 8, length)
                if len(buf) > room:
                    return self._truncated(buf, end, kept, sections, opt), kept
                kept += 1
        buf += opt
        return bytes(buf), kept

    @staticmethod
    def _truncated(buf: bytearray, end: int, kept: int,
                   sections: tuple[list[Rec], list[Rec], list[Rec]], opt: bytes) -> bytes:
        """The first ``kept`` records (the message up to ``end``), the OPT record, TC set."""
        del buf[end:]
        an = min(kept, len(sections[0]))
        ns = min(kept - an, len(sections[1]))
        ar = kept - an - ns
        flags = ((buf[2] << 8) | buf[3]) | 0x0200
        buf[2:12] = _FLAGS_COUNTS.pack(flags, 1, an, ns, ar + (1 if opt else 0))
        buf += opt
        return bytes(buf)


def _rdata(buf: bytearray, names: dict[tuple[bytes, ...], int], rtype: int, rd: Any,
           qname: str) -> None:
    """The rdata of the types ``Packer.pack`` does not write itself (not A, AAAA or SRV)."""
    if rtype in (PTR, NS_, CNAME_):
        _write_name(buf, names, rd, qname)
    elif rtype == SOA_:
        _write_name(buf, names, rd[0], qname)
        _write_name(buf, names, rd[1], qname)
        buf += _SOA_TIMES.pack(*rd[2])
    elif rtype == TXT_:
        text = rd.encode("utf-8")
        if len(text) > 255:
            raise Unsupported("TXT string too long")
        buf.append(len(text))
        buf += text
    else:
        raise Unsupported(f"type {rtype}")


def opt_bytes(size: int, do: bool) -> bytes:
    """An OPT record with no options: the root name, type 41, the payload size as class."""
    return b"\x00" + _RR.pack(41, size, 0x8000 if do else 0, 0)
