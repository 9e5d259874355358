"""Durable A2A tasks: the a2a-sdk's store interfaces on PostgreSQL (several replicas) or
SQLite (one process: local mode and the default).

* :class:`DurableTaskStore` is a ``VersionedTaskStore`` (the sdk's compare-and-swap contract):
  a save locks the task's row, checks the version the writer read, writes the task, appends
  the event that produced it, queues push deliveries for it — one transaction — and then
  notifies every replica. Two guards the sdk's own store lacks: a save by a replica whose
  lease on the task was taken over is refused (the *fence*: a replica presumed dead that
  wakes up cannot write), and a cancellation applies only the new status onto the task as
  stored (the sdk writes the canceller's whole, possibly stale, copy and loses what the
  running replica wrote in between).
* :class:`DurableEventStream` is a ``TaskEventStream``: a subscriber on any replica reads the
  task's events after a version, then waits for the next notification (PostgreSQL
  ``LISTEN``; no polling delay).
* :class:`DurablePushConfigStore` keeps push-notification configs for every replica.

Every task and config belongs to an owner: the consumer (``ServerCallContext.user``).
A task is created with its job (``agentspec_jobs``: the work queue) and, when the message
has an id, its ``(owner, messageId)`` entry, in one transaction: the same message sent twice
is one task. The queue, the journal and the push deliveries are worked on in
``task_queue.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.cluster import (
    ConcurrentTaskModificationError,
    StoredTask,
    TaskEventStream,
    TaskVersion,
    VersionedEvent,
    VersionedTaskStore,
)
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.tasks.push_notification_config_store import (
    PushNotificationConfigStore,
    normalize_push_notification_config,
)
from a2a.types import (
    ListTasksRequest,
    ListTasksResponse,
    Message,
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.proto_utils import to_stream_response

from .sql import Connection, Database

__all__ = [
    "INTERRUPTED",
    "JOBS_CHANNEL",
    "LEASE",
    "NOTIFY_CHANNEL",
    "TERMINAL",
    "DurableEventStream",
    "DurablePushConfigStore",
    "DurableTaskStore",
    "create_schema",
    "owner_of",
]

NOTIFY_CHANNEL = "task"
"""Payload: the task id whose state or events changed. (Channels are prefixed with the
database's scope, and PostgreSQL allows 63 bytes: the names are short.)"""
JOBS_CHANNEL = "jobs"
"""Payload: ``queued`` (work to claim), ``push`` (deliveries due), ``stop:<task id>`` (the
task was cancelled: whoever runs it stops)."""
LEASE = "agentspec.lease"
"""``ServerCallContext.state[LEASE]``: ``(holder, epoch)`` of the worker writing the task."""
TERMINAL = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)
INTERRUPTED = frozenset({TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED})
"""Waiting for the caller: a new message continues the task."""
TASK_TABLES = (
    "agentspec_task_events",
    "agentspec_jobs",
    "agentspec_journal",
    "agentspec_push_configs",
    "agentspec_push_outbox",
    "agentspec_message_ids",
)
"""What else holds rows of a task (by ``task_id``): deleted with it."""
_SCHEMA_LOCK = 73_510_021  # pg_advisory lock key: replicas starting at once create it once

_TABLES = """
CREATE TABLE IF NOT EXISTS agentspec_tasks (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, context_id TEXT NOT NULL, state INTEGER NOT NULL,
    version BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL, task {blob} NOT NULL);
CREATE INDEX IF NOT EXISTS agentspec_tasks_owner ON agentspec_tasks (owner, updated_at, id);
CREATE TABLE IF NOT EXISTS agentspec_task_events (
    seq {serial} PRIMARY KEY, task_id TEXT NOT NULL, version BIGINT NOT NULL,
    event {blob} NOT NULL);
CREATE INDEX IF NOT EXISTS agentspec_task_events_task ON agentspec_task_events (task_id, version);
CREATE TABLE IF NOT EXISTS agentspec_push_configs (
    task_id TEXT NOT NULL, config_id TEXT NOT NULL, owner TEXT NOT NULL, config {blob} NOT NULL,
    PRIMARY KEY (task_id, config_id));
CREATE TABLE IF NOT EXISTS agentspec_push_outbox (
    id {serial} PRIMARY KEY, task_id TEXT NOT NULL, config_id TEXT NOT NULL,
    event {blob} NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL, holder TEXT, lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS agentspec_push_outbox_due ON agentspec_push_outbox (next_at);
CREATE TABLE IF NOT EXISTS agentspec_jobs (
    task_id TEXT PRIMARY KEY, owner TEXT NOT NULL, request {blob} NOT NULL,
    headers TEXT NOT NULL, status TEXT NOT NULL, holder TEXT, epoch BIGINT NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0, enqueued_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS agentspec_jobs_due ON agentspec_jobs (status, lease_until);
CREATE TABLE IF NOT EXISTS agentspec_journal (
    task_id TEXT NOT NULL, step INTEGER NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY (task_id, step));
CREATE TABLE IF NOT EXISTS agentspec_message_ids (
    owner TEXT NOT NULL, message_id TEXT NOT NULL, task_id TEXT NOT NULL,
    PRIMARY KEY (owner, message_id));
"""


async def holds_lease(
    db: Database, tx: Connection, task_id: str, lease: tuple[str, int], *, running: bool = False
) -> bool:
    """The job is still ``lease``'s (holder and epoch; ``running`` too when asked), and stays
    so until ``tx`` ends: the row is held FOR SHARE, so no replica can claim it before this
    write commits. Every write a worker makes is fenced by this."""
    job = await tx.fetchrow(
        "SELECT holder, epoch, status FROM agentspec_jobs WHERE task_id = ?"
        + db.rows_locked("FOR SHARE"),
        task_id,
    )
    if job is None or (job[0], int(job[1])) != tuple(lease):
        return False
    return not running or job[2] == "running"


async def create_schema(db: Database) -> None:
    """Create the tables if missing; replicas starting together take turns (PostgreSQL)."""
    if db.dialect == "postgres":
        ddl = _TABLES.format(blob="BYTEA", serial="BIGSERIAL")
    else:
        ddl = _TABLES.format(blob="BLOB", serial="INTEGER")
    async with db.transaction() as tx:
        if db.dialect == "postgres":
            await tx.execute("SELECT pg_advisory_xact_lock(?)", _SCHEMA_LOCK)
        for statement in (s.strip() for s in ddl.split(";")):
            if statement:
                await tx.execute(statement)


class TaskStateError(Exception):
    """A message for a task that cannot take one now (finished, or still working)."""


def owner_of(context: ServerCallContext) -> str:
    """Whose the task is: the consumer's name ('' when the agent needs no key)."""
    return str(context.user.user_name)


def _version(value: TaskVersion) -> int:
    raw = value._value
    return int(raw) if isinstance(raw, int) else 0


def stream_event(response: StreamResponse) -> Event:
    which = response.WhichOneof("payload")
    if which == "task":
        return response.task
    if which == "message":
        return response.message
    if which == "status_update":
        return response.status_update
    if which == "artifact_update":
        return response.artifact_update
    raise ValueError(f"a stored event without a payload ({which!r})")


class DurableTaskStore(VersionedTaskStore):
    def __init__(self, db: Database, *, clock: Any = time.time) -> None:
        self.db = db
        self._clock = clock

    async def save(
        self,
        task: Task,
        *,
        event: Event | None,
        prev: Task | None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        del prev
        owner = owner_of(context)
        stopped = 0
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT version, state, owner, task FROM agentspec_tasks WHERE id = ?"
                + self.db.rows_locked("FOR UPDATE"),
                task.id,
            )
            await self._check_fence(tx, task.id, context)
            write = task
            if row is None:
                if not prev_version.is_missing:
                    raise ConcurrentTaskModificationError(task.id)
                version = 1
            else:
                stored_version, state, stored_owner, blob = row
                if stored_owner != owner:
                    raise ConcurrentTaskModificationError(task.id)
                if task.status.state == TaskState.TASK_STATE_CANCELED:
                    # a cancel overwrites any non-terminal state, but only its status: what
                    # the running replica wrote since the canceller read the task survives
                    if state in TERMINAL:
                        raise ConcurrentTaskModificationError(task.id)
                    write = Task.FromString(bytes(blob))
                    write.status.CopyFrom(task.status)
                    # the job ends with it; the new epoch fences off the replica running it
                    stopped = await tx.execute(
                        "UPDATE agentspec_jobs SET status = 'cancelled', epoch = epoch + 1, "
                        "holder = NULL WHERE task_id = ? AND status IN ('queued', 'running')",
                        task.id,
                    )
                elif stored_version != _version(prev_version):
                    raise ConcurrentTaskModificationError(task.id)
                version = int(stored_version) + 1
            pushes = await self._write(tx, write, owner=owner, version=version, event=event)
        await self._notify(task.id, pushes=pushes, stop=stopped)
        return TaskVersion(version)

    async def _notify(self, task_id: str, *, pushes: int = 0, stop: int = 0) -> None:
        """After a commit: subscribers of the task, the push dispatchers, the worker."""
        await self.db.notify(NOTIFY_CHANNEL, task_id)
        if pushes:
            await self.db.notify(JOBS_CHANNEL, "push")
        if stop:
            await self.db.notify(JOBS_CHANNEL, f"stop:{task_id}")

    async def _check_fence(self, tx: Connection, task_id: str, context: ServerCallContext) -> None:
        lease = context.state.get(LEASE)
        if lease is None:
            return  # not a queued worker's write: creating a task, cancelling it
        if not await holds_lease(self.db, tx, task_id, lease):
            raise ConcurrentTaskModificationError(task_id)

    async def _write(
        self, tx: Connection, task: Task, *, owner: str, version: int, event: Event | None
    ) -> int:
        """Write the task, its event and its push deliveries; how many deliveries."""
        now = self._clock()
        blob = task.SerializeToString()
        updated = await tx.execute(
            "UPDATE agentspec_tasks SET state = ?, version = ?, updated_at = ?, task = ?, "
            "context_id = ? WHERE id = ?",
            int(task.status.state),
            version,
            now,
            blob,
            task.context_id,
            task.id,
        )
        if updated == 0:
            await tx.execute(
                "INSERT INTO agentspec_tasks (id, owner, context_id, state, version, updated_at,"
                " task) VALUES (?, ?, ?, ?, ?, ?, ?)",
                task.id,
                owner,
                task.context_id,
                int(task.status.state),
                version,
                now,
                blob,
            )
        if event is None:
            return 0
        data = to_stream_response(event).SerializeToString()
        await tx.execute(
            "INSERT INTO agentspec_task_events (task_id, version, event) VALUES (?, ?, ?)",
            task.id,
            version,
            data,
        )
        # at-least-once push: a delivery per registered webhook, in the same transaction
        if isinstance(event, Message):
            return 0
        return await tx.execute(
            "INSERT INTO agentspec_push_outbox (task_id, config_id, event, next_at, "
            "created_at) SELECT task_id, config_id, ?, ?, ? FROM agentspec_push_configs "
            "WHERE task_id = ?",
            data,
            now,
            now,
            task.id,
        )

    # -- creating and continuing tasks: a task and its job, in one transaction -------------

    async def _known_message(
        self, tx: Connection, owner: str, message_id: str, task_id: str
    ) -> StoredTask | None:
        """Record ``(owner, message_id) -> task_id``; the existing task if it was known."""
        if not message_id:
            return None
        added = await tx.execute(
            "INSERT INTO agentspec_message_ids (owner, message_id, task_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            owner,
            message_id,
            task_id,
        )
        if added:
            return None
        row = await tx.fetchrow(
            "SELECT t.version, t.task FROM agentspec_message_ids m JOIN agentspec_tasks t "
            "ON t.id = m.task_id WHERE m.owner = ? AND m.message_id = ?",
            owner,
            message_id,
        )
        if row is None:  # the task was deleted (retention): the message id is free again
            await tx.execute(
                "UPDATE agentspec_message_ids SET task_id = ? WHERE owner = ? AND message_id = ?",
                task_id,
                owner,
                message_id,
            )
            return None
        return StoredTask(Task.FromString(bytes(row[1])), TaskVersion(int(row[0])))

    async def create(
        self,
        task: Task,
        *,
        context: ServerCallContext,
        request: bytes,
        headers: str,
        push: TaskPushNotificationConfig | None = None,
    ) -> tuple[StoredTask, bool]:
        """Store a new task (SUBMITTED, its message in the history) and queue its job.

        Returns the stored task and True; or, when the owner already sent this message, the
        task it created and False (nothing is written)."""
        owner = owner_of(context)
        message_id = task.history[0].message_id if task.history else ""
        now = self._clock()
        async with self.db.transaction() as tx:
            existing = await self._known_message(tx, owner, message_id, task.id)
            if existing is not None:
                return existing, False
            if push is not None:  # first: the task's first event is pushed too
                await _put_push_config(tx, task.id, owner, push)
            pushes = await self._write(tx, task, owner=owner, version=1, event=task)
            await tx.execute(
                "INSERT INTO agentspec_jobs (task_id, owner, request, headers, status, "
                "enqueued_at) VALUES (?, ?, ?, ?, 'queued', ?)",
                task.id,
                owner,
                request,
                headers,
                now,
            )
        await self._notify(task.id, pushes=pushes)
        return StoredTask(task, TaskVersion(1)), True

    async def continue_task(
        self,
        message: Message,
        *,
        context: ServerCallContext,
        request: bytes,
        headers: str,
        push: TaskPushNotificationConfig | None = None,
    ) -> tuple[StoredTask, bool]:
        """A new message for a task waiting for input: added to its history, its job queued
        again with a fresh journal (a new turn). The same message sent twice is queued once.

        Raises ``TaskStateError`` when the task is finished or still working, ``KeyError``
        when the owner has no such task."""
        owner = owner_of(context)
        now = self._clock()
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT version, state, task FROM agentspec_tasks WHERE id = ? AND owner = ?"
                + self.db.rows_locked("FOR UPDATE"),
                message.task_id,
                owner,
            )
            if row is None:
                raise KeyError(message.task_id)
            version, state, blob = int(row[0]), int(row[1]), bytes(row[2])
            task = Task.FromString(blob)
            if message.context_id and message.context_id != task.context_id:
                raise TaskStateError(
                    f"context {message.context_id} is not the context of task {task.id}"
                )
            existing = await self._known_message(tx, owner, message.message_id, task.id)
            if existing is not None:
                return existing, False
            if state in TERMINAL:
                raise TaskStateError(
                    f"task {task.id} is {TaskState.Name(state)}: it takes no more messages"
                )
            if state not in INTERRUPTED:
                raise TaskStateError(
                    f"task {task.id} is still working: wait for it (SubscribeToTask) or cancel it"
                )
            # (the status message asking for input is the engine's, not the model's: it is
            # not part of the conversation the model continues)
            task.history.append(message)
            task.status.Clear()
            task.status.state = TaskState.TASK_STATE_SUBMITTED
            task.status.timestamp.GetCurrentTime()
            event = TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id, status=task.status
            )
            if push is not None:
                await _put_push_config(tx, task.id, owner, push)
            pushes = await self._write(tx, task, owner=owner, version=version + 1, event=event)
            await tx.execute("DELETE FROM agentspec_journal WHERE task_id = ?", task.id)
            await tx.execute(
                "UPDATE agentspec_jobs SET status = 'queued', request = ?, headers = ?, "
                "holder = NULL, lease_until = 0, attempts = 0, runs = 0, enqueued_at = ? "
                "WHERE task_id = ?",
                request,
                headers,
                now,
                task.id,
            )
        await self._notify(task.id, pushes=pushes)
        return StoredTask(task, TaskVersion(version + 1)), True

    async def end(self, task_id: str, status: TaskStatus, *, lease: tuple[str, int]) -> bool:
        """Give the task a final ``status`` as it is stored (a poison task failing), fenced by
        the lease: False when the lease is no longer the caller's."""
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT version, state, owner, task FROM agentspec_tasks WHERE id = ?"
                + self.db.rows_locked("FOR UPDATE"),
                task_id,
            )
            if row is None or not await holds_lease(self.db, tx, task_id, lease):
                return False
            task = Task.FromString(bytes(row[3]))
            if int(row[1]) in TERMINAL:
                return True
            task.status.CopyFrom(status)
            event = TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id, status=task.status
            )
            pushes = await self._write(
                tx, task, owner=str(row[2]), version=int(row[0]) + 1, event=event
            )
        await self._notify(task_id, pushes=pushes)
        return True

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        row = await self.db.fetchrow(
            "SELECT version, task FROM agentspec_tasks WHERE id = ? AND owner = ?",
            task_id,
            owner_of(context),
        )
        if row is None:
            return None
        return StoredTask(Task.FromString(bytes(row[1])), TaskVersion(int(row[0])))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        sql = "SELECT updated_at, id, task FROM agentspec_tasks WHERE owner = ?"
        args: list[Any] = [owner_of(context)]
        if params.context_id:
            sql += " AND context_id = ?"
            args.append(params.context_id)
        if params.status:
            sql += " AND state = ?"
            args.append(int(params.status))
        if params.HasField("status_timestamp_after"):
            sql += " AND updated_at >= ?"
            args.append(params.status_timestamp_after.ToNanoseconds() / 1e9)
        total_row = await self.db.fetchrow(
            sql.replace("updated_at, id, task", "COUNT(*)", 1), *args
        )
        if params.page_token:
            cursor = _decode_cursor(params.page_token)
            sql += " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
            args += [cursor[0], cursor[0], cursor[1]]
        size = params.page_size or 50
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        rows = await self.db.fetch(sql, *args, size + 1)
        page = rows[:size]
        tasks = [Task.FromString(bytes(r[2])) for r in page]
        next_token = _encode_cursor(page[-1][0], page[-1][1]) if len(rows) > size else ""
        return ListTasksResponse(
            tasks=tasks,
            next_page_token=next_token,
            page_size=size,
            total_size=int(total_row[0]) if total_row else len(tasks),
        )

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM agentspec_tasks WHERE id = ? AND owner = ?",
                task_id,
                owner_of(context),
            )
            if deleted:
                for table in TASK_TABLES:
                    await tx.execute(f"DELETE FROM {table} WHERE task_id = ?", task_id)


async def _put_push_config(
    tx: Connection, task_id: str, owner: str, config: TaskPushNotificationConfig
) -> None:
    config = normalize_push_notification_config(task_id, config)
    await tx.execute(
        "DELETE FROM agentspec_push_configs WHERE task_id = ? AND config_id = ?",
        task_id,
        config.id,
    )
    await tx.execute(
        "INSERT INTO agentspec_push_configs (task_id, config_id, owner, config) "
        "VALUES (?, ?, ?, ?)",
        task_id,
        config.id,
        owner,
        config.SerializeToString(),
    )


def _encode_cursor(updated_at: float, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{updated_at!r}|{task_id}".encode()).decode()


def _decode_cursor(token: str) -> tuple[float, str]:
    try:
        stamp, task_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return float(stamp), task_id
    except (ValueError, UnicodeDecodeError) as e:
        from a2a.utils.errors import InvalidParamsError

        raise InvalidParamsError(f"invalid page token: {token!r}") from e


class DurableEventStream(TaskEventStream):
    """Events of a task after a version, from any replica: read, then wait to be notified."""

    def __init__(self, db: Database, *, safety_poll: float = 1.0) -> None:
        self.db = db
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._safety_poll = safety_poll
        self._listening = False

    async def start(self) -> None:
        if not self._listening:
            await self.db.listen(NOTIFY_CHANNEL, self._notified)
            self._listening = True

    def _notified(self, task_id: str) -> None:
        for waiter in self._waiting.get(task_id, ()):
            waiter.set()

    async def publish(self, task_id: str, event: VersionedEvent) -> None:
        return None  # the store writes events in the transaction that saves the task

    async def subscribe(
        self, task_id: str, *, after: TaskVersion
    ) -> AsyncGenerator[VersionedEvent, None]:
        await self.start()
        last = _version(after)
        wake = asyncio.Event()
        self._waiting.setdefault(task_id, set()).add(wake)
        try:
            while True:
                wake.clear()
                rows = await self.db.fetch(
                    "SELECT version, event FROM agentspec_task_events WHERE task_id = ? AND "
                    "version > ? ORDER BY version",
                    task_id,
                    last,
                )
                for version, data in rows:
                    last = int(version)
                    response = StreamResponse.FromString(bytes(data))
                    yield VersionedEvent(event=stream_event(response), version=TaskVersion(last))
                if not rows:
                    # the notification wakes us at once; the timeout only covers a missed one
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._safety_poll)
        finally:
            waiters = self._waiting.get(task_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiting[task_id]

    async def destroy(self, task_id: str) -> None:
        return None  # the retention sweep removes a finished task's events with it


class DurablePushConfigStore(PushNotificationConfigStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_info(
        self,
        task_id: str,
        notification_config: TaskPushNotificationConfig,
        context: ServerCallContext,
    ) -> TaskPushNotificationConfig:
        async with self.db.transaction() as tx:
            await _put_push_config(tx, task_id, owner_of(context), notification_config)
        return normalize_push_notification_config(task_id, notification_config)

    async def get_info(
        self, task_id: str, context: ServerCallContext
    ) -> list[TaskPushNotificationConfig]:
        rows = await self.db.fetch(
            "SELECT config FROM agentspec_push_configs WHERE task_id = ? AND owner = ? "
            "ORDER BY config_id",
            task_id,
            owner_of(context),
        )
        return [TaskPushNotificationConfig.FromString(bytes(r[0])) for r in rows]

    async def get_info_for_dispatch(self, task_id: str) -> list[TaskPushNotificationConfig]:
        rows = await self.db.fetch(
            "SELECT config FROM agentspec_push_configs WHERE task_id = ? ORDER BY config_id",
            task_id,
        )
        return [TaskPushNotificationConfig.FromString(bytes(r[0])) for r in rows]

    async def delete_info(
        self, task_id: str, context: ServerCallContext, config_id: str | None = None
    ) -> None:
        sql = "DELETE FROM agentspec_push_configs WHERE task_id = ? AND owner = ?"
        args: list[Any] = [task_id, owner_of(context)]
        if config_id is not None:
            sql += " AND config_id = ?"
            args.append(config_id)
        await self.db.execute(sql, *args)
