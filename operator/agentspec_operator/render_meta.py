"""The vocabulary every child shares: who owns it, its name, labels and metadata, the ports.

Pure, like all of the rendering: ``render_workload`` and ``render_policy`` build the children
from these, and ``render`` puts the wanted set together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentspec_runtime.spec import API_VERSION, AgentResource

Manifest = dict[str, Any]

API_PORT = 8080
METRICS_PORT = 9090
RUN_AS_USER = 10001
CONTAINER = "agent"
MANAGED_BY = "agentspec-operator"
AGENT_LABEL = "agentspec.io/agent"
# The runtime reads these; an AgentSpec cannot override them (it would lose its config).
RESERVED_ENV = ("AGENT_NAME", "POD_NAMESPACE", "POD_NAME", "POD_UID", "AGENTSPEC_CONFIGMAP")


@dataclass(frozen=True)
class AgentRef:
    """Who owns the children: enough of the AgentSpec for labels and ownerReferences."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, agent: AgentResource, *, namespace: str) -> AgentRef:
        return cls(name=agent.metadata.name, namespace=namespace, uid=agent.metadata.uid or "")


def selector_labels(name: str) -> dict[str, str]:
    """Labels that pick an agent's pods; stable forever (a Deployment selector is immutable)."""
    return {"app.kubernetes.io/name": "agentspec-agent", AGENT_LABEL: name}


def common_labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def metadata(
    owner: AgentRef, *, name: str | None = None, annotations: dict[str, str] | None = None
) -> Manifest:
    meta: Manifest = {
        "name": name or owner.name,
        "namespace": owner.namespace,
        "labels": common_labels(owner.name),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "AgentSpec",
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta
