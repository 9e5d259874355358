"""The agent loop at its edges, with an in-process model: exactly what the model is shown.

In: an :class:`Engine` loaded from the YAML a user applies, its model a
:class:`ScriptedModel` (every call scripted, an extra one fails the run) and its tools plain
Python tools behind the MCP connection port. Asserted: the exact message sequence of every
model call when ``maxIterations`` is reached (no tools offered on the last call), for an
unknown tool name, for tool arguments that are not JSON or not an object, for a tool result
over the size limit, and for several tool calls in one turn of which some fail (run
concurrently, each failure an error message, results in call order); a model failure fails
the run; the tool-call and request metrics count each outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pytest
import yaml

from agentspec_runtime.adapters.config_sources import parse_config
from agentspec_runtime.adapters.secrets import LocalSecrets
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import ModelError, ToolError
from agentspec_runtime.engine.loop import MAX_TOOL_RESULT_CHARS, AgentRequest
from agentspec_runtime.engine.ports import Endpoint, McpConnection, ModelClient, Tool
from agentspec_runtime.engine.telemetry import Metrics
from agentspec_runtime.engine.types import Message, ToolCall, ToolSpec
from agentspec_runtime.spec.resolved import AgentConfig, ResolvedMcpServer
from tests.support.agent_files import agent_docs
from tests.support.function_model import ScriptedModel, call, calls, text

pytestmark = pytest.mark.timeout(30)

SYSTEM: Message = {"role": "system", "content": "You are the test assistant."}
QUESTION: Message = {"role": "user", "content": "go"}


# -- tools: plain Python behind the engine's MCP connection port -----------------------------


@dataclass
class PyTool:
    name: str
    run: Callable[[dict[str, Any]], Awaitable[str]]
    retry_safe: bool = False

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(
            self.name,
            f"the {self.name} tool",
            {"type": "object", "properties": {}},
            retry_safe=self.retry_safe,
        )

    @property
    def source(self) -> Literal["mcp", "partner", "knowledge"]:
        return "mcp"

    @property
    def target(self) -> str:
        return "fake"

    async def call(
        self, arguments: dict[str, Any], *, headers: Any, context_id: str, call_key: Any = None
    ) -> str:
        return await self.run(arguments)


async def add(arguments: dict[str, Any]) -> str:
    return str(arguments.get("a", 0) + arguments.get("b", 0))


async def fail(arguments: dict[str, Any]) -> str:
    raise ToolError(str(arguments.get("message", "it failed")))


async def crash(arguments: dict[str, Any]) -> str:
    raise RuntimeError("a bug in the tool")


class Tools:
    """An MCP connection double offering in-process tools."""

    def __init__(self, tools: list[PyTool]) -> None:
        self._tools = tools

    def tools(self) -> list[Tool]:
        return list(self._tools)

    def input_schema(self, name: str) -> dict[str, Any] | None:
        found = [t for t in self._tools if t.spec.name == name]
        return dict(found[0].spec.parameters) if found else None

    async def call(
        self, name: str, arguments: dict[str, Any], *, headers: Mapping[str, str]
    ) -> str:
        for tool in self._tools:
            if tool.spec.name == name:
                answer = await tool.call(arguments, headers=headers, context_id="")
                return answer if isinstance(answer, str) else answer.content
        raise ToolError(f"no tool {name!r}")

    def status(self) -> dict[str, Any]:
        return {"connected": True}

    async def aclose(self) -> None:
        return None


def config(*, max_iterations: int = 5) -> AgentConfig:
    docs = agent_docs(
        llm_url="http://model.invalid/v1",
        mcp=[{"name": "tools", "url": "http://tools.invalid/mcp"}],
        max_iterations=max_iterations,
        memory={"type": "none"},
    )
    return parse_config(yaml.safe_dump_all(docs))


EngineFactory = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    engines: list[Engine] = []

    async def make(model: ScriptedModel, *tools: PyTool, max_iterations: int = 5) -> Engine:
        async def build_model(*_: object) -> ModelClient:
            return model

        async def build_mcp(server: ResolvedMcpServer, endpoint: Endpoint) -> McpConnection:
            return Tools(list(tools) or [PyTool("add", add)])

        engine = Engine(
            agent="assistant",
            metrics=Metrics(agent="assistant"),
            secrets=LocalSecrets(environ={}),
            build_model=build_model,
            build_mcp=build_mcp,
        )
        engines.append(engine)
        await engine.load(config(max_iterations=max_iterations))
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


def ask() -> AgentRequest:
    return AgentRequest(messages=[QUESTION], context_id="ctx")


def asked_to_call(*tool_calls: ToolCall, content: str | None = None) -> Message:
    """The assistant message the loop appends for a turn with tool calls."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in tool_calls
        ],
    }


def result(call_id: str, content: str) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def tool_calls_counted(engine: Engine, tool: str, outcome: str, source: str = "mcp") -> float:
    target = "fake" if source == "mcp" else source  # a made-up tool reaches nothing: unknown
    labels = {
        "agent": "assistant",
        "tool": tool,
        "source": source,
        "target": target,
        "outcome": outcome,
    }
    return engine.metrics.registry.get_sample_value("agentspec_tool_calls_total", labels) or 0.0


async def test_the_tools_call_counts_exist_at_zero_from_the_load(
    make_engine: EngineFactory,
) -> None:
    """rate() counts from a series' first scraped sample: a tool's count born with its first
    call would lose that call on the topology's edges."""
    with ScriptedModel() as model:
        engine = await make_engine(model)
    labels = {"agent": "assistant", "tool": "add", "source": "mcp", "target": "fake"}
    for outcome in ("ok", "error"):
        sample = engine.metrics.registry.get_sample_value(
            "agentspec_tool_calls_total", {**labels, "outcome": outcome}
        )
        assert sample == 0.0, outcome


# -- maxIterations -----------------------------------------------------------------------------


async def test_max_iterations_ends_the_run_and_the_last_call_offers_no_tools(
    make_engine: EngineFactory,
) -> None:
    c1, c2, c3 = (call("add", {"a": i, "b": 1}, id=f"c{i}") for i in (1, 2, 3))
    with ScriptedModel(calls(c1), calls(c2), calls(c3)) as model:
        engine = await make_engine(model, max_iterations=3)
        outcome = await engine.run(ask())

    assert (outcome.finish_reason, outcome.iterations, outcome.tool_calls) == (
        "max_iterations",
        3,
        2,
    )
    assert outcome.content == ""
    assert [r.tool_names for r in model.requests] == [["add"], ["add"], []]
    assert [r.messages for r in model.requests] == [
        [SYSTEM, QUESTION],
        [SYSTEM, QUESTION, asked_to_call(c1), result("c1", "2")],
        [
            SYSTEM,
            QUESTION,
            asked_to_call(c1),
            result("c1", "2"),
            asked_to_call(c2),
            result("c2", "3"),
        ],
    ]
    assert tool_calls_counted(engine, "add", "ok") == 2, "the last turn's call never ran"


async def test_an_answer_on_the_last_iteration_is_a_normal_stop(
    make_engine: EngineFactory,
) -> None:
    c1 = call("add", {"a": 40, "b": 2}, id="c1")
    deltas: list[str] = []

    async def on_delta(piece: str) -> None:
        deltas.append(piece)

    with ScriptedModel(calls(c1), text("42")) as model:
        engine = await make_engine(model, max_iterations=2)
        outcome = await engine.run(ask(), on_delta=on_delta)
    assert (outcome.content, outcome.finish_reason, outcome.iterations) == ("42", "stop", 2)
    assert deltas == ["42"]
    assert [r.streamed for r in model.requests] == [True, True]
    assert model.requests[1].messages == [SYSTEM, QUESTION, asked_to_call(c1), result("c1", "42")]
    assert model.requests[1].tools == []


# -- what the model gets wrong -------------------------------------------------------------


async def test_an_unknown_tool_name_is_told_to_the_model(make_engine: EngineFactory) -> None:
    made_up = call("delete_everything", id="c1")
    with ScriptedModel(calls(made_up), text("sorry")) as model:
        engine = await make_engine(model, PyTool("add", add), PyTool("fail", fail))
        outcome = await engine.run(ask())
    assert outcome.content == "sorry"
    assert model.requests[1].messages == [
        SYSTEM,
        QUESTION,
        asked_to_call(made_up),
        result("c1", "Error: no tool named 'delete_everything'; available: add, fail"),
    ]
    # a made-up name is counted, but not as a label value of its own
    assert tool_calls_counted(engine, "unknown", "error", source="unknown") == 1
    assert tool_calls_counted(engine, "delete_everything", "error", source="unknown") == 0


async def test_tool_arguments_that_are_not_a_json_object_are_told_to_the_model(
    make_engine: EngineFactory,
) -> None:
    broken = call("add", "{not json", id="c1")
    listed = call("add", "[1, 2]", id="c2")
    empty = call("add", "", id="c3")  # no arguments at all: an empty object
    with ScriptedModel(calls(broken, listed, empty), text("done")) as model:
        engine = await make_engine(model)
        await engine.run(ask())
    assert model.requests[1].messages == [
        SYSTEM,
        QUESTION,
        asked_to_call(broken, listed, empty),
        result(
            "c1",
            "Error: the arguments are not valid JSON "
            "(Expecting property name enclosed in double quotes)",
        ),
        result("c2", "Error: the arguments must be a JSON object"),
        result("c3", "0"),
    ]
    assert tool_calls_counted(engine, "add", "error") == 2
    assert tool_calls_counted(engine, "add", "ok") == 1


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (MAX_TOOL_RESULT_CHARS, "x" * MAX_TOOL_RESULT_CHARS),
        (MAX_TOOL_RESULT_CHARS + 1, "x" * MAX_TOOL_RESULT_CHARS + "\n[truncated]"),
    ],
    ids=["at-the-limit", "over-the-limit"],
)
async def test_a_tool_result_over_the_limit_is_truncated(
    make_engine: EngineFactory, size: int, shown: str
) -> None:
    async def big(arguments: dict[str, Any]) -> str:
        return "x" * size

    dump = call("dump", id="c1")
    with ScriptedModel(calls(dump), text("ok")) as model:
        engine = await make_engine(model, PyTool("dump", big))
        await engine.run(ask())
    assert model.requests[1].messages[-1] == result("c1", shown)


# -- several calls in one turn ---------------------------------------------------------------


async def test_concurrent_tool_calls_fail_one_by_one_and_report_in_call_order(
    make_engine: EngineFactory,
) -> None:
    """Four calls in one turn: all four start before any finishes (a barrier only all of them
    together pass), they finish in reverse order, and two fail differently. Each failure is
    one error message; the others still answer; the results follow the calls' order."""
    started = asyncio.Barrier(4)
    finished = {i: asyncio.Event() for i in range(1, 5)}

    def concurrent(
        index: int, run: Callable[[dict[str, Any]], Awaitable[str]]
    ) -> Callable[[dict[str, Any]], Awaitable[str]]:
        async def wrapped(arguments: dict[str, Any]) -> str:
            await started.wait()
            if index < 4:
                await finished[index + 1].wait()
            try:
                return await run(arguments)
            finally:
                finished[index].set()

        return wrapped

    tools = [
        PyTool("add", concurrent(1, add)),
        PyTool("fail", concurrent(2, fail)),
        PyTool("crash", concurrent(3, crash)),
        PyTool("add_again", concurrent(4, add)),
    ]
    turn = (
        call("add", {"a": 1, "b": 2}, id="c1"),
        call("fail", {"message": "database down"}, id="c2"),
        call("crash", id="c3"),
        call("add_again", {"a": 3, "b": 4}, id="c4"),
    )
    with ScriptedModel(calls(*turn), text("two of four")) as model:
        engine = await make_engine(model, *tools)
        async with asyncio.timeout(5):  # run one after another, the barrier never opens
            outcome = await engine.run(ask())

    assert outcome.content == "two of four"
    assert outcome.tool_calls == 4
    assert model.requests[1].messages == [
        SYSTEM,
        QUESTION,
        asked_to_call(*turn),
        result("c1", "3"),
        result("c2", "Error: database down"),
        result("c3", "Error: the tool failed unexpectedly (RuntimeError)"),
        result("c4", "7"),
    ]
    counted = {
        (tool, outcome): tool_calls_counted(engine, tool, outcome)
        for tool in ("add", "fail", "crash", "add_again")
        for outcome in ("ok", "error")
    }
    assert counted == {
        ("add", "ok"): 1,
        ("add", "error"): 0,
        ("fail", "ok"): 0,
        ("fail", "error"): 1,
        ("crash", "ok"): 0,
        ("crash", "error"): 1,
        ("add_again", "ok"): 1,
        ("add_again", "error"): 0,
    }


async def test_a_model_failure_after_a_tool_call_fails_the_run(
    make_engine: EngineFactory,
) -> None:
    c1 = call("add", {"a": 1, "b": 1}, id="c1")
    with ScriptedModel(calls(c1), ModelError("the model endpoint answered HTTP 500")) as model:
        engine = await make_engine(model)
        with pytest.raises(ModelError, match="HTTP 500"):
            await engine.run(ask())
    assert model.requests[1].messages == [SYSTEM, QUESTION, asked_to_call(c1), result("c1", "2")]
    registry = engine.metrics.registry
    labels = {"agent": "assistant", "api": "openai"}
    assert registry.get_sample_value("agentspec_requests_total", {**labels, "outcome": "error"})
    # the ok series exists from the load, at 0 (so a pod's first failure counts in rate())
    assert registry.get_sample_value("agentspec_requests_total", {**labels, "outcome": "ok"}) == 0


async def test_the_scripted_model_refuses_a_call_it_was_not_given(
    make_engine: EngineFactory,
) -> None:
    model = ScriptedModel(calls(call("add", id="c1")))
    engine = await make_engine(model)
    with pytest.raises(AssertionError, match="model call 2 was not scripted"):
        await engine.run(ask())
    with pytest.raises(AssertionError, match="1 model call"):
        model.assert_consumed()
