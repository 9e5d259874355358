"""End to end, as shipped: an agent scaled to three pods, balanced by its Service, and a
prompt change reaching every replica under load with no failed request and no restart.

In: the ``cluster`` fixture (pods of the built runtime image run by the process kubelet, the
operator running as the chart's pods); one AgentSpec on a two-version PromptTemplate; the fake
LLM answering with the system prompt it got (so every answer shows the version that served it).

Asserted: three replicas are three processes with three pod IPs; connections to the Service
reach all three; while streamed requests keep arriving through the Service, moving the
PromptTemplate's stable version reaches every replica within seconds, no request fails, each
answer matches the version it reports, and no pod restarts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.support.cluster import ShippedCluster
from tests.support.control_plane import NamespacedKubectl
from tests.support.fake_llm import ChatRequest, FakeLLM, Turn
from tests.support.operator_testkit import prompt_doc
from tests.support.procs import wait_until, wait_until_async
from tests.support.streaming import stream_chat

SELECTOR = "agentspec.io/agent=assistant"


def system_prompt_echo(request: ChatRequest) -> Turn:
    return Turn.text(request.system_prompt or "").with_latency(first_byte=0.02, per_chunk=0.01)


def assistant(llm: FakeLLM) -> dict[str, object]:
    return {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "AgentSpec",
        "metadata": {"name": "assistant"},
        "spec": {
            "promptRef": {"name": "p"},
            "model": {"model": "gpt-4o-mini", "baseUrl": llm.base_url},
            "memory": {"type": "none"},
        },
    }


def prompt(stable: str) -> dict[str, Any]:
    doc = prompt_doc(versions=("v1", "v2"), stable=stable)
    for version in doc["spec"]["versions"]:
        version["template"] = f"prompt {version['version']} speaking"
    return doc


async def stream_one(client: httpx.AsyncClient, i: int) -> tuple[str, str]:
    return await stream_chat(
        client, {"model": "assistant", "messages": [{"role": "user", "content": f"q{i}"}]}
    )


def test_three_replicas_balance_and_hot_reload_without_a_failed_request(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl
) -> None:
    kubectl, ns = cluster_ns, cluster_ns.namespace
    # A responder: load for a wall-clock period through a Service, so the number of model
    # calls is open; each answer must come from the snapshot that served it.
    with FakeLLM(responder=system_prompt_echo) as llm:
        kubectl.apply(prompt("v1"))
        kubectl.apply(assistant(llm))
        cluster.wait_agent_ready(kubectl, "assistant")
        kubectl("patch", "agentspec", "assistant", "--type=merge", "-p",
                '{"spec": {"runtime": {"replicas": 3}}}')  # fmt: skip
        pods = cluster.node.wait_ready(ns, SELECTOR, count=3, timeout=60)
        ips = {p["status"]["podIP"] for p in pods}
        pids = {cluster.node.container_pid(ns, p["metadata"]["name"], "agent") for p in pods}
        assert len(ips) == 3
        assert len(pids) == 3
        wait_until(
            lambda: (
                kubectl.json("get", "agentspec", "assistant")["status"].get("readyReplicas") == 3
            ),
            timeout=30,
            what="status.readyReplicas 3",
        )

        # the Service balances connections over all three pods
        service = cluster.service_url("assistant", ns)
        answered = set()
        for _ in range(30):
            with httpx.Client(base_url=service, timeout=10) as client:
                answered.add(client.get("/status").json()["pid"])
        assert answered == pids

        before = {p["metadata"]["name"]: p["status"]["containerStatuses"][0] for p in pods}

        async def scenario() -> tuple[list[tuple[str, str] | BaseException], float]:
            # no keep-alive: every request is a new connection, balanced by the Service
            limits = httpx.Limits(max_keepalive_connections=0)
            stop = asyncio.Event()
            results: list[tuple[str, str] | BaseException] = []

            async def worker(w: int) -> None:
                async with httpx.AsyncClient(base_url=service, limits=limits, timeout=30) as client:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        try:
                            results.append(await stream_one(client, w * 10_000 + i))
                        except (AssertionError, httpx.HTTPError) as e:
                            results.append(e)

            async def change_prompt() -> float:
                await asyncio.sleep(1.0)
                started = time.monotonic()
                await asyncio.to_thread(kubectl.apply, prompt("v2"))
                async with httpx.AsyncClient(timeout=5) as probe:

                    async def every_replica_on_v2() -> bool:
                        versions = [
                            (await probe.get(f"http://{ip}:8080/status")).json()["promptVersions"]
                            for ip in sorted(ips)
                        ]
                        return all(v == {"v2": 100} for v in versions)

                    await wait_until_async(
                        every_replica_on_v2, timeout=30, what="every replica serving v2"
                    )
                elapsed = time.monotonic() - started
                await asyncio.sleep(1.0)  # keep the load on a little after the switch
                stop.set()
                return elapsed

            workers = [asyncio.ensure_future(worker(w)) for w in range(8)]
            elapsed = await change_prompt()
            await asyncio.gather(*workers)
            return results, elapsed

        results, elapsed = asyncio.run(scenario())
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == [], failures[:3]
        answers = [r for r in results if not isinstance(r, BaseException)]
        for text, version in answers:
            assert text == f"prompt {version} speaking", (text, version)
        assert {v for _, v in answers} == {"v1", "v2"}, "the load spanned the change"
        print(f"\nPromptTemplate applied → all 3 replicas serving v2 in {elapsed:.2f}s; "
              f"{len(answers)} streamed requests, 0 failed")  # fmt: skip
        assert elapsed < 10

        after = {
            p["metadata"]["name"]: p["status"]["containerStatuses"][0]
            for p in cluster.node.pods(ns, SELECTOR)
        }
        assert after.keys() == before.keys(), "same pods"
        for name, status in after.items():
            assert status["containerID"] == before[name]["containerID"], "same processes"
            assert status["restartCount"] == 0
