"""In-process model doubles for the agent loop: the engine's ``ModelClient`` without HTTP.

Owns two implementations of the port the loop calls (``complete(params, messages, tools,
on_delta, headers) -> ModelTurn``), for unit tests of the loop (the wire format is the fake
LLM's job, :mod:`tests.support.fake_llm`):

* :class:`FunctionModel` — every call is answered by a Python function of the
  :class:`ModelRequest` (pydantic-ai's ``FunctionModel``);
* :class:`ScriptedModel` — a fixed list of steps, one per call, in order; an extra call fails
  the run (AssertionError), and ``with ScriptedModel(...)`` asserts on a clean exit that
  every step was used (openai-agents' fake model).

Both record each call as a :class:`ModelRequest` whose messages are a deep copy taken at the
call, so a test compares the exact sequences the model was shown.

Must not: open sockets, or let an unexpected call pass unnoticed.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeAlias

from agentspec_runtime.engine.ports import ModelClient
from agentspec_runtime.engine.types import (
    Message,
    ModelParams,
    ModelTurn,
    OnDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "FunctionModel",
    "ModelFunction",
    "ModelRequest",
    "ScriptedModel",
    "call",
    "calls",
    "text",
]


@dataclass(frozen=True)
class ModelRequest:
    """One call as the model received it."""

    params: ModelParams
    messages: list[Message]
    tools: list[ToolSpec]
    headers: dict[str, str]
    streamed: bool
    """Whether the caller asked for deltas (``on_delta``)."""

    @property
    def tool_names(self) -> list[str]:
        return [t.name for t in self.tools]


ModelFunction: TypeAlias = Callable[[ModelRequest], ModelTurn | Awaitable[ModelTurn]]
"""Answers one call; may be a coroutine function, and may raise (e.g. a ``ModelError``)."""


def text(content: str, *, usage: Usage | None = None) -> ModelTurn:
    """A turn that answers with ``content``."""
    return ModelTurn(content=content, usage=usage or Usage(), model="function-model")


def call(name: str, arguments: Mapping[str, Any] | str = "{}", *, id: str) -> ToolCall:
    """One tool call; ``arguments`` as an object or as raw (possibly invalid) JSON text."""
    raw = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
    return ToolCall(id=id, name=name, arguments=raw)


def calls(*tool_calls: ToolCall, content: str | None = None) -> ModelTurn:
    """A turn that calls tools (all of them in one turn)."""
    return ModelTurn(
        content=content,
        tool_calls=tool_calls,
        model="function-model",
        finish_reason="tool_calls",
    )


@dataclass
class FunctionModel:
    """A ``ModelClient`` answered by ``function``; streams the answer's text as one delta."""

    function: ModelFunction
    endpoint: str = "function://test"
    requests: list[ModelRequest] = field(default_factory=list)
    closed: bool = False

    async def complete(
        self,
        *,
        params: ModelParams,
        messages: list[Message],
        tools: list[ToolSpec],
        on_delta: OnDelta | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelTurn:
        request = ModelRequest(
            params=params,
            messages=copy.deepcopy(messages),  # the loop appends to the list it passed
            tools=list(tools),
            headers=dict(headers or {}),
            streamed=on_delta is not None,
        )
        self.requests.append(request)
        answer = self.function(request)
        turn = await answer if inspect.isawaitable(answer) else answer
        if on_delta is not None and turn.content:
            await on_delta(turn.content)
        return turn

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "circuit": "closed"}

    async def aclose(self) -> None:
        self.closed = True


Step: TypeAlias = ModelTurn | BaseException | ModelFunction
"""A scripted answer: a turn, an exception to raise, or a function of the request."""


class ScriptedModel(FunctionModel):
    """A ``ModelClient`` answering each call with the next of ``steps``; strict about count."""

    def __init__(self, *steps: Step, endpoint: str = "scripted://test") -> None:
        super().__init__(self._next, endpoint=endpoint)
        self._steps = list(steps)
        self._used = 0
        self.extra_calls = 0

    def _next(self, request: ModelRequest) -> ModelTurn | Awaitable[ModelTurn]:
        if self._used == len(self._steps):
            self.extra_calls += 1
            raise AssertionError(
                f"model call {len(self.requests)} was not scripted ({len(self._steps)} steps); "
                f"it was shown {len(request.messages)} messages"
            )
        step = self._steps[self._used]
        self._used += 1
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, ModelTurn):
            return step
        return step(request)

    @property
    def pending(self) -> int:
        return len(self._steps) - self._used

    def assert_consumed(self) -> None:
        """Every step was used and no call came after the last one."""
        problems = []
        if self.pending:
            problems.append(f"{self.pending} scripted model step(s) never requested")
        if self.extra_calls:
            problems.append(f"{self.extra_calls} model call(s) after the script ended")
        if problems:
            raise AssertionError("; ".join(problems))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.assert_consumed()


def _implements_the_port(model: FunctionModel) -> ModelClient:
    return model  # mypy checks both doubles against the engine's ModelClient protocol
