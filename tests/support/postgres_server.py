"""A throwaway PostgreSQL server for the tests (Debian's ``postgresql`` package).

Owns: finding the server binaries (``/usr/lib/postgresql/<v>/bin``), ``initdb`` into a temp
directory owned by the ``postgres`` user (PostgreSQL refuses to run as root), starting
``postgres`` on a free loopback port with durability turned off (the data is thrown away),
and handing out a fresh database per test. The server runs as ``postgres`` and still dies
with its parent (``procs.start_process(user=...)``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    die_with_parent,
    free_ports,
    owned_tmp_dir,
    start_process,
    wait_until,
)

__all__ = ["PostgresServer", "postgres_bin_dir"]


def postgres_bin_dir() -> Path:
    """The newest installed server's ``bin`` (``scripts/setup.sh`` installs Debian's)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return versions[-1].parent


class PostgresServer(Managed):
    """As root the server runs as the ``postgres`` account (it refuses root); as anyone
    else, as that user."""

    user: str | None = "postgres" if os.getuid() == 0 else None

    def __init__(self) -> None:
        self.port = 0
        self.process: ManagedProcess | None = None
        self.dir: Path | None = None
        self._databases = 0

    def start(self) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        self.dir = owned_tmp_dir("agentspec-postgres-")
        data = self.dir / "data"
        data.mkdir()
        account = pwd.getpwnam(self.user) if self.user else pwd.getpwuid(os.getuid())
        for path in (self.dir, data):
            os.chown(path, account.pw_uid, account.pw_gid)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
            preexec_fn=die_with_parent(os.getpid(), user=self.user),
            capture_output=True,
            check=True,
        )  # fmt: skip
        (self.port,) = free_ports(1)
        argv = [
            str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=300",
        ]  # fmt: skip
        log = self.dir / "postgres.log"
        log.touch()
        os.chown(log, account.pw_uid, account.pw_gid)
        process = self.process = start_process("postgres", argv, log_path=log, user=self.user)

        def ready() -> bool:
            if not process.running():
                raise ExitedEarlyError
            return "ready to accept connections" in log.read_text(errors="replace")

        try:
            wait_until(ready, timeout=30, what="postgres to accept connections")
        except ExitedEarlyError:
            self.stop()
            raise RuntimeError(process.describe_failure("exited during start-up")) from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5.0)
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def fresh_database(self) -> str:
        """A new, empty database; its ``postgresql://`` URL."""
        self._databases += 1
        name = f"t{self._databases}"
        subprocess.run(
            [str(postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "postgres", "-c", f"CREATE DATABASE {name}"],
            capture_output=True,
            check=True,
        )  # fmt: skip
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
