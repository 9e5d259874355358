"""The shipped system in one test component: a cluster with the chart installed.

:class:`ShippedCluster` starts etcd + kube-apiserver + kube-controller-manager, a process
kubelet (``tests/support/kubelet``), and ``helm install``s ``charts/agentspec`` with the images
``scripts/build-images.sh`` built: the operator then runs as the chart's two pods (leader
election through its Lease, its ServiceAccount's projected token, the chart's exact args),
and every AgentSpec applied becomes pods of the built runtime image with the command line,
env and user the operator rendered. Nothing of the dev venv runs inside the cluster.

Tests get their own namespace (:meth:`namespace`) and reach an agent through its Service
(:meth:`service_url`). No pytest dependency.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .control_plane import ControlPlane, NamespacedKubectl, namespace_name
from .images import Images, locate_images
from .kubelet import ProcessKubelet
from .procs import Managed, wait_until
from .tracing import Jaeger

__all__ = ["OPERATOR_NAMESPACE", "ShippedCluster"]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "agentspec"
OPERATOR_NAMESPACE = "agentspec-system"
Json = dict[str, Any]


def image_values(prefix: str, ref: str) -> list[str]:
    repository, _, tag = ref.rpartition(":")
    return ["--set", f"{prefix}.repository={repository}", "--set", f"{prefix}.tag={tag}"]


class ShippedCluster(Managed):
    def __init__(
        self,
        *,
        images: Images | None = None,
        helm_values: list[str] | None = None,
        before_install: Callable[[ControlPlane], None] | None = None,
        extra_apiserver_args: Sequence[str] = (),
        tracing: bool = True,
    ):
        """``before_install``: runs once the control plane is up, before the chart (the
        operator looks for optional CRDs such as KEDA's when it starts). ``tracing``: a
        Jaeger v2 the agents export their spans to, set as the chart's ``otel.endpoint`` (as
        a platform team would), its query API at ``jaeger.query_url``."""
        self.images = images or locate_images()
        self.helm_values = helm_values or []
        self.before_install = before_install
        self.plane = ControlPlane(extra_apiserver_args=extra_apiserver_args)
        self.kubelet: ProcessKubelet | None = None
        self.tracing = tracing
        self._jaeger: Jaeger | None = None

    def start(self) -> ShippedCluster:
        try:
            self.plane.start()
            self.plane.start_controller_manager()
            if self.before_install is not None:
                self.before_install(self.plane)
            self.kubelet = ProcessKubelet(self.plane, images=self.images).start()
            otel: list[str] = []
            if self.tracing:
                self._jaeger = Jaeger().start()
                otel = [
                    "--set", f"otel.endpoint={self._jaeger.otlp_url}",
                    # spans leave in 200 ms batches (5 s by default): a test reads them soon
                    "--set-string", "otel.env.OTEL_BSP_SCHEDULE_DELAY=200",
                ]  # fmt: skip
            self.helm(
                "install",
                "agentspec",
                str(CHART),
                "-n",
                OPERATOR_NAMESPACE,
                "--create-namespace",
                *image_values("operator.image", self.images.operator.ref),
                *image_values("runtime.image", self.images.runtime.ref),
                *image_values("studio.image", self.images.studio.ref),
                *otel,
                *self.helm_values,
            )
            self.kubelet.wait_ready(
                OPERATOR_NAMESPACE,
                "app.kubernetes.io/name=agentspec-operator",
                count=2,
                timeout=90,
            )
            wait_until(lambda: bool(self.lease_holder()), timeout=60, what="an operator leader")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        if self._jaeger is not None:
            self._jaeger.stop()
            self._jaeger = None
        self.plane.stop()

    # --- what tests use ------------------------------------------------------------------

    @property
    def jaeger(self) -> Jaeger:
        assert self._jaeger is not None, "a cluster with tracing=True, started"
        return self._jaeger

    @property
    def node(self) -> ProcessKubelet:
        assert self.kubelet is not None, "cluster not started"
        return self.kubelet

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.plane.bin_dir / "helm"), f"--kubeconfig={self.plane.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def namespace(self, test_name: str) -> NamespacedKubectl:
        name = namespace_name(test_name)
        self.plane.kubectl("create", "namespace", name)
        return self.plane.bound(name)

    def lease_holder(self) -> str:
        lease = self.plane.kubectl(
            "get", "lease", "agentspec-operator", "-o", "jsonpath={.spec.holderIdentity}",
            namespace=OPERATOR_NAMESPACE, check=False,
        )  # fmt: skip
        return lease.stdout.strip() if lease.returncode == 0 else ""

    def operator_logs(self) -> str:
        pods = self.node.pods(OPERATOR_NAMESPACE, "app.kubernetes.io/name=agentspec-operator")
        return "\n".join(
            f"--- {p['metadata']['name']}\n"
            + self.node.container_log(OPERATOR_NAMESPACE, p["metadata"]["name"], "operator")[-6000:]
            for p in pods
        )

    def service_url(self, name: str, namespace: str, *, port: int = 8080) -> str:
        return self.node.service_url(name, namespace, port=port)

    def wait_agent_ready(
        self, kubectl: NamespacedKubectl, name: str, *, timeout: float = 90
    ) -> Json:
        """``kubectl wait --for=condition=Ready agentspec/<name>``, with the reasons on failure."""
        result = kubectl(
            "wait", "--for=condition=Ready", f"agentspec/{name}", f"--timeout={timeout:.0f}s",
            check=False,
        )  # fmt: skip
        agent = kubectl.json("get", "agentspec", name)
        if result.returncode != 0:
            pods = self.node.pods(kubectl.namespace, f"agentspec.io/agent={name}")
            logs = "\n".join(
                self.node.container_log(kubectl.namespace, p["metadata"]["name"], "agent")[-3000:]
                for p in pods
            )
            raise AssertionError(
                f"agent {name} not Ready: {agent.get('status')}\npods: "
                f"{[p.get('status') for p in pods]}\nlogs:\n{logs}\noperator:\n"
                f"{self.operator_logs()}"
            )
        return agent
