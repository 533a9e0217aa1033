"""errors: logs errors raised while handling a query, and answers SERVFAIL for them.

Syntax::

    errors {
        consolidate DURATION REGEXP [LEVEL] [show_first]
    }

``consolidate`` counts the errors matching REGEXP and logs one summary line per DURATION
instead of every error (``show_first`` also logs the first one as it happens).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import ClassVar

from dnslib import RCODE, DNSRecord

from dnsd.chain import Next, SetupContext
from dnsd.chain import Plugin as Base
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import arity, duration_arg
from dnsd.request import Request, error_reply

log = logging.getLogger("dnsd")
LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}


@dataclass
class Consolidation:
    period: float
    pattern: re.Pattern[str]
    level: int = logging.ERROR
    show_first: bool = False
    count: int = 0
    window_start: float = 0.0


class Plugin(Base):
    name: ClassVar[str] = "errors"
    direct_role: ClassVar[str] = "pass"  # the direct path takes only queries that raise nothing

    def __init__(self, rules: list[Consolidation]) -> None:
        self.rules = rules

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        arity(d, 0, 0)
        rules: list[Consolidation] = []
        for child in d.children:
            if child.name != "consolidate":
                raise child.error(f"unknown property '{child.name}'")
            args = arity(child, 2, 4)
            period = duration_arg(child, args[0], minimum=1e-9)
            try:
                pattern = re.compile(args[1])
            except re.error as exc:
                raise child.error(f"invalid regexp '{args[1]}': {exc}") from None
            rule = Consolidation(period, pattern)
            for extra in args[2:]:
                if extra == "show_first":
                    rule.show_first = True
                elif extra in LEVELS:
                    rule.level = LEVELS[extra]
                else:
                    raise child.error(f"unknown consolidate option '{extra}'")
            rules.append(rule)
        return cls(rules)

    async def serve(self, req: Request, next_: Next) -> DNSRecord | None:
        try:
            return await next_(req)
        except Exception as exc:
            self.report(req, exc)
            return error_reply(req, RCODE.SERVFAIL)

    def report(self, req: Request, exc: Exception) -> None:
        text = f"{RCODE.SERVFAIL} {req.qname} {req.type_name}: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        for rule in self.rules:
            if rule.pattern.search(text):
                if now - rule.window_start >= rule.period:
                    if rule.count:
                        log.log(rule.level, "[%s] plugin/errors: %d errors like '%s' occurred in last %gs",
                                logging.getLevelName(rule.level), rule.count, rule.pattern.pattern, rule.period)
                    rule.window_start, rule.count = now, 0
                    if rule.show_first:
                        log.log(rule.level, "[%s] plugin/errors: %s", logging.getLevelName(rule.level), text)
                rule.count += 1
                return
        log.error("[ERROR] plugin/errors: %s", text)
