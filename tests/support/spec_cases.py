"""Valid base documents and a table of invalid ones, shared by the model and apiserver tests.

Each :class:`InvalidCase` is one mistake a user can make. The same document is sent to
the real kube-apiserver (``kubectl apply``) and to the pydantic models; both must reject
it and both messages must name ``field``. Where the rule is an Invariant the wording is
the same on both sides, so ``says`` is checked on both too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


def agent(**spec: Any) -> Doc:
    base: Doc = {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "AgentSpec",
        "metadata": {"name": "bad-agent"},
        "spec": {
            "description": "test agent",
            "prompt": "You are helpful.",
            "model": {"model": "gpt-4o-mini"},
        },
    }
    base["spec"].update(spec)
    return base


def prompt_template(**spec: Any) -> Doc:
    base: Doc = {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "PromptTemplate",
        "metadata": {"name": "bad-prompt"},
        "spec": {
            "versions": [
                {"version": "v1", "template": "Hello {{ who }}", "variables": [{"name": "who"}]},
                {"version": "v2", "template": "Hi {{ who }}", "variables": [{"name": "who"}]},
            ],
            "release": {"stable": "v1"},
        },
    }
    base["spec"].update(spec)
    return base


def mcp_server(**spec: Any) -> Doc:
    base: Doc = {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "McpServer",
        "metadata": {"name": "bad-mcp"},
        "spec": {"url": "http://tools:8000/mcp"},
    }
    base["spec"].update(spec)
    return base


def _edit(doc: Doc, fn: Callable[[Doc], None]) -> Doc:
    doc = copy.deepcopy(doc)
    fn(doc)
    return doc


def _drop_model(doc: Doc) -> None:
    del doc["spec"]["model"]


def _drop_model_name(doc: Doc) -> None:
    del doc["spec"]["model"]["model"]


def _both_prompts(doc: Doc) -> None:
    doc["spec"]["promptRef"] = {"name": "p"}


def _no_prompt(doc: Doc) -> None:
    del doc["spec"]["prompt"]


def _own_partner(doc: Doc) -> None:
    doc["spec"]["partners"] = [{"name": doc["metadata"]["name"]}]


def _typo(doc: Doc) -> None:
    doc["spec"]["model"]["temprature"] = 0.5


@dataclass(frozen=True)
class InvalidCase:
    id: str
    doc: Doc
    field: str
    """Field path both the apiserver and the models must name."""
    says: str = ""
    """Message fragment both must contain (Invariants share their wording)."""
    server_says: str = ""
    """Fragment only the apiserver's message must contain (its own schema wording)."""


_CRED = "credentials must come from a Secret"

INVALID: list[InvalidCase] = [
    # --- schema: types, required fields, ranges, enums, unknown fields -----------
    InvalidCase(
        "wrong-type",
        agent(maxIterations="ten"),
        "spec.maxIterations",
        server_says="must be of type integer",
    ),
    InvalidCase(
        "out-of-range",
        agent(maxIterations=500),
        "spec.maxIterations",
        server_says="less than or equal to 100",
    ),
    InvalidCase(
        "missing-model", _edit(agent(), _drop_model), "spec.model", server_says="Required value"
    ),
    InvalidCase(
        "missing-model-name",
        _edit(agent(), _drop_model_name),
        "spec.model.model",
        server_says="Required value",
    ),
    InvalidCase(
        "bad-enum",
        agent(memory={"type": "postgres"}),
        "spec.memory.type",
        server_says="Unsupported value",
    ),
    InvalidCase(
        "temperature-range",
        agent(model={"model": "m", "temperature": 3}),
        "spec.model.temperature",
        server_says="less than or equal to 2",
    ),
    InvalidCase(
        "unknown-field", _edit(agent(), _typo), "spec.model.temprature", server_says="unknown field"
    ),
    InvalidCase(
        "bad-quantity",
        agent(runtime={"resources": {"limits": {"memory": "lots"}}}),
        "spec.runtime.resources.limits.memory",
        server_says="should match",
    ),
    InvalidCase(
        "bad-name",
        agent(partners=[{"name": "Not_A_DNS_Name"}]),
        "spec.partners[0].name",
        server_says="should match",
    ),
    InvalidCase(
        "weight-range",
        prompt_template(release={"stable": "v1", "canary": {"version": "v2", "weight": 150}}),
        "spec.release.canary.weight",
        server_says="less than or equal to 100",
    ),
    InvalidCase(
        "bad-transport",
        mcp_server(transport="websocket"),
        "spec.transport",
        server_says="Unsupported value",
    ),
    InvalidCase(
        "bad-url", mcp_server(url="ftp://tools/mcp"), "spec.url", server_says="should match"
    ),
    InvalidCase(
        "no-versions",
        prompt_template(versions=[]),
        "spec.versions",
        server_says="should have at least 1 items",
    ),
    InvalidCase(
        "bad-variable-key",
        agent(prompt=None, promptRef={"name": "p", "variables": {"not-an-identifier": "x"}}),
        "spec.promptRef.variables",
        server_says="every key must match",
    ),
    # --- uniqueness (list-type map) ---------------------------------------------
    InvalidCase(
        "duplicate-partner",
        agent(partners=[{"name": "hr"}, {"name": "hr"}]),
        "spec.partners[1]",
        server_says="Duplicate value",
    ),
    InvalidCase(
        "duplicate-mcp",
        agent(mcpServers=[{"name": "a"}, {"name": "a"}]),
        "spec.mcpServers[1]",
        server_says="Duplicate value",
    ),
    InvalidCase(
        "duplicate-version",
        prompt_template(
            versions=[{"version": "v1", "template": "a"}, {"version": "v1", "template": "b"}]
        ),
        "spec.versions[1]",
        server_says="Duplicate value",
    ),
    # --- CEL invariants -------------------------------------------------------
    InvalidCase(
        "both-prompts",
        _edit(agent(), _both_prompts),
        "spec",
        says="set exactly one of promptRef or prompt",
    ),
    InvalidCase(
        "no-prompt",
        _edit(agent(), _no_prompt),
        "spec",
        says="set exactly one of promptRef or prompt",
    ),
    InvalidCase(
        "version-and-label",
        agent(prompt=None, promptRef={"name": "p", "version": "v1", "label": "prod"}),
        "spec.promptRef.label",
        says="set at most one of version or label",
    ),
    InvalidCase(
        "literal-api-key",
        agent(model={"model": "m", "apiKey": "sk-123"}),
        "spec.model.apiKey",
        says="literal API keys are not allowed",
    ),
    InvalidCase(
        "literal-auth-header",
        agent(model={"model": "m", "headers": [{"name": "Authorization", "value": "Bearer x"}]}),
        "spec.model.headers[0].value",
        says=_CRED,
    ),
    InvalidCase(
        "literal-mcp-key",
        agent(mcpServers=[{"name": "a", "headers": [{"name": "X-Api-Key", "value": "k"}]}]),
        "spec.mcpServers[0].headers[0].value",
        says=_CRED,
    ),
    InvalidCase(
        "value-and-valuefrom",
        agent(
            partners=[
                {
                    "name": "hr",
                    "headers": [
                        {
                            "name": "X-Tenant",
                            "value": "a",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        }
                    ],
                }
            ]
        ),
        "spec.partners[0].headers[0]",
        says="set exactly one of value or valueFrom",
    ),
    InvalidCase(
        "own-partner",
        _edit(agent(), _own_partner),
        "spec.partners",
        says="an agent cannot be its own partner",
    ),
    InvalidCase(
        "min-over-max",
        agent(
            runtime={
                "autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetTokensPerSecond": 100}
            }
        ),
        "spec.runtime.autoscaling.minReplicas",
        says="minReplicas must not exceed maxReplicas",
    ),
    InvalidCase(
        "queued-tasks-without-keda",
        agent(
            runtime={
                "autoscaling": {
                    "maxReplicas": 2,
                    "targetTokensPerSecond": 100,
                    "targetQueuedTasks": 5,
                }
            }
        ),
        "spec.runtime.autoscaling.targetQueuedTasks",
        says="targetQueuedTasks needs provider keda",
    ),
    InvalidCase(
        "queued-tasks-without-shared-store",
        agent(
            runtime={
                "autoscaling": {
                    "provider": "keda",
                    "maxReplicas": 2,
                    "targetTokensPerSecond": 100,
                    "targetQueuedTasks": 5,
                }
            }
        ),
        "spec.runtime.autoscaling.targetQueuedTasks",
        says="targetQueuedTasks needs the shared task store",
    ),
    InvalidCase(
        "redis-url-credentials",
        agent(memory={"type": "redis", "url": "redis://:hunter2@redis:6379/0"}),
        "spec.memory.url",
        says="credentials in url are not allowed",
    ),
    InvalidCase(
        "model-base-url-credentials",
        agent(model={"model": "m", "baseUrl": "https://user:sk-secret@llm.example/v1"}),
        "spec.model.baseUrl",
        says="credentials in baseUrl are not allowed",
    ),
    InvalidCase(
        "mcp-url-credentials",
        mcp_server(url="http://admin:hunter2@tools:8000/mcp"),
        "spec.url",
        says="credentials in url are not allowed",
    ),
    InvalidCase(
        "redis-without-address",
        agent(memory={"type": "redis"}),
        "spec.memory",
        says="redis memory needs url or urlSecretRef",
    ),
    InvalidCase(
        "two-knowledge-sources",
        agent(
            knowledge=[
                {"name": "kb", "partner": {"name": "hr"}, "documents": {"configMap": "docs"}}
            ]
        ),
        "spec.knowledge[0]",
        says="set exactly one source",
    ),
    InvalidCase(
        "stable-missing",
        prompt_template(release={"stable": "v9"}),
        "spec.release.stable",
        says="release.stable must name one of versions",
    ),
    InvalidCase(
        "canary-missing",
        prompt_template(release={"stable": "v1", "canary": {"version": "v9", "weight": 10}}),
        "spec.release.canary.version",
        says="release.canary.version must name one of versions",
    ),
    InvalidCase(
        "canary-is-stable",
        prompt_template(release={"stable": "v1", "canary": {"version": "v1", "weight": 10}}),
        "spec.release.canary.version",
        says="must differ from the stable version",
    ),
    InvalidCase(
        "label-missing",
        prompt_template(labels={"prod": "v7"}),
        "spec.labels",
        says="every label must point at one of versions",
    ),
]
