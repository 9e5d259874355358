"""``agentspec studio``: the Studio's web application, against the current kubeconfig.

Binds 127.0.0.1 by default: the API acts with the user's own credentials, so it must not be
reachable by others (behind a team's SSO proxy, see docs/studio.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from .app import build_app
from .cluster import Cluster


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentspec studio", description=__doc__)
    parser.add_argument("--kubeconfig", default=None, help="default: KUBECONFIG, ~/.kube/config")
    parser.add_argument("--context", default=None, help="default: the current context")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    args = parser.parse_args(argv)
    try:
        cluster = Cluster.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as e:  # no kubeconfig, a broken one: say so, do not trace back
        print(f"agentspec studio: cannot read the kubeconfig: {e}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        build_app(cluster), host=args.host, port=args.port, log_level="warning", lifespan="off"
    )
    print(f"Agent Studio on http://{args.host}:{args.port} (namespace {cluster.namespace})")
    asyncio.run(uvicorn.Server(config).serve())
    return 0
