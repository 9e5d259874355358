"""Operator lifecycle with real controllers: readiness, garbage collection, crash restarts.

A private control plane runs kube-controller-manager, so Deployments become ReplicaSets and
Pods and the garbage collector acts on ownerReferences. There is no kubelet: the tests mark
Pods Ready through the status subresource the way a kubelet would, and the real ReplicaSet
and Deployment controllers compute availability from that. Asserted: ``kubectl wait
--for=condition=Ready`` on an AgentSpec, children deleted with their AgentSpec, and a batch
that converges to exactly one of each child after the operator is SIGKILLed mid-reconcile.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import pytest

from tests.support.argocd_health import health
from tests.support.control_plane import (
    REPO_ROOT,
    ControlPlane,
    NamespacedKubectl,
    namespace_name,
)
from tests.support.operator_proc import OperatorProcess
from tests.support.operator_testkit import (
    Json,
    agent_doc,
    condition,
    eventually,
    get,
    mcp_doc,
    prompt_doc,
)

# A private control plane (not the session fixture), so the marker is not added automatically.
pytestmark = pytest.mark.controlplane

CHILD_KINDS = (
    "configmap",
    "serviceaccount",
    "role",
    "rolebinding",
    "service",
    "networkpolicy",
    "deployment",
)


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.apply_crds(REPO_ROOT / "crds")
        cp.start_controller_manager()
        yield cp


@pytest.fixture(scope="module")
def operator(plane: ControlPlane) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(plane).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def k(
    plane: ControlPlane, operator: OperatorProcess, request: pytest.FixtureRequest
) -> Iterator[NamespacedKubectl]:
    name = namespace_name(request.node.name)
    plane.kubectl("create", "namespace", name)
    yield plane.bound(name)
    plane.kubectl("delete", "namespace", name, "--wait=false")


def _mark_pods_ready(k: NamespacedKubectl, agent: str) -> int:
    """What a kubelet would report for running, healthy containers."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pods = k.json("get", "pods", "-l", f"agentspec.io/agent={agent}")["items"]
    for pod in pods:
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        status = {"phase": "Running", "conditions": conditions, "startTime": now}
        k(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
    return len(pods)


def test_kubectl_wait_for_ready(k: NamespacedKubectl) -> None:
    k.apply(prompt_doc())
    k.apply(agent_doc("finance", runtime={"replicas": 2}))
    eventually(lambda: _mark_pods_ready(k, "finance") == 2, timeout=30, what="2 pods to mark")
    k("wait", "--for=condition=Ready", "agentspec/finance", "--timeout=30s")
    agent = get(k, "agentspec", "finance")
    assert agent["status"]["readyReplicas"] == 2
    assert agent["status"]["replicas"] == 2
    assert condition(agent, "Reconciling")["status"] == "False"
    assert condition(agent, "Ready")["observedGeneration"] == agent["metadata"]["generation"]
    # A new image is a rollout: not Ready until the new pods are.
    k.apply(agent_doc("finance", runtime={"replicas": 2, "image": "other:2"}))
    eventually(
        lambda: condition(get(k, "agentspec", "finance"), "Ready").get("status") == "False",
        timeout=10,
        what="Ready=False during the rollout",
    )


def test_children_are_garbage_collected_with_the_agent(k: NamespacedKubectl) -> None:
    k.apply(prompt_doc())
    k.apply(agent_doc("finance", runtime={"replicas": 2}))
    eventually(
        lambda: get(k, "agentspec", "finance").get("status", {}).get("configRevision"),
        timeout=10,
        what="reconciled",
    )
    k("delete", "agentspec", "finance", "--wait=false")

    def gone() -> bool:
        items = k.json("get", ",".join((*CHILD_KINDS, "pdb")), "-l", "agentspec.io/agent=finance")
        return not items["items"]

    eventually(gone, timeout=30, what="children garbage-collected")


def test_restart_mid_reconcile_converges_without_duplicates(
    k: NamespacedKubectl, operator: OperatorProcess
) -> None:
    count = 40
    k.apply(prompt_doc())
    operator.stop()
    docs = [agent_doc(f"agent-{i:02d}", runtime={"replicas": 2}) for i in range(count)]
    k("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    operator.start()

    def some_children() -> bool:
        return len(k.json("get", "deployments")["items"]) >= 3

    eventually(some_children, timeout=30, what="the first children", interval=0.02)
    operator.kill()
    partial = len(k.json("get", "deployments")["items"])
    operator.start()

    def converged() -> bool:
        agents = k.json("get", "agentspecs")["items"]
        return all(
            condition(a, "Stalled").get("observedGeneration") == a["metadata"]["generation"]
            and a["status"].get("configRevision")
            for a in agents
        )

    eventually(converged, timeout=60, what="every status set after the restart")
    for kind in CHILD_KINDS:
        names = [
            i["metadata"]["name"] for i in k.json("get", kind, "-l", "agentspec.io/agent")["items"]
        ]
        assert len(names) == count, (kind, partial)
        assert len(set(names)) == count
    assert len(k.json("get", "pdb")["items"]) == count
    # Each Deployment has exactly one ReplicaSet: no spurious template change on restart.
    replica_sets = k.json("get", "replicasets", "-l", "agentspec.io/agent")["items"]
    owners = [rs["metadata"]["ownerReferences"][0]["name"] for rs in replica_sets]
    assert sorted(owners) == sorted(f"agent-{i:02d}" for i in range(count))


def _when(k: NamespacedKubectl, kind: str, name: str, cond: str, status: str) -> Json:
    """The object once the operator has set condition ``cond`` to ``status``."""

    def probe() -> Json | None:
        obj = get(k, kind, name)
        return obj if condition(obj, cond).get("status") == status else None

    return eventually(probe, timeout=30, what=f"{kind}/{name} {cond}={status}")


def test_argocd_health_follows_the_real_operators_status(k: NamespacedKubectl) -> None:
    """The chart's Lua health checks on statuses this operator wrote, in each state."""
    k.apply(prompt_doc())
    k.apply(agent_doc("broken", prompt="missing"))
    status, message = health(_when(k, "agentspec", "broken", "Stalled", "True"))
    assert status == "Degraded"
    assert "PromptTemplate 'missing' not found" in message

    k.apply(agent_doc("hr"))
    assert health(_when(k, "agentspec", "hr", "Ready", "False"))[0] == "Progressing"

    eventually(lambda: _mark_pods_ready(k, "hr") == 1, timeout=30, what="the pod to mark")
    ready = _when(k, "agentspec", "hr", "Ready", "True")
    assert health(ready)[0] == "Healthy"

    stale = {
        **ready,
        "metadata": {**ready["metadata"], "generation": ready["metadata"]["generation"] + 1},
    }
    status, message = health(stale)
    assert status == "Progressing"
    assert "observe generation" in message

    assert health(_when(k, "prompttemplate", "p", "Ready", "True"))[0] == "Healthy"

    k.apply(mcp_doc("gone", "http://127.0.0.1:9/mcp"))
    unreachable = _when(k, "mcpserver", "gone", "Ready", "False")
    assert health(unreachable)[0] == "Degraded"
    assert health({**unreachable, "status": None})[0] == "Progressing"
