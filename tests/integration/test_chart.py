"""The Helm chart (minimal for now: the generated CRDs) lints, renders and is accepted by the
real apiserver."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agentspec"


def _helm(control_plane: ControlPlane, *args: str) -> str:
    return subprocess.run(
        [str(control_plane.bin_dir / "helm"), *args],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout


def test_chart_lints_and_ships_the_generated_crds(control_plane: ControlPlane) -> None:
    _helm(control_plane, "lint", str(CHART))
    rendered = _helm(control_plane, "template", "agentspec", str(CHART), "--include-crds")
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {p.name.removesuffix(".yaml") for p in (ROOT / "crds").glob("*.yaml")}
    for path in (ROOT / "crds").glob("*.yaml"):
        assert crds[path.name.removesuffix(".yaml")] == yaml.safe_load(path.read_text())
    result = control_plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm-check",
        "--force-conflicts",
        "-f",
        "-",
        input=rendered,
    )
    assert result.stdout.count("serverside-applied (server dry run)") == len(crds)
