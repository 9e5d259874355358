"""Config files for runtime tests: the same YAML a user would ``kubectl apply``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agentspec_runtime.spec.prompt import PLACEHOLDER


def agent_docs(
    *,
    name: str = "assistant",
    llm_url: str,
    template: str = "You are the {{ role }} assistant.",
    version: str = "v1",
    extra_versions: dict[str, str] | None = None,
    canary: tuple[str, int] | None = None,
    mcp: list[dict[str, Any]] | None = None,
    mcp_refs: list[dict[str, Any]] | None = None,
    max_iterations: int = 5,
    model: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    partners: list[dict[str, Any]] | None = None,
    memory: dict[str, Any] | None = None,
    tasks: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """An AgentSpec with a PromptTemplate (and McpServers): ``mcp`` are McpServer specs by
    name (``{"name": ..., "url": ..., "transport": ...}``), ``mcp_refs`` the AgentSpec's refs."""
    # every placeholder is declared; only {{ role }} has a default
    declared = [
        {"name": n, "callerSettable": True, **({"default": "test"} if n == "role" else {})}
        for n in dict.fromkeys(PLACEHOLDER.findall(template))
    ]
    versions: list[dict[str, Any]] = [
        {"version": version, "template": template, "variables": declared}
    ]
    for v, text in (extra_versions or {}).items():
        versions.append({"version": v, "template": text})
    release: dict[str, Any] = {"stable": version}
    if canary:
        release["canary"] = {"version": canary[0], "weight": canary[1]}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "agentspec.io/v1alpha1",
            "kind": "PromptTemplate",
            "metadata": {"name": f"{name}-prompt"},
            "spec": {"versions": versions, "release": release},
        }
    ]
    for server in mcp or []:
        spec = {k: v for k, v in server.items() if k != "name"}
        docs.append(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "McpServer",
                "metadata": {"name": server["name"]},
                "spec": spec,
            }
        )
    docs.append(
        {
            "apiVersion": "agentspec.io/v1alpha1",
            "kind": "AgentSpec",
            "metadata": {"name": name},
            "spec": {
                "description": f"{name} for tests",
                "promptRef": {"name": f"{name}-prompt"},
                "model": {
                    "model": "fake-model",
                    "baseUrl": llm_url,
                    "timeoutSeconds": 10,
                    **(model or {}),
                },
                "maxIterations": max_iterations,
                "mcpServers": mcp_refs
                if mcp_refs is not None
                else [{"name": s["name"]} for s in mcp or []],
                **({"runtime": runtime} if runtime else {}),
                **({"partners": partners} if partners else {}),
                **({"memory": memory} if memory else {}),
                **({"tasks": tasks} if tasks else {}),
            },
        }
    )
    return docs


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    """Write atomically (as editors do), so a watcher never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)
    return path
