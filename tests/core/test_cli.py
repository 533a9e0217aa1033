"""``python -m dnsd``: flags, Corefile errors, imports, pidfile and signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dns.rcode
import pytest
from support import ROOT, Dnsd, free_port, query, wait_for_dns

from dnsd import COREDNS_COMPAT, __version__
from dnsd.chain import IMPLEMENTED
from dnsd.cli import plugins_text

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run dnsd to completion (for flags that exit, and for configurations that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "dnsd", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
        timeout=timeout, check=False,
    )


def port_free(port: int) -> bool:
    """Can we bind UDP and TCP on every address at ``port`` (no SO_REUSEADDR)?"""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


BROKEN = """\
# a comment
.:{PORT} {
    errors
}

example.org:{PORT} {
    kubernets cluster.local
}
"""  # line 7 holds the misspelt directive


# --- Corefile errors --------------------------------------------------------------------------


def test_unknown_directive_names_file_and_line(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "Corefile").write_text(BROKEN.replace("{PORT}", str(port)))
    start = time.monotonic()
    res = run_cli("-conf", "Corefile", cwd=tmp_path)
    assert res.returncode != 0
    assert "Corefile:7 - Error during parsing: unknown directive 'kubernets'" in res.stderr.splitlines()
    assert "dnsd-" not in res.stdout  # no banner: never got as far as serving
    assert time.monotonic() - start < 10
    assert port_free(port)


def test_error_uses_the_path_given(tmp_path: Path) -> None:
    conf = tmp_path / "my.conf"
    conf.write_text(BROKEN.replace("{PORT}", str(free_port())))
    res = run_cli("-conf", str(conf))
    assert res.returncode == 1
    assert f"{conf}:7 - Error during parsing: unknown directive 'kubernets'" in res.stderr


@pytest.mark.parametrize("directive", ["dnssec", "etcd"])
def test_known_coredns_directive_not_available_yet(tmp_path: Path, directive: str) -> None:
    if directive in IMPLEMENTED:
        pytest.skip(f"{directive} is implemented now")
    port = free_port()
    (tmp_path / "Corefile").write_text(f".:{port} {{\n    whoami\n    {directive}\n}}\n")
    res = run_cli("-conf", "Corefile", cwd=tmp_path)
    assert res.returncode == 1
    expected = f"Corefile:3 - Error during parsing: directive '{directive}' is not available yet in dnsd"
    assert expected in res.stderr.splitlines()
    assert port_free(port)


def test_error_inside_an_imported_file(tmp_path: Path) -> None:
    (tmp_path / "extra.conf").write_text("# extra\n\n    kubernets cluster.local\n")
    conf = tmp_path / "Corefile"
    conf.write_text(f".:{free_port()} {{\n    errors\n    import extra.conf\n}}\n")
    res = run_cli("-conf", str(conf))
    assert res.returncode == 1
    assert f"{tmp_path / 'extra.conf'}:3 - Error during parsing: unknown directive 'kubernets'" in res.stderr


def test_missing_corefile(tmp_path: Path) -> None:
    res = run_cli("-conf", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert str(tmp_path / "nope") in res.stderr


def test_port_already_in_use_fails(tmp_path: Path) -> None:
    """Even a UDP socket with SO_REUSEADDR must not end up sharing dnsd's port."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", port))
        (tmp_path / "Corefile").write_text(f".:{port} {{\n    whoami\n}}\n")
        res = run_cli("-conf", "Corefile", cwd=tmp_path)
    assert res.returncode == 1
    assert "[FATAL] listen" in res.stdout + res.stderr


def test_second_server_on_same_port_fails(dnsd: Callable[..., Dnsd], tmp_path: Path) -> None:
    first = dnsd(".:{PORT} {\n    whoami\n}\n")
    (tmp_path / "Corefile").write_text(f".:{first.port} {{\n    errors\n}}\n")
    res = run_cli("-conf", "Corefile", cwd=tmp_path)
    assert res.returncode == 1
    for tcp in (False, True):  # the first one still answers, with whoami
        reply = query("www.example.org.", port=first.port, tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR and reply.additional


# --- imports end to end ------------------------------------------------------------------------


def test_import_snippet_and_files(dnsd: Callable[..., Dnsd], tmp_path: Path) -> None:
    (tmp_path / "answer.conf").write_text("whoami\n")
    (tmp_path / "blocks").mkdir()
    corefile = f"""\
(answer) {{
    whoami
}}
example.org:{{PORT}} {{
    import answer
}}
.:{{PORT}} {{
    errors
}}
net.:{{PORT}} {{
    errors
    import {tmp_path}/answer.conf
}}
import {tmp_path}/blocks/*.conf
"""
    port = free_port()
    (tmp_path / "blocks" / "a.conf").write_text(f"test.:{port} {{\n    import answer\n}}\n")
    d = dnsd(corefile, port=port)
    for name in ("www.example.org.", "foo.net.", "foo.test."):  # snippet, file, top-level glob
        reply = query(name, port=d.port)
        assert reply.rcode() == dns.rcode.NOERROR and reply.additional, name
    assert query("foo.org.", port=d.port).rcode() == dns.rcode.SERVFAIL  # only errors
    out = d.output()
    for zone in ("example.org.", ".", "net.", "test."):
        assert f"{zone}:{port}" in out.splitlines()


# --- flags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-version", "--version"])
def test_version(flag: str) -> None:
    res = run_cli(flag)
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0] == f"dnsd-{__version__} (CoreDNS-{COREDNS_COMPAT} compatible)"
    assert "python3.11" in lines[1]


@pytest.mark.parametrize("flag", ["-plugins", "--plugins"])
def test_plugins(flag: str) -> None:
    res = run_cli(flag)
    assert res.returncode == 0
    assert res.stdout.rstrip("\n") == plugins_text()
    lines = res.stdout.splitlines()
    assert lines[:2] == ["Server types:", "  dns"]
    for name in ("bind", "errors", "log", "whoami"):
        assert f"  dns.{name}" in lines
    listed = [line.strip() for line in lines if line.startswith("  dns.")]
    assert listed == sorted(listed)


def test_dns_port_applies_to_keys_without_port(dnsd: Callable[..., Dnsd]) -> None:
    port, port2 = free_port(), free_port()
    corefile = f". {{\n    whoami\n}}\nexample.org:{port2} {{\n    errors\n}}\n"
    d = dnsd(corefile, port=port, args=["-dns.port", str(port)])
    assert query("www.example.org.", port=port).additional  # "." on -dns.port: whoami
    wait_for_dns(port2)
    assert query("www.example.org.", port=port2).rcode() == dns.rcode.SERVFAIL  # kept its port
    assert query("foo.test.", port=port2).rcode() == dns.rcode.REFUSED
    assert f".:{port}" in d.output().splitlines()


def test_pidfile_and_sigterm(dnsd: Callable[..., Dnsd], tmp_path: Path) -> None:
    pidfile = tmp_path / "dnsd.pid"
    d = dnsd(".:{PORT} {\n    whoami\n}\n", args=["-pidfile", str(pidfile)])
    assert d.proc is not None
    assert pidfile.read_text() == f"{d.proc.pid}\n"
    start = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    assert time.monotonic() - start < 2
    assert not pidfile.exists()
    assert port_free(d.port)


def test_sigint_exits_zero(dnsd: Callable[..., Dnsd]) -> None:
    d = dnsd(".:{PORT} {\n    whoami\n}\n")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(5) == 0


def test_double_dash_flags_and_quiet(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(". {\n    whoami\n}\n")
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsd", "--conf", str(conf), "--dns.port", str(port),
         "--pidfile", str(pidfile), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=tmp_path,
    )
    try:
        wait_for_dns(port, proc=proc)
        assert query("www.example.org.", port=port, tcp=True).additional
        assert pidfile.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
        assert proc.returncode == 0
        assert "dnsd-" not in out  # --quiet: no banner
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
