"""The one allowed test double: a scripted OpenAI-compatible chat-completions HTTP server.

Owns the fake model endpoint every engine test and benchmark talks to instead of a real
model: ``POST /v1/chat/completions`` (JSON and SSE streaming, with tool calls, usage, HTTP
errors, latency and dropped connections) and ``GET /v1/models``. It is a real HTTP/1.1 server
(a minimal asyncio one with keep-alive, so the instant path serves thousands of requests per
second on one core), run either in-process on a background thread (:class:`FakeLLM`) or as a
child process (``python -m tests.support.fake_llm --port N``, driven by :class:`FakeLLMProcess`).

What a test controls:

* **turns** — :class:`Turn` values queued with ``script(...)`` are answered in order; once the
  queue is empty the *responder* (a :class:`Responder` callable, a constant :class:`Turn`, or
  none → HTTP 500 "script exhausted") answers. :func:`echo` and :func:`tool_then_answer` are
  ready-made rule-based responders.
* **usage** — deterministic: ``prompt_tokens`` is :func:`prompt_tokens` of the request's
  messages (whitespace-separated words of their text), ``completion_tokens`` is
  :func:`completion_tokens` of the turn; a turn may override both with ``with_usage``.

What a test asserts: ``requests`` (every chat request received, parsed body plus lower-cased
headers), ``wait_for_requests(n)`` for engines running in other threads or processes, and
``assert_script_consumed()``.

Admin endpoints (used by :class:`FakeLLMProcess`, handy with curl): ``POST /_fake/script``
``{"turns": [...]}``, ``GET /_fake/requests``, ``POST /_fake/reset``, ``GET /_fake/health``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http
import itertools
import json
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import httpx

from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    free_ports,
    owned_tmp_dir,
    start_process,
    wait_until,
)

__all__ = [
    "ChatRequest",
    "FakeLLM",
    "FakeLLMProcess",
    "HttpError",
    "Responder",
    "ToolCall",
    "Turn",
    "completion_tokens",
    "count_tokens",
    "echo",
    "parse_call_arguments",
    "prompt_tokens",
    "tool_then_answer",
]

JsonObject: TypeAlias = dict[str, Any]

DEFAULT_MODEL = "fake-model"
_ARGUMENT_PIECE = 8
"""Streamed tool-call arguments are cut into pieces of this many characters."""


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


def _content_text(content: Any) -> str:
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
    return sum(count_tokens(_content_text(m.get("content"))) for m in messages)


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
                return _content_text(message.get("content"))
        return None

    @property
    def last_message(self) -> JsonObject | None:
        return self.messages[-1] if self.messages else None

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
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
    """Answers a request once the script is empty."""

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
        said = " | ".join(_content_text(r.get("content")) for r in results)
        return Turn.text(f"The tool said: {said}")
    user_text = request.last_user_text
    best: tuple[int, str] | None = None
    for name in request.tool_names:
        if not name:
            continue
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", user_text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    if best is not None:
        return Turn.tool_calls(ToolCall(best[1], parse_call_arguments(user_text)))
    return echo(request)


RESPONDERS: dict[str, Responder] = {"echo": echo, "tool_then_answer": tool_then_answer}


# -- the engine: script queue, records, rendering ----------------------------------------


class _ScriptExhaustedError(Exception):
    """No scripted turn left and no responder."""


class _State:
    """Script queue and request records; shared by the server thread and the test thread."""

    def __init__(self, responder: Responder | Turn | None) -> None:
        self.responder = responder
        self._turns: deque[Turn] = deque()
        self._requests: list[ChatRequest] = []
        self._changed = threading.Condition()
        self._ids = itertools.count(1)

    def script(self, turns: Sequence[Turn]) -> None:
        with self._changed:
            self._turns.extend(turns)

    def reset(self) -> None:
        with self._changed:
            self._turns.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._turns)

    def requests(self) -> list[ChatRequest]:
        with self._changed:
            return list(self._requests)

    def wait_for_requests(self, count: int, *, timeout: float) -> list[ChatRequest]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"fake LLM got {len(self._requests)} chat requests, expected {count} "
                    f"within {timeout}s"
                )
            return list(self._requests)

    def next_turn(self, request: ChatRequest) -> tuple[int, Turn]:
        """Record ``request`` and pick its turn; raises :class:`_ScriptExhaustedError`."""
        with self._changed:
            self._requests.append(request)
            number = next(self._ids)
            self._changed.notify_all()
            turn = self._turns.popleft() if self._turns else None
        if turn is not None:
            return number, turn
        responder = self.responder
        if responder is None:
            raise _ScriptExhaustedError
        if isinstance(responder, Turn):
            return number, responder
        return number, responder(request)


def _error_body(error: HttpError) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": None,
                "code": error.code,
            }
        }
    ).encode()


def _text_pieces(text: str) -> list[str]:
    """Words with their trailing whitespace, so the pieces concatenate back to ``text``."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _completion_id(number: int) -> str:
    return f"chatcmpl-fake-{number}"


def _call_id(number: int, index: int, call: ToolCall) -> str:
    return call.id or f"call_{number}_{index}"


def _usage(request: ChatRequest, turn: Turn) -> JsonObject:
    if turn.usage is not None:
        prompt, completion = turn.usage
    else:
        prompt, completion = prompt_tokens(request.messages), completion_tokens(turn)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(turn: Turn) -> str:
    return turn.finish_reason or ("tool_calls" if turn.calls else "stop")


def _completion_json(request: ChatRequest, number: int, turn: Turn) -> bytes:
    message: JsonObject = {"role": "assistant", "content": turn.content, "refusal": None}
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": _call_id(number, index, call),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for index, call in enumerate(turn.calls)
        ]
    body = {
        "id": _completion_id(number),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish_reason(turn),
                "logprobs": None,
            }
        ],
        "usage": _usage(request, turn),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _stream_chunks(request: ChatRequest, number: int, turn: Turn) -> list[bytes]:
    """The SSE events of a streamed answer, ``data: [DONE]`` included."""
    include_usage = request.include_usage
    base: JsonObject = {
        "id": _completion_id(number),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
    }

    def chunk(delta: JsonObject, finish: str | None = None) -> bytes:
        data: JsonObject = {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            data["usage"] = None
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events.extend(chunk({"content": piece}) for piece in _text_pieces(turn.content or ""))
    for index, call in enumerate(turn.calls):
        head = {
            "index": index,
            "id": _call_id(number, index, call),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        arguments = call.arguments_json
        for start in range(0, len(arguments), _ARGUMENT_PIECE):
            piece = arguments[start : start + _ARGUMENT_PIECE]
            events.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    events.append(chunk({}, _finish_reason(turn)))
    if include_usage:
        final = {**base, "choices": [], "usage": _usage(request, turn)}
        events.append(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


# -- the HTTP/1.1 server ------------------------------------------------------------------


class _BadRequestError(Exception):
    pass


def _response_head(
    status: int, *, content_type: str, length: int | None, extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", f"content-type: {content_type}"]
    if length is None:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {length}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_response(status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    head = _response_head(status, content_type="application/json", length=len(body), extra=extra)
    return head + body


class _Server:
    """The asyncio HTTP/1.1 server; all methods run on its event loop."""

    def __init__(
        self, state: _State, *, models: Sequence[str], strict_models: bool, api_key: str | None
    ) -> None:
        self.state = state
        self.models = list(models)
        self.strict_models = strict_models
        self.api_key = api_key
        self.connections: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # Only FakeLLM.stop cancels handlers; ending quietly keeps asyncio's stream
            # callback from logging the cancellation as an error.
            pass
        finally:
            self.connections.discard(writer)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, version = request_line.split(" ", 2)
        except ValueError:
            writer.write(_json_response(400, b'{"error":{"message":"bad request line"}}'))
            return False
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = await self._read_body(reader, headers)
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        path = target.split("?", 1)[0]
        if not await self._dispatch(method, path, headers, body, writer):
            return False
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()
        return keep_alive

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""

    async def _dispatch(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(headers, body, writer)
        if method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            writer.write(_json_response(200, json.dumps({"object": "list", "data": data}).encode()))
            return True
        if path.startswith("/_fake/"):
            return self._admin(method, path, body, writer)
        writer.write(_json_response(404, _error_body(_not_found(f"no route {method} {path}"))))
        return True

    def _admin(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path == "/_fake/health":
            out: Any = {"ok": True, "pending": self.state.pending}
        elif method == "GET" and path == "/_fake/requests":
            out = [r.to_json() for r in self.state.requests()]
        elif method == "POST" and path == "/_fake/script":
            turns = [Turn.from_json(t) for t in json.loads(body or b"{}").get("turns", [])]
            self.state.script(turns)
            out = {"pending": self.state.pending}
        elif method == "POST" and path == "/_fake/reset":
            self.state.reset()
            out = {"ok": True}
        else:
            writer.write(_json_response(404, _error_body(_not_found(f"no admin route {path}"))))
            return True
        writer.write(_json_response(200, json.dumps(out).encode()))
        return True

    async def _chat(
        self, headers: Mapping[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            parsed = json.loads(body)
            if not isinstance(parsed, dict):
                raise _BadRequestError("body is not a JSON object")
        except (json.JSONDecodeError, UnicodeDecodeError, _BadRequestError) as exc:
            error = HttpError(
                status=400, message=f"invalid JSON body: {exc}", type="invalid_request_error"
            )
            writer.write(_json_response(400, _error_body(error)))
            return True
        request = ChatRequest(body=parsed, headers=headers)
        try:
            number, turn = self.state.next_turn(request)
        except _ScriptExhaustedError:
            number = 0
            turn = Turn.error(500, "fake LLM: script exhausted and no responder configured")
        except Exception as exc:  # a broken responder must show up in the test, not kill the server
            number = 0
            turn = Turn.error(500, f"fake LLM responder raised {exc!r}")
        turn = self._gate(request, turn)
        if turn.first_byte_latency:
            await asyncio.sleep(turn.first_byte_latency)
        if turn.disconnect_after_chunks == 0:
            writer.transport.abort()
            return False
        if turn.http_error is not None:
            error = turn.http_error
            extra = []
            if error.retry_after is not None:
                extra.append(("retry-after", f"{error.retry_after:g}"))
            writer.write(_json_response(error.status, _error_body(error), extra))
            return True
        if not request.stream:
            if turn.disconnect_after_chunks is not None:
                writer.transport.abort()
                return False
            writer.write(_json_response(200, _completion_json(request, number, turn)))
            return True
        return await self._stream(request, number, turn, writer)

    def _gate(self, request: ChatRequest, turn: Turn) -> Turn:
        """Server-wide checks (API key, known models) that win over the scripted turn."""
        expected = None if self.api_key is None else f"Bearer {self.api_key}"
        if expected is not None and request.headers.get("authorization") != expected:
            return Turn.invalid_api_key()
        if self.strict_models and request.model not in self.models:
            return Turn.model_not_found(request.model)
        return turn

    @staticmethod
    async def _stream(
        request: ChatRequest, number: int, turn: Turn, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(
            _response_head(
                200,
                content_type="text/event-stream; charset=utf-8",
                length=None,
                extra=[("cache-control", "no-cache")],
            )
        )
        for index, event in enumerate(_stream_chunks(request, number, turn)):
            if turn.disconnect_after_chunks is not None and index >= turn.disconnect_after_chunks:
                await writer.drain()
                writer.transport.abort()
                return False
            if index and turn.per_chunk_latency:
                await writer.drain()
                await asyncio.sleep(turn.per_chunk_latency)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _not_found(message: str) -> HttpError:
    return HttpError(status=404, message=message, type="invalid_request_error")


# -- in-process and subprocess front ends -------------------------------------------------


class FakeLLM(Managed):
    """The fake LLM served from a background thread with its own event loop.

    ``FakeLLM(responder=echo).start()`` (or ``with FakeLLM() as llm:``); point clients at
    ``llm.base_url``. ``models`` lists what ``GET /v1/models`` reports; with
    ``strict_models=True`` any other model gets 404 ``model_not_found``. With ``api_key`` set,
    requests without ``Authorization: Bearer <api_key>`` get 401 ``invalid_api_key``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        responder: Responder | Turn | None = None,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        strict_models: bool = False,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        self._state = _State(responder)
        self._server = _Server(
            self._state, models=models, strict_models=strict_models, api_key=api_key
        )
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._aserver: asyncio.Server | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        if self._thread is not None:
            raise RuntimeError("FakeLLM already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-llm", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), loop)
        self._port = future.result(timeout=10)
        return self

    async def _listen(self) -> int:
        self._aserver = await asyncio.start_server(
            self._server.handle, self.host, self._requested_port, backlog=1024
        )
        port: int = self._aserver.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._aserver is not None:
            self._aserver.close()
        for writer in list(self._server.connections):
            writer.transport.abort()
        if self._aserver is not None:
            await self._aserver.wait_closed()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Close every connection and the listener, then end the server thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._aserver = None

    # -- what tests use -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLLM not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` — what an OpenAI client takes as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def responder(self) -> Responder | Turn | None:
        return self._state.responder

    @responder.setter
    def responder(self, value: Responder | Turn | None) -> None:
        self._state.responder = value

    def script(self, *turns: Turn) -> FakeLLM:
        """Queue ``turns``; they answer the next requests in order, before the responder."""
        self._state.script(turns)
        return self

    @property
    def pending(self) -> int:
        """Scripted turns not yet used."""
        return self._state.pending

    @property
    def requests(self) -> list[ChatRequest]:
        """A snapshot of the chat-completions requests received so far, oldest first."""
        return self._state.requests()

    @property
    def last_request(self) -> ChatRequest:
        requests = self._state.requests()
        if not requests:
            raise AssertionError("the fake LLM received no chat request")
        return requests[-1]

    def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> list[ChatRequest]:
        """Block until at least ``count`` chat requests arrived; return them."""
        return self._state.wait_for_requests(count, timeout=timeout)

    def assert_script_consumed(self) -> None:
        pending = self._state.pending
        if pending:
            raise AssertionError(f"{pending} scripted fake-LLM turn(s) were never requested")

    def reset(self) -> None:
        """Drop queued turns and recorded requests."""
        self._state.reset()


class FakeLLMProcess(Managed):
    """The fake LLM as a child process (for benchmarks and multi-process end-to-end tests).

    Scripted and inspected over the admin endpoints; same ``script``/``requests``/
    ``wait_for_requests``/``assert_script_consumed`` surface as :class:`FakeLLM`.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        responder: str | None = "echo",
        script_file: Path | None = None,
        api_key: str | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self._responder = responder
        self._script_file = script_file
        self._api_key = api_key
        self._ready_timeout = ready_timeout
        self._port: int | None = None
        self._process: ManagedProcess | None = None
        self._tmp_dir: Path | None = None

    def start(self) -> FakeLLMProcess:
        self._tmp_dir = owned_tmp_dir("agentspec-fake-llm-")
        (port,) = free_ports(1)
        argv = [sys.executable, "-m", "tests.support.fake_llm", "--port", str(port)]
        if self._responder:
            argv += ["--responder", self._responder]
        if self._script_file is not None:
            argv += ["--script", str(self._script_file)]
        if self._api_key is not None:
            argv += ["--api-key", self._api_key]
        process = start_process(
            "fake-llm",
            argv,
            log_path=self._tmp_dir / "fake-llm.log",
            cwd=Path(__file__).resolve().parents[2],
        )
        self._process = process

        def healthy() -> bool:
            if not process.running():
                raise ExitedEarlyError
            try:
                return httpx.get(f"http://{self.host}:{port}/_fake/health", timeout=1).is_success
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=self._ready_timeout, what="fake LLM process")
        except (ExitedEarlyError, TimeoutError):
            message = process.describe_failure("did not become healthy")
            self.stop()
            raise RuntimeError(message) from None
        self._port = port
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=5.0)
            self._process = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLLMProcess not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        response = httpx.request(
            method, f"http://{self.host}:{self.port}/_fake/{path}", json=payload, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def script(self, *turns: Turn) -> FakeLLMProcess:
        self._admin("POST", "script", {"turns": [t.to_json() for t in turns]})
        return self

    @property
    def pending(self) -> int:
        return int(self._admin("GET", "health")["pending"])

    @property
    def requests(self) -> list[ChatRequest]:
        return [
            ChatRequest(body=r["body"], headers=r["headers"])
            for r in self._admin("GET", "requests")
        ]

    def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> list[ChatRequest]:
        wait_until(lambda: len(self.requests) >= count, timeout=timeout, what=f"{count} requests")
        return self.requests

    def assert_script_consumed(self) -> None:
        pending = self.pending
        if pending:
            raise AssertionError(f"{pending} scripted fake-LLM turn(s) were never requested")

    def reset(self) -> None:
        self._admin("POST", "reset")


# -- command line -------------------------------------------------------------------------


def _load_script(path: Path) -> tuple[list[Turn], str | None]:
    """A JSON list of turns, or ``{"turns": [...], "responder": "echo"}``."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return [Turn.from_json(t) for t in data], None
    return [Turn.from_json(t) for t in data.get("turns", [])], data.get("responder")


async def _serve_forever(
    *, host: str, port: int, state: _State, api_key: str | None, ready: Callable[[], None]
) -> None:
    server = _Server(state, models=(DEFAULT_MODEL,), strict_models=False, api_key=api_key)
    aserver = await asyncio.start_server(server.handle, host, port, backlog=1024)
    ready()
    async with aserver:
        await aserver.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--script", type=Path, help="JSON file of turns (see _load_script)")
    parser.add_argument(
        "--responder",
        default=None,
        help=f"one of {sorted(RESPONDERS)}, or 'text:<answer>' for a constant answer",
    )
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)

    turns: list[Turn] = []
    responder_name: str | None = args.responder
    if args.script is not None:
        turns, scripted = _load_script(args.script)
        responder_name = responder_name or scripted
    responder: Responder | Turn | None = None
    if responder_name:
        if responder_name.startswith("text:"):
            responder = Turn.text(responder_name.removeprefix("text:"))
        else:
            responder = RESPONDERS[responder_name]
    state = _State(responder)
    state.script(turns)

    def ready() -> None:
        print(f"fake LLM listening on http://{args.host}:{args.port}/v1", flush=True)

    run: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(
            _serve_forever(
                host=args.host, port=args.port, state=state, api_key=args.api_key, ready=ready
            )
        )


if __name__ == "__main__":
    main()
