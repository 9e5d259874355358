"""End to end, as shipped: durable A2A tasks of an agent with two pods behind its Service.

In: the ``cluster`` fixture (pods of the built runtime image, the operator from the chart), a
real PostgreSQL whose URL is in a Secret that allows the agent, a real MCP server with a slow
idempotent tool, the fake LLM. The AgentSpec sets ``replicas: 2`` and ``spec.tasks``.

Asserted: a task sent (non-blocking) through the Service is answered by GetTask from each pod
and through the Service, SubscribeToTask through the Service streams it to completion, and
CancelTask through the Service stops a task whichever pod runs it; when the container running a
task is killed (SIGKILL, as an OOM kill would), the task resumes — on the other pod or the
restarted container — and completes, its idempotent tool call repeated once at most.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx

from tests.support.a2a_client import rpc, send, subscribe, task_state
from tests.support.cluster import ShippedCluster
from tests.support.control_plane import NamespacedKubectl
from tests.support.fake_llm import FakeLLM, ToolCall, Turn
from tests.support.mcp_servers import McpTestServer
from tests.support.postgres_server import PostgresServer
from tests.support.procs import wait_until

SELECTOR = "agentspec.io/agent=worker"
LEASE = 5


def worker(llm: FakeLLM) -> dict[str, Any]:
    return {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "AgentSpec",
        "metadata": {"name": "worker"},
        "spec": {
            "prompt": "You look records up.",
            "model": {"model": "gpt-4o-mini", "baseUrl": llm.base_url},
            "mcpServers": [{"name": "records"}],
            "memory": {"type": "none"},
            "tasks": {
                "storeUrlSecretRef": {"name": "task-store", "key": "url"},
                "leaseSeconds": LEASE,
            },
            "runtime": {"replicas": 2},
        },
    }


def test_tasks_are_shared_by_the_pods_behind_the_service_and_survive_a_killed_pod(
    cluster: ShippedCluster,
    cluster_ns: NamespacedKubectl,
    postgres_server: PostgresServer,
) -> None:
    kubectl, ns = cluster_ns, cluster_ns.namespace
    with McpTestServer(tools=("slow_lookup",)) as mcp, FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "e1", "seconds": 1})),
            Turn.text("record e1 is ok"),
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "e2", "seconds": 60})),
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "e3", "seconds": 3})),
            Turn.text("survived"),
        )
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "task-store",
                    "annotations": {"agentspec.io/allowed-agents": "worker"},
                },
                "stringData": {"url": postgres_server.fresh_database()},
            }
        )
        kubectl.apply(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "McpServer",
                "metadata": {"name": "records"},
                "spec": {"url": mcp.url},
            }
        )
        kubectl.apply(worker(llm))
        cluster.wait_agent_ready(kubectl, "worker")
        pods = cluster.node.wait_ready(ns, SELECTOR, count=2, timeout=60)
        ips = sorted(p["status"]["podIP"] for p in pods)
        service = cluster.service_url("worker", ns)

        # sent through the Service; read from each pod and through the Service
        task = send(service, "check e1", message_id="e2e-1", wait=False)
        for ip in ips:
            assert task_state(f"http://{ip}:8080", task["id"]) in (
                "TASK_STATE_SUBMITTED",
                "TASK_STATE_WORKING",
                "TASK_STATE_COMPLETED",
            )
        events = subscribe(service, task["id"])
        final = events[-1].get("statusUpdate") or events[-1].get("task") or {}
        assert final["status"]["state"] == "TASK_STATE_COMPLETED", events
        for ip in ips:
            assert task_state(f"http://{ip}:8080", task["id"]) == "TASK_STATE_COMPLETED"

        def running(task_id: str) -> list[str]:
            return [
                ip
                for ip in ips
                if task_id in httpx.get(f"http://{ip}:8080/status").json()["tasks"]["running"]
            ]

        # cancelled through the Service, wherever it runs
        slow = send(service, "check e2", message_id="e2e-2", wait=False)
        wait_until(lambda: mcp.calls().get("slow_lookup:e2") == 1, timeout=20, what="e2 runs")
        assert len(running(slow["id"])) == 1, "one pod runs it (so the stop below means something)"
        cancelled = rpc(service, "CancelTask", {"id": slow["id"]})["result"]
        assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
        wait_until(lambda: running(slow["id"]) == [], timeout=10, what="the cancelled run to stop")

        # the container running a task is killed: the task resumes and completes
        doomed = send(service, "check e3", message_id="e2e-3", wait=False)
        wait_until(lambda: mcp.calls().get("slow_lookup:e3") == 1, timeout=20, what="e3 runs")
        (ip,) = running(doomed["id"])
        pod = next(p["metadata"]["name"] for p in pods if p["status"]["podIP"] == ip)
        os.kill(cluster.node.container_pid(ns, pod, "agent"), signal.SIGKILL)

        def completed() -> bool:
            try:
                return task_state(service, doomed["id"]) == "TASK_STATE_COMPLETED"
            except httpx.TransportError:
                return False  # the Service still routes to the killed pod until it is unready

        wait_until(
            completed,
            timeout=LEASE + 40,
            what="the task to resume after its pod's container was killed",
        )
        assert mcp.calls()["slow_lookup:e3"] == 2
        assert mcp.calls()["slow_lookup:e1"] == 1
        llm.assert_traffic_as_scripted()
