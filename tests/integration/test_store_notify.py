"""The task store's database adapter: notifications and transactions under cancellation.

In: the runtime's ``Database`` adapter over a real PostgreSQL server and over SQLite.
Asserted: a listener gets every channel's notifications, including a channel listened to
after the connection was opened (workers listen to the jobs channel at start, a follower to
the task channel later: that one was once missed, leaving every follower on its 1 s poll);
after the listening connection is killed by the server, notifications arrive again. SQLite:
callers cancelled at any point of a transaction (a client gone, a cancelled task) leave the
store usable (a BEGIN finishing after its caller was cancelled once left the connection in a
transaction for good: every later write failed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentspec_runtime.adapters.sql import Database, connect

pytestmark = pytest.mark.timeout(60)


async def _heard(db: Database, channel: str, payload: str, inbox: asyncio.Queue[str]) -> None:
    """Notify until the payload arrives (a notification sent while the listening connection
    is being reopened is lost by design), at most 10 s."""
    for _ in range(100):
        await db.notify(channel, payload)
        try:
            got = await asyncio.wait_for(inbox.get(), 0.1)
        except TimeoutError:
            continue
        assert got == payload
        return
    raise AssertionError(f"no notification on {channel!r}")


async def test_postgres_listens_on_channels_added_later_and_after_reconnect(
    postgres_url: str,
) -> None:
    db = await connect(postgres_url, scope="agentspec_t_notify")
    other = await connect(postgres_url, scope="agentspec_t_notify")  # another replica
    try:
        jobs: asyncio.Queue[str] = asyncio.Queue()
        task: asyncio.Queue[str] = asyncio.Queue()
        await db.listen("jobs", jobs.put_nowait)
        await db.listen("task", task.put_nowait)  # the connection is already open
        await other.notify("task", "t1")
        assert await asyncio.wait_for(task.get(), 5) == "t1"
        await other.notify("jobs", "queued")
        assert await asyncio.wait_for(jobs.get(), 5) == "queued"
        assert task.empty(), "a notification reached the wrong channel"

        # the server drops the listening connection: it is reopened on every channel
        killed = await other.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        assert killed, "no listening connection found"
        assert all(row[0] for row in killed), "a listening connection survived"
        await _heard(other, "task", "t2", task)
        await _heard(other, "jobs", "again", jobs)
    finally:
        await db.close()
        await other.close()


async def test_sqlite_notifies_in_process(tmp_path: Path) -> None:
    db = await connect(f"sqlite://{tmp_path / 'tasks.db'}")
    try:
        got: list[tuple[str, str]] = []
        await db.listen("jobs", lambda p: got.append(("jobs", p)))
        await db.listen("task", lambda p: got.append(("task", p)))
        await db.notify("task", "t1")
        await db.notify("jobs", "queued")
        assert got == [("task", "t1"), ("jobs", "queued")]
    finally:
        await db.close()


async def test_sqlite_stays_usable_after_cancelled_transactions(tmp_path: Path) -> None:
    db = await connect(f"sqlite://{tmp_path / 'tasks.db'}")
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")

        async def writer() -> None:
            while True:
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO t VALUES (1)")

        async def reader() -> None:
            while True:
                await db.fetch("SELECT x FROM t")

        for delay in (0, 0, 0.0001, 0.0005, 0.001, 0.005):
            for work in (writer, reader):
                task = asyncio.create_task(work())
                await asyncio.sleep(delay)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await asyncio.wait_for(db.execute("INSERT INTO t VALUES (2)"), 5)
        rows = await db.fetch("SELECT COUNT(*) FROM t WHERE x = 2")
        assert rows[0][0] == 12
    finally:
        await db.close()
