"""The task worker's admission: a burst of queued tasks never starts more than
``spec.tasks.concurrency`` runs on a replica.

In: the runtime's ``TaskWorker`` with a queue whose claims are held open (the database is slow
to answer), so every kick of a burst arrives while the earlier claims are still in flight —
the race a real database makes rare but not impossible.
Asserted: the claims in flight never ask for more jobs than there is room for, and the kicks
beyond it tell the other replicas instead.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from agentspec_runtime.adapters.task_queue import Job
from agentspec_runtime.api.tasks import TaskWorker
from agentspec_runtime.spec.agent import TasksSpec


class HeldQueue:
    def __init__(self) -> None:
        self.asked: list[int] = []
        self.answer = asyncio.Event()

    async def claim(self, *, limit: int = 1, task_id: str | None = None) -> list[Job]:
        self.asked.append(limit)
        await self.answer.wait()
        return []


async def test_a_burst_of_kicks_claims_no_more_than_concurrency() -> None:
    queue = HeldQueue()
    told: list[str] = []

    async def notify(channel: str, payload: str) -> None:
        told.append(payload)

    service: Any = SimpleNamespace(
        spec=TasksSpec(concurrency=2), queue=queue, db=SimpleNamespace(notify=notify)
    )
    worker = TaskWorker(service)
    for i in range(5):
        worker.kick(f"t{i}")
    await asyncio.sleep(0.01)
    assert sum(queue.asked) == 2, f"claims in flight asked for {queue.asked}"
    assert told == ["queued"] * 3, "the kicks without room go to the other replicas"
    queue.answer.set()
    await asyncio.sleep(0.01)
    worker.kick("t5")  # the claims came back empty: room again
    await asyncio.sleep(0.01)
    assert queue.asked == [1, 1, 1]
