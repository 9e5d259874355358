"""The multi-agent example (examples/multi-agent) as the cluster tests deploy it: its documents
with each agent's model pointed at a fake LLM, its hr-policies ConfigMap, its expense-tools MCP
server as a pod of the runtime image, and the rule-based answers of its departments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .fake_llm import ChatRequest, Turn, tool_then_answer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multi-agent"
Json = dict[str, Any]


def department(name: str) -> Callable[[ChatRequest], Turn]:
    def answer(request: ChatRequest) -> Turn:
        return Turn.text(f"{name} says: {request.last_user_text}")

    return answer


def hr_model(request: ChatRequest) -> Turn:
    """HR searches its policies when asked to (``hr-policies query=...``), else answers."""
    if request.trailing_tool_results or "hr-policies" in request.last_user_text:
        return tool_then_answer(request)
    return department("HR")(request)


def policies_config_map(edit: Callable[[str], str] = str) -> Json:
    """The example's hr-policies folder as the ConfigMap its README line makes."""
    folder = EXAMPLE / "hr-policies"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hr-policies"},
        "data": {p.name: edit(p.read_text()) for p in sorted(folder.iterdir())},
    }


def example_documents(model_urls: dict[str, str]) -> list[Json]:
    """The example's documents, each agent's model pointed at ``model_urls[agent]``."""
    docs = [
        d for p in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]
    for doc in docs:
        if doc["kind"] == "AgentSpec":
            doc["spec"]["model"]["baseUrl"] = model_urls[doc["metadata"]["name"]]
    return docs


def expense_tools_server(image: str) -> list[Json]:
    """The example's MCP server, run in the cluster from the runtime image."""
    labels = {"app": "expense-tools"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "expense-tools"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "mcp",
                                "image": image,
                                "command": ["python", "-m", "agentspec_runtime.demo.expense_tools"],
                                "args": ["--host=0.0.0.0", "--port=8300"],
                                "ports": [{"name": "mcp", "containerPort": 8300}],
                                "readinessProbe": {
                                    "tcpSocket": {"port": "mcp"},
                                    "periodSeconds": 1,
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "expense-tools"},
            "spec": {"selector": labels, "ports": [{"name": "mcp", "port": 8300}]},
        },
    ]
