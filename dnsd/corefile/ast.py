"""The parsed shape of a Corefile: server blocks holding directives, with file and line."""

from __future__ import annotations

from dataclasses import dataclass, field


class CorefileError(Exception):
    """A Corefile problem, reported CoreDNS-style: ``Corefile:7 - Error during parsing: ...``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line} - Error during parsing: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass
class Directive:
    """One line of a block: a name, its arguments and an optional nested ``{ }`` block.

    ``children`` holds the lines of the nested block, each itself a Directive, so
    ``kubernetes cluster.local { pods insecure }`` is
    ``Directive("kubernetes", ["cluster.local"], [Directive("pods", ["insecure"])])``.
    """

    name: str
    args: list[str] = field(default_factory=list)
    children: list[Directive] = field(default_factory=list)
    file: str = "Corefile"
    line: int = 0
    has_block: bool = False

    def error(self, message: str) -> CorefileError:
        """A CorefileError pointing at this line."""
        return CorefileError(self.file, self.line, message)


@dataclass
class ServerBlock:
    """A server block: its keys (``.:53``, ``cluster.local:1053``...) and its directives."""

    keys: list[str]
    directives: list[Directive] = field(default_factory=list)
    file: str = "Corefile"
    line: int = 0

    def error(self, message: str) -> CorefileError:
        return CorefileError(self.file, self.line, message)


@dataclass(frozen=True)
class Address:
    """A normalised server block key: transport, zone (lower-case, fully qualified) and port."""

    transport: str  # "dns" (UDP+TCP); others are rejected at parse time for now
    zone: str  # "." or "example.org." or "0.0.10.in-addr.arpa."
    port: int
