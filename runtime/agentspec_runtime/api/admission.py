"""The door of ``spec.runtime.rateLimit``: each request that starts a run is charged one
request of its consumer's budget, and refused while either budget is spent.

Runs start at ``POST /v1/chat/completions`` and at ``POST /a2a`` with ``SendMessage`` or
``SendStreamingMessage`` (and their 0.3 names); reading a task, listing or cancelling costs
nothing. A refusal is a 429 with ``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers —
an OpenAI error body on the OpenAI API, a JSON-RPC error (code :data:`RATE_LIMITED`) on A2A;
an admitted request's response carries the same headers. The token reservations of the
run's model calls are the engine's (``engine/limits.py``). Runs after :class:`BodyGuard`
(the A2A method is read from the parsed body) and the inbound checks (the consumer is
known).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentspec_runtime.api.bodies import PARSED, send_error, send_json
from agentspec_runtime.api.inbound import consumer
from agentspec_runtime.engine import limits
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import LimiterUnavailableError, RateLimitedError

RATE_LIMITED = -32029
"""The JSON-RPC error code of a refused A2A request (implementation-defined server range;
A2A defines none for rate limits). ``error.data`` has ``reason`` and ``retryAfter``."""
_RUN_METHODS = frozenset({"SendMessage", "SendStreamingMessage", "message/send", "message/stream"})


def _starts_run(scope: Scope) -> bool:
    if scope["type"] != "http" or scope.get("method") != "POST":
        return False
    path = scope["path"]
    if path == "/v1/chat/completions":
        return True
    if path != "/a2a":
        return False
    body = scope.get("state", {}).get(PARSED)
    return isinstance(body, dict) and body.get("method") in _RUN_METHODS


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        snapshot = self.engine.holder.current
        if snapshot is None or snapshot.limiter is None or not _starts_run(scope):
            await self.app(scope, receive, send)
            return
        try:
            decision = await limits.admit(
                snapshot,
                consumer.get(),
                self.engine.metrics,
                pressure=self.engine.pressure.factor(),
            )
        except (RateLimitedError, LimiterUnavailableError) as e:
            await _refuse(scope, send, e)
            return
        if decision is None:
            await self.app(scope, receive, send)
            return
        extra = [(k.encode(), v.encode()) for k, v in limits.headers(decision).items()]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # a refusal further in (a model call's reservation) has its own, newer figures
                own = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
                named = {k.lower() for k, _ in own}
                message = {**message, "headers": own + [h for h in extra if h[0] not in named]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _refuse(
    scope: Scope, send: Send, error: RateLimitedError | LimiterUnavailableError
) -> None:
    if isinstance(error, RateLimitedError):
        headers = [(k.encode(), v.encode()) for k, v in error.headers.items()]
    else:
        headers = [(b"retry-after", str(int(error.retry_after)).encode())]
    if scope["path"] != "/a2a":
        await send_error(send, error.status, str(error), error.code, headers=headers)
        return
    body: Any = scope.get("state", {}).get(PARSED)
    payload = {
        "jsonrpc": "2.0",
        "id": body.get("id") if isinstance(body, dict) else None,
        "error": {
            "code": RATE_LIMITED if isinstance(error, RateLimitedError) else -32603,
            "message": str(error),
            "data": {"reason": error.code, "retryAfter": error.retry_after},
        },
    }
    await send_json(send, error.status, payload, headers=headers)
