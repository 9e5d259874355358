"""The Redis fixtures (``redis_server``, ``redis_url``) and ``tests/support/redis_server.py``.

Tests that use Redis rely on three promises checked here: a real server answers on the URL,
each test's db starts empty whatever earlier tests wrote, and ``stop()`` leaves nothing behind.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.procs import is_running
from tests.support.redis_server import (
    RedisReplyError,
    RedisServer,
    RedisServerError,
    RespConnection,
)


def test_redis_url_answers_ping_set_get_on_its_own_db(redis_url: str) -> None:
    db = int(urlsplit(redis_url).path.strip("/"))
    assert db != 0, "db 0 is kept out of circulation"

    with RespConnection.from_url(redis_url) as conn:
        assert conn.command("PING") == "PONG"
        assert conn.command("DBSIZE") == 0
        assert conn.command("SET", "greeting", "hello") == "OK"
        assert conn.command("GET", "greeting") == b"hello"
        assert conn.command("GET", "absent") is None
        assert conn.command("DBSIZE") == 1
        with pytest.raises(RedisReplyError, match="unknown command"):
            conn.command("NO-SUCH-COMMAND")


@pytest.mark.parametrize("writer", ["first", "second"])
def test_tests_do_not_see_each_others_keys(redis_url: str, writer: str) -> None:
    # Whichever of the two runs later would find the other's key if dbs leaked between tests.
    with RespConnection.from_url(redis_url) as conn:
        assert conn.command("KEYS", "*") == []
        assert conn.command("SET", f"written-by-{writer}", "1") == "OK"


def test_fresh_dbs_are_distinct_and_a_reused_number_is_flushed() -> None:
    # Three databases: numbers 1 and 2 are handed out, so the third call reuses 1.
    with RedisServer(databases=3) as server:
        first, second = server.fresh_db(), server.fresh_db()
        assert first != second
        with server.connect(first) as conn:
            conn.command("SET", "only-in-first", "1")
        with server.connect(second) as conn:
            assert conn.command("EXISTS", "only-in-first") == 0

        reused = server.fresh_db()
        assert reused == first
        with server.connect(reused) as conn:
            assert conn.command("DBSIZE") == 0


def test_stop_leaves_no_process_and_no_directory() -> None:
    server = RedisServer().start()
    pid, tmp_dir, port = server.pid, server.tmp_dir, server.port
    assert pid is not None
    assert tmp_dir is not None
    assert is_running(pid)

    server.stop()

    assert not is_running(pid)
    assert not tmp_dir.exists()
    with pytest.raises(ConnectionRefusedError):
        RespConnection(RedisServer.host, port, timeout=1.0)
    server.stop()  # idempotent


def test_start_sweeps_directories_left_by_a_killed_run() -> None:
    # A run killed with SIGKILL cannot remove its directory; the next start does, once the
    # owner recorded in it is dead.
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale = Path(tempfile.mkdtemp(prefix="agentspec-redis-"))
    (stale / "owner.pid").write_text(str(finished.pid))
    foreign = Path(tempfile.mkdtemp(prefix="agentspec-redis-"))  # no owner tag: left alone
    try:
        with RedisServer() as server:
            assert not stale.exists()
            assert foreign.exists()
            assert server.tmp_dir is not None
            assert server.tmp_dir.exists()
    finally:
        foreign.rmdir()


def test_missing_redis_server_binary_points_at_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RedisServerError, match=r"scripts/setup\.sh"):
        RedisServer().start()
