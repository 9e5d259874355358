"""A throwaway ``redis-server`` for the tests, plus the few RESP commands they need.

Owns: starting Debian's ``redis-server`` on a free loopback port with no persistence, handing
out per-test logical databases, and a minimal RESP2 client (``RespConnection``) so the fixtures
need no redis-py. The product's own Redis client is not used here on purpose: fixtures must
work even while that client is broken.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
from pathlib import Path
from types import TracebackType
from typing import TypeAlias
from urllib.parse import urlsplit

from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    free_ports,
    owned_tmp_dir,
    start_process,
    wait_until,
)

__all__ = [
    "RedisReplyError",
    "RedisServer",
    "RedisServerError",
    "RespConnection",
    "RespReply",
]

RespReply: TypeAlias = "str | bytes | int | list[RespReply] | None"
"""Simple strings decode to ``str``, bulk strings stay ``bytes``, nil is ``None``."""


class RedisServerError(RuntimeError):
    """The test Redis could not be started."""


class RedisReplyError(RuntimeError):
    """Redis answered a command with an error reply."""


class RespConnection:
    """A blocking RESP2 connection: one command, one reply. Test use only."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._reader = self._sock.makefile("rb")

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0) -> RespConnection:
        """Connect to ``redis://host:port/db`` and ``SELECT`` the db if the URL names one."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or parts.hostname is None or parts.port is None:
            raise ValueError(f"not a redis://host:port[/db] URL: {url!r}")
        conn = cls(parts.hostname, parts.port, timeout=timeout)
        db = parts.path.strip("/")
        if db:
            conn.command("SELECT", db)
        return conn

    def command(self, *args: str | bytes | int) -> RespReply:
        """Send one command and return its reply; error replies raise ``RedisReplyError``."""
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self._sock.sendall(b"".join(out))
        return self._read_reply()

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read_line(self) -> bytes:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis closed the connection mid-reply")
        return line[:-2]

    def _read_reply(self) -> RespReply:
        line = self._read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._reader.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("redis closed the connection mid-reply")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._read_reply() for _ in range(count)]
        raise ConnectionError(f"unexpected RESP reply line: {line!r}")


class RedisServer(Managed):
    """A private ``redis-server`` on a free loopback port; ``start()`` it, ``stop()`` it.

    Safe to run several at once (one per pytest-xdist worker): port and directory are unique.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        binary: str | None = None,
        databases: int = 64,
        ready_timeout: float = 20.0,
    ) -> None:
        self.databases = databases
        self._binary = binary
        self._ready_timeout = ready_timeout
        self._tmp_dir: Path | None = None
        self._process: ManagedProcess | None = None
        self._port: int | None = None
        # db 0 is never handed out: a client that drops the "/n" of its URL lands in db 0,
        # and that bug should show up as missing data, not as another test's data.
        self._db_numbers = itertools.cycle(range(1, databases))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; returns ``self``."""
        if self._process is not None:
            raise RedisServerError("RedisServer already started")
        binary = self._binary or shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server is not on PATH; run scripts/setup.sh "
                "(it installs Debian's redis-server) and retry"
            )
        self._tmp_dir = owned_tmp_dir("agentspec-redis-")
        try:
            # Another process may take the port between our probe and redis binding it.
            for attempt in range(3):
                if self._try_start(binary, attempt):
                    return self
            raise RedisServerError("redis-server kept losing its port to other processes")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the server (and anything in its process group) and remove its directory."""
        if self._process is not None:
            self._process.stop(grace=5.0)
            self._process = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    # -- what tests use ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("RedisServer not started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def url_for_db(self, db: int) -> str:
        if not 0 <= db < self.databases:
            raise ValueError(f"db {db} out of range 0..{self.databases - 1}")
        return f"{self.url}/{db}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def tmp_dir(self) -> Path | None:
        return self._tmp_dir

    def connect(self, db: int = 0) -> RespConnection:
        return RespConnection.from_url(self.url_for_db(db))

    def flush_db(self, db: int) -> None:
        with self.connect(db) as conn:
            conn.command("FLUSHDB")

    def fresh_db(self) -> int:
        """Hand out the next db number (1..databases-1, cycling) after flushing it.

        Numbers repeat only after every other db was handed out; tests in one process run one
        after another, so the flush is what isolates a reused number.
        """
        db = next(self._db_numbers)
        self.flush_db(db)
        return db

    # -- internals --------------------------------------------------------------------------

    def _try_start(self, binary: str, attempt: int) -> bool:
        assert self._tmp_dir is not None
        (port,) = free_ports(1, host=self.host)
        argv = [
            binary,
            "--port", str(port),
            "--bind", self.host,
            # Tests never need durability; skipping it keeps writes fast and the disk clean.
            "--save", "",
            "--appendonly", "no",
            "--databases", str(self.databases),
            "--dir", str(self._tmp_dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        process = start_process(
            "redis-server",
            argv,
            log_path=self._tmp_dir / f"redis-{attempt}.log",
            env=os.environ,
            cwd=self._tmp_dir,
        )
        self._process = process

        def answers_ping() -> bool:
            if not process.running():
                raise ExitedEarlyError
            try:
                with RespConnection(self.host, port, timeout=1.0) as conn:
                    return conn.command("PING") == "PONG"
            except (OSError, RedisReplyError):
                # Loading or not listening yet.
                return False

        try:
            wait_until(answers_ping, timeout=self._ready_timeout, what="redis-server PING")
        except ExitedEarlyError:
            process.stop(grace=1.0)
            self._process = None
            if "Address already in use" in process.log_tail(200):
                return False
            raise RedisServerError(process.describe_failure("exited during startup")) from None
        except TimeoutError as exc:
            raise RedisServerError(process.describe_failure(str(exc))) from None
        self._port = port
        return True
