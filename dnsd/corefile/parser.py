"""Corefile parser: tokens to server blocks, with snippets and ``import``.

The parser knows nothing about which directives exist; it only builds the tree.
``import`` splices a snippet's or file's tokens into the stream where it appears
(CoreDNS semantics), so imported text can hold server blocks or directives.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dnsd.corefile.ast import CorefileError, Directive, ServerBlock
from dnsd.corefile.lexer import Token, substitute_env, tokenize

MAX_NESTING = 100  # nested { } depth
MAX_IMPORT_DEPTH = 64  # imports within imports
MAX_TOKENS = 1_000_000  # total tokens spliced in by imports
_GLOB_CHARS = frozenset("*?[")
log = logging.getLogger(__name__)
_ARGS_RE = re.compile(r"\{args\[(?:(?P<index>\d+)|(?P<start>\d*):(?P<stop>\d*))\]\}")


def parse(
    text: str, file: str = "Corefile", env: Mapping[str, str] | None = None
) -> list[ServerBlock]:
    """Parse Corefile ``text``; ``file`` names it in errors and anchors relative imports."""
    parser = _Parser(os.environ if env is None else env)
    tokens = parser.lex(text, file)
    return parser.run(_Stream(tokens, (_file_key(file),)))


def parse_file(path: str) -> list[ServerBlock]:
    """Read and parse the Corefile at ``path`` (errors name ``path`` exactly as given)."""
    if not os.path.exists(path):
        raise CorefileError(path, 0, f"File to parse doesn't exist: {path}")
    return parse(_read(path, None), path)


def _file_key(path: str) -> str:
    return os.path.realpath(path)


def _read(path: str, where: Token | None) -> str:
    """Read a UTF-8 file, turning OS and decoding errors into CorefileErrors."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        file, line = (where.file, where.line) if where else (path, 0)
        raise CorefileError(file, line, f"Could not read {path}: {exc}") from None


@dataclass
class _Frame:
    """Tokens of one source (the Corefile, a snippet, an imported file)."""

    tokens: list[Token]
    chain: tuple[str, ...]  # import keys active while reading these tokens
    pos: int = 0


class _Stream:
    """A token cursor over a stack of frames; ``import`` pushes a frame."""

    def __init__(self, tokens: list[Token], chain: tuple[str, ...]) -> None:
        self._frames = [_Frame(tokens, chain)]
        self._line_start = True
        self.last: Token | None = None
        self.chain = chain

    def _top(self) -> _Frame | None:
        while self._frames and self._frames[-1].pos >= len(self._frames[-1].tokens):
            self._frames.pop()
            self._line_start = True
        return self._frames[-1] if self._frames else None

    def peek(self) -> Token | None:
        """The next token, or None at the end of all input."""
        frame = self._top()
        return frame.tokens[frame.pos] if frame else None

    def starts_line(self) -> bool:
        """True if the next token begins a logical line (new line, or after a brace)."""
        tok = self.peek()
        return tok is not None and (self._line_start or tok.nl)

    def next(self) -> Token:
        """Consume the next token (the caller has checked there is one)."""
        frame = self._top()
        assert frame is not None
        tok = frame.tokens[frame.pos]
        frame.pos += 1
        self.last, self.chain = tok, frame.chain
        self._line_start = tok.is_brace
        return tok

    def next_in_line(self) -> Token | None:
        """Consume the next token if it continues the current line and is not a brace."""
        tok = self.peek()
        if tok is None or tok.is_brace or self.starts_line():
            return None
        return self.next()

    def push(self, tokens: list[Token], chain: tuple[str, ...]) -> None:
        """Splice ``tokens`` in before the rest of the input."""
        self._frames.append(_Frame(tokens, chain))
        self._line_start = True


class _Parser:
    """Recursive descent over a _Stream; holds the snippets defined so far."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.snippets: dict[str, list[Token]] = {}
        self.spliced = 0

    def lex(self, text: str, file: str) -> list[Token]:
        """Substitute environment variables, then tokenize."""
        return tokenize(substitute_env(text, self.env), file)

    # --- top level -----------------------------------------------------------------

    def run(self, stream: _Stream) -> list[ServerBlock]:
        """Parse the whole stream into server blocks (snippets are recorded, not returned)."""
        blocks: list[ServerBlock] = []
        while (tok := stream.peek()) is not None:
            if _is_import(tok):
                self._import(stream)
            elif tok.is_close:
                raise tok.error("Unexpected '}' because no matching opening brace")
            elif tok.is_open:
                raise tok.error(
                    "Server block without keys: expected a key such as '.:53' before '{'"
                )
            else:
                block = self._server_block(stream, allow_braceless=not blocks)
                if block is not None:
                    blocks.append(block)
        return blocks

    def _server_block(self, stream: _Stream, allow_braceless: bool) -> ServerBlock | None:
        """Parse keys and their block; return None for a snippet definition."""
        first = stream.peek()
        assert first is not None
        keys = self._keys(stream)
        if not keys:
            raise first.error("Server block without keys: expected a key such as '.:53'")
        if len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")"):
            self._define_snippet(stream, first, keys[0][1:-1])
            return None
        nxt = stream.peek()
        if nxt is not None and nxt.is_open:
            directives = self._body(stream, stream.next(), 1)
        elif allow_braceless:
            directives = self._body(stream, None, 1)
        else:
            raise first.error(
                f"Unexpected '{first.text}' outside a server block "
                "(server block keys must be followed by '{')"
            )
        return ServerBlock(keys, directives, first.file, first.line)

    def _keys(self, stream: _Stream) -> list[str]:
        """Read server block keys: one line, continued on the next while it ends in a comma."""
        keys: list[str] = []
        expecting = False
        started = False
        while (tok := stream.peek()) is not None:
            if tok.is_brace:
                if expecting:
                    raise tok.error(
                        f"Expected another server block key but got '{tok.text}' - check for an extra comma"
                    )
                return keys
            if started and not expecting and stream.starts_line():
                return keys
            if started and _is_import(tok) and stream.starts_line():
                self._import(stream)
                continue
            stream.next()
            started = True
            keys.extend(part.strip() for part in tok.text.split(",") if part.strip())
            expecting = tok.text.endswith(",")
        if expecting:
            raise _eof(stream, "another server block key")
        return keys

    def _define_snippet(self, stream: _Stream, first: Token, name: str) -> None:
        """Record the raw tokens between the snippet's braces."""
        if not name:
            raise first.error("Snippet name cannot be empty")
        if name in self.snippets:
            raise first.error(f"Redeclaration of previously declared snippet {name}")
        opening = stream.peek()
        if opening is None or not opening.is_open:
            raise first.error(f"Expected '{{' after snippet name ({name})")
        stream.next()
        body: list[Token] = []
        depth = 1
        while (tok := stream.peek()) is not None:
            line_start = stream.starts_line()
            stream.next()
            depth += tok.is_open - tok.is_close
            if depth == 0:
                self.snippets[name] = body
                return
            body.append(tok.at(line_start))
        raise _eof(stream, "'}'", opening)

    # --- blocks and directives -----------------------------------------------------

    def _body(self, stream: _Stream, opening: Token | None, depth: int) -> list[Directive]:
        """Directive lines up to the ``}`` matching ``opening`` (or EOF when None)."""
        if depth > MAX_NESTING:
            assert opening is not None
            raise opening.error(f"Blocks nested more than {MAX_NESTING} deep")
        out: list[Directive] = []
        while (tok := stream.peek()) is not None:
            if tok.is_close:
                stream.next()
                if opening is None:
                    raise tok.error("Unexpected '}' because no matching opening brace")
                return out
            if tok.is_open:
                raise tok.error("Unexpected '{': a block must follow a directive")
            if _is_import(tok):
                self._import(stream)
            else:
                out.append(self._directive(stream, depth))
        if opening is not None:
            raise _eof(stream, "'}'", opening)
        return out

    def _directive(self, stream: _Stream, depth: int) -> Directive:
        """One directive line and its optional ``{ }`` block (which may start on the next line)."""
        name = stream.next()
        args: list[str] = []
        while (tok := stream.next_in_line()) is not None:
            args.append(tok.text)
        d = Directive(name.text, args, [], name.file, name.line)
        nxt = stream.peek()
        if nxt is not None and nxt.is_open:
            d.children = self._body(stream, stream.next(), depth + 1)
            d.has_block = True
        return d

    # --- import --------------------------------------------------------------------

    def _import(self, stream: _Stream) -> None:
        """Handle ``import NAME_OR_PATTERN [args...]`` by splicing tokens into the stream."""
        imp = stream.next()
        chain = stream.chain
        words: list[Token] = []
        while (tok := stream.next_in_line()) is not None:
            words.append(tok)
        if not words:
            raise imp.error("Wrong argument count or unexpected line ending after 'import'")
        pattern, args = words[0].text, words[1:]
        if not pattern:
            raise imp.error("Import requires a non-empty filepath")
        if len(chain) > MAX_IMPORT_DEPTH:
            raise imp.error(f"Imports nested more than {MAX_IMPORT_DEPTH} deep")
        if pattern in self.snippets:
            sources = [(f"({pattern})", self.snippets[pattern])]
        else:
            sources = [
                (_file_key(p), self._file_tokens(p, imp)) for p in self._resolve(pattern, imp)
            ]
        for key, tokens in reversed(sources):
            if key in chain:
                cycle = " -> ".join((*chain[chain.index(key) :], key))
                raise imp.error(f"Import cycle detected: {cycle}")
            spliced = _apply_args(tokens, args, imp)
            self.spliced += len(spliced)
            if self.spliced > MAX_TOKENS:
                raise imp.error(f"Imports expand to more than {MAX_TOKENS} tokens")
            stream.push(spliced, (*chain, key))

    def _resolve(self, pattern: str, imp: Token) -> list[str]:
        """Paths named by an import pattern, relative to the importing file's directory."""
        path = (
            pattern if os.path.isabs(pattern) else os.path.join(os.path.dirname(imp.file), pattern)
        )
        if not _GLOB_CHARS.intersection(pattern):
            if not os.path.exists(path):
                raise imp.error(
                    f"File to import not found: {pattern} (no snippet or file by that name)"
                )
            if os.path.isdir(path):
                raise imp.error(f"Could not import {pattern}: is a directory")
            return [path]
        try:
            found = glob.glob(path)
        except ValueError:  # a NUL in the pattern matches nothing (as Go's filepath.Glob)
            found = []
        matches = sorted(p for p in found if not os.path.isdir(p))
        if not matches:
            log.warning("No files matching import glob pattern: %s", pattern)
        return matches

    def _file_tokens(self, path: str, imp: Token) -> list[Token]:
        return self.lex(_read(path, imp), path)


def _is_import(tok: Token) -> bool:
    return not tok.quoted and tok.text == "import"


def _eof(stream: _Stream, expected: str, opening: Token | None = None) -> CorefileError:
    """Unexpected EOF, reported at the last token read (as CoreDNS does)."""
    last = stream.last
    assert last is not None
    where = f" (for the '{{' at {opening.file}:{opening.line})" if opening else ""
    return last.error(f"Unexpected EOF, expected {expected}{where}")


def _apply_args(tokens: list[Token], args: list[Token], imp: Token) -> list[Token]:
    """Replace ``{args[N]}`` and ``{args[a:b]}`` placeholders with import arguments.

    A token that is exactly a range placeholder becomes one token per argument
    (possibly none); elsewhere a range is joined with spaces.
    """
    out: list[Token] = []
    carry_nl = False
    for tok in tokens:
        if "{args[" not in tok.text:
            out.append(tok.at(True) if carry_nl else tok)
            carry_nl = False
            continue
        expanded = _expand_token(tok, args, imp)
        if expanded:
            expanded[0] = expanded[0].at(expanded[0].nl or carry_nl)
            carry_nl = False
        else:
            carry_nl = carry_nl or tok.nl
        out.extend(expanded)
    return out


def _expand_token(tok: Token, args: list[Token], imp: Token) -> list[Token]:
    whole = _ARGS_RE.fullmatch(tok.text)
    if whole and whole.group("index") is None:
        picked = _pick(whole, args, imp)
        return [
            replace(tok, text=a.text, quoted=tok.quoted or a.quoted, nl=tok.nl and i == 0)
            for i, a in enumerate(picked)
        ]
    used: list[Token] = []

    def repl(m: re.Match[str]) -> str:
        picked = _pick(m, args, imp)
        used.extend(picked)
        return " ".join(a.text for a in picked)

    text = _ARGS_RE.sub(repl, tok.text)
    return [replace(tok, text=text, quoted=tok.quoted or any(a.quoted for a in used))]


def _pick(m: re.Match[str], args: list[Token], imp: Token) -> list[Token]:
    """The arguments a placeholder match selects."""
    if m.group("index") is not None:
        index = int(m.group("index"))
        if index >= len(args):
            raise imp.error(
                f"{m.group(0)} is out of range: this import passes {len(args)} argument(s)"
            )
        return [args[index]]
    start = int(m.group("start")) if m.group("start") else None
    stop = int(m.group("stop")) if m.group("stop") else None
    return args[start:stop]
