"""The operator's coalescing work queue (client-go semantics), driven directly.

In: keys added from "events" while workers take and finish them. Asserted: a queued key is
not queued twice, a key added while in progress runs once more afterwards, delayed adds keep
the earliest timer, and failures back off exponentially.
"""

from __future__ import annotations

import asyncio

from agentspec_operator.workqueue import MIN_BACKOFF, WorkQueue


async def test_bursts_coalesce_into_one_item() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(50):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"


async def test_a_key_added_while_in_progress_runs_again_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # an event during the reconcile
    queue.add("a")
    assert len(queue) == 1  # only the active one; not queued behind itself
    queue.done(key)
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_add_after_keeps_the_earliest_timer() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    queue.add_after("a", 30)  # later: ignored
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.done("a")
    queue.close()


async def test_retry_backs_off_exponentially_and_forget_resets() -> None:
    queue: WorkQueue[str] = WorkQueue()
    delays = [queue.retry("a") for _ in range(4)]
    assert delays == [MIN_BACKOFF, MIN_BACKOFF * 2, MIN_BACKOFF * 4, MIN_BACKOFF * 8]
    queue.forget("a")
    assert queue.retry("a") == MIN_BACKOFF
    assert queue.retry("a", 7.0) == 7.0
    queue.close()
