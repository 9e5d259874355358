"""Spec models: the examples parse, and every invalid case is rejected naming its field.

The same cases run against the real apiserver in tests/integration/test_crds.py; here
they run against the pydantic models that `agentspec validate`, local mode and the
operator use, so both sides reject the same documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agentspec_runtime.spec import (
    AgentResource,
    PromptTemplateResource,
    SpecError,
    parse_resource,
)
from agentspec_runtime.spec.problems import Problem
from tests.support.spec_cases import INVALID, InvalidCase, agent, prompt_template

ROOT = Path(__file__).resolve().parents[2]


def example_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and str(doc.get("apiVersion", "")).startswith("agentspec.io/"):
                docs.append((f"{path.relative_to(ROOT)}:{doc['metadata']['name']}", doc))
    return docs


@pytest.mark.parametrize(("where", "doc"), example_docs(), ids=lambda v: str(v)[:60])
def test_every_example_document_is_valid(where: str, doc: dict[str, Any]) -> None:
    resource = parse_resource(doc)
    assert resource.metadata.name == doc["metadata"]["name"], where


def test_examples_cover_the_kinds_the_issue_asks_for() -> None:
    kinds = [d["kind"] for _, d in example_docs()]
    assert {"AgentSpec", "PromptTemplate", "McpServer"} <= set(kinds)
    agents = {d["metadata"]["name"]: d for _, d in example_docs() if d["kind"] == "AgentSpec"}
    assert {p["name"] for p in agents["router"]["spec"]["partners"]} == {"hr", "finance"}
    canaried = [
        d
        for _, d in example_docs()
        if d["kind"] == "PromptTemplate" and "canary" in d["spec"]["release"]
    ]
    assert canaried, "one PromptTemplate must demonstrate a canary release"


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_spec_is_rejected_naming_the_field(case: InvalidCase) -> None:
    with pytest.raises(SpecError) as err:
        parse_resource(case.doc)
    problems = [str(p) for p in err.value.problems]
    assert {p.reason for p in err.value.problems} == {"InvalidSpec"}
    assert any(
        p.startswith(f"{case.field}:") or p.startswith(f"{case.field}.") for p in problems
    ), problems
    if case.says:
        assert any(case.says in p for p in problems), problems


def test_defaults_are_filled_and_documents_round_trip() -> None:
    resource = parse_resource(agent())
    assert isinstance(resource, AgentResource)
    assert resource.spec.max_iterations == 10
    assert resource.spec.model.timeout_seconds == 60
    assert resource.spec.memory.type == "inMemory"
    dumped = resource.model_dump(by_alias=True, exclude_none=True)
    assert parse_resource(dumped) == resource


def test_template_must_declare_the_variables_it_uses() -> None:
    """A check only Python can make (CEL cannot parse templates): validate and the operator."""
    doc = prompt_template(
        versions=[
            {
                "version": "v1",
                "template": "Hi {{ name }} from {{ org }}",
                "variables": [{"name": "name"}],
            }
        ]
    )
    with pytest.raises(SpecError) as err:
        parse_resource(doc)
    assert err.value.problems == [
        Problem(
            "InvalidSpec",
            "spec.versions[0].template",
            "uses {{ org }} but variables does not declare 'org'",
        )
    ]


def test_prompt_template_finds_versions_by_name() -> None:
    resource = parse_resource(prompt_template())
    assert isinstance(resource, PromptTemplateResource)
    v2 = resource.spec.version("v2")
    assert v2 is not None
    assert v2.template == "Hi {{ who }}"
    assert resource.spec.version("v9") is None


def test_wrong_api_version_and_kind_are_named() -> None:
    with pytest.raises(SpecError, match=r"apiVersion: must be agentspec\.io/v1alpha1"):
        parse_resource({**agent(), "apiVersion": "agentspec.io/v2"})
    with pytest.raises(SpecError, match="kind: must be one of AgentSpec"):
        parse_resource({**agent(), "kind": "Agent"})


def test_models_are_immutable_snapshots() -> None:
    resource = parse_resource(agent())
    assert isinstance(resource, AgentResource)
    with pytest.raises(ValueError, match="frozen"):
        resource.spec.model.model = "other"  # type: ignore[misc]
