"""The operator as a real subprocess (``agentspec operator``, through the real CLI) for tests.

Owns starting it against a control plane's kubeconfig, with fast test timings (short Stalled
retry), stopping it gracefully or with SIGKILL (restart tests), and its log for failures.
No pytest dependency: the benchmark uses it too.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .control_plane import ControlPlane
from .procs import ManagedProcess, owned_tmp_dir, start_process, wait_until

__all__ = ["OperatorProcess"]

TEST_IMAGE = "registry.local/agentspec-runtime:test"


class OperatorProcess:
    """``agentspec operator`` against ``plane``; ``start()`` returns once it watches."""

    def __init__(
        self,
        plane: ControlPlane,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        command: Sequence[str] = (sys.executable, "-m", "agentspec_runtime.cli"),
    ) -> None:
        """``command``: the ``agentspec`` CLI to run (default: this venv's)."""
        self.command = list(command)
        self.plane = plane
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.log_dir = log_dir or owned_tmp_dir("agentspec-operator-")
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("operator not started")
        return self.process.pid

    def start(
        self, *, timeout: float = 30.0, ready_when: str = "agentspec operator ready"
    ) -> OperatorProcess:
        """Start it and wait for ``ready_when`` in its log (a standby says "is standby")."""
        argv = [
            *self.command,
            "operator",
            f"--kubeconfig={self.plane.kubeconfig}",
            f"--runtime-image={TEST_IMAGE}",
            "--stalled-retry-seconds=1",
            "--log-level=INFO",
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.starts += 1
        self.process = start_process(
            "agentspec-operator",
            argv,
            log_path=self.log_dir / f"operator-{self.starts}.log",
            env=env,
        )
        process = self.process

        def started() -> bool:
            if not process.running():
                raise RuntimeError(process.describe_failure("exited during start-up"))
            # kopf logs "agentspec operator ready" once every watch stream is up.
            return ready_when in self.log()

        wait_until(started, timeout=timeout, what="operator start-up", interval=0.1)
        return self

    def log(self) -> str:
        if self.process is None:
            return ""
        try:
            return self.process.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like a node failure."""
        if self.process is not None and self.process.running():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.popen.wait()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10.0)

    def describe(self, problem: str) -> str:
        if self.process is None:
            return problem
        return self.process.describe_failure(problem, lines=60)
