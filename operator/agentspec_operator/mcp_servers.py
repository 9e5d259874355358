"""Reconcile each McpServer (the MCP registry): probe it on its interval, keep status true.

Writes happen only when something changed (tools, readiness, reason) or when the last
written ``lastProbeTime`` is at least one probe interval old, so a steady fleet of servers
costs one status write per server per interval at most — and nothing in between.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable

from .kube import Kube
from .probe import ProbeResult, as_seen_from, probe
from .status import mcp_server_status, same_status
from .world import MCP_SERVERS, Json, Key, World

log = logging.getLogger(__name__)

Prober = Callable[..., Awaitable[ProbeResult]]
FIRST_RETRY_SECONDS = 5.0
"""After a failed probe the next comes sooner than the interval — 5 s, 10 s, 20 s... up to
it — so a server created with its McpServer (its pod still starting) is seen Ready soon."""


def _age_seconds(stamp: str | None, now: str) -> float:
    if not stamp:
        return float("inf")
    parse = datetime.datetime.fromisoformat
    return (parse(now) - parse(stamp)).total_seconds()


class McpServerReconciler:
    def __init__(
        self, *, kube: Kube, world: World, now: Callable[[], str], prober: Prober = probe
    ) -> None:
        self.kube = kube
        self.world = world
        self._now = now
        self._probe = prober
        self.probes = 0
        self._failures: dict[Key, int] = {}

    async def reconcile(self, key: Key) -> float | None:
        """Probe and record; returns the delay until the next probe (None: server gone)."""
        body = self.world.body(MCP_SERVERS, key)
        server = self.world.mcp_server(key)
        if body is None or server is None:
            self._failures.pop(key, None)
            return None
        spec = server.spec
        self.probes += 1
        result = await self._probe(
            as_seen_from(spec.url, key[0]), transport=spec.transport, timeout=spec.timeout_seconds
        )
        if result.tools is None:
            log.info("McpServer %s/%s not ready: %s", *key, result.message)
        now = self._now()
        old: Json | None = body.get("status") or None
        status = mcp_server_status(
            generation=server.metadata.generation,
            tools=result.tools,
            error_reason=result.reason,
            error=result.message,
            old=old,
            now=now,
        )
        stale = _age_seconds((old or {}).get("lastProbeTime"), now) >= spec.probe_interval_seconds
        if stale or not same_status(status, old, ignore=("lastProbeTime",)):
            await self.kube.patch_status(
                "McpServer", namespace=key[0], name=key[1], status=status, old=old
            )
        interval = float(spec.probe_interval_seconds)
        if result.tools is not None:
            self._failures.pop(key, None)
            return interval
        failed = self._failures.get(key, 0)
        self._failures[key] = failed + 1
        return min(interval, FIRST_RETRY_SECONDS * float(2 ** min(failed, 16)))
