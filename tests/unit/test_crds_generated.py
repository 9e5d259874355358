"""The committed CRDs are exactly what the spec models generate, and document every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agentspec_runtime.cli import main, render_crds
from agentspec_runtime.spec import KINDS

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    rendered = render_crds()
    on_disk = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert set(on_disk) == set(rendered), "run `agentspec crds` to regenerate crds/"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"crds/{name} is stale: run `agentspec crds`"


def test_crds_check_command_detects_drift(tmp_path: Path) -> None:
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 0
    target = tmp_path / "agentspecs.agentspec.io.yaml"
    target.write_text(target.read_text().replace("Chat model", "Chat modle"))
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Paths of schema nodes lacking a description, and any non-structural keyword."""
    bad = []
    for keyword in ("$ref", "allOf", "oneOf", "title", "$defs", "const"):
        if keyword in node:
            bad.append(f"{path}: has {keyword}")
    if "properties" in node and "additionalProperties" in node:
        bad.append(f"{path}: properties with additionalProperties")
    if (
        node.get("type") == "object"
        and not (
            {"properties", "additionalProperties", "x-kubernetes-preserve-unknown-fields"}
            & set(node)
        )
        and not path.endswith(".metadata")
    ):
        bad.append(f"{path}: an object that accepts no fields")
    for name, sub in node.get("properties", {}).items():
        if "description" not in sub and name not in ("metadata",):
            bad.append(f"{path}.{name}: no description")
        bad += _walk(sub, f"{path}.{name}")
    if "items" in node:
        bad += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        bad += _walk(node["additionalProperties"], f"{path}{{}}")
    return bad


def test_every_field_is_documented_and_structural() -> None:
    for name, text in render_crds().items():
        crd = yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema, crd["spec"]["names"]["kind"]) == [], name


def test_names_columns_and_status_subresource() -> None:
    crds = {
        yaml.safe_load(t)["spec"]["names"]["kind"]: yaml.safe_load(t)
        for t in render_crds().values()
    }
    assert set(crds) == set(KINDS)
    agent = crds["AgentSpec"]["spec"]
    assert agent["group"] == "agentspec.io"
    assert agent["names"]["shortNames"] == ["agent", "agents"]
    version = agent["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert columns == ["READY", "MODEL", "PROMPT", "ENDPOINT", "REPLICAS", "AGE"]
