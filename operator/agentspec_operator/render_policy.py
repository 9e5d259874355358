"""Pure rendering of an agent's policy children: NetworkPolicy, PDB, HPA, KEDA ScaledObject."""

from __future__ import annotations

from collections.abc import Iterable

from agentspec_runtime.spec import AgentResource
from agentspec_runtime.spec.agent import AutoscalingSpec

from .render_meta import (
    AGENT_LABEL,
    API_PORT,
    METRICS_PORT,
    AgentRef,
    Manifest,
    metadata,
    selector_labels,
)
from .settings import OperatorSettings

TOKENS_METRIC = "agentspec_tokens_per_second"
"""Per-pod metric the HPA scales on; a metrics adapter must serve it (see docs/operator.md)."""
KEDA_API_VERSION = "keda.sh/v1alpha1"


def quantity(value: float) -> str:
    """A Kubernetes quantity string: ``100`` or ``12500m``."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def render_network_policy(
    owner: AgentRef, *, callers: Iterable[tuple[str, str]], settings: OperatorSettings
) -> Manifest:
    """API port: the agents that list this one as partner, plus the configured gateways.
    Metrics port: the configured monitoring peers.

    A rule without ``from`` admits everyone, so a port with no allowed peer gets no rule.
    """
    api_peers: list[Manifest] = []
    for namespace, name in sorted(set(callers)):
        peer: Manifest = {"podSelector": {"matchLabels": {AGENT_LABEL: name}}}
        if namespace != owner.namespace:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        api_peers.append(peer)
    api_peers.extend(settings.gateway_peers)
    ingress: list[Manifest] = []
    if api_peers:
        ingress.append({"from": api_peers, "ports": [{"protocol": "TCP", "port": API_PORT}]})
    if settings.monitoring_peers:
        ingress.append(
            {
                "from": list(settings.monitoring_peers),
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def wants_pdb(agent: AgentResource) -> bool:
    runtime = agent.spec.runtime
    if runtime.autoscaling is not None:
        return runtime.autoscaling.min_replicas > 1
    return runtime.replicas > 1


def render_pdb(owner: AgentRef) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector_labels(owner.name)}},
    }


def render_hpa(owner: AgentRef, scaling: AutoscalingSpec) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": TOKENS_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": quantity(scaling.target_tokens_per_second),
                        },
                    },
                }
            ],
        },
    }


def render_scaled_object(owner: AgentRef, scaling: AutoscalingSpec) -> Manifest:
    """Partial: a Prometheus trigger on the runtime's token counter; the server address is
    KEDA's default in-cluster Prometheus unless the chart overrides it."""
    query = (
        f'sum(rate(agentspec_tokens_total{{namespace="{owner.namespace}",'
        f'agent="{owner.name}"}}[1m]))'
    )
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": metadata(owner),
        "spec": {
            "scaleTargetRef": {"name": owner.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
                        "query": query,
                        "threshold": quantity(scaling.target_tokens_per_second),
                    },
                }
            ],
        },
    }
