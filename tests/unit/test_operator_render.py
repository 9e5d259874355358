"""Rendering of an agent's children and status, as pure functions (no cluster).

In: AgentSpec documents resolved with ``resolve_agent``; out: the manifest dicts the operator
would apply, compared as whole structures where the shape is the contract (Deployment pod
template, Role, NetworkPolicy, HPA) and by property where only one aspect matters (what a
hot change leaves untouched). Also the status computation (conditions, rollout, prompt version).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from agentspec_operator.probe import as_seen_from
from agentspec_operator.render import optional_kinds_wanted, render_children
from agentspec_operator.render_meta import AgentRef
from agentspec_operator.render_policy import quantity, tokens_query
from agentspec_operator.render_workload import (
    prompt_version,
    render_deployment,
    render_pod_template,
)
from agentspec_operator.settings import OperatorSettings, PrometheusAuth
from agentspec_operator.status import (
    Cond,
    agent_status,
    conditions,
    prompt_template_status,
    rollout,
)
from agentspec_runtime.spec import (
    AgentResource,
    PromptTemplateResource,
    SpecError,
    parse_resource,
)
from agentspec_runtime.spec.problems import Problem
from agentspec_runtime.spec.resolved import AgentConfig, resolve_agent

NS = "team-a"
SETTINGS = OperatorSettings(
    runtime_image="registry.local/runtime:1",
    otel_env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"},
    gateway_peers=({"namespaceSelector": {"matchLabels": {"role": "gateway"}}},),
    monitoring_peers=({"namespaceSelector": {"matchLabels": {"role": "monitoring"}}},),
)
LABELS = {
    "app.kubernetes.io/name": "agentspec-agent",
    "agentspec.io/agent": "finance",
    "app.kubernetes.io/instance": "finance",
    "app.kubernetes.io/managed-by": "agentspec-operator",
}
SELECTOR = {"app.kubernetes.io/name": "agentspec-agent", "agentspec.io/agent": "finance"}


def _agent(**spec: Any) -> AgentResource:
    doc = {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "AgentSpec",
        "metadata": {"name": "finance", "namespace": NS, "uid": "uid-1", "generation": 3},
        "spec": {"promptRef": {"name": "p"}, "model": {"model": "m"}, **spec},
    }
    agent = parse_resource(doc)
    assert isinstance(agent, AgentResource)
    return agent


def _prompt(stable: str = "v1", canary: dict[str, Any] | None = None) -> PromptTemplateResource:
    release: dict[str, Any] = {"stable": stable}
    if canary:
        release["canary"] = canary
    doc = {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "PromptTemplate",
        "metadata": {"name": "p", "namespace": NS},
        "spec": {
            "versions": [{"version": v, "template": f"text {v}"} for v in ("v1", "v2")],
            "release": release,
        },
    }
    prompt = parse_resource(doc)
    assert isinstance(prompt, PromptTemplateResource)
    return prompt


def _config(agent: AgentResource, prompt: PromptTemplateResource | None = None) -> AgentConfig:
    return resolve_agent(
        agent, namespace=NS, prompts={"p": prompt or _prompt()}, mcp_servers={}, partners={}
    )


def _children(agent: AgentResource, **kw: Any) -> dict[str, dict[str, Any]]:
    config = kw.pop("config", None) or _config(agent)
    settings = kw.pop("settings", SETTINGS)
    out = render_children(
        agent, config, namespace=NS, callers=kw.pop("callers", []), settings=settings
    )
    return {m["kind"]: m for m in out}


def test_every_child_is_named_labelled_and_owned_by_the_agent() -> None:
    children = render_children(
        _agent(), _config(_agent()), namespace=NS, callers=[], settings=SETTINGS
    )
    kinds = [m["kind"] for m in children]
    assert kinds == [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "NetworkPolicy",
        "Deployment",
    ]
    for m in children:
        meta = m["metadata"]
        assert meta["name"] == ("finance-config" if m["kind"] == "ConfigMap" else "finance")
        assert meta["namespace"] == NS
        assert meta["labels"] == LABELS
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "AgentSpec",
                "name": "finance",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_config_map_carries_the_canonical_payload_and_its_revision() -> None:
    config = _config(_agent())
    cm = _children(_agent(), config=config)["ConfigMap"]
    assert cm["data"] == {"agent.json": config.to_json()}
    assert cm["metadata"]["annotations"] == {
        "agentspec.io/config-revision": config.revision(),
        "agentspec.io/prompt-version": "v1",
    }
    assert json.loads(cm["data"]["agent.json"])["prompt"]["stable"] == "v1"


def test_pod_template_is_the_documented_shape() -> None:
    agent = _agent(
        runtime={
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
            "env": [
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "EXTRA", "secretKeyRef": {"name": "s", "key": "k"}},
                {"name": "AGENT_NAME", "value": "hijack"},
            ],
        }
    )
    template = render_pod_template(
        AgentRef(name="finance", namespace=NS, uid="uid-1"), agent=agent, settings=SETTINGS
    )
    tasks_hash = template["metadata"]["annotations"]["agentspec.io/tasks-config"]
    assert len(tasks_hash) == 16
    assert template == {
        "metadata": {"labels": LABELS, "annotations": {"agentspec.io/tasks-config": tasks_hash}},
        "spec": {
            "serviceAccountName": "finance",
            "automountServiceAccountToken": True,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "agent",
                    "image": "registry.local/runtime:1",
                    "env": [
                        {"name": "AGENT_NAME", "value": "finance"},
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {
                            "name": "POD_UID",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}},
                        },
                        {"name": "AGENTSPEC_CONFIGMAP", "value": "finance-config"},
                        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4318"},
                        {"name": "OTEL_SERVICE_NAME", "value": "finance"},
                        {"name": "LOG_LEVEL", "value": "debug"},
                        {
                            "name": "EXTRA",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        },
                    ],
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http"},
                        "periodSeconds": 10,
                        "timeoutSeconds": 2,
                        "failureThreshold": 3,
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 2,
                        "timeoutSeconds": 2,
                        "failureThreshold": 2,
                    },
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        },
    }


def test_hot_changes_leave_the_pod_template_alone_image_and_resources_do_not() -> None:
    base = _agent()
    hot = [
        _agent(model={"model": "other", "temperature": 0.3}),
        _agent(partners=[{"name": "hr"}]),
        _agent(mcpServers=[{"name": "tools"}]),
        _agent(promptRef={"name": "p", "version": "v2"}),
    ]
    ref = AgentRef(name="finance", namespace=NS, uid="uid-1")
    before = render_pod_template(ref, agent=base, settings=SETTINGS)
    for agent in hot:
        assert render_pod_template(ref, agent=agent, settings=SETTINGS) == before
    for cold in (
        _agent(runtime={"image": "other:2"}),
        _agent(runtime={"resources": {"limits": {"cpu": "1"}}}),
    ):
        assert render_pod_template(ref, agent=cold, settings=SETTINGS) != before


def test_role_grants_only_the_agents_own_configmap_and_secrets() -> None:
    plain = _children(_agent())["Role"]
    assert plain["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["finance-config"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    caller = _agent(partners=[{"name": "hr"}])
    hr = AgentResource.model_validate(
        {**_agent().model_dump(by_alias=True), "metadata": {"name": "hr"}}
    )
    config = resolve_agent(
        caller, namespace=NS, prompts={"p": _prompt()}, mcp_servers={}, partners={(NS, "hr"): hr}
    )
    calling = _children(caller, config=config)["Role"]["rules"]
    assert calling[1] == {  # its own ServiceAccount's tokens, for its partners' audiences
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": ["finance"],
        "verbs": ["create"],
    }
    keyed = _agent(
        model={"model": "m", "apiKeySecretRef": {"name": "llm", "key": "api-key"}},
        runtime={"auth": {"apiKeysSecretRef": "callers"}},
    )
    rules = _children(keyed)["Role"]["rules"]
    assert rules[1] == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["callers", "llm"],
        "verbs": ["get", "list", "watch"],
    }


def test_autoscaling_leaves_replicas_to_the_hpa_and_adds_a_pdb() -> None:
    agent = _agent(
        runtime={"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetTokensPerSecond": 12.5}}
    )
    children = _children(agent)
    assert "replicas" not in children["Deployment"]["spec"]
    assert children["HorizontalPodAutoscaler"]["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "finance"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "agentspec_tokens_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "12500m"},
                },
            }
        ],
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 300},
        },
    }
    assert children["PodDisruptionBudget"]["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": SELECTOR},
    }
    assert optional_kinds_wanted(agent) == {"HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_fixed_replicas_own_the_count_and_one_replica_needs_no_pdb() -> None:
    deployment = render_deployment(
        AgentRef(name="finance", namespace=NS, uid="u"),
        agent=_agent(runtime={"replicas": 3}),
        settings=SETTINGS,
    )
    assert deployment["spec"]["replicas"] == 3
    assert optional_kinds_wanted(_agent(runtime={"replicas": 3})) == {"PodDisruptionBudget"}
    assert optional_kinds_wanted(_agent()) == set()
    keda = _agent(
        runtime={"autoscaling": {"maxReplicas": 3, "targetTokensPerSecond": 5, "provider": "keda"}}
    )
    assert optional_kinds_wanted(keda) == {"ScaledObject"}
    assert "ScaledObject" not in _children(keda)  # the KEDA CRD is absent in SETTINGS


def test_keda_scales_on_the_tokens_rate_prometheus_computes_for_this_agent_only() -> None:
    agent = _agent(
        runtime={
            "autoscaling": {
                "maxReplicas": 4,
                "targetTokensPerSecond": 250,
                "targetQueuedTasks": 2.5,
                "provider": "keda",
                "scaleDownStabilizationSeconds": 20,
            }
        },
        tasks={"storeUrlSecretRef": {"name": "tasks-db", "key": "url"}},
    )
    settings = replace(
        SETTINGS,
        keda_available=True,
        prometheus_url="http://prom.monitoring:9090",
        scaling_rate_window="30s",
    )
    children = _children(agent, settings=settings)
    assert "replicas" not in children["Deployment"]["spec"]
    assert "HorizontalPodAutoscaler" not in children
    assert children["ScaledObject"]["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "finance"},
        "minReplicaCount": 1,
        "maxReplicaCount": 4,
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0},
                    "scaleDown": {"stabilizationWindowSeconds": 20},
                }
            }
        },
        "triggers": [
            {
                "type": "prometheus",
                "name": "tokens-per-second",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": "http://prom.monitoring:9090",
                    "query": f'sum(rate(agentspec_tokens_total{{namespace="{NS}",'
                    'agent="finance"}[30s]))',
                    "threshold": "250",
                    "ignoreNullValues": "true",
                },
            },
            {
                "type": "prometheus",
                "name": "queued-tasks",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": "http://prom.monitoring:9090",
                    "query": f'max(agentspec_task_queue_depth{{namespace="{NS}",'
                    'agent="finance"}) or vector(0)',
                    "threshold": "2.5",
                    "ignoreNullValues": "true",
                },
            },
        ],
    }


@pytest.mark.parametrize(
    ("target", "threshold"),
    [(250, "250"), (12.5, "12.5"), (0.001, "0.001"), (1e9, "1000000000"), (2 / 3, "0.667")],
)
def test_keda_thresholds_are_plain_decimals_keda_parses(target: float, threshold: str) -> None:
    """KEDA reads a trigger's threshold as a float: a quantity's ``12500m`` or an exponent
    would make the ScaledObject invalid and the agent never scale."""
    agent = _agent(
        runtime={
            "autoscaling": {"maxReplicas": 2, "targetTokensPerSecond": target, "provider": "keda"}
        }
    )
    scaled = _children(agent, settings=replace(SETTINGS, keda_available=True))["ScaledObject"]
    rendered = scaled["spec"]["triggers"][0]["metadata"]["threshold"]
    assert rendered == threshold
    assert float(rendered) == pytest.approx(target, abs=0.0005)
    assert rendered.replace(".", "", 1).isdigit()


def test_keda_authenticates_to_prometheus_by_reference() -> None:
    agent = _agent(
        runtime={"autoscaling": {"maxReplicas": 2, "targetTokensPerSecond": 5, "provider": "keda"}}
    )
    settings = replace(
        SETTINGS,
        keda_available=True,
        prometheus_auth=PrometheusAuth(name="prom-token", modes="bearer"),
    )
    (trigger,) = _children(agent, settings=settings)["ScaledObject"]["spec"]["triggers"]
    assert trigger["authenticationRef"] == {
        "kind": "ClusterTriggerAuthentication",
        "name": "prom-token",
    }
    assert trigger["metadata"]["authModes"] == "bearer"


def test_promql_label_values_are_escaped() -> None:
    """Names the apiserver checks are DNS labels; ``agentspec render`` on files is not."""
    owner = AgentRef(name='a"}) or vector(1e9', namespace="ns\\", uid="u")
    assert tokens_query(owner, "1m") == (
        r'sum(rate(agentspec_tokens_total{namespace="ns\\",agent="a\"}) or vector(1e9"}[1m]))'
    )


def test_queued_tasks_trigger_needs_keda() -> None:
    with pytest.raises(SpecError, match="targetQueuedTasks needs provider keda"):
        _agent(
            runtime={
                "autoscaling": {
                    "maxReplicas": 2,
                    "targetTokensPerSecond": 5,
                    "targetQueuedTasks": 1,
                }
            }
        )


def test_network_policy_admits_callers_gateways_and_monitoring_only() -> None:
    policy = _children(_agent(), callers=[(NS, "router"), ("other", "front")])["NetworkPolicy"]
    assert policy["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {
                        "podSelector": {"matchLabels": {"agentspec.io/agent": "front"}},
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "other"}
                        },
                    },
                    {"podSelector": {"matchLabels": {"agentspec.io/agent": "router"}}},
                    {"namespaceSelector": {"matchLabels": {"role": "gateway"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 8080}],
            },
            {
                "from": [{"namespaceSelector": {"matchLabels": {"role": "monitoring"}}}],
                "ports": [{"protocol": "TCP", "port": 9090}],
            },
        ],
    }
    closed = render_children(
        _agent(), _config(_agent()), namespace=NS, callers=[], settings=OperatorSettings()
    )
    (policy,) = [m for m in closed if m["kind"] == "NetworkPolicy"]
    assert policy["spec"]["ingress"] == []  # a rule without peers would admit everyone


def test_quantities() -> None:
    assert quantity(100) == "100"
    assert quantity(100.0) == "100"
    assert quantity(0.5) == "500m"


def test_prompt_version_names_the_canary_and_its_weight() -> None:
    assert prompt_version(_config(_agent())) == "v1"
    canary = _prompt(canary={"version": "v2", "weight": 20})
    assert prompt_version(_config(_agent(), canary)) == "v1+v2@20%"


def _deployment(**status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, **status},
    }


def test_rollout_follows_kstatus_rules() -> None:
    assert rollout(None).reason == "DeploymentMissing"
    assert not rollout(_deployment(updatedReplicas=1, availableReplicas=1, replicas=1)).ready
    assert not rollout(_deployment(updatedReplicas=2, availableReplicas=2, replicas=3)).ready
    done = rollout(_deployment(updatedReplicas=2, availableReplicas=2, replicas=2, readyReplicas=2))
    assert done.ready
    assert (done.replicas, done.ready_replicas) == (2, 2)
    stale = _deployment(updatedReplicas=2, availableReplicas=2, replicas=2)
    stale["status"]["observedGeneration"] = 1
    assert not rollout(stale).ready


def test_agent_status_when_stalled_names_the_reference_and_keeps_the_live_revision() -> None:
    status = agent_status(
        name="finance",
        namespace=NS,
        generation=4,
        problems=[
            Problem("ReferenceNotFound", "spec.promptRef.name", "PromptTemplate 'p' not found")
        ],
        deployment=None,
        live_revision="abc",
        live_prompt_version="v1",
        old=None,
        now="2026-01-01T00:00:00Z",
    )
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Stalled"]["status"] == "True"
    assert by_type["Stalled"]["reason"] == "ReferenceNotFound"
    assert by_type["Stalled"]["message"] == "spec.promptRef.name: PromptTemplate 'p' not found"
    assert by_type["Ready"]["status"] == "False"
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])
    assert status["configRevision"] == "abc"
    assert status["endpoint"] == f"http://finance.{NS}.svc.cluster.local:8080"
    assert status["agentCard"].endswith("/.well-known/agent-card.json")


@pytest.mark.parametrize(
    ("hpa", "expected"),
    [
        (None, None),
        ({}, ("False", "AutoscalerPending")),
        (
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetExternalMetric",
                "message": "unable to get external metric",
            },
            ("False", "FailedGetExternalMetric"),
        ),
        (
            {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"},
            ("True", "ValidMetricFound"),
        ),
    ],
)
def test_an_autoscaled_agent_shows_whether_its_hpa_can_act(
    hpa: dict[str, str] | None, expected: tuple[str, str] | None
) -> None:
    status = agent_status(
        name="finance",
        namespace=NS,
        generation=1,
        problems=[],
        deployment=None,
        live_revision="abc",
        live_prompt_version="v1",
        old=None,
        now="t",
        scaling=hpa,
    )
    by_type = {c["type"]: c for c in status["conditions"]}
    if expected is None:
        assert "ScalingActive" not in by_type
    else:
        assert (by_type["ScalingActive"]["status"], by_type["ScalingActive"]["reason"]) == expected
    assert {"Ready", "Reconciling", "Stalled"} <= by_type.keys()


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = conditions([Cond("Ready", False, "X")], old=None, generation=1, now="t1")
    same = conditions([Cond("Ready", False, "Y")], old=first, generation=2, now="t2")
    flipped = conditions([Cond("Ready", True, "Z")], old=same, generation=2, now="t3")
    assert same[0]["lastTransitionTime"] == "t1"
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_prompt_template_status_lists_release_and_users() -> None:
    spec = {"release": {"stable": "v1", "canary": {"version": "v2", "weight": 10}}}
    status = prompt_template_status(spec=spec, generation=2, used_by=["b", "a"], old=None, now="t")
    assert status["stableVersion"] == "v1"
    assert (status["canaryVersion"], status["canaryWeight"]) == ("v2", 10)
    assert status["usedBy"] == ["a", "b"]
    assert status["conditions"][0]["status"] == "True"


@pytest.mark.parametrize(
    ("url", "seen"),
    [
        ("http://tools:8300/mcp", "http://tools.team-a.svc.cluster.local:8300/mcp"),
        ("https://user@tools/mcp?x=1", "https://user@tools.team-a.svc.cluster.local/mcp?x=1"),
        ("http://tools.other:8300/mcp", "http://tools.other:8300/mcp"),
        ("http://localhost:8300/mcp", "http://localhost:8300/mcp"),
        ("http://10.0.0.7:8300/mcp", "http://10.0.0.7:8300/mcp"),
        ("http://[::1]:8300/mcp", "http://[::1]:8300/mcp"),
    ],
)
def test_the_mcp_probe_resolves_short_names_as_the_servers_namespace_would(
    url: str, seen: str
) -> None:
    assert as_seen_from(url, "team-a") == seen


def test_a_new_task_store_rolls_the_pods_and_a_push_host_does_not() -> None:
    def tasks_hash(**spec: object) -> str:
        template = render_pod_template(
            AgentRef(name="finance", namespace=NS, uid="uid-1"),
            agent=_agent(**spec),
            settings=SETTINGS,
        )
        value: str = template["metadata"]["annotations"]["agentspec.io/tasks-config"]
        return value

    default = tasks_hash()
    store = {"storeUrlSecretRef": {"name": "pg", "key": "url"}}
    assert tasks_hash(tasks=store) != default
    assert tasks_hash(tasks={"leaseSeconds": 60}) != default
    assert tasks_hash(tasks={"pushAllowedHosts": ["hooks.example.com"]}) == default
