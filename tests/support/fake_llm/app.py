"""The fake model's HTTP side: the script state and a plain ASGI app that uvicorn serves.

Owns what happens to a chat request: it is recorded, takes the next scripted step (else the
responder's answer; with neither, an HTTP 500 that is also recorded as a problem), waits
while the server is held, and is answered in OpenAI's wire format (JSON or SSE, usage,
errors, latency, a dropped connection). ``GET /v1/models`` lists the models; the admin
endpoints under ``/_fake/`` expose the same state to another process.

uvicorn parses HTTP (keep-alive, chunked bodies). ASGI has no message for "drop the
connection without answering", so :class:`DroppableHttpTools` (uvicorn's httptools protocol)
puts each request's transport in a scope extension.

Must not: start servers, threads or processes (that is :mod:`.servers`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, TypeAlias

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .embeddings import embed
from .turns import (
    ChatRequest,
    HttpError,
    JsonObject,
    Step,
    ToolCall,
    Turn,
    completion_tokens,
    prompt_tokens,
)

__all__ = ["DroppableHttpTools", "FakeLLMApp", "ScriptState"]

Scope: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send: TypeAlias = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_DROP = "agentspec.fake_llm.transport"
_ARGUMENT_PIECE = 8
"""Streamed tool-call arguments are cut into pieces of this many characters."""


class DroppableHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, handing each request its connection's transport (so a
    turn can drop the connection before any response byte, which ASGI cannot express)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {_DROP: {"transport": self.transport}}


# -- the script ----------------------------------------------------------------------------


MODERATION_WORDS = {"grenade": "violence", "weapon": "violence", "slur": "harassment"}
"""The fake moderation endpoint's lexicon: word -> category."""


class ScriptState:
    """Script queue, request records and problems; shared by the server and the test thread.

    A *problem* is traffic the test did not script: a request that found no step and no
    responder, or a step or responder that raised. Both are answered with HTTP 500 and kept,
    so the front ends can fail the test when it ends.
    """

    def __init__(self, responder: Step | None) -> None:
        self.responder = responder
        self._steps: deque[Step] = deque()
        self._requests: list[ChatRequest] = []
        self._problems: list[str] = []
        self._moderated: list[str] = []
        self._embedded: list[list[str]] = []
        self._changed = threading.Condition()
        self._numbers = itertools.count(1)

    def script(self, steps: Sequence[Step]) -> None:
        with self._changed:
            self._steps.extend(steps)

    def reset(self) -> None:
        with self._changed:
            self._steps.clear()
            self._requests.clear()
            self._problems.clear()
            self._moderated.clear()
            self._embedded.clear()
            self._numbers = itertools.count(1)

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._steps)

    def requests(self) -> list[ChatRequest]:
        with self._changed:
            return list(self._requests)

    def moderated(self, text: str | None = None) -> list[str]:
        """Record a moderation input (``text``); every one received so far."""
        with self._changed:
            if text is not None:
                self._moderated.append(text)
            return list(self._moderated)

    def embedded(self, texts: list[str] | None = None) -> list[list[str]]:
        """Record one embeddings request's inputs (``texts``); every request's so far."""
        with self._changed:
            if texts is not None:
                self._embedded.append(list(texts))
            return [list(t) for t in self._embedded]

    def problems(self) -> list[str]:
        with self._changed:
            return list(self._problems)

    def wait_for_requests(self, count: int, *, timeout: float) -> list[ChatRequest]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"fake LLM got {len(self._requests)} chat requests, expected {count} "
                    f"within {timeout}s"
                )
            return list(self._requests)

    def next_turn(self, request: ChatRequest) -> tuple[int, Turn]:
        """Record ``request`` and pick its turn (numbered from 1 since the last reset)."""
        with self._changed:
            self._requests.append(request)
            number = next(self._numbers)
            self._changed.notify_all()
            step = self._steps.popleft() if self._steps else None
            responder = self.responder
        source = "scripted step"
        if step is None:
            if responder is None:
                self._problem(
                    f"request {number} was not scripted (no step left, no responder); "
                    f"last user text {request.last_user_text!r}"
                )
                return number, Turn.error(
                    500, "fake LLM: script exhausted and no responder configured"
                )
            step, source = responder, "responder"
        if isinstance(step, Turn):
            return number, step
        try:
            return number, step(request)
        except Exception as exc:  # a broken step must show up in the test, not kill the server
            self._problem(f"request {number}: the {source} raised {exc!r}")
            return number, Turn.error(500, f"fake LLM {source} raised {exc!r}")

    def report(self) -> str | None:
        """What went differently from the script, or None."""
        with self._changed:
            lines = list(self._problems)
            if self._steps:
                lines.insert(0, f"{len(self._steps)} scripted fake-LLM turn(s) never requested")
        return "; ".join(lines) or None

    def _problem(self, text: str) -> None:
        with self._changed:
            self._problems.append(text)


# -- rendering -----------------------------------------------------------------------------


def _error_body(error: HttpError) -> bytes:
    fields = {"message": error.message, "type": error.type, "param": None, "code": error.code}
    return json.dumps({"error": fields}).encode()


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

    def event(data: JsonObject) -> bytes:
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    def chunk(delta: JsonObject, finish: str | None = None) -> bytes:
        data: JsonObject = {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            data["usage"] = None
        return event(data)

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
        events.append(event({**base, "choices": [], "usage": _usage(request, turn)}))
    events.append(b"data: [DONE]\n\n")
    return events


# -- the ASGI app --------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-cased names; repeated headers joined with ``", "`` as HTTP allows."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _send_json(
    send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(scope: Scope, receive: Receive, *, flush: bool) -> None:
    """End the connection without finishing the response: ``flush`` lets what was already
    sent arrive first (a stream cut mid-way), else it is reset before any byte."""
    transport: asyncio.Transport = scope["extensions"][_DROP]["transport"]
    if flush:
        transport.close()
    else:
        transport.abort()
    while (await receive())["type"] != "http.disconnect":
        pass  # uvicorn reports the disconnect once the transport is gone


def _not_found(message: str) -> HttpError:
    return HttpError(status=404, message=message, type="invalid_request_error")


class FakeLLMApp:
    """The ASGI app: chat completions, models, admin. Runs on one event loop; ``hold``,
    ``release`` and ``close`` must be called on that loop."""

    def __init__(
        self,
        state: ScriptState,
        *,
        models: Sequence[str],
        strict_models: bool,
        api_key: str | None,
    ) -> None:
        self.state = state
        self.models = list(models)
        self.strict_models = strict_models
        self.api_key = api_key
        self._released = asyncio.Event()
        self._released.set()
        self._closing = asyncio.Event()
        self.embeddings_failing: int | None = None
        """An HTTP status every embeddings request gets (the endpoint "down"), or None."""

    def hold(self) -> None:
        """Record requests but answer none until :meth:`release`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        """Stop every wait (held, latency): their connections are dropped."""
        self._closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        body = await _read_body(receive)
        if method == "POST" and path.endswith("/chat/completions"):
            await self._chat(scope, receive, send, body)
        elif method == "POST" and path.endswith("/moderations"):
            await self._moderate(body, send)
        elif method == "POST" and path.endswith("/embeddings"):
            await self._embed(scope, body, send)
        elif method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            await _send_json(send, 200, json.dumps({"object": "list", "data": data}).encode())
        elif path.startswith("/_fake/"):
            await self._admin(method, path, body, send)
        else:
            error = _not_found(f"no route {method} {path}")
            await _send_json(send, 404, _error_body(error))

    async def _moderate(self, body: bytes, send: Send) -> None:
        """OpenAI's /v1/moderations, deterministic: a text is flagged under the category of
        each word of :data:`MODERATION_WORDS` it contains."""
        try:
            text = json.loads(body)["input"]
            if not isinstance(text, str):
                raise TypeError("input must be a string")
        except (ValueError, KeyError, TypeError) as e:
            await _send_json(send, 400, _error_body(_not_found(f"bad moderation body: {e}")))
            return
        self.state.moderated(text)
        lowered = text.lower()
        categories = {
            c: any(w in lowered for w, cc in MODERATION_WORDS.items() if cc == c)
            for c in sorted(set(MODERATION_WORDS.values()))
        }
        result = {"flagged": any(categories.values()), "categories": categories}
        payload = {"id": "modr-fake", "model": "fake-moderation", "results": [result]}
        await _send_json(send, 200, json.dumps(payload).encode())

    async def _embed(self, scope: Scope, body: bytes, send: Send) -> None:
        """OpenAI's /v1/embeddings, deterministic (see :mod:`.embeddings`); every request's
        inputs are recorded (``embedded``), so a test counts what was embedded."""
        if self.api_key is not None and _headers(scope).get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            error = HttpError(
                status=401, message="Incorrect API key provided", type="invalid_request_error"
            )
            await _send_json(send, 401, _error_body(error))
            return
        try:
            request = json.loads(body)
            texts = request["input"]
            texts = [texts] if isinstance(texts, str) else texts
            if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
                raise TypeError("input must be a string or a non-empty list of strings")
            model = str(request["model"])
        except (ValueError, KeyError, TypeError) as e:
            await _send_json(send, 400, _error_body(_not_found(f"bad embeddings body: {e}")))
            return
        if self.embeddings_failing is not None:
            status = self.embeddings_failing
            error = HttpError(status=status, message="embeddings unavailable", type="server_error")
            await _send_json(send, status, _error_body(error))
            return
        self.state.embedded(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(texts)
        ]
        words = sum(len(t.split()) for t in texts)
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": words, "total_tokens": words},
        }
        await _send_json(send, 200, json.dumps(payload).encode())

    async def _admin(self, method: str, path: str, body: bytes, send: Send) -> None:
        out: Any
        if method == "GET" and path == "/_fake/health":
            out = {"ok": True, "pending": self.state.pending, "problems": self.state.problems()}
        elif method == "GET" and path == "/_fake/requests":
            out = [r.to_json() for r in self.state.requests()]
        elif method == "GET" and path == "/_fake/embedded":
            out = self.state.embedded()
        elif method == "POST" and path == "/_fake/script":
            turns = [Turn.from_json(t) for t in json.loads(body or b"{}").get("turns", [])]
            self.state.script(turns)
            out = {"pending": self.state.pending}
        elif method == "POST" and path == "/_fake/reset":
            self.state.reset()
            self.release()
            out = {"ok": True}
        elif method == "POST" and path in ("/_fake/hold", "/_fake/release"):
            self.hold() if path == "/_fake/hold" else self.release()
            out = {"ok": True}
        else:
            await _send_json(send, 404, _error_body(_not_found(f"no admin route {path}")))
            return
        await _send_json(send, 200, json.dumps(out).encode())

    async def _wait(self, receive: Receive, waited: Awaitable[object]) -> bool:
        """Await ``waited`` unless the client leaves or the server closes first; whether it
        completed."""
        task = asyncio.ensure_future(waited)
        others = {asyncio.ensure_future(receive()), asyncio.ensure_future(self._closing.wait())}
        done, pending = await asyncio.wait({task, *others}, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        return task in done and not (done & others)

    async def _chat(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            parsed = exc
        if not isinstance(parsed, dict):
            problem = parsed if isinstance(parsed, Exception) else "body is not a JSON object"
            error = HttpError(
                status=400, message=f"invalid JSON body: {problem}", type="invalid_request_error"
            )
            await _send_json(send, 400, _error_body(error))
            return
        request = ChatRequest(body=parsed, headers=_headers(scope))
        number, turn = self.state.next_turn(request)
        turn = self._gate(request, turn)
        if not self._released.is_set() and not await self._wait(receive, self._released.wait()):
            await _drop(scope, receive, flush=False)
            return
        if turn.first_byte_latency and not await self._wait(
            receive, asyncio.sleep(turn.first_byte_latency)
        ):
            await _drop(scope, receive, flush=False)
            return
        if turn.disconnect_after_chunks == 0:
            await _drop(scope, receive, flush=False)
            return
        if turn.http_error is not None:
            error = turn.http_error
            extra = []
            if error.retry_after is not None:
                extra.append((b"retry-after", f"{error.retry_after:g}".encode()))
            await _send_json(send, error.status, _error_body(error), extra)
            return
        if request.stream:
            await self._stream(scope, receive, send, _stream_chunks(request, number, turn), turn)
        elif turn.disconnect_after_chunks is not None:
            await _drop(scope, receive, flush=False)
        else:
            await _send_json(send, 200, _completion_json(request, number, turn))

    def _gate(self, request: ChatRequest, turn: Turn) -> Turn:
        """Server-wide checks (API key, known models) that win over the scripted turn."""
        expected = None if self.api_key is None else f"Bearer {self.api_key}"
        if expected is not None and request.headers.get("authorization") != expected:
            return Turn.invalid_api_key()
        if self.strict_models and request.model not in self.models:
            return Turn.model_not_found(request.model)
        return turn

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, events: list[bytes], turn: Turn
    ) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, event in enumerate(events):
            if turn.disconnect_after_chunks is not None and index >= turn.disconnect_after_chunks:
                await _drop(scope, receive, flush=True)
                return
            if (
                index
                and turn.per_chunk_latency
                and not await self._wait(receive, asyncio.sleep(turn.per_chunk_latency))
            ):
                await _drop(scope, receive, flush=True)
                return
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
