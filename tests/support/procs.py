"""Process plumbing for the test components: free ports, leak-proof children, bounded waits.

Owns the rules every externally started binary follows in the tests:

* each child runs in its own session (so it is its own process-group leader and ``stop`` can
  kill the whole group, helpers included);
* each child asks the kernel for ``SIGKILL`` when its parent dies (``PR_SET_PDEATHSIG``), so
  nothing outlives a pytest run that is itself killed;
* ``stop`` is SIGTERM, a bounded grace period, then SIGKILL, and always reaps;
* no child sees an ``OPENAI_*`` variable (:data:`MODEL_ENV_PREFIX`): whatever the test
  machine's environment holds, nothing a test starts can reach a real model.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process: start
components from a thread that lives as long as they should (pytest and its xdist workers run
tests and fixtures on the main thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import inspect
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "MODEL_ENV_PREFIX",
    "ExitedEarlyError",
    "Managed",
    "ManagedProcess",
    "die_with_parent",
    "free_ports",
    "is_running",
    "owned_tmp_dir",
    "run_script",
    "start_process",
    "wait_until",
    "wait_until_async",
    "without_model_env",
]

_PR_SET_PDEATHSIG = 1

MODEL_ENV_PREFIX = "OPENAI_"
"""Variables the openai SDK and the runtime read to find a real model and its key."""


def without_model_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` minus every ``OPENAI_*`` variable."""
    return {k: v for k, v in env.items() if not k.startswith(MODEL_ENV_PREFIX)}


class Managed:
    """``with component:`` for every test component: ``start()`` on entry, ``stop()`` on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ExitedEarlyError(Exception):
    """Raised from a ``wait_until`` condition when the awaited process has already exited."""


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Resolved once in the parent: looking a symbol up between fork and exec could take locks that
# another thread of the parent held at fork time.
_PRCTL = _load_prctl()


def die_with_parent(parent_pid: int, *, user: str | None = None) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when ``parent_pid`` (its forking thread) dies;
    with ``user``, it runs as that account (switched first: a user switch clears the death
    signal)."""
    account = pwd.getpwnam(user) if user is not None else None  # looked up before the fork

    def setup() -> None:
        if account is not None:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # If the parent died between fork and prctl no death signal will ever arrive: the
        # child has been re-parented already, so give up instead of running unsupervised.
        if os.getppid() != parent_pid:
            os._exit(1)

    return setup


def rss_bytes(pid: int) -> int:
    """The resident memory of a live process (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU a live process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_ports(count: int, *, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports that were free on ``host`` a moment ago.

    All sockets stay bound until every port is picked, so one call never returns the same
    port twice. Another process may still grab a port before our child binds it; callers retry
    on "address already in use" rather than trusting this.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def is_running(pid: int) -> bool:
    """Whether ``pid`` names a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        # Without /proc (non-Linux) trust os.kill; with it, the process just went away.
        return not Path("/proc").is_dir()
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_OWNER_FILE = "owner.pid"


def owned_tmp_dir(prefix: str) -> Path:
    """A new temp directory tagged with our PID, after sweeping dead owners' leftovers.

    ``stop()`` removes its directory, but a SIGKILLed test run cannot; its children die with
    it (PDEATHSIG) and leave their data behind (etcd preallocates ~120 MB of WAL). The next
    run removes directories with this prefix whose owner is no longer alive.
    """
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((stale / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            # Not ours, or its owner is between mkdtemp and writing the tag.
            continue
        if not is_running(owner):
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    (directory / _OWNER_FILE).write_text(str(os.getpid()))
    return directory


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> float:
    """Poll ``condition`` until it is true; return the seconds it took.

    ``condition`` may raise to abort the wait early (e.g. when the awaited process died).
    Raises ``TimeoutError`` naming ``what`` once ``timeout`` seconds have passed.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float,  # noqa: ASYNC109 - the same call as wait_until
    what: str,
    interval: float = 0.05,
) -> float:
    """:func:`wait_until` for code on an event loop: sleeps without blocking the loop (the
    awaited change may need it), and ``condition`` may be a coroutine function."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        outcome = condition()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class ManagedProcess:
    """One child started by :func:`start_process`; its output goes to ``log_path``."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def describe_failure(self, problem: str, *, lines: int = 40) -> str:
        """A message for ``problem`` carrying the exit status and the tail of the log."""
        code = self.popen.poll()
        status = "still running" if code is None else f"exited with status {code}"
        return (
            f"{self.name} {problem} ({status}); last {lines} lines of {self.log_path}:\n"
            f"{self.log_tail(lines)}"
        )

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it; reap."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Even after a clean exit of the leader, helpers it forked may linger in its group.
        self._signal_group(signal.SIGKILL)
        self.popen.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        # With start_new_session the group id is the leader's pid; the group outlives the
        # leader for as long as any member does, so this still reaches stragglers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> ManagedProcess:
    """Start ``argv`` as a leak-proof child (see the module docstring), output to ``log_path``.

    ``env`` (default: this process's environment) is passed without ``OPENAI_*`` variables;
    ``user``: run as that account (as root, for servers that refuse root).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=without_model_env(os.environ if env is None else env),
            cwd=cwd,
            close_fds=True,
            start_new_session=True,
            # The hook imports nothing and takes no Python-level locks (prctl was resolved
            # before the fork), which is what makes preexec_fn risky in threaded parents.
            preexec_fn=die_with_parent(os.getpid(), user=user),  # noqa: PLW1509
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def run_script(script: Path) -> str:
    """Run one of the repo's idempotent set-up scripts (``bash script``) and return its stdout;
    raise ``RuntimeError`` with the tail of its stderr when it fails."""
    result = subprocess.run(
        ["bash", str(script)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise RuntimeError(f"{script} failed with status {result.returncode}:\n{tail}")
    return result.stdout
