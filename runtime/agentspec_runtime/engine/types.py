"""Value types shared by the loop and its ports (engine/ports.py): messages, turns, tools."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
"""A chat message in the OpenAI wire shape (role, content, tool_calls, tool_call_id)."""

HOPS_HEADER = "x-agentspec-hops"
"""How many agent-to-agent calls led to a request; stops call cycles."""
HOP_LIMIT_STATUS = 508
"""What a runtime answers a request past its hop limit (HTTP 508 Loop Detected)."""
A2A_USAGE_KEY = "agentspec.io/usage"
"""A2A status metadata carrying ``{input_tokens, output_tokens}`` a task spent."""

OnDelta = Callable[[str], Awaitable[None]]
"""Receives streamed answer text as the model produces it."""


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """A tool call starting (``ok`` None) or finished, as a streaming caller may watch it:
    names only, never the arguments or the result. ``call_id``: the run's n-th call (not the
    model's id for it, which is model output); ``name``: the tool's, or ``unknown`` for a
    name the model made up."""

    call_id: str
    name: str
    source: str
    target: str
    ok: bool | None = None
    seconds: float | None = None


OnTool = Callable[[ToolEvent], Awaitable[None]]
"""Receives the run's tool calls as they start and finish."""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON text, as the model produced it (it may be invalid: the tool reports that)."""


@dataclass(frozen=True, slots=True)
class ModelTurn:
    """One model response: text, tool calls, or both."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "stop"


def tool_name(name: str) -> str:
    """A name every OpenAI-compatible model accepts: ``^[a-zA-Z0-9_-]{1,64}$``."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "tool"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model sees of a tool."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    retry_safe: bool = False
    """Running the call twice does no harm (an MCP tool annotated ``idempotentHint`` or
    ``readOnlyHint``; a partner, which deduplicates by message id): a durable task that
    was interrupted during the call runs it again. Not shown to the model."""

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters) or {"type": "object", "properties": {}},
            },
        }


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one tool call as the model will read it."""

    call: ToolCall
    content: str
    ok: bool
    source: str = ""


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Per-call model settings: they may change on reload while the connection is reused."""

    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float = 60.0
    """Seconds the whole call may take, retries and their waits included."""
    max_retries: int = 3
    retry_budget: float = 10.0
    """Seconds the call may spend waiting between retries, in all."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's answer with the model tokens it spent (a partner agent reports its usage)."""

    content: str
    usage: Usage = field(default_factory=Usage)
