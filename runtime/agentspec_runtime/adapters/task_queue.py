"""The work queue of durable tasks, their step journals and their push deliveries, on the
task store's database (``task_store.py`` creates the tables).

The queue is rows of ``agentspec_jobs`` leased with ``SELECT … FOR UPDATE SKIP LOCKED``
(PostgreSQL; SQLite has one writer, so the plain statement is already exclusive):

* a replica *claims* a job that is queued, or running under a lease that expired (its
  replica died): the claim takes the lease for ``lease_seconds``, bumps the job's *epoch*
  and counts the attempt;
* it *renews* the lease while it works; a renewal that finds another epoch (the task was
  cancelled, or the lease expired and another replica took it) tells it to stop;
* it *finishes* the job, or *releases* it at shutdown (queued again at once, the attempt
  not counted, so another replica resumes it without waiting for the lease to expire).

Every write a worker makes for its task — the task's state, a journal entry — carries its
``(holder, epoch)`` and is refused inside the same transaction when the job has moved on: a
replica presumed dead that wakes up cannot write (fencing).

Clocks: leases are wall-clock seconds of the replica writing them (NTP keeps replicas within
milliseconds, leases last seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agentspec_runtime.engine import journal as j
from agentspec_runtime.engine.errors import CheckpointError

from .sql import Database, StoreUnavailableError
from .task_store import INTERRUPTED, JOBS_CHANNEL, TASK_TABLES, TERMINAL, holds_lease

__all__ = ["Delivery", "Job", "JobQueue", "PushOutbox", "QueueStats", "StoreJournal"]

_IDLE_STATES = tuple(int(s) for s in TERMINAL | INTERRUPTED)


@dataclass(frozen=True, slots=True)
class Job:
    task_id: str
    owner: str
    request: bytes
    """The ``SendMessageRequest`` that queued it (serialized)."""
    headers: str
    """JSON: the hop count and trace context of the request that queued it."""
    epoch: int
    attempts: int
    """Runs that did not end (this one included); a handed-back run does not count."""
    runs: int
    """Runs started (this one included): more than one is a resumed task."""
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    queued: int
    """Jobs waiting for a replica: new, handed back, or left by a replica that died."""
    running: int
    oldest_age: float
    """Seconds the longest-waiting job has waited (0 when none)."""


class JobQueue:
    def __init__(
        self,
        db: Database,
        *,
        holder: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._clock = clock

    def lease(self, job: Job) -> tuple[str, int]:
        return (self.holder, job.epoch)

    async def claim(self, *, limit: int = 1, task_id: str | None = None) -> list[Job]:
        """Lease up to ``limit`` jobs that are due (oldest first), or the one ``task_id``."""
        now = self._clock()
        which = "AND task_id = ? " if task_id is not None else ""
        args: list[object] = [self.holder, now + self.lease_seconds, now]
        if task_id is not None:
            args.append(task_id)
        args.append(limit)
        skip = self.db.rows_locked("FOR UPDATE SKIP LOCKED")
        rows = await self.db.fetch(
            "UPDATE agentspec_jobs SET status = 'running', holder = ?, epoch = epoch + 1, "
            "lease_until = ?, attempts = attempts + 1, runs = runs + 1 WHERE task_id IN ("
            "SELECT task_id FROM agentspec_jobs WHERE (status = 'queued' OR (status = "
            f"'running' AND lease_until < ?)) {which}ORDER BY enqueued_at LIMIT ?"
            f"{skip}) RETURNING task_id, owner, request, headers, epoch, "
            "attempts, runs, enqueued_at",
            *args,
        )
        return [
            Job(
                task_id=str(r[0]),
                owner=str(r[1]),
                request=bytes(r[2]),
                headers=str(r[3]),
                epoch=int(r[4]),
                attempts=int(r[5]),
                runs=int(r[6]),
                enqueued_at=float(r[7]),
            )
            for r in rows
        ]

    async def renew(self, job: Job) -> bool:
        """Extend the lease; False when the job is no longer this replica's to run."""
        return bool(
            await self.db.execute(
                "UPDATE agentspec_jobs SET lease_until = ? WHERE task_id = ? AND holder = ? "
                "AND epoch = ? AND status = 'running'",
                self._clock() + self.lease_seconds,
                job.task_id,
                self.holder,
                job.epoch,
            )
        )

    async def finish(self, job: Job, *, status: str = "done") -> bool:
        return bool(
            await self.db.execute(
                "UPDATE agentspec_jobs SET status = ?, holder = NULL, lease_until = 0 "
                "WHERE task_id = ? AND holder = ? AND epoch = ?",
                status,
                job.task_id,
                self.holder,
                job.epoch,
            )
        )

    async def release(self, job: Job) -> bool:
        """Hand the job back (shutdown): queued again now, this attempt not counted."""
        released = await self.db.execute(
            "UPDATE agentspec_jobs SET status = 'queued', holder = NULL, lease_until = 0, "
            "attempts = attempts - 1 WHERE task_id = ? AND holder = ? AND epoch = ? "
            "AND status = 'running'",
            job.task_id,
            self.holder,
            job.epoch,
        )
        if released:
            await self.db.notify(JOBS_CHANNEL, "queued")
        return bool(released)

    async def stats(self) -> QueueStats:
        now = self._clock()
        row = await self.db.fetchrow(
            "SELECT SUM(CASE WHEN status = 'queued' OR lease_until < ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN status = 'running' AND lease_until >= ? THEN 1 ELSE 0 END), "
            "MIN(CASE WHEN status = 'queued' OR lease_until < ? THEN enqueued_at END) "
            "FROM agentspec_jobs WHERE status IN ('queued', 'running')",
            now,
            now,
            now,
        )
        if row is None:
            return QueueStats(0, 0, 0.0)
        oldest = float(row[2]) if row[2] is not None else None
        return QueueStats(
            queued=int(row[0] or 0),
            running=int(row[1] or 0),
            oldest_age=max(0.0, now - oldest) if oldest is not None else 0.0,
        )

    async def sweep(self, *, retention: float) -> int:
        """Delete tasks idle (finished, or waiting for input) for ``retention`` seconds, with
        everything kept for them; how many."""
        cutoff = self._clock() - retention
        states = ", ".join(str(s) for s in _IDLE_STATES)
        old = f"SELECT id FROM agentspec_tasks WHERE state IN ({states}) AND updated_at < ?"
        async with self.db.transaction() as tx:
            for table in TASK_TABLES:
                await tx.execute(f"DELETE FROM {table} WHERE task_id IN ({old})", cutoff)
            return await tx.execute(
                f"DELETE FROM agentspec_tasks WHERE state IN ({states}) AND updated_at < ?",
                cutoff,
            )


class StoreJournal:
    """The step journal of one task, written under the worker's lease (a ``TaskJournal``)."""

    def __init__(self, db: Database, task_id: str, *, lease: tuple[str, int]) -> None:
        self.db = db
        self.task_id = task_id
        self._holder, self._epoch = lease
        self._next = 0
        self.writes = 0

    async def load(self) -> list[j.Entry]:
        try:
            rows = await self.db.fetch(
                "SELECT step, entry FROM agentspec_journal WHERE task_id = ? ORDER BY step",
                self.task_id,
            )
        except StoreUnavailableError as e:
            raise CheckpointError(f"the task's journal cannot be read: {e}") from e
        self._next = int(rows[-1][0]) + 1 if rows else 0
        return [j.decode(str(r[1])) for r in rows]

    async def append(self, entry: j.Entry) -> None:
        step = self._next
        self._next += 1  # taken before the await: concurrent tool calls get their own steps
        try:
            async with self.db.transaction() as tx:
                lease = (self._holder, self._epoch)
                if not await holds_lease(self.db, tx, self.task_id, lease, running=True):
                    raise CheckpointError(
                        f"task {self.task_id} is no longer this replica's (cancelled, or taken "
                        "over after its lease expired)"
                    )
                await tx.execute(
                    "INSERT INTO agentspec_journal (task_id, step, entry) VALUES (?, ?, ?)",
                    self.task_id,
                    step,
                    j.encode(entry),
                )
        except StoreUnavailableError as e:
            raise CheckpointError(f"the task's step could not be recorded: {e}") from e
        self.writes += 1


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    task_id: str
    config: bytes
    """The ``TaskPushNotificationConfig`` (serialized); empty when it was deleted."""
    event: bytes
    """The ``StreamResponse`` to deliver (serialized)."""
    attempts: int


class PushOutbox:
    """Push deliveries queued by the task store (one per webhook per task event)."""

    def __init__(
        self,
        db: Database,
        *,
        holder: str,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._clock = clock

    async def claim(self, *, limit: int = 20) -> list[Delivery]:
        """Lease deliveries that are due, oldest first (an expired lease: the replica that
        held them died, so they are due again)."""
        now = self._clock()
        skip = self.db.rows_locked("FOR UPDATE SKIP LOCKED")
        rows = await self.db.fetch(
            "UPDATE agentspec_push_outbox SET holder = ?, lease_until = ?, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM agentspec_push_outbox WHERE next_at <= ? AND "
            f"lease_until < ? ORDER BY id LIMIT ?{skip}) RETURNING id, task_id, config_id, "
            "event, attempts",
            self.holder,
            now + self.lease_seconds,
            now,
            now,
            limit,
        )
        deliveries = []
        for row in sorted(rows, key=lambda r: int(r[0])):
            config = await self.db.fetchrow(
                "SELECT config FROM agentspec_push_configs WHERE task_id = ? AND config_id = ?",
                row[1],
                row[2],
            )
            deliveries.append(
                Delivery(
                    id=int(row[0]),
                    task_id=str(row[1]),
                    config=bytes(config[0]) if config is not None else b"",
                    event=bytes(row[3]),
                    attempts=int(row[4]),
                )
            )
        return deliveries

    async def done(self, delivery: Delivery) -> None:
        await self.db.execute("DELETE FROM agentspec_push_outbox WHERE id = ?", delivery.id)

    async def retry(self, delivery: Delivery, *, after: float) -> None:
        await self.db.execute(
            "UPDATE agentspec_push_outbox SET next_at = ?, holder = NULL, lease_until = 0 "
            "WHERE id = ?",
            self._clock() + after,
            delivery.id,
        )

    async def next_due(self) -> float | None:
        """When the next delivery is due (wall clock), if any is queued."""
        row = await self.db.fetchrow(
            "SELECT MIN(CASE WHEN lease_until > next_at THEN lease_until ELSE next_at END) "
            "FROM agentspec_push_outbox"
        )
        return float(row[0]) if row is not None and row[0] is not None else None
