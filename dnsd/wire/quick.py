"""dnslib objects built without dnslib's per-attribute validation.

dnslib checks every header field, count and label through Python property setters, which
costs more than answering a cluster query.  When the bytes were already validated (the
hot-path key parser accepted the query) or the values come from dnsd itself, these helpers
fill the same objects directly.  The objects behave exactly like dnslib's own.
"""

from __future__ import annotations

import re
import struct
from functools import lru_cache

from dnslib import AAAA, PTR, RR, SRV, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord, EDNSOption

_HHH = struct.Struct("!HH")
_ROOT = DNSLabel(())
# Labels whose text form needs no escaping, so that str(label) names exactly these bytes.
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]+\Z")


def header(id_: int, bitmap: int, q: int = 1, ar: int = 0) -> DNSHeader:
    h = DNSHeader.__new__(DNSHeader)
    h.__dict__.update(_id=id_, _bitmap=bitmap, _q=q, _a=0, _auth=0, _ar=ar)
    return h


def question(label: DNSLabel, qtype: int, qclass: int) -> DNSQuestion:
    q = DNSQuestion.__new__(DNSQuestion)
    q.__dict__.update(_qname=label, qtype=qtype, qclass=qclass)
    return q


def record(head: DNSHeader, questions: list[DNSQuestion], ar: list[RR] | None = None) -> DNSRecord:
    r = DNSRecord.__new__(DNSRecord)
    r.__dict__.update(header=head, questions=questions, rr=[], auth=[], ar=ar if ar is not None else [])
    return r


def opt_record(size: int, ttl: int, options: list[EDNSOption]) -> RR:
    rr = RR.__new__(RR)
    rr.__dict__.update(_rname=_ROOT, _rtype=41, _rclass=size, _ttl=ttl, rdata=options,
                       edns_len=size, edns_ver=(ttl >> 16) & 0xFF, edns_rcode=(ttl >> 24) & 0xFF)
    return rr


def parse_query(data: bytes, qend: int) -> DNSRecord | None:
    """The query of a packet the hot-path key parser accepted (``qend`` from it), or None
    when a label needs escaping in text form (the general parser then decides)."""
    labels: list[bytes] = []
    pos = 12
    while True:
        n = data[pos]
        if n == 0:
            break
        label = data[pos + 1 : pos + 1 + n]
        if not _PLAIN_LABEL.match(label):
            return None
        labels.append(label)
        pos += 1 + n
    qtype, qclass = _HHH.unpack_from(data, qend)
    ar: list[RR] = []
    rest = qend + 4
    if rest < len(data):  # one OPT record (the key parser checked its shape)
        size, ttl, rdlen = struct.unpack_from("!HIH", data, rest + 3)
        options = []
        opt, end = rest + 11, rest + 11 + rdlen
        while opt < end:
            code, length = _HHH.unpack_from(data, opt)
            option = EDNSOption.__new__(EDNSOption)
            option.__dict__.update(_code=code, _data=data[opt + 4 : opt + 4 + length])
            options.append(option)
            opt += 4 + length
        ar.append(opt_record(size, ttl, options))
    bitmap = (data[2] << 8) | data[3]
    head = header((data[0] << 8) | data[1], bitmap, 1, len(ar))
    return record(head, [question(DNSLabel(tuple(labels)), qtype, qclass)], ar)


@lru_cache(maxsize=65536)
def label(name: str) -> DNSLabel:
    """A DNSLabel for a name (cached: parsing text labels goes through IDNA encoding, which
    for an absolute name of plain ASCII labels gives back the same bytes: split directly)."""
    if _PLAIN_NAME.match(name):
        return DNSLabel(tuple(name[:-1].encode("ascii").split(b".")))
    return DNSLabel(name)


# An absolute name of labels of 1-63 letters, digits, '-' or '_' (no escapes, no IDNA).
_PLAIN_NAME = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)+\Z")


@lru_cache(maxsize=65536)
def a(ip: str) -> A:
    """Shared A rdata for an address (rdata objects are never modified once built)."""
    return A(ip)


@lru_cache(maxsize=65536)
def aaaa(ip: str) -> AAAA:
    return AAAA(ip)


@lru_cache(maxsize=65536)
def ptr(target: str) -> PTR:
    """Shared PTR rdata for a target name."""
    rd = PTR.__new__(PTR)
    rd.__dict__["_label"] = label(target)
    return rd


def srv(priority: int, weight: int, port: int, target: str) -> SRV:
    """SRV rdata for dnsd's own values (the target's label is cached)."""
    rd = SRV.__new__(SRV)
    rd.__dict__.update(_priority=priority, _weight=weight, _port=port, _target=label(target))
    return rd


def rr(rname: str | DNSLabel, rtype: int = 1, rclass: int = 1, ttl: int = 0, rdata: object = None) -> RR:
    """``dnslib.RR(...)`` for dnsd's own, known-good values, without the setters' checks."""
    record = RR.__new__(RR)
    record.__dict__.update(_rname=rname if isinstance(rname, DNSLabel) else label(rname),
                           _rtype=rtype, _rclass=rclass, _ttl=ttl, rdata=rdata)
    return record
