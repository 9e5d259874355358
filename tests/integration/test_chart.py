"""The Helm chart: lints, renders objects the real apiserver accepts, rejects bad values with
the field named, installs, and its settings and RBAC are enough for the operator to work.

The install tests use the ``cluster`` fixture, which is a ``helm install`` of this chart with
the built images on a cluster whose pods really run (the process kubelet): the operator runs
as the chart's two pods, from the operator image, with the chart's args and its
ServiceAccount's projected token, and must reconcile; deleting the leading pod hands over.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentspec_operator.main import build_parser
from agentspec_operator.render_meta import AgentRef
from agentspec_operator.render_workload import render_pod_template
from agentspec_operator.settings import OperatorSettings, PrometheusAuth
from agentspec_runtime.spec import AgentResource, parse_resource
from agentspec_studio.usage import load_prices
from tests.support.cluster import OPERATOR_NAMESPACE, ShippedCluster
from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.operator_testkit import agent_doc, eventually, prompt_doc

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
        ("autoscaling.rateWindow=1 minute", "/autoscaling/rateWindow"),
        ("autoscaling.rateWindow=5s", "/autoscaling/rateWindow"),
        ("autoscaling.prometheusUrl=http://user:pw@prom:9090", "/autoscaling/prometheusUrl"),
        ("autoscaling.prometheusUrl=http://prom:9090/#x", "/autoscaling/prometheusUrl"),
        ("autoscaling.prometheusAuth=token", "/autoscaling/prometheusAuth"),
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


def test_the_pod_monitor_scrapes_the_agent_pods_the_operator_makes(
    control_plane: ControlPlane,
) -> None:
    rendered = helm(
        control_plane, "template", "agentspec", str(CHART), "-n", "ops",
        "--set", "autoscaling.podMonitor.enabled=true",
        "--set", "autoscaling.podMonitor.labels.release=kube-prometheus",
        "--set", "autoscaling.rateWindow=30s",
        "--set", "autoscaling.prometheusUrl=http://prom.monitoring:9090",
        "--set", "autoscaling.prometheusAuth=prom-token:bearer",
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "15s"}]
    agent = parse_resource(
        {
            "apiVersion": "agentspec.io/v1alpha1",
            "kind": "AgentSpec",
            "metadata": {"name": "a", "namespace": "team-a", "uid": "u"},
            "spec": {"promptRef": {"name": "p"}, "model": {"model": "m"}},
        }
    )
    assert isinstance(agent, AgentResource)
    template = render_pod_template(
        AgentRef(name="a", namespace="team-a", uid="u"), agent=agent, settings=OperatorSettings()
    )
    pod_labels = template["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert "metrics" in ports
    (operator,) = [d for d in docs if d["kind"] == "Deployment"]
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--prometheus-url=http://prom.monitoring:9090" in args
    assert "--scaling-rate-window=30s" in args
    assert "--prometheus-auth=prom-token:bearer" in args
    # and the operator's own parser takes what the chart renders
    parsed = build_parser().parse_args(args)
    assert parsed.prometheus_url == "http://prom.monitoring:9090"
    assert parsed.prometheus_auth == PrometheusAuth(name="prom-token", modes="bearer")
    by_default = yaml.safe_load_all(helm(control_plane, "template", "x", str(CHART)).stdout)
    assert "PodMonitor" not in {d["kind"] for d in by_default if d}


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        yield cp


def test_the_chart_runs_the_operator_image_with_its_args_as_its_service_account(
    cluster: ShippedCluster,
) -> None:
    """The ``cluster`` fixture is a ``helm install`` of this chart with the built images."""
    deployment = cluster.plane.kubectl_json(
        "get", "deployment", "agentspec-operator", namespace=OPERATOR_NAMESPACE
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--runtime-image={cluster.images.runtime.ref}" in args
    assert "--leader-election" in args
    pods = cluster.node.pods(OPERATOR_NAMESPACE, "app.kubernetes.io/name=agentspec-operator")
    assert len(pods) == 2
    for pod in pods:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        assert container["image"] == cluster.images.operator.ref
        pid = cluster.node.container_pid(OPERATOR_NAMESPACE, name, "operator")
        cmdline = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        # the image's entrypoint (agentspec operator) + the chart's args, nothing else
        assert cmdline[1:] == ["/opt/agentspec/bin/agentspec", "operator", *args], cmdline
        assert Path(f"/proc/{pid}").stat().st_uid == 10001
        # credentials: the projected ServiceAccount token, nothing of the test's admin
        token = cluster.node.exec(
            OPERATOR_NAMESPACE, name, "operator",
            "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token",
        )  # fmt: skip
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["sub"] == f"system:serviceaccount:{OPERATOR_NAMESPACE}:agentspec-operator"
        assert claims["kubernetes.io"]["pod"]["name"] == name
    assert cluster.lease_holder() in {p["metadata"]["name"] for p in pods}
    assert "forbidden" not in cluster.operator_logs().lower()


def test_the_standby_operator_pod_takes_over_when_the_leader_pod_goes(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl
) -> None:
    leader = cluster.lease_holder()
    cluster.plane.kubectl("delete", "pod", leader, "--wait=false", namespace=OPERATOR_NAMESPACE)
    eventually(
        lambda: cluster.lease_holder() not in ("", leader),
        timeout=30,
        what="the standby to take the Lease",
    )
    cluster_ns.apply(prompt_doc())
    cluster_ns.apply(agent_doc("hr"))
    eventually(
        lambda: cluster_ns("get", "configmap", "hr-config", check=False).returncode == 0,
        timeout=30,
        what="the new leader to reconcile",
    )
    # the ReplicaSet replaces the deleted pod: two operator pods again, one leading
    cluster.node.wait_ready(
        OPERATOR_NAMESPACE, "app.kubernetes.io/name=agentspec-operator", count=2, timeout=60
    )


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


def test_the_studio_is_off_by_default_and_read_only_unless_writing_is_chosen(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    def rendered(*values: str) -> list[dict[str, Any]]:
        text = helm(control_plane, "template", "agentspec", str(CHART), "-n", "ops", *values)
        return [d for d in yaml.safe_load_all(text.stdout) if d]

    assert not [d for d in rendered() if d["metadata"]["name"].startswith("agentspec-studio")]
    read_only = rendered("--set", "studio.enabled=true")
    (role,) = [
        d for d in read_only if d["kind"] == "ClusterRole" and "studio" in d["metadata"]["name"]
    ]
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    (deployment,) = [
        d
        for d in read_only
        if d["metadata"]["name"] == "agentspec-studio" and d["kind"] == "Deployment"
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allow-host=agentspec-studio.ops.svc:8500" in args
    assert not [a for a in args if a.startswith("--prices")]
    writing = rendered(
        "--set", "studio.enabled=true", "--set", "studio.rbac.write=true",
        "--set", "studio.allowHosts={studio.example.com}",
        "--set", "studio.jaegerUrl=http://jaeger-query.observability:16686",
        "--set-json", 'studio.prices={"gpt-4o-mini": {"input": 0.15, "output": 0.6}}',
    )  # fmt: skip
    (role,) = [
        d for d in writing if d["kind"] == "ClusterRole" and "studio" in d["metadata"]["name"]
    ]
    agentspec_rule = next(r for r in role["rules"] if r["apiGroups"] == ["agentspec.io"])
    assert {"create", "update", "patch"} <= set(agentspec_rule["verbs"])
    assert "delete" not in agentspec_rule["verbs"]
    assert {"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get", "create"]} in role[
        "rules"
    ]
    (deployment,) = [
        d
        for d in writing
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "agentspec-studio"
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allow-host=studio.example.com" in args
    assert "--jaeger-url=http://jaeger-query.observability:16686" in args
    # the price table: a ConfigMap mounted where --prices reads it, in the Studio's own format
    assert "--prices=/etc/agentspec-studio/prices.yaml" in args
    (prices,) = [d for d in writing if d["metadata"]["name"] == "agentspec-studio-prices"]
    table = tmp_path / "prices.yaml"
    table.write_text(prices["data"]["prices.yaml"])
    assert load_prices(table) == {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "prices", "mountPath": "/etc/agentspec-studio", "readOnly": True}
    ]
    assert pod["volumes"] == [{"name": "prices", "configMap": {"name": "agentspec-studio-prices"}}]
