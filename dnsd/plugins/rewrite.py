"""rewrite: change the question before the plugins below see it, and undo it in the reply.

Syntax (the directive may be repeated; rules apply in order)::

    rewrite [continue|stop] name [exact|prefix|suffix|substring|regex] FROM TO [answer auto]
    rewrite [continue|stop] name [MATCH] FROM TO answer name FROM TO [answer value FROM TO]
    rewrite [continue|stop] type FROM TO
    rewrite [continue|stop] class FROM TO
    rewrite [continue|stop] {
        name [MATCH] FROM TO
        answer name FROM TO
        answer value FROM TO
    }

Names are compared lower-case and fully qualified.  ``regex`` FROM is a regular expression
searched in the name; ``{1}``, ``{2}``... in TO are its groups.  After a matching ``stop`` rule
(the default) no more rules run; after ``continue`` the following rules see the new question.
The reply always carries the client's own question.  ``answer auto`` maps answer owner names
and CNAME/SRV/MX/NS/PTR targets back through the reverse of the rule; ``answer name`` /
``answer value`` apply a regex rewrite to owner names / targets.  Other fields (edns0, ttl,
rcode, cname) are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from dnslib import CLASS, MX, QTYPE, RCODE, RR, SRV, DNSHeader, DNSLabel, DNSRecord
from dnslib import CNAME as CNAMEData

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.request import Request, error_reply

MATCH_TYPES = ("exact", "prefix", "suffix", "substring", "regex")
UNSUPPORTED = ("edns0", "ttl", "rcode", "cname")
_GROUP = re.compile(r"\{(\d+)\}")

Mapping = Callable[[str], "str | None"]


def fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def expand(template: str, match: re.Match[str]) -> str:
    """Replace ``{N}`` in ``template`` with group N of ``match`` (unknown groups: empty)."""
    groups = [match.group(0), *match.groups()]

    def group(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return (groups[i] or "") if i < len(groups) else ""

    return _GROUP.sub(group, template)


def valid_name(name: str) -> bool:
    if len(name) > 255 or not name.endswith("."):
        return False
    labels = name[:-1].split(".") if name != "." else []
    return all(0 < len(label) <= 63 for label in labels)


@dataclass
class RegexMap:
    """``answer name|value FROM TO``: a regex rewrite of names in the reply."""

    pattern: re.Pattern[str]
    to: str

    def __call__(self, name: str) -> str | None:
        m = self.pattern.search(name)
        return fqdn(expand(self.to, m)) if m else None


@dataclass
class NameRule:
    """``name [MATCH] FROM TO`` with its optional reply rewriting."""

    kind: str
    frm: str
    to: str
    stop: bool = True
    auto: bool = False
    answer_names: list[RegexMap] = field(default_factory=list)
    answer_values: list[RegexMap] = field(default_factory=list)
    pattern: re.Pattern[str] | None = None

    def rewrite(self, name: str) -> str | None:
        """The new name for lower-case FQDN ``name``, or None if the rule does not match."""
        frm, to = self.frm, self.to
        if self.kind == "exact":
            return to if name == frm else None
        if self.kind == "prefix":
            return fqdn(to + name[len(frm):]) if name.startswith(frm) else None
        if self.kind == "suffix":
            return fqdn(name[: len(name) - len(frm)] + to) if name.endswith(frm) else None
        if self.kind == "substring":
            return fqdn(name.replace(frm, to)) if frm in name else None
        assert self.pattern is not None
        m = self.pattern.search(name)
        return fqdn(expand(to, m)) if m else None

    def reverse(self, name: str, rewritten: str, original: str) -> str | None:
        """``answer auto``: map a name of the rewritten space back to the client's."""
        frm, to = self.frm, self.to
        if name == rewritten:
            return original
        if self.kind == "prefix" and name.startswith(to):
            return fqdn(frm + name[len(to):])
        if self.kind == "suffix" and name.endswith(to):
            return fqdn(name[: len(name) - len(to)] + frm)
        if self.kind == "substring" and to and to in name:
            return fqdn(name.replace(to, frm))
        return None


@dataclass
class FieldRule:
    """``type FROM TO`` or ``class FROM TO``."""

    field: str
    frm: int
    to: int
    stop: bool = True


Rule = NameRule | FieldRule


@dataclass
class Applied:
    """What the rules changed for one query, to undo in the reply (maps run in order)."""

    asked: str = ""
    name_maps: list[Mapping] = field(default_factory=list)
    value_maps: list[Mapping] = field(default_factory=list)


# --- parsing -------------------------------------------------------------------------------

def _regex(d: Directive, text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise d.error(f"invalid regex pattern '{text}': {exc}") from None


def _answer_options(d: Directive, rule: NameRule, words: list[str]) -> None:
    while words:
        if words[0] != "answer" or len(words) < 2:
            raise d.error(f"unexpected argument '{words[0]}' in rewrite rule")
        what = words[1]
        if what == "auto":
            rule.auto = True
            del words[:2]
        elif what in ("name", "value") and len(words) >= 4:
            target = rule.answer_names if what == "name" else rule.answer_values
            target.append(RegexMap(_regex(d, words[2]), words[3]))
            del words[:4]
        else:
            raise d.error(f"invalid answer rewrite rule: 'answer {' '.join(words[1:4])}'")


def parse_rule(d: Directive, words: list[str], stop: bool) -> Rule:
    """One rule from the words after ``[continue|stop]``."""
    if not words:
        raise d.error("Wrong argument count or unexpected line ending after 'rewrite'")
    fieldname, rest = words[0], words[1:]
    if fieldname in ("type", "class"):
        if len(rest) != 2:
            raise d.error(f"{fieldname} rule: expected FROM TO")
        table = QTYPE if fieldname == "type" else CLASS
        codes = []
        for text in rest:
            code = table.reverse.get(text.upper())
            if code is None:
                raise d.error(f"invalid {fieldname} '{text}'")
            codes.append(code)
        return FieldRule(fieldname, codes[0], codes[1], stop)
    if fieldname in UNSUPPORTED:
        raise d.error(f"rewrite field '{fieldname}' is not supported by dnsd")
    if fieldname != "name":
        raise d.error(f"invalid field type '{fieldname}' for rewrite rule")
    kind = "exact"
    if rest and rest[0] in MATCH_TYPES:
        kind, rest = rest[0], rest[1:]
    if len(rest) < 2:
        raise d.error("name rule: expected FROM TO")
    frm, to, options = rest[0], rest[1], rest[2:]
    rule = NameRule(kind, frm.lower(), to.lower(), stop)
    if kind in ("exact", "suffix"):
        rule.frm, rule.to = fqdn(frm), fqdn(to)
    elif kind == "regex":
        rule.pattern = _regex(d, frm)
        rule.to = to
    _answer_options(d, rule, options)
    return rule


def parse_directive(d: Directive) -> list[Rule]:
    words = list(d.args)
    stop = True
    if words and words[0] in ("continue", "stop"):
        stop = words.pop(0) == "stop"
    if not d.children:
        return [parse_rule(d, words, stop)]
    if words:
        raise d.error("rewrite block: unexpected arguments before '{'")
    rules: list[Rule] = []
    for child in d.children:
        line = [child.name, *child.args]
        if child.name == "answer":
            if not rules or not isinstance(rules[-1], NameRule):
                raise child.error("'answer' must follow a name rule")
            _answer_options(child, rules[-1], line)
        else:
            rules.append(parse_rule(child, line, stop))
    if not rules:
        raise d.error("rewrite block holds no rule")
    return rules


# --- serving -------------------------------------------------------------------------------

def _with_question(req: Request, name: str, qtype: int, qclass: int) -> Request:
    """A copy of ``req`` asking another question, keeping header bits and EDNS."""
    new = req.with_name(name, qtype)
    h = req.msg.header
    new.msg.header = DNSHeader(id=h.id, bitmap=h.bitmap)
    new.msg.questions[0].qclass = qclass
    new.qclass = qclass
    new.msg.ar = [rr for rr in req.msg.ar if rr.rtype == QTYPE.OPT]
    if req.on_done is None:
        req.on_done = []
    new.on_done = req.on_done
    return new


def _map_name(name: str, maps: list[Mapping], asked: str = "") -> str | None:
    """Run ``name`` through every map in turn; None if none of them changed it."""
    lower = current = name.lower()
    for m in maps:
        out = m(current)
        if out is not None:
            current = out
    if current == lower:
        return None
    return asked if asked and current == asked.lower() else current


def _new_rdata(rr: RR, maps: list[Mapping], asked: str) -> object | None:
    data = rr.rdata
    if rr.rtype in (QTYPE.CNAME, QTYPE.NS, QTYPE.PTR, QTYPE.DNAME) and isinstance(data, CNAMEData):
        new = _map_name(str(data.label), maps, asked)
        return type(data)(new) if new else None
    if rr.rtype == QTYPE.MX and isinstance(data, MX):
        new = _map_name(str(data.label), maps, asked)
        return MX(new, data.preference) if new else None
    if rr.rtype == QTYPE.SRV and isinstance(data, SRV):
        new = _map_name(str(data.target), maps, asked)
        return SRV(data.priority, data.weight, data.port, new) if new else None
    return None


def revert_records(records: list[RR], applied: Applied) -> list[RR]:
    """Copies of ``records`` with owner names and targets mapped back."""
    out = []
    for rr in records:
        if rr.rtype == QTYPE.OPT:
            out.append(rr)
            continue
        owner = _map_name(str(rr.rname), applied.name_maps, applied.asked)
        rdata = _new_rdata(rr, applied.value_maps, applied.asked) if applied.value_maps else None
        if owner is None and rdata is None:
            out.append(rr)
            continue
        out.append(RR(DNSLabel(owner) if owner else rr.rname, rr.rtype, rr.rclass, rr.ttl,
                      rdata if rdata is not None else rr.rdata))
    return out


class Plugin(Base):
    name: ClassVar[str] = "rewrite"
    repeatable: ClassVar[bool] = True

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        return cls([rule for d in directives for rule in parse_directive(d)])

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        name, qtype, qclass = req.qname_lower, req.qtype, req.qclass
        applied = Applied(asked=req.qname)
        for rule in self.rules:
            if isinstance(rule, NameRule):
                new = rule.rewrite(name)
                if new is None:
                    continue
                self._reply_maps(rule, applied, new, name)
                name = new
            else:
                current = qtype if rule.field == "type" else qclass
                if current != rule.frm:
                    continue
                if rule.field == "type":
                    qtype = rule.to
                else:
                    qclass = rule.to
            if rule.stop:
                break
        if (name, qtype, qclass) == (req.qname_lower, req.qtype, req.qclass):
            return await next_(req)
        if not valid_name(name):
            return error_reply(req, RCODE.SERVFAIL)
        reply = await next_(_with_question(req, name, qtype, qclass))
        if reply is None:
            return None
        reply.questions = [req.msg.questions[0]] if req.msg.questions else reply.questions
        if applied.name_maps:
            reply.rr = revert_records(reply.rr, applied)
            reply.ar = revert_records(reply.ar, applied)
        elif applied.value_maps:
            reply.rr = revert_records(reply.rr, applied)
        return reply

    @staticmethod
    def _reply_maps(rule: NameRule, applied: Applied, new: str, old: str) -> None:
        """Prepend this rule's reply mappings: later rules are undone first."""
        maps: list[Mapping] = []
        if rule.auto:
            maps.append(lambda n: rule.reverse(n, new, old))
        applied.name_maps[:0] = [*maps, *rule.answer_names]
        applied.value_maps[:0] = [*maps, *rule.answer_values]
