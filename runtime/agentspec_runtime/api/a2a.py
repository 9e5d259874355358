"""The A2A binding: the agent card and the JSON-RPC endpoint, with the ``a2a-sdk`` server.

``POST /a2a`` speaks A2A 1.0 (``SendMessage``, ``SendStreamingMessage``, ``GetTask``,
``CancelTask``, ``SubscribeToTask``) and, on the same URL, the 0.3 methods (``message/send``,
``message/stream``, ...). ``/.well-known/agent-card.json`` describes the agent from its
current config: the card object is shared with the request handler and refreshed whenever
the loaded revision changes, so the card and the capability checks follow hot reload.

A task runs the engine on the user's message: ``working``, the answer streamed as chunks of
one ``answer`` artifact, then ``completed`` (with the tokens spent in the status metadata);
``failed`` on an error, ``input-required`` when the prompt needs a variable the caller did not
give (send it in the message metadata ``variables``), ``canceled`` on CancelTask.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from a2a.auth.user import UnauthenticatedUser, User
from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_agent_card_routes,
    create_jsonrpc_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Role,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
    TaskState,
)
from opentelemetry import context as otel_context
from opentelemetry import propagate
from starlette.requests import Request
from starlette.routing import BaseRoute

from agentspec_runtime.api.inbound import consumer
from agentspec_runtime.api.openai_api import outbound_headers, retry_after
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import AgentspecError, MissingVariableError
from agentspec_runtime.engine.loop import AgentRequest
from agentspec_runtime.engine.snapshot import Snapshot
from agentspec_runtime.engine.types import A2A_USAGE_KEY

RPC_PATH = "/a2a"
log = logging.getLogger(__name__)


def build_card(snapshot: Snapshot, *, base_url: str) -> AgentCard:
    config = snapshot.config
    url = base_url.rstrip("/") + RPC_PATH
    card = AgentCard(
        name=config.name,
        description=config.description or f"The {config.name} agent",
        version=snapshot.revision,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=config.name,
                name=config.name,
                description=config.description or f"Ask the {config.name} agent",
                tags=["agentspec", *sorted(snapshot.tools())],
            )
        ],
    )
    if snapshot.api_keys:
        card.security_schemes["apiKey"].CopyFrom(
            SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(location="header", name="X-Api-Key")
            )
        )
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="bearer"))
        )
        card.security_requirements.extend(
            [
                SecurityRequirement(schemes={"apiKey": StringList(list=[])}),
                SecurityRequirement(schemes={"bearer": StringList(list=[])}),
            ]
        )
    return card


class _Card:
    """The one card object the route and the handler share, kept in step with the config."""

    def __init__(self, engine: Engine, *, base_url: str) -> None:
        self.engine = engine
        self.base_url = base_url
        self.card = AgentCard()
        self._revision: str | None = None
        self.sync()

    def sync(self) -> AgentCard:
        snapshot = self.engine.holder.current
        if snapshot is not None and snapshot.revision != self._revision:
            self.card.CopyFrom(build_card(snapshot, base_url=self.base_url))
            self._revision = snapshot.revision
        return self.card

    async def current(self, _card: AgentCard) -> AgentCard:
        return self.sync()


class EngineExecutor(AgentExecutor):
    """Runs one A2A task on the engine."""

    def __init__(self, engine: Engine, card: _Card) -> None:
        self.engine = engine
        self._card = card

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        self._card.sync()
        assert context.message is not None
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)

        def say(text: str) -> Message:
            return new_text_message(text, context_id=task.context_id, task_id=task.id)

        await updater.start_work()
        headers: dict[str, str] = context.call_context.state.get("headers", {})
        request = AgentRequest(
            messages=_history(task.history, context.message),
            context_id=task.context_id,
            variables=_variables(context.metadata),
            headers=outbound_headers(),  # the hop count the inbound middleware parsed, +1
            consumer=consumer.get(),
        )
        streamed = 0

        async def on_delta(text: str) -> None:
            nonlocal streamed
            await updater.add_artifact(
                [new_text_part(text)], artifact_id="answer", name="answer", append=streamed > 0
            )
            streamed += 1

        token = otel_context.attach(propagate.extract(headers))
        try:
            result = await self.engine.run(request, on_delta=on_delta, api="a2a")
        except MissingVariableError as e:
            await updater.requires_input(say(str(e)))
            return
        except AgentspecError as e:
            # the HTTP API's status and Retry-After, for callers that can act on them
            failure: dict[str, Any] = {
                "agentspec.io/errorCode": getattr(e, "code", "error"),
                "agentspec.io/httpStatus": getattr(e, "status", 500),
            }
            after = retry_after(e)
            if after is not None:
                failure["agentspec.io/retryAfter"] = after
            await updater.update_status(
                TaskState.TASK_STATE_FAILED, message=say(str(e)), metadata=failure
            )
            return
        except Exception:  # a bug must still end the task, or callers wait for it forever
            log.exception("agent %s: A2A task %s failed", self.engine.agent, task.id)
            await updater.failed(say("the agent failed unexpectedly"))
            return
        finally:
            otel_context.detach(token)
        if streamed == 0 and result.content:
            await updater.add_artifact(
                [new_text_part(result.content)], artifact_id="answer", name="answer"
            )
        usage = result.usage + result.tool_usage
        await updater.update_status(
            TaskState.TASK_STATE_COMPLETED,
            metadata={
                A2A_USAGE_KEY: {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                },
                "agentspec.io/promptVersion": result.prompt.version,
                "agentspec.io/configRevision": result.revision,
            },
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def _text(message: Message) -> str:
    return "".join(part.text for part in message.parts if part.HasField("text"))


def _history(history: Any, current: Message) -> list[dict[str, Any]]:
    """The task's conversation so far (a follow-up after input-required), then the message."""
    messages = [
        {"role": "user" if m.role == Role.ROLE_USER else "assistant", "content": _text(m)}
        for m in history
        if m.message_id != current.message_id and _text(m)
    ]
    messages.append({"role": "user", "content": _text(current)})
    return messages


def _variables(metadata: Any) -> dict[str, str]:
    value = metadata.get("variables") if isinstance(metadata, dict) else None
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


class _Consumer(User):
    """The authenticated consumer (the API key's name) as the a2a-sdk's user: the task
    store keys every task by it, so one consumer never sees another's tasks."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._name


class _ConsumerContext(DefaultServerCallContextBuilder):
    def build_user(self, request: Request) -> User:
        name = consumer.get()
        return _Consumer(name) if name else UnauthenticatedUser()


_ACTIVE = (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)


class RetainingTaskStore(TaskStore):
    """The a2a-sdk's in-memory store (tasks scoped to their owner), whose idle tasks —
    finished, failed, waiting for input — are evicted ``retention`` seconds after their last
    update, and beyond ``max_idle`` of them, oldest first: memory stays bounded."""

    def __init__(
        self,
        *,
        retention: float,
        max_idle: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = InMemoryTaskStore()
        self._retention = retention
        self._max_idle = max_idle
        self._clock = clock
        self._idle: OrderedDict[tuple[str, str], float] = OrderedDict()
        """(owner, task id) → when it went idle, oldest first."""

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await self._store.save(task, context)
        key = (context.user.user_name, task.id)
        self._idle.pop(key, None)
        if task.status.state not in _ACTIVE:
            self._idle[key] = self._clock()
        await self._evict()

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        await self._evict()
        return await self._store.get(task_id, context)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        await self._evict()
        return await self._store.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        self._idle.pop((context.user.user_name, task_id), None)
        await self._store.delete(task_id, context)

    async def _evict(self) -> None:
        cutoff = self._clock() - self._retention
        while self._idle:
            (owner, task_id), since = next(iter(self._idle.items()))
            if since > cutoff and len(self._idle) <= self._max_idle:
                return
            del self._idle[(owner, task_id)]
            owner_context = ServerCallContext(
                user=_Consumer(owner) if owner else UnauthenticatedUser()
            )
            await self._store.delete(task_id, owner_context)


def a2a_routes(engine: Engine, *, base_url: str, task_retention: float = 3600.0) -> list[BaseRoute]:
    card = _Card(engine, base_url=base_url)
    handler = DefaultRequestHandler(
        agent_executor=EngineExecutor(engine, card),
        task_store=RetainingTaskStore(retention=task_retention),
        agent_card=card.card,
    )
    return [
        *create_agent_card_routes(card.card, card_modifier=card.current),
        *create_jsonrpc_routes(
            handler,
            rpc_url=RPC_PATH,
            context_builder=_ConsumerContext(),
            enable_v0_3_compat=True,
        ),
    ]
