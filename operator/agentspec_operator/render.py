"""What an agent's children should be: the whole wanted set, rendered by pure functions.

:func:`render_children` is the one entry point (the reconciler and ``agentspec render`` call
it); the pieces live in ``render_meta`` (names, labels, metadata), ``render_workload``
(ConfigMap, identity, Service, Deployment) and ``render_policy`` (NetworkPolicy, PDB, HPA,
KEDA). Which optional children exist is decided here too (:func:`optional_kinds_wanted`), so
the reconciler can prune the ones no longer wanted.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentspec_runtime.spec import AgentResource
from agentspec_runtime.spec.resolved import AgentConfig

from .render_meta import AgentRef, Manifest
from .render_policy import (
    render_hpa,
    render_network_policy,
    render_pdb,
    render_scaled_object,
    wants_pdb,
)
from .render_workload import (
    render_config_map,
    render_deployment,
    render_role,
    render_role_binding,
    render_service,
    render_service_account,
)
from .settings import OperatorSettings

OPTIONAL_KINDS = ("PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject")


def optional_kinds_wanted(agent: AgentResource) -> set[str]:
    scaling = agent.spec.runtime.autoscaling
    wanted = {"PodDisruptionBudget"} if wants_pdb(agent) else set()
    if scaling is not None:
        wanted.add("ScaledObject" if scaling.provider == "keda" else "HorizontalPodAutoscaler")
    return wanted


def render_children(
    agent: AgentResource,
    config: AgentConfig,
    *,
    namespace: str,
    callers: Iterable[tuple[str, str]],
    settings: OperatorSettings,
) -> list[Manifest]:
    """Every child the agent should have, ConfigMap first (pods need it before they start)."""
    owner = AgentRef.of(agent, namespace=namespace)
    children = [
        render_config_map(owner, config),
        render_service_account(owner),
        render_role(owner, agent=agent, config=config),
        render_role_binding(owner),
        render_service(owner),
        render_network_policy(owner, callers=callers, settings=settings),
        render_deployment(owner, agent=agent, settings=settings),
    ]
    if wants_pdb(agent):
        children.append(render_pdb(owner))
    scaling = agent.spec.runtime.autoscaling
    if scaling is not None and scaling.provider == "hpa":
        children.append(render_hpa(owner, scaling))
    elif scaling is not None and settings.keda_available:
        children.append(render_scaled_object(owner, scaling, settings=settings))
    return children
