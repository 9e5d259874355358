"""Reading a streamed chat completion the way a careful client does (no pytest dependency)."""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["stream_chat"]


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str]:
    """POST ``body`` with ``stream: true`` to ``/v1/chat/completions``: the answer's text and
    the prompt version the agent reported. Fails on a non-200 or an error event."""
    text: list[str] = []
    version = ""
    async with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            assert "error" not in chunk, chunk
            for choice in chunk["choices"]:
                text.append(choice["delta"].get("content") or "")
            version = chunk.get("agentspec", {}).get("promptVersion", version)
    return "".join(text), version
