"""``agentspec runtime``: one agent process — config source, engine, API and metrics ports.

Config comes from ``--config FILE`` / ``AGENTSPEC_CONFIG`` (watched for changes) or, in a
cluster, from the agent's ConfigMap (``AGENT_NAME`` + ``POD_NAMESPACE``; watched through the
API). An invalid config at start-up stops the process with a clear message; an invalid
update later is rejected while the last good config keeps serving. SIGTERM drains: readiness
goes false, no new A2A task is leased, in-flight requests and tasks finish (within
``AGENTSPEC_DRAIN_SECONDS``), the tasks still running are handed back to the queue (another
replica resumes them at once), then the servers stop.

A2A tasks live in the store ``spec.tasks`` names (PostgreSQL), else in an SQLite file under
``AGENTSPEC_STATE_DIR`` (default ``/tmp/agentspec`` in a cluster, an emptyDir; the user's
state folder locally).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .adapters.config_sources import parse_config, parse_partner_urls, watch_file
from .adapters.openai_model import OpenAIModel
from .adapters.secrets import LocalSecrets
from .adapters.sql import Database, StoreUnavailableError, scope_name
from .api.a2a import durable_tasks
from .api.app import Lifecycle, api_app, metrics_app
from .api.tasks import TaskService
from .engine.agent import Engine
from .engine.errors import ConfigError
from .engine.memory import IN_PROCESS
from .engine.ports import (
    ContentGuard,
    DocumentsFeed,
    DocumentsPorts,
    Embedder,
    Endpoint,
    LimiterBuilder,
    McpConnection,
    MemoryBuilder,
    MemoryStore,
    ModelBuilder,
    ModelClient,
    PartnerConnection,
    RateLimiter,
    SecretResolver,
    TokenVerifier,
    VectorCache,
)
from .engine.telemetry import Metrics
from .spec.agent import EmbeddingsSpec, GuardSpec, JwtAuthSpec
from .spec.resolved import (
    AgentConfig,
    ResolvedMcpServer,
    ResolvedPartner,
    agent_audience,
    config_map_name,
    service_url,
)

if TYPE_CHECKING:
    from lightkube import AsyncClient

    from .adapters.workload_identity import InCluster, ServiceAccountTokens

log = logging.getLogger("agentspec.runtime")
RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class Settings:
    config_file: Path | None
    agent: str | None
    namespace: str
    config_map: str | None
    host: str
    port: int
    metrics_port: int
    max_body: int
    drain_seconds: float
    partner_urls: dict[str, str]
    max_hops: int
    drain_min_seconds: float
    public_url: str | None
    partner_timeout: float
    memory_override: str | None
    """Local mode: ``inMemory`` or a Redis URL that every agent's memory goes to."""
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    state_dir: Path = Path("/tmp/agentspec")  # noqa: S108 - the pod's emptyDir
    documents_dirs: list[Path] | None = None
    """Local mode: where a documents source's folder is looked for (else the config's)."""


def parse_args(argv: list[str], environ: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser(prog="agentspec runtime", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=environ.get("AGENTSPEC_CONFIG"),
        help="config file to run and watch (else the agent's ConfigMap)",
    )
    parser.add_argument(
        "--agent", default=environ.get("AGENT_NAME"), help="which AgentSpec to run (env AGENT_NAME)"
    )
    parser.add_argument(
        "--namespace", default=environ.get("POD_NAMESPACE"), help="namespace (env POD_NAMESPACE)"
    )
    parser.add_argument("--host", default=environ.get("AGENTSPEC_HOST", "0.0.0.0"))  # noqa: S104
    parser.add_argument("--port", type=int, default=int(environ.get("AGENTSPEC_PORT", "8080")))
    parser.add_argument(
        "--metrics-port", type=int, default=int(environ.get("AGENTSPEC_METRICS_PORT", "9090"))
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(environ.get("AGENTSPEC_MAX_BODY_BYTES", str(1 << 20))),
    )
    args = parser.parse_args(argv)
    memory_override = environ.get("AGENTSPEC_MEMORY") or None
    if memory_override not in (None, IN_PROCESS) and not str(memory_override).startswith(
        ("redis://", "rediss://")
    ):
        parser.error(f"AGENTSPEC_MEMORY must be {IN_PROCESS} or a redis:// URL")
    if args.config is None and not (args.agent and args.namespace):
        parser.error(
            "no config: pass --config FILE (or AGENTSPEC_CONFIG), or run in a cluster "
            "with AGENT_NAME and POD_NAMESPACE set"
        )
    return Settings(
        config_file=args.config,
        agent=args.agent,
        namespace=args.namespace or "default",
        config_map=environ.get("AGENTSPEC_CONFIGMAP"),
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        max_body=args.max_body_bytes,
        drain_seconds=float(environ.get("AGENTSPEC_DRAIN_SECONDS", "25")),
        partner_urls=parse_partner_urls(environ.get("AGENTSPEC_PARTNER_URLS")),
        max_hops=int(environ.get("AGENTSPEC_MAX_HOPS", "5")),
        drain_min_seconds=float(
            environ.get("AGENTSPEC_DRAIN_MIN_SECONDS", "0" if args.config else "3")
        ),
        public_url=environ.get("AGENTSPEC_PUBLIC_URL"),
        partner_timeout=float(environ.get("AGENTSPEC_PARTNER_TIMEOUT", "300")),
        memory_override=memory_override,
        header_timeout=float(environ.get("AGENTSPEC_HEADER_TIMEOUT_SECONDS", "10")),
        body_timeout=float(environ.get("AGENTSPEC_BODY_TIMEOUT_SECONDS", "30")),
        max_connections=int(environ.get("AGENTSPEC_MAX_CONNECTIONS", "1000")),
        state_dir=Path(environ.get("AGENTSPEC_STATE_DIR") or _default_state_dir(args, environ)),
        documents_dirs=[
            Path(d) for d in environ.get("AGENTSPEC_DOCUMENTS_DIR", "").split(os.pathsep) if d
        ]
        or None,
    )


def _default_state_dir(args: argparse.Namespace, environ: dict[str, str]) -> str:
    if args.config is None:
        return "/tmp/agentspec"  # noqa: S108 - in a pod: the emptyDir on /tmp
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "agentspec")


def model_builder(environ: dict[str, str], *, allow_demo: bool) -> ModelBuilder:
    """``allow_demo``: local mode may fall back to the offline demo model; a cluster never
    does (a missing endpoint there is a config error, not fake answers)."""

    async def build(
        config: AgentConfig, api_key: str | None, headers: dict[str, str]
    ) -> ModelClient:
        base_url = config.model.base_url or environ.get("OPENAI_BASE_URL")
        if not base_url:
            if not allow_demo:
                raise ConfigError(
                    "no model endpoint: set spec.model.baseUrl (or OPENAI_BASE_URL in the "
                    "runtime's environment)"
                )
            from .adapters.demo_model import DemoModel

            log.warning(
                "agent %s: no model endpoint (spec.model.baseUrl or OPENAI_BASE_URL): answering "
                "with the offline demo model, not a real LLM",
                config.name,
            )
            return DemoModel()
        return OpenAIModel(
            base_url=base_url,
            api_key=api_key or environ.get("OPENAI_API_KEY"),
            headers=headers,
            breaker_failures=int(environ.get("AGENTSPEC_MODEL_BREAKER_FAILURES", "5")),
            breaker_reset=float(environ.get("AGENTSPEC_MODEL_BREAKER_RESET_SECONDS", "30")),
        )

    return build


async def build_mcp(server: ResolvedMcpServer, endpoint: Endpoint) -> McpConnection:
    # Imported on first use: agents without MCP servers never pay for the mcp package.
    from .adapters.mcp_tools import connect_mcp

    return await connect_mcp(server, endpoint)


def embedder_builder(
    environ: dict[str, str],
) -> Callable[[EmbeddingsSpec, str | None], Awaitable[Embedder]]:
    async def build(spec: EmbeddingsSpec, api_key: str | None) -> Embedder:
        from .adapters.embeddings import OpenAIEmbedder

        if spec.base_url is not None:
            base_url, key = str(spec.base_url), api_key
        else:
            # the environment's endpoint (the chat model's too): the Secret's key, else the
            # environment's (never sent to a host the spec names)
            base_url = environ.get("OPENAI_BASE_URL", "")
            key = api_key or environ.get("OPENAI_API_KEY")
        if not base_url:
            raise ConfigError(
                f"embeddings model {spec.model!r}: no endpoint (set baseUrl, the chat model's "
                "baseUrl, or OPENAI_BASE_URL)"
            )
        return OpenAIEmbedder(model=spec.model, base_url=base_url, api_key=key)

    return build


async def build_jwt(spec: JwtAuthSpec) -> TokenVerifier:
    # Imported on first use: PyJWT and cryptography load only for agents that accept JWTs.
    from .adapters.jwt_auth import JwtVerifier

    return JwtVerifier(spec)


def memory_builder(agent: str) -> MemoryBuilder:
    async def build(url: str | None) -> MemoryStore:
        if url is None:
            from .adapters.memory_store import InMemoryStore

            return InMemoryStore()
        # Imported on first use: redis costs ~0.2 s of start-up that agents without it skip.
        from .adapters.redis_memory import connect_redis_memory

        return await connect_redis_memory(url, client_name=f"agentspec-{agent}")

    return build


async def build_guard(
    spec: GuardSpec, moderation_key: str | None, model_key: str | None
) -> ContentGuard:
    # Imported on first use: RE2 loads only for agents with a guard.
    from .adapters.content_guard import build_content_guard

    return await build_content_guard(spec, moderation_key, model_key)


def limiter_builder(agent: str) -> LimiterBuilder:
    async def build(url: str | None) -> RateLimiter:
        if url is None:
            from .adapters.rate_limits import InProcessLimiter

            return InProcessLimiter()
        from .adapters.redis_limits import connect_redis_limiter

        return await connect_redis_limiter(url, client_name=f"agentspec-{agent}-limits")

    return build


def configure_tracing(agent: str, environ: dict[str, str]) -> None:
    """Export spans over OTLP when the standard OTEL_* variables ask for it."""
    wanted = environ.get(
        "OTEL_TRACES_EXPORTER",
        "otlp"
        if any(
            k in environ
            for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        )
        else "none",
    )
    if wanted != "otlp":
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", agent)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits a slow or hostile client needs: a new
    connection beyond ``max_connections`` is closed at once, and a request whose headers have
    not all arrived ``header_timeout`` seconds after it began (or after the connection opened)
    is answered 408 and closed. (Bodies have their own timeout, in ``api.bodies``; idle
    keep-alive connections close after uvicorn's ``timeout_keep_alive``.)"""

    max_connections = 1000
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection refused: %d open (the limit)", self.max_connections)
            transport.abort()
            return
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is None:
            self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
                self.header_timeout, self._headers_too_slow
            )

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us (two servers share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn(app: Starlette, *, host: str, port: int, limits: Settings | None = None) -> _Server:
    protocol: type[HttpToolsProtocol] = HttpToolsProtocol
    if limits is not None:
        protocol = type(
            "AgentHttpProtocol",
            (GuardedHttpProtocol,),
            {"max_connections": limits.max_connections, "header_timeout": limits.header_timeout},
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        http=protocol,
        loop="none",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return _Server(config)


class Runtime:
    """Wires the engine to its config source and HTTP servers."""

    def __init__(self, settings: Settings, environ: dict[str, str]) -> None:
        self.settings = settings
        self.environ = environ
        self.stop = asyncio.Event()
        self.lifecycle = Lifecycle()
        self._kube: AsyncClient | None = None
        self._identity: InCluster | None = None
        self._tokens: ServiceAccountTokens | None = None
        if settings.config_file is None:  # a pod: its ServiceAccount is its identity
            from .adapters.workload_identity import InCluster, ServiceAccountTokens

            self._identity = InCluster.from_env(environ)
            if self._identity is not None:
                self._tokens = ServiceAccountTokens(self._identity)

    def _secrets(self) -> SecretResolver:
        if self.settings.config_file is not None:
            directory = self.environ.get("AGENTSPEC_SECRETS_DIR")
            return LocalSecrets(
                directory=Path(directory) if directory else None, environ=self.environ
            )
        from .adapters.secrets import KubeSecrets

        return KubeSecrets(self._kube_client(), namespace=self.settings.namespace)

    def _kube_client(self) -> AsyncClient:
        # Only the in-cluster mode needs lightkube; local mode never imports it.
        if self._kube is None:
            from lightkube import AsyncClient

            self._kube = AsyncClient()
        return self._kube

    def _source(self) -> AsyncIterator[str | Exception]:
        s = self.settings
        if s.config_file is not None:
            return watch_file(s.config_file, stop=self.stop)
        assert s.agent is not None
        from .adapters.config_sources import watch_config_map

        return watch_config_map(
            self._kube_client(),
            name=s.config_map or config_map_name(s.agent),
            namespace=s.namespace,
            stop=self.stop,
        )

    async def _build_partner(
        self, partner: ResolvedPartner, endpoint: Endpoint
    ) -> PartnerConnection:
        from .adapters.partners import connect_partner

        tokens = self._tokens
        audience = agent_audience(partner.namespace, partner.name)
        return await connect_partner(
            partner,
            endpoint,
            # in a cluster: the pod's ServiceAccount token minted for this partner alone
            identity=None if tokens is None else lambda: tokens.token(audience),
            call_timeout=self.settings.partner_timeout,
            breaker_failures=int(self.environ.get("AGENTSPEC_BREAKER_FAILURES", "3")),
            breaker_reset=float(self.environ.get("AGENTSPEC_BREAKER_RESET_SECONDS", "30")),
        )

    def _documents_feed(self, name: str) -> DocumentsFeed:
        s = self.settings
        if s.config_file is None:
            from .adapters.documents import ConfigMapDocuments

            return ConfigMapDocuments(self._kube_client(), name=name, namespace=s.namespace)
        from .adapters.documents import FolderDocuments

        return FolderDocuments(name, s.documents_dirs or [s.config_file.parent])

    async def _vector_cache(self, url: str | None) -> VectorCache:
        if url is None:
            from .adapters.embeddings import FolderVectorCache

            return FolderVectorCache(self.settings.state_dir / "vectors")
        from .adapters.embeddings import RedisVectorCache
        from .adapters.redis_conn import open_redis

        client = await open_redis(url, client_name="agentspec-vectors", purpose="vector cache")
        return RedisVectorCache(client, url)

    async def _build_agents(self, audience: str) -> TokenVerifier:
        from .adapters.workload_identity import cluster_verifier

        assert self._identity is not None
        return await cluster_verifier(self._identity, audience)

    def _public_url(self, agent: str) -> str:
        """Where callers reach this agent: its Service in a cluster, else this process."""
        s = self.settings
        if s.public_url:
            return s.public_url
        if s.config_file is None:
            return service_url(agent, s.namespace)
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host  # noqa: S104
        return f"http://{host}:{s.port}"

    async def run(self) -> int:
        s = self.settings
        source = self._source()
        first = await anext(source)
        if isinstance(first, Exception):
            print(f"agentspec runtime: {first}", file=sys.stderr)
            return 2
        try:
            config = parse_config(
                first, agent=s.agent, namespace=s.namespace, partner_urls=s.partner_urls
            )
        except ConfigError as e:
            print(f"agentspec runtime: invalid config: {e}", file=sys.stderr)
            return 2
        configure_tracing(config.name, self.environ)
        engine = Engine(
            agent=config.name,
            metrics=Metrics(agent=config.name),
            secrets=self._secrets(),
            build_model=model_builder(self.environ, allow_demo=s.config_file is not None),
            build_mcp=build_mcp,
            build_partner=self._build_partner,
            build_memory=memory_builder(config.name),
            build_jwt=build_jwt,
            build_limiter=limiter_builder(config.name),
            build_guard=build_guard,
            build_agents=self._build_agents if self._identity is not None else None,
            documents=DocumentsPorts(
                feed=self._documents_feed,
                embedder=embedder_builder(self.environ),
                cache=self._vector_cache,
            ),
            memory_override=s.memory_override,
        )
        try:
            await engine.load(config)
        except ConfigError as e:
            print(f"agentspec runtime: cannot load config: {e}", file=sys.stderr)
            return 2
        try:
            db = await self._task_store(config)
        except (ConfigError, StoreUnavailableError) as e:
            print(f"agentspec runtime: task store: {e}", file=sys.stderr)
            await engine.aclose()
            return 2
        tasks, card = durable_tasks(
            engine,
            db,
            spec=config.tasks,
            holder=self._holder(),
            base_url=self._public_url(config.name),
        )
        try:
            await tasks.start()
        except StoreUnavailableError as e:
            print(f"agentspec runtime: task store: {e}", file=sys.stderr)
            await db.close()
            await engine.aclose()
            return 2
        api = _uvicorn(
            api_app(
                engine,
                lifecycle=self.lifecycle,
                tasks=tasks,
                card=card,
                max_body=s.max_body,
                body_timeout=s.body_timeout,
                max_hops=s.max_hops,
            ),
            host=s.host,
            port=s.port,
            limits=s,
        )
        metrics = _uvicorn(metrics_app(engine), host=s.host, port=s.metrics_port, limits=s)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        watcher = loop.create_task(self._watch(engine, source, tasks))
        servers = [loop.create_task(api.serve()), loop.create_task(metrics.serve())]
        log.info(
            "agent %s serving on %s:%d (metrics :%d), config %s",
            config.name,
            s.host,
            s.port,
            s.metrics_port,
            config.revision(),
        )
        stopped = loop.create_task(self.stop.wait())
        await asyncio.wait([stopped, *servers], return_when=asyncio.FIRST_COMPLETED)
        await self._drain(engine, tasks)
        api.should_exit = metrics.should_exit = True
        await asyncio.gather(*servers, return_exceptions=True)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await db.close()  # after the servers: GetTask and friends answer until the end
        await engine.aclose()
        return 0

    async def _task_store(self, config: AgentConfig) -> Database:
        """The PostgreSQL database ``spec.tasks`` names, else this agent's SQLite file.
        Tried for up to ``AGENTSPEC_STORE_WAIT_SECONDS`` (30): a database starting with the
        agent is waited for; one that stays down fails the start, visibly."""
        from .adapters.sql import connect

        ref = config.tasks.store_url_secret_ref
        if ref is None:
            path = self.settings.state_dir / f"{config.namespace}-{config.name}" / "tasks.db"
            return await connect(f"sqlite://{path}")
        url = (await self._secrets().get(ref)).strip()
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"spec.tasks.storeUrlSecretRef ({ref.name}/{ref.key}) must hold a postgresql:// URL"
            )
        deadline = time.monotonic() + float(self.environ.get("AGENTSPEC_STORE_WAIT_SECONDS", "30"))
        while True:
            try:
                return await connect(url, scope=scope_name(config.namespace, config.name))
            except StoreUnavailableError as e:
                if time.monotonic() >= deadline or self.stop.is_set():
                    raise
                log.warning("agent %s: task store not reachable yet: %s", config.name, e)
                await asyncio.sleep(2.0)

    def _holder(self) -> str:
        """Who holds a lease: the pod (or host), this process, and a nonce (a restarted
        container must not pass for its predecessor)."""
        name = self.environ.get("POD_NAME") or socket.gethostname()
        return f"{name}/{os.getpid()}/{uuid.uuid4().hex[:8]}"

    async def _watch(
        self, engine: Engine, source: AsyncIterator[str | Exception], tasks: TaskService
    ) -> None:
        """Load every new config. A rejected one is tried again every ``RETRY_SECONDS``: what
        it lacked (a Secret created after its reference, a server) may appear meanwhile."""
        pending: asyncio.Task[str | Exception] | None = None
        last_text: str | None = None
        while True:
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=RETRY_SECONDS)
            if done:
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
            elif last_text is not None and engine.state.last_error is not None:
                item = last_text  # retry the rejected config as it is
            else:
                continue
            if isinstance(item, Exception):
                # the source hiccuped (watch expired, API unreachable): not a bad config
                engine.state.source_error = str(item)
                log.warning("agent %s: config source: %s", engine.agent, item)
                continue
            engine.state.source_error = None
            last_text = item
            try:
                await self._apply(engine, item, tasks)
            except Exception:  # never let one bad update end hot reload
                log.exception("agent %s: applying a config update failed", engine.agent)

    async def _apply(self, engine: Engine, text: str, tasks: TaskService) -> None:
        s = self.settings
        try:
            config = parse_config(
                text,
                agent=s.agent or engine.agent,
                namespace=s.namespace,
                partner_urls=s.partner_urls,
            )
        except ConfigError as e:
            if str(e) != engine.state.last_error:
                engine.reject(str(e))
            return
        if config.revision() == engine.state.revision:
            return
        with contextlib.suppress(ConfigError):  # recorded by the engine
            await engine.load(config)
            if config.tasks.fixed_for_the_process() != tasks.spec.fixed_for_the_process():
                tasks.restart_pending = True
                log.warning(
                    "agent %s: spec.tasks changed: the task store and leases change when the "
                    "runtime restarts (the operator rolls the pods)",
                    engine.agent,
                )

    async def _drain(self, engine: Engine, tasks: TaskService) -> None:
        """Readiness false first, so the Service stops sending, and no new task is leased;
        then let requests and tasks finish; hand back the tasks still running.

        In a cluster it waits at least ``AGENTSPEC_DRAIN_MIN_SECONDS`` (default 3): until the
        endpoint is removed, kube-proxy may still route new requests here.
        """
        self.lifecycle.draining = True
        tasks.worker.stop_leasing()
        started = time.monotonic()
        deadline = started + self.settings.drain_seconds
        await asyncio.sleep(self.settings.drain_min_seconds)
        while time.monotonic() < deadline:
            current = engine.holder.current
            if (current is None or current.leases == 0) and engine.holder.retiring() == 0:
                break
            await asyncio.sleep(0.05)
        await tasks.stop(grace=0)


def main(argv: list[str] | None = None) -> int:
    environ = dict(os.environ)
    settings = parse_args(list(argv or []), environ)
    logging.basicConfig(
        level=environ.get("AGENTSPEC_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s [{settings.agent or 'agent'}] %(name)s: %(message)s",
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    runtime = Runtime(settings, environ)
    try:
        import uvloop

        return uvloop.run(runtime.run())
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
        return asyncio.run(runtime.run())
