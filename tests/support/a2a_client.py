"""An outside A2A caller for tests: the a2a-sdk client, streaming, as an integrator would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

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
