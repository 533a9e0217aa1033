"""``dnsd demo``: the server on an embedded demo cluster, ready for ``dig``.

Starts the API-server emulator in this process, loads ``deploy/demo/cluster.yaml``, writes a
Corefile pointing the kubernetes plugin at it (plus the ``file`` plugin on ``zones/``), and
serves until Ctrl-C.  Change the cluster live through the printed URL with ``curl``,
``kubectl --server`` or the ``kubernetes`` Python client; answers follow within a second.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLUSTER = ROOT / "deploy" / "demo" / "cluster.yaml"
ZONES = ROOT / "zones"

COREFILE = """\
# Written by `dnsd demo`; the kubernetes plugin watches the embedded API emulator.
.:{port} {{
    errors
    log
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint {api}
        pods verified
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
        secondary_networks {{
            net_names
        }}
    }}
    file {zones}/example.org example.org
}}
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnsd demo", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=1053, help="DNS port (default 1053)")
    p.add_argument("--api-port", type=int, default=8001, help="API emulator port (default 8001)")
    p.add_argument("--cluster", default=str(DEMO_CLUSTER), help="YAML of the demo cluster")
    p.add_argument("--quiet", action="store_true", help="no query log")
    return p


def instructions(port: int, api: str) -> str:
    d = f"dig @127.0.0.1 -p {port}"
    return f"""
dnsd demo is running.  Try:
  {d} kubernetes.default.svc.cluster.local              # ClusterIP service
  {d} _http._tcp.web.demo.svc.cluster.local SRV          # named port
  {d} db.demo.svc.cluster.local                          # headless service
  {d} db-0.db.demo.svc.cluster.local                     # endpoint hostname
  {d} -x 10.96.0.10                                      # PTR
  {d} search.demo.svc.cluster.local                      # ExternalName, chased to example.org
  {d} dual.demo.svc.cluster.local AAAA                   # dual-stack service
  {d} rdma.demo.svc.cluster.local                        # headless service on a secondary network
  {d} 10-244-1-20.demo.pod.cluster.local                 # pod record (pods verified)
  {d} www.example.org                                    # zones/example.org via the file plugin

The demo cluster's API server is at {api}; change it live, e.g.:
  kubectl --server {api} get services -A
  curl -s {api}/api/v1/namespaces/demo/services
  curl -s -X DELETE {api}/api/v1/namespaces/demo/services/web
Ctrl-C stops everything.
"""


def main(argv: list[str]) -> int:
    from dnsd.cli import load_runtime, run_loop, serve, setup_logging
    from dnsd.corefile import CorefileError
    from dnsd.devcluster import DevCluster

    args = build_parser().parse_args(argv)
    cluster = DevCluster(host="127.0.0.1", port=args.api_port)
    try:
        cluster.start()
    except OSError as exc:
        print(f"dnsd demo: cannot start the API emulator on port {args.api_port}: {exc}")
        return 1
    try:
        cluster.load_yaml(args.cluster)
        workdir = Path(tempfile.mkdtemp(prefix="dnsd-demo-"))
        conf = workdir / "Corefile"
        text = COREFILE.format(port=args.port, api=cluster.url, zones=ZONES)
        if args.quiet:
            text = text.replace("    log\n", "")
        conf.write_text(text)
        setup_logging(False)
        try:
            runtime = load_runtime(str(conf), args.port, {})
        except CorefileError as exc:
            print(exc)
            return 1
        print(instructions(args.port, cluster.url), flush=True)
        return run_loop(serve(str(conf), args.port, runtime, quiet=False, pidfile=""))
    finally:
        cluster.stop()
