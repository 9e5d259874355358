"""The runtime in cluster mode: config from its ConfigMap, watched through the real apiserver.

In: a ConfigMap holding the resolved payload (what the operator writes) and a Secret with
the model API key, in a test namespace; the runtime started with exactly the environment its
Deployment gives it (AGENT_NAME, POD_NAMESPACE, AGENTSPEC_CONFIGMAP) plus a kubeconfig in
place of the in-cluster service account. Asserted: it serves with the key read from the
Secret, picks up a ConfigMap change without restarting, and rejects a broken one; two replicas
with Redis memory (its URL in a Secret) continue each other's conversations.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from agentspec_runtime.spec import (
    AgentResource,
    McpServerResource,
    PromptTemplateResource,
    parse_resource,
)
from agentspec_runtime.spec.resolved import (
    CONFIG_KEY,
    REVISION_ANNOTATION,
    AgentConfig,
    config_map_name,
    resolve_agent,
)
from tests.support.agent_files import agent_docs
from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.fake_llm import ChatRequest, FakeLLM, ToolCall, Turn, echo
from tests.support.mcp_servers import McpTestServer
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess


def payload(
    llm: FakeLLM,
    tools: McpTestServer,
    *,
    namespace: str,
    version: int,
    memory: dict[str, Any] | None = None,
) -> AgentConfig:
    docs = agent_docs(
        llm_url=llm.base_url,
        template=f"cluster prompt {version}",
        version=f"v{version}",
        model={"apiKeySecretRef": {"name": "model-key", "key": "token"}},
        mcp=[{"name": "tools", "url": tools.url}],
        mcp_refs=[{"name": "tools", "tools": ["add"]}],
        memory=memory,
    )
    resources = [parse_resource(d) for d in docs]
    agent = next(r for r in resources if isinstance(r, AgentResource))
    prompts = {r.metadata.name: r for r in resources if isinstance(r, PromptTemplateResource)}
    servers = {r.metadata.name: r for r in resources if isinstance(r, McpServerResource)}
    return resolve_agent(
        agent, namespace=namespace, prompts=prompts, mcp_servers=servers, partners={}
    )


def config_map(config: AgentConfig) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(config.name),
            "annotations": {REVISION_ANNOTATION: config.revision()},
        },
        "data": {CONFIG_KEY: config.to_json()},
    }


def test_config_and_secret_come_from_the_api_and_changes_are_hot(
    control_plane: ControlPlane,
    kubectl: NamespacedKubectl,
    namespace: str,
    mcp_server_http: McpTestServer,
) -> None:
    def say_prompt(request: ChatRequest) -> Turn:
        """Answer with the system prompt: it shows which config served."""
        return Turn.text(request.system_prompt or "")

    with FakeLLM(api_key="key-from-secret") as llm:
        llm.script(
            say_prompt,
            Turn.tool_calls(ToolCall("add", {"a": 40, "b": 2})),
            Turn.text("42"),
            say_prompt,  # after the change
            say_prompt,  # after the broken change
        )
        kubectl("create", "secret", "generic", "model-key", "--from-literal=token=key-from-secret")
        first = payload(llm, mcp_server_http, namespace=namespace, version=1)
        kubectl.apply(config_map(first))
        env = {
            "AGENT_NAME": "assistant",
            "POD_NAMESPACE": namespace,
            "AGENTSPEC_CONFIGMAP": config_map_name("assistant"),
            "KUBECONFIG": str(control_plane.kubeconfig),
        }
        with (
            RuntimeProcess(env=env) as runtime,
            httpx.Client(base_url=runtime.base_url, timeout=10) as client,
        ):
            pid = runtime.pid

            def ask(text: str = "x") -> str:
                body = client.post(
                    "/v1/chat/completions",
                    json={"model": "assistant", "messages": [{"role": "user", "content": text}]},
                )
                assert body.status_code == 200, body.text
                answer: str = body.json()["choices"][0]["message"]["content"]
                return answer

            assert ask() == "cluster prompt 1"
            assert llm.requests[0].headers["authorization"] == "Bearer key-from-secret"
            assert ask("add 40 and 2") == "42"
            assert llm.requests[2].trailing_tool_results[0]["content"] == "42"  # an MCP tool
            assert runtime.status()["configRevision"] == first.revision()

            second = payload(llm, mcp_server_http, namespace=namespace, version=2)
            started = time.monotonic()
            kubectl.apply(config_map(second))
            wait_until(
                lambda: runtime.status()["configRevision"] == second.revision(),
                timeout=5,
                what="the ConfigMap change to load",
            )
            latency = time.monotonic() - started
            assert ask() == "cluster prompt 2"
            assert latency < 5

            broken = config_map(second)
            broken["data"] = {CONFIG_KEY: json.dumps({"kind": "AgentConfig", "name": 3})}
            kubectl.apply(broken)
            wait_until(
                lambda: runtime.status()["reloads"]["rejected"] >= 1,
                timeout=5,
                what="the broken ConfigMap to be rejected",
            )
            assert runtime.status()["configRevision"] == second.revision()
            assert "invalid AgentConfig" in runtime.status()["lastReloadError"]
            assert ask() == "cluster prompt 2"
            assert runtime.pid == pid
            assert "key-from-secret" not in runtime.log()


def test_invalid_config_at_start_up_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    docs = agent_docs(llm_url="http://127.0.0.1:9/v1")
    docs[-1]["spec"]["promptRef"]["name"] = "missing-prompt"
    path.write_text(yaml.safe_dump_all(docs))
    runtime = RuntimeProcess(config=path).start(wait_ready=False)
    assert runtime.process is not None
    code = runtime.process.popen.wait(20)
    assert code == 2
    assert "spec.promptRef.name: PromptTemplate 'missing-prompt' not found" in runtime.log()
    runtime.stop()


def test_replicas_share_conversation_memory_in_redis(
    control_plane: ControlPlane,
    kubectl: NamespacedKubectl,
    namespace: str,
    mcp_server_http: McpTestServer,
    redis_url: str,
) -> None:
    with FakeLLM(api_key="key-from-secret") as llm:
        llm.script(echo, echo)
        kubectl("create", "secret", "generic", "model-key", "--from-literal=token=key-from-secret")
        kubectl("create", "secret", "generic", "memory", f"--from-literal=url={redis_url}")
        memory = {"type": "redis", "urlSecretRef": {"name": "memory", "key": "url"}}
        kubectl.apply(
            config_map(payload(llm, mcp_server_http, namespace=namespace, version=1, memory=memory))
        )
        env = {
            "AGENT_NAME": "assistant",
            "POD_NAMESPACE": namespace,
            "KUBECONFIG": str(control_plane.kubeconfig),
        }
        with RuntimeProcess(env=env) as one, RuntimeProcess(env=env) as two:
            for replica, text in ((one, "My name is Ada."), (two, "What is my name?")):
                response = httpx.post(
                    f"{replica.base_url}/v1/chat/completions",
                    headers={"X-Agentspec-Context-Id": "shared"},
                    json={"model": "assistant", "messages": [{"role": "user", "content": text}]},
                    timeout=10,
                )
                assert response.status_code == 200, response.text
            assert response.json()["agentspec"]["recalledTurns"] == 1
            assert [m["content"] for m in llm.last_request.messages[1:]] == [
                "My name is Ada.",
                "Echo: My name is Ada.",
                "What is my name?",
            ]
            assert two.status()["memory"]["location"] == redis_url
