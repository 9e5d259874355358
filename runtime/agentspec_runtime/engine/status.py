"""What ``/status`` says about an agent: the reload history and the snapshot serving now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentspec_runtime.spec.resolved import allowed_callers

from . import memory as mem
from .snapshot import SnapshotHolder


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


def engine_status(agent: str, *, holder: SnapshotHolder, state: ReloadState) -> dict[str, Any]:
    snapshot = holder.current
    status: dict[str, Any] = {
        "agent": agent,
        "ready": snapshot is not None,
        "configRevision": state.revision,
        "loadedAt": state.loaded_at,
        "reloads": {"applied": state.applied, "rejected": state.rejected},
        "lastReloadError": state.last_error,
        "lastReloadErrorAt": state.last_error_at,
        "configSourceError": state.source_error,
        "retiringSnapshots": holder.retiring(),
    }
    if snapshot is not None:
        config = snapshot.config
        status.update(
            namespace=config.namespace,
            generation=config.generation,
            model=config.model.model,
            modelEndpoint=snapshot.model.endpoint,
            modelCircuit=snapshot.model.status().get("circuit", "closed"),
            promptVersions=snapshot.prompts.versions,
            inflight=snapshot.leases,
            mcpServers=[
                {"name": s.name, **s.status()} for s in snapshot.sources if s.kind == "mcp"
            ],
            partners=[
                {"name": s.name, **s.status()} for s in snapshot.sources if s.kind == "partner"
            ],
            knowledge=[
                {"name": s.name, **s.status()} for s in snapshot.sources if s.kind == "knowledge"
            ],
            tools=sorted(snapshot.tools()),
            memory=mem.describe(config.memory, snapshot.memory),
            auth={
                "apiKeys": len(snapshot.api_keys),
                "jwt": None if snapshot.jwt is None else snapshot.jwt.status(),
                "agents": None
                if snapshot.agents is None
                else {"allowed": sorted(allowed_callers(config)), **snapshot.agents.status()},
            },
            guard=None if snapshot.guard is None else snapshot.guard.status(),
            rateLimit=None
            if snapshot.limiter is None or config.rate_limit is None
            else {
                "store": snapshot.limiter.location,
                "tokensPerMinute": config.rate_limit.tokens_per_minute,
                "requestsPerMinute": config.rate_limit.requests_per_minute,
                "priorityClasses": [c.name for c in config.rate_limit.priority_classes],
            },
        )
    return status
