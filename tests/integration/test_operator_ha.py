"""Operator high availability: two replicas, one Lease, one reconciling, fast failover.

In: a private control plane and two operator processes with --leader-election (a 3 s
lease). Asserted: only the Lease holder reconciles; when it is SIGKILLed (no release), the
standby takes the Lease within the lease time and reconciles a change made while nobody led;
every child exists exactly once; a graceful stop hands the Lease back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.control_plane import REPO_ROOT, ControlPlane
from tests.support.operator_proc import OperatorProcess
from tests.support.operator_testkit import agent_doc, eventually, prompt_doc

pytestmark = pytest.mark.controlplane
LEASE_SECONDS = 3
ARGS = ["--leader-election", f"--lease-seconds={LEASE_SECONDS}", "--lease-namespace=default"]


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.apply_crds(REPO_ROOT / "crds")
        yield cp


def holder(plane: ControlPlane) -> str:
    lease = plane.kubectl_json("get", "lease", "agentspec-operator", namespace="default")
    value: str = lease["spec"].get("holderIdentity") or ""
    return value


def test_one_leader_and_failover_without_duplicates(plane: ControlPlane) -> None:
    a = OperatorProcess(plane, extra_args=[*ARGS, "--identity=op-a"]).start()
    b = OperatorProcess(plane, extra_args=[*ARGS, "--identity=op-b"])
    try:
        b.start(ready_when="is standby")
        assert holder(plane) == "op-a"
        plane.kubectl("create", "namespace", "ha")
        k = plane.bound("ha")
        k.apply(prompt_doc())
        k.apply(agent_doc("one"))
        eventually(
            lambda: k("get", "configmap", "one-config", check=False).returncode == 0,
            timeout=20,
            what="the leader to reconcile",
        )
        assert "agentspec operator ready" not in b.log(), "the standby must not reconcile"

        a.kill()  # no graceful release: the standby has to wait for the lease to expire
        killed = time.monotonic()
        k.apply(agent_doc("two"))  # a change while nobody leads
        eventually(
            lambda: k("get", "configmap", "two-config", check=False).returncode == 0,
            timeout=30,
            what="the standby to take over and reconcile",
        )
        took = time.monotonic() - killed
        assert took < LEASE_SECONDS * 3, f"failover took {took:.1f}s"
        assert holder(plane) == "op-b"
        lease = plane.kubectl_json("get", "lease", "agentspec-operator", namespace="default")
        assert lease["spec"]["leaseTransitions"] == 1
        for kind in ("deployment", "configmap", "service", "role"):
            names = k("get", kind, "-o", "name").stdout.split()
            assert len(names) == len(set(names)) == 2, (kind, names)
        b.stop()
        assert holder(plane) == "", "a graceful stop hands the Lease back"
    finally:
        a.stop()
        b.stop()
