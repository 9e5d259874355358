"""The test control plane itself (``tests/support/control_plane.py``) and its fixtures.

Every Kubernetes test stands on these: a private etcd + kube-apiserver that starts within a
bound, serves the pinned version, leaks no process or file, and fails loudly; the session
fixture with the repo's CRDs; per-test namespaces; and kube-controller-manager on request.

The controller-manager tests use their own ControlPlane (module-scoped) rather than the session
one: once started, controllers act on everything in the cluster (they would finalize other
tests' namespaces, add ServiceAccounts and ConfigMaps to them), so sharing would make the
session plane behave differently depending on test order. The price is one extra start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import yaml

from tests.support.control_plane import (
    REPO_ROOT,
    ControlPlane,
    ControlPlaneError,
    KubectlError,
    NamespacedKubectl,
    locate_k8s_bin_dir,
    namespace_name,
)
from tests.support.procs import is_running, wait_until

pytestmark = pytest.mark.controlplane

PINNED_SERVER_VERSION = "v1.36.3"  # K8S_VERSION in scripts/build-k8s-tools.sh
START_BOUND_S = 60.0
RECONCILE_BOUND_S = 60.0
CRD_DIR = REPO_ROOT / "crds"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _all_gone(pids: list[int]) -> list[int]:
    """The PIDs from ``pids`` that are still alive (empty when all are gone)."""
    return [pid for pid in pids if is_running(pid)]


# -- a private control plane: start, serve, stop ----------------------------------------------


def test_private_control_plane_starts_within_bound_serves_and_stops_without_leaks() -> None:
    locate_k8s_bin_dir()  # a cold build of the binaries is not part of the measured start
    plane = ControlPlane(ready_timeout=START_BOUND_S)
    try:
        plane.start()
        startup = plane.startup_seconds
        print(f"etcd + kube-apiserver ready in {startup:.2f}s")
        assert startup is not None
        assert startup < START_BOUND_S, f"control plane took {startup:.1f}s to become ready"

        version = plane.kubectl_json("version")
        assert version["serverVersion"]["gitVersion"] == PINNED_SERVER_VERSION

        plane.kubectl("create", "namespace", "smoke")
        plane.kubectl(
            "create", "configmap", "greeting", "--from-literal=hello=world", namespace="smoke"
        )
        configmap = plane.kubectl_json("get", "configmap", "greeting", namespace="smoke")
        assert configmap["data"] == {"hello": "world"}

        pids = plane.pids
        tmp_dir = plane.tmp_dir
        assert len(pids) >= 2, "expected at least etcd and kube-apiserver"
        assert tmp_dir is not None
        assert tmp_dir.is_dir()
        assert plane.kubeconfig.is_relative_to(tmp_dir)
    finally:
        plane.stop()

    assert _all_gone(pids) == [], "processes outlived ControlPlane.stop()"
    assert not tmp_dir.exists()
    plane.stop()  # idempotent


def test_apiserver_that_cannot_start_fails_with_its_log_and_leaves_nothing() -> None:
    plane = ControlPlane(extra_apiserver_args=["--no-such-flag-for-agentspec"])
    with pytest.raises(ControlPlaneError, match="kube-apiserver exited during startup") as info:
        plane.start()
    # The message carries the tail of the apiserver's own log, so the cause is visible.
    assert "unknown flag: --no-such-flag-for-agentspec" in str(info.value)
    assert _all_gone(plane.pids) == []
    assert plane.tmp_dir is None


# -- the session fixtures -----------------------------------------------------------------------


def test_namespace_fixture_gives_a_fresh_namespace_and_kubectl_is_bound_to_it(
    namespace: str, kubectl: NamespacedKubectl
) -> None:
    assert kubectl.namespace == namespace
    assert kubectl.json("get", "configmaps")["items"] == []

    kubectl("create", "configmap", "probe", "--from-literal=k=v")
    configmap = kubectl.json("get", "configmap", "probe")

    assert configmap["metadata"]["namespace"] == namespace
    assert configmap["data"] == {"k": "v"}


def test_kubectl_errors_carry_kubectl_stderr(kubectl: NamespacedKubectl) -> None:
    with pytest.raises(KubectlError, match='configmaps "absent" not found'):
        kubectl("get", "configmap", "absent")
    assert kubectl("get", "configmap", "absent", check=False).returncode != 0


@pytest.mark.parametrize(
    "test_name",
    [
        "test_x",
        "test_Upper_And_Under[param-1/ÄÖ]",
        "test_" + "very_long_name_" * 10,
        "[]",
    ],
)
def test_namespace_names_are_unique_dns_labels(test_name: str) -> None:
    first, second = namespace_name(test_name), namespace_name(test_name)
    assert first != second
    for name in (first, second):
        assert len(name) <= 63
        assert _DNS_LABEL.match(name), name
        assert name.startswith("t-")


def test_session_control_plane_has_the_repo_crds_established(control_plane: ControlPlane) -> None:
    crd_names = [
        doc["metadata"]["name"]
        for path in sorted(CRD_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
    if not crd_names:
        pytest.skip(f"no CRDs in {CRD_DIR} yet")
    for name in crd_names:
        crd = control_plane.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)


# -- kube-controller-manager ------------------------------------------------------------------


@pytest.fixture(scope="module")
def managed_plane() -> Iterator[ControlPlane]:
    """A private control plane with kube-controller-manager running (see module docstring)."""
    plane = ControlPlane()
    try:
        plane.start()
        plane.start_controller_manager()
        yield plane
    finally:
        pids = plane.pids
        plane.stop()
    assert _all_gone(pids) == [], "processes outlived ControlPlane.stop()"


@pytest.fixture
def managed_ns(managed_plane: ControlPlane, request: pytest.FixtureRequest) -> NamespacedKubectl:
    name = namespace_name(request.node.name)
    managed_plane.kubectl("create", "namespace", name)
    return managed_plane.bound(name)


def _deployment(name: str, replicas: int) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # Never pulled: there is no kubelet, Pods stay Pending.
                "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]},
            },
        },
    }


def test_controller_manager_turns_a_deployment_into_a_replicaset_and_pods(
    managed_ns: NamespacedKubectl,
) -> None:
    managed_ns.apply(_deployment("web", replicas=2))

    def replicaset_with_two_pods() -> bool:
        sets = managed_ns.json("get", "replicasets", "-l", "app=web")["items"]
        pods = managed_ns.json("get", "pods", "-l", "app=web")["items"]
        owned = [
            rs
            for rs in sets
            if any(ref["kind"] == "Deployment" for ref in rs["metadata"]["ownerReferences"])
        ]
        return len(owned) == 1 and len(pods) == 2

    took = wait_until(
        replicaset_with_two_pods,
        timeout=RECONCILE_BOUND_S,
        what="Deployment -> ReplicaSet -> 2 Pods",
        interval=0.2,
    )
    print(f"Deployment reconciled into a ReplicaSet and Pods in {took:.2f}s")


def test_controller_manager_creates_service_accounts_and_their_tokens(
    managed_plane: ControlPlane, managed_ns: NamespacedKubectl
) -> None:
    wait_until(
        lambda: managed_ns("get", "serviceaccount", "default", check=False).returncode == 0,
        timeout=RECONCILE_BOUND_S,
        what="the default ServiceAccount",
        interval=0.2,
    )
    # The root-CA publisher puts our CA into every namespace.
    wait_until(
        lambda: managed_ns("get", "configmap", "kube-root-ca.crt", check=False).returncode == 0,
        timeout=RECONCILE_BOUND_S,
        what="the kube-root-ca.crt ConfigMap",
        interval=0.2,
    )
    root_ca = managed_ns.json("get", "configmap", "kube-root-ca.crt")["data"]["ca.crt"]
    assert root_ca.strip() == managed_plane.ca_cert.read_text().strip()

    # The token controller fills legacy token Secrets (signed with --service-account-private-key).
    managed_ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "default-token",
                "annotations": {"kubernetes.io/service-account.name": "default"},
            },
            "type": "kubernetes.io/service-account-token",
        }
    )
    wait_until(
        lambda: "token" in (managed_ns.json("get", "secret", "default-token").get("data") or {}),
        timeout=RECONCILE_BOUND_S,
        what="the token controller to fill the Secret",
        interval=0.2,
    )


def test_controller_manager_finishes_namespace_deletion(managed_plane: ControlPlane) -> None:
    name = namespace_name("deleted")
    managed_plane.kubectl("create", "namespace", name)
    managed_plane.kubectl("create", "configmap", "content", namespace=name)
    managed_plane.kubectl("delete", "namespace", name, "--wait=false")

    wait_until(
        lambda: managed_plane.kubectl("get", "namespace", name, check=False).returncode != 0,
        timeout=RECONCILE_BOUND_S,
        what=f"namespace {name} to be gone",
        interval=0.2,
    )


def test_controller_manager_runs_the_hpa_controller(managed_ns: NamespacedKubectl) -> None:
    managed_ns.apply(_deployment("scaled", replicas=1))
    managed_ns.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "scaled"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
                "minReplicas": 3,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        }
    )

    # No metrics server here, but the HPA enforces minReplicas before it looks at metrics.
    wait_until(
        lambda: managed_ns.json("get", "deployment", "scaled")["spec"]["replicas"] == 3,
        timeout=RECONCILE_BOUND_S,
        what="the HPA to scale the Deployment to minReplicas",
        interval=0.2,
    )
