"""Resolving an AgentSpec against what it references: the ConfigMap payload contract.

In: AgentSpec documents plus PromptTemplates, McpServers and partner AgentSpecs (the
examples, or small variations). Asserted: the whole resolved payload for the router, every
dangling reference named by field, revisions that change exactly when the payload does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentspec_runtime.spec import (
    AgentResource,
    McpServerResource,
    PromptTemplateResource,
    parse_resource,
)
from agentspec_runtime.spec.resolved import (
    ACCEPT_CALLERS_ANNOTATION,
    AgentConfig,
    ResolutionError,
    resolve_agent,
)

ROOT = Path(__file__).resolve().parents[2]
NS = "demo"


def load(folder: str) -> list[dict[str, Any]]:
    return [
        d
        for p in sorted((ROOT / "examples" / folder).glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d and d["apiVersion"].startswith("agentspec.io/")
    ]


def resolve(docs: list[dict[str, Any]], name: str, **overrides: Any) -> AgentConfig:
    parsed = [parse_resource(d) for d in docs]
    agents = {r.metadata.name: r for r in parsed if isinstance(r, AgentResource)}
    kwargs: dict[str, Any] = {
        "namespace": NS,
        "prompts": {r.metadata.name: r for r in parsed if isinstance(r, PromptTemplateResource)},
        "mcp_servers": {r.metadata.name: r for r in parsed if isinstance(r, McpServerResource)},
        "partners": {(r.metadata.namespace or NS, n): r for n, r in agents.items()},
    }
    kwargs.update(overrides)
    return resolve_agent(agents[name], **kwargs)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_router_resolves_to_the_documented_payload() -> None:
    config = resolve(load("multi-agent"), "router")
    payload = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert payload["prompt"] == {
        "templateName": "router-prompt",
        "promptKey": "demo.router",
        "stable": "v1",
        "versions": [
            {
                "version": "v1",
                "template": find(load("multi-agent"), "PromptTemplate", "router-prompt")["spec"][
                    "versions"
                ][0]["template"],
                "variables": [
                    {
                        "name": "company",
                        "default": "ACME",
                        "description": "Company name used in greetings.",
                        "callerSettable": False,
                    }
                ],
            }
        ],
        "variables": {"company": "ACME"},
    }
    assert payload["partners"] == [
        {
            "name": "hr",
            "namespace": NS,
            "url": "http://hr.demo.svc.cluster.local:8080",
            "description": "Answers questions about leave, benefits and hiring.",
            "headers": [],
        },
        {
            "name": "finance",
            "namespace": NS,
            "url": "http://finance.demo.svc.cluster.local:8080",
            "description": "Answers questions about expenses, invoices and budgets.",
            "headers": [],
        },
    ]
    assert payload["kind"] == "AgentConfig"
    assert payload["maxIterations"] == 6
    assert AgentConfig.model_validate_json(config.to_json()) == config


def test_canary_and_mcp_servers_resolve_with_secret_refs_only() -> None:
    config = resolve(load("mcp-assistant"), "registry-assistant")
    assert config.prompt.stable == "v1"
    assert config.prompt.canary is not None
    assert (config.prompt.canary.version, config.prompt.canary.weight) == ("v2", 20)
    assert [v.version for v in config.prompt.versions] == ["v1", "v2"]
    docs = config.mcp_servers[1]
    assert (docs.name, docs.transport, docs.url) == (
        "docs-search",
        "sse",
        "http://docs-search:8000/sse",
    )
    assert [(r.name, r.key) for r in config.secret_refs()] == [
        ("docs-search-credentials", "api-key"),
        ("model-credentials", "api-key"),
    ]
    assert "replace-me" not in config.to_json()


def test_the_guards_keys_are_secret_refs_too() -> None:
    """The runtime's Role must grant them, and the pod read them, like every other key."""
    docs = load("mcp-assistant")
    agent = find(docs, "AgentSpec", "registry-assistant")
    agent["spec"].setdefault("runtime", {})["guard"] = {
        "moderationUrl": "https://moderation.example/v1/moderations",
        "moderationApiKeySecretRef": {"name": "moderation", "key": "token"},
        "model": {
            "model": "llama-guard",
            "baseUrl": "http://guard.example/v1",
            "apiKeySecretRef": {"name": "guard-model", "key": "api-key"},
        },
    }
    config = resolve(docs, "registry-assistant")
    assert [(r.name, r.key) for r in config.secret_refs()] == [
        ("docs-search-credentials", "api-key"),
        ("guard-model", "api-key"),
        ("model-credentials", "api-key"),
        ("moderation", "token"),
    ]


def test_pinned_version_and_label_ignore_the_release() -> None:
    docs = load("mcp-assistant")
    agent = find(docs, "AgentSpec", "registry-assistant")
    agent["spec"]["promptRef"]["version"] = "v2"
    pinned = resolve(docs, "registry-assistant")
    assert (pinned.prompt.stable, pinned.prompt.canary) == ("v2", None)
    del agent["spec"]["promptRef"]["version"]
    agent["spec"]["promptRef"]["label"] = "prod"
    labelled = resolve(docs, "registry-assistant")
    assert (labelled.prompt.stable, labelled.prompt.canary) == ("v1", None)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"]["promptRef"].update(name="gone"),
            "spec.promptRef.name: PromptTemplate 'gone' not found",
        ),
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"]["promptRef"].update(version="v9"),
            "spec.promptRef.version: PromptTemplate 'finance-prompt' has no version 'v9'",
        ),
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"]["promptRef"].update(label="prod"),
            "spec.promptRef.label: PromptTemplate 'finance-prompt' has no label 'prod'",
        ),
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"]["promptRef"].update(
                variables={"nope": "x"}
            ),
            "spec.promptRef.variables: PromptTemplate 'finance-prompt' declares no variable 'nope'",
        ),
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"]["mcpServers"][0].update(name="gone"),
            "spec.mcpServers[0].name: McpServer 'gone' not found",
        ),
        (
            lambda d: find(d, "McpServer", "expense-tools")["spec"].update(
                headers=[{"name": "X-Api-Key"}]
            ),
            "spec.mcpServers[0].headers: McpServer 'expense-tools' requires header 'X-Api-Key'",
        ),
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"].update(partners=[{"name": "ghost"}]),
            "spec.partners[0].name: partner AgentSpec demo/ghost not found",
        ),
        (
            lambda d: find(d, "AgentSpec", "finance")["spec"].update(
                knowledge=[{"name": "kb", "partner": {"name": "hr"}}]
            ),
            "spec.knowledge[0].partner.name: 'hr' is not in spec.partners",
        ),
    ],
)
def test_dangling_references_are_named(edit: Any, problem: str) -> None:
    docs = copy.deepcopy(load("multi-agent"))
    edit(docs)
    with pytest.raises(ResolutionError) as err:
        resolve(docs, "finance")
    assert [str(p) for p in err.value.problems] == [problem]


def test_cross_namespace_partner_needs_the_partners_consent() -> None:
    docs = load("multi-agent")
    router = find(docs, "AgentSpec", "router")
    router["spec"]["partners"] = [{"name": "hr", "namespace": "people"}]
    hr = copy.deepcopy(find(docs, "AgentSpec", "hr"))
    hr["metadata"]["namespace"] = "people"
    docs.append(hr)
    parsed_hr = parse_resource(hr)
    assert isinstance(parsed_hr, AgentResource)
    with pytest.raises(ResolutionError, match="does not accept callers from namespace 'demo'"):
        resolve(docs, "router", partners={("people", "hr"): parsed_hr})
    hr["metadata"]["annotations"] = {ACCEPT_CALLERS_ANNOTATION: "ops, demo"}
    consenting = parse_resource(hr)
    assert isinstance(consenting, AgentResource)
    config = resolve(
        docs,
        "router",
        partners={("people", "hr"): consenting},
        partner_url="http://127.0.0.1:9000/{namespace}/{name}",
    )
    assert config.partners[0].url == "http://127.0.0.1:9000/people/hr"


def test_revision_changes_exactly_when_the_payload_does() -> None:
    docs = load("multi-agent")
    first = resolve(docs, "router")
    assert resolve(copy.deepcopy(docs), "router").revision() == first.revision()
    find(docs, "AgentSpec", "router")["spec"]["model"]["temperature"] = 0.7
    assert resolve(docs, "router").revision() != first.revision()
    assert len(first.revision()) == 16


def test_inline_prompt_placeholders_become_request_variables() -> None:
    docs = load("multi-agent")
    hr = find(docs, "AgentSpec", "hr")
    del hr["spec"]["promptRef"]
    hr["spec"]["prompt"] = "Help {{ user }} with HR. {{ user }} works in {{ dept }}."
    config = resolve(docs, "hr")
    assert config.prompt.template_name is None
    assert [v.name for v in config.prompt.versions[0].variables] == ["user", "dept"]
