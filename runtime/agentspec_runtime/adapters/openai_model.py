"""The model client for OpenAI-compatible chat completions, through the ``openai`` SDK.

The SDK retries 408/409/429/5xx, connection errors and timeouts with jittered exponential
backoff (``max_retries``); what still fails is mapped to the engine's ``ModelError`` tree:
an auth failure and an unknown model get their own classes and clear messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai
from openai import AsyncOpenAI

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
        kwargs: dict[str, Any] = {"model": params.model, "messages": messages}
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens
        if tools:
            kwargs["tools"] = [t.to_openai() for t in tools]
        if headers:
            kwargs["extra_headers"] = dict(headers)
        try:
            if on_delta is None:
                return await self._complete(params, kwargs)
            return await self._stream(params, kwargs, on_delta)
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

    async def _complete(self, params: ModelParams, kwargs: dict[str, Any]) -> ModelTurn:
        response = await self._client.chat.completions.create(**kwargs)
        choice = response.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
            for c in choice.message.tool_calls or ()
            if c.type == "function"
        )
        usage = response.usage
        return ModelTurn(
            content=choice.message.content,
            tool_calls=calls,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            model=response.model or params.model,
            finish_reason=choice.finish_reason or "stop",
        )

    async def _stream(
        self, params: ModelParams, kwargs: dict[str, Any], on_delta: OnDelta
    ) -> ModelTurn:
        stream = await self._client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        model = params.model
        finish = "stop"
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    await on_delta(delta.content)
                for piece in delta.tool_calls or ():
                    call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.id or call["id"]
                    if piece.function is not None:
                        call["name"] = call["name"] or (piece.function.name or "")
                        call["arguments"] += piece.function.arguments or ""
        return ModelTurn(
            content="".join(text) if text else None,
            tool_calls=tuple(ToolCall(**calls[i]) for i in sorted(calls)),
            usage=usage,
            model=model,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return error.message
