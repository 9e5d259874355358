"""Pure rendering of an agent's workload children: the ConfigMap with its resolved config,
its ServiceAccount, Role and RoleBinding, its Service, and the Deployment of the shared image.

No I/O and no clock: the same inputs always give the same manifests, which is what makes
server-side apply idempotent and drift visible.

The pod template depends only on ``spec.runtime`` (image, resources, env), ``spec.tasks``
(the task store, which a runtime opens once) and the operator settings, never on the
resolved config: prompt, model, MCP and partner changes reach the pods through the
ConfigMap (hot reload) and must not roll them.
"""

from __future__ import annotations

import hashlib
import json

from agentspec_runtime.spec import AgentResource
from agentspec_runtime.spec.agent import EnvVar, ResourceRequirements
from agentspec_runtime.spec.resolved import (
    CONFIG_KEY,
    REVISION_ANNOTATION,
    AgentConfig,
    config_map_name,
)

from .render_meta import (
    API_PORT,
    CONTAINER,
    METRICS_PORT,
    RESERVED_ENV,
    RUN_AS_USER,
    AgentRef,
    Manifest,
    common_labels,
    metadata,
    selector_labels,
)
from .settings import OperatorSettings

# --- ConfigMap ------------------------------------------------------------------

PROMPT_VERSION_ANNOTATION = "agentspec.io/prompt-version"
TASKS_ANNOTATION = "agentspec.io/tasks-config"
"""On the pod template: a hash of ``spec.tasks`` (but its push hosts), so a change rolls."""


def prompt_version(config: AgentConfig) -> str:
    """``v2``, or ``v2+v3@10%`` while a canary takes 10 % of conversations."""
    prompt = config.prompt
    if prompt.canary is None:
        return prompt.stable
    return f"{prompt.stable}+{prompt.canary.version}@{prompt.canary.weight}%"


def render_config_map(owner: AgentRef, config: AgentConfig) -> Manifest:
    """The resolved config; secrets appear only as references (``AgentConfig`` holds no values)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            owner,
            name=config_map_name(owner.name),
            annotations={
                REVISION_ANNOTATION: config.revision(),
                # Read back for status.promptVersion while the agent is Stalled.
                PROMPT_VERSION_ANNOTATION: prompt_version(config),
            },
        ),
        "data": {CONFIG_KEY: config.to_json()},
    }


# --- identity: ServiceAccount, Role, RoleBinding ----------------------------------


def secret_names(agent: AgentResource, config: AgentConfig) -> list[str]:
    """Every Secret the runtime reads through the API (values never leave the pod)."""
    names = {ref.name for ref in config.secret_refs()}
    auth = agent.spec.runtime.auth
    if auth is not None and auth.api_keys_secret_ref:
        names.add(auth.api_keys_secret_ref)
    return sorted(names)


def document_config_maps(config: AgentConfig) -> list[str]:
    return sorted({k.documents.config_map for k in config.knowledge if k.documents})


def render_service_account(owner: AgentRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(owner),
        "automountServiceAccountToken": True,
    }


def render_role(owner: AgentRef, *, agent: AgentResource, config: AgentConfig) -> Manifest:
    """Least privilege: its own ConfigMap(s) and Secrets by name, tokens of its own
    ServiceAccount when it has partners, and Events.

    A rule with empty ``resourceNames`` would grant every object of the kind, so the Secret
    rule is left out entirely when the agent references no Secret.
    """
    read = ["get", "list", "watch"]
    config_maps = [config_map_name(owner.name), *document_config_maps(config)]
    rules: list[Manifest] = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": config_maps,
            "verbs": read,
        }
    ]
    secrets = secret_names(agent, config)
    if secrets:
        rules.append(
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets, "verbs": read}
        )
    if config.partners:
        # its ServiceAccount's tokens for its partners' audiences (workload identity)
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts/token"],
                "resourceNames": [owner.name],
                "verbs": ["create"],
            }
        )
    rules.append(
        {
            "apiGroups": ["", "events.k8s.io"],
            "resources": ["events"],
            "verbs": ["create", "patch"],
        }
    )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(owner),
        "rules": rules,
    }


def render_role_binding(owner: AgentRef) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": owner.name},
        "subjects": [{"kind": "ServiceAccount", "name": owner.name, "namespace": owner.namespace}],
    }


# --- Service ------------------------------------------------------------------------


def render_service(owner: AgentRef) -> Manifest:
    """Named after the agent: partners reach it as ``<agent>.<namespace>.svc``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


# --- Deployment ---------------------------------------------------------------------


def _env(owner: AgentRef, spec_env: list[EnvVar], settings: OperatorSettings) -> list[Manifest]:
    env: dict[str, Manifest] = {}
    for name, value in settings.otel_env.items():
        env[name] = {"name": name, "value": value}
    env.setdefault("OTEL_SERVICE_NAME", {"name": "OTEL_SERVICE_NAME", "value": owner.name})
    for var in spec_env:
        if var.secret_key_ref is not None:
            ref = var.secret_key_ref
            env[var.name] = {
                "name": var.name,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        else:
            env[var.name] = {"name": var.name, "value": var.value or ""}
    for name in RESERVED_ENV:
        env.pop(name, None)
    reserved: list[Manifest] = [
        {"name": "AGENT_NAME", "value": owner.name},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # the tokens it requests for its partners are bound to this pod: they die with it
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "AGENTSPEC_CONFIGMAP", "value": config_map_name(owner.name)},
    ]
    return reserved + list(env.values())


def _resources(spec: ResourceRequirements) -> Manifest:
    out: Manifest = {}
    if spec.requests:
        out["requests"] = {k: str(v) for k, v in sorted(spec.requests.items())}
    if spec.limits:
        out["limits"] = {k: str(v) for k, v in sorted(spec.limits.items())}
    return out


def render_pod_template(
    owner: AgentRef, *, agent: AgentResource, settings: OperatorSettings
) -> Manifest:
    runtime = agent.spec.runtime
    container: Manifest = {
        "name": CONTAINER,
        "image": runtime.image or settings.runtime_image,
        # No command and no args: the image's entrypoint (`agentspec runtime`) is the whole
        # command line, configured by the environment below.
        "env": _env(owner, runtime.env, settings),
        "ports": [
            {"name": "http", "containerPort": API_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Frequent and cheap: a new replica takes traffic about 2 s after it can serve, and
        # one that stops being ready (a drain, a lost config) is taken out as fast.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "resources": _resources(runtime.resources),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
    }
    # The task store and its leases are fixed for a runtime's life: a change rolls the pods
    # (the push host list is read live, so it does not).
    tasks = agent.spec.tasks.fixed_for_the_process()
    tasks_hash = hashlib.sha256(json.dumps(tasks, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "metadata": {
            "labels": common_labels(owner.name),
            "annotations": {TASKS_ANNOTATION: tasks_hash},
        },
        "spec": {
            "serviceAccountName": owner.name,
            # The runtime watches its ConfigMap and reads its Secrets through the API.
            "automountServiceAccountToken": True,
            # Service env vars of every Service in the namespace are noise to the engine.
            "enableServiceLinks": False,
            # SIGTERM drains in-flight work and checkpoints long tasks before this runs out.
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "fsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        },
    }


def render_deployment(
    owner: AgentRef, *, agent: AgentResource, settings: OperatorSettings
) -> Manifest:
    """With autoscaling, ``spec.replicas`` is left out so the HPA (or KEDA) owns it."""
    runtime = agent.spec.runtime
    spec: Manifest = {
        "selector": {"matchLabels": selector_labels(owner.name)},
        "revisionHistoryLimit": 5,
        # A new pod must be ready before an old one goes: an agent never drops below its count.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": render_pod_template(owner, agent=agent, settings=settings),
    }
    if runtime.autoscaling is None:
        spec = {"replicas": runtime.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner),
        "spec": spec,
    }
