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

Every task is durable (``api/tasks.py``): queued, run by whichever replica leases it, its
steps journaled, resumed elsewhere if its replica dies. Streamed answer text is written to
the task in pieces of at least ``DELTA_FLUSH_SECONDS`` (every write is a database write).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from a2a.auth.user import User
from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_agent_card_routes,
    create_jsonrpc_routes,
)
from a2a.server.tasks import TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    Message,
    Role,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    TaskState,
)
from starlette.requests import Request
from starlette.routing import BaseRoute

from agentspec_runtime.adapters.sql import Database
from agentspec_runtime.api.inbound import consumer
from agentspec_runtime.api.openai_api import outbound_headers, retry_after
from agentspec_runtime.api.tasks import JOURNAL, DurableRequestHandler, TaskService, user_for
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import (
    AgentspecError,
    CheckpointError,
    ContentBlockedError,
    MissingVariableError,
)
from agentspec_runtime.engine.limits import TASK_WAIT_SECONDS
from agentspec_runtime.engine.loop import AgentRequest
from agentspec_runtime.engine.snapshot import Snapshot
from agentspec_runtime.engine.types import A2A_USAGE_KEY
from agentspec_runtime.spec.agent import TasksSpec

RPC_PATH = "/a2a"
DELTA_FLUSH_SECONDS = 0.1
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
        capabilities=AgentCapabilities(
            streaming=True, push_notifications=bool(config.tasks.push_allowed_hosts)
        ),
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
        card.security_requirements.append(
            SecurityRequirement(schemes={"apiKey": StringList(list=[])})
        )
    if snapshot.api_keys or snapshot.jwt is not None:
        bearer = HTTPAuthSecurityScheme(
            scheme="bearer", bearer_format="JWT" if snapshot.jwt is not None else ""
        )
        card.security_schemes["bearer"].CopyFrom(SecurityScheme(http_auth_security_scheme=bearer))
        card.security_requirements.append(
            SecurityRequirement(schemes={"bearer": StringList(list=[])})
        )
    return card


class Card:
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

    def __init__(self, engine: Engine, card: Card) -> None:
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
        request = AgentRequest(
            messages=_history(task.history, context.message),
            context_id=task.context_id,
            variables=_variables(context.metadata),
            headers=outbound_headers(),  # the hop count the request arrived with, +1
            consumer=consumer.get(),
            task_id=task.id,
            budget_wait=TASK_WAIT_SECONDS,  # a task is asynchronous: it queues for its budget
        )
        answer = _Answer(updater)
        try:
            result = await self.engine.run(
                request,
                on_delta=answer.add,
                api="a2a",
                journal=context.call_context.state.get(JOURNAL),
            )
            await answer.flush()
        except CheckpointError:
            raise  # not a failure of the task: it resumes from its journal
        except MissingVariableError as e:
            await updater.requires_input(say(str(e)))
            return
        except ContentBlockedError as e:  # blocked mid-stream: what was streamed was clean
            await self._rejected(updater, say(str(e)), e.stage, e.category)
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
        if result.blocked is not None:
            await self._rejected(updater, say(result.content), *result.blocked)
            return
        if not answer.sent and result.content:
            # nothing streamed in this run (a resumed task whose last turn was recorded):
            # the whole answer, replacing any part an earlier run streamed
            await updater.add_artifact(
                [new_text_part(result.content)], artifact_id="answer", name="answer"
            )
        usage = result.usage + result.tool_usage
        metadata: dict[str, Any] = {
            A2A_USAGE_KEY: {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            },
            "agentspec.io/promptVersion": result.prompt.version,
            "agentspec.io/configRevision": result.revision,
        }
        if result.started_revision not in (None, result.revision):
            metadata["agentspec.io/startedOnRevision"] = result.started_revision
        await updater.update_status(TaskState.TASK_STATE_COMPLETED, metadata=metadata)

    @staticmethod
    async def _rejected(updater: TaskUpdater, refusal: Message, stage: str, category: str) -> None:
        """The content guard's refusal: the task is rejected, saying why (never the text)."""
        await updater.update_status(
            TaskState.TASK_STATE_REJECTED,
            message=refusal,
            metadata={"agentspec.io/guard": {"stage": stage, "category": category}},
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class _Answer:
    """The streamed answer, written to the task's ``answer`` artifact in pieces: the first
    text at once, then at most every ``DELTA_FLUSH_SECONDS`` (each piece is a store write)."""

    def __init__(self, updater: TaskUpdater) -> None:
        self.updater = updater
        self.sent = False
        self._pending: list[str] = []
        self._flushed_at = 0.0

    async def add(self, text: str) -> None:
        self._pending.append(text)
        if time.monotonic() - self._flushed_at >= DELTA_FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        await self.updater.add_artifact(
            [new_text_part(text)], artifact_id="answer", name="answer", append=self.sent
        )
        self.sent = True
        self._flushed_at = time.monotonic()


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


class _ConsumerContext(DefaultServerCallContextBuilder):
    def build_user(self, request: Request) -> User:
        return user_for(consumer.get() or "")


def durable_tasks(
    engine: Engine, db: Database, *, spec: TasksSpec, holder: str, base_url: str
) -> tuple[TaskService, Card]:
    """This replica's task service, running A2A tasks on ``engine``, and the agent card
    (``base_url``: where callers reach the agent, its Service)."""
    card = Card(engine, base_url=base_url)
    service = TaskService(
        db, engine=engine, executor=EngineExecutor(engine, card), spec=spec, holder=holder
    )
    return service, card


def a2a_routes(tasks: TaskService, *, card: Card) -> list[BaseRoute]:
    handler = DurableRequestHandler(tasks, card=card.card)
    return [
        *create_agent_card_routes(card.card, card_modifier=card.current),
        *create_jsonrpc_routes(
            handler,
            rpc_url=RPC_PATH,
            context_builder=_ConsumerContext(),
            enable_v0_3_compat=True,
        ),
    ]
