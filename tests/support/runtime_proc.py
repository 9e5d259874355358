"""``agentspec runtime`` as a real child process, the way a Deployment would run it.

Owns starting the runtime with a config file or with the in-cluster environment
(``AGENT_NAME``, ``POD_NAMESPACE``, a kubeconfig instead of the service-account token),
waiting until ``/readyz`` answers, and stopping it with SIGTERM (so the drain path runs).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .procs import Managed, ManagedProcess, free_ports, start_process, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


class RuntimeProcess(Managed):
    """One agent runtime; ``base_url`` is its API, ``metrics_url`` its metrics port."""

    def __init__(
        self,
        *,
        config: Path | None = None,
        agent: str | None = None,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        command: tuple[str, ...] = (sys.executable, "-m", "agentspec_runtime.cli"),
    ) -> None:
        """``command``: the ``agentspec`` CLI to run (default: this venv's)."""
        self.command = command
        self.config = config
        self.agent = agent
        self.port, self.metrics_port = free_ports(2)
        self._env = dict(env or {})
        self._args = args
        self.process: ManagedProcess | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="agentspec-runtime-"))

    def set_env(self, **env: str) -> RuntimeProcess:
        """Add environment for the next start (ports are known before it: wire peers first)."""
        self._env.update(env)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = 20.0, wait_ready: bool = True) -> RuntimeProcess:
        argv = [
            *self.command,
            "runtime",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            *self._args,
        ]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        if self.agent is not None:
            argv += ["--agent", self.agent]
        env = {
            **os.environ,
            "AGENTSPEC_DRAIN_SECONDS": "5",
            # its own task store (SQLite) unless the test shares one; kept across restarts
            "AGENTSPEC_STATE_DIR": str(self._log_dir / "state"),
            **self._env,
        }
        self.process = start_process(
            f"runtime-{self.agent or 'agent'}",
            argv,
            env=env,
            cwd=REPO_ROOT,
            log_path=self._log_dir / "runtime.log",
        )
        if wait_ready:
            self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, *, timeout: float = 20.0) -> float:
        process = self.process
        assert process is not None

        def ready() -> bool:
            if not process.running():
                raise RuntimeError(process.describe_failure("runtime exited"))
            return self.get("/readyz")[0] == 200

        return wait_until(ready, timeout=timeout, what="runtime /readyz")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels`` on the metrics port, parsed by
        prometheus_client's own parser (label order does not matter); None when absent."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def log(self) -> str:
        return (self._log_dir / "runtime.log").read_text(errors="replace")

    def kill(self) -> None:
        """``kill -9``: no drain, no hand-back (a node lost, an OOM kill)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=10)
        self.process = None

    def terminate(self) -> None:
        """SIGTERM without waiting: the drain runs while the test watches."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, *, grace: float = 10.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return None
        self.process.stop(grace=grace)
        code = self.process.popen.returncode
        self.process = None
        return code
