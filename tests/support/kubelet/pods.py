"""One pod on the node, from binding to deletion, as a kubelet runs it.

:class:`PodWorker` gives the pod an IP, writes its ``/etc/hosts``, ``/etc/hostname`` and
``/etc/resolv.conf``, sets up its volumes (retrying while a ConfigMap, Secret or token is not
there yet, as ``ContainerCreating``), starts each container from its image with the command
line, environment and user the pod spec and the image config give, runs the startup,
readiness and liveness probes, restarts containers by ``restartPolicy`` with a back-off, and
writes the pod's status (phase, conditions, podIP, containerStatuses with restart counts and
last states) the way a kubelet does. On deletion: readiness false, ``preStop`` hooks, SIGTERM,
SIGKILL when the grace period runs out, clean-up, then the final delete of the Pod object.

Deliberate differences from a kubelet (all in the node's favour of a fast test): back-off
starts at 1 s and caps at 10 s (kubelet: 10 s, 5 min); volume content refreshes every 5 s
(kubelet: about a minute). Not emulated: init and ephemeral containers, resource limits
(no cgroups), readiness gates other than by condition, ``kubectl logs/exec/port-forward``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.images import Image

from .api import STRATEGIC, ApiError, KubeApi
from .containers import ContainerProcess, LaunchSpec, probe_once, start_container
from .podspec import ContainerConfigError, Lookup, command_line, container_env, container_user
from .proxy import HostsBook
from .volumes import REFRESH_SECONDS, PodVolumes, VolumeError

__all__ = ["Node", "PodWorker"]

Json = dict[str, Any]
log = logging.getLogger("kubelet.pods")
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 1.0, 10.0, 10.0
SHIM_MOUNT = "/.process-kubelet"
SHIM_FILE = "bind_shim.so"
TERMINATION_LOG = "/dev/termination-log"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Node:
    """What every pod worker shares: the node, its clients and its registries."""

    name: str
    ip: str
    api: KubeApi
    images: dict[str, Image]
    state_dir: Path
    shim_dir: Path
    hosts: HostsBook
    kubernetes_service: tuple[str, int]
    capacity: dict[str, str]
    free_ips: list[str]
    lookup: Lookup
    services_in: Any
    """callable namespace → list of Service objects (for service-link variables)."""
    resolv_conf: str
    probe_client: httpx.AsyncClient
    workers: dict[str, PodWorker] = field(default_factory=dict)

    async def event(self, pod: Json, *, reason: str, message: str, warning: bool = False) -> None:
        meta = pod["metadata"]
        stamp = now()
        with contextlib.suppress(ApiError):
            await self.api.request(
                "POST",
                f"/api/v1/namespaces/{meta['namespace']}/events",
                body={
                    "metadata": {
                        "generateName": f"{meta['name']}.",
                        "namespace": meta["namespace"],
                    },
                    "involvedObject": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "reason": reason,
                    "message": message,
                    "type": "Warning" if warning else "Normal",
                    "source": {"component": "kubelet", "host": self.name},
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "count": 1,
                },
            )


@dataclass
class Container:
    spec: Json
    image: Image | None = None
    process: ContainerProcess | None = None
    restarts: int = 0
    created_once: bool = False
    started: bool = False
    ready: bool = False
    started_at: str | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: Json | None = None
    last_terminated: Json | None = None
    probes: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> Json:
        state: Json
        if self.process is not None and self.process.running() and self.waiting is None:
            state = {"running": {"startedAt": self.started_at}}
        elif self.waiting is not None:
            reason, message = self.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        else:
            state = {"terminated": self.terminated or {"exitCode": 0, "reason": "Completed"}}
        out: Json = {
            "name": self.name,
            "image": self.spec.get("image"),
            "imageID": f"process-kubelet://{self.image.ref}" if self.image else "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": state,
        }
        if self.process is not None:
            out["containerID"] = f"process-kubelet://{self.process.pid}"
        if self.last_terminated is not None:
            out["lastState"] = {"terminated": self.last_terminated}
        return out


class PodWorker:
    def __init__(self, node: Node, pod: Json) -> None:
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])
        self.dir = node.state_dir / "pods" / self.uid
        self.ip: str | None = None
        self.containers = [Container(c) for c in (pod.get("spec") or {}).get("containers") or []]
        self.volumes: PodVolumes | None = None
        self.sandbox_ready = False
        self.terminating = False
        self.gone = False
        self._tasks: list[asyncio.Task[None]] = []
        self._status_dirty = asyncio.Event()
        self._written: Json | None = None
        self.start_time = now()

    # --- entry points called by the kubelet ---------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._run()))
        self._tasks.append(asyncio.ensure_future(self._status_writer()))

    def update(self, pod: Json) -> None:
        self.pod = pod
        if (pod.get("metadata") or {}).get("deletionTimestamp") and not self.terminating:
            self.terminating = True
            self._tasks.append(asyncio.ensure_future(self._terminate()))

    async def vanished(self) -> None:
        """The Pod object is gone (force-deleted): stop everything now."""
        self.gone = self.terminating = True
        for c in self.containers:
            if c.process is not None:
                c.process.kill()
        await self._cleanup()

    # --- life -------------------------------------------------------------------------------

    async def _run(self) -> None:
        spec = self.pod.get("spec") or {}
        if spec.get("initContainers") or spec.get("ephemeralContainers"):
            await self._fail_all("CreateContainerConfigError", "init containers are not emulated")
            return
        self.ip = self.node.free_ips.pop(0)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_pod_files()
        self.volumes = PodVolumes(
            api=self.node.api,
            lookup=self.node.lookup,
            pod=self.pod,
            root=self.dir / "volumes",
            fs_group=((spec.get("securityContext") or {}).get("fsGroup")),
        )
        self._changed()
        while not self.terminating:
            try:
                await self.volumes.sync()
                break
            except (VolumeError, ApiError) as e:
                for c in self.containers:
                    c.waiting = ("ContainerCreating", "")
                await self.node.event(self.pod, reason="FailedMount", message=str(e), warning=True)
                await asyncio.sleep(1.0)
        if self.terminating:
            return
        self.sandbox_ready = True
        self._changed()
        for c in self.containers:
            self._tasks.append(asyncio.ensure_future(self._supervise(c)))
        self._tasks.append(asyncio.ensure_future(self._refresh_volumes()))

    def _write_pod_files(self) -> None:
        assert self.ip is not None
        hostname = str((self.pod.get("spec") or {}).get("hostname") or self.name)[:63]
        self.hostname = hostname
        (self.dir / "hostname").write_text(hostname + "\n")
        search = f"{self.namespace}.svc.cluster.local svc.cluster.local cluster.local"
        (self.dir / "resolv.conf").write_text(
            f"search {search}\n{self.node.resolv_conf}options ndots:5\n"
        )
        self.node.hosts.add_pod(
            self.dir / "hosts", namespace=self.namespace, pod_ip=self.ip, hostname=hostname
        )

    async def _refresh_volumes(self) -> None:
        assert self.volumes is not None
        while not self.terminating:
            await asyncio.sleep(REFRESH_SECONDS)
            with contextlib.suppress(VolumeError, ApiError):
                await self.volumes.sync()

    async def _launch(self, c: Container) -> ContainerProcess:
        """Raises ContainerConfigError for a spec that cannot be run (retried by the caller)."""
        assert self.ip is not None
        assert self.volumes is not None
        image = self.node.images.get(str(c.spec.get("image")))
        if image is None:
            raise _ImageMissingError(
                f'image "{c.spec.get("image")}" was not built here (scripts/build-images.sh '
                f"builds {', '.join(sorted(self.node.images))}; no registry can be reached)"
            )
        c.image = image
        env = await container_env(
            self.pod,
            c.spec,
            image,
            pod_ip=self.ip,
            node_ip=self.node.ip,
            kubernetes_service=self.node.kubernetes_service,
            namespace_services=self.node.services_in(self.namespace),
            node_capacity=self.node.capacity,
            lookup=self.node.lookup,
        )
        argv = command_line(c.spec, image, env)
        user = container_user(self.pod, c.spec, image)
        # the pod network stand-in (bind_shim.c): "every address" means this pod's IP
        env["LD_PRELOAD"] = f"{SHIM_MOUNT}/{SHIM_FILE}"
        env["PROCESS_KUBELET_POD_IP"] = self.ip
        mounts: list[Json] = [
            {"source": str(self.dir / "hosts"), "target": "/etc/hosts", "readOnly": False},
            {"source": str(self.dir / "hostname"), "target": "/etc/hostname", "readOnly": False},
            {"source": str(self.dir / "resolv.conf"), "target": "/etc/resolv.conf"},
            {"source": str(self.node.shim_dir), "target": SHIM_MOUNT, "readOnly": True},
        ]
        termination = self.dir / "termination" / c.name
        termination.parent.mkdir(exist_ok=True)
        termination.write_bytes(b"")
        termination.chmod(0o666)
        path = str(c.spec.get("terminationMessagePath") or TERMINATION_LOG)
        mounts.append({"source": str(termination), "target": path})
        for mount in c.spec.get("volumeMounts") or []:
            source = self.volumes.paths.get(str(mount["name"]))
            if source is None:
                raise ContainerConfigError(f"volumeMount {mount['name']!r}: no such volume")
            if mount.get("subPath"):
                source = source / str(mount["subPath"])
            mounts.append(
                {
                    "source": str(source),
                    "target": str(mount["mountPath"]),
                    "readOnly": bool(mount.get("readOnly")),
                }
            )
        ctx = c.spec.get("securityContext") or {}
        layer = self.dir / "containers" / c.name
        shutil.rmtree(layer, ignore_errors=True)  # a restart gets a fresh writable layer
        launch = LaunchSpec(
            rootfs=str(image.rootfs),
            layer_dir=str(layer),
            mounts=mounts,
            read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
            hostname=self.hostname,
            cwd=str(c.spec.get("workingDir") or image.working_dir or "/"),
            uid=user.uid,
            gid=user.gid,
            groups=user.groups,
            no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
            argv=argv,
            env=env,
        )
        return await start_container(
            launch, log=self.log_path(c.name), spec_file=self.dir / f"{c.name}.launch.json"
        )

    def log_path(self, container: str) -> Path:
        return self.dir / "logs" / f"{container}.log"

    async def _supervise(self, c: Container) -> None:
        backoff = BACKOFF_START
        policy = str((self.pod.get("spec") or {}).get("restartPolicy", "Always"))
        while not self.terminating:
            try:
                process = await self._launch(c)
            except _ImageMissingError as e:
                c.waiting = ("ImagePullBackOff", str(e))
                self._changed()
                await self.node.event(self.pod, reason="Failed", message=str(e), warning=True)
                await asyncio.sleep(BACKOFF_MAX)
                continue
            except (ContainerConfigError, ApiError, OSError) as e:
                c.waiting = ("CreateContainerConfigError", str(e))
                self._changed()
                await self.node.event(self.pod, reason="Failed", message=str(e), warning=True)
                await asyncio.sleep(BACKOFF_START)
                continue
            c.process, c.created_once = process, True
            c.waiting, c.terminated = None, None
            c.started_at = now()
            c.started = "startupProbe" not in c.spec
            c.ready = False
            self._changed()
            await self.node.event(self.pod, reason="Started", message=f"Started container {c.name}")
            c.probes = [asyncio.ensure_future(self._probe_loop(c, process))]
            began = asyncio.get_running_loop().time()
            code = await process.wait()
            for task in c.probes:
                task.cancel()
            c.ready = False
            c.last_terminated = c.terminated = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": c.started_at,
                "finishedAt": now(),
                **self._termination_message(c),
            }
            if self._stopping():
                self._changed()
                return
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                c.last_terminated = None
                self._changed()
                return
            if asyncio.get_running_loop().time() - began > BACKOFF_RESET:
                backoff = BACKOFF_START
            c.restarts += 1
            c.waiting = ("CrashLoopBackOff", f"back-off {backoff:.0f}s restarting {c.name}")
            self._changed()
            await self.node.event(self.pod, reason="BackOff", message=c.waiting[1], warning=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _termination_message(self, c: Container) -> Json:
        with contextlib.suppress(OSError):
            text = (self.dir / "termination" / c.name).read_text(errors="replace")[:4096]
            if text:
                return {"message": text}
        if c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self.log_path(c.name).read_text(errors="replace").splitlines()[-80:]
                return {"message": "\n".join(lines)[-2048:]}
        return {}

    async def _probe_loop(self, c: Container, process: ContainerProcess) -> None:
        """Startup probe first; then readiness and liveness side by side."""
        startup = c.spec.get("startupProbe")
        if startup is not None and not await self._probe(c, process, startup, "startup"):
            return
        c.started = True
        if "readinessProbe" not in c.spec:
            c.ready = True
        self._changed()
        await asyncio.gather(
            self._probe(c, process, c.spec.get("readinessProbe"), "readiness"),
            self._probe(c, process, c.spec.get("livenessProbe"), "liveness"),
        )

    async def _probe(
        self, c: Container, process: ContainerProcess, probe: Json | None, kind: str
    ) -> bool:
        """Runs until the container ends; True only for a startup probe that succeeded."""
        if probe is None:
            return True
        period = float(probe.get("periodSeconds", 10))
        success_needed = int(probe.get("successThreshold", 1))
        failure_limit = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        successes = failures = 0
        while process.running() and not self.terminating:
            ok, detail = await probe_once(
                probe,
                container=c.spec,
                pod_ip=self.ip or "",
                process=process,
                client=self.node.probe_client,
            )
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if kind == "readiness":
                ready = successes >= success_needed or (c.ready and failures < failure_limit)
                if ready != c.ready:
                    c.ready = ready
                    self._changed()
            elif kind == "startup" and ok:
                return True
            if not ok:
                await self.node.event(
                    self.pod,
                    reason="Unhealthy",
                    message=f"{kind.capitalize()} probe failed: {detail}",
                    warning=True,
                )
            if kind in ("liveness", "startup") and failures >= failure_limit:
                await self.node.event(
                    self.pod,
                    reason="Killing",
                    message=f"Container {c.name} failed {kind} probe, will be restarted",
                )
                grace = probe.get("terminationGracePeriodSeconds") or (
                    (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                )
                await process.stop(float(grace))
                return False
            await asyncio.sleep(period)
        return False

    # --- termination ----------------------------------------------------------------------

    def _stopping(self) -> bool:
        # a method, not the attribute: it changes while a coroutine awaits
        return self.terminating

    async def _terminate(self) -> None:
        meta = self.pod.get("metadata") or {}
        grace = float(
            meta.get("deletionGracePeriodSeconds")
            or (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        )
        deadline = asyncio.get_running_loop().time() + grace
        for c in self.containers:
            c.ready = False
        self._changed()
        running = [c for c in self.containers if c.process is not None and c.process.running()]

        async def stop(c: Container) -> None:
            assert c.process is not None
            hook = (c.spec.get("lifecycle") or {}).get("preStop")
            if hook is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._pre_stop(c, hook),
                        timeout=deadline - asyncio.get_running_loop().time(),
                    )
            await self.node.event(
                self.pod, reason="Killing", message=f"Stopping container {c.name}"
            )
            await c.process.stop(deadline - asyncio.get_running_loop().time())

        await asyncio.gather(*(stop(c) for c in running))
        await self._cleanup()
        if not self.gone:
            with contextlib.suppress(ApiError):
                await self.node.api.request(
                    "DELETE",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                    body={
                        "apiVersion": "v1",
                        "kind": "DeleteOptions",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": self.uid},
                    },
                )

    async def _pre_stop(self, c: Container, hook: Json) -> None:
        assert c.process is not None
        if "sleep" in hook:
            await asyncio.sleep(float(hook["sleep"].get("seconds", 0)))
        elif "exec" in hook:
            await c.process.exec(list(hook["exec"]["command"]), seconds=3600)
        elif "httpGet" in hook:
            await probe_once(
                {"httpGet": hook["httpGet"], "timeoutSeconds": 3600},
                container=c.spec,
                pod_ip=self.ip or "",
                process=c.process,
                client=self.node.probe_client,
            )

    async def _cleanup(self) -> None:
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for c in self.containers:
            for task in c.probes:
                task.cancel()
            if c.process is not None:
                c.process.kill()
                with contextlib.suppress(ProcessLookupError):
                    await c.process.wait()
        self.node.hosts.remove_pod(self.dir / "hosts")
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.ip is not None:
            self.node.free_ips.append(self.ip)  # reused last: stale connections die first
            self.ip = None
        self.node.workers.pop(self.uid, None)

    async def _fail_all(self, reason: str, message: str) -> None:
        for c in self.containers:
            c.waiting = (reason, message)
        self._changed()
        await self.node.event(self.pod, reason="Failed", message=message, warning=True)

    # --- status -----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._status_dirty.set()

    def _phase(self) -> str:
        policy = str((self.pod.get("spec") or {}).get("restartPolicy", "Always"))
        if not all(c.created_once for c in self.containers):
            return "Pending"
        if policy == "Always" or any(
            c.process is not None and c.process.running() for c in self.containers
        ):
            return "Running"
        if any(c.waiting is not None for c in self.containers):
            return "Running"  # a restart is pending
        failed = any((c.terminated or {}).get("exitCode", 0) != 0 for c in self.containers)
        return "Failed" if failed else "Succeeded"

    def status(self) -> Json:
        containers_ready = bool(self.containers) and all(c.ready for c in self.containers)
        gates = [
            g["conditionType"] for g in (self.pod.get("spec") or {}).get("readinessGates") or []
        ]
        known = {
            c.get("type"): c.get("status")
            for c in (self.pod.get("status") or {}).get("conditions") or []
        }
        gates_ok = all(known.get(g) == "True" for g in gates)

        def cond(kind: str, ok: bool, reason: str = "") -> Json:
            entry: Json = {"type": kind, "status": "True" if ok else "False"}
            if not ok and reason:
                entry["reason"] = reason
            return entry

        not_ready = [c.name for c in self.containers if not c.ready]
        conditions = [
            cond("PodReadyToStartContainers", self.sandbox_ready),
            cond("Initialized", True),
            cond("ContainersReady", containers_ready, "ContainersNotReady"),
            cond("Ready", containers_ready and gates_ok, "ContainersNotReady"),
        ]
        if not_ready:
            for entry in conditions[2:]:
                entry["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
        status: Json = {
            "phase": self._phase(),
            "hostIP": self.node.ip,
            "hostIPs": [{"ip": self.node.ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.ip is not None:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    async def _status_writer(self) -> None:
        """One writer per pod: the latest status wins, unchanged ones are not written."""
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            if self.gone:
                return
            status = self.status()
            if status == self._written:
                continue
            transitions = {
                c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []
            }
            stamped = []
            for entry in status["conditions"]:
                before = transitions.get(entry["type"])
                same = before is not None and before.get("status") == entry["status"]
                since = before.get("lastTransitionTime") if same and before else None
                stamped.append(
                    {**entry, "lastProbeTime": None, "lastTransitionTime": since or now()}
                )
            body = {"status": {**status, "conditions": stamped}}
            try:
                self.pod = await self.node.api.request(
                    "PATCH",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                    body=body,
                    content_type=STRATEGIC,
                )
                self._written = status
            except ApiError as e:
                if e.status == 404:
                    return
                log.warning("pod %s/%s: status write failed: %s", self.namespace, self.name, e)
                await asyncio.sleep(0.5)
                self._changed()


class _ImageMissingError(Exception):
    """The image is not among the built ones (ImagePullBackOff)."""
