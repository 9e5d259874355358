"""What the fake model answers (turns) and what it was asked (requests); no I/O.

A :class:`Turn` is one scripted answer: text, tool calls, an HTTP error, latency, a dropped
connection. A :class:`ChatRequest` is one chat-completions request as received. A
:class:`Responder` computes a turn from a request (rule-based answers: :func:`echo`,
:func:`tool_then_answer`). Usage is deterministic: :func:`prompt_tokens` of the request's
messages and :func:`completion_tokens` of the turn.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

__all__ = [
    "DEFAULT_MODEL",
    "RESPONDERS",
    "ChatRequest",
    "HttpError",
    "JsonObject",
    "Responder",
    "Step",
    "ToolCall",
    "Turn",
    "completion_tokens",
    "content_text",
    "count_tokens",
    "echo",
    "parse_call_arguments",
    "prompt_tokens",
    "repeat_tool",
    "tool_then_answer",
]

JsonObject: TypeAlias = dict[str, Any]

DEFAULT_MODEL = "fake-model"

# -- turns --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One function call the fake model makes; ``arguments`` may be raw (even invalid) JSON."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    """Tool-call id; ``call_<request>_<index>`` when not given."""

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class HttpError:
    """An HTTP error answer with an OpenAI-style ``{"error": {...}}`` body."""

    status: int
    message: str
    type: str
    code: str | None = None
    retry_after: float | None = None
    """Sent as the ``retry-after`` header (seconds) when set."""


def _default_error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


@dataclass(frozen=True, kw_only=True)
class Turn:
    """One scripted answer. Build with the class methods, refine with the ``with_*`` methods."""

    content: str | None = None
    calls: tuple[ToolCall, ...] = ()
    http_error: HttpError | None = None
    first_byte_latency: float = 0.0
    """Seconds to wait before the response's first byte."""
    per_chunk_latency: float = 0.0
    """Seconds to wait before each streamed chunk after the first (streaming only)."""
    disconnect_after_chunks: int | None = None
    """Drop the connection after this many SSE chunks (0: before any response byte)."""
    finish_reason: str | None = None
    """Overrides ``tool_calls``/``stop``, e.g. ``length``."""
    usage: tuple[int, int] | None = None
    """(prompt_tokens, completion_tokens) overriding the computed counts."""

    @classmethod
    def text(cls, content: str) -> Turn:
        return cls(content=content)

    @classmethod
    def tool_calls(cls, *calls: ToolCall, content: str | None = None) -> Turn:
        if not calls:
            raise ValueError("Turn.tool_calls needs at least one ToolCall")
        return cls(content=content, calls=tuple(calls))

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        code: str | None = None,
        type: str | None = None,  # the OpenAI field is called "type"
        retry_after: float | None = None,
    ) -> Turn:
        """An HTTP error; ``type`` defaults from the status like OpenAI's."""
        error = HttpError(
            status=status,
            message=message,
            type=type or _default_error_type(status),
            code=code,
            retry_after=retry_after,
        )
        return cls(http_error=error)

    @classmethod
    def rate_limited(cls, *, retry_after: float | None = 1.0) -> Turn:
        return cls.error(
            429, "Rate limit reached", code="rate_limit_exceeded", retry_after=retry_after
        )

    @classmethod
    def invalid_api_key(cls) -> Turn:
        return cls.error(401, "Incorrect API key provided", code="invalid_api_key")

    @classmethod
    def model_not_found(cls, model: str = DEFAULT_MODEL) -> Turn:
        return cls.error(404, f"The model `{model}` does not exist", code="model_not_found")

    @classmethod
    def server_error(cls, message: str = "The server had an error") -> Turn:
        return cls.error(500, message)

    @classmethod
    def disconnect_after(
        cls, n_chunks: int, *, content: str = "partial answer that is cut"
    ) -> Turn:
        """Stream ``content`` but drop the connection after ``n_chunks`` SSE chunks."""
        return cls(content=content, disconnect_after_chunks=n_chunks)

    def with_latency(self, *, first_byte: float = 0.0, per_chunk: float = 0.0) -> Turn:
        return dataclasses.replace(self, first_byte_latency=first_byte, per_chunk_latency=per_chunk)

    def with_usage(self, *, prompt: int, completion: int) -> Turn:
        return dataclasses.replace(self, usage=(prompt, completion))

    def with_finish_reason(self, reason: str) -> Turn:
        return dataclasses.replace(self, finish_reason=reason)

    # -- JSON form (script files and the admin endpoint) -----------------------------------

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        if self.content is not None:
            out["text"] = self.content
        if self.calls:
            out["tool_calls"] = [
                {"name": c.name, "arguments": c.arguments_json, "id": c.id} for c in self.calls
            ]
        if self.http_error is not None:
            out["error"] = dataclasses.asdict(self.http_error)
        if self.first_byte_latency or self.per_chunk_latency:
            out["latency"] = {
                "first_byte": self.first_byte_latency,
                "per_chunk": self.per_chunk_latency,
            }
        if self.disconnect_after_chunks is not None:
            out["disconnect_after"] = self.disconnect_after_chunks
        if self.finish_reason is not None:
            out["finish_reason"] = self.finish_reason
        if self.usage is not None:
            out["usage"] = {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1]}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Turn:
        """Inverse of :meth:`to_json`; ``tool_calls[].arguments`` may be an object or a string."""
        calls = tuple(
            ToolCall(c["name"], c.get("arguments", {}), id=c.get("id"))
            for c in data.get("tool_calls", ())
        )
        error = None
        if "error" in data:
            raw = data["error"]
            error = HttpError(
                status=int(raw["status"]),
                message=str(raw.get("message", "error")),
                type=str(raw.get("type") or _default_error_type(int(raw["status"]))),
                code=raw.get("code"),
                retry_after=raw.get("retry_after"),
            )
        latency = data.get("latency", {})
        usage = data.get("usage")
        return cls(
            content=data.get("text"),
            calls=calls,
            http_error=error,
            first_byte_latency=float(latency.get("first_byte", 0.0)),
            per_chunk_latency=float(latency.get("per_chunk", 0.0)),
            disconnect_after_chunks=data.get("disconnect_after"),
            finish_reason=data.get("finish_reason"),
            usage=None if usage is None else (usage["prompt_tokens"], usage["completion_tokens"]),
        )


# -- requests and usage -------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """The fake tokenizer: whitespace-separated words."""
    return len(text.split())


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Sum of :func:`count_tokens` over each message's text content (tool calls not counted)."""
    return sum(count_tokens(content_text(m.get("content"))) for m in messages)


def completion_tokens(turn: Turn) -> int:
    """:func:`count_tokens` of the text, plus per call 1 + words of its arguments JSON."""
    total = count_tokens(turn.content or "")
    for call in turn.calls:
        total += 1 + count_tokens(call.arguments_json)
    return total


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions request as received: the JSON body and lower-cased headers."""

    body: JsonObject
    headers: Mapping[str, str]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[JsonObject]:
        messages = self.body.get("messages", [])
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[JsonObject]:
        tools = self.body.get("tools") or []
        return tools if isinstance(tools, list) else []

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("function", {}).get("name", "")) for t in self.tools]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options") or {}
        return bool(options.get("include_usage", False))

    @property
    def system_prompt(self) -> str | None:
        """Text of the first system (or developer) message, if any."""
        for message in self.messages:
            if message.get("role") in ("system", "developer"):
                return content_text(message.get("content"))
        return None

    @property
    def last_message(self) -> JsonObject | None:
        return self.messages[-1] if self.messages else None

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""

    @property
    def trailing_tool_results(self) -> list[JsonObject]:
        """The ``role: tool`` messages after the last non-tool message (the latest results)."""
        results: list[JsonObject] = []
        for message in reversed(self.messages):
            if message.get("role") != "tool":
                break
            results.append(message)
        return results[::-1]

    def to_json(self) -> JsonObject:
        return {"body": self.body, "headers": dict(self.headers)}


class Responder(Protocol):
    """Computes the answer to one request: a scripted step, or the responder that answers
    open-ended traffic."""

    def __call__(self, request: ChatRequest, /) -> Turn: ...


def echo(request: ChatRequest) -> Turn:
    """Answer ``Echo: <last user text>``."""
    return Turn.text(f"Echo: {request.last_user_text}")


_ARG_PATTERN = re.compile(r"""(\w+)=("(?:[^"\\]|\\.)*"|'[^']*'|\S+)""")


def parse_call_arguments(text: str) -> JsonObject:
    """``key=value`` pairs in ``text``; values are JSON when they parse (``a=1`` → 1), else text.

    Quote values with spaces: ``text="hello world"``.
    """
    arguments: JsonObject = {}
    for key, raw in _ARG_PATTERN.findall(text):
        if raw.startswith("'"):
            arguments[key] = raw[1:-1]
            continue
        try:
            arguments[key] = json.loads(raw)
        except json.JSONDecodeError:
            arguments[key] = raw
    return arguments


def tool_then_answer(request: ChatRequest) -> Turn:
    """Call a tool the user names, then report what it said.

    * the request ends with tool results → ``The tool said: <content>`` (several joined by
      `` | ``);
    * else tools are offered and the user text names one (first match in the text, whole
      word) → call it with :func:`parse_call_arguments` of the user text;
    * else → :func:`echo`.
    """
    results = request.trailing_tool_results
    if results:
        said = " | ".join(content_text(r.get("content")) for r in results)
        return Turn.text(f"The tool said: {said}")
    name = _named_tool(request)
    if name is not None:
        return Turn.tool_calls(ToolCall(name, parse_call_arguments(request.last_user_text)))
    return echo(request)


def _named_tool(request: ChatRequest) -> str | None:
    """The offered tool the user text names first (whole word), if any."""
    user_text = request.last_user_text
    best: tuple[int, str] | None = None
    for name in request.tool_names:
        if not name:
            continue
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", user_text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    return best[1] if best is not None else None


def repeat_tool(request: ChatRequest) -> Turn:
    """Like :func:`tool_then_answer`, but the tool is called ``times=N`` times, one call per
    turn (``add a=1 b=2 times=3``: three turns with a call, then the answer)."""
    arguments = parse_call_arguments(request.last_user_text)
    times = int(arguments.pop("times", 1))
    done = sum(1 for m in request.messages if m.get("role") == "tool")
    name = _named_tool(request)
    if name is None or done >= times:
        said = " | ".join(content_text(r.get("content")) for r in request.trailing_tool_results)
        return Turn.text(f"The tool said: {said}") if said else echo(request)
    return Turn.tool_calls(ToolCall(name, arguments))


RESPONDERS: dict[str, Responder] = {
    "echo": echo,
    "tool_then_answer": tool_then_answer,
    "repeat_tool": repeat_tool,
}

Step: TypeAlias = Turn | Responder
"""One scripted step: a fixed turn, or a function computing the turn from the one request it
answers (the script still fixes how many requests come and in which order)."""
