"""End to end, as shipped: the multi-agent example on a cluster with the chart installed.

In: the ``cluster`` fixture (real apiserver + controller manager, the process kubelet running
pods from the built images, the operator running as the chart's pods); examples/multi-agent
applied to a fresh namespace with each agent's ``model.baseUrl`` pointed at its own fake LLM,
and the example's expense-tools MCP server deployed as a pod of the runtime image behind the
Service its McpServer names. Every agent runs as a pod with exactly the command, env and user
the operator rendered (the image's entrypoint, no args).

Asserted: the agents go Ready; a question sent to the router's Service reaches HR over A2A
(Service DNS inside the pods) and answers; a finance question goes router → finance → MCP
tool and back; HR's knowledge source answers from the hr-policies ConfigMap with a
citation, and an edit of that ConfigMap is re-indexed in the running pod; one trace id
covers the router's and HR's model calls; the a2a-sdk client gets the router's card naming
its Service; a partner added later is callable without restarting the router's pod; once HR
allows only the router's workload identity, the router's calls (carrying its pod's
ServiceAccount token for HR) still answer and another agent's are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.a2a_client import ask
from tests.support.cluster import ShippedCluster
from tests.support.control_plane import NamespacedKubectl
from tests.support.fake_llm import FakeLLM, tool_then_answer
from tests.support.multi_agent import (
    department,
    example_documents,
    expense_tools_server,
    hr_model,
    policies_config_map,
)
from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "5b8efff798038103d269b633813fc60c"
Json = dict[str, Any]


def chat(url: str, text: str, *, model: str = "router", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        headers=headers,
        json={"model": model, "messages": [{"role": "user", "content": text}]},
    )


def router_container(cluster: ShippedCluster, namespace: str) -> Json:
    (pod,) = cluster.node.pods(namespace, "agentspec.io/agent=router")
    status: Json = pod["status"]["containerStatuses"][0]
    return status


def test_multi_agent_example_runs_from_the_built_images(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl
) -> None:
    kubectl, ns = cluster_ns, cluster_ns.namespace
    # Responders: the agents answer rule-based, and the hot-added partner is polled through
    # the router until it answers, so the number of model calls is open.
    with (
        FakeLLM(responder=tool_then_answer) as router_llm,
        FakeLLM(responder=hr_model) as hr_llm,
        FakeLLM(responder=tool_then_answer) as finance_llm,
        FakeLLM(responder=department("Legal")) as legal_llm,
        FakeLLM(responder=tool_then_answer) as intruder_llm,
    ):
        for doc in expense_tools_server(cluster.images.runtime.ref):
            kubectl.apply(doc)
        kubectl.apply(policies_config_map())
        urls = {"router": router_llm, "hr": hr_llm, "finance": finance_llm}
        for doc in example_documents({a: f"{llm.base_url}" for a, llm in urls.items()}):
            kubectl.apply(doc)
        for agent in ("hr", "finance", "router"):
            cluster.wait_agent_ready(kubectl, agent)

        # what the pods run is what the operator rendered, from the image's entrypoint
        (pod,) = cluster.node.pods(ns, "agentspec.io/agent=router")
        container = pod["spec"]["containers"][0]
        assert "command" not in container
        assert "args" not in container
        assert container["image"] == cluster.images.runtime.ref
        pid = cluster.node.container_pid(ns, pod["metadata"]["name"], "agent")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[-3:-1] == [b"/opt/agentspec/bin/agentspec", b"runtime"], cmdline
        assert Path(f"/proc/{pid}").stat().st_uid == 10001

        router = cluster.service_url("router", ns)
        response = chat(
            router,
            "hr message='How many leave days?'",
            traceparent=f"00-{TRACE_ID}-b7ad6b7169203331-01",
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == (
            "The tool said: HR says: How many leave days?"
        )
        for llm in (router_llm, hr_llm):
            assert llm.requests[0].headers["traceparent"].split("-")[1] == TRACE_ID
        assert body["agentspec"]["partnerUsage"]["prompt_tokens"] > 0

        # router → finance (A2A through the Service) → expense-tools (MCP through its Service)
        answer = ask(
            router, 'finance message="expense_policy topic=travel"', reach_at=f"{router}/a2a"
        )
        assert answer.text == (
            "The tool said: The tool said: Economy class for flights under 6 hours; "
            "hotels up to 150 EUR per night."
        )
        assert answer.card is not None
        assert answer.card.supported_interfaces[0].url == (
            f"http://router.{ns}.svc.cluster.local:8080/a2a"
        )
        assert finance_llm.requests[0].tool_names == ["lookup_claim", "expense_policy"]

        # HR's knowledge: the hr-policies ConfigMap, read and watched through the API by the
        # HR pod as its own ServiceAccount (whose Role names that ConfigMap), indexed in-pod
        hr = cluster.service_url("hr", ns)

        def carry_over() -> Json:
            reply = chat(hr, "hr-policies query='unused days carry over'", model="hr")
            assert reply.status_code == 200, reply.text
            said = reply.json()["choices"][0]["message"]["content"]
            passages: Json = json.loads(said.removeprefix("The tool said: "))
            return passages

        (best, _) = carry_over()["passages"]
        assert best["citation"] == "[hr-policies:leave.md#0]"
        assert "Up to 5 unused days carry over to the" in best["text"]
        kubectl.apply(policies_config_map(lambda text: text.replace("Up to 5", "Up to 8")))
        wait_until(
            lambda: "Up to 8 unused days" in carry_over()["passages"][0]["text"],
            timeout=20,
            what="the edited ConfigMap to be re-indexed in the HR pod",
        )

        # hot-add a fourth partner: its pods start, the router lists it, with no restart
        before = router_container(cluster, ns)
        kubectl.apply(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "AgentSpec",
                "metadata": {"name": "legal"},
                "spec": {
                    "description": "Answers legal questions.",
                    "prompt": "You are the legal assistant.",
                    "model": {"model": "gpt-4o-mini", "baseUrl": legal_llm.base_url},
                },
            }
        )
        cluster.wait_agent_ready(kubectl, "legal")
        kubectl(
            "patch",
            "agentspec",
            "router",
            "--type=json",
            "-p",
            json.dumps([{"op": "add", "path": "/spec/partners/-", "value": {"name": "legal"}}]),
        )

        def legal_answers() -> bool:
            reply = chat(router, "legal message='Can I sign this?'")
            text = reply.json()["choices"][0]["message"]["content"] if reply.is_success else ""
            return text == "The tool said: Legal says: Can I sign this?"

        wait_until(legal_answers, timeout=30, what="the router to call its new partner")
        after = router_container(cluster, ns)
        assert after["containerID"] == before["containerID"], "the router's process was kept"
        assert after["restartCount"] == 0

        # workload identity: HR now takes calls from the router's ServiceAccount alone; an
        # agent not on its list is refused, though it names HR as a partner
        kubectl.apply(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "AgentSpec",
                "metadata": {"name": "intruder"},
                "spec": {
                    "prompt": "You try to reach HR.",
                    "model": {"model": "gpt-4o-mini", "baseUrl": intruder_llm.base_url},
                    "partners": [{"name": "hr"}],
                },
            }
        )
        # and a content guard, so the image's RE2 (google-re2) runs too
        only_router = {
            "auth": {"agents": {"allowed": [{"name": "router"}]}},
            "guard": {"denyPatterns": [r"secret-\d+"], "action": "redact"},
        }
        kubectl(
            "patch", "agentspec", "hr", "--type=merge",
            "-p", json.dumps({"spec": {"runtime": only_router}}),
        )  # fmt: skip
        cluster.wait_agent_ready(kubectl, "intruder")
        wait_until(
            lambda: chat(hr, "hello", model="hr").status_code == 401,
            timeout=30,
            what="HR to require an allowed agent's identity",
        )
        reply = chat(router, "hr message='Still there? Code secret-42.'")
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == (
            "The tool said: HR says: Still there? Code [redacted]."
        )
        assert "secret-42" not in json.dumps([r.messages for r in hr_llm.requests[-1:]])
        refused = chat(
            cluster.service_url("intruder", ns), "hr message='Let me in'", model="intruder"
        )
        assert refused.status_code == 200, refused.text
        assert refused.json()["choices"][0]["message"]["content"] == (
            "The tool said: Error: partner agent 'hr' refused the call: this agent is not "
            "authorized to call it (HTTP 401)"
        )
        assert not any("Let me in" in r.last_user_text for r in hr_llm.requests)
