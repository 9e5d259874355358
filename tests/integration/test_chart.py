"""The Helm chart: lints, renders objects the real apiserver accepts, rejects bad values with
the field named, installs, and its settings and RBAC are enough for the operator to work.

The install test uses a private control plane, so no other operator reconciles there: the
operator runs with exactly the installed Deployment's arguments, authenticated as the chart's
ServiceAccount (a token, as its pod would mount), and must reconcile an AgentSpec.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.control_plane import ControlPlane
from tests.support.operator_proc import OperatorProcess
from tests.support.operator_testkit import agent_doc, condition, eventually, get, prompt_doc

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agentspec"
RELEASE_NS = "agentspec-system"


def helm(plane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(plane.bin_dir / "helm"), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        stdin=subprocess.DEVNULL,
    )


def test_chart_lints_and_ships_the_generated_crds(control_plane: ControlPlane) -> None:
    assert "0 chart(s) failed" in helm(control_plane, "lint", "--strict", str(CHART)).stdout
    rendered = helm(control_plane, "template", "agentspec", str(CHART), "--include-crds").stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {p.name.removesuffix(".yaml") for p in (ROOT / "crds").glob("*.yaml")}
    for path in (ROOT / "crds").glob("*.yaml"):
        assert crds[path.name.removesuffix(".yaml")] == yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set",
            "operator.watchNamespaces={team-a,team-b}",
            "--set",
            "otel.endpoint=http://otel:4318",
            "--set",
            "operator.serviceMonitor.enabled=false",
        ],
    ],
    ids=["cluster-wide", "watched-namespaces"],
)
def test_rendered_chart_is_accepted_by_the_apiserver(
    control_plane: ControlPlane,
    namespace: str,
    values: list[str],
) -> None:
    for ns in ("team-a", "team-b"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    rendered = helm(
        control_plane, "template", "agentspec", str(CHART), "-n", namespace, *values
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = [d["kind"] for d in docs]
    assert "Deployment" in kinds
    namespaced = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "agentspec-operator"
    }
    assert namespaced == ({"team-a", "team-b"} if values else set())
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.stdout.count("(server dry run)") == len(kinds)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("operator.replicas=0", "/operator/replicas"),
        ("operator.logLevel=LOUD", "/operator/logLevel"),
        ("operator.workerz=3", "workerz"),
        ("otel.endpoint=ftp://collector", "/otel/endpoint"),
        ("runtime.image.pullPolicy=Sometimes", "/runtime/image/pullPolicy"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    control_plane: ControlPlane,
    setting: str,
    says: str,
) -> None:
    result = helm(control_plane, "template", "agentspec", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        yield cp


def sa_kubeconfig(plane: ControlPlane, path: Path) -> Path:
    token = plane.kubectl(
        "create", "token", "agentspec-operator", namespace=RELEASE_NS
    ).stdout.strip()
    ca = base64.b64encode(plane.ca_cert.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "op",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": plane.server, "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": "op", "user": {"token": token}}],
                "contexts": [{"name": "op", "context": {"cluster": "c", "user": "op"}}],
            }
        )
    )
    return path


def test_helm_install_and_the_operator_works_with_its_settings_and_rbac(
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    install = helm(
        plane,
        "install",
        "agentspec",
        str(CHART),
        "-n",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        "runtime.image.tag=test",
        "--wait=false",
    )
    assert "STATUS: deployed" in install.stdout
    established = plane.kubectl_json("get", "crd", "agentspecs.agentspec.io")
    assert any(c["type"] == "Established" for c in established["status"]["conditions"])
    deployment = plane.kubectl_json("get", "deployment", "agentspec-operator", namespace=RELEASE_NS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--runtime-image=ghcr.io/agentspec/runtime:test" in container["args"]
    args = [
        *container["args"],
        "--health-port=0",
        "--metrics-port=0",
        f"--lease-namespace={RELEASE_NS}",  # the pod gets POD_NAMESPACE from its fieldRef
        "--identity=chart-operator-0",
        f"--kubeconfig={sa_kubeconfig(plane, tmp_path / 'operator.kubeconfig')}",
    ]
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-election" in container["args"]
    operator = OperatorProcess(plane, extra_args=args).start()
    try:
        plane.kubectl("create", "namespace", "agents")
        k = plane.bound("agents")
        k.apply(prompt_doc())
        k.apply(agent_doc("hr"))
        eventually(
            lambda: k("get", "configmap", "hr-config", check=False).returncode == 0,
            timeout=30,
            what="the operator (as the chart's account) to reconcile",
        )

        def not_stalled() -> dict[str, object] | None:
            # a first reconcile may run before the PromptTemplate is indexed (Stalled), and
            # the ConfigMap of the next one appears before its status: wait for the status
            obj = get(k, "agentspec", "hr")
            return obj if condition(obj, "Stalled").get("status") == "False" else None

        agent = eventually(not_stalled, timeout=30, what="the status of a good reconcile")
        assert condition(agent, "Reconciling").get("observedGeneration") == 1
        image = k.json("get", "deployment", "hr")["spec"]["template"]["spec"]["containers"][0]
        assert image["image"] == "ghcr.io/agentspec/runtime:test"
        assert "forbidden" not in operator.log().lower()
        lease = plane.kubectl_json("get", "lease", "agentspec-operator", namespace=RELEASE_NS)
        assert lease["spec"]["holderIdentity"] == "chart-operator-0"
    finally:
        operator.stop()


def test_crd_changes_reach_the_cluster_by_server_side_apply(
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    """Helm installs crds/ once and never upgrades them: the documented upgrade step is a
    server-side apply of the chart's CRDs before `helm upgrade` (docs/helm.md)."""
    newer = tmp_path / "crds"
    newer.mkdir()
    for path in (CHART / "crds").glob("*.yaml"):
        text = path.read_text()
        if path.name.startswith("agentspecs."):
            text = text.replace("Sampling temperature, 0-2.", "Sampling temperature (v2), 0-2.")
        (newer / path.name).write_text(text)
    plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=agentspec-crds",
        "--force-conflicts",
        "-f",
        str(newer),
    )

    def served() -> str | None:
        out = plane.kubectl("explain", "agentspec.spec.model.temperature").stdout
        return out if "(v2)" in out else None

    assert "Sampling temperature (v2)" in eventually(
        served, timeout=30, what="the upgraded CRD to be served"
    )
