"""The engine's Prometheus metrics and OpenTelemetry spans (GenAI semantic conventions).

Metrics live in one registry per engine (so tests and several engines in one process never
collide); the API layer serves it on the metrics port. Spans use the OpenTelemetry API only;
the server configures an SDK and exporter when the standard ``OTEL_*`` variables ask for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TRACER = trace.get_tracer("agentspec.runtime")

# GenAI semantic-convention attribute names (kept here so spans and tests agree).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
CONVERSATION_ID = "gen_ai.conversation.id"
PROMPT_VERSION = "agentspec.prompt.version"
PROMPT_VARIANT = "agentspec.prompt.variant"
CONFIG_REVISION = "agentspec.config.revision"

disable_created_metrics()  # type: ignore[no-untyped-call]  # _created series are noise here

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _CircuitState(Collector):
    """``agentspec_model_circuit_state{state}``: 1 for the state the model's breaker is in."""

    STATES = ("closed", "half-open", "open")

    def __init__(self, *, agent: str, read: Callable[[], str | None]) -> None:
        self._agent = agent
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agentspec_model_circuit_state",
            "The model endpoint's circuit breaker: 1 for its current state",
            labels=["agent", "state"],
        )
        current = self._read()
        if current is not None:
            for state in self.STATES:
                family.add_metric([self._agent, state], 1.0 if state == current else 0.0)
        yield family


_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""The semantic conventions' advised boundaries for gen_ai.client.token.usage."""


MAX_CONSUMERS = 100
"""Distinct consumers one process labels tokens with; later ones count as ``OTHER_CONSUMER``
(a JWT issuer may mint any number of subjects: the label must stay bounded)."""
OTHER_CONSUMER = "_other"


class Metrics:
    """Every metric the engine records, in its own registry."""

    def __init__(self, *, agent: str, registry: CollectorRegistry | None = None) -> None:
        self.agent = agent
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tokens = Counter(
            "agentspec_tokens",
            "Model tokens by direction",
            ["agent", "model", "prompt_version", "direction"],
            registry=r,
        )
        # who pays: the cost per consumer (the API key's name, the JWT's consumer claim)
        self.consumer_tokens = Counter(
            "agentspec_consumer_tokens",
            "Model tokens by consumer (anonymous without auth; at most MAX_CONSUMERS "
            "distinct per process, the rest as _other), model and direction",
            ["agent", "consumer", "model", "direction"],
            registry=r,
        )
        self._consumers: set[str] = set()
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per model call by type (input, output): the OpenTelemetry GenAI "
            "semantic conventions' gen_ai.client.token.usage",
            [
                "agent",
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
            ],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "agentspec_requests",
            "Agent requests by API and outcome",
            ["agent", "api", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "agentspec_request_duration_seconds",
            "Agent request latency",
            ["agent", "api"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # by prompt version: the A/B comparison of a canary (requests, errors, latency)
        self.version_requests = Counter(
            "agentspec_prompt_version_requests",
            "Agent requests by the prompt version that served them and outcome",
            ["agent", "prompt_version", "outcome"],
            registry=r,
        )
        self.version_seconds = Histogram(
            "agentspec_prompt_version_request_duration_seconds",
            "Agent request latency by the prompt version that served it",
            ["agent", "prompt_version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "agentspec_model_call_duration_seconds",
            "Model call latency",
            ["agent", "model", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_calls = Counter(
            "agentspec_tool_calls",
            "Tool calls by tool, source (mcp, partner, knowledge), target (the MCP server, "
            "the partner as namespace/name, the knowledge source) and outcome",
            ["agent", "tool", "source", "target", "outcome"],
            registry=r,
        )
        self.tool_seconds = Histogram(
            "agentspec_tool_call_duration_seconds",
            "Tool call latency",
            ["agent", "tool", "source"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limit = Counter(
            "agentspec_rate_limit_decisions",
            "Rate-limit decisions by priority class: a request at the door (kind request) or a "
            "model call's token reservation (kind tokens); outcome admitted, queued (a task "
            "waits for its budget) or rejected",
            ["agent", "priority_class", "kind", "outcome"],
            registry=r,
        )
        self.effective_budget = Gauge(
            "agentspec_rate_limit_effective_budget",
            "The budget per minute a class's consumers get now (dimension tokens or "
            "requests): the configured one, shrunk below the highest class while the model "
            "pushes back",
            ["agent", "priority_class", "dimension"],
            registry=r,
        )
        self.pressure = Gauge(
            "agentspec_rate_limit_pressure",
            "The factor applied to the budgets of the classes below the highest (1: none)",
            ["agent"],
            registry=r,
        )
        self.guard = Counter(
            "agentspec_guard_decisions",
            "Content guard decisions by stage (input, output), action (allow, block, redact, "
            "error_closed, error_open) and category (denyPatterns[i], moderation:<category>, "
            "model:<category>)",
            ["agent", "stage", "action", "category"],
            registry=r,
        )
        self.inflight = Gauge(
            "agentspec_inflight_requests",
            "Requests being served",
            ["agent"],
            registry=r,
        )
        self.reloads = Counter(
            "agentspec_config_reloads",
            "Config loads by outcome (applied, rejected)",
            ["agent", "outcome"],
            registry=r,
        )
        self.config_info = Gauge(
            "agentspec_config_info",
            "The loaded config revision (value 1)",
            ["agent", "revision"],
            registry=r,
        )
        self.memory = Counter(
            "agentspec_memory_operations",
            "Conversation memory operations (recall, record, summarize) by outcome",
            ["agent", "operation", "outcome"],
            registry=r,
        )
        self.tasks = Counter(
            "agentspec_tasks",
            "Durable A2A task events on this replica: queued, started, resumed (a later run), "
            "completed, failed, canceled, input_required, handed_back (shutdown), lost (lease "
            "taken over or the store failed mid-run), poisoned (failed after maxAttempts)",
            ["agent", "event"],
            registry=r,
        )
        self.tasks_running = Gauge(
            "agentspec_tasks_running",
            "Durable tasks this replica is running",
            ["agent"],
            registry=r,
        )
        self.task_queue_depth = Gauge(
            "agentspec_task_queue_depth",
            "Tasks waiting for a replica (new, handed back, or left by one that died), all "
            "replicas together",
            ["agent"],
            registry=r,
        )
        self.task_queue_oldest = Gauge(
            "agentspec_task_queue_oldest_seconds",
            "How long the longest-waiting queued task has waited",
            ["agent"],
            registry=r,
        )
        self.task_journal_writes = Counter(
            "agentspec_task_journal_writes",
            "Steps recorded in durable tasks' journals",
            ["agent"],
            registry=r,
        )
        self.push_deliveries = Counter(
            "agentspec_push_deliveries",
            "Push notification deliveries by outcome: delivered, retried, dropped (gave up or "
            "the config was deleted), refused (the host is not allowed)",
            ["agent", "outcome"],
            registry=r,
        )

    def record_tokens(
        self,
        *,
        model: str,
        prompt_version: str,
        consumer: str,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        self.tokens.labels(self.agent, model, prompt_version, "input").inc(input_tokens)
        self.tokens.labels(self.agent, model, prompt_version, "output").inc(output_tokens)
        if consumer not in self._consumers:
            if len(self._consumers) < MAX_CONSUMERS:
                self._consumers.add(consumer)
            else:
                consumer = OTHER_CONSUMER
        self.consumer_tokens.labels(self.agent, consumer, model, "input").inc(input_tokens)
        self.consumer_tokens.labels(self.agent, consumer, model, "output").inc(output_tokens)
        for kind, count in (("input", input_tokens), ("output", output_tokens)):
            self.genai_tokens.labels(self.agent, "chat", "openai", model, kind).observe(count)

    def watch_model_circuit(self, read: Callable[[], str | None]) -> None:
        """Report the serving model's circuit state (read at scrape time)."""
        self.registry.register(_CircuitState(agent=self.agent, read=read))

    def loaded(
        self,
        revision: str,
        *,
        model: str,
        prompt_versions: Iterable[str],
        tools: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """``tools``: the tools offered now, name -> (source, target): their call counts
        exist at 0 from here (an MCP server connecting later adds its tools' series at
        their first call)."""
        self.config_info.clear()
        self.config_info.labels(self.agent, revision).set(1)
        self.reloads.labels(self.agent, "applied").inc()
        # Token series exist at 0 before the first call: Prometheus' rate() cannot count a
        # series' first sample, so one born with the first call's tokens would lose them,
        # on every new pod and prompt version, just when autoscaling needs them.
        for version in prompt_versions:
            for direction in ("input", "output"):
                self.tokens.labels(self.agent, model, version, direction)
            for outcome in ("ok", "error"):  # likewise: a canary's first requests count
                self.version_requests.labels(self.agent, version, outcome)
            self.version_seconds.labels(self.agent, version)
        for api in ("openai", "a2a"):  # a pod's first failure counts in the errors figure
            for outcome in ("ok", "error"):
                self.requests.labels(self.agent, api, outcome)
        for name, (source, target) in (tools or {}).items():  # the topology's first calls
            for outcome in ("ok", "error"):
                self.tool_calls.labels(self.agent, name, source, target, outcome)
