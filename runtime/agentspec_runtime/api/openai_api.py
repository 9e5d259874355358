"""The OpenAI-compatible API: ``POST /v1/chat/completions`` (streaming too), ``GET /v1/models``.

``model`` must be the agent's name. Agentspec extensions to the request body:
``context_id`` (the conversation; sticky prompt variant, defaults to a new id, also read
from the ``X-Agentspec-Context-Id`` header) and ``variables`` (prompt variables). Responses
carry the prompt version and config revision in an ``agentspec`` object and in headers.
Bad input always gets a 4xx in OpenAI's error shape, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, unquote

from opentelemetry import context as otel_context
from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from agentspec_runtime.api.bodies import PARSED
from agentspec_runtime.api.inbound import consumer, hops
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import (
    AgentspecError,
    NotReadyError,
    RequestError,
    UnknownModelError,
)
from agentspec_runtime.engine.loop import AgentRequest, AgentResult
from agentspec_runtime.engine.types import HOPS_HEADER, ToolEvent

T = TypeVar("T")
CONTEXT_HEADER = "x-agentspec-context-id"
log = logging.getLogger(__name__)


ContextId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""Any Unicode text without control characters (it travels in a header, percent-encoded)."""


def encode_context_id(context_id: str) -> str:
    """For the ``X-Agentspec-Context-Id`` header: UTF-8, percent-encoded beyond printable
    ASCII (``%`` itself included), so every context id can be carried."""
    return quote(context_id, safe=_HEADER_SAFE)


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_CONTEXT_IDS: TypeAdapter[str] = TypeAdapter(ContextId)


def _header_context_id(request: Request) -> str | None:
    raw = request.headers.get(CONTEXT_HEADER)
    if raw is None:
        return None
    try:
        return _CONTEXT_IDS.validate_python(unquote(raw, errors="strict"))
    except (ValidationError, UnicodeDecodeError) as e:
        raise _RejectedError(
            error_response(
                400,
                f"{CONTEXT_HEADER}: a context id is 1-256 characters of text without control "
                "characters, percent-encoded as UTF-8 in this header",
                code="invalid_context_id",
                param=CONTEXT_HEADER,
            )
        ) from e


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False
    include_agentspec_events: bool = False
    """Our extension: the run's tool calls (MCP, partner agents, knowledge) as chunks
    without choices, ``{"choices": [], "agentspec": {"event": "tool_start" | "tool_end",
    ...}}`` — names and outcome only. Off by default: a strict OpenAI client expects none."""


class ChatRequest(BaseModel):
    """The OpenAI chat-completions body. Known OpenAI parameters are accepted (the agent's
    spec decides model settings, so most are ignored); anything else is rejected."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    context_id: ContextId | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    # Accepted for compatibility with OpenAI clients; the AgentSpec governs these.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


class _RejectedError(Exception):
    """Carries the 4xx response for a request that cannot be served."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


class _CallerLeftError(Exception):
    """The caller disconnected before the answer: its work was cancelled."""


async def _unless_caller_leaves(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` and cancel it if the caller disconnects first (model retries included:
    nobody would read the answer). The body has been read, so the next ASGI message the
    server can deliver is ``http.disconnect``."""
    task = asyncio.ensure_future(work)

    async def left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(left())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()  # we were cancelled ourselves (shutdown): so is the work
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise _CallerLeftError


def outbound_headers() -> dict[str, str]:
    """Headers every call this request makes carries: one more hop than it arrived with."""
    return {HOPS_HEADER: str(hops.get() + 1)}


def error_response(
    status: int,
    message: str,
    *,
    code: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
    )


def _validation_error(error: ValidationError) -> JSONResponse:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in error.errors(include_url=False)[:5]
    )
    return error_response(400, message, code="invalid_request", param=where or None)


class ChatCompletions:
    """The two OpenAI endpoints, bound to one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def models(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.engine.agent,
                        "object": "model",
                        "created": 0,
                        "owned_by": "agentspec",
                    }
                ],
            }
        )

    async def create(self, request: Request) -> Response:
        try:
            body, agent_request = await self._parse(request)
        except _RejectedError as e:
            return e.response
        if body.stream:
            if not self.engine.ready:  # before the 200 of a stream, not inside it
                return _engine_error(NotReadyError("no configuration loaded yet"))
            return self._stream(body, agent_request, request)
        token = otel_context.attach(propagate.extract(dict(request.headers)))
        try:
            result = await _unless_caller_leaves(request, self.engine.run(agent_request))
        except AgentspecError as e:
            return _engine_error(e)
        except _CallerLeftError:
            return Response(status_code=499)  # nobody reads it: the connection is gone
        finally:
            otel_context.detach(token)
        return JSONResponse(
            self._completion(result, context_id=agent_request.context_id),
            headers=_result_headers(result, agent_request.context_id),
        )

    async def _parse(self, request: Request) -> tuple[ChatRequest, AgentRequest]:
        # BodyGuard has read and parsed the body, within its limits
        data = request.scope["state"][PARSED]
        if not isinstance(data, dict):
            raise _RejectedError(
                error_response(400, "the body must be a JSON object", code="invalid_json")
            )
        try:
            body = ChatRequest.model_validate(data)
        except ValidationError as e:
            raise _RejectedError(_validation_error(e)) from e
        if body.model != self.engine.agent:
            raise _RejectedError(
                _engine_error(
                    UnknownModelError(
                        f"the model {body.model!r} does not exist: this agent serves "
                        f"{self.engine.agent!r}"
                    )
                )
            )
        context_id = body.context_id or _header_context_id(request) or uuid.uuid4().hex
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        return body, AgentRequest(
            messages=messages,
            context_id=context_id,
            variables=body.variables,
            headers=outbound_headers(),
            consumer=consumer.get(),
        )

    def _completion(self, result: AgentResult, *, context_id: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.engine.agent,
            "system_fingerprint": result.revision,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.content},
                    "finish_reason": _finish(result),
                }
            ],
            "usage": _usage(result),
            "agentspec": _metadata(result, context_id),
        }

    def _stream(self, body: ChatRequest, agent_request: AgentRequest, request: Request) -> Response:
        options = body.stream_options or StreamOptions()
        include_usage, include_events = options.include_usage, options.include_agentspec_events
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        agent = self.engine.agent
        trace_context = propagate.extract(dict(request.headers))

        def envelope(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            """One chunk; one without choices carries only ``extra`` (usage, tool events)."""
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": agent,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return envelope([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

        async def events() -> AsyncIterator[bytes]:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def on_delta(text: str) -> None:
                queue.put_nowait(chunk({"content": text}))

            async def on_tool(event: ToolEvent) -> None:
                queue.put_nowait(envelope([], agentspec=_tool_event(event)))

            async def run() -> AgentResult:
                token = otel_context.attach(trace_context)
                try:
                    return await self.engine.run(
                        agent_request,
                        on_delta=on_delta,
                        on_tool=on_tool if include_events else None,
                    )
                finally:
                    otel_context.detach(token)
                    queue.put_nowait(None)

            task = asyncio.get_running_loop().create_task(run())
            try:
                yield chunk({"role": "assistant", "content": ""})
                while (item := await queue.get()) is not None:
                    yield item
                try:
                    result = task.result()
                except Exception as e:  # the stream has started: the error goes in it
                    if not isinstance(e, AgentspecError):
                        log.exception("agent %s: streamed request failed", agent)
                    yield b"data: " + json.dumps(_stream_error(e)).encode() + b"\n\n"
                    yield b"data: [DONE]\n\n"
                    return
                yield chunk(
                    {}, _finish(result), agentspec=_metadata(result, agent_request.context_id)
                )
                if include_usage:
                    yield envelope([], usage=_usage(result))
                yield b"data: [DONE]\n\n"
            finally:
                # The client may have gone away mid-stream: stop the agent's work with it.
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

        headers = {
            "X-Agentspec-Context-Id": encode_context_id(agent_request.context_id),
            "Cache-Control": "no-cache",
        }
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _finish(result: AgentResult) -> str:
    if result.finish_reason == "content_filter":  # the guard's refusal: OpenAI's word for it
        return "content_filter"
    return "length" if result.finish_reason == "max_iterations" else "stop"


def _usage(result: AgentResult) -> dict[str, int]:
    """Everything the request cost: this agent's model calls plus its partners'."""
    usage = result.usage + result.tool_usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total,
    }


def _stream_error(e: Exception) -> dict[str, Any]:
    known = isinstance(e, AgentspecError)
    error: dict[str, Any] = {
        "message": str(e) if known else "the agent failed unexpectedly",
        "type": "server_error",
        "code": getattr(e, "code", "error") if known else "internal_error",
        "status": getattr(e, "status", 500) if known else 500,
    }
    after = retry_after(e)
    if after is not None:
        error["retry_after"] = after
    return {"error": error}


def _tool_event(event: ToolEvent) -> dict[str, Any]:
    done = event.ok is not None
    described: dict[str, Any] = {
        "event": "tool_end" if done else "tool_start",
        "callId": event.call_id,
        "tool": event.name,
        "source": event.source,
        "target": event.target,
    }
    if done:
        described["ok"] = event.ok
        described["ms"] = round((event.seconds or 0) * 1000, 1)
    return described


def _metadata(result: AgentResult, context_id: str) -> dict[str, Any]:
    return {
        "contextId": context_id,
        "promptVersion": result.prompt.version,
        "promptVariant": result.prompt.variant,
        "configRevision": result.revision,
        "iterations": result.iterations,
        "toolCalls": result.tool_calls,
        "finishReason": result.finish_reason,
        "recalledTurns": result.recalled_turns,
        "partnerUsage": {
            "prompt_tokens": result.tool_usage.input_tokens,
            "completion_tokens": result.tool_usage.output_tokens,
        },
    }


def _result_headers(result: AgentResult, context_id: str) -> dict[str, str]:
    return {
        "X-Agentspec-Context-Id": encode_context_id(context_id),
        "X-Agentspec-Prompt-Version": result.prompt.version,
        "X-Agentspec-Config-Revision": result.revision,
    }


def _engine_error(error: AgentspecError) -> JSONResponse:
    status = getattr(error, "status", 500)
    code = getattr(error, "code", "error")
    kind = "invalid_request_error" if isinstance(error, RequestError) else "server_error"
    response = error_response(status, str(error), code=code, kind=kind)
    after = retry_after(error)
    if after is not None:
        response.headers["Retry-After"] = str(after)
    response.headers.update(getattr(error, "headers", {}))  # a rate limit's x-ratelimit-*
    return response


def retry_after(error: BaseException) -> int | None:
    """Whole seconds after which the caller may try again, when the error says (429/503)."""
    value = getattr(error, "retry_after", None)
    return None if value is None else max(1, math.ceil(value))
