"""``agentspec operator``: flags → settings → kopf running the handlers, standalone.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf

from .controller import Controller
from .errors import OperatorError
from .handlers import build_registry, configure
from .kube import KEDA_CRD, Kube
from .leader import LeaderElector
from .mcp_servers import McpServerReconciler
from .reconcile import Reconciler, utc_now
from .render import OPTIONAL_KINDS
from .render_meta import MANAGED_BY
from .settings import (
    CUSTOM_METRICS_API_SERVICES,
    DEFAULT_PROMETHEUS_URL,
    DEFAULT_RATE_WINDOW,
    RATE_WINDOW,
    OperatorSettings,
    PrometheusAuth,
    Selector,
    otel_passthrough,
    runtime_image_from_env,
)
from .world import World

log = logging.getLogger("agentspec_operator")


def _selectors(text: str | None) -> tuple[Selector, ...]:
    """A JSON NetworkPolicy peer, or a list of them."""
    if not text:
        return ()
    value = json.loads(text)
    peers = value if isinstance(value, list) else [value]
    if not all(isinstance(p, dict) for p in peers):
        raise argparse.ArgumentTypeError("expected a JSON object or a list of objects")
    return tuple(peers)


DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
AUTH_MODES = re.compile(r"^(bearer|basic|tls|custom)(,(bearer|basic|tls|custom))*$")


def _http_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a URL: {e}") from e
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or (parts.port is not None and not 1 <= parts.port <= 65535)
        or any(c.isspace() for c in text)
    ):
        raise argparse.ArgumentTypeError(
            "expected an http(s) URL without credentials (give KEDA those with "
            "--prometheus-auth, a ClusterTriggerAuthentication)"
        )
    return text.rstrip("/")


def _rate_window(text: str) -> str:
    if not RATE_WINDOW.match(text):
        raise argparse.ArgumentTypeError(
            "expected a Prometheus duration of at least 10s in s, m or h, such as 30s or 1m"
        )
    return text


def _prometheus_auth(text: str) -> PrometheusAuth | None:
    """``<ClusterTriggerAuthentication>:<authModes>``, e.g. ``prometheus-token:bearer``."""
    if not text:
        return None
    name, _, modes = text.partition(":")
    if not DNS_NAME.match(name) or not AUTH_MODES.match(modes):
        raise argparse.ArgumentTypeError(
            "expected <ClusterTriggerAuthentication name>:<authModes>, e.g. "
            "prometheus-token:bearer (modes: bearer, basic, tls, custom, comma-separated)"
        )
    return PrometheusAuth(name=name, modes=modes)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="agentspec operator", description=__doc__)
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable; glob patterns allowed). Default: all",
    )
    p.add_argument(
        "--runtime-image",
        default=runtime_image_from_env(),
        help="default runtime image (env AGENTSPEC_RUNTIME_IMAGE)",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig file (else $KUBECONFIG, else in-cluster)",
    )
    p.add_argument(
        "--gateway-peers",
        type=_selectors,
        default=_selectors(env("AGENTSPEC_GATEWAY_PEERS")),
        help="JSON NetworkPolicy peer(s) also allowed on the API port "
        "(env AGENTSPEC_GATEWAY_PEERS)",
    )
    p.add_argument(
        "--monitoring-peers",
        type=_selectors,
        default=_selectors(env("AGENTSPEC_MONITORING_PEERS")),
        help="JSON NetworkPolicy peer(s) allowed on the metrics port "
        "(env AGENTSPEC_MONITORING_PEERS)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=int(env("AGENTSPEC_HEALTH_PORT", "0")),
        help="serve /healthz on this port (0: off)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("AGENTSPEC_METRICS_PORT", "0")),
        help="serve Prometheus /metrics on this port (0: off)",
    )
    p.add_argument(
        "--prometheus-url",
        type=_http_url,
        default=env("AGENTSPEC_PROMETHEUS_URL") or DEFAULT_PROMETHEUS_URL,
        help="the Prometheus KEDA's tokens/s triggers query (env AGENTSPEC_PROMETHEUS_URL)",
    )
    p.add_argument(
        "--prometheus-auth",
        type=_prometheus_auth,
        default=env("AGENTSPEC_PROMETHEUS_AUTH", ""),  # a string: argparse applies type=
        help="<ClusterTriggerAuthentication>:<authModes> KEDA authenticates to Prometheus with "
        "(env AGENTSPEC_PROMETHEUS_AUTH); default: none",
    )
    p.add_argument(
        "--scaling-rate-window",
        type=_rate_window,
        default=env("AGENTSPEC_SCALING_RATE_WINDOW") or DEFAULT_RATE_WINDOW,
        help="window of the tokens/s rate autoscaling acts on; at least 4 scrape intervals",
    )
    p.add_argument("--workers", type=int, default=32, help="concurrent reconciles")
    p.add_argument(
        "--resync-seconds", type=float, default=300.0, help="re-apply every child this often"
    )
    p.add_argument(
        "--stalled-retry-seconds",
        type=float,
        default=10.0,
        help="look again at a Stalled agent this often",
    )
    p.add_argument("--log-level", default=env("AGENTSPEC_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--leader-election",
        action="store_true",
        default=env("AGENTSPEC_LEADER_ELECTION", "") in ("1", "true"),
        help="run as one of several replicas: only the Lease holder reconciles",
    )
    p.add_argument("--lease-name", default="agentspec-operator")
    p.add_argument(
        "--lease-namespace",
        default=env("POD_NAMESPACE", "default"),
        help="namespace of the Lease (env POD_NAMESPACE)",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=15.0,
        help="lease duration: a dead leader is replaced within about this long",
    )
    p.add_argument(
        "--identity",
        default=env("POD_NAME", f"{socket.gethostname()}-{os.getpid()}"),
        help="this replica's name in the Lease (env POD_NAME)",
    )
    return p


async def _standby_health(port: int) -> asyncio.Server | None:
    """While standby, answer the liveness probe (kopf serves it once this replica leads)."""
    if not port:
        return None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.readline()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nstandby\n"
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "0.0.0.0", port)  # noqa: S104


async def elected(args: argparse.Namespace, stop: asyncio.Event) -> LeaderElector | None:
    """Block as a standby until this replica leads; None when stopped first."""
    elector = LeaderElector(
        # its own client and connections: renewals never queue behind a reconcile burst
        kube=Kube.connect(args.kubeconfig),
        name=args.lease_name,
        namespace=args.lease_namespace,
        identity=args.identity,
        duration=args.lease_seconds,
    )
    health = await _standby_health(args.health_port)
    try:
        if await elector.acquire(stop):
            return elector
    finally:
        if health is not None:
            health.close()
            await health.wait_closed()
    await elector.release()
    await elector.kube.close()
    return None


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    elector = None
    lost = asyncio.Event()
    fence: Callable[[], bool] = lambda: True  # noqa: E731
    if args.leader_election:
        elector = await elected(args, stop)
        if elector is None:
            return 0
        fence = elector.leads
        hold = loop.create_task(elector.hold(lost, stop))
        # Any end of the renew loop but a stop (lost Lease, an exception) stops reconciling;
        # the fence has already refused every write since the last renewal grew too old.
        # (hold sets lost only on its way out, so this covers a lost Lease too)
        hold.add_done_callback(lambda _: stop.set())
    try:
        await _operate(args, stop, fence=fence)
    finally:
        if elector is not None:
            hold.cancel()
            if not lost.is_set():
                await elector.release()
            await elector.kube.close()
    return 1 if lost.is_set() else 0


async def _custom_metrics_served(kube: Kube) -> bool:
    """Whether a custom metrics adapter serves; True (no warning) when RBAC forbids asking."""
    try:
        for name in CUSTOM_METRICS_API_SERVICES:
            if await kube.api_service_available(name):
                return True
    except OperatorError as e:
        log.info("cannot tell whether the custom metrics API is served: %s", e)
        return True
    return False


async def _operate(
    args: argparse.Namespace, stop: asyncio.Event, *, fence: Callable[[], bool]
) -> None:
    kube = Kube.connect(args.kubeconfig, fence=fence)
    await kube.wait_served(
        ("AgentSpec", "PromptTemplate", "McpServer"), namespaces=args.namespace or ["*"]
    )
    keda = await kube.crd_exists(KEDA_CRD)
    custom_metrics = await _custom_metrics_served(kube)
    op_settings = OperatorSettings(
        runtime_image=args.runtime_image,
        otel_env=otel_passthrough(os.environ),
        gateway_peers=args.gateway_peers,
        monitoring_peers=args.monitoring_peers,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        stalled_retry_seconds=args.stalled_retry_seconds,
        keda_available=keda,
        custom_metrics_available=custom_metrics,
        prometheus_url=args.prometheus_url,
        prometheus_auth=args.prometheus_auth,
        scaling_rate_window=args.scaling_rate_window,
    )
    ref: list[Controller] = []
    registry = build_registry(ref)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        configure(settings)
        world = World(kwargs)
        reconciler = Reconciler(kube=kube, world=world, settings=op_settings)
        # Which optional children exist, so pruning never needs a DELETE to find out.
        # Listed per watched namespace when they are plain names: RBAC may be namespaced.
        plain = args.namespace and not any(set(n) & set("*?[!") for n in args.namespace)
        for kind in OPTIONAL_KINDS:
            if kind == "ScaledObject" and not keda:
                continue
            for namespace in args.namespace if plain else ["*"]:
                for ns, name in await kube.names(
                    kind,
                    label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}",
                    namespace=namespace,
                ):
                    reconciler.optional_present.add((kind, ns, name))
        mcp = McpServerReconciler(kube=kube, world=world, now=utc_now)
        controller = Controller(reconciler=reconciler, mcp=mcp, settings=op_settings)
        ref.append(controller)
        controller.start()
        log.info(
            "agentspec operator ready (image %s, %s, KEDA %s)",
            op_settings.runtime_image,
            ",".join(args.namespace) or "all namespaces",
            "found" if keda else "absent",
        )

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return info

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if ref:
            await ref[0].stop()
        await kube.close()

    if args.metrics_port:
        from .metrics import serve_metrics

        serve_metrics(args.metrics_port, ref)
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
        stop_flag=stop,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else None
    if argv and argv[0] == "--":
        argv = argv[1:]  # `agentspec operator -- --flag` (the CLI's REMAINDER needs the `--`)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every event at DEBUG and its handler bookkeeping at INFO: keep ours readable.
    quiet = max(logging.WARNING, logging.getLogger().level)
    for noisy in ("kopf", "httpx2", "httpx", "mcp", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(quiet)
    if args.kubeconfig:
        # kopf's own client logs in from $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 0
