"""Consumer budgets in this process (local mode, or an agent with one replica).

A sliding window per key: the token charges (id, time, amount; a reservation settles by
changing its amount) and the request times of the last ``window`` seconds, with a running
token total. A charge fits when ``total + max(cost, 1) <= limit`` — a zero charge (the door's
request-only check) fits only while some budget is left. All operations are synchronous
under the hood (no await inside), so one event loop's requests never interleave inside one.
Keys whose windows empty are dropped; the number of keys is bounded by the consumers the
agent authenticates (or one, ``anonymous``).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agentspec_runtime.engine.ports import Limits, RateDecision

_SWEEP_EVERY = 1024


@dataclass
class _Window:
    order: deque[str] = field(default_factory=deque)
    charges: dict[str, list[float]] = field(default_factory=dict)
    """id -> [time, tokens]"""
    total: int = 0
    requests: deque[float] = field(default_factory=deque)

    def expire(self, edge: float) -> None:
        while self.order and self.charges[self.order[0]][0] <= edge:
            self.total -= int(self.charges.pop(self.order.popleft())[1])
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()

    def empty(self) -> bool:
        return not self.order and not self.requests


class InProcessLimiter:
    location = "in-process"

    def __init__(self, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._window = window
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._ids = itertools.count(1)
        self._calls = 0

    async def charge(self, key: str, limits: Limits, *, tokens: int, requests: int) -> RateDecision:
        now = self._clock()
        edge = now - self._window
        self._sweep(edge)
        w = self._windows.get(key) or _Window()
        w.expire(edge)
        retry = 0.0
        refused = False
        if limits.tokens is not None:
            need = w.total + max(tokens, 1) - limits.tokens
            if need > 0:
                refused = True
                retry = max(retry, self._tokens_free_in(w, need, now))
        if limits.requests is not None:
            need = len(w.requests) + max(requests, 1) - limits.requests
            if need > 0:
                refused = True
                at = w.requests[need - 1] if need <= len(w.requests) else now
                retry = max(retry, at + self._window - now)
        reservation = None
        if not refused:
            if tokens > 0:
                reservation = str(next(self._ids))
                w.order.append(reservation)
                w.charges[reservation] = [now, tokens]
                w.total += tokens
            if requests > 0:
                w.requests.append(now)
        if w.empty():
            self._windows.pop(key, None)
        else:
            self._windows[key] = w
        return RateDecision(
            allowed=not refused,
            limits=limits,
            tokens_remaining=None if limits.tokens is None else max(0, limits.tokens - w.total),
            requests_remaining=(
                None if limits.requests is None else max(0, limits.requests - len(w.requests))
            ),
            retry_after=retry,
            tokens_reset=self._reset(w.charges[w.order[-1]][0] if w.order else None, now),
            requests_reset=self._reset(w.requests[-1] if w.requests else None, now),
            reservation=reservation,
        )

    def _tokens_free_in(self, w: _Window, need: int, now: float) -> float:
        freed = 0.0
        for charge_id in w.order:
            at, amount = w.charges[charge_id]
            freed += amount
            if freed >= need:
                return at + self._window - now
        return float("inf")  # more than the window holds: the cost exceeds the limit itself

    def _reset(self, newest: float | None, now: float) -> float:
        return 0.0 if newest is None else newest + self._window - now

    async def settle(self, key: str, reservation: str, tokens: int, *, reserved: int) -> None:
        w = self._windows.get(key)
        if w is not None:
            w.expire(self._clock() - self._window)
        charge = w.charges.get(reservation) if w is not None else None
        if w is not None and charge is not None:
            w.total += tokens - int(charge[1])
            charge[1] = tokens
            return
        extra = tokens - reserved  # out of the window already: charge the underestimate now
        charge_id = f"{reservation}+"
        if extra > 0 and (w is None or charge_id not in w.charges):  # once, as in Redis
            w = self._windows.setdefault(key, _Window())
            w.order.append(charge_id)
            w.charges[charge_id] = [self._clock(), extra]
            w.total += extra

    def _sweep(self, edge: float) -> None:
        self._calls += 1
        if self._calls % _SWEEP_EVERY:
            return
        for key in list(self._windows):
            w = self._windows[key]
            w.expire(edge)
            if w.empty():
                del self._windows[key]

    async def aclose(self) -> None:
        self._windows.clear()
