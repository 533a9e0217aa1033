"""Helpers for tests/resolver/: a real upstream, pod-like resolv.conf files and real ``dig``.

- ``ZoneUpstream``: the "node's resolver" the cluster dnsd forwards to.  It is a second dnsd
  process serving ``example.com`` (www, foo, bar, a 1-second ``flash`` name...) and a tiny root
  zone with the ``file`` plugin, on 127.0.0.1 only.  Every unknown name is NXDOMAIN with the
  zone's SOA, so the node-search-domain expansions of a pod (``*.node.example.com``) come back
  NXDOMAIN like from a real resolver.  Its ``log`` plugin gives the per-query record the tests
  count with (``queries()``).
- ``pod_resolv_conf``: the file kubelet writes for a ClusterFirst pod (k8s_dns_spec.md §4).
- ``dig_search``: run the real ``dig`` with that file as ``/etc/resolv.conf`` - inside a private
  mount namespace (``unshare -m`` + ``mount --bind``), so the machine's file is never touched.
- ``NodeResolvDnsd``: a dnsd process that sees a given ``/etc/resolv.conf`` the same way (what
  a CoreDNS pod with ``dnsPolicy: Default`` sees: the node's search domains, used by autopath).
- Parsers for dig output: answer lines, header status, the search walk of ``+showsearch``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import Dnsd

NODE_DOMAIN = "node.example.com"  # the fake node search domain appended to pod search lists
ZONE = "cluster.local"

EXAMPLE_COM = """\
$ORIGIN example.com.
$TTL 300
@        IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 60
         IN NS  ns1
ns1      IN A   192.0.2.2
www      IN A   192.0.2.10
cached   IN A   192.0.2.11
foo      IN A   192.0.2.123
bar      IN A   192.0.2.124
flash  1 IN A   192.0.2.77
"""

# Anything outside example.com (the bare name of an autopath walk, the loop plugin's
# "<n>.<n>." HINFO probe, forward's ". NS" health checks) gets an answer from here.
ROOT = """\
$ORIGIN .
$TTL 300
@        IN SOA a.root-servers.test. hostmaster.root-servers.test. 1 7200 3600 1209600 60
         IN NS  a.root-servers.test.
"""

UPSTREAM_COREFILE = """\
example.com:{PORT} {
    bind 127.0.0.1
    file EXAMPLE_DB
    log
}
.:{PORT} {
    bind 127.0.0.1
    file ROOT_DB
    log
}
"""

# "[INFO] 127.0.0.1:46366 - 367 "A IN www.example.com. udp 56 false 1232" NOERROR qr,aa,rd 78 0.0002s"
LOG_LINE = re.compile(r'\[INFO\] (\S+):\d+ - \d+ "(\S+) IN (\S+) (udp|tcp) [^"]*" (\S+) ')


@dataclass(frozen=True)
class Logged:
    """One query a dnsd with the ``log`` plugin answered."""

    client: str
    qtype: str
    name: str
    proto: str
    rcode: str


def logged_queries(output: str) -> list[Logged]:
    """The query-log lines of a dnsd's output, parsed."""
    return [Logged(m[1], m[2], m[3].lower(), m[4], m[5]) for m in LOG_LINE.finditer(output)]


class ZoneUpstream:
    """The test upstream (see the module docstring); ``with ZoneUpstream() as up: up.addr``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dnsd-upstream-"))
        (self.dir / "example.com.db").write_text(EXAMPLE_COM)
        (self.dir / "root.db").write_text(ROOT)
        corefile = (UPSTREAM_COREFILE.replace("EXAMPLE_DB", str(self.dir / "example.com.db"))
                    .replace("ROOT_DB", str(self.dir / "root.db")))
        self.server = Dnsd(corefile)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ZoneUpstream:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ZoneUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def queries(self) -> list[Logged]:
        """Every query seen so far (the start-up probe ``health.check.`` included)."""
        return logged_queries(self.server.output())

    def names(self, since: int = 0) -> list[str]:
        """The names asked since the ``since``-th query, in order (forward health checks for
        ``.`` left out)."""
        return [q.name for q in self.queries()[since:] if q.name != "."]

    def count(self, name: str | None = None) -> int:
        return sum(1 for q in self.queries() if q.name != "." and (name is None or q.name == name))

    def mark(self) -> int:
        """A position to pass to ``names(since=...)`` later."""
        return len(self.queries())


class NodeResolvDnsd(Dnsd):
    """A dnsd process whose ``/etc/resolv.conf`` is ``resolv_text`` (private mount namespace)."""

    def __init__(self, corefile: str, resolv_text: str, **kw: Any) -> None:
        super().__init__(corefile, **kw)
        self.resolv = self.dir / "node-resolv.conf"
        self.resolv.write_text(resolv_text)

    def start(self, wait: bool = True) -> Dnsd:
        from support import wait_for_dns

        out = self.log.open("wb")
        # unshare execs sh, sh execs python: the process we signal on stop() is dnsd itself.
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
             str(self.resolv), sys.executable, "-m", "dnsd", "-conf", str(self.conf), *self.args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
        )
        if wait:
            wait_for_dns(self.port, proc=self.proc)
        return self


def pod_resolv_conf(path: Path, namespace: str, node_domains: tuple[str, ...] = (NODE_DOMAIN,)) -> Path:
    """Write the resolv.conf of a ClusterFirst pod in ``namespace`` (nameserver: loopback; the
    port goes on dig's command line, resolv.conf cannot carry one)."""
    search = [f"{namespace}.svc.{ZONE}", f"svc.{ZONE}", ZONE, *node_domains]
    path.write_text(f"nameserver 127.0.0.1\nsearch {' '.join(search)}\noptions ndots:5\n")
    return path


def search_expansions(name: str, namespace: str, node_domains: tuple[str, ...] = (NODE_DOMAIN,),
                      ndots: int = 5) -> list[str]:
    """The names ``dig +search`` asks for ``name``, in order, until one is not NXDOMAIN."""
    if name.endswith("."):
        return [name]
    search = [f"{namespace}.svc.{ZONE}", f"svc.{ZONE}", ZONE, *node_domains]
    expanded = [f"{name}.{s}." for s in search]
    if name.count(".") >= ndots:
        return [f"{name}.", *expanded]
    return [*expanded, f"{name}."]


def dig_search(resolv: Path, port: int, *args: str, source: str | None = None,
               timeout: float = 20) -> str:
    """Run ``dig @127.0.0.1 -p PORT ARGS`` with ``resolv`` bind-mounted on /etc/resolv.conf in a
    private mount namespace (``source``: dig's ``-b`` address); returns stdout."""
    cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
           str(resolv), "dig", "@127.0.0.1", "-p", str(port), "+time=3", "+tries=1"]
    if source:
        cmd += ["-b", source]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode in (0, 9) and not res.stderr.strip(), f"{cmd + list(args)}: {res.stderr}"
    return res.stdout


def answer_lines(out: str) -> list[str]:
    """The record lines of ``dig +noall +answer`` output, whitespace-normalised, in order."""
    return [" ".join(line.split()) for line in out.splitlines()
            if line.strip() and not line.startswith(";")]


def status_of(out: str) -> str:
    """The rcode in the last ``->>HEADER<<-`` line of dig output."""
    found = re.findall(r"status: (\w+)", out)
    assert found, f"no header in dig output:\n{out}"
    return found[-1]


def search_walk(out: str) -> list[tuple[str, str]]:
    """(question, status) of every step of ``dig +showsearch +noall +comments +question``."""
    steps: list[tuple[str, str]] = []
    status = ""
    for line in out.splitlines():
        m = re.search(r"status: (\w+)", line)
        if m:
            status = m.group(1)
            continue
        m = re.match(r";(\S+)\s+IN\s+\S+", line)
        if m and status:
            steps.append((m.group(1).lower(), status))
            status = ""
    return steps


def transcript(cmd: str, out: str) -> str:
    """``$ cmd`` followed by dig's answer lines, for the printed transcripts."""
    lines = answer_lines(out) or ["(empty answer)"]
    return "\n".join([f"$ {cmd}", *(f"  {line}" for line in lines)])


def wait_for_listener(server: Dnsd, timeout: float = 15.0) -> None:
    """Wait until ``server`` accepts TCP connections on its DNS port (for configurations whose
    every name goes to dead upstreams, where ``Dnsd.start``'s probe query would hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc is not None and server.proc.poll() is None, server.output()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"dnsd never listened on 127.0.0.1:{server.port}")


def wait_until(predicate: Any, timeout: float, message: str, interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; the seconds it took (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(interval)
    return time.monotonic() - start
