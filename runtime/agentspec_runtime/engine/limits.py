"""Token and request budgets per consumer (``spec.runtime.rateLimit``): the policy.

Who pays: the authenticated consumer (an API key's name, a JWT's consumer claim); with no
auth, everyone is ``anonymous``. Its budgets are its priority class's (the class that lists
it) or the defaults, read from the snapshot on every charge, so a budget change applies to
the next request with no restart.

When: a request that starts a run (``/v1/chat/completions``, A2A ``SendMessage`` and
``SendStreamingMessage``) is charged one request at the door, and is refused there while
the token budget is spent (:func:`admit`). Every model call of the run then **reserves** its
estimated cost first — the input's estimate plus the output cap (``model.maxTokens``, else
:data:`OUTPUT_RESERVE`) — and **settles** it with the usage the model reports (a refund,
or an extra charge when the estimate was low). A burst therefore cannot overshoot: each
call holds its share of the budget before it runs, on every replica at once.

A reservation that does not fit raises :class:`~.errors.RateLimitedError` (a 429 with
Retry-After and OpenAI's ``x-ratelimit-*``), or, for runs that may wait (durable A2A tasks,
asynchronous by nature), waits until it fits, up to ``wait`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentspec_runtime.spec.agent import RateLimitSpec

from .errors import LimiterUnavailableError, RateLimitedError
from .memory import estimate_tokens
from .ports import Limits, RateDecision
from .snapshot import Snapshot
from .telemetry import Metrics
from .types import Message, ToolSpec

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
"""The consumer of every request to an agent without auth."""
DEFAULT_CLASS = "default"
"""The class label of a consumer that no priority class lists."""
OUTPUT_RESERVE = 1024
"""Output tokens reserved for a model call when ``model.maxTokens`` does not cap them."""
WINDOW_SECONDS = 60.0
"""Budgets are per minute, over a sliding window."""
TASK_WAIT_SECONDS = 120.0
"""How long a durable task's model call waits for its consumer's budget before it fails."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A consumer's class, priority and effective budgets."""

    name: str
    priority: int
    limits: Limits


def budget_of(spec: RateLimitSpec, consumer: str | None, pressure: float = 1.0) -> Budget:
    """The consumer's class and budgets; below the highest class, scaled by ``pressure``
    (engine/priority.py: the model pushing back shrinks them)."""
    who = consumer or ANONYMOUS
    name, priority = DEFAULT_CLASS, spec.default_priority
    tokens, requests = spec.tokens_per_minute, spec.requests_per_minute
    for cls in spec.priority_classes:
        if who in cls.consumers:
            name, priority = cls.name, cls.priority
            tokens = cls.tokens_per_minute or tokens
            requests = cls.requests_per_minute or requests
            break
    top = max([spec.default_priority, *(c.priority for c in spec.priority_classes)])
    if priority < top and pressure < 1.0:
        tokens = None if tokens is None else max(1, int(tokens * pressure))
        requests = None if requests is None else max(1, int(requests * pressure))
    return Budget(name, priority, Limits(tokens=tokens, requests=requests))


def window_key(snapshot: Snapshot, consumer: str | None) -> str:
    """The limiter's key: the agent and a hash of the consumer (any text, bounded length)."""
    config = snapshot.config
    digest = hashlib.sha256((consumer or ANONYMOUS).encode()).hexdigest()[:32]
    return f"{config.namespace}/{config.name}/{digest}"


def tools_estimate(tools: Iterable[ToolSpec]) -> int:
    """What offering ``tools`` adds to a call's input (their descriptions and schemas)."""
    return math.ceil(sum(len(t.description) + len(json.dumps(t.parameters)) for t in tools) / 4)


def estimate(messages: Sequence[Message], tools: int, max_tokens: int | None) -> int:
    """A model call's reservation: its input's estimate (``tools``: :func:`tools_estimate`
    of the tools offered) plus the output it may produce."""
    return estimate_tokens(messages) + tools + (max_tokens or OUTPUT_RESERVE)


def headers(decision: RateDecision) -> dict[str, str]:
    """OpenAI's rate-limit headers for the dimensions that have a limit."""
    out: dict[str, str] = {}
    limits = decision.limits
    if limits.requests is not None:
        out["x-ratelimit-limit-requests"] = str(limits.requests)
        out["x-ratelimit-remaining-requests"] = str(decision.requests_remaining or 0)
        out["x-ratelimit-reset-requests"] = _duration(decision.requests_reset)
    if limits.tokens is not None:
        out["x-ratelimit-limit-tokens"] = str(limits.tokens)
        out["x-ratelimit-remaining-tokens"] = str(decision.tokens_remaining or 0)
        out["x-ratelimit-reset-tokens"] = _duration(decision.tokens_reset)
    if not decision.allowed:
        out["retry-after"] = str(max(1, math.ceil(_bounded(decision.retry_after))))
    return out


def _bounded(seconds: float) -> float:
    return min(seconds, WINDOW_SECONDS) if math.isfinite(seconds) else WINDOW_SECONDS


def _duration(seconds: float) -> str:
    """Like OpenAI's: ``250ms``, ``12.5s``, ``1m0s``."""
    seconds = max(0.0, _bounded(seconds))
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    return f"{int(seconds // 60)}m{round(seconds % 60, 3):g}s"


def _refused(decision: RateDecision, what: str) -> RateLimitedError:
    return RateLimitedError(
        f"rate limit reached: the {what} budget of this consumer is spent; retry after "
        f"{max(1, math.ceil(_bounded(decision.retry_after)))} s",
        retry_after=_bounded(decision.retry_after),
        headers=headers(decision),
    )


def _count(metrics: Metrics, cls: str, kind: str, outcome: str) -> None:
    metrics.rate_limit.labels(metrics.agent, cls, kind, outcome).inc()


async def admit(
    snapshot: Snapshot, consumer: str | None, metrics: Metrics, *, pressure: float = 1.0
) -> RateDecision | None:
    """Charge one request at the door; refused while either budget is spent. None when the
    agent has no limits. Raises ``RateLimitedError`` or ``LimiterUnavailableError``."""
    spec, limiter = snapshot.config.rate_limit, snapshot.limiter
    if spec is None or limiter is None:
        return None
    budget = budget_of(spec, consumer, pressure)
    cls, limits = budget.name, budget.limits
    for dimension, value in (("tokens", limits.tokens), ("requests", limits.requests)):
        if value is not None:
            metrics.effective_budget.labels(metrics.agent, cls, dimension).set(value)
    if limits.tokens is None and limits.requests is None:
        return None
    decision = await limiter.charge(
        window_key(snapshot, consumer),
        limits,
        tokens=0,
        requests=1 if limits.requests is not None else 0,
    )
    _count(metrics, cls, "request", "admitted" if decision.allowed else "rejected")
    if not decision.allowed:
        spent = (
            "request"
            if limits.requests is not None and (decision.requests_remaining or 0) <= 0
            else "token"
        )
        raise _refused(decision, spent)
    return decision


class Reservation:
    """A model call's charge, to settle with what it really cost (or refund on failure)."""

    __slots__ = ("_id", "_key", "_reserved", "_snapshot")

    def __init__(self, snapshot: Snapshot, key: str, reservation: str, reserved: int) -> None:
        self._snapshot, self._key, self._id = snapshot, key, reservation
        self._reserved = reserved

    async def settle(self, tokens: int) -> None:
        """Never raises: the answer exists; a lost refund only makes the budget stricter."""
        limiter = self._snapshot.limiter
        if limiter is None:
            return
        try:
            await limiter.settle(self._key, self._id, tokens, reserved=self._reserved)
        except LimiterUnavailableError as e:
            log.warning(
                "agent %s: a token reservation was not settled: %s", self._snapshot.config.name, e
            )


async def reserve(
    snapshot: Snapshot,
    consumer: str | None,
    tokens: int,
    *,
    wait: float,
    metrics: Metrics,
    pressure: Callable[[], float] = lambda: 1.0,
) -> Reservation | None:
    """Hold ``tokens`` of the consumer's budget before a model call (capped at the whole
    budget: a call estimated above it waits for an empty window and pays what it spends).
    None when the consumer has no token budget."""
    spec, limiter = snapshot.config.rate_limit, snapshot.limiter
    if spec is None or limiter is None:
        return None
    key = window_key(snapshot, consumer)
    deadline = time.monotonic() + wait
    while True:
        budget = budget_of(spec, consumer, pressure())  # the pressure may ease while waiting
        cls, limit = budget.name, budget.limits.tokens
        if limit is None:
            return None
        cost = max(1, min(tokens, limit))
        decision = await limiter.charge(
            key, Limits(tokens=limit, requests=None), tokens=cost, requests=0
        )
        if decision.allowed and decision.reservation is not None:
            _count(metrics, cls, "tokens", "admitted")
            return Reservation(snapshot, key, decision.reservation, cost)
        pause = _bounded(decision.retry_after)
        if pause > deadline - time.monotonic():
            _count(metrics, cls, "tokens", "rejected")
            raise _refused(decision, "token")
        _count(metrics, cls, "tokens", "queued")
        await asyncio.sleep(pause + 0.01)
