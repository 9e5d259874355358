"""Assembling an agent from its config: a complete :class:`Snapshot`, off the request path.

:class:`Assembler` reads the config's secrets and acquires every resource the snapshot uses —
the model client, a connection per MCP server, a client per partner, the memory store — from
the :class:`ResourcePool`, each under a key that hashes everything that built it: a reload
that changes only the prompt reuses every live connection, one that changes a server's header
gets a new connection for that server alone. One acquire path serves every kind of resource.
If any part fails, what was acquired is released: nothing half-built ever serves.

Must not: swap the snapshot in (``agent.Engine.load`` does), or import an adapter (the
builders come from the entry point, see ``ports``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agentspec_runtime.spec._base import NamedValue
from agentspec_runtime.spec.agent import KnowledgeSource
from agentspec_runtime.spec.resolved import (
    AgentConfig,
    ResolvedMcpServer,
    ResolvedPartner,
    agent_audience,
)

from . import memory as mem
from .documents import DocumentsKnowledge
from .errors import ConfigError
from .knowledge import DocumentsKnowledgeTool, McpKnowledgeTool, PartnerKnowledgeTool
from .ports import (
    AgentsVerifierBuilder,
    ContentGuard,
    DocumentsPorts,
    Embedder,
    Endpoint,
    GuardBuilder,
    LimiterBuilder,
    McpBuilder,
    McpConnection,
    MemoryBuilder,
    MemoryStore,
    ModelBuilder,
    ModelClient,
    PartnerBuilder,
    PartnerConnection,
    RateLimiter,
    SecretResolver,
    TokenVerifier,
    VectorCache,
    VerifierBuilder,
)
from .prompts import PromptSelector
from .snapshot import ResourcePool, Snapshot, ToolSource


class _Closeable(Protocol):
    async def aclose(self) -> None: ...


R = TypeVar("R", bound=_Closeable)


@dataclass(frozen=True)
class Builders:
    """The ports' factories, handed over by the entry point."""

    model: ModelBuilder
    mcp: McpBuilder
    partner: PartnerBuilder | None = None
    memory: MemoryBuilder | None = None
    jwt: VerifierBuilder | None = None
    limiter: LimiterBuilder | None = None
    guard: GuardBuilder | None = None
    agents: AgentsVerifierBuilder | None = None
    documents: DocumentsPorts | None = None


def _from_secrets(declared: list[NamedValue], resolved: dict[str, str]) -> tuple[str, ...]:
    return tuple(resolved[v.name] for v in declared if v.value_from is not None)


def resource_key(kind: str, *identity: Any) -> str:
    """The pool key of a resource: its kind and a hash of everything that built it."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:20]}"


class Assembler:
    def __init__(
        self,
        *,
        secrets: SecretResolver,
        builders: Builders,
        pool: ResourcePool,
        memory_override: str | None = None,
    ) -> None:
        """``memory_override`` (local mode): every agent's memory goes in-process
        (``"inMemory"``) or to this Redis URL, whatever its spec says; type none stays none."""
        self._secrets = secrets
        self._builders = builders
        self._pool = pool
        self._memory_override = memory_override

    async def snapshot(self, config: AgentConfig) -> Snapshot:
        """Everything ``config`` needs, acquired; raises ``ConfigError`` (nothing is held)."""
        keys: list[str] = []
        try:
            model = await self._model(config, keys)
            connections = {
                server.name: await self._mcp(server, keys) for server in config.mcp_servers
            }
            sources = [
                ToolSource(name=name, kind="mcp", tools=c.tools, status=c.status)
                for name, c in connections.items()
            ]
            partners = {p.name: await self._partner(p, keys) for p in config.partners}
            sources += [_partner_source(name, c) for name, c in partners.items()]
            sources += [
                await self._knowledge(k, config, connections, partners, keys)
                for k in config.knowledge
            ]
            return Snapshot(
                config=config,
                revision=config.revision(),
                prompts=PromptSelector(config.prompt),
                model=model,
                sources=sources,
                resource_keys=keys,
                api_keys=await self._api_keys(config),
                jwt=await self._jwt(config, keys),
                agents=await self._agents(config, keys),
                memory=await self._memory(config, keys),
                limiter=await self._limiter(config, keys),
                guard=await self._guard(config, keys),
            )
        except BaseException:
            for key in keys:
                self._pool.release(key)
            raise

    async def _acquire(self, keys: list[str], key: str, build: Callable[[], Awaitable[R]]) -> R:
        """The pooled resource for ``key`` (built once, shared by every snapshot using it)."""

        async def make() -> tuple[R, Callable[[], Awaitable[None]]]:
            value = await build()
            return value, value.aclose

        value: R = await self._pool.acquire(key, make)
        keys.append(key)
        return value

    async def _model(self, config: AgentConfig, keys: list[str]) -> ModelClient:
        spec = config.model
        api_key = (
            await self._secrets.get(spec.api_key_secret_ref) if spec.api_key_secret_ref else None
        )
        headers = await self._values(spec.headers)
        # per-call settings (timeout, retries) are not part of it: changing them keeps the
        # client, its connections and its circuit breaker
        key = resource_key("model", spec.base_url, api_key, headers)
        return await self._acquire(
            keys, key, lambda: self._builders.model(config, api_key, headers)
        )

    async def _mcp(self, server: ResolvedMcpServer, keys: list[str]) -> McpConnection:
        headers = await self._values(server.headers)
        params = await self._values(server.query_params)
        endpoint = Endpoint(
            headers=headers,
            params=params,
            secrets=_from_secrets(server.headers, headers)
            + _from_secrets(server.query_params, params),
        )
        key = resource_key("mcp", server.model_dump(mode="json"), endpoint.headers, endpoint.params)
        return await self._acquire(keys, key, lambda: self._builders.mcp(server, endpoint))

    async def _partner(self, partner: ResolvedPartner, keys: list[str]) -> PartnerConnection:
        build = self._builders.partner
        if build is None:
            raise ConfigError("this runtime cannot call partner agents")
        headers = await self._values(partner.headers)
        endpoint = Endpoint(headers=headers, secrets=_from_secrets(partner.headers, headers))
        key = resource_key("partner", partner.model_dump(mode="json"), headers)
        return await self._acquire(keys, key, lambda: build(partner, endpoint))

    async def _knowledge(
        self,
        source: KnowledgeSource,
        config: AgentConfig,
        connections: dict[str, McpConnection],
        partners: dict[str, PartnerConnection],
        keys: list[str],
    ) -> ToolSource:
        """A knowledge source as a tool source, over the connection or index it reads."""
        described: dict[str, Any] = {"topK": source.top_k}
        tool: McpKnowledgeTool | PartnerKnowledgeTool | DocumentsKnowledgeTool
        if source.mcp_tool is not None:
            connection = connections.get(source.mcp_tool.server)
            if connection is None:
                raise ConfigError(
                    f"knowledge source {source.name!r}: MCP server {source.mcp_tool.server!r} "
                    "is not in spec.mcpServers"
                )
            tool = McpKnowledgeTool(source, connection)
            described |= {"server": source.mcp_tool.server, "tool": source.mcp_tool.tool}
            return _knowledge_source(source, tool, lambda: described)
        if source.partner is not None:
            partner = partners.get(source.partner.name)
            if partner is None:
                raise ConfigError(
                    f"knowledge source {source.name!r}: agent {source.partner.name!r} is not "
                    "in spec.partners"
                )
            tool = PartnerKnowledgeTool(source, partner.tool)
            described |= {"partner": source.partner.name}
            return _knowledge_source(source, tool, lambda: described)
        knowledge = await self._documents(source, config, keys)
        tool = DocumentsKnowledgeTool(source, knowledge)
        return _knowledge_source(source, tool, lambda: {**described, **knowledge.status()})

    async def _documents(
        self, source: KnowledgeSource, config: AgentConfig, keys: list[str]
    ) -> DocumentsKnowledge:
        """The source's index, shared by every snapshot with the same documents, chunking
        and embedder: a reload that changes anything else keeps it (and does not re-read or
        re-embed a thing)."""
        spec = source.documents
        assert spec is not None
        ports = self._builders.documents
        if ports is None:
            raise ConfigError(
                f"knowledge source {source.name!r}: this runtime cannot index documents"
            )
        embedder: Embedder | None = None
        cache: VectorCache | None = None
        parts: list[str] = []
        if spec.embeddings is not None:
            embeddings = spec.embeddings
            api_key = (
                await self._secrets.get(embeddings.api_key_secret_ref)
                if embeddings.api_key_secret_ref
                else None
            )
            key = resource_key("embedder", embeddings.model_dump(mode="json"), api_key)
            embedder = await self._acquire(keys, key, lambda: ports.embedder(embeddings, api_key))
            # vectors live where the conversations do: Redis (every replica shares them)
            # when memory is there, else this machine's disk
            url = await self._redis_url(config) if config.memory.type != "none" else None
            cache_key = resource_key("vectors", url)
            cache = await self._acquire(keys, cache_key, lambda: ports.cache(url))
            parts = [key, cache_key]
        # the index holds its embedder and cache: a new key or cache is a new index (read
        # from the cache), never an old index calling a closed client
        identity = resource_key("documents", spec.model_dump(mode="json"), *parts)

        async def build() -> DocumentsKnowledge:
            knowledge = DocumentsKnowledge(
                spec, feed=ports.feed(spec.config_map), embedder=embedder, cache=cache
            )
            return await knowledge.start()

        return await self._acquire(keys, identity, build)

    async def _memory(self, config: AgentConfig, keys: list[str]) -> MemoryStore | None:
        if config.memory.type == "none":
            return None
        build = self._builders.memory
        if build is None:
            raise ConfigError("this runtime has no conversation memory")
        url = await self._redis_url(config)
        # one store per location: a reload that keeps it keeps every conversation
        return await self._acquire(keys, resource_key("memory", url), lambda: build(url))

    async def _limiter(self, config: AgentConfig, keys: list[str]) -> RateLimiter | None:
        """The consumers' budgets live where the conversations do: in Redis when memory is
        (shared by every replica), else in this process. One limiter per location, kept
        across reloads: a budget change never resets what was spent."""
        if config.rate_limit is None:
            return None
        build = self._builders.limiter
        if build is None:
            raise ConfigError("this runtime cannot enforce spec.runtime.rateLimit")
        url = await self._redis_url(config) if config.memory.type != "none" else None
        return await self._acquire(keys, resource_key("limiter", url), lambda: build(url))

    async def _guard(self, config: AgentConfig, keys: list[str]) -> ContentGuard | None:
        spec = config.guard
        if spec is None:
            return None
        build = self._builders.guard
        if build is None:
            raise ConfigError("this runtime cannot apply spec.runtime.guard")
        moderation_key = (
            await self._secrets.get(spec.moderation_api_key_secret_ref)
            if spec.moderation_api_key_secret_ref
            else None
        )
        model_key = (
            await self._secrets.get(spec.model.api_key_secret_ref)
            if spec.model and spec.model.api_key_secret_ref
            else None
        )
        key = resource_key("guard", spec.model_dump(mode="json"), moderation_key, model_key)
        return await self._acquire(keys, key, lambda: build(spec, moderation_key, model_key))

    async def _redis_url(self, config: AgentConfig) -> str | None:
        """The Redis the agent's memory uses (None: in this process)."""
        if self._memory_override is not None:
            return None if self._memory_override == mem.IN_PROCESS else self._memory_override
        spec = config.memory
        if spec.type != "redis":
            return None
        if spec.url is not None:
            return spec.url
        if spec.url_secret_ref is not None:
            return await self._secrets.get(spec.url_secret_ref)
        return None

    async def _api_keys(self, config: AgentConfig) -> dict[str, str]:
        """Accepted inbound API keys -> consumer (the key's name in the Secret)."""
        name = config.auth.api_keys_secret_ref if config.auth else None
        if not name:
            return {}
        keys = {value: key for key, value in (await self._secrets.get_all(name)).items() if value}
        if not keys:
            raise ConfigError(f"Secret {name!r} holds no API keys")
        return keys

    async def _jwt(self, config: AgentConfig, keys: list[str]) -> TokenVerifier | None:
        spec = config.auth.jwt if config.auth else None
        if spec is None:
            return None
        build = self._builders.jwt
        if build is None:
            raise ConfigError("this runtime cannot verify JWTs (spec.runtime.auth.jwt)")
        # one verifier (and its cached keys) per setting: a reload that keeps it keeps the keys
        key = resource_key("jwt", spec.model_dump(mode="json"))
        return await self._acquire(keys, key, lambda: build(spec))

    async def _agents(self, config: AgentConfig, keys: list[str]) -> TokenVerifier | None:
        if config.auth is None or config.auth.agents is None:
            return None
        build = self._builders.agents
        if build is None:
            raise ConfigError(
                "spec.runtime.auth.agents: agents' identities are ServiceAccounts, which only "
                "a cluster has (remove the field to run locally)"
            )
        audience = agent_audience(config.namespace, config.name)
        return await self._acquire(keys, resource_key("agents", audience), lambda: build(audience))

    async def _values(self, values: list[NamedValue]) -> dict[str, str]:
        """Literal values as they are, Secret references read."""
        out: dict[str, str] = {}
        for value in values:
            if value.value is not None:
                out[value.name] = value.value
            elif value.value_from is not None:
                out[value.name] = await self._secrets.get(value.value_from.secret_key_ref)
        return out


def _partner_source(name: str, connection: PartnerConnection) -> ToolSource:
    return ToolSource(
        name=name, kind="partner", tools=lambda: [connection.tool], status=connection.status
    )


def _knowledge_source(
    source: KnowledgeSource,
    tool: McpKnowledgeTool | PartnerKnowledgeTool | DocumentsKnowledgeTool,
    status: Callable[[], dict[str, Any]],
) -> ToolSource:
    return ToolSource(name=source.name, kind="knowledge", tools=lambda: [tool], status=status)
