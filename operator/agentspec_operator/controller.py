"""Routing causes to keys, and workers draining the queues.

kopf's watch handlers call the ``on_*`` methods here; each only decides *which* keys need a
look (the agent itself, the dependants of a PromptTemplate/McpServer/partner, the owner of a
child) and adds them to a :class:`WorkQueue`. Workers call the reconcilers. Failures are
retried with backoff; a Stalled agent is looked at again after a delay (a missing Secret has
no watch). Status-only updates of an AgentSpec are not causes: the operator wrote them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import NamespaceGoingError, PermanentError, TemporaryError
from .mcp_servers import McpServerReconciler
from .reconcile import Reconciler
from .render_meta import AGENT_LABEL
from .settings import OperatorSettings
from .workqueue import WorkQueue
from .world import AGENTS, PROMPTS, Json, Key, World

log = logging.getLogger(__name__)

ACCEPT_CALLERS = "agentspec.io/accept-callers-from"
PROBE_WORKERS = 4
Fingerprint = tuple[Any, ...]


def _fingerprint(body: Json) -> Fingerprint:
    """What of an object can change its children: not status, not resourceVersion."""
    meta = body.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        (meta.get("annotations") or {}).get(ACCEPT_CALLERS),
        bool(meta.get("deletionTimestamp")),
    )


def _partners(namespace: str, spec: Json) -> set[Key]:
    return {(p.get("namespace") or namespace, p["name"]) for p in spec.get("partners") or []}


class Controller:
    def __init__(
        self, *, reconciler: Reconciler, mcp: McpServerReconciler, settings: OperatorSettings
    ) -> None:
        self.reconciler = reconciler
        self.mcp = mcp
        self.world: World = reconciler.world
        self.settings = settings
        self.agents: WorkQueue[Key] = WorkQueue()
        self.prompts: WorkQueue[Key] = WorkQueue()
        self.probes: WorkQueue[Key] = WorkQueue()
        self._seen: dict[tuple[str, Key], Fingerprint] = {}
        self._agent_prompt: dict[Key, str | None] = {}
        self._agent_partners: dict[Key, set[Key]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        for _ in range(s.workers):
            self._spawn(self._work(self.agents, self.reconciler.reconcile_agent))
        for _ in range(max(1, s.workers // 8)):
            self._spawn(self._work(self.prompts, self._prompt))
        for _ in range(PROBE_WORKERS):
            self._spawn(self._work(self.probes, self.mcp.reconcile))
        self._spawn(self._resync_forever())

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for queue in (self.agents, self.prompts, self.probes):
            queue.close()

    async def _prompt(self, key: Key) -> None:
        await self.reconciler.reconcile_prompt(key)

    async def _work(
        self, queue: WorkQueue[Key], handler: Callable[[Key], Awaitable[float | None]]
    ) -> None:
        while True:
            key = await queue.get()
            try:
                again = await handler(key)
            except TemporaryError as e:
                delay = queue.retry(key, e.delay)
                log.warning("%s/%s: %s (retry in %.1fs)", *key, e, delay)
            except NamespaceGoingError as e:
                queue.forget(key)
                log.info("%s/%s: %s; nothing to do", *key, e)
            except PermanentError as e:
                # Retrying as is cannot help, but the world may change (RBAC fixed, namespace
                # recreated): look again after the longest backoff.
                delay = queue.retry(key, 60.0)
                log.error("%s/%s: %s", *key, e)
            except Exception:
                delay = queue.retry(key)
                log.exception("%s/%s: unexpected error (retry in %.1fs)", *key, delay)
            else:
                queue.forget(key)
                if again is not None:
                    queue.add_after(key, again)
            finally:
                queue.done(key)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.reconciler.resync()
            for key in self.world.keys(AGENTS):
                self.agents.add(key)
            for key in self.world.keys(PROMPTS):
                self.prompts.add(key)

    # --- causes ------------------------------------------------------------------------

    def _changed(self, kind: str, key: Key, body: Json, deleted: bool) -> bool:
        if deleted:
            self._seen.pop((kind, key), None)
            return True
        fingerprint = _fingerprint(body)
        if self._seen.get((kind, key)) == fingerprint:
            return False
        self._seen[(kind, key)] = fingerprint
        return True

    def on_agent(self, key: Key, body: Json, *, deleted: bool) -> None:
        if not self._changed("agent", key, body, deleted):
            return
        spec = body.get("spec") or {}
        prompt = None if deleted else (spec.get("promptRef") or {}).get("name")
        partners = set() if deleted else _partners(key[0], spec)
        # Prompt status lists its users; a partner's NetworkPolicy lists its callers.
        for name in {self._agent_prompt.get(key), prompt} - {None}:
            self.prompts.add((key[0], str(name)))
        for partner in self._agent_partners.get(key, set()) | partners:
            self.agents.add(partner)
        # Agents that call this one resolve it (existence, description, consent).
        for caller in self.world.callers(key):
            self.agents.add(caller)
        if deleted:
            self._agent_prompt.pop(key, None)
            self._agent_partners.pop(key, None)
        else:
            self._agent_prompt[key] = prompt
            self._agent_partners[key] = partners
        self.agents.add(key)

    def on_prompt(self, key: Key, body: Json, *, deleted: bool) -> None:
        if not self._changed("prompt", key, body, deleted):
            return
        for user in self.world.prompt_users(key):
            self.agents.add((key[0], user))
        if not deleted:
            self.prompts.add(key)

    def on_mcp_server(self, key: Key, body: Json, *, deleted: bool) -> None:
        if not self._changed("mcp", key, body, deleted):
            return
        for user in self.world.mcp_users(key):
            self.agents.add((key[0], user))
        if not deleted:
            self.probes.add(key)

    def on_child(self, kind: str, body: Json, *, deleted: bool) -> None:
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(AGENT_LABEL)
        if not owner:
            return
        child = (kind, meta.get("namespace", ""), meta.get("name", ""))
        rv = None if deleted else meta.get("resourceVersion")
        if self.reconciler.child_changed(child, rv):
            self.agents.add((child[1], owner))
