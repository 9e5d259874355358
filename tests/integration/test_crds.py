"""The generated CRDs against the real kube-apiserver: install, explain, columns, examples,
and rejection of invalid specs at apply time with a message naming the field.

Every test runs in its own namespace of the session control plane (tests/conftest.py), which
has applied crds/ before the first test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.spec_cases import INVALID, InvalidCase, agent, prompt_template

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIRS = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())


def test_crds_are_established_with_their_names(control_plane: ControlPlane) -> None:
    for plural in ("agentspecs", "prompttemplates", "mcpservers"):
        crd = control_plane.kubectl_json("get", "crd", f"{plural}.agentspec.io")
        status = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert status["Established"] == "True", crd["status"]
        assert status["NamesAccepted"] == "True", crd["status"]
    resources = control_plane.kubectl(
        "api-resources", "--api-group=agentspec.io", "--no-headers"
    ).stdout
    rows = {line.split()[0]: line.split() for line in resources.splitlines()}
    assert rows["agentspecs"][1] == "agent,agents"
    assert rows["prompttemplates"][1] == "prompt,prompts,pt"
    assert rows["mcpservers"][1] == "mcp"


def test_kubectl_explain_documents_fields(control_plane: ControlPlane) -> None:
    model = control_plane.kubectl("explain", "agentspec.spec.model").stdout
    assert "The chat model." in model
    assert "Sampling temperature, 0-2" in model
    assert "apiKeySecretRef" in model
    canary = control_plane.kubectl("explain", "prompttemplate.spec.release.canary").stdout
    assert "Percentage of conversations (0-100) that get the canary" in canary
    transport = control_plane.kubectl("explain", "mcpserver.spec.transport").stdout
    assert "MCP transport" in transport
    assert "streamable-http" in transport


def test_get_shows_printer_columns_filled_from_status(kubectl: NamespacedKubectl) -> None:
    kubectl.apply(agent())
    # The operator will own status; here we write it through the status subresource the way
    # it will, to see the columns render.
    status = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Available",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "endpoint": "http://bad-agent.ns.svc.cluster.local:8080",
            "promptVersion": "v2+v3@10%",
            "readyReplicas": 2,
        }
    }
    kubectl(
        "patch",
        "agentspec",
        "bad-agent",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    header, row = kubectl("get", "agents").stdout.splitlines()
    assert header.split() == ["NAME", "READY", "MODEL", "PROMPT", "ENDPOINT", "REPLICAS", "AGE"]
    assert row.split()[:6] == [
        "bad-agent",
        "True",
        "gpt-4o-mini",
        "v2+v3@10%",
        "http://bad-agent.ns.svc.cluster.local:8080",
        "2",
    ]
    # status is a subresource: a spec apply cannot write it, and it survives one
    kubectl.apply(agent(maxIterations=3))
    stored = kubectl.json("get", "agentspec", "bad-agent")
    assert stored["status"]["readyReplicas"] == 2
    assert stored["spec"]["maxIterations"] == 3


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_examples_apply_with_server_dry_run_and_for_real(
    kubectl: NamespacedKubectl, example: Path
) -> None:
    dry = kubectl("apply", "--dry-run=server", "-f", str(example))
    assert "(server dry run)" in dry.stdout
    kubectl("apply", "-f", str(example))
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for path in example.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"].startswith("agentspec.io/")
    }
    listed = kubectl.json("get", "agentspecs,prompttemplates,mcpservers")
    stored = {(item["kind"], item["metadata"]["name"]) for item in listed["items"]}
    assert stored == expected


def test_apiserver_fills_defaults(kubectl: NamespacedKubectl) -> None:
    kubectl.apply(agent(partners=[{"name": "hr"}]))
    spec = kubectl.json("get", "agentspec", "bad-agent")["spec"]
    assert spec["maxIterations"] == 10
    assert spec["model"]["timeoutSeconds"] == 60
    assert "memory" not in spec, "object defaults are not stamped onto every resource"


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_spec_is_rejected_at_apply_naming_the_field(
    kubectl: NamespacedKubectl, case: InvalidCase
) -> None:
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(case.doc), check=False
    )
    assert result.returncode != 0, f"accepted: {result.stdout}"
    err = result.stderr
    assert case.field in err, err
    for fragment in (case.says, case.server_says):
        assert fragment in err, err


def test_published_prompt_versions_are_immutable(kubectl: NamespacedKubectl) -> None:
    kubectl.apply(prompt_template())
    edited = prompt_template()
    edited["spec"]["versions"][0]["template"] = "Changed {{ who }}"
    result = kubectl("apply", "-f", "-", input=json.dumps(edited), check=False)
    assert result.returncode != 0
    assert "spec.versions[0].template" in result.stderr
    assert "a published version is immutable" in result.stderr
    # adding a version and moving the release is how a prompt changes
    released = prompt_template(release={"stable": "v3", "canary": {"version": "v2", "weight": 10}})
    released["spec"]["versions"].append({"version": "v3", "template": "Hey"})
    kubectl.apply(released)
    stored = kubectl.json("get", "prompttemplate", "bad-prompt")["spec"]
    assert stored["release"] == {"stable": "v3", "canary": {"version": "v2", "weight": 10}}
    assert stored["versions"][0]["template"] == "Hello {{ who }}"
