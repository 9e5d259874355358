"""Container processes and probes: start one from an image, stop it, run a command in it.

A container is started by ``sandbox.py`` (mount namespace, overlay root, chroot, user) and
*becomes* that process, which leads its own process group. Stopping follows the runtime's
rules: SIGTERM to the container's main process, SIGKILL to all of it when the grace period
runs out. ``exec`` (exec probes, ``preStop`` exec hooks, :meth:`ContainerProcess.exec` for
tests) enters the container's namespaces with ``nsenter`` and runs as its user.

Probes (``httpGet``, ``tcpSocket``, ``exec``) follow the kubelet's semantics: success is a
2xx/3xx answer, a connection, or exit code 0, within ``timeoutSeconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.procs import die_with_parent

__all__ = ["ContainerProcess", "LaunchSpec", "probe_once", "start_container"]

Json = dict[str, Any]
SANDBOX = Path(__file__).with_name("sandbox.py")


@dataclass(frozen=True)
class LaunchSpec:
    """Everything ``sandbox.py`` needs (written to a JSON file it reads)."""

    rootfs: str
    layer_dir: str
    mounts: list[Json]
    read_only_root: bool
    hostname: str
    cwd: str
    uid: int
    gid: int
    groups: list[int]
    no_new_privs: bool
    argv: list[str]
    env: dict[str, str]

    def to_json(self) -> Json:
        return {
            "rootfs": self.rootfs,
            "layerDir": self.layer_dir,
            "mounts": self.mounts,
            "readOnlyRoot": self.read_only_root,
            "hostname": self.hostname,
            "cwd": self.cwd,
            "uid": self.uid,
            "gid": self.gid,
            "groups": self.groups,
            "noNewPrivs": self.no_new_privs,
            "argv": self.argv,
            "env": self.env,
        }


class ContainerProcess:
    """One run of a container (a restart is a new one)."""

    def __init__(self, process: asyncio.subprocess.Process, spec: LaunchSpec, log: Path) -> None:
        self.process = process
        self.spec = spec
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.returncode is None

    async def wait(self) -> int:
        return await self.process.wait()

    async def stop(self, grace: float) -> int:
        """SIGTERM the main process; SIGKILL the whole container after ``grace`` seconds."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=max(grace, 0.0))
        self.kill()
        return await self.process.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def exec(self, argv: list[str], *, seconds: float) -> tuple[int, bytes]:
        """Run ``argv`` inside the container (its root, cwd, user, hostname); (code, output)."""
        process = await asyncio.create_subprocess_exec(
            "nsenter",
            f"--target={self.pid}",
            "--mount",
            "--uts",
            "--root",
            "--wd",
            f"--setuid={self.spec.uid}",
            f"--setgid={self.spec.gid}",
            "--",
            *argv,
            env=self.spec.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return -1, b"timed out"
        return int(process.returncode or 0), output


async def start_container(spec: LaunchSpec, *, log: Path, spec_file: Path) -> ContainerProcess:
    """Start the container's process (its output appended to ``log``)."""
    spec_file.write_text(json.dumps(spec.to_json()))  # noqa: ASYNC240 - a small local file
    spec_file.chmod(0o600)  # noqa: ASYNC240
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # isolated: the helper imports nothing from the kubelet's environment
            str(SANDBOX),
            str(spec_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
        )
    return ContainerProcess(process, spec, log)


def _port(container: Json, port: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"container declares no port named {port!r}")


async def probe_once(
    probe: Json,
    *,
    container: Json,
    pod_ip: str,
    process: ContainerProcess | None,
    client: httpx.AsyncClient,
) -> tuple[bool, str]:
    """One probe; (success, what happened)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            scheme = str(get.get("scheme", "HTTP")).lower()
            host = get.get("host") or pod_ip
            url = f"{scheme}://{host}:{_port(container, get['port'])}{get.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            response = await client.get(url, headers=headers, timeout=timeout)
            ok = 200 <= response.status_code < 400
            return ok, f"HTTP probe failed with statuscode: {response.status_code}"
        if "tcpSocket" in probe:
            tcp = probe["tcpSocket"]
            port = _port(container, tcp["port"])
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(tcp.get("host") or pod_ip, port), timeout=timeout
            )
            writer.close()
            return True, ""
        if "exec" in probe:
            if process is None or not process.running():
                return False, "container is not running"
            code, output = await process.exec(list(probe["exec"]["command"]), seconds=timeout)
            return code == 0, output.decode(errors="replace")[-200:]
    except (httpx.HTTPError, OSError, TimeoutError, ValueError) as e:
        return False, f"probe failed: {e!r}"
    return False, f"unsupported probe {sorted(probe)}"
