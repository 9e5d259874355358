"""Durable A2A tasks on one replica: the request handler, the worker, the push dispatcher.

Work is not tied to the connection that brought it. ``SendMessage`` (blocking, non-blocking
or streaming) stores the task and its job in one transaction and returns (non-blocking) or
follows the task's events from the store until it settles — completed, failed, canceled,
or waiting for input — wherever it runs. The :class:`TaskWorker` of every replica leases
queued jobs, runs them on the engine with a step journal, renews the lease while it works,
and hands its jobs back at shutdown; a job whose replica died is leased again once its lease
expires, and resumes from its journal. The a2a-sdk's ``DefaultRequestHandlerV2`` answers
``GetTask``, ``ListTasks``, ``SubscribeToTask``, ``CancelTask`` and the push-config methods
from the shared store (its remote paths: this handler never parks a task in the sdk's
in-process registry); only sending a message is ours.

Push notifications are delivered from an outbox the task store fills in the same
transaction as each task event (at least once, retried with backoff, by any replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.auth.user import UnauthenticatedUser, User
from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.cluster import ConcurrentTaskModificationError, StoredTask
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event, EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.request_handler import validate, validate_request_params
from a2a.server.tasks import TaskManager
from a2a.types import (
    AgentCard,
    Message,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotFoundError,
)
from a2a.utils.task import apply_history_length, validate_history_length
from google.protobuf.json_format import MessageToDict
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind

from agentspec_runtime.adapters.sql import Database, StoreUnavailableError
from agentspec_runtime.adapters.task_queue import Delivery, Job, JobQueue, PushOutbox, StoreJournal
from agentspec_runtime.adapters.task_store import (
    INTERRUPTED,
    JOBS_CHANNEL,
    LEASE,
    TERMINAL,
    DurableEventStream,
    DurablePushConfigStore,
    DurableTaskStore,
    TaskStateError,
    create_schema,
)
from agentspec_runtime.api.inbound import consumer, hops
from agentspec_runtime.engine import telemetry as t
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import CheckpointError
from agentspec_runtime.spec.agent import TasksSpec

log = logging.getLogger(__name__)

JOURNAL = "agentspec.journal"
"""``ServerCallContext.state[JOURNAL]``: the run's ``TaskJournal`` (set by the worker)."""
SETTLED = TERMINAL | INTERRUPTED
"""A task in one of these states waits for nothing of ours."""
TRACE_HEADERS = ("traceparent", "tracestate")
POLL_SECONDS = 1.0
"""How often a worker looks for due jobs without being told (a missed notification, a lease
that expired): the resume delay after a replica died is at most lease + this."""
PUSH_MAX_ATTEMPTS = 10
PUSH_TIMEOUT = 10.0


class Consumer(User):
    """The authenticated consumer (the API key's name) as the a2a-sdk's user: the task
    store keys every task by it, so one consumer never sees another's tasks."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._name


def user_for(owner: str) -> User:
    return Consumer(owner) if owner else UnauthenticatedUser()


# --- push policy ----------------------------------------------------------------------------


class PushPolicy:
    """Where push notifications may go: the hosts in ``spec.tasks.pushAllowedHosts`` of the
    config serving now (none: push notifications are off). Checked when a URL is registered
    and again at every delivery (the list may have changed since)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def hosts(self) -> list[str]:
        snapshot = self.engine.holder.current
        return list(snapshot.config.tasks.push_allowed_hosts) if snapshot else []

    @property
    def enabled(self) -> bool:
        return bool(self.hosts())

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not host or parts.username is not None:
            return False
        for allowed in self.hosts():
            name, _, want_port = allowed.partition(":")
            if want_port and port != int(want_port):
                continue
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return True
        return False

    async def validate(self, url: str) -> bool:
        return self.allows(url)


# --- the request handler --------------------------------------------------------------------


class DurableRequestHandler(DefaultRequestHandler):
    """The sdk's handler, on the shared store, with sending a message made durable."""

    def __init__(self, service: TaskService, *, card: AgentCard) -> None:
        super().__init__(
            agent_executor=service.executor,
            task_store=service.store,
            agent_card=card,
            push_config_store=service.push_configs,
            push_url_validator=service.push.validate,
            event_stream=service.stream,
        )
        self.service = service
        self.card = card

    @validate_request_params
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task:
        stored = await self._accept(params, context)
        task = stored.task
        if not params.configuration.return_immediately and task.status.state not in SETTLED:
            async with aclosing(self._follow(stored)) as events:
                async for _ in events:
                    pass
            latest = await self.service.store.get(task.id, context)
            task = latest.task if latest is not None else task
        return apply_history_length(task, params.configuration)

    @validate_request_params
    @validate(
        lambda self: self.card.capabilities.streaming, "Streaming is not supported by the agent"
    )
    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        stored = await self._accept(params, context)
        yield apply_history_length(stored.task, params.configuration)
        if stored.task.status.state in SETTLED:
            return
        async with aclosing(self._follow(stored)) as events:
            async for event in events:
                yield event

    async def _follow(self, stored: StoredTask) -> AsyncGenerator[Event, None]:
        """The task's events after ``stored``, until it settles."""
        subscription = self.service.stream.subscribe(stored.task.id, after=stored.version)
        async with aclosing(subscription) as versions:
            async for versioned in versions:
                event = versioned.event
                yield event
                if isinstance(event, Message) or (
                    isinstance(event, Task | TaskStatusUpdateEvent)
                    and event.status.state in SETTLED
                ):
                    return

    async def _accept(self, params: SendMessageRequest, context: ServerCallContext) -> StoredTask:
        """Store the message as a new task (or the next turn of one waiting for input) and
        queue it; the same message sent again gives the task it created."""
        validate_history_length(params.configuration)
        message = params.message
        if not message.message_id:
            raise InvalidParamsError(message="message.messageId is required")
        push: TaskPushNotificationConfig | None = None
        if params.configuration.HasField("task_push_notification_config"):
            push = params.configuration.task_push_notification_config
            if not self.card.capabilities.push_notifications:
                raise PushNotificationNotSupportedError
            if not self.service.push.allows(push.url):
                raise InvalidParamsError(message="Invalid push notification URL")
        incoming: dict[str, str] = context.state.get("headers", {})
        headers = json.dumps(
            {
                "hops": hops.get(),
                "trace": {k: incoming[k] for k in TRACE_HEADERS if k in incoming},
            }
        )
        store = self.service.store
        try:
            if message.task_id:
                request = SendMessageRequest(message=message, metadata=params.metadata)
                stored, fresh = await store.continue_task(
                    message,
                    context=context,
                    request=request.SerializeToString(),
                    headers=headers,
                    push=push,
                )
            else:
                first = Message()
                first.CopyFrom(message)
                first.task_id = str(uuid.uuid4())
                first.context_id = message.context_id or str(uuid.uuid4())
                status = TaskStatus(state=TaskState.TASK_STATE_SUBMITTED)
                status.timestamp.GetCurrentTime()
                task = Task(
                    id=first.task_id, context_id=first.context_id, status=status, history=[first]
                )
                request = SendMessageRequest(message=first, metadata=params.metadata)
                stored, fresh = await store.create(
                    task,
                    context=context,
                    request=request.SerializeToString(),
                    headers=headers,
                    push=push,
                )
        except KeyError:
            raise TaskNotFoundError(f"Task {message.task_id} not found") from None
        except TaskStateError as e:
            raise InvalidParamsError(message=str(e)) from None
        except StoreUnavailableError as e:
            log.warning("agent %s: a message was refused: %s", self.service.agent, e)
            raise InternalError(message="the task store is unavailable; try again") from e
        if fresh:
            self.service.metrics.tasks.labels(self.service.agent, "queued").inc()
            self.service.worker.kick(stored.task.id)
        return stored


# --- running queued tasks ------------------------------------------------------------------


class _StoreEvents(EventQueue):
    """The executor's events applied to the stored task as they come (the sdk's TaskManager,
    on our store: compare-and-swap, fenced by the lease)."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager

    async def enqueue_event(self, event: Event) -> None:
        try:
            await self.manager.process(event)
        except StoreUnavailableError as e:
            raise CheckpointError(f"the task's state could not be saved: {e}") from e
        except ConcurrentTaskModificationError as e:  # the task moved on (cancel, takeover)
            raise CheckpointError("the task is no longer this replica's") from e


@dataclass
class _Run:
    job: Job
    task: asyncio.Task[None] | None = None
    reason: str = ""
    """Why it was stopped: cancelled, lost, handed_back."""
    journal: StoreJournal | None = None
    started: float = field(default_factory=time.monotonic)

    def stop(self, reason: str) -> None:
        if self.task is not None and not self.task.done() and not self.reason:
            self.reason = reason
            self.task.cancel()


class TaskWorker:
    """Leases queued jobs and runs them, up to ``spec.concurrency`` at once."""

    def __init__(self, service: TaskService) -> None:
        self.service = service
        self.running: dict[str, _Run] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._last_sweep = 0.0
        self._claiming = 0
        self._chores: set[asyncio.Task[None]] = set()

    @property
    def _spec(self) -> TasksSpec:
        return self.service.spec

    async def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="tasks")

    def notice(self, payload: str) -> None:
        """A notification on the jobs channel (any replica)."""
        if payload == "queued":
            self._wake.set()
        elif payload.startswith("stop:"):
            run = self.running.get(payload[5:])
            if run is not None:
                run.stop("cancelled")

    def _free(self) -> int:
        """Room for more runs: what is running and what claims in flight may start."""
        return self._spec.concurrency - len(self.running) - self._claiming

    def kick(self, task_id: str) -> None:
        """A task was just queued here: run it here when there is room, else let any
        replica have it."""
        if not self._stopping and self._free() > 0:
            self._claiming += 1  # reserved now: a burst of kicks cannot overrun
            self._background(self._claim_reserved(1, task_id=task_id))
        else:
            self._background(self._tell_others())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Start work nobody awaits, kept referenced until it ends (errors are logged)."""
        job = asyncio.get_running_loop().create_task(work)
        self._chores.add(job)
        job.add_done_callback(self._chore_done)

    def _chore_done(self, job: asyncio.Task[None]) -> None:
        self._chores.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("agent %s: task worker", self.service.agent, exc_info=job.exception())

    async def _tell_others(self) -> None:
        with contextlib.suppress(StoreUnavailableError):
            await self.service.db.notify(JOBS_CHANNEL, "queued")

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                await self._claim()
                await self._observe()
            except StoreUnavailableError as e:
                log.warning("agent %s: task store: %s", self.service.agent, e)
            except Exception:  # never let the loop die: no task would ever run again
                log.exception("agent %s: task worker", self.service.agent)

    async def _claim(self) -> None:
        free = self._free()
        if free <= 0 or self._stopping:
            return
        self._claiming += free
        await self._claim_reserved(free)

    async def _claim_reserved(self, free: int, *, task_id: str | None = None) -> None:
        """Claim up to ``free`` jobs, room the caller reserved (released here)."""
        try:
            if self._stopping:
                return
            jobs = await self.service.queue.claim(limit=free, task_id=task_id)
        except StoreUnavailableError as e:
            log.warning("agent %s: claiming tasks: %s", self.service.agent, e)
            return
        finally:
            self._claiming -= free
        for job in jobs:
            run = _Run(job)
            self.running[job.task_id] = run
            run.task = asyncio.get_running_loop().create_task(
                self._run(run), name=f"task:{job.task_id}"
            )

    async def _observe(self) -> None:
        service = self.service
        stats = await service.queue.stats()
        metrics = service.metrics
        metrics.task_queue_depth.labels(service.agent).set(stats.queued)
        metrics.task_queue_oldest.labels(service.agent).set(stats.oldest_age)
        service.last_stats = stats
        retention = float(self._spec.retention_seconds)
        now = time.monotonic()
        if now - self._last_sweep >= min(max(retention / 10, 1.0), 300.0):
            self._last_sweep = now
            removed = await service.queue.sweep(retention=retention)
            if removed:
                log.info(
                    "agent %s: %d finished tasks past retention removed", service.agent, removed
                )

    async def _run(self, run: _Run) -> None:
        service, job = self.service, run.job
        metrics = service.metrics
        metrics.tasks_running.labels(service.agent).inc()
        renewer = asyncio.get_running_loop().create_task(self._renew(run))
        try:
            end = await self._execute(run)
            if await service.queue.finish(job, status=end or "done") and end:
                metrics.tasks.labels(service.agent, end).inc()
        except asyncio.CancelledError:
            if not run.reason:
                raise
            metrics.tasks.labels(service.agent, run.reason).inc()
            if run.reason == "lost":
                await self._hand_back(job)
        except CheckpointError as e:
            metrics.tasks.labels(service.agent, "lost").inc()
            log.warning(
                "agent %s: task %s stopped: %s (it resumes from its journal)",
                service.agent,
                job.task_id,
                e,
            )
            await self._hand_back(job)
        except Exception:
            metrics.tasks.labels(service.agent, "lost").inc()
            log.exception("agent %s: task %s stopped", service.agent, job.task_id)
        finally:
            renewer.cancel()
            metrics.tasks_running.labels(service.agent).dec()
            if run.journal is not None:
                metrics.task_journal_writes.labels(service.agent).inc(run.journal.writes)
            if self.running.get(job.task_id) is run:
                del self.running[job.task_id]
            self._wake.set()  # room for another

    async def _hand_back(self, job: Job) -> None:
        """After the store failed under a run: queue the task again at once, without counting
        the run as an attempt (a database failover is not a poison task). Fenced: a no-op
        when the lease already passed to another replica. Tried while the lease would last;
        if the store stays down, the lease expires as if this replica had died."""
        deadline = time.monotonic() + self._spec.lease_seconds
        delay = 0.5
        while True:
            try:
                await self.service.queue.release(job)
                return
            except StoreUnavailableError:
                if time.monotonic() + delay >= deadline:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _renew(self, run: _Run) -> None:
        queue = self.service.queue
        lease = float(self._spec.lease_seconds)
        held_until = time.monotonic() + lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                # bounded: a renewal that hangs must not outlive the lease it renews
                if not await asyncio.wait_for(queue.renew(run.job), lease / 3):
                    run.stop("lost")
                    return
                held_until = time.monotonic() + lease
            except (StoreUnavailableError, TimeoutError):
                if time.monotonic() >= held_until:  # another replica may have it now
                    run.stop("lost")
                    return

    async def _execute(self, run: _Run) -> str | None:
        """Run the job's task on the engine; the metric event it ended with (None: nothing
        to count, the task was already settled)."""
        service, job = self.service, run.job
        lease = service.queue.lease(job)
        request = SendMessageRequest.FromString(job.request)
        meta = json.loads(job.headers)
        run.journal = StoreJournal(service.db, job.task_id, lease=lease)
        context = ServerCallContext(
            user=user_for(job.owner),
            state={LEASE: lease, JOURNAL: run.journal, "headers": meta.get("trace", {})},
        )
        manager = TaskManager(service.store, context, job.task_id, None, request.message)
        try:
            task = await manager.get_task()
        except StoreUnavailableError as e:
            raise CheckpointError(str(e)) from e
        if task is None or task.status.state in SETTLED:
            return None  # finished, or waiting for input (a new message queues it again)
        if job.attempts > self._spec.max_attempts:
            return await self._give_up(job, lease)
        service.metrics.tasks.labels(service.agent, "resumed" if job.runs > 1 else "started").inc()
        parent = propagate.extract(meta.get("trace", {}))
        links: list[Link] = []
        if job.runs > 1:  # a new trace, linked to the one that queued the task
            original = trace.get_current_span(parent).get_span_context()
            links = [Link(original)] if original.is_valid else []
            parent = otel_context.Context()
        token = otel_context.attach(parent)
        hops_token = hops.set(int(meta.get("hops", 0)))
        consumer_token = consumer.set(job.owner or None)
        try:
            with t.TRACER.start_as_current_span(
                "resume_task" if job.runs > 1 else "run_task",
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={"a2a.task.id": job.task_id, "agentspec.task.run": job.runs},
            ):
                await service.executor.execute(
                    RequestContext(
                        call_context=context,
                        request=request,
                        task_id=task.id,
                        context_id=task.context_id,
                        task=task,
                    ),
                    _StoreEvents(manager),
                )
        finally:
            consumer.reset(consumer_token)
            hops.reset(hops_token)
            otel_context.detach(token)
        final = await manager.get_task()
        state = final.status.state if final is not None else TaskState.TASK_STATE_UNSPECIFIED
        return {
            TaskState.TASK_STATE_COMPLETED: "completed",
            TaskState.TASK_STATE_FAILED: "failed",
            TaskState.TASK_STATE_CANCELED: "canceled",
            TaskState.TASK_STATE_INPUT_REQUIRED: "input_required",
            TaskState.TASK_STATE_AUTH_REQUIRED: "input_required",
        }.get(state, "done")

    async def _give_up(self, job: Job, lease: tuple[str, int]) -> str | None:
        """A poison task (its runs keep dying): failed, with a message saying so."""
        status = TaskStatus(state=TaskState.TASK_STATE_FAILED)
        status.timestamp.GetCurrentTime()
        tries = job.attempts - 1
        status.message.CopyFrom(
            new_text_message(
                f"the task was stopped: its run was interrupted {tries} times (the replica "
                "running it stopped each time)",
                task_id=job.task_id,
            )
        )
        if await self.service.store.end(job.task_id, status, lease=lease):
            log.error(
                "agent %s: task %s failed after %d interrupted runs",
                self.service.agent,
                job.task_id,
                tries,
            )
            return "poisoned"
        return None

    def stop_leasing(self) -> None:
        self._stopping = True

    async def stop(self, grace: float) -> None:
        """Stop leasing; let running tasks finish within ``grace`` seconds; hand the rest
        back at once (another replica resumes them without waiting for the lease)."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        runs = list(self.running.values())
        pending = {r.task for r in runs if r.task is not None}
        if pending:
            await asyncio.wait(pending, timeout=max(grace, 0.0))
        left = [r for r in runs if r.task is not None and not r.task.done()]
        for run in left:
            run.stop("handed_back")
        await asyncio.gather(*(r.task for r in left if r.task is not None), return_exceptions=True)
        for run in left:
            if run.reason == "handed_back":
                try:
                    await self.service.queue.release(run.job)
                except StoreUnavailableError as e:
                    log.warning(
                        "agent %s: task %s not handed back (%s): it resumes when its lease expires",
                        self.service.agent,
                        run.job.task_id,
                        e,
                    )
        if left:
            log.info("agent %s: %d running tasks handed back", self.service.agent, len(left))


# --- push notifications -------------------------------------------------------------------


class PushDispatcher:
    """Delivers the push outbox: at least once, with backoff, from any replica."""

    def __init__(self, service: TaskService, http: httpx.AsyncClient | None = None) -> None:
        self.service = service
        self.outbox = PushOutbox(service.db, holder=service.holder)
        self._http = http or httpx.AsyncClient(timeout=PUSH_TIMEOUT, follow_redirects=False)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="push")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._http.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                due = await self.outbox.next_due()
                wait = 5.0 if due is None else min(max(due - time.time(), 0.0), 5.0)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
                for delivery in await self.outbox.claim():
                    await self._deliver(delivery)
            except StoreUnavailableError as e:
                log.warning("agent %s: push outbox: %s", self.service.agent, e)
                await asyncio.sleep(POLL_SECONDS)
            except Exception:
                log.exception("agent %s: push dispatcher", self.service.agent)
                await asyncio.sleep(POLL_SECONDS)

    def _count(self, outcome: str) -> None:
        self.service.metrics.push_deliveries.labels(self.service.agent, outcome).inc()

    async def _deliver(self, delivery: Delivery) -> None:
        if not delivery.config:  # the config was deleted since
            self._count("dropped")
            await self.outbox.done(delivery)
            return
        config = TaskPushNotificationConfig.FromString(delivery.config)
        if not self.service.push.allows(config.url):
            log.warning(
                "agent %s: push for task %s not sent: its host is not in pushAllowedHosts",
                self.service.agent,
                delivery.task_id,
            )
            self._count("refused")
            await self.outbox.done(delivery)
            return
        headers: dict[str, str] = {}
        if config.token:
            headers["X-A2A-Notification-Token"] = config.token
        if config.HasField("authentication") and config.authentication.credentials:
            auth = config.authentication
            headers["Authorization"] = f"{auth.scheme or 'Bearer'} {auth.credentials}"
        body = MessageToDict(StreamResponse.FromString(delivery.event))
        try:
            response = await self._http.post(config.url, json=body, headers=headers)
            ok = 200 <= response.status_code < 300
            why = f"HTTP {response.status_code}"
        except httpx.HTTPError as e:
            ok, why = False, type(e).__name__
        if ok:
            self._count("delivered")
            await self.outbox.done(delivery)
        elif delivery.attempts >= PUSH_MAX_ATTEMPTS:
            log.error(
                "agent %s: push for task %s dropped after %d attempts (%s)",
                self.service.agent,
                delivery.task_id,
                delivery.attempts,
                why,
            )
            self._count("dropped")
            await self.outbox.done(delivery)
        else:
            self._count("retried")
            await self.outbox.retry(delivery, after=min(2.0 ** (delivery.attempts - 1), 300.0))


# --- the service --------------------------------------------------------------------------


class TaskService:
    """Durable tasks on this replica: the store, the worker, the push dispatcher."""

    def __init__(
        self,
        db: Database,
        *,
        engine: Engine,
        executor: AgentExecutor,
        spec: TasksSpec,
        holder: str,
    ) -> None:
        self.db = db
        self.engine = engine
        self.agent = engine.agent
        self.metrics = engine.metrics
        self.executor = executor
        self.spec = spec
        """Fixed for the process: the store and its leases change at a restart (the operator
        rolls the pods when they change)."""
        self.holder = holder
        self.store = DurableTaskStore(db)
        self.stream = DurableEventStream(db)
        self.push_configs = DurablePushConfigStore(db)
        self.push = PushPolicy(engine)
        self.queue = JobQueue(db, holder=holder, lease_seconds=float(spec.lease_seconds))
        self.worker = TaskWorker(self)
        self.dispatcher = PushDispatcher(self)
        self.last_stats: Any = None
        self.restart_pending = False
        """spec.tasks changed in a hot update: it applies at the next restart."""

    def _notice(self, payload: str) -> None:
        if payload == "push":
            self.dispatcher.wake()
        else:
            self.worker.notice(payload)

    async def start(self) -> None:
        await create_schema(self.db)
        await self.db.listen(JOBS_CHANNEL, self._notice)
        await self.stream.start()
        await self.worker.start()
        await self.dispatcher.start()

    async def stop(self, grace: float) -> None:
        """Stop running and delivering; the store stays open for the requests still being
        answered (the owner closes ``db`` once the servers have stopped)."""
        await self.worker.stop(grace)
        await self.dispatcher.stop()

    def status(self) -> dict[str, Any]:
        stats = self.last_stats
        return {
            "store": self.db.location,
            "shared": self.db.dialect == "postgres",
            "running": sorted(self.worker.running),
            "queued": stats.queued if stats else None,
            "leaseSeconds": self.spec.lease_seconds,
            "pushNotifications": self.push.enabled,
            "restartPending": self.restart_pending,
        }
