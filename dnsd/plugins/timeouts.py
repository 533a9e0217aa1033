"""timeouts: the TCP listener's read, write and idle timeouts (CoreDNS's ``timeouts``).

Syntax::

    timeouts {
        read DURATION    # the first query on a connection must arrive whole within this
        write DURATION   # a client must take a reply within this once our send buffer is full
        idle DURATION    # later queries on a kept-open connection must arrive within this
    }

Each DURATION is a Go duration (``30s``, ``1m``) or a number of seconds, between 1 second and
24 hours; at least one option is required.  Options left out keep the listener's default
(``DNSD_TCP_IDLE_TIMEOUT``, 10 s).  The plugin never sees queries: the TCP listener of each
address the block serves reads it (when several blocks share a listener, the last one that
sets an option wins, as in CoreDNS).  UDP has no connection and ignores it.
"""

from __future__ import annotations

from typing import ClassVar

from dnsd.chain import Plugin as Base
from dnsd.chain import SetupContext
from dnsd.corefile.ast import Directive
from dnsd.corefile.values import parse_duration

MIN_TIMEOUT = 1.0
MAX_TIMEOUT = 24 * 3600.0


class Plugin(Base):
    name: ClassVar[str] = "timeouts"
    passive: ClassVar[bool] = True

    def __init__(self, read: float | None = None, write: float | None = None,
                 idle: float | None = None) -> None:
        self.read = read
        self.write = write
        self.idle = idle

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        d = directives[0]
        if d.args:
            raise d.error(f"Wrong argument count or unexpected line ending after '{d.name}'")
        values: dict[str, float] = {}
        for c in d.children:
            if c.name not in ("read", "write", "idle"):
                raise c.error(f"unknown option: '{c.name}'")
            if len(c.args) != 1 or c.children:
                raise c.error(f"Wrong argument count or unexpected line ending after '{c.name}'")
            values[c.name] = _timeout(c, c.args[0])
        if not values:
            raise d.error("timeouts block with no timeouts specified")
        return cls(**values)


def _timeout(d: Directive, text: str) -> float:
    try:
        value = float(int(text)) if text.isdigit() else parse_duration(text)
    except ValueError:
        raise d.error(f"invalid duration '{text}'") from None
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise d.error(f"timeout provided '{text}' needs to be between 1 second and 24 hours")
    return value
