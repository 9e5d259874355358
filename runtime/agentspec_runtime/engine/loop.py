"""The agent loop: think -> act -> observe, as a small state machine with typed steps.

``CallModel`` asks the model (with the snapshot's tools); a turn with tool calls leads to
``RunTools``, which runs every call concurrently and appends the results; a turn without
tool calls, or reaching ``maxIterations``, leads to ``Finish``. A failing tool becomes an
error result the model reads; it never fails the request. With conversation memory, the run
first recalls the context's history (folding old turns into a summary when the strategy says
so) and, once finished, records the new input and the answer as one turn.

A run of a durable task has a journal (engine/journal.py): each model turn, tool start and
tool result is recorded before the loop moves on, and a resumed run replays what is there
instead of doing it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import guard, limits
from . import memory as mem
from . import telemetry as t
from .errors import (
    ContentBlockedError,
    MemoryUnavailableError,
    ModelError,
    ModelRateLimitedError,
    ModelUnavailableError,
    RateLimitedError,
    ToolError,
)
from .journal import (
    INTERRUPTED,
    Entry,
    Remembered,
    Replay,
    Started,
    ToolFinished,
    ToolStarted,
    TurnTaken,
)
from .ports import MemoryStore, TaskJournal, Tool
from .priority import Pressure
from .prompts import RenderedPrompt
from .snapshot import Snapshot
from .telemetry import Metrics
from .types import (
    Message,
    ModelParams,
    ModelTurn,
    OnDelta,
    OnTool,
    ToolCall,
    ToolEvent,
    ToolOutcome,
    ToolResult,
    ToolSpec,
    Usage,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallModel:
    iteration: int


@dataclass(frozen=True, slots=True)
class RunTools:
    iteration: int
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    content: str
    reason: str
    """``stop`` (the model answered) or ``max_iterations``."""


Step = CallModel | RunTools | Finish


@dataclass
class AgentRequest:
    messages: list[Message]
    context_id: str
    variables: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers for the model and tools; the trace context is added per call."""
    consumer: str | None = None
    """Who is calling (the API key's name), when the agent requires keys: memory is per
    consumer, so another key cannot read a conversation by guessing its context id."""
    task_id: str | None = None
    """The durable task this run belongs to (A2A), which keys its tools' call keys."""
    budget_wait: float = 0.0
    """How long a model call may wait for the consumer's token budget (rateLimit) before
    the run fails with a 429: 0 for a caller waiting on the line, longer for a task."""


@dataclass
class AgentResult:
    content: str
    finish_reason: str
    usage: Usage
    iterations: int
    tool_calls: int
    prompt: RenderedPrompt
    revision: str
    model: str
    tool_usage: Usage = field(default_factory=Usage)
    """Tokens partner agents spent for this request (not in ``usage``)."""
    recalled_turns: int = 0
    """Earlier turns of the conversation shown to the model (memory)."""
    started_revision: str | None = None
    """A resumed task: the config revision its first run started on (``revision`` is the one
    it finished on; they differ when the config changed in between)."""
    blocked: tuple[str, str] | None = None
    """The content guard blocked the run: (stage, category); ``content`` is the refusal."""


MAX_TOOL_RESULT_CHARS = 64_000


class AgentRun:
    """One request's run of the loop, on one snapshot."""

    def __init__(
        self,
        snapshot: Snapshot,
        request: AgentRequest,
        *,
        metrics: Metrics,
        on_delta: OnDelta | None = None,
        on_tool: OnTool | None = None,
        journal: TaskJournal | None = None,
        replay: Replay | None = None,
        pressure: Pressure | None = None,
        slot: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.pressure = pressure
        self.slot = slot or contextlib.nullcontext
        self.request = request
        self.metrics = metrics
        self.on_delta = on_delta
        self.on_tool = on_tool
        self.screen = guard.Screen(snapshot, metrics) if snapshot.guard is not None else None
        if self.screen is not None and self.screen.on("output") and on_delta is not None:
            self.screen.stream = guard.GuardedStream(self.screen, on_delta)
            self.on_delta = self.screen.stream.add
        self.raw_on_delta = on_delta
        self.journal = journal
        if journal is not None and replay is None:
            raise ValueError("a journaled run needs its journal's replay (Engine.run loads it)")
        self.replay = replay or Replay([])
        self.usage = Usage()
        self.tool_usage = Usage()
        """Tokens spent by tools on our behalf (partner agents), beside our own model's."""
        self.tool_calls = 0
        self.tools: dict[str, Tool] = snapshot.tools()
        self._tools_tokens = (  # what offering them adds to each call's reservation
            limits.tools_estimate(t.spec for t in self.tools.values())
            if snapshot.limiter is not None
            else 0
        )
        self.prompt = snapshot.prompts.render(
            context_id=request.context_id, variables=request.variables
        )
        config = snapshot.config
        # The agent's prompt is its only system prompt: a caller's system or developer
        # message would let it rewrite the agent's instructions, so those are dropped.
        self.input = [m for m in request.messages if m.get("role") not in ("system", "developer")]
        self.messages: list[Message] = [
            {"role": "system", "content": self.prompt.text},
            *self.input,
        ]
        self.recalled_turns = 0
        self.memory_key = mem.conversation_key(
            namespace=config.namespace,
            agent=config.name,
            consumer=request.consumer,
            context_id=request.context_id,
        )
        self.max_iterations = config.max_iterations
        self.model_name = config.model.model
        self.params = ModelParams(
            model=config.model.model,
            temperature=config.model.temperature,
            max_tokens=config.model.max_tokens,
            timeout=config.model.timeout_seconds,
            max_retries=config.model.max_retries,
            retry_budget=config.model.retry_budget_seconds,
        )

    async def run(self) -> AgentResult:
        try:
            return await self._run()
        except ContentBlockedError as e:
            if self.screen is None or self.screen.streamed:
                raise  # part of the answer is out: the stream ends with the error
            if self.raw_on_delta is not None:
                await self.raw_on_delta(str(e))
            return AgentResult(
                content=str(e),
                finish_reason="content_filter",
                usage=self.usage,
                iterations=0,
                tool_calls=self.tool_calls,
                prompt=self.prompt,
                revision=self.snapshot.revision,
                model=self.model_name,
                tool_usage=self.tool_usage,
                started_revision=self.replay.revision,
                blocked=(e.stage, e.category),
            )

    async def _run(self) -> AgentResult:
        if self.journal is not None and not self.replay.resumed:
            await self._checkpoint(Started(self.snapshot.revision))
        if self.screen is not None:
            await self._screen_input(self.screen)
        store = self.snapshot.memory
        if store is not None:
            await self._recall(store)
        step: Step = CallModel(1)
        iteration = 0
        while not isinstance(step, Finish):
            if isinstance(step, CallModel):
                iteration = step.iteration
                step = await self._call_model(step)
            else:
                step = await self._run_tools(step)
        content = step.content
        if self.screen is not None and self.screen.on("output"):
            content = await self._screen_output(self.screen, content)
        if store is not None and not self.replay.remembered:
            await self._record(store, content)
            await self._checkpoint(Remembered())
        return AgentResult(
            content=content,
            finish_reason=step.reason,
            usage=self.usage,
            iterations=iteration,
            tool_calls=self.tool_calls,
            prompt=self.prompt,
            revision=self.snapshot.revision,
            model=self.model_name,
            tool_usage=self.tool_usage,
            recalled_turns=self.recalled_turns,
            started_revision=self.replay.revision,
        )

    async def _screen_output(self, screen: guard.Screen, content: str) -> str:
        stream = screen.stream
        if stream is None or not stream.text:
            return await screen.text(content, "output")
        await stream.finish()  # everything streamed, this answer included, checked
        if content in stream.text:
            return screen.patterns(content, "output", count=False)  # the stream's masks
        return await screen.text(content, "output")  # it did not come through the stream

    async def _screen_input(self, screen: guard.Screen) -> None:
        """Everything the caller wrote goes through the input guard: its messages of every
        role (a caller may write earlier assistant or tool turns; the model reads them all),
        the tool-call arguments in them, and the prompt variables it set (rendered into the
        system prompt). Patterns check each text; the classifiers see them all at once, in
        one call per request."""
        if screen.on("input"):
            seen: list[str] = []

            def check(text: str) -> str:
                screened = screen.patterns(text, "input")
                seen.append(screened)
                return screened

            variables = dict(self.request.variables)
            screened = {k: check(v) for k, v in variables.items()}
            if screened != variables:
                self.prompt = self.snapshot.prompts.render(
                    context_id=self.request.context_id, variables=screened
                )
            self.input = [_screened(m, check) for m in self.input]
            self.messages = [{"role": "system", "content": self.prompt.text}, *self.input]
            await screen.classify("\n\n".join(seen), "input")
            screen.passed("input")
        users = [m for m in self.input if m.get("role") == "user"]
        screen.context = mem.text_of(users[-1]) if users else ""

    async def _checkpoint(self, entry: Entry) -> None:
        if self.journal is not None:
            await self.journal.append(entry)

    # -- memory ---------------------------------------------------------------------------

    async def _recall(self, store: MemoryStore) -> None:
        spec = self.snapshot.config.memory
        try:
            history = await store.load(self.memory_key, last=mem.turns_needed(spec))
        except MemoryUnavailableError:
            self._memory_outcome("recall", "error")
            raise
        self.input = mem.new_input(history, self.input)
        folded = mem.to_fold(history, spec=spec)
        if folded:
            history = await self._fold(store, history, folded)
        question = " ".join(mem.text_of(m) for m in self.input if m.get("role") == "user")
        turns = mem.recall(history, question=question, spec=spec)
        self.recalled_turns = len(turns)
        system = mem.with_summary(self.prompt.text, history.summary)
        self.messages = [
            {"role": "system", "content": system},
            *(m for turn in turns for m in turn.messages),
            *self.input,
        ]
        self._memory_outcome("recall", "ok")

    async def _fold(
        self, store: MemoryStore, history: mem.History, folded: list[mem.Turn]
    ) -> mem.History:
        """Summarize ``folded`` into the stored summary; on failure keep the history as it is
        (this request truncates instead, a later one tries again)."""
        spec = self.snapshot.config.memory
        try:
            turn = await self._complete(
                [], messages=mem.summary_request(history.summary, folded), stream=False
            )
        except ModelError as e:
            log.warning("agent %s: summarizing the conversation failed: %s", self.metrics.agent, e)
            self._memory_outcome("summarize", "error")
            return history
        text = (turn.content or "").strip()
        if not text:
            self._memory_outcome("summarize", "error")
            return history
        summary = mem.Summary(
            text=text,
            through=folded[-1].seq,
            tokens=mem.estimate_tokens([{"role": "system", "content": text}]),
        )
        after = history.summary.through if history.summary else 0
        try:
            if await store.fold(self.memory_key, summary, after=after, ttl=spec.ttl_seconds):
                self._memory_outcome("summarize", "ok")
                return mem.History(
                    summary, tuple(t for t in history.turns if t.seq > summary.through)
                )
            self._memory_outcome("summarize", "superseded")  # another replica folded first
            return await store.load(self.memory_key)
        except MemoryUnavailableError:
            self._memory_outcome("summarize", "error")
            raise

    async def _record(self, store: MemoryStore, answer: str) -> None:
        """Remember this exchange. A failure is logged, not raised: the answer exists."""
        messages = mem.remembered(self.input, answer)
        try:
            await store.append(
                self.memory_key,
                messages,
                tokens=mem.estimate_tokens(messages),
                ttl=self.snapshot.config.memory.ttl_seconds,
            )
        except MemoryUnavailableError as e:
            log.warning("agent %s: the turn was not remembered: %s", self.metrics.agent, e)
            self._memory_outcome("record", "error")
        else:
            self._memory_outcome("record", "ok")

    def _memory_outcome(self, operation: str, outcome: str) -> None:
        self.metrics.memory.labels(self.metrics.agent, operation, outcome).inc()

    # -- the loop -------------------------------------------------------------------------

    async def _call_model(self, step: CallModel) -> Step:
        last = step.iteration >= self.max_iterations
        # On the last iteration no tools are offered: the model has to answer now.
        specs = (
            []
            if last
            else [
                tool.spec
                if name == tool.spec.name
                else ToolSpec(name, tool.spec.description, tool.spec.parameters)
                for name, tool in self.tools.items()
            ]
        )
        turn = self.replay.turns.get(step.iteration)
        if turn is None:
            turn = await self._complete(specs, messages=self.messages, stream=True)
            await self._checkpoint(TurnTaken(step.iteration, turn))
        else:
            self.usage += turn.usage  # spent by the earlier run: counted once, in its metrics
        message: Message = {"role": "assistant", "content": turn.content}
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in turn.tool_calls
            ]
        self.messages.append(message)
        if turn.tool_calls and not last:
            return RunTools(step.iteration, turn.tool_calls)
        reason = "max_iterations" if turn.tool_calls else "stop"
        return Finish(turn.content or "", reason)

    async def _complete(
        self, specs: list[ToolSpec], *, messages: list[Message], stream: bool
    ) -> ModelTurn:
        reservation = await limits.reserve(
            self.snapshot,
            self.request.consumer,
            limits.estimate(messages, self._tools_tokens if specs else 0, self.params.max_tokens)
            if self.snapshot.limiter is not None
            else 0,
            wait=self.request.budget_wait,
            metrics=self.metrics,
            pressure=self.pressure.factor if self.pressure is not None else lambda: 1.0,
        )
        try:
            async with self.slot():  # a place among the calls at once, by priority
                turn = await self._call(specs, messages=messages, stream=stream)
        except (ModelError, RateLimitedError):
            if reservation is not None:  # refused or failed: nothing was produced
                await reservation.settle(0)
            raise
        # cancelled mid-call: the reservation stands (tokens may have been produced); so
        # does it when the endpoint reports no usage (it would switch the budget off)
        if reservation is not None and turn.usage.total > 0:
            await reservation.settle(turn.usage.total)
        return turn

    async def _call(
        self, specs: list[ToolSpec], *, messages: list[Message], stream: bool
    ) -> ModelTurn:
        started = time.perf_counter()
        guarded = self.screen.classify_seconds if self.screen is not None else 0.0
        outcome = "ok"
        with t.TRACER.start_as_current_span(
            f"chat {self.model_name}",
            kind=SpanKind.CLIENT,
            attributes={
                t.OPERATION: "chat",
                t.PROVIDER: "openai",
                t.REQUEST_MODEL: self.model_name,
            },
        ) as span:
            try:
                turn = await self.snapshot.model.complete(
                    params=self.params,
                    messages=messages,
                    tools=specs,
                    on_delta=self.on_delta if stream else None,
                    headers=self._outgoing_headers(),
                )
            except ModelError as e:
                outcome = type(e).__name__
                span.set_status(Status(StatusCode.ERROR, str(e)))
                if isinstance(e, ModelRateLimitedError | ModelUnavailableError):
                    self._pushback()  # the model pushes back: lower classes get less
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception as e:  # an unmapped failure: recorded as such, then raised
                outcome = type(e).__name__
                span.set_status(Status(StatusCode.ERROR, type(e).__name__))
                raise
            finally:
                elapsed = time.perf_counter() - started
                self.metrics.model_seconds.labels(
                    self.metrics.agent, self.model_name, outcome
                ).observe(elapsed)
                # the guard's classifiers run inside a streamed call: not the model's time
                if self.screen is not None:
                    elapsed -= self.screen.classify_seconds - guarded
                slow = (
                    self.snapshot.config.rate_limit
                    and self.snapshot.config.rate_limit.slow_model_seconds
                )
                if slow and elapsed > slow:
                    self._pushback()
            span.set_attribute(t.RESPONSE_MODEL, turn.model or self.model_name)
            span.set_attribute(t.INPUT_TOKENS, turn.usage.input_tokens)
            span.set_attribute(t.OUTPUT_TOKENS, turn.usage.output_tokens)
        self.usage += turn.usage
        self.metrics.record_tokens(
            model=self.model_name,
            prompt_version=self.prompt.version,
            consumer=self.request.consumer or limits.ANONYMOUS,
            input_tokens=turn.usage.input_tokens,
            output_tokens=turn.usage.output_tokens,
        )
        return turn

    def _pushback(self) -> None:
        if self.pressure is not None and self.snapshot.config.rate_limit is not None:
            self.pressure.pushback()

    def _outgoing_headers(self) -> dict[str, str]:
        """Static request headers plus the W3C trace context of the current span."""
        headers = dict(self.request.headers)
        propagate.inject(headers)
        return headers

    async def _run_tools(self, step: RunTools) -> Step:
        outcomes = await asyncio.gather(
            *(self._run_tool(call, f"{step.iteration}:{call.id}") for call in step.calls)
        )
        for outcome in outcomes:
            self.messages.append(
                {"role": "tool", "tool_call_id": outcome.call.id, "content": outcome.content}
            )
        return CallModel(step.iteration + 1)

    async def _run_tool(self, call: ToolCall, key: str) -> ToolOutcome:
        """``key`` names this call within the task (its journal entries)."""
        self.tool_calls += 1
        number = self.tool_calls  # the run's n-th call: what a streaming caller sees
        tool = self.tools.get(call.name)
        source = tool.source if tool else "unknown"
        done = self.replay.finished.get(key)
        if done is not None:  # the earlier run has its result: not run again
            self.tool_usage += done.usage
            return ToolOutcome(call=call, content=done.content, ok=done.ok, source=source)
        if self.replay.interrupted(key) and not (tool is not None and tool.spec.retry_safe):
            await self._checkpoint(ToolFinished(key, INTERRUPTED, False))
            return ToolOutcome(call=call, content=INTERRUPTED, ok=False, source=source)
        await self._checkpoint(ToolStarted(key, call.name))
        outcome, usage = await self._invoke(call, tool, key, number)
        await self._checkpoint(ToolFinished(key, outcome.content, outcome.ok, usage))
        return outcome

    async def _invoke(
        self, call: ToolCall, tool: Tool | None, key: str, number: int
    ) -> tuple[ToolOutcome, Usage]:
        source = tool.source if tool else "unknown"
        target = tool.target if tool else "unknown"
        # a name the model made up is model output: never a label value (unbounded
        # cardinality) nor an event past the output guard
        label = call.name if tool is not None else "unknown"
        usage = Usage()
        started = time.perf_counter()
        if self.on_tool is not None:
            await self.on_tool(ToolEvent(str(number), label, source, target))
        with t.TRACER.start_as_current_span(
            f"execute_tool {call.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                t.OPERATION: "execute_tool",
                t.TOOL_NAME: call.name,
                t.TOOL_CALL_ID: call.id,
                t.TOOL_TYPE: "function",
            },
        ) as span:
            try:
                if tool is None:
                    raise ToolError(
                        f"no tool named {call.name!r}; available: " + ", ".join(sorted(self.tools))
                    )
                arguments = _parse_arguments(call.arguments)
                answer = await tool.call(
                    arguments,
                    headers=self._outgoing_headers(),
                    context_id=self.request.context_id,
                    call_key=None if self.journal is None else f"{self.request.task_id}/{key}",
                )
                if isinstance(answer, ToolResult):
                    usage = answer.usage
                    self.tool_usage += usage
                    answer = answer.content
                content, ok = answer, True
            except ToolError as e:
                content, ok = f"Error: {e}", False
                span.set_status(Status(StatusCode.ERROR, str(e)))
            except Exception as e:  # a broken tool must not fail the request
                content, ok = f"Error: the tool failed unexpectedly ({type(e).__name__})", False
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, type(e).__name__))
        elapsed = time.perf_counter() - started
        self.metrics.tool_calls.labels(
            self.metrics.agent, label, source, target, "ok" if ok else "error"
        ).inc()
        self.metrics.tool_seconds.labels(self.metrics.agent, label, source).observe(elapsed)
        if self.on_tool is not None:
            await self.on_tool(ToolEvent(str(number), label, source, target, ok, elapsed))
        if len(content) > MAX_TOOL_RESULT_CHARS:
            content = content[:MAX_TOOL_RESULT_CHARS] + "\n[truncated]"
        return ToolOutcome(call=call, content=content, ok=ok, source=source), usage


def _parse_arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise ToolError(f"the arguments are not valid JSON ({e.msg})") from e
    if not isinstance(value, dict):
        raise ToolError("the arguments must be a JSON object")
    return value


def _screened(message: Message, check: Callable[[str], str]) -> Message:
    """``message`` with ``check`` applied to each text the caller wrote in it: its content
    (or text parts) and its tool calls' arguments."""
    content = message.get("content")
    if isinstance(content, str):
        message = {**message, "content": check(content)}
    elif isinstance(content, list):
        parts = [
            {**p, "text": check(p["text"])}
            if isinstance(p, dict) and isinstance(p.get("text"), str)
            else p
            for p in content
        ]
        message = {**message, "content": parts}
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message = {**message, "tool_calls": [_screened_call(c, check) for c in calls]}
    return message


def _screened_call(call: Any, check: Callable[[str], str]) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": check(function["arguments"])}}
