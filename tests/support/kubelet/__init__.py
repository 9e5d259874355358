"""A process kubelet: real pods, from the built images, for a real control plane.

The scheduler, the kubelet and kube-proxy of a one-node cluster, as one test component
(``python -m tests.support.kubelet``, started by :class:`ProcessKubelet`), so the tests run
what ships: the Deployments the operator renders become ReplicaSets and Pods through the real
kube-controller-manager; this node binds the Pods, runs every container **from the built
image's filesystem** (``scripts/build-images.sh``) with the image's entrypoint and the pod's
exact command, args, env (``valueFrom`` included), working dir and user, mounts the projected
ServiceAccount token from the TokenRequest API at the standard path, gives each pod its own IP,
runs its probes and writes Pod status; Services get their ClusterIPs and balance over the
ready endpoints of the real EndpointSlices.

What it emulates, and how (details in each module):

* network: one host network; every pod gets an address from 198.18.0.0/16 and every Service
  listens on its ClusterIP in 198.19.0.0/16, both routed to the loopback device
  (``podnet``); a preloaded shim (``bind_shim.c``) turns a bind to "every address" into a
  bind to the pod's IP, which is what a pod network namespace gives. Names resolve through
  each pod's ``/etc/hosts`` (``proxy.HostsBook``), not a DNS server.
* containers (``sandbox.py``): overlay root over the image, private mount and UTS
  namespaces, chroot, user and groups, ``readOnlyRootFilesystem``, ``no_new_privs``.

Not emulated: NetworkPolicy, resource limits (cgroups), PID/IPC/user namespaces, seccomp and
capability sets (a non-root user has none anyway), init/ephemeral containers, headless
Services, NodePort, ``kubectl logs/exec/port-forward`` (use :meth:`ProcessKubelet.log` and
:meth:`ProcessKubelet.exec`), image pulls (only the built images exist). Needs root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.control_plane import ControlPlane
from tests.support.images import Images, locate_images
from tests.support.podnet import ensure_local_route
from tests.support.procs import Managed, ManagedProcess, owned_tmp_dir, start_process, wait_until

__all__ = ["ProcessKubelet"]

Json = dict[str, Any]
REPO_ROOT = Path(__file__).resolve().parents[3]


class ProcessKubelet(Managed):
    """The node of ``plane`` (which must run kube-controller-manager too)."""

    def __init__(
        self, plane: ControlPlane, *, images: Images | None = None, node_name: str = "node-1"
    ) -> None:
        self.plane = plane
        self.images = images or locate_images()
        self.node_name = node_name
        self.state_dir: Path | None = None
        self.process: ManagedProcess | None = None

    def start(self, *, timeout: float = 60.0) -> ProcessKubelet:
        ensure_local_route()
        self.state_dir = owned_tmp_dir("agentspec-kubelet-")
        images_json = self.state_dir / "images.json"
        images_json.write_text(json.dumps([i.to_json() for i in self.images.all()]))
        pki = self.plane.pki
        network = self.plane.network
        argv = [
            sys.executable,
            "-m",
            "tests.support.kubelet",
            f"--server={self.plane.server}",
            f"--ca={pki.ca_cert}",
            f"--cert={pki.admin_cert}",
            f"--key={pki.admin_key}",
            f"--node-name={self.node_name}",
            f"--state-dir={self.state_dir}",
            f"--images-json={images_json}",
            f"--pod-cidr={network.pod_cidr}",
            f"--kubernetes-service-ip={network.kubernetes_service_ip}",
        ]
        self.process = start_process(
            "process-kubelet", argv, log_path=self.state_dir / "kubelet.log", cwd=REPO_ROOT
        )
        process = self.process

        def ready() -> bool:
            if not process.running():
                raise RuntimeError(process.describe_failure("exited during start-up"))
            return "process kubelet" in self.log() and " ready " in self.log()

        wait_until(ready, timeout=timeout, what="the process kubelet to start")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10.0)
            self.process = None

    def log(self) -> str:
        if self.state_dir is None:
            return ""
        try:
            return (self.state_dir / "kubelet.log").read_text(errors="replace")
        except OSError:
            return ""

    # --- what tests use ------------------------------------------------------------------

    def pod(self, namespace: str, name: str) -> Json:
        return self.plane.kubectl_json("get", "pod", name, namespace=namespace)

    def pods(self, namespace: str, selector: str) -> list[Json]:
        items: list[Json] = self.plane.kubectl_json(
            "get", "pods", "-l", selector, namespace=namespace
        )["items"]
        return items

    def service_url(self, name: str, namespace: str, *, port: int = 8080) -> str:
        """``http://<ClusterIP>:<port>``: what ``<name>.<namespace>.svc`` resolves to in pods."""
        service = self.plane.kubectl_json("get", "service", name, namespace=namespace)
        return f"http://{service['spec']['clusterIP']!s}:{port}"

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        assert self.state_dir is not None
        uid = self.pod(namespace, pod)["metadata"]["uid"]
        path = self.state_dir / "pods" / str(uid) / "logs" / f"{container}.log"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def container_pid(self, namespace: str, pod: str, container: str) -> int:
        for status in self.pod(namespace, pod)["status"].get("containerStatuses") or []:
            if status["name"] == container and status.get("containerID"):
                return int(str(status["containerID"]).rsplit("/", 1)[1])
        raise LookupError(f"{namespace}/{pod} has no running container {container}")

    def exec(self, namespace: str, pod: str, container: str, *argv: str) -> str:
        """Run ``argv`` in the container's filesystem, as its user (``kubectl exec``)."""
        pid = self.container_pid(namespace, pod, container)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
        status = Path(f"/proc/{pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        gid = next(line.split()[1] for line in status.splitlines() if line.startswith("Gid:"))
        result = subprocess.run(
            ["nsenter", f"--target={pid}", "--mount", "--uts", "--root", "--wd",
             f"--setuid={uid}", f"--setgid={gid}", "--", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )  # fmt: skip
        return result.stdout

    def wait_ready(
        self, namespace: str, selector: str, *, count: int, timeout: float
    ) -> list[Json]:
        """Wait until exactly ``count`` pods match ``selector`` and all are Ready."""
        found: list[Json] = []

        def ready() -> bool:
            nonlocal found
            found = [
                p
                for p in self.pods(namespace, selector)
                if not p["metadata"].get("deletionTimestamp")
            ]
            return len(found) == count and all(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions") or []
                )
                for p in found
            )

        wait_until(
            ready,
            timeout=timeout,
            what=f"{count} ready pods {selector} in {namespace}",
            interval=0.2,
        )
        return found
