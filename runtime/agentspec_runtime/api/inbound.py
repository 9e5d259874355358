"""Inbound checks on the API port, before any handler: API keys, JWTs and the hop limit.

Auth: when the agent's config names an API-key Secret, accepts JWTs or accepts other agents
(``auth.agents``), every request except the health probes and the agent card must carry a
credential: one of the Secret's keys (``Authorization: Bearer <key>`` or ``X-Api-Key``), a
JWT the issuer signed, or an allowed agent's ServiceAccount token minted for this agent
(``Authorization: Bearer <jwt>``). Anything else gets a bare 401 that reveals nothing (why a
JWT was refused is logged at INFO, never sent). The consumer — the key's name in the Secret,
or the JWT's consumer claim — is made available to the handlers.

Hops: agents calling agents send ``X-Agentspec-Hops``; a request arriving with more hops
than ``max_hops`` is refused with 508 (``HOP_LIMIT_STATUS``), which stops call cycles
(A -> B -> A ...).
"""

from __future__ import annotations

import hmac
import logging
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from agentspec_runtime.api.bodies import send_error
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import UnauthorizedError
from agentspec_runtime.engine.ports import TokenVerifier
from agentspec_runtime.engine.snapshot import Snapshot
from agentspec_runtime.engine.types import HOP_LIMIT_STATUS, HOPS_HEADER
from agentspec_runtime.spec.resolved import AGENT_IDENTITY_PREFIX, allowed_callers

OPEN_PATHS = ("/healthz", "/readyz", "/.well-known/agent-card.json")
"""What kubelet probes and A2A discovery need; /status shows internals, so it needs a key."""

log = logging.getLogger("agentspec.runtime.inbound")

hops: ContextVar[int] = ContextVar("agentspec_hops", default=0)
"""Hops of the request being served (0 when it came from outside)."""
consumer: ContextVar[str | None] = ContextVar("agentspec_consumer", default=None)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _match(keys: dict[str, str], presented: str) -> str | None:
    found = None
    for key, name in keys.items():  # constant time per key: no early exit on a match
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = name
    return found


class InboundMiddleware:
    def __init__(self, app: ASGIApp, *, engine: Engine, max_hops: int) -> None:
        self.app = app
        self.engine = engine
        self.max_hops = max_hops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        raw = _header(scope, HOPS_HEADER.encode())
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 4):
            await _reject(send, 400, f"{HOPS_HEADER} must be a small number", "invalid_hops")
            return
        count = int(raw) if raw is not None else 0
        if count > self.max_hops:
            await _reject(
                send,
                HOP_LIMIT_STATUS,
                f"hop limit of {self.max_hops} reached: call cycle?",
                "hop_limit",
            )
            return
        who = None
        snapshot = self.engine.holder.current
        if snapshot is not None and (
            snapshot.api_keys or snapshot.jwt is not None or snapshot.agents is not None
        ):
            who = await _consumer(snapshot, scope)
            if who is None:
                await _reject(send, 401, "unauthorized", "unauthorized")
                return
        hops_token, consumer_token = hops.set(count), consumer.set(who)
        try:
            await self.app(scope, receive, send)
        finally:
            hops.reset(hops_token)
            consumer.reset(consumer_token)


async def _consumer(snapshot: Snapshot, scope: Scope) -> str | None:
    """Who the request's credential names, or None when it names no one."""
    bearer = _header(scope, b"authorization") or ""
    presented = (
        bearer[7:].strip()
        if bearer.lower().startswith("bearer ")
        else (_header(scope, b"x-api-key") or "")
    )
    if not presented:
        return None
    if snapshot.api_keys:
        who = _match(snapshot.api_keys, presented)
        if who is not None:
            return who
    if presented.count(".") != 2:
        return None
    if snapshot.jwt is not None:
        try:
            who = await snapshot.jwt.verify(presented)
        except UnauthorizedError as e:
            log.info("agent %s: JWT refused: %s", snapshot.config.name, e)
        else:
            # with auth.agents, an agent's identity comes from the cluster's tokens alone:
            # another issuer's claim cannot pose as one (and take its budget, class, tasks)
            if snapshot.agents is None or not who.startswith(AGENT_IDENTITY_PREFIX):
                return who
            log.info("agent %s: a JWT names an agent identity; refused", snapshot.config.name)
    if snapshot.agents is not None:
        return await _agent(snapshot, snapshot.agents, presented)
    return None


async def _agent(snapshot: Snapshot, verifier: TokenVerifier, token: str) -> str | None:
    """The calling agent, when its ServiceAccount token is valid here and it is allowed."""
    try:
        caller = await verifier.verify(token)
    except UnauthorizedError as e:
        log.info("agent %s: agent token refused: %s", snapshot.config.name, e)
        return None
    if caller in allowed_callers(snapshot.config):
        return caller
    log.info(
        "agent %s: %s may not call it (spec.runtime.auth.agents)", snapshot.config.name, caller
    )
    return None


async def _reject(send: Send, status: int, message: str, code: str) -> None:
    challenge = [(b"www-authenticate", b"Bearer")] if status == 401 else []
    await send_error(send, status, message, code, headers=challenge)
