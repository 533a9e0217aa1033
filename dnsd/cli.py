"""Command line: CoreDNS's flags, the process life (signals, reload), and ``dnsd demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import signal
import sys
from collections.abc import Sequence
from typing import Any

from dnsd import COREDNS_COMPAT, __version__, gcpause, metrics
from dnsd.chain import IMPLEMENTED
from dnsd.corefile import CorefileError, parse_file
from dnsd.serve.runtime import Runtime, Server

log = logging.getLogger("dnsd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsd", description="A CoreDNS-compatible Kubernetes DNS server.",
        epilog="Subcommand: 'dnsd demo' runs the server on an embedded demo cluster.",
    )
    p.add_argument("-conf", "--conf", dest="conf", default="Corefile", help="Corefile to load")
    p.add_argument("-dns.port", "--dns.port", dest="port", type=int, default=53,
                   help="port for server blocks that name none (default 53)")
    p.add_argument("-version", "--version", dest="version", action="store_true", help="show version and quit")
    p.add_argument("-plugins", "--plugins", dest="plugins", action="store_true", help="list the plugins and quit")
    p.add_argument("-quiet", "--quiet", dest="quiet", action="store_true", help="quiet mode (no start-up banner)")
    p.add_argument("-pidfile", "--pidfile", dest="pidfile", default="", help="write the process ID here")
    p.add_argument("-workers", "--workers", dest="workers", type=int, default=1,
                   help="processes serving the same sockets (SO_REUSEPORT)")
    return p


def version_text() -> str:
    return (f"dnsd-{__version__} (CoreDNS-{COREDNS_COMPAT} compatible)\n"
            f"{platform.system().lower()}/{platform.machine()}, python{platform.python_version()}")


def plugins_text() -> str:
    lines = ["Server types:", "  dns", "", "Other plugins:"]
    lines += [f"  dns.{name}" for name in sorted(IMPLEMENTED)]
    return "\n".join(lines)


def load_runtime(conf: str, port: int, shared: dict[str, Any]) -> Runtime:
    """Parse and set up a Corefile; raises CorefileError (or OSError for a missing file)."""
    blocks = parse_file(conf)
    return Runtime.build(blocks, default_port=port, config_file=conf, shared=shared)


def banner(runtime: Runtime, server: Server) -> str:
    lines = []
    for (host, _port), port in server.ports().items():
        for block in runtime.engines[(host, _port)].blocks:
            for zone in block.zones:
                lines.append(f"{zone}:{port}" if not host else f"{zone}:{port} on {host}")
    lines.append(f"dnsd-{__version__} (CoreDNS-{COREDNS_COMPAT} compatible)")
    lines.append(f"{platform.system().lower()}/{platform.machine()}, python{platform.python_version()}")
    return "\n".join(lines)


async def serve(conf: str, port: int, runtime: Runtime, quiet: bool, pidfile: str,
                reuse_port: bool = False, workers: Sequence[Any] = ()) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP (or the reload plugin) re-reads the Corefile.

    ``workers`` (``-workers N``) get this process's SIGHUP and, as SIGTERM, its stop signals,
    so that they reload and go into lameduck together with it."""
    loop = asyncio.get_running_loop()
    server = Server(reuse_port=reuse_port)
    stop = asyncio.Event()
    shared = runtime.shared

    async def reload() -> bool:
        try:
            new = load_runtime(conf, port, shared)
            await server.reload(new)
        except (CorefileError, OSError) as exc:
            metrics.reload_failed.inc()
            log.error("[ERROR] Restart failed: %s", exc)
            return False
        except Exception:
            metrics.reload_failed.inc()
            log.exception("[ERROR] Restart failed")
            return False
        log.info("[INFO] Reloading complete")
        return True

    shared["reload"] = reload
    reloading: set[asyncio.Task[bool]] = set()

    def signal_workers(sig: int) -> None:
        for proc in workers:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(sig)

    def on_stop() -> None:
        signal_workers(signal.SIGTERM)
        stop.set()

    def on_hup() -> None:
        signal_workers(signal.SIGHUP)
        t = loop.create_task(reload())
        reloading.add(t)
        t.add_done_callback(reloading.discard)

    shared["listening"] = False
    try:
        await server.start(runtime)
    except OSError as exc:
        log.error("[FATAL] listen: %s", exc)
        return 1
    shared["listening"] = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    if not quiet:
        print(banner(runtime, server), flush=True)
    shared["shutdown"] = stop.set
    pauses = gcpause.start()
    await stop.wait()
    await gcpause.stop(pauses)
    shared["shutting_down"] = True
    lameduck = max(shared.get("lameduck", {}).values(), default=0.0)
    if lameduck > 0:
        log.info("[INFO] plugin/health: Going into lameduck mode for %gs", lameduck)
        stop.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), lameduck)  # a second signal cuts it short
    log.info("[INFO] SIGTERM: Shutting down servers then terminating")
    await server.stop()
    if pidfile:
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
    return 0


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")


def run_loop(coro: Any) -> int:
    """Run on uvloop when it is installed (DNSD_NO_UVLOOP=1 disables it)."""
    factory = None
    if not os.environ.get("DNSD_NO_UVLOOP"):
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return int(runner.run(coro))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from dnsd.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    if args.plugins:
        print(plugins_text())
        return 0
    setup_logging(args.quiet)
    # SIGHUP's default action kills: ignore it until serve() handles it, so that a reload
    # signal during start-up (the kubernetes sync can take seconds) is harmless.  Workers
    # inherit the setting through exec, and get SIGHUP forwarded by this process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reuse_port = args.workers > 1 or bool(os.environ.get(WORKER_ENV))
    shared: dict[str, Any] = {"reuse_port": reuse_port}
    try:
        runtime = load_runtime(args.conf, args.port, shared)
    except CorefileError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.conf}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    workers = start_workers(argv, args.workers) if args.workers > 1 else []
    try:
        return run_loop(serve(args.conf, args.port, runtime, args.quiet, args.pidfile, reuse_port,
                              workers))
    finally:
        stop_workers(workers)


WORKER_ENV = "DNSD_WORKER"


def start_workers(argv: list[str], n: int) -> list[Any]:
    """N-1 more dnsd processes on the same Corefile, sharing the sockets via SO_REUSEPORT;
    the kernel spreads queries across them.  Each keeps its own watches and index."""
    import subprocess

    args = [a for a in argv]
    # -pidfile too: the file names this (main) process, which a worker must not overwrite or
    # remove when it exits.
    for flag in ("-workers", "--workers", "-pidfile", "--pidfile"):
        while flag in args:
            i = args.index(flag)
            del args[i : i + 2]
    args = [a for a in args
            if not a.startswith(("-workers=", "--workers=", "-pidfile=", "--pidfile="))]
    env = {**os.environ, WORKER_ENV: "1"}
    procs = []
    for _ in range(n - 1):
        procs.append(subprocess.Popen([sys.executable, "-m", "dnsd", *args, "-quiet"], env=env))
    return procs


def stop_workers(procs: list[Any]) -> None:
    import subprocess

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
