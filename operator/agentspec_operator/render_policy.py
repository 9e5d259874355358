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
"""Per-pod metric the plain HPA scales on; a custom metrics adapter must serve it (see
docs/autoscaling.md)."""
KEDA_API_VERSION = "keda.sh/v1alpha1"


def decimal(value: float) -> str:
    """A plain decimal with at most three places (``2.5``, ``1000000000``): what KEDA's
    trigger metadata parses as a float (it refuses a quantity's ``2500m`` and exponents)."""
    return f"{round(value, 3):f}".rstrip("0").rstrip(".")


def label_value(text: str) -> str:
    """``text`` inside a PromQL double-quoted label matcher."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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


def _behavior(scaling: AutoscalingSpec) -> Manifest:
    """The HPA's stabilization windows (its default scaling policies otherwise)."""
    return {
        "scaleUp": {"stabilizationWindowSeconds": scaling.scale_up_stabilization_seconds},
        "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
    }


def tokens_query(owner: AgentRef, window: str) -> str:
    """The agent's tokens per second, all its pods together, as Prometheus computes it from
    the runtime's counter. ``agent`` is a label the runtime puts on its own series;
    ``namespace`` is the target label every Kubernetes scrape config (and PodMonitor) adds."""
    return (
        f'sum(rate(agentspec_tokens_total{{namespace="{label_value(owner.namespace)}",'
        f'agent="{label_value(owner.name)}"}}[{window}]))'
    )


def queue_query(owner: AgentRef) -> str:
    """Durable tasks waiting for a replica. Every replica reports the whole shared queue, so
    the greatest report is the queue (a sum would count it once per replica)."""
    return (
        f'max(agentspec_task_queue_depth{{namespace="{label_value(owner.namespace)}",'
        f'agent="{label_value(owner.name)}"}}) or vector(0)'
    )


def render_hpa(owner: AgentRef, scaling: AutoscalingSpec) -> Manifest:
    """An HPA on the Pods metric ``agentspec_tokens_per_second``: a custom metrics adapter
    (prometheus-adapter's rule in docs/autoscaling.md) must serve it."""
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
            "behavior": _behavior(scaling),
        },
    }


def _prometheus_trigger(
    name: str, *, settings: OperatorSettings, query: str, per_replica: float
) -> Manifest:
    trigger: Manifest = {
        "type": "prometheus",
        "name": name,
        # AverageValue: KEDA's HPA divides the query's total by the replica count.
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": settings.prometheus_url,
            "query": query,
            "threshold": decimal(per_replica),
            # No answer (Prometheus has no series yet): 0, not an error that freezes scaling.
            "ignoreNullValues": "true",
        },
    }
    if settings.prometheus_auth is not None:
        trigger["metadata"]["authModes"] = settings.prometheus_auth.modes
        trigger["authenticationRef"] = {
            "kind": "ClusterTriggerAuthentication",
            "name": settings.prometheus_auth.name,
        }
    return trigger


def render_scaled_object(
    owner: AgentRef, scaling: AutoscalingSpec, *, settings: OperatorSettings
) -> Manifest:
    """A KEDA ScaledObject: KEDA makes an HPA (``keda-hpa-<agent>``) on the External metric
    its metrics server computes from these Prometheus queries."""
    triggers = [
        _prometheus_trigger(
            "tokens-per-second",
            settings=settings,
            query=tokens_query(owner, settings.scaling_rate_window),
            per_replica=scaling.target_tokens_per_second,
        )
    ]
    if scaling.target_queued_tasks is not None:
        triggers.append(
            _prometheus_trigger(
                "queued-tasks",
                settings=settings,
                query=queue_query(owner),
                per_replica=scaling.target_queued_tasks,
            )
        )
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(scaling)}},
            "triggers": triggers,
        },
    }
