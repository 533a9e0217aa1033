"""Label and field selectors with the API server's syntax and semantics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_RE_EXISTS = re.compile(rf"^({_KEY})$")
_RE_NOT_EXISTS = re.compile(rf"^!\s*({_KEY})$")
_RE_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_RE_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_RE_NUMERIC = re.compile(rf"^({_KEY})\s*([<>])\s*(-?[0-9]+)$")
_RE_VALUE = re.compile(rf"^{_VALUE}$")


@dataclass(frozen=True)
class Requirement:
    """One label requirement: `key op values`."""

    key: str
    op: str  # "exists", "!exists", "=", "!=", "in", "notin", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number = int(value or "")
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


class LabelSelector:
    """A parsed `labelSelector` query parameter (all requirements ANDed)."""

    def __init__(self, requirements: tuple[Requirement, ...] = ()) -> None:
        self.requirements = requirements

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse selector syntax; raises ApiError(400) on malformed input."""
        if text is None or not text.strip():
            return cls()
        reqs: list[Requirement] = []
        for raw in _split_top_level(text):
            part = raw.strip()
            reqs.append(_parse_requirement(part, text))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with `labels` is selected."""
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements


def _parse_requirement(part: str, whole: str) -> Requirement:
    def bad() -> ApiError:
        return ApiError(400, f"unable to parse requirement: {part!r} in selector {whole!r}")

    if not part:
        raise bad()
    if m := _RE_NOT_EXISTS.match(part):
        return Requirement(m.group(1), "!exists")
    if m := _RE_EQUALITY.match(part):
        op = "!=" if m.group(2) == "!=" else "="
        return Requirement(m.group(1), op, (m.group(3),))
    if m := _RE_SET.match(part):
        values = tuple(v.strip() for v in m.group(3).split(","))
        if not values or any(not _RE_VALUE.match(v) for v in values) or values == ("",):
            raise bad()
        return Requirement(m.group(1), m.group(2), values)
    if m := _RE_NUMERIC.match(part):
        return Requirement(m.group(1), "gt" if m.group(2) == ">" else "lt", (m.group(3),))
    if m := _RE_EXISTS.match(part):
        return Requirement(m.group(1), "exists")
    raise bad()


def _get_path(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for key in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(key)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _find_operator(term: str) -> tuple[str, str, str] | None:
    i = 0
    while i < len(term):
        char = term[i]
        if char == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return term[:i], "!=", term[i + 2 :]
        if term.startswith("==", i):
            return term[:i], "=", term[i + 2 :]
        if char == "=":
            return term[:i], "=", term[i + 1 :]
        i += 1
    return None


class FieldSelector:
    """A parsed `fieldSelector` (terms ANDed) over a resource's supported fields."""

    def __init__(self, terms: tuple[tuple[str, str, str], ...] = ()) -> None:
        self.terms = terms

    @classmethod
    def parse(cls, text: str | None, supported: frozenset[str]) -> FieldSelector:
        """Parse `field=value,field!=value`; unknown fields raise ApiError(400)."""
        if text is None or not text.strip():
            return cls()
        terms: list[tuple[str, str, str]] = []
        for raw in _split_unescaped(text, ","):
            term = raw.strip()
            found = _find_operator(term)
            if found is None:
                raise ApiError(400, f"invalid selector: {text!r}; can't understand {term!r}")
            field, op, value = found
            field = _unescape(field.strip())
            if field not in supported:
                known = ", ".join(f'"{f}"' for f in sorted(supported))
                raise ApiError(
                    400,
                    f'field label not supported: {field} ("{field}" is not a known field '
                    f"selector: only {known})",
                )
            terms.append((field, op, _unescape(value.strip())))
        return cls(tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` satisfies every term."""
        for field, op, value in self.terms:
            actual = _get_path(obj, field)
            if (actual == value) != (op == "="):
                return False
        return True

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.terms
