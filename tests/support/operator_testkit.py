"""Helpers for the operator tests: resource documents, bounded waits, and reads of children.

Owns the small vocabulary the operator tests share: ``agent_doc``/``prompt_doc``/``mcp_doc``
build valid documents, ``eventually`` polls a condition with a deadline (no fixed sleeps),
``condition`` picks a status condition, ``pod_template`` returns a Deployment's template as
canonical JSON (for byte-for-byte comparisons). No pytest dependency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .control_plane import KubectlError, NamespacedKubectl

__all__ = [
    "agent_doc",
    "condition",
    "config_of",
    "eventually",
    "get",
    "mcp_doc",
    "pod_template",
    "prompt_doc",
]

Json = dict[str, Any]
T = TypeVar("T")
API = "agentspec.io/v1alpha1"


def agent_doc(name: str, *, prompt: str = "p", **spec: Any) -> Json:
    body: Json = {"promptRef": {"name": prompt}, "model": {"model": "gpt-4o-mini"}, **spec}
    return {"apiVersion": API, "kind": "AgentSpec", "metadata": {"name": name}, "spec": body}


def prompt_doc(
    name: str = "p",
    *,
    versions: tuple[str, ...] = ("v1",),
    stable: str = "v1",
    canary: Json | None = None,
) -> Json:
    release: Json = {"stable": stable}
    if canary is not None:
        release["canary"] = canary
    return {
        "apiVersion": API,
        "kind": "PromptTemplate",
        "metadata": {"name": name},
        "spec": {
            "versions": [{"version": v, "template": f"You are helpful ({v})."} for v in versions],
            "release": release,
        },
    }


def mcp_doc(name: str, url: str, *, transport: str = "streamable-http", **spec: Any) -> Json:
    return {
        "apiVersion": API,
        "kind": "McpServer",
        "metadata": {"name": name},
        "spec": {"url": url, "transport": transport, **spec},
    }


def eventually(
    probe: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    what: str,
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something truthy; that value is returned.

    ``AssertionError`` and ``KubectlError`` inside ``probe`` count as "not yet"; the last one
    is reported when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (AssertionError, KubectlError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {last}")
        time.sleep(interval)


def get(kubectl: NamespacedKubectl, kind: str, name: str) -> Json:
    return kubectl.json("get", kind, name)


def condition(obj: Json, kind: str) -> Json:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            found: Json = cond
            return found
    return {}


def pod_template(kubectl: NamespacedKubectl, name: str) -> str:
    deployment = get(kubectl, "deployment", name)
    return json.dumps(deployment["spec"]["template"], sort_keys=True)


def config_of(kubectl: NamespacedKubectl, name: str) -> Json:
    cm = get(kubectl, "configmap", f"{name}-config")
    payload: Json = json.loads(cm["data"]["agent.json"])
    return payload
