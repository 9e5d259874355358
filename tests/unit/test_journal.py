"""Step checkpoints: a run interrupted at any step resumes from its journal without repeating
what it recorded.

In: the engine with a :class:`ScriptedModel`, in-process tools, and the store's own journal
(``StoreJournal`` on an SQLite task store, each run under the lease its claim of the job
gave it). A run is interrupted the way a killed replica interrupts it — cancelled while a tool
or the model is busy — and a second run, under the next lease, gets the entries the first one
recorded. Asserted: a recorded model turn is not
asked again, a recorded tool result is not run again, a call interrupted mid-way is repeated
only when its tool is retry-safe (else the model reads that it was interrupted), a step that
cannot be recorded (its lease passed to another run) is not run, and every entry survives
its JSON encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentspec_runtime.adapters.sql import Database, connect
from agentspec_runtime.adapters.task_queue import StoreJournal
from agentspec_runtime.adapters.task_store import create_schema
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


class TaskRow:
    """One task's job in an SQLite task store; each ``run()`` claims it anew (the next epoch,
    as a replica's claim does) and hands out that run's journal."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.epoch = 0

    async def run(self) -> StoreJournal:
        self.epoch += 1
        await self.db.execute(
            "UPDATE agentspec_jobs SET holder = 'replica', epoch = ?, status = 'running' "
            "WHERE task_id = ?",
            self.epoch,
            TASK,
        )
        return StoreJournal(self.db, TASK, lease=("replica", self.epoch))

    async def entries(self) -> list[j.Entry]:
        return await StoreJournal(self.db, TASK, lease=("replica", self.epoch)).load()

    async def lose_lease(self) -> None:
        """Another replica takes the job over (the epoch moves on)."""
        await self.db.execute("UPDATE agentspec_jobs SET epoch = epoch + 1 WHERE task_id = ?", TASK)


@pytest.fixture
async def task_row(tmp_path: Path) -> AsyncIterator[TaskRow]:
    db = await connect(f"sqlite://{tmp_path / 'tasks.db'}")
    try:
        await create_schema(db)
        await db.execute(
            "INSERT INTO agentspec_jobs (task_id, owner, request, headers, status, "
            "enqueued_at) VALUES (?, '', ?, '{}', 'queued', 0)",
            TASK,
            b"",
        )
        yield TaskRow(db)
    finally:
        await db.close()


TASK = "task-1"


def ask() -> AgentRequest:
    return AgentRequest(messages=[QUESTION], context_id="ctx", task_id=TASK)


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


async def interrupt(engine: Engine, journal: StoreJournal, when: asyncio.Event) -> None:
    """Run until ``when`` is set, then cancel: what a replica killed mid-step leaves."""
    run = asyncio.ensure_future(engine.run(ask(), journal=journal))
    await asyncio.wait_for(when.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


@pytest.mark.parametrize("retry_safe", [False, True], ids=["not-retry-safe", "retry-safe"])
async def test_a_call_interrupted_mid_way_is_repeated_only_when_the_tool_says_it_is_safe(
    make_engine: EngineFactory, task_row: TaskRow, retry_safe: bool
) -> None:
    gate = Gate(hang=1)
    c1 = call("charge", {"order": "o-1"}, id="c1")
    with ScriptedModel(calls(c1)) as first:
        engine = await make_engine(first, PyTool("charge", gate, retry_safe=retry_safe))
        await interrupt(engine, await task_row.run(), gate.entered)
    assert [type(e) for e in await task_row.entries()] == [j.Started, j.TurnTaken, j.ToolStarted]

    expected = "done o-1" if retry_safe else j.INTERRUPTED
    with ScriptedModel(text("finished")) as second:
        resumed = await make_engine(second, PyTool("charge", gate, retry_safe=retry_safe))
        outcome = await resumed.run(ask(), journal=await task_row.run())

    assert outcome.content == "finished"
    assert gate.calls == (2 if retry_safe else 1)
    assert [r.messages for r in second.requests] == [
        [SYSTEM, QUESTION, asked_to_call(c1), result("c1", expected)]
    ], "the first turn is not asked again; the model reads the call's result"
    assert (await task_row.entries())[-2] == j.ToolFinished("1:c1", expected, retry_safe)
    assert outcome.started_revision == outcome.revision


async def test_a_recorded_tool_result_is_not_run_again_when_the_next_turn_was_interrupted(
    make_engine: EngineFactory, task_row: TaskRow
) -> None:
    gate = Gate()
    c1 = call("lookup", {"order": "o-2"}, id="c1")
    model_busy = asyncio.Event()

    async def hang(_: Any) -> ModelTurn:
        model_busy.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with ScriptedModel(calls(c1, content="looking"), hang) as first:
        engine = await make_engine(first, PyTool("lookup", gate))
        await interrupt(engine, await task_row.run(), model_busy)
    assert gate.calls == 1

    with ScriptedModel(text("order o-2 is fine")) as second:
        resumed = await make_engine(second, PyTool("lookup", gate))
        outcome = await resumed.run(ask(), journal=await task_row.run())

    assert gate.calls == 1, "the recorded result is used, the tool is not called again"
    assert outcome.content == "order o-2 is fine"
    assert outcome.tool_calls == 1
    assert [r.messages for r in second.requests] == [
        [SYSTEM, QUESTION, asked_to_call(c1, content="looking"), result("c1", "done o-2")]
    ]


async def test_a_step_that_cannot_be_recorded_is_not_run(
    make_engine: EngineFactory, task_row: TaskRow
) -> None:
    gate = Gate()
    journal = await task_row.run()
    with ScriptedModel(calls(call("charge", id="c1"))) as model:
        engine = await make_engine(model, PyTool("charge", gate))
        original = journal.append

        async def taken_over_after_the_turn(entry: j.Entry) -> None:
            if isinstance(entry, j.ToolStarted):
                await task_row.lose_lease()
            await original(entry)

        journal.append = taken_over_after_the_turn  # type: ignore[method-assign]
        with pytest.raises(CheckpointError, match="no longer this replica's"):
            await engine.run(ask(), journal=journal)
    assert gate.calls == 0, "a tool call is recorded as started before it runs"
    assert [type(e) for e in await task_row.entries()] == [j.Started, j.TurnTaken]


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
