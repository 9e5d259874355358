"""Priority when the agent is saturated, and budgets that tighten while the model pushes back
(``spec.runtime.rateLimit``: ``maxConcurrency``, ``priorityClasses[].priority``).

:class:`PriorityGate` — at most ``maxConcurrency`` model calls at once in this replica (its
share of the model, its connections). A call beyond it waits in a queue ordered by its
consumer's priority (FIFO within one): a freed slot goes to the highest class waiting. A slot
is held for one model call only — never while a run waits for its budget or runs its tools —
so a spent lower class cannot sit on the slots. A wait is bounded by ``queueTimeoutSeconds``
(then 429); the queue holds at most ``maxQueued`` calls — when it is full, a new call of a
higher class pushes out the newest call of the lowest class (429), and a call whose class is
not higher than anything queued is refused itself. So under a flood of low-priority work a
high-priority request waits for one call to finish, not for the flood.

:class:`Pressure` — an AIMD controller of the budgets of every class below the highest: a
*pushback* (the model answered 429 or 503, or a call took longer than ``slowModelSeconds``)
multiplies their factor by :data:`DECREASE` (at most once per :data:`PUSHBACK_INTERVAL`
seconds, so one burst of 429s counts once), down to :data:`FLOOR`; every second without
pushback adds :data:`INCREASE` back, up to 1. The effective budget is the configured one
times the factor. The highest class keeps its whole budget: its traffic is what the others
make room for. Per replica: each sees its own model's pushback.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .errors import RateLimitedError

DECREASE = 0.5
"""Multiplicative decrease of the lower classes' budgets per pushback."""
INCREASE = 0.1
"""Additive increase per second without pushback (from the floor to whole in 9 s)."""
FLOOR = 0.1
"""The lower classes never go below a tenth of their budget."""
PUSHBACK_INTERVAL = 1.0
"""Pushbacks closer together than this count once."""


class Pressure:
    """The factor applied to the budgets of the classes below the highest (module doc)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._factor = 1.0
        self._at = clock()
        self._last_pushback = float("-inf")

    def pushback(self) -> None:
        now = self._clock()
        self._settle(now)
        if now - self._last_pushback < PUSHBACK_INTERVAL:
            return
        self._last_pushback = now
        self._factor = max(FLOOR, self._factor * DECREASE)

    def factor(self) -> float:
        self._settle(self._clock())
        return self._factor

    def _settle(self, now: float) -> None:
        """Recover for the time since the last look (additively, per whole second)."""
        if now > self._at:
            self._factor = min(1.0, self._factor + INCREASE * (now - self._at))
        self._at = now


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int]
    """(-priority, arrival): the heap pops the highest priority, then the oldest."""
    future: asyncio.Future[None] = field(compare=False)


class PriorityGate:
    """Runs at once, and the queue beyond them (module doc)."""

    def __init__(self) -> None:
        self.running = 0
        self.queued = 0
        """Runs waiting (their futures not done yet)."""
        self._queue: list[_Waiter] = []
        self._arrivals = itertools.count()
        self._limit: int | None = None

    @asynccontextmanager
    async def slot(
        self, *, limit: int | None, priority: int, wait: float, max_queued: int
    ) -> AsyncIterator[None]:
        """Hold a run's slot for the block. Raises ``RateLimitedError`` when the run waited
        ``wait`` seconds, or was refused or pushed out of a full queue."""
        if limit != self._limit:
            self._limit = limit
            self._grant()  # a raised limit lets waiting runs in at once
        if limit is None or (self.running < limit and not self.queued):
            self.running += 1
        else:
            await self._queue_for(priority, wait, max_queued)
        try:
            yield
        finally:
            self.running -= 1
            self._grant()

    async def _queue_for(self, priority: int, wait: float, max_queued: int) -> None:
        if self.queued >= max_queued:
            lowest = max((w for w in self._queue if not w.future.done()), default=None)
            if lowest is None or lowest.rank[0] <= -priority:
                raise _saturated()
            lowest.future.set_exception(_saturated())  # pushed out by a higher class
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued += 1
        future.add_done_callback(self._left_queue)
        waiter = _Waiter((-priority, next(self._arrivals)), future)
        heapq.heappush(self._queue, waiter)
        if len(self._queue) > 2 * self.queued + 64:  # drop the entries of runs gone
            self._queue = [w for w in self._queue if not w.future.done()]
            heapq.heapify(self._queue)
        self._grant()  # room already (a counted waiter has just left): in at once
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(waiter.future)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.exception():
                return  # granted as the wait ended: the slot is ours
            waiter.future.cancel()
            raise _saturated() from None
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                if waiter.future.exception() is None:
                    self.running -= 1  # granted, but the caller left: give it on
                    self._grant()
            else:
                waiter.future.cancel()
            raise

    def _left_queue(self, _future: asyncio.Future[None]) -> None:
        self.queued -= 1

    def _grant(self) -> None:
        """Give freed slots to the highest waiting runs."""
        while self._queue and (self._limit is None or self.running < self._limit):
            waiter = heapq.heappop(self._queue)
            if waiter.future.done():
                continue  # timed out, cancelled or pushed out
            self.running += 1
            waiter.future.set_result(None)


def _saturated() -> RateLimitedError:
    return RateLimitedError(
        "the agent is saturated: too many runs at once and ahead of this one; retry shortly",
        retry_after=1.0,
        headers={"retry-after": "1"},
    )
