"""Jaeger v2, the trace backend the Studio reads (``agentspec studio --jaeger-url``), run as a
platform team runs it for development: one ``jaeger`` process (built from the Go module proxy by
``scripts/build-tracing-tools.sh``) with in-memory storage, receiving OTLP/HTTP from the agents
and answering the query API (``/api/v3``). Every port is its own and on 127.0.0.1, so tests in
parallel each run their own. No pytest dependency.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    free_ports,
    owned_tmp_dir,
    run_script,
    start_process,
    wait_until,
)

__all__ = ["Jaeger", "locate_tracing_bin_dir"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-tracing-tools.sh"
BIN_DIR_ENV = "AGENTSPEC_TRACING_BIN"


@functools.cache
def locate_tracing_bin_dir() -> Path:
    """``$AGENTSPEC_TRACING_BIN``, else what the (idempotent, cached) build script prints."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Path(override)
    return Path(run_script(BUILD_SCRIPT).strip().splitlines()[-1])


class Jaeger(Managed):
    """``otlp_url``: where agents send spans (their ``OTEL_EXPORTER_OTLP_ENDPOINT``);
    ``query_url``: what the Studio reads (``--jaeger-url``)."""

    def __init__(self) -> None:
        self.otlp_port, self.query_port, self.grpc_port, self.health_port = free_ports(4)
        self.process: ManagedProcess | None = None
        self._dir: Path | None = None

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def config(self) -> dict[str, Any]:
        def local(port: int) -> dict[str, str]:
            return {"endpoint": f"127.0.0.1:{port}"}

        return {
            "service": {
                "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["jaeger_storage_exporter"],
                    }
                },
                "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
            },
            "extensions": {
                "healthcheckv2": {"use_v2": True, "http": local(self.health_port)},
                "jaeger_query": {
                    "storage": {"traces": "memory"},
                    "http": local(self.query_port),
                    "grpc": local(self.grpc_port),
                },
                "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 10000}}}},
            },
            "receivers": {"otlp": {"protocols": {"http": local(self.otlp_port)}}},
            "processors": {"batch": {"timeout": "100ms"}},
            "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
        }

    def start(self) -> Jaeger:
        binary = locate_tracing_bin_dir() / "jaeger"
        if not binary.is_file():
            raise RuntimeError(f"{binary} is missing (built by {BUILD_SCRIPT})")
        self._dir = owned_tmp_dir("agentspec-jaeger-")
        config = self._dir / "jaeger.yaml"
        config.write_text(yaml.safe_dump(self.config()))
        self.process = start_process(
            "jaeger",
            [str(binary), "--config", f"file:{config}"],
            log_path=self._dir / "jaeger.log",
            cwd=self._dir,
        )
        process = self.process

        def healthy() -> bool:
            if not process.running():
                raise ExitedEarlyError(process.describe_failure("exited while starting"))
            try:
                status = httpx.get(f"http://127.0.0.1:{self.health_port}/status", timeout=2)
                return (
                    status.status_code == 200
                    and httpx.get(f"{self.query_url}/api/v3/services", timeout=2).is_success
                )
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=60, what="jaeger", interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def services(self) -> list[str]:
        answer = httpx.get(f"{self.query_url}/api/v3/services", timeout=10)
        answer.raise_for_status()
        return list(answer.json().get("services") or [])
