"""An outside A2A caller for tests: the a2a-sdk client, streaming, as an integrator would."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import new_text_message
from a2a.types import AgentCard, Role, SendMessageRequest, TaskState


@dataclass
class Answer:
    text: str
    states: list[str] = field(default_factory=list)
    card: AgentCard | None = None


def ask(
    base_url: str, text: str, *, reach_at: str | None = None, context_id: str | None = None
) -> Answer:
    """Send ``text`` to the agent at ``base_url``; collect the streamed answer and states.

    ``reach_at`` re-points the card's interfaces (a Service name reached through a local port);
    ``context_id`` continues a conversation (else the agent starts a new one).
    """

    async def run() -> Answer:
        async with httpx.AsyncClient(timeout=30) as http:
            card = await A2ACardResolver(http, base_url).get_agent_card()
            advertised = AgentCard()
            advertised.CopyFrom(card)
            if reach_at is not None:
                for interface in card.supported_interfaces:
                    interface.url = reach_at
            client = ClientFactory(ClientConfig(httpx_client=http)).create(card)
            message = new_text_message(text, context_id=context_id, role=Role.ROLE_USER)
            request = SendMessageRequest(message=message)
            answer = Answer(text="", card=advertised)
            async for event in client.send_message(request):
                kind = event.WhichOneof("payload")
                if kind == "artifact_update":
                    answer.text += "".join(p.text for p in event.artifact_update.artifact.parts)
                elif kind == "status_update":
                    answer.states.append(TaskState.Name(event.status_update.status.state))
            return answer

    return asyncio.run(run())


# -- raw JSON-RPC (A2A 1.0), for the task methods ------------------------------------------

SETTLED_STATES = frozenset(
    {
        "TASK_STATE_COMPLETED",
        "TASK_STATE_FAILED",
        "TASK_STATE_CANCELED",
        "TASK_STATE_REJECTED",
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_AUTH_REQUIRED",
    }
)


def _headers(key: str | None) -> dict[str, str]:
    return {"a2a-version": "1.0", **({"authorization": f"Bearer {key}"} if key else {})}


def rpc(
    base_url: str, method: str, params: dict[str, Any], *, key: str | None = None
) -> dict[str, Any]:
    """One JSON-RPC call on ``/a2a``; the whole response (``result`` or ``error``)."""
    response = httpx.post(
        f"{base_url}/a2a",
        headers=_headers(key),
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def user_message(text: str, *, message_id: str, **fields: Any) -> dict[str, Any]:
    return {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}], **fields}


def send(
    base_url: str,
    text: str,
    *,
    message_id: str,
    key: str | None = None,
    wait: bool = True,
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``SendMessage``; the task (``wait=False``: returned at once, still queued)."""
    params: dict[str, Any] = {
        "message": user_message(text, message_id=message_id),
        "configuration": {"returnImmediately": not wait, **(configuration or {})},
    }
    answer = rpc(base_url, "SendMessage", params, key=key)
    assert "result" in answer, answer
    task: dict[str, Any] = answer["result"]["task"]
    return task


def task_state(base_url: str, task_id: str, *, key: str | None = None) -> str:
    answer = rpc(base_url, "GetTask", {"id": task_id}, key=key)
    assert "result" in answer, answer
    return str(answer["result"]["status"]["state"])


def subscribe(
    base_url: str, task_id: str, *, key: str | None = None, timeout: float = 60
) -> list[dict[str, Any]]:
    """``SubscribeToTask`` over SSE: every event (the task first) until the task settles,
    or the error the server answered with (``[{"error": ...}]``)."""
    events: list[dict[str, Any]] = []
    body = {"jsonrpc": "2.0", "id": 1, "method": "SubscribeToTask", "params": {"id": task_id}}
    with httpx.stream(
        "POST", f"{base_url}/a2a", headers=_headers(key), json=body, timeout=timeout
    ) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            return [response.json()]  # refused before the stream started
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if "error" in message:
                return [message]
            event = message["result"]
            events.append(event)
            state = (event.get("task") or event.get("statusUpdate") or {}).get("status", {})
            if state.get("state") in SETTLED_STATES:
                break
    return events
