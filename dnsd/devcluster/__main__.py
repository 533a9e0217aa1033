"""`python -m dnsd.devcluster`: run the API-server emulator standalone."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .cluster import DevCluster


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dnsd.devcluster", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8001, help="port (0 = any free port; default 8001)"
    )
    parser.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="FILE.yaml",
        help="objects to load (repeatable)",
    )
    parser.add_argument(
        "--no-endpointslices", action="store_true", help="do not serve discovery.k8s.io/v1"
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="also write a kubeconfig for the server here"
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=1.0, help="seconds between watch bookmarks"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")

    cluster = DevCluster(
        host=args.host,
        port=args.port,
        endpointslices=not args.no_endpointslices,
        bookmark_interval=args.bookmark_interval,
    )
    for path in args.load:
        cluster.load_yaml(path)
    cluster.start()
    if args.kubeconfig:
        cluster.kubeconfig(args.kubeconfig)
    print(cluster.url, flush=True)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
