"""The engine: loads configs into snapshots (hot reload) and runs requests on them.

:meth:`Engine.load` has the :class:`~.assembly.Assembler` build a complete snapshot off the
request path and only then swaps it in. Anything that fails leaves the previous snapshot
serving and is recorded as the last reload error (``status.ReloadState``: in ``/status`` and
the reload metric). :meth:`Engine.run` serves one request on the snapshot current when it
starts, with the request's span and metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from agentspec_runtime.spec.resolved import AgentConfig, unsupported_fields

from . import limits
from . import telemetry as t
from .assembly import Assembler, Builders
from .errors import AgentspecError, ConfigError, RateLimitedError
from .journal import Replay
from .loop import AgentRequest, AgentResult, AgentRun
from .ports import (
    AgentsVerifierBuilder,
    DocumentsPorts,
    GuardBuilder,
    LimiterBuilder,
    McpBuilder,
    MemoryBuilder,
    ModelBuilder,
    PartnerBuilder,
    SecretResolver,
    TaskJournal,
    VerifierBuilder,
)
from .priority import Pressure, PriorityGate
from .snapshot import ResourcePool, Snapshot, SnapshotHolder
from .status import ReloadState, engine_status
from .telemetry import Metrics
from .types import OnDelta, OnTool

log = logging.getLogger(__name__)


class Engine:
    """One agent: the snapshot serving it, how configs become snapshots, and its requests."""

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
        build_jwt: VerifierBuilder | None = None,
        build_limiter: LimiterBuilder | None = None,
        build_guard: GuardBuilder | None = None,
        build_agents: AgentsVerifierBuilder | None = None,
        documents: DocumentsPorts | None = None,
        memory_override: str | None = None,
    ) -> None:
        """``memory_override`` (local mode): every agent's memory goes in-process
        (``"inMemory"``) or to this Redis URL, whatever its spec says; type none stays none."""
        self.agent = agent
        self.metrics = metrics
        self.pool = ResourcePool()
        self.gate = PriorityGate()
        """Runs at once and the queue by priority (rateLimit.maxConcurrency)."""
        self.pressure = Pressure()
        """How much the lower classes' budgets are shrunk while the model pushes back."""
        metrics.pressure.labels(agent).set_function(self.pressure.factor)
        self.holder = SnapshotHolder(self.pool)
        self.state = ReloadState()
        self.assembler = Assembler(
            secrets=secrets,
            builders=Builders(
                model=build_model,
                mcp=build_mcp,
                partner=build_partner,
                memory=build_memory,
                jwt=build_jwt,
                limiter=build_limiter,
                guard=build_guard,
                agents=build_agents,
                documents=documents,
            ),
            pool=self.pool,
            memory_override=memory_override,
        )
        metrics.watch_model_circuit(self._model_circuit)

    def _model_circuit(self) -> str | None:
        snapshot = self.holder.current
        return None if snapshot is None else str(snapshot.model.status().get("circuit"))

    # -- loading ------------------------------------------------------------------------

    async def load(self, config: AgentConfig) -> Snapshot:
        """Build a snapshot for ``config`` and make it current; raise ``ConfigError`` if not."""
        if config.name != self.agent:
            raise self.reject(f"config is for agent {config.name!r}, this is {self.agent!r}")
        unsupported = unsupported_fields(config)
        if unsupported:
            raise self.reject("; ".join(map(str, unsupported)))
        try:
            snapshot = await self.assembler.snapshot(config)
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
        self.metrics.loaded(
            snapshot.revision,
            model=config.model.model,
            prompt_versions=snapshot.prompts.versions,
            tools={name: (tool.source, tool.target) for name, tool in snapshot.tools().items()},
        )
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

    # -- serving ------------------------------------------------------------------------

    async def run(
        self,
        request: AgentRequest,
        *,
        on_delta: OnDelta | None = None,
        on_tool: OnTool | None = None,
        api: str = "openai",
        journal: TaskJournal | None = None,
    ) -> AgentResult:
        """Run one request on the snapshot current when it starts; a durable task's run
        records its steps in ``journal`` and replays what an earlier run recorded there,
        on the revision that run started on while this process still serves it (else on
        the current one; the result says which)."""
        started = time.perf_counter()
        outcome = "error"
        version: str | None = None  # the prompt version serving it, once chosen
        self.metrics.inflight.labels(self.agent).inc()
        try:
            replay = None if journal is None else Replay(await journal.load())
            with (
                self.holder.lease(None if replay is None else replay.revision) as snapshot,
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
                    agent_run = AgentRun(
                        snapshot,
                        request,
                        metrics=self.metrics,
                        on_delta=on_delta,
                        on_tool=on_tool,
                        journal=journal,
                        replay=replay,
                        pressure=self.pressure,
                        slot=lambda: self._slot(snapshot, request),
                    )
                    version = agent_run.prompt.version
                    span.set_attribute(t.PROMPT_VERSION, version)
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
            elapsed = time.perf_counter() - started
            self.metrics.request_seconds.labels(self.agent, api).observe(elapsed)
            if version is not None:
                self.metrics.version_requests.labels(self.agent, version, outcome).inc()
                self.metrics.version_seconds.labels(self.agent, version).observe(elapsed)

    @asynccontextmanager
    async def _slot(self, snapshot: Snapshot, request: AgentRequest) -> AsyncIterator[None]:
        """A place among the model calls at once (rateLimit.maxConcurrency), by the
        consumer's priority, held for one model call — never while a run waits for its
        budget or its tools; a task may wait as long as it may wait for its budget."""
        spec = snapshot.config.rate_limit
        if spec is None or spec.max_concurrency is None:
            yield
            return
        budget = limits.budget_of(spec, request.consumer)
        waits = self.gate.running >= spec.max_concurrency or self.gate.queued > 0
        entered = False
        try:
            async with self.gate.slot(
                limit=spec.max_concurrency,
                priority=budget.priority,
                wait=max(spec.queue_timeout_seconds, request.budget_wait),
                max_queued=spec.max_queued,
            ):
                entered = True
                outcome = "queued" if waits else "admitted"
                self.metrics.rate_limit.labels(self.agent, budget.name, "slot", outcome).inc()
                yield
        except RateLimitedError:
            if not entered:  # refused a slot (not a run that hit its budget)
                self.metrics.rate_limit.labels(self.agent, budget.name, "slot", "rejected").inc()
            raise

    # -- state --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.holder.current is not None

    def status(self) -> dict[str, Any]:
        status = engine_status(self.agent, holder=self.holder, state=self.state)
        if status.get("rateLimit") is not None:
            status["rateLimit"].update(
                pressure=round(self.pressure.factor(), 3),
                running=self.gate.running,
                queued=self.gate.queued,
            )
        return status

    async def aclose(self) -> None:
        self.holder.close()
        await self.pool.drain()
