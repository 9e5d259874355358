"""Every interface the adapters implement for the engine — open this module first.

The engine talks to the outside only through these ports; each adapter module implements one
of them (``adapters/openai_model.py`` → :class:`ModelClient`, ``adapters/mcp_tools.py`` →
:class:`McpConnection`, ``adapters/partners.py`` → :class:`PartnerConnection`,
``adapters/secrets.py`` → :class:`SecretResolver`, ``adapters/memory_store.py`` and
``adapters/redis_memory.py`` → :class:`MemoryStore`, ``adapters/task_queue.py`` →
:class:`TaskJournal`, ``adapters/jwt_auth.py`` → :class:`TokenVerifier`,
``adapters/rate_limits.py`` and ``adapters/redis_limits.py`` → :class:`RateLimiter`,
``adapters/content_guard.py`` → :class:`ContentGuard`, ``adapters/documents.py`` →
:class:`DocumentsFeed`, ``adapters/embeddings.py`` → :class:`Embedder` and
:class:`VectorCache`), and the entry
point (``server.py``) hands the engine a *builder* per port, so the engine never imports an
adapter.

What every implementation must guarantee:

* **Errors are the engine's** (``engine/errors.py``), mapped at the adapter boundary with
  ``raise … from e``, classified by what the caller does next: :class:`~.errors.ConfigError`
  rejects a config (raised while building), :class:`~.errors.ModelError` and its subclasses
  fail the request, :class:`~.errors.ToolError` goes back to the model as text,
  :class:`~.errors.MemoryUnavailableError` answers 503. No library exception crosses a port.
* **Cancellation**: every coroutine may be cancelled (the caller left, a request timed out);
  it must release what it holds and let ``CancelledError`` propagate, never swallow it.
* **Sharing**: one instance serves many concurrent requests and several snapshots (the
  resource pool shares connections across hot reloads); it holds no per-request state.
* **Closing**: ``aclose`` is called once, after the last snapshot using it has drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentspec_runtime.spec._base import SecretKeySelector
from agentspec_runtime.spec.agent import EmbeddingsSpec, GuardSpec, JwtAuthSpec
from agentspec_runtime.spec.resolved import AgentConfig, ResolvedMcpServer, ResolvedPartner

from .journal import Entry
from .memory import History, Summary
from .types import Message, ModelParams, ModelTurn, OnDelta, ToolResult, ToolSpec

__all__ = [
    "AgentsVerifierBuilder",
    "ContentGuard",
    "DocumentsFeed",
    "DocumentsPorts",
    "Embedder",
    "Endpoint",
    "GuardBuilder",
    "GuardVerdict",
    "LimiterBuilder",
    "Limits",
    "McpBuilder",
    "McpConnection",
    "MemoryBuilder",
    "MemoryStore",
    "ModelBuilder",
    "ModelClient",
    "PartnerBuilder",
    "PartnerConnection",
    "RateDecision",
    "RateLimiter",
    "SecretResolver",
    "TaskJournal",
    "TokenVerifier",
    "Tool",
    "VectorCache",
    "VerifierBuilder",
]


class ModelClient(Protocol):
    """A chat model, one implementation per wire format (OpenAI chat completions today)."""

    @property
    def endpoint(self) -> str:
        """Where the model lives, for /status (no credentials)."""
        ...

    async def complete(
        self,
        *,
        params: ModelParams,
        messages: list[Message],
        tools: list[ToolSpec],
        on_delta: OnDelta | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelTurn:
        """One chat completion, streamed to ``on_delta`` when given.

        Retries what is worth retrying itself; raises ``ModelError`` (``ModelAuthError``,
        ``ModelNotFoundError``) when it finally fails. ``headers`` (trace context, hop count)
        go on this request only. ``messages`` is the loop's live list, valid for this call
        only: an implementation that keeps it (a retry queue, lazy logging) must copy it."""
        ...

    def status(self) -> dict[str, Any]:
        """For /status: ``endpoint`` (no credentials) and ``circuit`` (closed, open,
        half-open)."""
        ...

    async def aclose(self) -> None: ...


class Tool(Protocol):
    """One callable tool: an MCP tool, a partner agent, a knowledge source."""

    @property
    def spec(self) -> ToolSpec: ...

    @property
    def source(self) -> Literal["mcp", "partner", "knowledge"]: ...

    @property
    def target(self) -> str:
        """What the call reaches, by the spec's name for it: the MCP server, the partner
        (``namespace/name``), the knowledge source — the topology's edge (a metric label:
        bounded by the spec)."""
        ...

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> str | ToolResult:
        """Run the tool for the conversation ``context_id`` (a partner continues it).

        ``call_key`` is stable across runs of one durable task's step (None otherwise): a
        tool that can deduplicate on it does (a partner derives the A2A ``messageId`` from
        it, so a repeated call returns the partner's existing task).

        Raises ``ToolError`` with a message for the model on any failure (unreachable,
        refused, invalid arguments, timeout); never another exception."""
        ...


class McpConnection(Protocol):
    """A live connection to one MCP server; it reconnects by itself and never raises from
    ``tools()`` (a server that is down offers no tools until it is back)."""

    def tools(self) -> list[Tool]: ...

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """The input schema of tool ``name`` as the server lists it, whether or not the
        allow-list offers it to the model (None: the server does not list it)."""
        ...

    async def call(
        self, name: str, arguments: dict[str, Any], *, headers: Mapping[str, str]
    ) -> str:
        """Call tool ``name`` (the allow-list aside); raises ``ToolError`` on any failure."""
        ...

    def status(self) -> dict[str, Any]:
        """For /status: connected, tool names, last error (no credentials)."""
        ...

    async def aclose(self) -> None: ...


class PartnerConnection(Protocol):
    """A client of one partner agent, offered to the model as one tool."""

    @property
    def tool(self) -> Tool: ...

    def status(self) -> dict[str, Any]:
        """For /status: URL, circuit breaker state, last error (no credentials)."""
        ...

    async def aclose(self) -> None: ...


class SecretResolver(Protocol):
    """Secret values by reference (the Kubernetes API in a cluster, files or env locally)."""

    async def get(self, ref: SecretKeySelector) -> str:
        """The value of a Secret key; raises ``ConfigError`` naming it (never the value)."""
        ...

    async def get_all(self, name: str) -> dict[str, str]:
        """Every key of a Secret; raises ``ConfigError`` naming it when unavailable."""
        ...


class MemoryStore(Protocol):
    """Where conversations live. Raises ``MemoryUnavailableError`` when it cannot answer."""

    @property
    def location(self) -> str:
        """Where, for /status (no credentials)."""
        ...

    async def load(self, key: str, *, last: int | None = None) -> History:
        """The conversation: its summary and its stored turns, only the ``last`` ones if set."""
        ...

    async def append(self, key: str, messages: Sequence[Message], *, tokens: int, ttl: int) -> None:
        """Add one turn (its seq is the next one) and keep the conversation ``ttl`` seconds."""
        ...

    async def fold(self, key: str, summary: Summary, *, after: int, ttl: int) -> bool:
        """Replace the turns up to ``summary.through`` by ``summary`` if the stored summary
        still ends at ``after`` (0: none); False when someone else folded first. Atomic:
        replicas sharing the store may fold the same conversation at once."""
        ...

    async def aclose(self) -> None: ...


class TokenVerifier(Protocol):
    """Inbound bearer tokens (JWTs) checked against their issuer's published keys."""

    async def verify(self, token: str) -> str:
        """The consumer the token names; raises ``UnauthorizedError`` (why, for the log,
        never for the caller) for any token that is not valid here."""
        ...

    def status(self) -> dict[str, Any]:
        """For /status: the issuer, when the keys were fetched, the last fetch error."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """One consumer's budgets over the sliding window (None: that dimension is unlimited)."""

    tokens: int | None
    requests: int | None


@dataclass(frozen=True, slots=True)
class RateDecision:
    """What a limiter decided, with what the caller is told (OpenAI's x-ratelimit-*).

    ``retry_after``: seconds until the refused charge would fit (0 when admitted; ``inf``
    when it can never fit). ``*_reset``: seconds until the window holds nothing of this
    consumer's any more. ``reservation`` names the token charge, to settle afterwards."""

    allowed: bool
    limits: Limits
    tokens_remaining: int | None
    requests_remaining: int | None
    retry_after: float
    tokens_reset: float
    requests_reset: float
    reservation: str | None = None


class RateLimiter(Protocol):
    """Budgets per consumer over a sliding window, charged atomically (every replica that
    shares the store sees one budget). Raises ``LimiterUnavailableError`` when its store
    does not answer."""

    @property
    def location(self) -> str:
        """Where the windows live (``in-process`` or a Redis URL without credentials)."""
        ...

    async def charge(self, key: str, limits: Limits, *, tokens: int, requests: int) -> RateDecision:
        """Charge ``tokens`` and ``requests`` to ``key`` if both fit its ``limits``, else
        nothing. A token charge is a reservation: settle it with the real figure."""
        ...

    async def settle(self, key: str, reservation: str, tokens: int, *, reserved: int) -> None:
        """Replace a reservation (of ``reserved`` tokens) by what was really spent: a
        refund, or an extra charge — charged now when the reservation already left the
        window."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """A classifier's answer about one text: flagged or not, and under which category."""

    flagged: bool
    check: str
    """``moderation`` or ``model``."""
    category: str | None = None


class ContentGuard(Protocol):
    """The checks of ``spec.runtime.guard``: deny patterns (linear-time regular expressions)
    and classifiers (a moderation endpoint, a guard model)."""

    def matches(self, text: str, pos: int = 0) -> list[tuple[int, int, int]]:
        """Every denyPatterns match from ``pos`` on (the text before it still anchors ``\b``
        and the like): (start, end, pattern index), in characters."""
        ...

    @property
    def classifies(self) -> bool:
        """Whether there is a classifier (else :meth:`classify` always passes)."""
        ...

    async def classify(
        self, text: str, *, stage: str, context: str | None = None
    ) -> GuardVerdict | None:
        """A flagging verdict of the classifiers, or None when every one passes. A text a
        classifier refuses to judge (too long, a verdict that is neither) is flagged
        ``unverifiable``. Raises ``GuardUnavailableError`` when one cannot answer (down,
        timeout, 5xx, 429, our credentials refused) and none flagged. ``context``: the
        caller's message an output answers (a guard model judges the exchange)."""
        ...

    def status(self) -> dict[str, Any]:
        """For /status: the checks and each classifier's last error."""
        ...

    async def aclose(self) -> None: ...


class TaskJournal(Protocol):
    """The step journal of one durable task (engine/journal.py says what is recorded).

    ``append`` raises ``CheckpointError`` when the entry cannot be recorded: the store did
    not answer, or this replica no longer holds the task (the write is fenced by its lease).
    The loop then stops; it never runs a step it could not record first."""

    async def load(self) -> list[Entry]:
        """Every entry recorded so far, oldest first."""
        ...

    async def append(self, entry: Entry) -> None: ...


class DocumentsFeed(Protocol):
    """The documents of one ConfigMap (a folder of files locally), now and on every change."""

    @property
    def location(self) -> str:
        """Where they are read from, for /status (``ConfigMap ns/name``, a folder)."""
        ...

    def watch(self, stop: asyncio.Event) -> AsyncIterator[Mapping[str, str] | Exception]:
        """Every key's text now, then again after each change, until ``stop``; a failure
        (unreadable, deleted, forbidden) is yielded as ``ConfigError`` and watching goes on."""
        ...


class Embedder(Protocol):
    """An embeddings model: one vector per text, in order."""

    @property
    def identity(self) -> str:
        """Model and endpoint: two embedders with one identity give the same vectors."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Raises ``ToolError`` (the endpoint failed, refused or answered nonsense)."""
        ...

    async def aclose(self) -> None: ...


class VectorCache(Protocol):
    """Vectors by content hash, shared by replicas (Redis) or restarts (a local folder).
    Best effort: a cache that fails reads as a miss and drops writes, never raises."""

    @property
    def location(self) -> str: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def put_many(self, items: Mapping[str, bytes]) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class DocumentsPorts:
    """What the ``documents`` knowledge sources need from the outside."""

    feed: Callable[[str], DocumentsFeed]
    """The feed of a ConfigMap, by name (this agent's namespace)."""
    embedder: Callable[[EmbeddingsSpec, str | None], Awaitable[Embedder]]
    """An embedder from its spec (base URL resolved) and API key (secret read)."""
    cache: Callable[[str | None], Awaitable[VectorCache]]
    """The vector cache: in this Redis (URL, secrets read), else on local disk (None)."""


@dataclass(frozen=True)
class Endpoint:
    """Resolved values for one outbound connection: secrets already read."""

    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    """The values that came from Secrets: masked in any text the upstream sends back before
    it is logged or shown to the model (a server may echo what it was sent)."""


ModelBuilder = Callable[[AgentConfig, str | None, dict[str, str]], Awaitable[ModelClient]]
"""Builds a model client from the config, the API key (if any) and extra headers; raises
``ConfigError`` when the config names no usable endpoint."""
McpBuilder = Callable[[ResolvedMcpServer, Endpoint], Awaitable[McpConnection]]
"""Builds a connection to an MCP server; a server that is down is not an error (it is
retried in the background)."""
PartnerBuilder = Callable[[ResolvedPartner, Endpoint], Awaitable[PartnerConnection]]
"""Builds a partner client from its resolved entry and its headers (secrets already read)."""
MemoryBuilder = Callable[[str | None], Awaitable[MemoryStore]]
"""Builds a conversation store: in-process for None, else for a Redis URL (secrets read);
raises ``ConfigError`` when the store cannot be reached."""
VerifierBuilder = Callable[[JwtAuthSpec], Awaitable[TokenVerifier]]
"""Builds a JWT verifier for ``spec.runtime.auth.jwt`` (its keys are fetched on first use)."""
LimiterBuilder = Callable[[str | None], Awaitable[RateLimiter]]
"""Builds a rate limiter: in-process for None, else on a Redis URL (secrets read); raises
``ConfigError`` when Redis cannot be reached."""
GuardBuilder = Callable[[GuardSpec, str | None, str | None], Awaitable[ContentGuard]]
"""Builds the content guard from its spec and the API keys of the moderation endpoint and the
guard model (secrets read); raises ``ConfigError`` for a pattern RE2 cannot compile."""
AgentsVerifierBuilder = Callable[[str], Awaitable[TokenVerifier]]
"""Builds the verifier of other agents' ServiceAccount tokens for this agent's audience
(``spec.runtime.auth.agents``; a cluster only); raises ``ConfigError`` when the cluster's
issuer cannot be discovered."""
