"""Test helpers: free ports, a dnsd process per test, and small DNS client shortcuts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def query(name: str, rdtype: str | int = "A", port: int = 53, tcp: bool = False,
          host: str = "127.0.0.1", timeout: float = 2.0, **kw) -> dns.message.Message:  # noqa: ANN003
    """One dnspython query over UDP (or TCP) without retries or TCP fallback."""
    q = dns.message.make_query(name, rdtype, **kw)
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=timeout)
    return dns.query.udp(q, host, port=port, timeout=timeout, ignore_unexpected=True)


def wait_for_dns(port: int, host: str = "127.0.0.1", timeout: float = 15.0,
                 proc: subprocess.Popen | None = None) -> None:  # type: ignore[type-arg]
    """Poll until the server answers anything over UDP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dnsd exited with {proc.returncode}")
        try:
            query("health.check.", "A", port=port, host=host, timeout=0.3)
            return
        except Exception:  # noqa: BLE001 - timeouts while starting
            time.sleep(0.05)
    raise TimeoutError(f"no DNS answer on {host}:{port}")


class Dnsd:
    """A dnsd process on a Corefile; stopped (SIGTERM, then SIGKILL) by ``stop``."""

    def __init__(self, corefile: str, port: int | None = None, args: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dnsd-test-"))
        self.conf = self.dir / "Corefile"
        self.conf.write_text(corefile.replace("{PORT}", str(self.port)))
        self.log = self.dir / "dnsd.log"
        self.args = args or []
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd or ROOT
        self.proc: subprocess.Popen | None = None  # type: ignore[type-arg]

    def start(self, wait: bool = True) -> Dnsd:
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dnsd", "-conf", str(self.conf), *self.args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
        )
        if wait:
            wait_for_dns(self.port, proc=self.proc)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
        return None if self.proc is None else self.proc.returncode

    def __enter__(self) -> Dnsd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dig(*args: str, port: int, host: str = "127.0.0.1", timeout: float = 10) -> str:
    """Run the real ``dig`` against 127.0.0.1 and return its stdout."""
    cmd = ["dig", f"@{host}", "-p", str(port), "+time=2", "+tries=1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False).stdout
