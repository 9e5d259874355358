"""A lean async SQL seam for the durable task store: PostgreSQL (asyncpg) or SQLite
(aiosqlite), the same statements on both.

Statements use ``?`` placeholders (rewritten to ``$1, $2 …`` for PostgreSQL). Transactions are
serialisable enough for what the store does: PostgreSQL takes row locks (``FOR UPDATE``,
``SKIP LOCKED``); SQLite has one writer at a time (``BEGIN IMMEDIATE``) and one process per
file (local mode), so it needs no row locks. Notifications (``notify``/``listen``) are
PostgreSQL ``LISTEN/NOTIFY`` across replicas, and in-process callbacks on SQLite.

Several agents may share one PostgreSQL database: each works in its own schema (``scope``,
made from its namespace and name), and its notification channels carry the same prefix.

Why not SQLAlchemy (which the a2a-sdk's own cluster store uses): importing it and the sdk's
models added 1.3 s to every agent's start-up and 20 MB to its memory; the store needs a
dozen statements.

Every driver error leaves this module as :class:`StoreUnavailableError` (``raise … from e``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from agentspec_runtime.engine.errors import AgentspecError

from .urls import public_url

__all__ = ["Connection", "Database", "StoreUnavailableError", "connect", "scope_name"]

log = logging.getLogger(__name__)
Row = Sequence[Any]
Listener = Callable[[str], None]
CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection or wait for a free one: a database gone from the network
fails requests (503) and lease renewals quickly, instead of after TCP's own timeouts."""
_SCHEMA_LOCK = 73_510_020  # pg_advisory lock key: replicas starting at once create it once
LockClause = Literal["FOR UPDATE", "FOR SHARE", "FOR UPDATE SKIP LOCKED"]
_PLACEHOLDER = re.compile(r"\?")


class StoreUnavailableError(AgentspecError):
    """The task store cannot be reached or answered with an error: retry later (503)."""

    status = 503
    code = "task_store_unavailable"


class Connection(Protocol):
    """What a statement runs on: the database itself, or one transaction of it."""

    async def execute(self, sql: str, *args: Any) -> int: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...


class Database:
    """A connection pool (PostgreSQL) or one connection (SQLite) behind one interface."""

    dialect: Literal["postgres", "sqlite"]
    location: str

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.transaction() as tx:
            return await tx.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self.transaction() as tx:
            return await tx.fetchrow(sql, *args)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    def rows_locked(self, clause: LockClause) -> str:
        """A row-locking clause to append to a SELECT on PostgreSQL; nothing on SQLite,
        whose transactions (``BEGIN IMMEDIATE``) already exclude every other writer."""
        return f" {clause}" if self.dialect == "postgres" else ""

    async def notify(self, channel: str, payload: str) -> None:
        raise NotImplementedError

    async def listen(self, channel: str, listener: Listener) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def scope_name(namespace: str, agent: str) -> str:
    """A PostgreSQL schema (and channel prefix) for one agent: readable, at most 50 bytes
    (a channel, ``<scope>.<name>``, must fit PostgreSQL's 63), and distinct for distinct
    agents: the readable part folds characters (``team-a``/``bot`` and ``team``/``a-bot``
    read alike), so a hash of the exact namespace and name always follows it."""
    readable = re.sub(r"[^a-z0-9_]", "_", f"agentspec_{namespace}_{agent}".lower())[:41]
    return f"{readable}_{hashlib.sha256(f'{namespace}/{agent}'.encode()).hexdigest()[:8]}"


async def connect(url: str, *, scope: str = "agentspec", pool_size: int = 10) -> Database:
    """``postgresql://…`` (tables in the schema ``scope``), or ``sqlite:///absolute/path``
    (``sqlite://:memory:`` for tests)."""
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        return await _Postgres.connect(url, scope=scope, pool_size=pool_size)
    if scheme == "sqlite":
        return await _Sqlite.connect(url)
    raise StoreUnavailableError(f"unsupported task store URL scheme {scheme!r}")


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg(sql: str) -> str:
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


class _PgConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._conn.execute(_pg(sql), *args)
        except Exception as e:
            raise _translate(e) from e
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return list(await self._conn.fetch(_pg(sql), *args))
        except Exception as e:
            raise _translate(e) from e

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            row: Row | None = await self._conn.fetchrow(_pg(sql), *args)
        except Exception as e:
            raise _translate(e) from e
        return row


def _translate(error: Exception) -> StoreUnavailableError:
    """The engine's error, naming only the kind of failure: the driver's text may quote the
    row it failed on, and a handler may pass this message to a caller. The text goes to the
    log here, once, where operators look."""
    log.warning("the task store failed: %s: %s", type(error).__name__, error)
    return StoreUnavailableError(f"the task store failed ({type(error).__name__})")


class _Postgres(Database):
    dialect: Literal["postgres", "sqlite"] = "postgres"

    def __init__(self, pool: Any, *, location: str, url: str, scope: str) -> None:
        self._pool = pool
        self._url = url
        self._scope = scope
        self.location = location
        self._listen_conn: Any = None
        self._listen_lock = asyncio.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        self._listening: set[str] = set()  # channels the connection LISTENs on
        self._relistening: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def connect(cls, url: str, *, scope: str, pool_size: int) -> _Postgres:
        import asyncpg  # imported only by agents whose tasks live in PostgreSQL

        dsn = url.replace("postgres://", "postgresql://", 1)
        try:
            # min_size 0: no connection is opened here, so a database that is down now
            # fails requests (503) until it is back, not the agent's start
            pool = await asyncpg.create_pool(
                dsn,
                min_size=0,
                max_size=pool_size,
                server_settings={"search_path": scope},
                command_timeout=30,
                timeout=CONNECT_TIMEOUT,
            )
        except Exception as e:
            raise StoreUnavailableError(
                f"cannot connect to the task store {public_url(dsn)}: {type(e).__name__}"
            ) from e
        db = cls(pool, location=public_url(dsn), url=dsn, scope=scope)
        try:
            async with db.transaction() as tx:
                # replicas starting together: CREATE SCHEMA IF NOT EXISTS is not atomic
                await tx.execute("SELECT pg_advisory_xact_lock(?)", _SCHEMA_LOCK)
                await tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{scope}"')
        except BaseException:
            await db.close()
            raise
        return db

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        try:
            conn = await self._pool.acquire(timeout=CONNECT_TIMEOUT)
        except Exception as e:
            raise _translate(e) from e
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                yield _PgConnection(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except Exception as e:
                raise _translate(e) from e
        finally:
            await self._pool.release(conn)

    async def notify(self, channel: str, payload: str) -> None:
        await self.execute("SELECT pg_notify(?, ?)", f"{self._scope}.{channel}", payload)

    async def listen(self, channel: str, listener: Listener) -> None:
        """Call ``listener`` with each notification on ``channel``. The connection that
        listens is reopened when it breaks; notifications sent meanwhile are lost, so every
        listener also polls now and then."""
        self._listeners.setdefault(channel, []).append(listener)
        await self._ensure_listening()

    async def _ensure_listening(self) -> None:
        """One connection LISTENs on every channel with a listener: opened (or reopened)
        when missing, and told about channels added since."""
        import asyncpg

        async with self._listen_lock:
            conn = self._listen_conn
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
                    conn.add_termination_listener(self._lost)
                    self._listen_conn, self._listening = conn, set()
                for channel in set(self._listeners) - self._listening:
                    await conn.add_listener(f"{self._scope}.{channel}", self._dispatch)
                    self._listening.add(channel)
            except Exception as e:
                if conn is not None:  # half set up: start over next time
                    self._listen_conn = None
                    with contextlib.suppress(Exception):
                        await conn.close()
                raise _translate(e) from e

    def _dispatch(self, _conn: Any, _pid: int, name: str, payload: str) -> None:
        for callback in list(self._listeners.get(name.removeprefix(f"{self._scope}."), ())):
            callback(payload)

    def _lost(self, _conn: Any) -> None:
        if self._closed:
            return
        log.warning("the task store's notification connection was lost; reconnecting")
        if self._relistening is None or self._relistening.done():
            self._relistening = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                await self._ensure_listening()
                return
            except StoreUnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        self._closed = True
        if self._listen_conn is not None:
            conn, self._listen_conn = self._listen_conn, None
            with contextlib.suppress(Exception):
                await conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pool.close(), 5)


# --- SQLite ---------------------------------------------------------------------------------


class _SqliteConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            cursor = await self._conn.execute(sql, args)
        except Exception as e:
            raise _translate(e) from e
        count: int = cursor.rowcount
        await cursor.close()
        return count

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            cursor = await self._conn.execute(sql, args)
            rows = list(await cursor.fetchall())
        except Exception as e:
            raise _translate(e) from e
        await cursor.close()
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class _Sqlite(Database):
    dialect: Literal["postgres", "sqlite"] = "sqlite"

    def __init__(self, conn: Any, *, location: str) -> None:
        self._conn = conn
        self.location = location
        self._lock = asyncio.Lock()
        self._listeners: dict[str, list[Listener]] = {}

    @classmethod
    async def connect(cls, url: str) -> _Sqlite:
        import aiosqlite

        path = url.removeprefix("sqlite://")  # sqlite:///var/x.db -> /var/x.db
        if path in ("", ":memory:", "/:memory:"):
            path = ":memory:"
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=5000")
        except Exception as e:
            raise StoreUnavailableError(f"cannot open the task store {path}: {e}") from e
        return cls(conn, location=f"sqlite:{path}")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            # aiosqlite runs each statement in its thread even when the awaiting task is
            # cancelled: a BEGIN or COMMIT whose caller was cancelled may still have opened
            # (or failed to close) a transaction. Never start inside one left behind.
            if self._conn.in_transaction:
                await self._rollback()
            try:
                await self._statement("BEGIN IMMEDIATE")
                yield _SqliteConnection(self._conn)
                await self._statement("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    async def _statement(self, sql: str) -> None:
        try:
            await self._conn.execute(sql)
        except Exception as e:
            raise _translate(e) from e

    async def _rollback(self) -> None:
        """Roll back whatever is open, even while the caller is being cancelled."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._conn.execute("ROLLBACK"))

    async def notify(self, channel: str, payload: str) -> None:
        for callback in list(self._listeners.get(channel, ())):
            callback(payload)

    async def listen(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._conn.close()
