"""`agentspec render` shows what the operator creates: accepted by the apiserver, and equal.

In: examples/multi-agent rendered for a test namespace, and the same files applied there with
the operator running. Asserted: the rendered manifests pass a server-side dry run, and every
field they set is what the operator's children hold (the stored objects carry apiserver
defaults too, so "equal" means: the rendered fields, and their values, are all there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from agentspec_runtime.cli import render_manifests
from tests.support.control_plane import NamespacedKubectl
from tests.support.operator_proc import TEST_IMAGE, OperatorProcess
from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "multi-agent"


def created(kubectl: NamespacedKubectl, kind: str, name: str) -> dict[str, Any]:
    def exists() -> bool:
        return kubectl("get", kind, name, check=False).returncode == 0

    wait_until(exists, timeout=30, what=f"the operator to create {kind}/{name}")
    return kubectl.json("get", kind, name)


def missing(rendered: Any, stored: Any, path: str = "") -> list[str]:
    """Where ``rendered`` is not contained in ``stored``."""
    if rendered in ([], {}) and stored is None:
        return []  # the apiserver does not store empty lists and maps
    if isinstance(rendered, dict):
        if not isinstance(stored, dict):
            return [path]
        return [m for k, v in rendered.items() for m in missing(v, stored.get(k), f"{path}.{k}")]
    if isinstance(rendered, list):
        if not isinstance(stored, list) or len(stored) != len(rendered):
            return [path]
        return [
            m
            for i, (a, b) in enumerate(zip(rendered, stored, strict=True))
            for m in missing(a, b, f"{path}[{i}]")
        ]
    return [] if rendered == stored else [f"{path}: {rendered!r} != {stored!r}"]


def test_render_matches_the_operator_and_passes_dry_run(
    kubectl: NamespacedKubectl,
    namespace: str,
    operator: OperatorProcess,
) -> None:
    del operator
    manifests = render_manifests([EXAMPLE], namespace=namespace, image=TEST_IMAGE)
    text = yaml.safe_dump_all(manifests)
    dry = kubectl("apply", "--dry-run=server", "-f", "-", input=text)
    assert dry.stdout.count("(server dry run)") == len(manifests)
    kubectl("apply", "-f", str(EXAMPLE))
    for rendered in manifests:
        kind, name = rendered["kind"], rendered["metadata"]["name"]
        stored = created(kubectl, kind, name)
        expected = rendered
        if kind == "ConfigMap":  # the payload as data; only a cluster knows the generation
            rendered_payload = json.loads(rendered["data"]["agent.json"])
            stored_payload = json.loads(stored["data"]["agent.json"])
            stored_payload.pop("generation")
            assert rendered_payload == stored_payload
            expected = {**rendered, "data": {}}
        problems = missing({k: v for k, v in expected.items() if k != "metadata"}, stored)
        problems += missing(rendered["metadata"]["labels"], stored["metadata"]["labels"])
        assert problems == [], f"{kind}/{name}: {problems}"
