"""The model client for OpenAI-compatible chat completions, through the ``openai`` SDK.

The SDK retries 408/409/429/5xx, connection errors and timeouts with jittered exponential
backoff (``max_retries``); what still fails is mapped to the engine's ``ModelError`` tree:
an auth failure and an unknown model get their own classes and clear messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient, RequestOptions

from agentspec_runtime.engine.errors import ModelAuthError, ModelError, ModelNotFoundError
from agentspec_runtime.engine.types import (
    Message,
    ModelParams,
    ModelTurn,
    OnDelta,
    ToolCall,
    ToolSpec,
    Usage,
)


class OpenAIModel:
    """One connection to an OpenAI-compatible endpoint; per-call settings in ``ModelParams``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 3,
    ) -> None:
        self.base_url = base_url
        self._client = AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, Ollama, the test double) accept any key; the SDK needs one.
            api_key=api_key or "unset",
            timeout=timeout,
            max_retries=max_retries,
            default_headers=dict(headers or {}),
            # The SDK's aiohttp backend: far less CPU per request than the httpx stack.
            http_client=DefaultAioHttpClient(timeout=timeout),
        )

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
        options: RequestOptions = {"headers": dict(headers)} if headers else {}
        try:
            if on_delta is None:
                return await self._complete(params, body, options)
            return await self._stream(params, body, options, on_delta)
        except openai.AuthenticationError as e:
            raise ModelAuthError(
                f"the model endpoint {self.base_url} rejected the API key (HTTP {e.status_code})"
            ) from e
        except openai.NotFoundError as e:
            raise ModelNotFoundError(
                f"the model endpoint {self.base_url} does not know model {params.model!r} "
                f"(HTTP {e.status_code}: {_detail(e)})"
            ) from e
        except openai.APIStatusError as e:
            raise ModelError(
                f"the model endpoint answered HTTP {e.status_code}: {_detail(e)}"
            ) from e
        except openai.APITimeoutError as e:
            raise ModelError(f"the model endpoint {self.base_url} timed out") from e
        except openai.APIConnectionError as e:
            raise ModelError(f"cannot reach the model endpoint {self.base_url}") from e
        except openai.APIError as e:
            raise ModelError(f"the model endpoint failed: {e}") from e
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            # a body or stream chunk that is not what the OpenAI schema promises
            raise ModelError(
                f"the model endpoint sent an unexpected response ({type(e).__name__})"
            ) from e

    async def _complete(
        self, params: ModelParams, body: dict[str, Any], options: RequestOptions
    ) -> ModelTurn:
        # The SDK's generic post (its documented route for raw bodies): auth, retries with
        # backoff and error classes stay the SDK's; the per-call TypedDict transform of the
        # request and the pydantic models of the response, which cost more CPU than the
        # rest of a turn, are skipped. The engine reads only a few fields.
        response: dict[str, Any] = await self._client.post(
            "/chat/completions", cast_to=dict, body=body, options=options
        )
        try:
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
        except (KeyError, IndexError, TypeError) as e:
            raise ModelError(f"the model endpoint sent an unexpected response ({e!r})") from e
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
        """The base URL without credentials or query (shown in /status)."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    async def aclose(self) -> None:
        await self._client.close()


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return error.message
