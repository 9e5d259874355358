"""``agentspec studio [FOLDER]``: the Studio's web application, against the current
kubeconfig (or, with FOLDER, the YAML files ``agentspec up`` runs).

Binds 127.0.0.1 by default: the API acts with the user's own credentials, so it must not be
reachable by others (behind a team's SSO proxy, see docs/studio.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvicorn
import yaml

from .app import allowed_hosts, build_app
from .cluster import Cluster
from .folder import Folder
from .usage import Usage, load_prices


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentspec studio", description=__doc__)
    parser.add_argument(
        "folder",
        nargs="?",
        type=Path,
        help="folder mode: the YAML files agentspec up runs, instead of a cluster",
    )
    parser.add_argument("--kubeconfig", default=None, help="default: KUBECONFIG, ~/.kube/config")
    parser.add_argument("--context", default=None, help="default: the current context")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        help="another Host value to answer (the name a proxy in front of the Studio uses)",
    )
    parser.add_argument(
        "--prometheus-url", default=None, help="the Prometheus that scrapes the agents (usage)"
    )
    parser.add_argument(
        "--prices", type=Path, default=None, help="YAML: model -> {input, output} USD per 1M"
    )
    parser.add_argument(
        "--jaeger-url",
        default=None,
        help="the query address of the Jaeger v2 the agents export traces to "
        "(e.g. http://jaeger-query.observability:16686); folder mode without it keeps the "
        "traces the agents send the Studio",
    )
    args = parser.parse_args(argv)
    try:
        prices = load_prices(args.prices)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"agentspec studio: --prices: {e}", file=sys.stderr)
        return 2
    backend: Cluster | Folder
    if args.folder is not None:
        if not args.folder.is_dir():
            print(f"agentspec studio: {args.folder}: no such folder", file=sys.stderr)
            return 2
        backend = Folder(args.folder)
    else:
        try:
            backend = Cluster.from_kubeconfig(args.kubeconfig, args.context)
        except Exception as e:  # no kubeconfig, a broken one: say so, do not trace back
            print(f"agentspec studio: cannot read the kubeconfig: {e}", file=sys.stderr)
            return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"agentspec studio: warning: listening on {args.host}: whoever reaches it acts with "
            "your cluster credentials; put an authenticating proxy in front (docs/studio.md)",
            file=sys.stderr,
        )
    app = build_app(
        backend,
        Usage(args.prometheus_url, prices),
        jaeger_url=args.jaeger_url,
        hosts=allowed_hosts(args.host, args.port, args.allow_host),
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,  # open live streams must not hold Ctrl-C
    )
    where = f"folder {args.folder}" if args.folder else f"namespace {backend.namespace}"
    print(f"Agent Studio on http://{args.host}:{args.port} ({where})", flush=True)
    asyncio.run(uvicorn.Server(config).serve())
    return 0
