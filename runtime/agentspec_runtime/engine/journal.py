"""Step checkpoints of a durable task: what the loop records, and how a resumed run replays it.

A run that belongs to a durable A2A task records each step in the task's journal (a
:class:`~.ports.TaskJournal`) before it goes on:

* :class:`Started` — the config revision the run started on (the first entry);
* :class:`TurnTaken` — a model turn: its text, tool calls and usage;
* :class:`ToolStarted` — a tool call is about to run;
* :class:`ToolFinished` — its result, as the model will read it;
* :class:`Remembered` — the exchange was written to conversation memory.

When a replica dies (or hands a task back) another one runs the task again with the journal
it left: :class:`Replay` answers the loop's questions. A recorded model turn is not asked
again; a recorded tool result is not run again; a call that started and has no result is run
again only when its tool is ``retry_safe``, else the model reads that it was interrupted.
Entries are JSON (one per row in the store), small and self-describing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .types import ModelTurn, ToolCall, Usage

__all__ = [
    "INTERRUPTED",
    "Entry",
    "Remembered",
    "Replay",
    "Started",
    "ToolFinished",
    "ToolStarted",
    "TurnTaken",
    "decode",
    "encode",
]

INTERRUPTED = (
    "Error: this call was interrupted (the agent's replica stopped while it ran) and may or "
    "may not have taken effect; it was not repeated. Check its effect before calling it again."
)
"""What the model reads for a call that started, has no result, and is not safe to repeat."""


@dataclass(frozen=True, slots=True)
class Started:
    revision: str


@dataclass(frozen=True, slots=True)
class TurnTaken:
    iteration: int
    turn: ModelTurn


@dataclass(frozen=True, slots=True)
class ToolStarted:
    key: str
    """``<iteration>:<tool call id>``: unique within the task."""
    name: str


@dataclass(frozen=True, slots=True)
class ToolFinished:
    key: str
    content: str
    ok: bool
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Remembered:
    pass


Entry = Started | TurnTaken | ToolStarted | ToolFinished | Remembered


def encode(entry: Entry) -> str:
    data: dict[str, Any]
    if isinstance(entry, Started):
        data = {"kind": "started", "revision": entry.revision}
    elif isinstance(entry, TurnTaken):
        turn = entry.turn
        data = {
            "kind": "turn",
            "iteration": entry.iteration,
            "content": turn.content,
            "toolCalls": [[c.id, c.name, c.arguments] for c in turn.tool_calls],
            "usage": [turn.usage.input_tokens, turn.usage.output_tokens],
            "model": turn.model,
            "finishReason": turn.finish_reason,
        }
    elif isinstance(entry, ToolStarted):
        data = {"kind": "toolStarted", "key": entry.key, "name": entry.name}
    elif isinstance(entry, ToolFinished):
        data = {
            "kind": "toolFinished",
            "key": entry.key,
            "content": entry.content,
            "ok": entry.ok,
            "usage": [entry.usage.input_tokens, entry.usage.output_tokens],
        }
    else:
        data = {"kind": "remembered"}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode(text: str) -> Entry:
    data = json.loads(text)
    kind = data["kind"]
    if kind == "started":
        return Started(str(data["revision"]))
    if kind == "turn":
        return TurnTaken(
            int(data["iteration"]),
            ModelTurn(
                content=data["content"],
                tool_calls=tuple(ToolCall(*c) for c in data["toolCalls"]),
                usage=Usage(*data["usage"]),
                model=data["model"],
                finish_reason=data["finishReason"],
            ),
        )
    if kind == "toolStarted":
        return ToolStarted(str(data["key"]), str(data["name"]))
    if kind == "toolFinished":
        return ToolFinished(
            str(data["key"]), str(data["content"]), bool(data["ok"]), Usage(*data["usage"])
        )
    if kind == "remembered":
        return Remembered()
    raise ValueError(f"unknown journal entry {kind!r}")


class Replay:
    """What a task's journal says has already happened."""

    def __init__(self, entries: list[Entry]) -> None:
        self.revision: str | None = None
        self.turns: dict[int, ModelTurn] = {}
        self.started: set[str] = set()  # keys of tool calls that started
        self.finished: dict[str, ToolFinished] = {}
        self.remembered = False
        for entry in entries:
            if isinstance(entry, Started):
                self.revision = self.revision or entry.revision
            elif isinstance(entry, TurnTaken):
                self.turns[entry.iteration] = entry.turn
            elif isinstance(entry, ToolStarted):
                self.started.add(entry.key)
            elif isinstance(entry, ToolFinished):
                self.finished[entry.key] = entry
            else:
                self.remembered = True

    @property
    def resumed(self) -> bool:
        """True when an earlier run of this task got as far as starting."""
        return self.revision is not None

    def interrupted(self, key: str) -> bool:
        """The call started in an earlier run and its result was never recorded."""
        return key in self.started and key not in self.finished
