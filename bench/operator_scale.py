"""Operator at scale: N AgentSpecs sharing a few PromptTemplates and McpServers.

Run: .venv/bin/python -m bench.operator_scale [N ...]   (default: 100 1000)

For each N, in a fresh private control plane (etcd + kube-apiserver, no controller manager):
apply 3 PromptTemplates, 2 McpServers and N AgentSpecs (every tenth lists agent-0000 as a
partner) with the operator stopped; start the operator and report

* time from starting the operator process until every AgentSpec has a status for its
  generation (configRevision set) and all 7 N children exist;
* operator CPU seconds and peak RSS (``/proc/<pid>/stat`` and ``VmHWM``);
* API requests the operator made per reconcile (its own counter, served on --metrics-port)
  and write requests seen by the apiserver (``apiserver_request_total``);
* steady-state CPU over 10 s of quiet afterwards;
* time from editing one shared PromptTemplate until every dependant ConfigMap carries it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import ConfigMap
from tests.support.control_plane import REPO_ROOT, ControlPlane
from tests.support.operator_proc import OperatorProcess
from tests.support.procs import free_ports

NS = "bench"
PROMPTS = 3
CHILD_KINDS = "configmaps,serviceaccounts,roles,rolebindings,services,networkpolicies,deployments"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    agents: int
    converge_seconds: float
    operator_cpu_seconds: float
    operator_cpu_system_seconds: float
    control_plane_cpu_seconds: float
    operator_peak_rss_mib: float
    reconciles: int
    operator_api_requests: int
    requests_per_reconcile: float
    apiserver_writes: int
    steady_cpu_percent: float
    prompt_edit_seconds: float
    prompt_dependants: int
    standby_cpu_seconds: float | None = None
    """With --ha: the second replica, which only watches the Lease."""
    standby_peak_rss_mib: float | None = None


def _cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _cpu_seconds(pid: int) -> float:
    return sum(_cpu_split(pid))


def _plane_cpu(plane: ControlPlane) -> float:
    total = 0.0
    for pid in plane.pids:
        with contextlib.suppress(OSError):
            total += _cpu_seconds(pid)
    return total


def _peak_rss_mib(pid: int) -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def _prompt(i: int, stable: str = "v1") -> dict[str, object]:
    return {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "PromptTemplate",
        "metadata": {"name": f"prompt-{i}", "namespace": NS},
        "spec": {
            "versions": [
                {"version": v, "template": f"You are agent type {i}, release {v}."}
                for v in ("v1", "v2")
            ],
            "release": {"stable": stable},
        },
    }


def _docs(n: int) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = [_prompt(i) for i in range(PROMPTS)]
    for i in range(2):
        docs.append(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "McpServer",
                "metadata": {"name": f"tools-{i}", "namespace": NS},
                "spec": {"url": f"http://127.0.0.1:9/mcp-{i}", "timeoutSeconds": 1},
            }
        )
    for i in range(n):
        spec: dict[str, object] = {
            "promptRef": {"name": f"prompt-{i % PROMPTS}"},
            "model": {"model": "gpt-4o-mini"},
            "mcpServers": [{"name": f"tools-{i % 2}"}],
        }
        if i % 10 == 5:
            spec["partners"] = [{"name": "agent-0000"}]
        docs.append(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "AgentSpec",
                "metadata": {"name": f"agent-{i:04d}", "namespace": NS},
                "spec": spec,
            }
        )
    return docs


def _apiserver_writes(plane: ControlPlane) -> int:
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    total = 0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and re.search(
            r'verb="(PATCH|POST|PUT|DELETE|APPLY)"', line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _operator_metric(port: int, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as rsp:
        text = rsp.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}_total ") or line.startswith(f"{name} "):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def _operator_queue_empty(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as rsp:
        text = rsp.read().decode()
    return 'agentspec_operator_queue_depth{queue="agents"} 0.0' in text


def _count_lines(plane: ControlPlane, *args: str) -> list[str]:
    out = plane.kubectl(*args, namespace=NS).stdout
    return [line for line in out.splitlines() if line.strip()]


def _all_reconciled(plane: ControlPlane, n: int) -> bool:
    revisions = _count_lines(
        plane,
        "get",
        "agentspecs",
        "-o",
        "jsonpath={range .items[*]}{.status.configRevision}{'\\n'}{end}",
    )
    if len(revisions) < n:
        return False
    children = _count_lines(plane, "get", CHILD_KINDS, "-l", "agentspec.io/agent", "-o", "name")
    return len(children) >= 7 * n


def _time_prompt_edit(plane: ControlPlane, dependants: set[str]) -> float:
    """Edit prompt-0 and follow the ConfigMaps through a watch from the current
    resourceVersion: precise, and no polling load on the apiserver."""
    client = Client(KubeConfig.from_file(plane.kubeconfig))
    listing = client.list(ConfigMap, namespace=NS, chunk_size=500)
    for _ in listing:
        pass
    start_version = listing.resourceVersion
    done = threading.Event()
    finished: list[float] = []

    def follow() -> None:
        pending = set(dependants)
        for _, cm in client.watch(ConfigMap, namespace=NS, resource_version=start_version):
            annotations = cm.metadata.annotations or {} if cm.metadata else {}
            if annotations.get("agentspec.io/prompt-version") == "v2" and cm.metadata:
                pending.discard(cm.metadata.name or "")
            if not pending:
                finished.append(time.monotonic())
                done.set()
                return

    threading.Thread(target=follow, daemon=True).start()
    edited = time.monotonic()
    plane.kubectl("apply", "-f", "-", input=json.dumps(_prompt(0, "v2")), namespace=NS)
    if not done.wait(300):
        raise TimeoutError("the prompt edit did not reach every ConfigMap in 300 s")
    return finished[0] - edited


def run(n: int, *, ha: bool = False) -> Result:
    # The fixture's /24 Service range holds ~250 Services; the last flag wins.
    extra = ["--service-cluster-ip-range=10.96.0.0/16"]
    with ControlPlane(extra_apiserver_args=extra) as plane:
        plane.apply_crds(REPO_ROOT / "crds")
        plane.kubectl("create", "namespace", NS)
        docs = _docs(n)
        plane.kubectl(
            "apply",
            "--server-side",
            "-f",
            "-",
            input="\n---\n".join(json.dumps(d) for d in docs),
            timeout=600,
        )
        (metrics_port,) = free_ports(1)
        writes_before = _apiserver_writes(plane)
        plane_cpu_before = _plane_cpu(plane)
        election = ["--leader-election", f"--lease-namespace={NS}"] if ha else []
        operator = OperatorProcess(
            plane, extra_args=[f"--metrics-port={metrics_port}", *election, "--identity=leader"]
        )
        standby = OperatorProcess(plane, extra_args=[*election, "--identity=standby"])
        started = time.monotonic()
        operator.start(timeout=120)
        if ha:
            standby.start(timeout=60, ready_when="is standby")
        try:
            # Cheap polling of the operator's own counters first; kubectl (listing thousands
            # of objects) only to confirm, so the measurement does not load the apiserver.
            while True:
                if time.monotonic() - started > 600:
                    raise TimeoutError(operator.describe("did not converge in 600 s"))
                done = _operator_metric(metrics_port, "agentspec_operator_reconciles") >= n
                if done and _operator_queue_empty(metrics_port) and _all_reconciled(plane, n):
                    break
                time.sleep(0.25)
            converge = time.monotonic() - started
            cpu = _cpu_seconds(operator.pid)
            cpu_sys = _cpu_split(operator.pid)[1]
            plane_cpu = _plane_cpu(plane) - plane_cpu_before
            reconciles = _operator_metric(metrics_port, "agentspec_operator_reconciles")
            api = _operator_metric(metrics_port, "agentspec_operator_api_requests")
            writes = _apiserver_writes(plane) - writes_before
            time.sleep(2)  # let the last status echoes settle before measuring quiet
            quiet_from = _cpu_seconds(operator.pid)
            time.sleep(10)
            steady = (_cpu_seconds(operator.pid) - quiet_from) / 10 * 100

            dependants = {f"agent-{i:04d}-config" for i in range(n) if i % PROMPTS == 0}
            prompt_edit = _time_prompt_edit(plane, dependants)
            return Result(
                agents=n,
                converge_seconds=round(converge, 2),
                operator_cpu_seconds=round(cpu, 2),
                operator_cpu_system_seconds=round(cpu_sys, 2),
                control_plane_cpu_seconds=round(plane_cpu, 2),
                operator_peak_rss_mib=round(_peak_rss_mib(operator.pid), 1),
                reconciles=reconciles,
                operator_api_requests=api,
                requests_per_reconcile=round(api / max(reconciles, 1), 2),
                apiserver_writes=writes,
                steady_cpu_percent=round(steady, 2),
                prompt_edit_seconds=round(prompt_edit, 2),
                prompt_dependants=len(dependants),
                standby_cpu_seconds=round(_cpu_seconds(standby.pid), 2) if ha else None,
                standby_peak_rss_mib=round(_peak_rss_mib(standby.pid), 1) if ha else None,
            )
        finally:
            operator.stop()
            standby.stop()


def main(argv: list[str]) -> None:
    ha = "--ha" in argv  # two replicas with leader election: the leader and a standby
    sizes = [int(a) for a in argv if a != "--ha"] or [100, 1000]
    for n in sizes:
        result = run(n, ha=ha)
        print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
