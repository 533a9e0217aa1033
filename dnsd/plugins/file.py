"""file: serves zones authoritatively from RFC 1035 zone files.

Syntax::

    file DBFILE [ZONES...] {
        reload DURATION         # default 1m; 0 disables
        fallthrough [ZONES...]
    }

``DBFILE`` is read relative to the process's working directory, then relative to the
Corefile's directory.  ``ZONES`` default to the server block's zones; the file is parsed once
per zone (with that zone as ``$ORIGIN``).  The directive may be repeated for other files.
Every ``reload`` interval the file is checked (modification time, size, inode) and, if it
changed, parsed again; the new data replaces the old only when the SOA serial differs.  A
broken new file is logged and the old zone keeps serving.

Answers follow CoreDNS: AA set; positive answers carry the apex NS RRset in the authority
section (and A/AAAA of in-zone MX/SRV targets in the additional section); NODATA and NXDOMAIN
carry the SOA (TTL ``min(SOA TTL, SOA minimum)``); CNAMEs are chased inside the zone; wildcards
follow RFC 4592; names at or below a delegation get a referral (AA clear, glue in additional);
AXFR/IXFR are REFUSED here; the ``transfer`` plugin serves them (``Zone.transfer_records``).
``fallthrough`` passes NXDOMAIN answers on to the next plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from dnslib import (
    AAAA,
    CAA,
    CNAME,
    MX,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RD,
    RDMAP,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSLabel,
    DNSRecord,
)

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.address import normalize_zone, reverse_zones_for_cidr
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity, duration_arg
from dnsd.request import Request, error_reply, make_reply
from dnsd.wire import express

log = logging.getLogger("dnsd")

DEFAULT_RELOAD = 60.0
MAX_CNAME_HOPS = 8
MAX_INCLUDE_DEPTH = 7
MAX_TTL = 2**31 - 1

T_A, T_NS, T_CNAME, T_SOA, T_MX, T_SRV, T_AAAA, T_DS = 1, 2, 5, 6, 15, 33, 28, 43
T_AXFR, T_IXFR, T_DNAME = 252, 251, 39


# --------------------------------------------------------------------------- zone file parsing


class ZoneFileError(Exception):
    """A zone file that cannot be used; ``str()`` names the file, the line and the problem."""


@dataclass(slots=True)
class _Tok:
    text: str  # raw text, escapes kept, quotes removed
    quoted: bool = False


_TTL_PART = re.compile(r"(\d+)([smhdwSMHDW]?)")
_TTL_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TYPE_NUM = re.compile(r"TYPE(\d{1,5})", re.IGNORECASE)
_CLASSES = {"IN", "CH", "CS", "HS"}


def _entries(text: str, where: str) -> Iterator[tuple[int, bool, list[_Tok]]]:
    """Split zone text into entries: (line number, owner omitted, tokens).

    Comments are dropped, parentheses join lines, quoted strings become one token.
    """
    i, n, line = 0, len(text), 1
    depth = 0
    toks: list[_Tok] = []
    start, blank_owner, line_start = 1, False, True
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            if depth == 0:
                if toks:
                    yield start, blank_owner, toks
                toks = []
                line_start = True
            continue
        if line_start and depth == 0:
            blank_owner = c in " \t"
            start = line
            line_start = False
        if c in " \t\r":
            i += 1
        elif c == ";":
            while i < n and text[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ZoneFileError(f"{where} line {line}: unbalanced ')'")
            i += 1
        elif c == '"':
            j = i + 1
            buf = []
            while j < n and text[j] != '"':
                if text[j] == "\n":
                    raise ZoneFileError(f"{where} line {line}: unterminated quoted string")
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j : j + 2])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                raise ZoneFileError(f"{where} line {line}: unterminated quoted string")
            toks.append(_Tok("".join(buf), True))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\n;()"':
                j += 2 if text[j] == "\\" and j + 1 < n and text[j + 1] != "\n" else 1
            toks.append(_Tok(text[i:j]))
            i = j
    if depth > 0:
        raise ZoneFileError(f"{where} line {start}: unbalanced '('")
    if toks:
        yield start, blank_owner, toks


def _unescape(text: str) -> bytes:
    """Decode RFC 1035 escapes (``\\DDD`` and ``\\X``) into bytes."""
    if "\\" not in text:
        return text.encode()
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            digits = text[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                value = int(digits)
                if value > 255:
                    raise ValueError(f"bad escape '\\{digits}'")
                out.append(value)
                i += 4
            else:
                out += text[i + 1].encode()
                i += 2
        else:
            out += c.encode()
            i += 1
    return bytes(out)


def _split_name(text: str) -> tuple[list[bytes], bool]:
    """Labels of a presentation-format name and whether it is absolute (ends in a dot)."""
    if text == ".":
        return [], True
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == ".":
            if not cur:
                raise ValueError(f"empty label in name '{text}'")
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    absolute = not cur
    if cur:
        parts.append("".join(cur))
    return [_unescape(p) for p in parts], absolute


def name_key(label: DNSLabel) -> str:
    """The dictionary key of a name: its text form (as the engine shows query names), lower-case."""
    return str(label).lower()


def _parent(key: str) -> str:
    dot = key.find(".")
    return key[dot + 1 :] or "."


def _in_zone(key: str, origin: str) -> bool:
    return origin == "." or key == origin or key.endswith("." + origin)


class _Parser:
    """Turns zone file text into RRs (with the line each came from)."""

    def __init__(self, origin: str, path: str) -> None:
        try:
            self.origin = DNSLabel(_split_name(origin)[0])
        except ValueError as exc:  # e.g. ``file db a..b``: a Corefile error, not a crash
            raise ZoneFileError(f"{path}: bad origin name '{origin}': {exc}") from None
        self.path = path
        self.records: list[tuple[RR, int]] = []
        self.default_ttl: int | None = None
        self.last_ttl: int | None = None
        self.owner: DNSLabel | None = None

    def parse_file(self, path: str, depth: int = 0) -> None:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                text = fh.read()
        except OSError as exc:
            raise ZoneFileError(f'cannot read zone file "{path}": {exc.strerror or exc}') from None
        self.parse_text(text, path, depth)

    def parse_text(self, text: str, where: str, depth: int = 0) -> None:
        for line, blank_owner, toks in _entries(text, f'zone file "{where}"'):
            try:
                self._entry(line, blank_owner, toks, where, depth)
            except ZoneFileError:
                raise
            except (ValueError, IndexError, TypeError, UnicodeError) as exc:
                msg = str(exc) or type(exc).__name__
                if isinstance(exc, IndexError):
                    msg = "missing record data"
                raise ZoneFileError(f'zone file "{where}" line {line}: {msg}') from None

    def _name(self, tok: _Tok, origin: DNSLabel | None = None) -> DNSLabel:
        origin = self.origin if origin is None else origin
        if tok.text == "@":
            return origin
        labels, absolute = _split_name(tok.text)
        if not absolute:
            labels = labels + list(origin.label)
        for lab in labels:
            if len(lab) > 63:
                raise ValueError(f"label too long in name '{tok.text}'")
        if sum(len(lab) + 1 for lab in labels) + 1 > 255:
            raise ValueError(f"name too long: '{tok.text}'")
        return DNSLabel(labels)

    def _entry(self, line: int, blank_owner: bool, toks: list[_Tok], where: str, depth: int) -> None:
        first = toks[0].text
        if not toks[0].quoted and first.startswith("$"):
            self._directive(first.upper(), toks[1:], where, depth)
            return
        if blank_owner:
            if self.owner is None:
                raise ValueError("record without an owner name")
            owner = self.owner
        else:
            owner = self._name(toks.pop(0))
            self.owner = owner
        ttl: int | None = None
        seen_class = False
        while toks:
            word = toks[0].text
            if ttl is None and _TTL_PART.match(word) and _ttl_value(word) is not None:
                ttl = _ttl_value(word)
            elif not seen_class and word.upper() in _CLASSES:
                if word.upper() != "IN":
                    raise ValueError(f"class {word.upper()} is not supported (only IN)")
                seen_class = True
            else:
                break
            toks.pop(0)
        if not toks:
            raise ValueError("missing record type")
        type_name = toks.pop(0).text.upper()
        rtype = _type_number(type_name)
        if ttl is None:
            ttl = self.default_ttl if self.default_ttl is not None else self.last_ttl
            if ttl is None:
                ttl = 3600
        else:
            self.last_ttl = ttl
        rdata = self._rdata(type_name, rtype, toks)
        self.records.append((RR(owner, rtype, 1, ttl, rdata), line))

    def _directive(self, word: str, args: list[_Tok], where: str, depth: int) -> None:
        if word == "$ORIGIN":
            if len(args) != 1:
                raise ValueError("$ORIGIN needs one name")
            self.origin = self._name(args[0])
        elif word == "$TTL":
            if len(args) != 1 or _ttl_value(args[0].text) is None:
                raise ValueError("$TTL needs one TTL value")
            self.default_ttl = _ttl_value(args[0].text)
        elif word == "$INCLUDE":
            if not 1 <= len(args) <= 2:
                raise ValueError("$INCLUDE needs a file name and an optional origin")
            if depth >= MAX_INCLUDE_DEPTH:
                raise ValueError("too deeply nested $INCLUDE")
            path = args[0].text
            if not os.path.isabs(path):
                path = os.path.join(os.path.dirname(where), path)
            saved = self.origin, self.owner
            if len(args) == 2:
                self.origin = self._name(args[1])
            self.parse_file(path, depth + 1)
            self.origin, self.owner = saved
        else:
            raise ValueError(f"unsupported directive {word}")

    def _rdata(self, type_name: str, rtype: int, args: list[_Tok]) -> RD:
        try:
            return self._rdata_of(type_name, rtype, args)
        except ValueError as exc:
            raise ValueError(f"bad {type_name} record: {exc}") from None

    def _rdata_of(self, type_name: str, rtype: int, args: list[_Tok]) -> RD:
        if args and args[0].text == "\\#" and not args[0].quoted:
            return _generic_rdata(args[1:])
        texts = [t.text for t in args]

        def count(lo: int, hi: int | None = None) -> None:
            hi = lo if hi is None else hi
            if not lo <= len(args) <= hi:
                raise ValueError(f"expected {lo}{'' if hi == lo else '+'} fields, got {len(args)}")

        if rtype == T_A:
            count(1)
            return A(str(ipaddress.IPv4Address(texts[0])))
        if rtype == T_AAAA:
            count(1)
            return AAAA(tuple(ipaddress.IPv6Address(texts[0]).packed))
        if rtype in (T_NS, T_CNAME, 12):  # NS, CNAME, PTR
            count(1)
            cls = {T_NS: NS, T_CNAME: CNAME, 12: PTR}[rtype]
            return cls(self._name(args[0]))
        if rtype == T_DNAME:
            count(1)
            return RD(_wire_name(self._name(args[0])))
        if rtype == T_MX:
            count(2)
            return MX(self._name(args[1]), _uint(texts[0], 16, "preference"))
        if rtype == T_SRV:
            count(4)
            return SRV(_uint(texts[0], 16, "priority"), _uint(texts[1], 16, "weight"),
                       _uint(texts[2], 16, "port"), self._name(args[3]))
        if rtype == T_SOA:
            count(7)
            serial = _uint(texts[2], 32, "serial")
            times = [_ttl_value(t) for t in texts[3:]]
            if any(t is None for t in times):
                raise ValueError("bad SOA timer value")
            return SOA(self._name(args[0]), self._name(args[1]), (serial, *times))
        if rtype in (16, 99):  # TXT, SPF
            if not args:
                raise ValueError(f"{type_name} record needs at least one string")
            strings = [_unescape(t) for t in texts]
            if any(len(s) > 255 for s in strings):
                raise ValueError("character string longer than 255 bytes")
            return TXT(strings)
        if rtype == 257:  # CAA
            count(3)
            flags = _uint(texts[0], 8, "flags")
            value = _unescape(texts[2]).decode("utf-8", "replace")
            return CAA(flags, texts[1], value)
        cls = RDMAP.get(type_name)
        if cls is None:
            raise ValueError(f"record type {type_name} needs RFC 3597 (\\# LEN HEX) data")
        try:
            return cls.fromZone(texts, self.origin)
        except Exception as exc:  # dnslib raises many types for bad data
            raise ValueError(str(exc) or type(exc).__name__) from None


def _ttl_value(text: str) -> int | None:
    """A TTL (``3600``, ``1h30m``, ``2d``) in seconds, or None if ``text`` is not one."""
    pos, total = 0, 0
    if text.isdigit():
        total = int(text)
    else:
        for m in _TTL_PART.finditer(text):
            if m.start() != pos:
                return None
            total += int(m.group(1)) * _TTL_UNIT[m.group(2).lower()]
            pos = m.end()
        if pos != len(text) or pos == 0:
            return None
    return total if total <= MAX_TTL else None


def _uint(text: str, bits: int, what: str) -> int:
    if not text.isdigit() or int(text) >= 1 << bits:
        raise ValueError(f"bad {what} '{text}'")
    return int(text)


def _type_number(name: str) -> int:
    m = _TYPE_NUM.fullmatch(name)
    if m:
        value = int(m.group(1))
        if not 0 < value < 65536:
            raise ValueError(f"bad record type '{name}'")
        return value
    value = QTYPE.reverse.get(name)
    if value is None or value in (T_AXFR, T_IXFR, 255, 41):  # not real data types (ANY, OPT)
        raise ValueError(f"unknown record type '{name}'")
    return int(value)


def _generic_rdata(args: list[_Tok]) -> RD:
    if not args:
        raise ValueError("\\# needs a length")
    length = _uint(args[0].text, 16, "rdata length")
    try:
        data = bytes.fromhex("".join(t.text for t in args[1:]))
    except ValueError:
        raise ValueError("bad hex in \\# rdata") from None
    if len(data) != length:
        raise ValueError(f"\\# rdata is {len(data)} bytes, not {length}")
    return RD(data)


def _wire_name(label: DNSLabel) -> bytes:
    return b"".join(bytes([len(p)]) + p for p in label.label) + b"\x00"


# --------------------------------------------------------------------------- the zone


@dataclass(slots=True)
class Answer:
    """The outcome of one zone lookup."""

    rcode: int
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    aa: bool = True


def _copy(rr: RR, owner: DNSLabel | None = None) -> RR:
    """A fresh RR (later plugins may edit what we return; the zone must stay intact)."""
    new = RR.__new__(RR)
    new.__dict__.update(rr.__dict__)  # a shallow copy, without RR.__init__'s range checks
    if owner is not None:
        new._rname = owner
    return new


class Zone:
    """One loaded zone, indexed for dictionary lookups."""

    def __init__(self, origin: str, records: list[tuple[RR, int]], path: str) -> None:
        self.origin = origin
        self.nodes: dict[str, dict[int, list[RR]]] = {}
        seen: set[tuple[str, int, str]] = set()
        soa: RR | None = None
        for rr, _line in records:
            key = name_key(rr.rname)
            if rr.rtype == T_SOA:
                if key != origin or soa is not None:
                    continue  # one SOA, at the apex
                soa = rr
            ident = (key, rr.rtype, repr(rr.rdata))
            if ident in seen:
                continue
            seen.add(ident)
            self.nodes.setdefault(key, {}).setdefault(rr.rtype, []).append(rr)
        if soa is None:
            raise ZoneFileError(f'zone file "{path}" has no SOA record for origin {origin}')
        self.soa = soa
        self.serial: int = soa.rdata.times[0]
        self.neg_soa = RR(soa.rname, T_SOA, 1, min(soa.ttl, soa.rdata.times[4]), soa.rdata)
        self.ns: list[RR] = self.nodes[origin].get(T_NS, [])
        names: set[str] = {origin}
        for key in self.nodes:
            if not _in_zone(key, origin):
                continue  # out-of-zone data: only ever used as glue
            while key not in names:
                names.add(key)
                key = _parent(key)
        self.names = frozenset(names)
        self.cuts = frozenset(k for k in names if k != origin and T_NS in self.nodes.get(k, {}))

    def __len__(self) -> int:
        return sum(len(rrs) for node in self.nodes.values() for rrs in node.values())

    def transfer_records(self, serial: int = 0) -> Iterator[RR]:
        """The zone as an AXFR streams it (CoreDNS's order): the SOA, the apex NS RRset, every
        other in-zone record, name by name in canonical order, then the SOA again; the SOA
        alone for an IXFR from the current serial.  (Read by the ``transfer`` plugin.)"""
        yield self.soa
        if serial and serial == self.serial:
            return
        yield from self.ns
        for key in sorted(self.nodes, key=lambda k: k.split(".")[::-1]):
            if not _in_zone(key, self.origin):
                continue  # out-of-zone data (glue only)
            for rtype, rrs in sorted(self.nodes[key].items()):
                if key != self.origin or rtype not in (T_SOA, T_NS):
                    yield from rrs
        yield self.soa

    def lookup(self, qname: str, owner: DNSLabel, qtype: int) -> Answer:
        """Answer ``qname`` (lower-case key; ``owner`` is the name as asked) for ``qtype``."""
        chain: list[RR] = []
        visited: set[str] = set()
        name, label = qname, owner
        for _ in range(MAX_CNAME_HOPS + 1):
            result, target = self._step(name, label, qtype)
            if target is None:
                if not chain:
                    return result
                if not result.aa:  # the chain leads below a zone cut: stop there
                    return Answer(RCODE.NOERROR, chain, [_copy(r) for r in self.ns])
                result.answer = chain + result.answer
                return result
            chain.extend(result.answer)
            visited.add(name)
            key = name_key(target)
            if key in visited or not _in_zone(key, self.origin):
                break
            name, label = key, target
        return Answer(RCODE.NOERROR, chain, [_copy(r) for r in self.ns])

    def _step(self, name: str, label: DNSLabel, qtype: int) -> tuple[Answer, DNSLabel | None]:
        """One name: (its answer, CNAME target to chase or None)."""
        if self.cuts:
            cut = self._cut(name, qtype)
            if cut is not None:
                ns = self.nodes[cut][T_NS]
                return Answer(RCODE.NOERROR, [], [_copy(r) for r in ns], self._glue(ns), aa=False), None
        if name in self.names:
            node = self.nodes.get(name)
            if node is None:  # empty non-terminal
                return self._nodata(), None
            return self._from_node(node, name, label, qtype)
        wild = self._wildcard(name)
        if wild is not None:
            return self._from_node(wild, "", label, qtype)
        return Answer(RCODE.NXDOMAIN, [], [_copy(self.neg_soa)]), None

    def _from_node(self, node: dict[int, list[RR]], name: str, label: DNSLabel,
                   qtype: int) -> tuple[Answer, DNSLabel | None]:
        if qtype != T_CNAME:
            cname = node.get(T_CNAME)
            if cname:
                return Answer(RCODE.NOERROR, [_copy(cname[0], label)]), cname[0].rdata.label
        rrs = node.get(qtype)
        if not rrs:
            return self._nodata(), None
        answer = [_copy(r, label) for r in rrs]
        if name == self.origin and qtype == T_NS:
            return Answer(RCODE.NOERROR, answer, [], self._glue(rrs)), None
        return Answer(RCODE.NOERROR, answer, [_copy(r) for r in self.ns], self._additional(rrs)), None

    def _nodata(self) -> Answer:
        return Answer(RCODE.NOERROR, [], [_copy(self.neg_soa)])

    def _cut(self, name: str, qtype: int) -> str | None:
        """The delegation point at or above ``name`` nearest the apex, if any."""
        found = None
        key = name
        while key != self.origin and key != ".":
            if key in self.cuts and not (qtype == T_DS and key == name):
                found = key
            key = _parent(key)
        return found

    def _wildcard(self, name: str) -> dict[int, list[RR]] | None:
        """The wildcard node at ``name``'s closest encloser (RFC 4592), if there is one."""
        key = _parent(name)
        while key not in self.names:
            if key == "." or key == self.origin:
                return None
            key = _parent(key)
        return self.nodes.get("*." + key if key != "." else "*.")

    def _addresses(self, target: DNSLabel) -> list[RR]:
        node = self.nodes.get(name_key(target))
        if node is None:
            return []
        return [_copy(r) for t in (T_A, T_AAAA) for r in node.get(t, ())]

    def _glue(self, ns: list[RR]) -> list[RR]:
        out: list[RR] = []
        done: set[str] = set()
        for rr in ns:
            key = name_key(rr.rdata.label)
            if key not in done:
                done.add(key)
                out.extend(self._addresses(rr.rdata.label))
        return out

    def _additional(self, rrs: list[RR]) -> list[RR]:
        out: list[RR] = []
        for rr in rrs:
            if rr.rtype == T_MX:
                target = rr.rdata.label
            elif rr.rtype == T_SRV:
                target = rr.rdata.target
            else:
                continue
            if _in_zone(name_key(target), self.origin):
                out.extend(self._addresses(target))
        return out


def load_zone(path: str, origin: str) -> Zone:
    """Parse the zone file at ``path`` for ``origin``; raises ZoneFileError."""
    parser = _Parser(origin, path)
    parser.parse_file(path)
    return Zone(origin, parser.records, path)


def parse_zone(text: str, origin: str, where: str = "zone") -> Zone:
    """Parse zone file text (``where`` names it in errors); raises ZoneFileError."""
    parser = _Parser(origin, where)
    parser.parse_text(text, where)
    return Zone(origin, parser.records, where)


# --------------------------------------------------------------------------- the plugin


def _file_signature(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except ValueError:  # a NUL in the path: an OS error, as Go's os.Stat reports it
        raise OSError(errno.EINVAL, "invalid argument", path) from None
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclass
class ZoneFile:
    """One ``file`` directive: a zone file served for one or more origins."""

    path: str
    origins: list[str]
    reload: float = DEFAULT_RELOAD
    zones: dict[str, Zone | None] = field(default_factory=dict)
    signature: tuple[int, int, int] | None = None

    def load_all(self) -> dict[str, Zone]:
        """Parse the file for every origin (runs in a worker thread on reload)."""
        return {origin: load_zone(self.path, origin) for origin in self.origins}

    async def check(self) -> None:
        """Reload if the file changed and its SOA serial differs from the loaded one."""
        try:
            sig = _file_signature(self.path)
        except OSError as exc:
            if self.signature is not None:
                log.error("[ERROR] plugin/file: Failed to open zone file %s: %s", self.path, exc.strerror)
                self.signature = None
            return
        if sig == self.signature:
            return
        self.signature = sig
        for origin in self.origins:
            try:
                zone = await asyncio.to_thread(load_zone, self.path, origin)
            except ZoneFileError as exc:
                log.error("[ERROR] plugin/file: Parsing zone %s: %s", origin, exc)
                continue
            old = self.zones.get(origin)
            if old is not None and old.serial == zone.serial:
                continue
            self.zones[origin] = zone
            express.changed()  # (the old zone's replies leave the express lane)
            log.info("[INFO] plugin/file: Successfully reloaded zone %s in %s with %d SOA serial",
                     origin, self.path, zone.serial)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.reload)
            try:
                await self.check()
            except Exception:
                log.exception("[ERROR] plugin/file: reloading %s", self.path)


def zone_args(d: Directive, args: list[str], default: list[str]) -> list[str]:
    """Normalised zones from directive arguments (reverse CIDRs allowed), else ``default``."""
    if not args:
        return list(default)
    zones: list[str] = []
    for arg in args:
        if "/" in arg:
            try:
                zones.extend(reverse_zones_for_cidr(arg))
            except ValueError:
                raise d.error(f"invalid CIDR '{arg}'") from None
        else:
            zones.append(normalize_zone(arg))
    return zones


def covers(zones: list[str], name: str) -> bool:
    """Is ``name`` (lower-case FQDN) equal to or below one of ``zones``?"""
    return any(_in_zone(name, z) for z in zones)


def resolve_path(path: str, config_file: str) -> str:
    """``path`` as given if it exists (absolute or relative to the CWD), else relative to the
    Corefile's directory if it exists there, else as given."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(os.path.dirname(os.path.abspath(config_file)), path)
    return alt if os.path.exists(alt) else path


class Plugin(Base):
    name: ClassVar[str] = "file"
    repeatable: ClassVar[bool] = True

    def __init__(self, files: list[ZoneFile], fall: list[str] | None) -> None:
        self.files = files
        self.by_origin: dict[str, ZoneFile] = {o: f for f in files for o in f.origins}
        self.fall = fall  # None: no fallthrough
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        files: list[ZoneFile] = []
        fall: list[str] | None = None
        seen: set[str] = set()
        for d in directives:
            args = arity(d, 1)
            zf = ZoneFile(resolve_path(args[0], ctx.config_file), zone_args(d, args[1:], ctx.zones))
            for child in d.children:
                if child.name == "reload":
                    zf.reload = duration_arg(child, arity(child, 1, 1)[0])
                elif child.name == "fallthrough":
                    fall = zone_args(child, child.args, ["."])
                elif child.name == "upstream":
                    pass  # accepted and ignored, as in CoreDNS
                else:
                    raise child.error(f"unknown property '{child.name}'")
            for origin in zf.origins:
                if origin in seen:
                    raise d.error(f"zone {origin} is served by more than one file directive")
                seen.add(origin)
            _initial_load(d, zf)
            files.append(zf)
        return cls(files, fall)

    async def start(self) -> None:
        for zf in self.files:
            if zf.reload > 0:
                self._tasks.append(asyncio.get_running_loop().create_task(zf.run()))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def zone_for(self, name: str) -> tuple[str, ZoneFile] | None:
        """The longest of our origins that ``name`` is equal to or below."""
        key = name
        while True:
            zf = self.by_origin.get(key)
            if zf is not None:
                return key, zf
            if key == ".":
                return None
            key = _parent(key)

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        qname = req.qname_lower
        found = self.zone_for(qname)
        if found is None:
            return await next_(req)
        origin, zf = found
        if req.qtype in (T_AXFR, T_IXFR):
            return error_reply(req, RCODE.REFUSED)
        zone = zf.zones.get(origin)
        if zone is None:
            return error_reply(req, RCODE.SERVFAIL)
        q = req.msg.q
        owner = q.qname if q is not None else DNSLabel(req.qname)
        result = zone.lookup(qname, owner, req.qtype)
        if (result.rcode == RCODE.NXDOMAIN and not result.answer and self.fall is not None
                and covers(self.fall, qname)):
            return await next_(req)
        reply = make_reply(req, rcode=result.rcode, aa=result.aa)
        reply.rr = result.answer
        reply.auth = result.authority
        reply.ar = result.additional
        # Valid for the hot path until a reload replaces this zone object.
        zones = zf.zones
        reply.valid = express.lasting(lambda: zones.get(origin) is zone)  # type: ignore[attr-defined]
        return reply


def _initial_load(d: Directive, zf: ZoneFile) -> None:
    """Parse the file at setup: broken files are Corefile errors; a missing file is fatal only
    when reload is off (otherwise the zone answers SERVFAIL until the file appears)."""
    try:
        sig = _file_signature(zf.path)
    except OSError as exc:
        if zf.reload == 0:
            raise d.error(f'cannot open zone file "{zf.path}": {exc.strerror}') from None
        log.warning("[WARNING] plugin/file: Failed to open %s: %s: trying again in %gs",
                    zf.path, exc.strerror, zf.reload)
        zf.zones = dict.fromkeys(zf.origins)
        return
    try:
        zf.zones = dict(zf.load_all())
    except ZoneFileError as exc:
        raise d.error(str(exc)) from None
    zf.signature = sig


__all__ = ["Answer", "Plugin", "Zone", "ZoneFile", "ZoneFileError",
           "load_zone", "parse_zone"]
