"""The engine: loads configs into snapshots (hot reload) and runs requests on them.

:meth:`Engine.load` builds a complete snapshot off the request path — secrets read, model
client and MCP connections acquired from the pool — and only then swaps it in. Anything
that fails leaves the previous snapshot serving and is recorded as the last reload error
(visible in ``status()`` and the reload metric).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import SpanKind, Status, StatusCode

from agentspec_runtime.spec._base import NamedValue, SecretKeySelector
from agentspec_runtime.spec.resolved import (
    AgentConfig,
    ResolvedMcpServer,
    ResolvedPartner,
    unsupported_fields,
)

from . import memory as mem
from . import telemetry as t
from .errors import AgentspecError, ConfigError
from .loop import AgentRequest, AgentResult, AgentRun
from .prompts import PromptSelector
from .snapshot import ResourcePool, Snapshot, SnapshotHolder, ToolSource
from .telemetry import Metrics
from .types import ModelClient, OnDelta, Tool

log = logging.getLogger(__name__)


class SecretResolver(Protocol):
    async def get(self, ref: SecretKeySelector) -> str:
        """The value of a Secret key; raises ``ConfigError`` naming it when unavailable."""
        ...

    async def get_all(self, name: str) -> dict[str, str]:
        """Every key of a Secret; raises ``ConfigError`` naming it when unavailable."""
        ...


class McpConnection(Protocol):
    """A live connection to one MCP server (reconnects by itself)."""

    def tools(self) -> list[Tool]: ...

    def status(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """Resolved values for one outbound connection: secrets already read."""

    headers: dict[str, str]
    params: dict[str, str]


ModelBuilder = Callable[[AgentConfig, str | None, dict[str, str]], Awaitable[ModelClient]]
"""Builds a model client from the config, the API key (if any) and extra headers."""
McpBuilder = Callable[[ResolvedMcpServer, Endpoint], Awaitable[McpConnection]]


class PartnerConnection(Protocol):
    """A client for one partner agent, exposed to the model as one tool."""

    @property
    def tool(self) -> Tool: ...

    def status(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


PartnerBuilder = Callable[[ResolvedPartner, dict[str, str]], Awaitable[PartnerConnection]]
"""Builds a partner client from its resolved entry and its headers (secrets already read)."""
MemoryBuilder = Callable[[str | None], Awaitable[mem.MemoryStore]]
"""Builds a conversation store: in-process for None, else for a Redis URL (secrets read);
it raises ``ConfigError`` when the store cannot be reached."""


@dataclass
class ReloadState:
    revision: str | None = None
    loaded_at: float | None = None
    applied: int = 0
    rejected: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    source_error: str | None = None
    """The config source is failing (API unreachable, watch expired): not a bad config."""


def _key(kind: str, *parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:20]}"


class Engine:
    """One agent: its current snapshot, its resources and its metrics."""

    def __init__(
        self,
        *,
        agent: str,
        metrics: Metrics,
        secrets: SecretResolver,
        build_model: ModelBuilder,
        build_mcp: McpBuilder,
        build_partner: PartnerBuilder | None = None,
        build_memory: MemoryBuilder | None = None,
        memory_override: str | None = None,
    ) -> None:
        """``memory_override`` (local mode): every agent's memory goes in-process
        (``"inMemory"``) or to this Redis URL, whatever its spec says; type none stays none."""
        self.agent = agent
        self.metrics = metrics
        self._secrets = secrets
        self._build_model = build_model
        self._build_mcp = build_mcp
        self._build_partner = build_partner
        self._build_memory = build_memory
        self._memory_override = memory_override
        self.pool = ResourcePool()
        self.holder = SnapshotHolder(self.pool)
        self.state = ReloadState()

    # -- loading ------------------------------------------------------------------------

    async def load(self, config: AgentConfig) -> Snapshot:
        """Build a snapshot for ``config`` and make it current; raise ``ConfigError`` if not."""
        if config.name != self.agent:
            raise self.reject(f"config is for agent {config.name!r}, this is {self.agent!r}")
        unsupported = unsupported_fields(config)
        if unsupported:
            raise self.reject("; ".join(unsupported))
        try:
            snapshot = await self._build(config)
        except AgentspecError as e:
            raise self.reject(str(e)) from e
        except Exception as e:  # a bug or an unmapped library error: still only a rejection
            log.exception("agent %s: building config %s failed", self.agent, config.revision())
            raise self.reject(f"the config could not be loaded ({type(e).__name__})") from e
        self.holder.swap(snapshot)
        self.state.revision = snapshot.revision
        self.state.loaded_at = snapshot.loaded_at
        self.state.applied += 1
        self.state.last_error = None
        self.metrics.loaded(snapshot.revision)
        log.info(
            "agent %s: config %s loaded (prompt versions %s)",
            self.agent,
            snapshot.revision,
            snapshot.prompts.versions,
        )
        return snapshot

    def reject(self, message: str) -> ConfigError:
        """Record an invalid config (the last good one keeps serving); return the error."""
        self.state.rejected += 1
        self.state.last_error = message
        self.state.last_error_at = time.time()
        self.metrics.reloads.labels(self.agent, "rejected").inc()
        log.error(
            "agent %s: config rejected, keeping revision %s: %s",
            self.agent,
            self.state.revision,
            message,
        )
        return ConfigError(message)

    async def _build(self, config: AgentConfig) -> Snapshot:
        keys: list[str] = []
        try:
            model = await self._acquire_model(config, keys)
            sources = [await self._acquire_mcp(server, keys) for server in config.mcp_servers]
            sources += [await self._acquire_partner(p, keys) for p in config.partners]
            memory = await self._acquire_memory(config, keys)
            return Snapshot(
                config=config,
                revision=config.revision(),
                prompts=PromptSelector(config.prompt),
                model=model,
                sources=sources,
                resource_keys=keys,
                api_keys=await self._api_keys(config),
                memory=memory,
            )
        except BaseException:
            for key in keys:
                self.pool.release(key)
            raise

    async def _acquire_partner(self, partner: ResolvedPartner, keys: list[str]) -> ToolSource:
        if self._build_partner is None:
            raise ConfigError("this runtime cannot call partner agents")
        build_partner = self._build_partner
        headers = await self._values(partner.headers)
        key = _key("partner", partner.model_dump(mode="json"), headers)

        async def build() -> tuple[PartnerConnection, Callable[[], Awaitable[None]]]:
            connection = await build_partner(partner, headers)
            return connection, connection.aclose

        connection: PartnerConnection = await self.pool.acquire(key, build)
        keys.append(key)
        return ToolSource(
            name=partner.name,
            kind="partner",
            tools=lambda: [connection.tool],
            status=connection.status,
        )

    async def _acquire_memory(self, config: AgentConfig, keys: list[str]) -> mem.MemoryStore | None:
        spec = config.memory
        if spec.type == "none":
            return None
        if self._build_memory is None:
            raise ConfigError("this runtime has no conversation memory")
        url: str | None = None
        if self._memory_override is not None:
            url = None if self._memory_override == mem.IN_PROCESS else self._memory_override
        elif spec.type == "redis":
            if spec.url is not None:
                url = spec.url
            elif spec.url_secret_ref is not None:
                url = await self._secrets.get(spec.url_secret_ref)
        build_memory = self._build_memory
        # one store per location: a reload that keeps it keeps every conversation
        key = _key("memory", url)

        async def build() -> tuple[mem.MemoryStore, Callable[[], Awaitable[None]]]:
            store = await build_memory(url)
            return store, store.aclose

        store: mem.MemoryStore = await self.pool.acquire(key, build)
        keys.append(key)
        return store

    async def _api_keys(self, config: AgentConfig) -> dict[str, str]:
        """Accepted inbound API keys -> consumer (the key's name in the Secret)."""
        name = config.auth.api_keys_secret_ref if config.auth else None
        if not name:
            return {}
        keys = {value: key for key, value in (await self._secrets.get_all(name)).items() if value}
        if not keys:
            raise ConfigError(f"Secret {name!r} holds no API keys")
        return keys

    async def _values(self, values: list[NamedValue]) -> dict[str, str]:
        out: dict[str, str] = {}
        for value in values:
            if value.value is not None:
                out[value.name] = value.value
            elif value.value_from is not None:
                out[value.name] = await self._secrets.get(value.value_from.secret_key_ref)
        return out

    async def _acquire_model(self, config: AgentConfig, keys: list[str]) -> ModelClient:
        ref = config.model.api_key_secret_ref
        api_key = await self._secrets.get(ref) if ref else None
        headers = await self._values(config.model.headers)
        spec = config.model
        key = _key("model", spec.base_url, spec.timeout_seconds, api_key, headers)

        async def build() -> tuple[ModelClient, Callable[[], Awaitable[None]]]:
            client = await self._build_model(config, api_key, headers)
            return client, client.aclose

        client: ModelClient = await self.pool.acquire(key, build)
        keys.append(key)
        return client

    async def _acquire_mcp(self, server: ResolvedMcpServer, keys: list[str]) -> ToolSource:
        endpoint = Endpoint(
            headers=await self._values(server.headers),
            params=await self._values(server.query_params),
        )
        key = _key("mcp", server.model_dump(mode="json"), endpoint.headers, endpoint.params)

        async def build() -> tuple[McpConnection, Callable[[], Awaitable[None]]]:
            connection = await self._build_mcp(server, endpoint)
            return connection, connection.aclose

        connection: McpConnection = await self.pool.acquire(key, build)
        keys.append(key)
        return ToolSource(
            name=server.name, kind="mcp", tools=connection.tools, status=connection.status
        )

    # -- serving ------------------------------------------------------------------------

    async def run(
        self, request: AgentRequest, *, on_delta: OnDelta | None = None, api: str = "openai"
    ) -> AgentResult:
        """Run one request on the snapshot current when it starts."""
        started = time.perf_counter()
        outcome = "error"
        self.metrics.inflight.labels(self.agent).inc()
        try:
            with (
                self.holder.lease() as snapshot,
                t.TRACER.start_as_current_span(
                    f"invoke_agent {self.agent}",
                    kind=SpanKind.INTERNAL,
                    attributes={
                        t.OPERATION: "invoke_agent",
                        t.AGENT_NAME: self.agent,
                        t.CONVERSATION_ID: request.context_id,
                        t.CONFIG_REVISION: snapshot.revision,
                    },
                ) as span,
            ):
                try:
                    agent_run = AgentRun(snapshot, request, metrics=self.metrics, on_delta=on_delta)
                    span.set_attribute(t.PROMPT_VERSION, agent_run.prompt.version)
                    span.set_attribute(t.PROMPT_VARIANT, agent_run.prompt.variant)
                    result = await agent_run.run()
                except AgentspecError as e:
                    span.set_status(Status(StatusCode.ERROR, str(e)))
                    raise
                span.set_attribute(t.INPUT_TOKENS, result.usage.input_tokens)
                span.set_attribute(t.OUTPUT_TOKENS, result.usage.output_tokens)
                outcome = "ok"
                return result
        finally:
            self.metrics.inflight.labels(self.agent).dec()
            self.metrics.requests.labels(self.agent, api, outcome).inc()
            self.metrics.request_seconds.labels(self.agent, api).observe(
                time.perf_counter() - started
            )

    # -- state --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.holder.current is not None

    def status(self) -> dict[str, Any]:
        snapshot = self.holder.current
        state = self.state
        status: dict[str, Any] = {
            "agent": self.agent,
            "ready": snapshot is not None,
            "configRevision": state.revision,
            "loadedAt": state.loaded_at,
            "reloads": {"applied": state.applied, "rejected": state.rejected},
            "lastReloadError": state.last_error,
            "lastReloadErrorAt": state.last_error_at,
            "configSourceError": state.source_error,
            "retiringSnapshots": self.holder.retiring(),
        }
        if snapshot is not None:
            config = snapshot.config
            status.update(
                namespace=config.namespace,
                generation=config.generation,
                model=config.model.model,
                modelEndpoint=snapshot.model.endpoint,
                promptVersions=snapshot.prompts.versions,
                inflight=snapshot.leases,
                mcpServers=[
                    {"name": s.name, **s.status()} for s in snapshot.sources if s.kind == "mcp"
                ],
                partners=[
                    {"name": s.name, **s.status()} for s in snapshot.sources if s.kind == "partner"
                ],
                tools=sorted(snapshot.tools()),
                memory=mem.describe(config.memory, snapshot.memory),
            )
        return status

    async def aclose(self) -> None:
        self.holder.close()
        await self.pool.drain()
