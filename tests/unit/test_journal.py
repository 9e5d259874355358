"""Step checkpoints: a run interrupted at any step resumes from its journal without repeating
what it recorded.

In: the engine with a :class:`ScriptedModel`, in-process tools, and a journal in a list (the
store's own journal is exercised end to end in ``test_durable_tasks``). A run is interrupted
the way a killed replica interrupts it — cancelled while a tool or the model is busy — and a
second run gets the entries the first one recorded. Asserted: a recorded model turn is not
asked again, a recorded tool result is not run again, a call interrupted mid-way is repeated
only when its tool is retry-safe (else the model reads that it was interrupted), a step that
cannot be recorded is not run, and every entry survives its JSON encoding.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentspec_runtime.engine import journal as j
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import CheckpointError
from agentspec_runtime.engine.loop import AgentRequest
from agentspec_runtime.engine.types import ModelTurn, ToolCall, Usage
from tests.support.function_model import ScriptedModel, call, calls, text
from tests.unit.test_loop_edges import (
    QUESTION,
    SYSTEM,
    EngineFactory,
    PyTool,
    asked_to_call,
    make_engine,
    result,
)

__all__ = ["make_engine"]  # the fixture, shared with test_loop_edges

pytestmark = pytest.mark.timeout(30)


class ListJournal:
    """A ``TaskJournal`` in memory; ``refuse`` makes every append fail (the store is down)."""

    def __init__(self, entries: list[j.Entry] | None = None) -> None:
        self.entries = list(entries or [])
        self.refuse = False

    async def load(self) -> list[j.Entry]:
        return list(self.entries)

    async def append(self, entry: j.Entry) -> None:
        if self.refuse:
            raise CheckpointError("the task store did not answer")
        self.entries.append(entry)


def ask() -> AgentRequest:
    return AgentRequest(messages=[QUESTION], context_id="ctx", task_id="task-1")


class Gate:
    """A tool body that counts its calls; the first ``hang`` calls never return."""

    def __init__(self, *, hang: int = 0) -> None:
        self.calls = 0
        self.hang = hang
        self.entered = asyncio.Event()

    async def __call__(self, arguments: dict[str, Any]) -> str:
        self.calls += 1
        self.entered.set()
        if self.calls <= self.hang:
            await asyncio.Event().wait()
        return f"done {arguments.get('order', '')}".strip()


async def interrupt(engine: Engine, journal: ListJournal, when: asyncio.Event) -> None:
    """Run until ``when`` is set, then cancel: what a replica killed mid-step leaves."""
    run = asyncio.ensure_future(engine.run(ask(), journal=journal))
    await asyncio.wait_for(when.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


@pytest.mark.parametrize("retry_safe", [False, True], ids=["not-retry-safe", "retry-safe"])
async def test_a_call_interrupted_mid_way_is_repeated_only_when_the_tool_says_it_is_safe(
    make_engine: EngineFactory, retry_safe: bool
) -> None:
    gate = Gate(hang=1)
    c1 = call("charge", {"order": "o-1"}, id="c1")
    journal = ListJournal()
    with ScriptedModel(calls(c1)) as first:
        engine = await make_engine(first, PyTool("charge", gate, retry_safe=retry_safe))
        await interrupt(engine, journal, gate.entered)
    assert [type(e) for e in journal.entries] == [j.Started, j.TurnTaken, j.ToolStarted]

    expected = "done o-1" if retry_safe else j.INTERRUPTED
    with ScriptedModel(text("finished")) as second:
        resumed = await make_engine(second, PyTool("charge", gate, retry_safe=retry_safe))
        outcome = await resumed.run(ask(), journal=journal)

    assert outcome.content == "finished"
    assert gate.calls == (2 if retry_safe else 1)
    assert [r.messages for r in second.requests] == [
        [SYSTEM, QUESTION, asked_to_call(c1), result("c1", expected)]
    ], "the first turn is not asked again; the model reads the call's result"
    assert journal.entries[-2] == j.ToolFinished("1:c1", expected, retry_safe)
    assert outcome.started_revision == outcome.revision


async def test_a_recorded_tool_result_is_not_run_again_when_the_next_turn_was_interrupted(
    make_engine: EngineFactory,
) -> None:
    gate = Gate()
    c1 = call("lookup", {"order": "o-2"}, id="c1")
    model_busy = asyncio.Event()

    async def hang(_: Any) -> ModelTurn:
        model_busy.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    journal = ListJournal()
    with ScriptedModel(calls(c1, content="looking"), hang) as first:
        engine = await make_engine(first, PyTool("lookup", gate))
        await interrupt(engine, journal, model_busy)
    assert gate.calls == 1

    with ScriptedModel(text("order o-2 is fine")) as second:
        resumed = await make_engine(second, PyTool("lookup", gate))
        outcome = await resumed.run(ask(), journal=journal)

    assert gate.calls == 1, "the recorded result is used, the tool is not called again"
    assert outcome.content == "order o-2 is fine"
    assert outcome.tool_calls == 1
    assert [r.messages for r in second.requests] == [
        [SYSTEM, QUESTION, asked_to_call(c1, content="looking"), result("c1", "done o-2")]
    ]


async def test_a_step_that_cannot_be_recorded_is_not_run(make_engine: EngineFactory) -> None:
    gate = Gate()
    journal = ListJournal()
    with ScriptedModel(calls(call("charge", id="c1"))) as model:
        engine = await make_engine(model, PyTool("charge", gate))
        original = journal.append

        async def refuse_after_turn(entry: j.Entry) -> None:
            if isinstance(entry, j.ToolStarted):
                journal.refuse = True
            await original(entry)

        journal.append = refuse_after_turn  # type: ignore[method-assign]
        with pytest.raises(CheckpointError):
            await engine.run(ask(), journal=journal)
    assert gate.calls == 0, "a tool call is recorded as started before it runs"


def test_every_entry_survives_its_encoding() -> None:
    entries: list[j.Entry] = [
        j.Started("rev-1"),
        j.TurnTaken(
            2,
            ModelTurn(
                content="héllo",
                tool_calls=(ToolCall("c1", "add", '{"a": 1}'),),
                usage=Usage(10, 3),
                model="m",
                finish_reason="tool_calls",
            ),
        ),
        j.TurnTaken(3, ModelTurn(content=None)),
        j.ToolStarted("2:c1", "add"),
        j.ToolFinished("2:c1", "2", True, Usage(1, 2)),
        j.Remembered(),
    ]
    assert [j.decode(j.encode(e)) for e in entries] == entries
    with pytest.raises(ValueError, match="unknown journal entry"):
        j.decode('{"kind": "teleported"}')
