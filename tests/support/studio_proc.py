"""``agentspec studio`` as a user runs it: a child process on a free loopback port, with a
kubeconfig (the tests' admin one, or a broken one), or on a folder of spec files."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import httpx

from .procs import Managed, ManagedProcess, free_ports, start_process, wait_until


class StudioProcess(Managed):
    def __init__(
        self,
        *,
        kubeconfig: Path | None = None,
        folder: Path | None = None,
        context: str | None = None,
        command: tuple[str, ...] = (sys.executable, "-m", "agentspec_runtime.cli"),
        args: tuple[str, ...] = (),
    ) -> None:
        """``command``: the ``agentspec`` CLI to run (default: this venv's); ``args``: more
        flags (``--prometheus-url``, ``--prices``)."""
        self.command = command
        self.args = args
        self.kubeconfig = kubeconfig
        self.folder = folder
        self.context = context
        (self.port,) = free_ports(1)
        self.process: ManagedProcess | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="agentspec-studio-"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> StudioProcess:
        argv = [*self.command, "studio", "--port", str(self.port)]
        if self.folder is not None:
            argv.append(str(self.folder))
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            argv += ["--context", self.context]
        argv += self.args
        process = start_process(
            "studio", argv, log_path=self._log_dir / "studio.log", env=dict(os.environ)
        )
        self.process = process

        def up() -> bool:
            if not process.running():
                raise RuntimeError(process.describe_failure("studio exited"))
            try:
                httpx.get(f"{self.base_url}/api/health", timeout=2)
            except httpx.HTTPError:
                return False
            return True

        wait_until(up, timeout=timeout, what="agentspec studio to listen")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)
            self.process = None

    def log(self) -> str:
        return "" if self.process is None else self.process.log_tail(80)


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig whose cluster nobody listens for (port 9 on this machine)."""
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path
