"""Partner agents as tools, called over A2A with the ``a2a-sdk`` client.

Each partner is one tool the model can call with a ``message``. Its description comes from
the partner's agent card (fetched, cached, refreshed every minute; the AgentSpec's
description until the card arrives). Calls carry the configured headers, the W3C trace
context and the hop count, stream the partner's answer, and wait as long as a long-running
partner task needs (``AGENTSPEC_PARTNER_TIMEOUT``, default 300 s). Repeated failures open a
circuit breaker so the model is told at once that the partner is unavailable.

The card's interface URLs are re-pointed at the configured partner URL: in a cluster that is
the same Service address, and in local runs and tests it is where the partner really listens.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from a2a.client import A2ACardResolver, Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.helpers import get_message_text, new_text_message
from a2a.types import AgentCard, Role, SendMessageRequest, TaskState

from agentspec_runtime.engine.breaker import CircuitBreaker
from agentspec_runtime.engine.errors import ToolError
from agentspec_runtime.engine.ports import Endpoint
from agentspec_runtime.engine.types import (
    A2A_USAGE_KEY,
    HOP_LIMIT_STATUS,
    HOPS_HEADER,
    ToolResult,
    ToolSpec,
    Usage,
    tool_name,
)
from agentspec_runtime.spec.resolved import ResolvedPartner

from .urls import redact

log = logging.getLogger(__name__)

CARD_TTL = 60.0
FORWARDED = ("traceparent", "tracestate", HOPS_HEADER)


class PartnerTool:
    def __init__(self, connection: PartnerConnection) -> None:
        self._connection = connection

    @property
    def spec(self) -> ToolSpec:
        return self._connection.spec

    @property
    def source(self) -> Literal["partner"]:
        return "partner"

    @property
    def target(self) -> str:
        partner = self._connection.partner
        return f"{partner.namespace}/{partner.name}"

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> ToolResult:
        message = arguments.get("message")
        if not isinstance(message, str) or not message.strip():
            raise ToolError("pass the question for the partner agent as a non-empty 'message'")
        return await self._connection.ask(
            message, headers=headers, context_id=context_id, message_id=message_id(call_key)
        )


def message_id(call_key: str | None) -> str | None:
    """The A2A messageId of a partner call: derived from the durable task's step, so the
    same step sent again (after a resume) is the same message, which the partner answers
    with the task it already has; random (the sdk's) otherwise."""
    return None if call_key is None else str(uuid.uuid5(_MESSAGE_IDS, call_key))


_MESSAGE_IDS = uuid.UUID("6b1f3c52-55a7-4d0e-9a35-0c7c55a1f0e4")


class PartnerConnection:
    """An A2A client for one partner, with its card cache and circuit breaker."""

    def __init__(
        self,
        partner: ResolvedPartner,
        headers: Mapping[str, str],
        *,
        timeout: float,
        breaker: CircuitBreaker | None = None,
        secrets: tuple[str, ...] = (),
        identity: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.partner = partner
        self._timeout = timeout
        self._secrets = secrets
        self._http = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=5.0),
            auth=_Identity(identity) if identity is not None else None,
        )
        self._card: AgentCard | None = None
        self._client: Client | None = None
        self._card_at = 0.0
        self._card_lock = asyncio.Lock()
        self.breaker = breaker or CircuitBreaker(f"partner agent {partner.name!r}")
        self.tool = PartnerTool(self)
        self.calls = 0
        self.last_error: str | None = None

    @property
    def spec(self) -> ToolSpec:
        card = self._card
        description = (card.description if card else "") or self.partner.description
        skills = ", ".join(s.name for s in card.skills) if card else ""
        text = f"Ask the {self.partner.name} agent. {description}".strip()
        if skills:
            text += f" Skills: {skills}."
        return ToolSpec(
            name=tool_name(self.partner.name),
            description=text,
            parameters={
                "type": "object",
                "properties": {
                    "message": {
                        "type": "string",
                        "description": f"The question or task for the {self.partner.name} agent",
                    }
                },
                "required": ["message"],
            },
            retry_safe=True,  # the call's messageId is the step's: a partner deduplicates it
        )

    def status(self) -> dict[str, Any]:
        return {
            "url": self.partner.url,
            "card": self._card is not None,
            "circuit": self.breaker.state,
            "calls": self.calls,
            "lastError": self.last_error,
        }

    async def start(self) -> PartnerConnection:
        """Fetch the card now if the partner is up (bounded); never fail on it."""
        try:
            await asyncio.wait_for(self._a2a_client(), 3.0)
        except Exception as e:  # the partner may start later; its card comes on first use
            self.last_error = f"agent card: {type(e).__name__}"
        return self

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _a2a_client(self) -> Client:
        """The client for the partner's current card: built once per card fetch, not per call."""
        async with self._card_lock:
            fresh = time.monotonic() - self._card_at < CARD_TTL
            if self._client is not None and fresh:
                return self._client
            card = await A2ACardResolver(self._http, self.partner.url).get_agent_card()
            for interface in card.supported_interfaces:
                interface.url = _rebase(interface.url, self.partner.url)
            self._client = ClientFactory(ClientConfig(httpx_client=self._http)).create(card)
            self._card, self._card_at = card, time.monotonic()
            return self._client

    async def ask(
        self,
        message: str,
        *,
        headers: Mapping[str, str],
        context_id: str = "",
        message_id: str | None = None,
    ) -> ToolResult:
        self.breaker.before_call()
        self.calls += 1
        answered: bool | None = None  # None: cancelled or a bug, which says nothing either way
        try:
            result = await self._ask(
                message, headers=headers, context_id=context_id, message_id=message_id
            )
            answered = True
        except ToolError as e:
            answered = True  # the partner answered: a failed task is not an outage
            self.last_error = str(e)
            raise
        except (A2AClientError, httpx.HTTPError, OSError, TimeoutError) as e:
            if _http_status(e) == HOP_LIMIT_STATUS:  # a cycle refused, not an outage
                answered = True
                raise ToolError(
                    f"partner agent {self.partner.name!r} refused the call: hop limit reached "
                    "(agents are calling each other in a cycle)"
                ) from e
            status = _http_status(e)
            if status in (401, 403):  # it answered: this agent may not call it
                answered = True
                self.last_error = f"HTTP {status}"
                raise ToolError(
                    f"partner agent {self.partner.name!r} refused the call: this agent is not "
                    f"authorized to call it (HTTP {status})"
                ) from e
            answered = False
            self.last_error = type(e).__name__
            raise ToolError(
                f"partner agent {self.partner.name!r} could not be reached ({type(e).__name__})"
            ) from e
        finally:
            if answered is True:
                self.breaker.success()
            elif answered is False:
                self.breaker.failure()
            else:
                self.breaker.release()
        self.last_error = None
        return result

    async def _ask(
        self, message: str, *, headers: Mapping[str, str], context_id: str, message_id: str | None
    ) -> ToolResult:
        client = await self._a2a_client()
        forwarded = {k: v for k, v in headers.items() if k.lower() in FORWARDED}
        context = ClientCallContext(timeout=self._timeout, service_parameters=forwarded)
        # The caller's context id: the partner remembers this conversation's earlier questions
        outgoing = new_text_message(message, context_id=context_id or None, role=Role.ROLE_USER)
        if message_id is not None:
            outgoing.message_id = message_id
        request = SendMessageRequest(message=outgoing)
        chunks: list[str] = []
        usage = Usage()
        async with asyncio.timeout(self._timeout):
            async for event in client.send_message(request, context=context):
                kind = event.WhichOneof("payload")
                if kind == "artifact_update":
                    chunks += [p.text for p in event.artifact_update.artifact.parts]
                elif kind == "message":
                    chunks.append(get_message_text(event.message, ""))
                elif kind == "task":
                    usage = _usage(event.task.metadata) or usage
                    if not chunks:
                        chunks += [p.text for a in event.task.artifacts for p in a.parts]
                elif kind == "status_update":
                    status = event.status_update.status
                    usage = _usage(event.status_update.metadata) or usage
                    text = get_message_text(status.message, "") if status.message else ""
                    text = redact(text, self._secrets)
                    if status.state == TaskState.TASK_STATE_FAILED:
                        raise ToolError(f"partner agent {self.partner.name!r} failed: {text}")
                    if status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
                        return ToolResult(
                            f"The {self.partner.name} agent needs more input: {text}", usage
                        )
                    if status.state in (
                        TaskState.TASK_STATE_CANCELED,
                        TaskState.TASK_STATE_REJECTED,
                    ):
                        raise ToolError(
                            f"partner agent {self.partner.name!r} did not answer "
                            f"({TaskState.Name(status.state)}): {text}"
                        )
        return ToolResult("".join(chunks), usage)


class _Identity(httpx.Auth):
    """Who is calling: a bearer token per request, unless one was configured."""

    def __init__(self, token: Callable[[], Awaitable[str | None]]) -> None:
        self._token = token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if "authorization" not in request.headers:
            token = await self._token()
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _usage(metadata: Any) -> Usage | None:
    try:
        value = metadata[A2A_USAGE_KEY] if metadata and A2A_USAGE_KEY in metadata else None
        if value is None:
            return None
        return Usage(int(value["input_tokens"]), int(value["output_tokens"]))
    except (TypeError, ValueError, KeyError):  # a partner reporting nonsense costs nothing
        return None


def _http_status(error: BaseException) -> int | None:
    """The HTTP status behind a client error (the a2a client chains httpx's)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, httpx.HTTPStatusError):
            return current.response.status_code
        current = current.__cause__
    return None


def _rebase(url: str, base: str) -> str:
    """``url``'s path on ``base``'s scheme, host and port."""
    target, origin = urlsplit(url), urlsplit(base)
    return urlunsplit((origin.scheme, origin.netloc, target.path, target.query, ""))


async def connect_partner(
    partner: ResolvedPartner,
    endpoint: Endpoint,
    *,
    call_timeout: float = 300.0,
    breaker_failures: int = 3,
    breaker_reset: float = 30.0,
    identity: Callable[[], Awaitable[str | None]] | None = None,
) -> PartnerConnection:
    """The engine's ``PartnerBuilder``. ``identity`` gives the bearer token that says who is
    calling (the pod's ServiceAccount, in a cluster), sent unless the configured headers
    carry their own ``Authorization``."""
    breaker = CircuitBreaker(
        f"partner agent {partner.name!r}", failures=breaker_failures, reset_after=breaker_reset
    )
    connection = PartnerConnection(
        partner,
        endpoint.headers,
        timeout=call_timeout,
        breaker=breaker,
        secrets=endpoint.secrets,
        identity=identity,
    )
    return await connection.start()
