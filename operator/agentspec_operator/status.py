"""Pure status computation for the three kinds, from what the operator observed in the world.

Status is rebuilt on every reconcile (kubebuilder discipline): the only thing carried over from
the previous status is a condition's ``lastTransitionTime`` when its status did not change,
so an unchanged world gives a byte-identical status and no write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentspec_runtime.spec.problems import Problem
from agentspec_runtime.spec.resolved import service_url

Json = dict[str, Any]

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
SCALING_ACTIVE = "ScalingActive"
"""An autoscaled agent's: its HPA's own ScalingActive (it reads the metric and acts on it)."""


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


def conditions(
    wanted: list[Cond], *, old: list[Json] | None, generation: int | None, now: str
) -> list[Json]:
    """metav1.Condition dicts; ``lastTransitionTime`` kept while the status stays the same."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for cond in wanted:
        status = "True" if cond.status else "False"
        before = previous.get(cond.type)
        since = before.get("lastTransitionTime") if before else None
        if not before or before.get("status") != status or not since:
            since = now
        entry: Json = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


# --- Deployment readiness ---------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    ready: bool
    reason: str
    message: str
    replicas: int
    ready_replicas: int


def rollout(deployment: Json | None) -> Rollout:
    """Whether the Deployment is fully rolled out and available (kstatus rules)."""
    if deployment is None:
        return Rollout(False, "DeploymentMissing", "the Deployment does not exist yet", 0, 0)
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready_replicas = int(st.get("readyReplicas", 0))

    def waiting(message: str) -> Rollout:
        return Rollout(False, "RolloutInProgress", message, desired, ready_replicas)

    generation = (deployment.get("metadata") or {}).get("generation", 0)
    if int(st.get("observedGeneration", 0)) < int(generation):
        return waiting("the Deployment controller has not observed the latest spec yet")
    updated = int(st.get("updatedReplicas", 0))
    available = int(st.get("availableReplicas", 0))
    total = int(st.get("replicas", 0))
    if updated < desired:
        return waiting(f"{updated} of {desired} replicas updated")
    if total > updated:
        return waiting(f"{total - updated} old replicas pending termination")
    if available < desired:
        return waiting(f"{available} of {desired} updated replicas available")
    return Rollout(
        True, "Available", f"{available} of {desired} replicas available", desired, ready_replicas
    )


# --- AgentSpec --------------------------------------------------------------------


def stalled_reason(problems: list[Problem]) -> str:
    """The Stalled reason: the first problem's (each problem carries its own)."""
    return problems[0].reason if problems else "InvalidReference"


def agent_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    problems: list[Problem],
    deployment: Json | None,
    live_revision: str | None,
    live_prompt_version: str | None,
    old: Json | None,
    now: str,
    apply_error: str | None = None,
    apply_error_permanent: bool = False,
    scaling: Json | None = None,
) -> Json:
    """Status of an AgentSpec: Stalled from resolution, Ready/Reconciling from the Deployment.

    ``scaling``: for an autoscaled agent, its HPA's ``ScalingActive`` condition (``{}`` when
    the HPA has not reported yet), shown as the agent's own ``ScalingActive``: False with the
    HPA's reason and message when it cannot read the tokens/s metric.


    ``apply_error``: the apiserver refused a child. Temporary refusals (quota, conflicts,
    outages) keep the agent Reconciling; permanent ones (invalid, forbidden) stall it.

    ``live_*`` describe the ConfigMap actually in the cluster (the last good config when
    Stalled), not what the operator wished it had written.
    """
    state = rollout(deployment)
    if problems:
        message = "; ".join(map(str, problems))
        wanted = [
            Cond(READY, False, "Stalled", message),
            Cond(RECONCILING, False, "Stalled", "waiting for the references to be fixed"),
            Cond(STALLED, True, stalled_reason(problems), message),
        ]
    elif apply_error:
        reason = "ApplyRejected" if apply_error_permanent else "ApplyFailed"
        wanted = [
            Cond(READY, False, reason, apply_error),
            Cond(RECONCILING, not apply_error_permanent, reason, apply_error),
            Cond(STALLED, apply_error_permanent, reason, apply_error),
        ]
    elif state.ready:
        wanted = [
            Cond(READY, True, state.reason, state.message),
            Cond(RECONCILING, False, "Reconciled", "children match the spec"),
            Cond(STALLED, False, "Resolved", "every reference resolved"),
        ]
    else:
        wanted = [
            Cond(READY, False, state.reason, state.message),
            Cond(RECONCILING, True, state.reason, state.message),
            Cond(STALLED, False, "Resolved", "every reference resolved"),
        ]
    if scaling is not None:
        if scaling.get("type") == SCALING_ACTIVE:
            active = scaling.get("status") == "True"
            wanted.append(
                Cond(
                    SCALING_ACTIVE,
                    active,
                    str(scaling.get("reason") or ("ValidMetricFound" if active else "Unknown")),
                    str(scaling.get("message") or ""),
                )
            )
        else:
            wanted.append(
                Cond(SCALING_ACTIVE, False, "AutoscalerPending", "the HPA has not reported yet")
            )
    endpoint = service_url(name, namespace)
    status: Json = {
        "conditions": conditions(
            wanted, old=(old or {}).get("conditions"), generation=generation, now=now
        ),
        "endpoint": endpoint,
        "agentCard": f"{endpoint}/.well-known/agent-card.json",
        "replicas": state.replicas,
        "readyReplicas": state.ready_replicas,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if live_revision:
        status["configRevision"] = live_revision
    if live_prompt_version:
        status["promptVersion"] = live_prompt_version
    return status


# --- PromptTemplate -----------------------------------------------------------------


def prompt_template_status(
    *, spec: Json, generation: int | None, used_by: list[str], old: Json | None, now: str
) -> Json:
    release = spec.get("release") or {}
    canary = release.get("canary")
    status: Json = {
        "conditions": conditions(
            [Cond(READY, True, "Released", f"stable {release.get('stable')}")],
            old=(old or {}).get("conditions"),
            generation=generation,
            now=now,
        ),
        "stableVersion": release.get("stable"),
        "usedBy": sorted(used_by),
    }
    if canary:
        status["canaryVersion"] = canary.get("version")
        status["canaryWeight"] = canary.get("weight")
        status["conditions"][0]["message"] += (
            f", canary {canary.get('version')} at {canary.get('weight')}%"
        )
    if generation is not None:
        status["observedGeneration"] = generation
    return status


# --- McpServer ----------------------------------------------------------------------


def mcp_server_status(
    *,
    generation: int | None,
    tools: list[Json] | None,
    error_reason: str,
    error: str,
    old: Json | None,
    now: str,
) -> Json:
    """``tools`` None means the probe failed; the last discovered tools stay listed."""
    old = old or {}
    if tools is None:
        cond = Cond(READY, False, error_reason, error)
        tools = list(old.get("tools") or [])
    else:
        cond = Cond(READY, True, "ToolsListed", f"{len(tools)} tools")
    status: Json = {
        "conditions": conditions([cond], old=old.get("conditions"), generation=generation, now=now),
        "tools": tools,
        "toolCount": len(tools),
        "lastProbeTime": now,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def same_status(a: Json | None, b: Json | None, *, ignore: tuple[str, ...] = ()) -> bool:
    def strip(x: Json | None) -> Json:
        return {k: v for k, v in (x or {}).items() if k not in ignore}

    return strip(a) == strip(b)
