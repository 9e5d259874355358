"""The model client for OpenAI-compatible chat completions, through the ``openai`` SDK.

Retries are ours, not the SDK's, so they are bounded the way a gateway bounds them:

* ``ModelParams.timeout`` bounds the *whole* call — attempts, backoff and Retry-After waits.
* At most ``max_retries`` retries, of what is worth retrying (429, 408, 409, 5xx, a lost
  connection) and only before anything was streamed to the caller; the wait is the
  endpoint's ``Retry-After`` (or ``retry-after-ms``), else jittered exponential backoff.
* All waits of one call together stay within ``retry_budget``: when the endpoint asks for
  longer, the caller is told at once (429 or 503 with ``Retry-After``) instead of being held.
* A circuit breaker per endpoint: consecutive failures (5xx, timeouts, lost connections —
  not 429, which is backpressure from a live endpoint) open it, and while open every call
  fails at once with 503 and the seconds until the next trial. ``status()`` shows it.

What finally fails becomes the engine's ``ModelError`` tree with a stable message of our own:
never the upstream's text (a gateway that echoes the request would leak the API key to the
caller) and never the base URL. The upstream's text goes to the log, with every secret value
this client sends masked.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import openai
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient, RequestOptions

from agentspec_runtime.engine.breaker import CircuitBreaker
from agentspec_runtime.engine.errors import (
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimitedError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from agentspec_runtime.engine.types import (
    Message,
    ModelParams,
    ModelTurn,
    OnDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

from .urls import public_url, redact

log = logging.getLogger(__name__)

Kind = Literal[
    "rate_limited", "overloaded", "server", "timeout", "connection", "auth", "not_found",
    "refused", "bad_response",
]  # fmt: skip
_RETRYABLE: frozenset[Kind] = frozenset({"rate_limited", "overloaded", "server", "connection"})
_OUTAGE: frozenset[Kind] = frozenset({"overloaded", "server", "timeout", "connection"})
BACKOFF_BASE, BACKOFF_CAP = 0.5, 8.0


@dataclass(frozen=True)
class _Failure:
    kind: Kind
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""
    """The upstream's own words: for the log only (redacted), never for the caller."""


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_BY_STATUS: dict[int, Kind] = {
    429: "rate_limited", 503: "overloaded", 408: "server", 409: "server",
    401: "auth", 403: "auth", 404: "not_found",
}  # fmt: skip


def _classify(error: Exception) -> _Failure:
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        kind = _BY_STATUS.get(status) or ("server" if status >= 500 else "refused")
        after = _retry_after(getattr(error.response, "headers", None))
        return _Failure(kind, status, after, f"HTTP {status}: {error.message}")
    if isinstance(error, openai.APITimeoutError):
        return _Failure("timeout", detail=str(error))
    if isinstance(error, openai.APIConnectionError):
        return _Failure("connection", detail=f"{error}: {error.__cause__!r}")
    return _Failure("bad_response", detail=f"{type(error).__name__}: {error}")


# What the caller is told, per kind of failure: the engine's error class and its message.
_ERRORS: dict[Kind, tuple[type[ModelError], str]] = {
    "rate_limited": (
        ModelRateLimitedError,
        "the model endpoint is rate limiting this agent; try again in {wait}s",
    ),
    "overloaded": (ModelUnavailableError, "the model endpoint is overloaded; try again in {wait}s"),
    "timeout": (ModelTimeoutError, "the model endpoint did not answer within {timeout}s"),
    "auth": (ModelAuthError, "the model endpoint rejected the agent's credentials{status}"),
    "not_found": (ModelNotFoundError, "the model endpoint does not know model {model!r}{status}"),
    "connection": (ModelError, "the model endpoint cannot be reached"),
    "bad_response": (ModelError, "the model endpoint sent an unexpected response"),
    "refused": (ModelError, "the model endpoint refused the request{status}"),
    "server": (ModelError, "the model endpoint failed{status}"),
}
_TOLD_WHEN: frozenset[Kind] = frozenset({"rate_limited", "overloaded"})
"""Failures whose error carries Retry-After for the caller."""


class OpenAIModel:
    """One connection to an OpenAI-compatible endpoint; per-call settings in ``ModelParams``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        breaker_failures: int = 5,
        breaker_reset: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self._sleep = sleep
        self._clock = clock
        self._secrets = [v for v in (api_key, *(headers or {}).values()) if v]
        self._client = AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, Ollama, the test double) accept any key; the SDK needs one.
            api_key=api_key or "unset",
            max_retries=0,  # ours are bounded by the call's timeout and retry budget
            default_headers=dict(headers or {}),
            # The SDK's aiohttp backend: far less CPU per request than the httpx stack.
            http_client=DefaultAioHttpClient(),
        )
        self.breaker = CircuitBreaker(
            self.endpoint, failures=breaker_failures, reset_after=breaker_reset, clock=clock
        )

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "circuit": self.breaker.state}

    async def complete(
        self,
        *,
        params: ModelParams,
        messages: list[Message],
        tools: list[ToolSpec],
        on_delta: OnDelta | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelTurn:
        body: dict[str, Any] = {"model": params.model, "messages": messages}
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
        deadline = self._clock() + params.timeout
        budget = params.retry_budget
        streamed = False

        async def forward(text: str) -> None:
            nonlocal streamed
            streamed = True
            assert on_delta is not None
            await on_delta(text)

        attempt = 0
        while True:
            self._admit()
            failure, turn = await self._attempt(
                params,
                body,
                deadline=deadline,
                headers=headers,
                stream=forward if on_delta else None,
            )
            if turn is not None:
                return turn
            assert failure is not None
            self._record(failure, attempt=attempt)
            wait = failure.retry_after
            if wait is None:
                wait = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # noqa: S311
            fits = wait <= budget and self._clock() + wait < deadline
            retry = failure.kind in _RETRYABLE and not streamed and attempt < params.max_retries
            if not (retry and fits):
                raise self._error(failure, params=params, wait=wait)
            budget -= wait
            attempt += 1
            await self._sleep(wait)

    async def _attempt(
        self,
        params: ModelParams,
        body: dict[str, Any],
        *,
        deadline: float,
        headers: Mapping[str, str] | None,
        stream: OnDelta | None,
    ) -> tuple[_Failure | None, ModelTurn | None]:
        """One try within the call's deadline: the turn, or what went wrong."""
        remaining = deadline - self._clock()
        options: RequestOptions = {"timeout": max(remaining, 0.001)}
        if headers:
            options["headers"] = dict(headers)
        try:
            async with asyncio.timeout(remaining):
                if stream is None:
                    turn = await self._complete(params, body, options)
                else:
                    turn = await self._stream(params, body, options, stream)
        except TimeoutError:
            return _Failure("timeout", detail=f"no answer within {params.timeout:g}s"), None
        except (openai.APIError, KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            return _classify(e), None
        except BaseException:
            self.breaker.release()  # cancelled: no verdict on the endpoint
            raise
        self.breaker.success()
        return None, turn

    def _admit(self) -> None:
        if self.breaker.state == "closed":
            return
        try:
            self.breaker.before_call()
        except Exception as e:
            wait = self.breaker.seconds_to_trial()
            raise ModelUnavailableError(
                f"the model endpoint is unavailable after repeated failures (circuit open); "
                f"try again in {wait:.0f}s",
                retry_after=wait,
            ) from e

    def _record(self, failure: _Failure, *, attempt: int) -> None:
        if failure.kind in _OUTAGE:
            self.breaker.failure()
        else:
            self.breaker.release()  # the endpoint answered: alive, whatever it said
        log.warning(
            "model call to %s failed (attempt %d, %s): %s",
            self.endpoint,
            attempt + 1,
            failure.kind,
            redact(failure.detail, self._secrets)[:500],
        )

    @staticmethod
    def _error(failure: _Failure, *, params: ModelParams, wait: float) -> ModelError:
        cls, template = _ERRORS[failure.kind]
        message = template.format(
            wait=f"{wait:.0f}",
            timeout=f"{params.timeout:g}",
            model=params.model,
            status=f" (HTTP {failure.status})" if failure.status else "",
        )
        return cls(message, retry_after=wait if failure.kind in _TOLD_WHEN else None)

    async def _complete(
        self, params: ModelParams, body: dict[str, Any], options: RequestOptions
    ) -> ModelTurn:
        # The SDK's generic post (its documented route for raw bodies): auth and error classes
        # stay the SDK's; the per-call TypedDict transform of the request and the pydantic
        # models of the response, which cost more CPU than the rest of a turn, are skipped.
        # The engine reads only a few fields; a body without them is a bad response (the
        # KeyError/TypeError is classified by complete()).
        response: dict[str, Any] = await self._client.post(
            "/chat/completions", cast_to=dict, body=body, options=options
        )
        choice = response["choices"][0]
        message = choice.get("message") or {}
        calls = tuple(
            ToolCall(
                id=c.get("id") or f"call_{i}",
                name=c["function"]["name"],
                arguments=c["function"].get("arguments") or "",
            )
            for i, c in enumerate(message.get("tool_calls") or ())
            if c.get("type", "function") == "function"
        )
        return ModelTurn(
            content=message.get("content"),
            tool_calls=calls,
            usage=_usage(response.get("usage")),
            model=response.get("model") or params.model,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    async def _stream(
        self,
        params: ModelParams,
        body: dict[str, Any],
        options: RequestOptions,
        on_delta: OnDelta,
    ) -> ModelTurn:
        stream: AsyncStream[dict[str, Any]] = await self._client.post(
            "/chat/completions",
            cast_to=dict,
            body={**body, "stream": True, "stream_options": {"include_usage": True}},
            options=options,
            stream=True,
            stream_cls=AsyncStream[dict[str, Any]],
        )
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        model = params.model
        finish = "stop"
        async with stream:
            async for chunk in stream:
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
                if not chunk.get("choices"):
                    continue
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    text.append(delta["content"])
                    await on_delta(delta["content"])
                for piece in delta.get("tool_calls") or ():
                    index = piece.get("index", len(calls))
                    call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.get("id") or call["id"] or f"call_{index}"
                    function = piece.get("function") or {}
                    call["name"] = call["name"] or (function.get("name") or "")
                    call["arguments"] += function.get("arguments") or ""
        return ModelTurn(
            content="".join(text) if text else None,
            tool_calls=tuple(ToolCall(**calls[i]) for i in sorted(calls)),
            usage=usage,
            model=model,
            finish_reason=finish,
        )

    @property
    def endpoint(self) -> str:
        """The base URL without credentials or query (for /status and logs)."""
        return public_url(self.base_url)

    async def aclose(self) -> None:
        await self._client.close()


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))
