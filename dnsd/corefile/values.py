"""Argument helpers shared by plugin setups: Go durations, bounded integers, arity checks."""

from __future__ import annotations

import re

from dnsd.corefile.ast import CorefileError, Directive

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``5s``, ``1m30s``, ``250ms``) in seconds; ValueError if malformed."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    sign = 1.0
    if text.startswith(("+", "-")):  # not ``text[:1] in "+-"``: "" is in every string
        sign = -1.0 if text[0] == "-" else 1.0
        pos = 1
    if pos >= len(text):
        raise ValueError(f"invalid duration {text!r}")
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return sign * total


def duration_arg(d: Directive, text: str, minimum: float = 0.0) -> float:
    """Parse a duration argument of ``d`` or raise a CorefileError at its line."""
    try:
        value = parse_duration(text)
    except ValueError:
        raise d.error(f"invalid duration '{text}'") from None
    if value < minimum:
        raise d.error(f"duration '{text}' must be at least {minimum:g}s")
    return value


def int_arg(d: Directive, text: str, lo: int | None = None, hi: int | None = None) -> int:
    """Parse an integer argument within [lo, hi] or raise a CorefileError at its line."""
    try:
        value = int(text, 10)
    except ValueError:
        raise d.error(f"invalid number '{text}'") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise d.error(f"'{text}' is out of range {bounds}")
    return value


def arity(d: Directive, lo: int, hi: int | None = None) -> list[str]:
    """Check ``d`` has between lo and hi arguments (hi None = no limit) and return them."""
    n = len(d.args)
    if n < lo or (hi is not None and n > hi):
        raise d.error(f"Wrong argument count or unexpected line ending after '{d.name}'")
    return d.args


def no_block(d: Directive) -> None:
    if d.children:
        raise d.error(f"unexpected block after '{d.name}'")


__all__ = ["CorefileError", "arity", "duration_arg", "int_arg", "no_block", "parse_duration"]
