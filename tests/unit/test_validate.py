"""`agentspec validate`: schema and cross-file mistakes, each named by file, document, field.

In: copies of examples/multi-agent with one mistake each. Asserted: the exit status and the
exact problem line.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentspec_runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
Docs = list[dict[str, Any]]


def edit_agents(fn: Callable[[Docs], None]) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        path = folder / "agents.yaml"
        docs = list(yaml.safe_load_all(path.read_text()))
        fn(docs)
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path

    return apply


def finance(docs: Docs) -> dict[str, Any]:
    doc: dict[str, Any] = next(d for d in docs if d["metadata"]["name"] == "finance")
    return doc


CASES = [
    (
        "missing-template",
        edit_agents(lambda d: finance(d)["spec"]["promptRef"].update(name="nope")),
        "document 3 (AgentSpec/finance): spec.promptRef.name: PromptTemplate 'nope' not found",
    ),
    (
        "missing-version",
        edit_agents(lambda d: finance(d)["spec"]["promptRef"].update(version="v7")),
        "spec.promptRef.version: PromptTemplate 'finance-prompt' has no version 'v7'",
    ),
    (
        "missing-mcp",
        edit_agents(lambda d: finance(d)["spec"]["mcpServers"][0].update(name="ghost-tools")),
        "spec.mcpServers[0].name: McpServer 'ghost-tools' not found",
    ),
    (
        "missing-partner",
        edit_agents(lambda d: d[0]["spec"]["partners"].append({"name": "legal"})),
        "document 1 (AgentSpec/router): spec.partners[2].name: partner "
        "AgentSpec default/legal not found",
    ),
    (
        "knowledge-partner",
        edit_agents(
            lambda d: finance(d)["spec"].update(
                knowledge=[{"name": "kb", "partner": {"name": "legal"}}]
            )
        ),
        "document 3 (AgentSpec/finance): spec.knowledge[0].partner.name: 'legal' is not in "
        "spec.partners",
    ),
    (
        "schema",
        edit_agents(lambda d: finance(d)["spec"].update(maxIterations=0)),
        "document 3 (AgentSpec/finance): spec.maxIterations: Input should be greater than or "
        "equal to 1",
    ),
]


@pytest.mark.parametrize(("name", "mistake", "problem"), CASES, ids=[c[0] for c in CASES])
def test_each_mistake_is_named_precisely(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    mistake: Callable[[Path], Path],
    problem: str,
) -> None:
    del name
    folder = tmp_path / "specs"
    shutil.copytree(ROOT / "examples" / "multi-agent", folder)
    path = mistake(folder)
    assert main(["validate", str(folder)]) == 1
    err = capsys.readouterr().err
    # the line names the file, the document and the field
    assert any(
        line.startswith(f"{path}: document ") and problem in line for line in err.splitlines()
    ), err


def test_the_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "examples")]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_broken_yaml_and_missing_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [unclosed")
    assert main(["validate", str(tmp_path / "bad.yaml"), str(tmp_path / "absent.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.yaml'}: not valid YAML" in err
    assert f"{tmp_path / 'absent.yaml'}: no such file or folder" in err
