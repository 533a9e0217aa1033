"""Corefile tokenizer with CoreDNS/Caddyfile semantics.

Tokens are separated by whitespace; a newline ends a directive line. ``#`` starts a
comment only at the start of a token. A token starting with ``"`` is a quoted string
that may span lines (``\\"`` is a literal quote, other backslashes are kept as is).
Outside quotes a backslash makes a following space, tab, ``"`` or ``#`` literal; any
other backslash is kept (so unquoted regular expressions survive). ``{`` and ``}``
are block delimiters only when they are whole, unquoted tokens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dnsd.corefile.ast import CorefileError

_ENV_RE = re.compile(
    r"\{\$(?P<dollar>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<dollar_default>[^{}\n]*))?\}"
    r"|\{env\.(?P<env>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<env_default>[^{}\n]*))?\}"
    r"|\{%(?P<percent>[A-Za-z_][A-Za-z0-9_]*)%\}"
)
_BARE_ESCAPABLE = frozenset(' \t"#')


@dataclass(frozen=True)
class Token:
    """One Corefile token with where it came from.

    ``quoted`` tokens were written in double quotes and are never braces or keywords;
    ``nl`` is True for the first token on a line.
    """

    text: str
    file: str
    line: int
    quoted: bool = False
    nl: bool = False

    @property
    def is_open(self) -> bool:
        """True for an unquoted ``{``."""
        return not self.quoted and self.text == "{"

    @property
    def is_close(self) -> bool:
        """True for an unquoted ``}``."""
        return not self.quoted and self.text == "}"

    @property
    def is_brace(self) -> bool:
        """True for an unquoted ``{`` or ``}``."""
        return self.is_open or self.is_close

    def at(self, line_start: bool) -> Token:
        """This token with its ``nl`` flag set to ``line_start``."""
        return self if self.nl == line_start else replace(self, nl=line_start)

    def error(self, message: str) -> CorefileError:
        """A CorefileError pointing at this token."""
        return CorefileError(self.file, self.line, message)


def substitute_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``{$VAR}``, ``{$VAR:default}``, ``{env.VAR}`` and ``{%VAR%}``.

    An unset variable becomes its default, or the empty string without one.
    """
    values = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        name = m.group("dollar") or m.group("env") or m.group("percent")
        default = m.group("dollar_default")
        if default is None:
            default = m.group("env_default")
        value = values.get(name)
        if value is None:
            return default or ""
        return value

    return _ENV_RE.sub(repl, text)


def tokenize(text: str, file: str = "Corefile") -> list[Token]:
    """Split Corefile ``text`` into tokens; raise CorefileError on an unterminated quote."""
    return _Lexer(text.replace("\r\n", "\n"), file).run()


class _Lexer:
    """A single pass over the text, tracking the current line."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1

    def run(self) -> list[Token]:
        tokens: list[Token] = []
        new_line = True
        while True:
            new_line = self._skip_blank() or new_line
            if self.pos >= len(self.text):
                return tokens
            if self.text[self.pos] == '"':
                tokens.append(self._quoted(new_line))
            else:
                tokens.append(self._bare(new_line))
            new_line = False

    def _skip_blank(self) -> bool:
        """Skip whitespace and comments; return True if a newline was crossed."""
        text, crossed = self.text, False
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n":
                self.line += 1
                crossed = True
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
                continue
            elif not ch.isspace():
                break
            self.pos += 1
        return crossed

    def _quoted(self, new_line: bool) -> Token:
        text, start, buf = self.text, self.line, []
        self.pos += 1
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text):
                nxt = text[self.pos + 1]
                buf.append('"' if nxt == '"' else ch + nxt)
                self.line += nxt == "\n"
                self.pos += 2
                continue
            self.pos += 1
            if ch == '"':
                return Token("".join(buf), self.file, start, True, new_line)
            self.line += ch == "\n"
            buf.append(ch)
        raise CorefileError(self.file, start, "Unterminated quoted string")

    def _bare(self, new_line: bool) -> Token:
        text, buf = self.text, []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch.isspace():
                break
            if ch == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in _BARE_ESCAPABLE:
                ch = text[self.pos + 1]
                self.pos += 1
            buf.append(ch)
            self.pos += 1
        return Token("".join(buf), self.file, self.line, False, new_line)
