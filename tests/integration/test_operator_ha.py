"""Operator high availability: two replicas, one Lease, one reconciling, fast failover.

In: a private control plane and two operator processes with --leader-election (a 3 s
lease). Asserted: only the Lease holder reconciles; when it is SIGKILLed (no release), the
standby takes the Lease within the lease time and reconciles a change made while nobody led;
every child exists exactly once; a graceful stop hands the Lease back.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import REPO_ROOT, ControlPlane
from tests.support.operator_proc import OperatorProcess
from tests.support.operator_testkit import agent_doc, eventually, prompt_doc
from tests.support.procs import wait_until
from tests.support.tcp_proxy import Mode, TcpProxy

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


def _when(log: str, needle: str) -> datetime.datetime:
    """The time of the first log line containing ``needle`` (the operator's asctime)."""
    for line in log.splitlines():
        if needle in line:
            return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"no log line with {needle!r}:\n{log[-3000:]}")


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
def test_an_api_outage_never_leaves_two_replicas_reconciling(
    plane: ControlPlane, tmp_path: Path, outage: Mode
) -> None:
    """The leader's connection to the apiserver fails (connections reset, or silently
    hanging): it must stop reconciling before the standby can take over, and not come back
    as a second writer when the network heals."""
    server = plane.server.rsplit(":", 1)
    with TcpProxy(("127.0.0.1", int(server[1]))) as proxy:
        proxied = tmp_path / "via-proxy.kubeconfig"
        proxied.write_text(
            plane.kubeconfig.read_text().replace(plane.server, f"https://127.0.0.1:{proxy.port}")
        )
        a = OperatorProcess(plane, extra_args=[*ARGS, "--identity=op-a", f"--kubeconfig={proxied}"])
        b = OperatorProcess(plane, extra_args=[*ARGS, "--identity=op-b"])
        try:
            a.start()  # the Lease is free: the previous test's leader handed it back
            assert holder(plane) == "op-a"
            b.start(ready_when="is standby")
            namespace = f"outage-{outage}"
            plane.kubectl("create", "namespace", namespace)
            k = plane.bound(namespace)
            k.apply(prompt_doc())
            k.apply(agent_doc("one"))
            eventually(
                lambda: k("get", "configmap", "one-config", check=False).returncode == 0,
                timeout=20,
                what="the leader to reconcile",
            )
            proxy.cut(outage)
            wait_until(lambda: holder(plane) == "op-b", timeout=30, what="op-b to take over")
            assert a.process is not None
            assert a.process.popen.wait(timeout=30) == 1, "the cut-off leader exits"
            lost = _when(a.log(), "op-a lost the Lease")
            took = _when(b.log(), "op-b leads")
            assert lost < took, (lost, took)
            proxy.heal()
            k.apply(agent_doc("two"))
            eventually(
                lambda: k("get", "configmap", "two-config", check=False).returncode == 0,
                timeout=20,
                what="the new leader to reconcile",
            )
            lease = plane.kubectl_json("get", "lease", "agentspec-operator", namespace="default")
            assert lease["spec"]["holderIdentity"] == "op-b"
        finally:
            a.stop()
            b.stop()
