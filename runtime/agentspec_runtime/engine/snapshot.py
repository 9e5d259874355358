"""Immutable config snapshots, leased by requests, and the resources they share.

The hot-reload contract lives here: a request leases the snapshot current when it starts
and keeps it to the end; :meth:`SnapshotHolder.swap` makes a new snapshot current at once;
a retired snapshot releases its resources only when its last lease ends. Resources (model
clients, MCP connections) sit in a :class:`ResourcePool` keyed by their configuration, so a
reload that changes only the prompt reuses every live connection, and a connection no
snapshot uses any more is closed once the last snapshot holding it has drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from agentspec_runtime.spec.resolved import AgentConfig

from .errors import NotReadyError
from .ports import ContentGuard, MemoryStore, ModelClient, RateLimiter, TokenVerifier, Tool
from .prompts import PromptSelector
from .types import tool_name

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    value: Any
    close: Callable[[], Awaitable[None]]
    refs: int = 0


class ResourcePool:
    """Refcounted resources keyed by the configuration that built them."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._building: dict[str, asyncio.Future[_Entry]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(
        self,
        key: str,
        build: Callable[[], Awaitable[tuple[Any, Callable[[], Awaitable[None]]]]],
    ) -> Any:
        """The resource for ``key``, building it (once, even if asked concurrently).

        A waiter that is cancelled does not cancel the build (``shield``); a build whose own
        caller is cancelled lets the next waiter build instead; a build that fails fails
        every waiter with the same error.
        """
        while (entry := self._entries.get(key)) is None:
            pending = self._building.get(key)
            if pending is None:
                entry = await self._build(key, build)
                break
            try:
                entry = await asyncio.shield(pending)
                break
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and not (task and task.cancelling()):
                    continue  # the builder was cancelled, not us: build it ourselves
                raise
        entry.refs += 1
        return entry.value

    async def _build(
        self,
        key: str,
        build: Callable[[], Awaitable[tuple[Any, Callable[[], Awaitable[None]]]]],
    ) -> _Entry:
        pending: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._building[key] = pending
        try:
            value, close = await build()
        except BaseException as e:
            self._building.pop(key, None)
            if isinstance(e, Exception):
                pending.set_exception(e)
                pending.exception()  # marked retrieved: the waiters re-raise it themselves
            else:
                pending.cancel()
            raise
        self._building.pop(key, None)
        entry = _Entry(value, close)
        self._entries[key] = entry
        pending.set_result(entry)
        return entry

    def release(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del self._entries[key]
            task = asyncio.get_running_loop().create_task(self._close(key, entry))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(key: str, entry: _Entry) -> None:
        try:
            await entry.close()
        except Exception:  # a failing close must not take the engine down
            log.warning("closing %s failed", key, exc_info=True)

    def keys(self) -> set[str]:
        return set(self._entries)

    async def drain(self) -> None:
        """Wait until every pending close has finished."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


@dataclass
class ToolSource:
    """A live set of tools from one place (an MCP server, the partners, knowledge)."""

    name: str
    kind: Literal["mcp", "partner", "knowledge"]
    tools: Callable[[], list[Tool]]
    """The current tools; may change while the snapshot lives (list_changed)."""
    status: Callable[[], dict[str, Any]] = field(default=lambda: {})


@dataclass
class Snapshot:
    """Everything one request needs, frozen at the moment it was loaded."""

    config: AgentConfig
    revision: str
    prompts: PromptSelector
    model: ModelClient
    sources: list[ToolSource]
    resource_keys: list[str]
    api_keys: dict[str, str] = field(default_factory=dict)
    """Accepted inbound API keys -> consumer name."""
    jwt: TokenVerifier | None = None
    """Inbound JWTs (``spec.runtime.auth.jwt``). With neither keys nor this: no auth."""
    agents: TokenVerifier | None = None
    """Other agents' ServiceAccount tokens (``spec.runtime.auth.agents``)."""
    memory: MemoryStore | None = None
    """Conversation memory (None: memory type none)."""
    limiter: RateLimiter | None = None
    """Where the consumers' budgets are kept (None: no ``spec.runtime.rateLimit``)."""
    guard: ContentGuard | None = None
    """The content guard's checks (None: no ``spec.runtime.guard``)."""
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0
    retired: bool = False
    _on_drained: Callable[[Snapshot], None] | None = None

    def tools(self) -> dict[str, Tool]:
        """Tools by the name the model sees; names offered by several sources get prefixes."""
        offered = [(s.name, t) for s in self.sources for t in s.tools()]
        counts: dict[str, int] = {}
        for _, tool in offered:
            counts[tool.spec.name] = counts.get(tool.spec.name, 0) + 1
        named: dict[str, Tool] = {}
        for source, tool in offered:
            name = tool.spec.name
            wanted = tool_name(name if counts[name] == 1 else f"{source}__{name}")
            unique, n = wanted, 2
            while unique in named:  # sanitizing may merge names: keep every tool reachable
                unique, n = f"{wanted[:60]}_{n}", n + 1
            named[unique] = tool
        return named

    def _release_lease(self) -> None:
        self.leases -= 1
        if self.retired and self.leases == 0 and self._on_drained:
            self._on_drained(self)

    def _retire(self) -> None:
        self.retired = True
        if self.leases == 0 and self._on_drained:
            self._on_drained(self)


class SnapshotHolder:
    """The current snapshot, swapped atomically; retired snapshots free resources when idle."""

    def __init__(self, pool: ResourcePool) -> None:
        self._pool = pool
        self._current: Snapshot | None = None
        self._retired: list[Snapshot] = []

    @property
    def current(self) -> Snapshot | None:
        return self._current

    @contextmanager
    def lease(self, revision: str | None = None) -> Iterator[Snapshot]:
        """The current snapshot, or the one of ``revision`` while a retired one still
        serves (a resumed task continues on the config it started on when it can)."""
        snapshot = self._current
        if snapshot is None:
            raise NotReadyError("no configuration loaded yet")
        if revision is not None and snapshot.revision != revision:
            snapshot = next((s for s in self._retired if s.revision == revision), snapshot)
        snapshot.leases += 1
        try:
            yield snapshot
        finally:
            snapshot._release_lease()

    def swap(self, snapshot: Snapshot) -> Snapshot | None:
        snapshot._on_drained = self._drained
        old, self._current = self._current, snapshot
        if old is not None:
            self._retired.append(old)
            old._retire()
        return old

    def retiring(self) -> int:
        """Retired snapshots still serving in-flight requests."""
        return len(self._retired)

    def _drained(self, snapshot: Snapshot) -> None:
        if snapshot in self._retired:
            self._retired.remove(snapshot)
        for key in snapshot.resource_keys:
            self._pool.release(key)

    def close(self) -> None:
        """Retire the current snapshot too (shutdown)."""
        if self._current is not None:
            current, self._current = self._current, None
            self._retired.append(current)
            current._retire()
