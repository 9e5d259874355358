"""End to end: the operator, the real apiserver, and one runtime process per agent.

In: examples/multi-agent (router -> hr, finance) applied to a test namespace; the operator
reconciling it; for each agent a runtime process started with exactly the environment its
Deployment declares (fieldRefs resolved as the kubelet would), authenticated with a token of
the agent's own ServiceAccount (so the operator's least-privilege Role must suffice), reading
its ConfigMap through the API; `<agent>.<ns>.svc.cluster.local` mapped to local ports; one
fake LLM per agent. Asserted: questions sent to the router through /v1/chat/completions and
the a2a-sdk client reach the right partner and return its answer; one trace id covers all
three processes; partner tokens are accounted; a fourth partner added to the router becomes
callable without a restart.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.a2a_client import ask
from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.fake_llm import ChatRequest, FakeLLM, Turn, tool_then_answer
from tests.support.operator_proc import OperatorProcess
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "multi-agent"
TRACE_ID = "5b8efff798038103d269b633813fc60c"


def department(name: str) -> Any:
    def answer(request: ChatRequest) -> Turn:
        return Turn.text(f"{name} says: {request.last_user_text}")

    return answer


def service_account_kubeconfig(
    control_plane: ControlPlane, namespace: str, agent: str, path: Path
) -> Path:
    """A kubeconfig holding a token of the agent's ServiceAccount (what a pod would mount)."""
    token = control_plane.kubectl("create", "token", agent, namespace=namespace).stdout.strip()
    ca = base64.b64encode(control_plane.ca_cert.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "pod",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": control_plane.server,
                            "certificate-authority-data": ca,
                        },
                    }
                ],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "pod",
                        "context": {"cluster": "c", "user": "sa", "namespace": namespace},
                    }
                ],
            }
        )
    )
    return path


def deployment_env(kubectl: NamespacedKubectl, agent: str, namespace: str) -> dict[str, str]:
    """The container env of the agent's Deployment, as the kubelet would resolve it."""
    container = kubectl.json("get", "deployment", agent)["spec"]["template"]["spec"]["containers"][
        0
    ]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var.get("valueFrom", {}).get("fieldRef"):
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = {"metadata.namespace": namespace, "metadata.name": f"{agent}-pod-0"}[
                field
            ]
    return env


class Agents:
    """One runtime per agent, wired like the cluster would wire them."""

    def __init__(
        self, control_plane: ControlPlane, kubectl: NamespacedKubectl, namespace: str, tmp: Path
    ) -> None:
        self.control_plane = control_plane
        self.kubectl = kubectl
        self.namespace = namespace
        self.tmp = tmp
        self.runtimes: dict[str, RuntimeProcess] = {}
        self.llms: dict[str, FakeLLM] = {}

    def prepare(self, agent: str, llm: FakeLLM) -> RuntimeProcess:
        self.llms[agent] = llm
        runtime = RuntimeProcess()
        self.runtimes[agent] = runtime
        return runtime

    def start(self, agent: str) -> None:
        wait_until(
            lambda: self._exists("deployment", agent),
            timeout=30,
            what=f"the operator to create {agent}'s Deployment",
        )
        env = deployment_env(self.kubectl, agent, self.namespace)
        assert env["AGENT_NAME"] == agent
        assert env["POD_NAMESPACE"] == self.namespace
        kubeconfig = service_account_kubeconfig(
            self.control_plane, self.namespace, agent, self.tmp / f"{agent}.kubeconfig"
        )
        urls = {name: r.base_url for name, r in self.runtimes.items()}
        self.runtimes[agent].set_env(
            **env,
            KUBECONFIG=str(kubeconfig),
            OPENAI_BASE_URL=self.llms[agent].base_url,
            AGENTSPEC_PARTNER_URLS=json.dumps(urls),
        ).start(timeout=30)

    def _exists(self, kind: str, name: str) -> bool:
        return self.kubectl("get", kind, name, check=False).returncode == 0

    def stop(self) -> None:
        for runtime in self.runtimes.values():
            runtime.stop()


def test_multi_agent_system_across_processes(
    control_plane: ControlPlane,
    kubectl: NamespacedKubectl,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    del operator
    kubectl("apply", "-f", str(EXAMPLE))
    with (
        FakeLLM(responder=tool_then_answer) as router_llm,
        FakeLLM(responder=department("HR")) as hr_llm,
        FakeLLM(responder=department("Finance")) as finance_llm,
        FakeLLM(responder=department("Legal")) as legal_llm,
    ):
        agents = Agents(control_plane, kubectl, namespace, tmp_path)
        for name, llm in (
            ("hr", hr_llm),
            ("finance", finance_llm),
            ("legal", legal_llm),
            ("router", router_llm),
        ):
            agents.prepare(name, llm)
        try:
            for name in ("hr", "finance", "router"):
                agents.start(name)
            router = agents.runtimes["router"]

            # through the OpenAI-compatible API, in one trace
            response = httpx.post(
                f"{router.base_url}/v1/chat/completions",
                timeout=30,
                headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
                json={
                    "model": "router",
                    "messages": [{"role": "user", "content": "hr message='How many leave days?'"}],
                },
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["choices"][0]["message"]["content"] == (
                "The tool said: HR says: How many leave days?"
            )
            assert finance_llm.requests == [], "finance was not asked"
            for llm in (router_llm, hr_llm):
                assert llm.requests[0].headers["traceparent"].split("-")[1] == TRACE_ID
            assert body["agentspec"]["partnerUsage"]["prompt_tokens"] > 0

            # through the a2a-sdk client; the card names the Service, here a local port
            answer = ask(
                router.base_url,
                "finance message='What is the travel budget?'",
                reach_at=f"{router.base_url}/a2a",
            )
            assert answer.card is not None
            assert answer.card.supported_interfaces[0].url == (
                f"http://router.{namespace}.svc.cluster.local:8080/a2a"
            )
            assert answer.text == "The tool said: Finance says: What is the travel budget?"

            # hot-add a fourth partner: a new AgentSpec, then the router lists it
            legal = {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "AgentSpec",
                "metadata": {"name": "legal"},
                "spec": {
                    "description": "Answers legal questions.",
                    "prompt": "You are the legal assistant.",
                    "model": {"model": "gpt-4o-mini"},
                },
            }
            kubectl.apply(legal)
            agents.start("legal")
            router_pid = router.pid
            kubectl(
                "patch",
                "agentspec",
                "router",
                "--type=json",
                "-p",
                json.dumps([{"op": "add", "path": "/spec/partners/-", "value": {"name": "legal"}}]),
            )
            wait_until(
                lambda: "legal" in router.status()["tools"],
                timeout=15,
                what="the router to pick up its new partner",
            )
            added = httpx.post(
                f"{router.base_url}/v1/chat/completions",
                timeout=30,
                json={
                    "model": "router",
                    "messages": [{"role": "user", "content": "legal message='Can I sign this?'"}],
                },
            )
            assert added.json()["choices"][0]["message"]["content"] == (
                "The tool said: Legal says: Can I sign this?"
            )
            assert router.pid == router_pid, "no restart"
        finally:
            agents.stop()
