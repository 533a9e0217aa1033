"""loop: a dnsd forwarding to itself exits with CoreDNS's fatal message; a sane one keeps going."""

from __future__ import annotations

import re
import time

from dnslib import QTYPE
from support import query
from upstream import Upstream

LOOP_LINE = re.compile(
    r'\[FATAL\] plugin/loop: Loop \(127\.0\.0\.1:\d+ -> :(\d+)\) detected for zone "\.", '
    r"see https://coredns\.io/plugins/loop#troubleshooting\. "
    r'Query: "HINFO \d+\.\d+\."')


def test_forwarding_to_itself_is_detected_and_exits(dnsd) -> None:
    server = dnsd(".:{PORT} {\n loop\n forward . 127.0.0.1:{PORT}\n}\n", wait=False)
    assert server.proc is not None
    rc = server.proc.wait(15)
    assert rc == 1
    m = LOOP_LINE.search(server.output())
    assert m, server.output()
    assert int(m.group(1)) == server.port


def test_no_loop_keeps_serving() -> None:
    with Upstream() as up:
        from support import Dnsd

        with Dnsd(f"example.net:{{PORT}} {{\n loop\n forward . {up.addr}\n}}\n") as server:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(
                    t == QTYPE.HINFO for _, _, t in up.queries):
                time.sleep(0.05)
            probes = [n for _, n, t in up.queries if t == QTYPE.HINFO]
            assert probes and re.fullmatch(r"\d+\.\d+\.example\.net\.", probes[0])
            time.sleep(0.5)
            assert server.proc is not None and server.proc.poll() is None
            assert query("www.example.net", port=server.port).rcode() == 3  # NXDOMAIN upstream
            assert "plugin/loop" not in server.output()
