"""A coalescing work queue (client-go semantics) in front of the reconcilers.

Every cause (watch event, index change, timer) only *adds a key*; workers take keys one at
a time. A key is never processed by two workers at once, a key added while queued is not
queued twice, and a key added while being processed is processed once more afterwards. So a
burst of 50 events for one agent costs one or two reconciles, not 50.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MIN_BACKOFF = 0.25
MAX_BACKOFF = 60.0


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds; an earlier pending timer for it wins."""
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending is not None and pending.when() <= loop.time() + delay:
            return
        if pending is not None:
            pending.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: K, delay: float | None = None) -> float:
        """Re-add after a failure with exponential backoff; returns the delay used."""
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        wait = delay if delay is not None else min(MIN_BACKOFF * 2**count, MAX_BACKOFF)
        self.add_after(key, wait)
        return wait

    def forget(self, key: K) -> None:
        """The key succeeded: reset its backoff."""
        self._failures.pop(key, None)

    async def get(self) -> K:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
