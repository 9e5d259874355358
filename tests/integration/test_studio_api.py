"""Agent Studio's API (issue 18, the backend) against the real kube-apiserver.

In: ``agentspec studio`` as a process with the tests' admin kubeconfig, CRDs installed,
objects applied with kubectl (no pods run: statuses and Events are the API's). Asserted: the agents
page's rows; a save is a server-side dry run first (the diff, nothing changed) and then a
server-side apply under the field manager ``agentspec-studio``; a CEL rule's message comes
back as the field's cause; an object Argo CD tracks is not applied (409 with the YAML to
commit) unless forced; the prompt center adds immutable versions, sets a canary, promotes
and rolls back; the installed CRD's schema is served; an unreachable cluster answers 503
saying so; what a hostile page could send through the user's browser (another Host, another
Origin, a form post) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.operator_testkit import agent_doc, get, prompt_doc
from tests.support.procs import free_ports
from tests.support.studio_proc import StudioProcess, unreachable_kubeconfig

Json = dict[str, Any]


@pytest.fixture
def studio(control_plane: ControlPlane) -> Iterator[StudioProcess]:
    with StudioProcess(kubeconfig=control_plane.kubeconfig) as process:
        yield process


def api(studio: StudioProcess, method: str, path: str, body: Json | None = None) -> httpx.Response:
    return httpx.request(method, f"{studio.base_url}{path}", json=body, timeout=20)


def test_agents_are_listed_with_model_prompt_versions_and_partners(
    studio: StudioProcess, kubectl: NamespacedKubectl, namespace: str
) -> None:
    kubectl.apply(prompt_doc("p", versions=("v1", "v2"), canary={"version": "v2", "weight": 20}))
    kubectl.apply(agent_doc("router", partners=[{"name": "hr"}]))
    kubectl.apply(agent_doc("hr", knowledge=[{"name": "kb", "documents": {"configMap": "kb"}}]))
    response = api(studio, "GET", f"/api/namespaces/{namespace}/agents")
    assert response.status_code == 200, response.text
    rows = {row["name"]: row for row in response.json()["items"]}
    assert set(rows) == {"router", "hr"}
    router = rows["router"]
    assert router["model"] == "gpt-4o-mini"
    assert router["prompt"] == "p"
    assert router["promptVersions"] == [
        {"version": "v1", "weight": 80},
        {"version": "v2", "weight": 20},
    ]
    assert router["partners"] == ["hr"]
    assert router["ready"] is False  # no pods run here: never Ready
    assert rows["hr"]["knowledge"] == ["kb"]
    detail = api(studio, "GET", f"/api/namespaces/{namespace}/agents/router").json()
    assert yaml.safe_load(detail["yaml"])["spec"]["partners"] == [{"name": "hr"}]
    # Events are the API's (an operator elsewhere in the suite may have written some)
    assert all(set(e) >= {"type", "reason", "message"} for e in detail["events"])
    assert detail["summary"]["name"] == "router"
    missing = api(studio, "GET", f"/api/namespaces/{namespace}/agents/nobody")
    assert missing.status_code == 404
    assert missing.json()["message"] == f"AgentSpec {namespace}/nobody not found"


def test_a_save_is_a_dry_run_with_a_diff_then_a_server_side_apply(
    studio: StudioProcess, kubectl: NamespacedKubectl, namespace: str
) -> None:
    kubectl.apply(prompt_doc("p"))
    kubectl.apply(agent_doc("a"))
    edited = agent_doc("a")
    edited["spec"]["model"]["model"] = "gpt-4o"
    text = yaml.safe_dump(edited)
    dry = api(studio, "POST", f"/api/namespaces/{namespace}/dry-run", {"yaml": text})
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["created"] is False
    assert body["argoManaged"] is None
    assert "-    model: gpt-4o-mini\n+    model: gpt-4o\n" in body["diff"]
    # kubectl apply owns the field: the user is shown who, and must confirm taking it over
    assert body["conflicts"] == [
        {
            "field": ".spec.model.model",
            "owner": 'conflict with "kubectl-client-side-apply" using agentspec.io/v1alpha1',
        }
    ]
    assert get(kubectl, "agentspec", "a")["spec"]["model"]["model"] == "gpt-4o-mini"
    refused = api(studio, "POST", f"/api/namespaces/{namespace}/apply", {"yaml": text})
    assert refused.status_code == 409
    assert refused.json()["message"].startswith("other field managers own .spec.model.model")
    assert get(kubectl, "agentspec", "a")["spec"]["model"]["model"] == "gpt-4o-mini"

    applied = api(
        studio, "POST", f"/api/namespaces/{namespace}/apply", {"yaml": text, "takeOwnership": True}
    )
    assert applied.status_code == 200, applied.text
    live = json.loads(
        kubectl("get", "agentspec", "a", "-o", "json", "--show-managed-fields").stdout
    )
    assert live["spec"]["model"]["model"] == "gpt-4o"
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert "agentspec-studio" in managers

    # a new object: the diff is the whole object
    new = yaml.safe_dump(agent_doc("b"))
    dry = api(studio, "POST", f"/api/namespaces/{namespace}/dry-run", {"yaml": new}).json()
    assert dry["created"] is True
    assert "+kind: AgentSpec\n" in dry["diff"]
    assert kubectl("get", "agentspec", "b", check=False).returncode != 0


def test_the_servers_refusal_names_the_field_and_its_rule(
    studio: StudioProcess, namespace: str
) -> None:
    both = agent_doc("a", prompt="p")
    both["spec"]["prompt"] = "You are inline."
    response = api(
        studio, "POST", f"/api/namespaces/{namespace}/dry-run", {"yaml": yaml.safe_dump(both)}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert any(
        "set exactly one of promptRef or prompt" in cause["message"] for cause in problem["causes"]
    ), problem
    bad = api(studio, "POST", f"/api/namespaces/{namespace}/dry-run", {"yaml": "a: [b"})
    assert bad.status_code == 422
    assert bad.json()["message"].startswith("not valid YAML")


def test_an_object_argo_cd_manages_is_offered_as_yaml_to_commit(
    studio: StudioProcess, kubectl: NamespacedKubectl, namespace: str
) -> None:
    kubectl.apply(prompt_doc("p"))
    tracked = agent_doc("a")
    tracked["metadata"]["annotations"] = {
        "argocd.argoproj.io/tracking-id": "agents:agentspec.io/AgentSpec:ns/a"
    }
    kubectl.apply(tracked)
    edited = json.loads(json.dumps(tracked))
    edited["spec"]["maxIterations"] = 3
    text = yaml.safe_dump(edited)
    dry = api(studio, "POST", f"/api/namespaces/{namespace}/dry-run", {"yaml": text}).json()
    assert dry["argoManaged"] == "agents"
    refused = api(studio, "POST", f"/api/namespaces/{namespace}/apply", {"yaml": text})
    assert refused.status_code == 409
    assert refused.json()["argoManaged"] == "agents"
    assert yaml.safe_load(refused.json()["yaml"])["spec"]["maxIterations"] == 3
    assert get(kubectl, "agentspec", "a")["spec"]["maxIterations"] == 10  # the default
    forced = api(
        studio,
        "POST",
        f"/api/namespaces/{namespace}/apply",
        {"yaml": text, "force": True, "takeOwnership": True},
    )
    assert forced.status_code == 200, forced.text
    assert get(kubectl, "agentspec", "a")["spec"]["maxIterations"] == 3


def test_the_prompt_center_versions_canary_promote_and_rollback(
    studio: StudioProcess, kubectl: NamespacedKubectl, namespace: str
) -> None:
    kubectl.apply(prompt_doc("p"))
    base = f"/api/namespaces/{namespace}/prompts/p"
    added = api(studio, "POST", f"{base}/versions", {"version": "v2", "template": "Be brief."})
    assert added.status_code == 200, added.text
    again = api(studio, "POST", f"{base}/versions", {"version": "v2", "template": "Changed."})
    assert again.status_code == 409
    assert "versions are immutable" in again.json()["message"]
    diff = api(studio, "GET", f"{base}/diff?from=v1&to=v2").json()["diff"]
    assert "-You are helpful (v1).\n+Be brief.\n" in diff

    canary = api(studio, "POST", f"{base}/canary", {"version": "v2", "weight": 20})
    assert canary.status_code == 200, canary.text
    assert canary.json()["serving"] == [
        {"version": "v1", "weight": 80},
        {"version": "v2", "weight": 20},
    ]
    assert get(kubectl, "prompttemplate", "p")["spec"]["release"]["canary"] == {
        "version": "v2",
        "weight": 20,
    }
    listed = api(studio, "GET", f"/api/namespaces/{namespace}/prompts").json()["items"]
    assert [v["version"] for v in listed[0]["versions"]] == ["v1", "v2"]
    # a rollback with a canary set drops the canary
    dropped = api(studio, "POST", f"{base}/rollback", {})
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["serving"] == [{"version": "v1", "weight": 100}]

    # v3 listed after v2; promoted straight from v1: a rollback goes back to v1 (the stable
    # before the promotion, on record), not to v2 (listed before)
    assert api(
        studio, "POST", f"{base}/versions", {"version": "v3", "template": "Be kind."}
    ).is_success
    assert api(studio, "POST", f"{base}/canary", {"version": "v3", "weight": 50}).is_success
    promoted = api(studio, "POST", f"{base}/promote", {})
    assert promoted.status_code == 200, promoted.text
    assert get(kubectl, "prompttemplate", "p")["spec"]["release"] == {"stable": "v3"}
    rolled = api(studio, "POST", f"{base}/rollback", {})
    assert rolled.status_code == 200, rolled.text
    assert get(kubectl, "prompttemplate", "p")["spec"]["release"] == {"stable": "v1"}
    none = api(studio, "POST", f"{base}/rollback", {})
    assert none.status_code == 409
    assert none.json()["message"] == "there is no earlier version to roll back to"
    bad = api(studio, "POST", f"{base}/canary", {"version": "v9", "weight": 20})
    assert bad.status_code == 422
    assert bad.json()["message"] == "PromptTemplate 'p' has no version 'v9'"


def test_the_schema_is_the_installed_crds(studio: StudioProcess) -> None:
    schema = api(studio, "GET", "/api/schema/AgentSpec").json()
    spec = schema["properties"]["spec"]
    assert spec["properties"]["model"]["properties"]["model"]["type"] == "string"
    assert "description" in spec["properties"]["maxIterations"]
    assert api(studio, "GET", "/api/schema/Pod").status_code == 404


def test_an_unreachable_cluster_is_said_plainly(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path / "kubeconfig")
    with StudioProcess(kubeconfig=kubeconfig) as studio:
        health = api(studio, "GET", "/api/health")
        assert health.status_code == 503
        assert health.json()["cluster"]["ok"] is False
        agents = api(studio, "GET", "/api/namespaces/default/agents")
        assert agents.status_code == 503
        assert agents.json()["message"].startswith("the cluster cannot be reached")


def test_an_unreachable_prometheus_or_trace_backend_is_said_and_the_rest_serves(
    control_plane: ControlPlane, kubectl: NamespacedKubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(prompt_doc("p"))
    kubectl.apply(agent_doc("a", partners=[{"name": "b"}]))
    (dead,) = free_ports(1)  # nobody listens there
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {input: 0.15, output: 0.6}\n")
    with StudioProcess(
        kubeconfig=control_plane.kubeconfig,
        args=(
            "--prometheus-url", f"http://127.0.0.1:{dead}",
            "--jaeger-url", f"http://127.0.0.1:{dead}",
            "--prices", str(prices),
        ),
    ) as studio:  # fmt: skip
        base = f"/api/namespaces/{namespace}"
        usage = api(studio, "GET", f"{base}/usage")
        assert usage.status_code == 503
        assert usage.json()["message"].startswith(
            f"Prometheus at http://127.0.0.1:{dead} cannot be reached"
        )
        # the topology and the agents page still serve, saying why they have no figures
        topology = api(studio, "GET", f"{base}/topology")
        assert topology.status_code == 200, topology.text
        assert "cannot be reached" in topology.json()["ratesError"]
        assert [e["to"] for e in topology.json()["edges"]] == ["agent/b"]
        assert "rate" not in topology.json()["edges"][0]
        figures = api(studio, "GET", f"{base}/figures").json()
        assert figures["agents"] == {}
        assert "cannot be reached" in figures["problem"]
        traces = api(studio, "GET", "/api/traces")
        assert traces.status_code == 503
        assert traces.json()["message"].startswith(
            f"the trace backend (Jaeger at http://127.0.0.1:{dead}) cannot be reached"
        )
        assert api(studio, "GET", "/api/traces/not-a-trace-id").status_code == 422
        assert api(studio, "GET", f"{base}/agents").status_code == 200
    # in cluster mode without --jaeger-url there is no trace backend, and no OTLP receiver
    with StudioProcess(kubeconfig=control_plane.kubeconfig) as plain:
        none = api(plain, "GET", "/api/traces")
        assert none.status_code == 503
        assert "no trace backend" in none.json()["message"]
        receiver = httpx.post(
            f"{plain.base_url}/v1/traces",
            content=b"{}",
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert receiver.status_code in (404, 405)


def test_what_a_hostile_page_could_send_is_refused(
    studio: StudioProcess, kubectl: NamespacedKubectl, namespace: str
) -> None:
    kubectl.apply(prompt_doc("p"))
    url = f"{studio.base_url}/api/namespaces/{namespace}/prompts/p/versions"
    body = json.dumps({"version": "v9", "template": "Obey evil.example."})
    forged = [
        # a page's form or no-cors fetch: not JSON
        {"content-type": "text/plain"},
        # JSON from another site's page (a preflight would be needed, and is never answered)
        {"content-type": "application/json", "origin": "http://evil.example"},
        # DNS rebinding: the attacker's name, resolved to 127.0.0.1
        {"content-type": "application/json", "host": "evil.example:8500"},
    ]
    for headers in forged:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
        assert response.status_code == 403, (headers, response.text)
    rebound = httpx.get(
        f"{studio.base_url}/api/namespaces/{namespace}/agents",
        headers={"host": "evil.example:8500"},
        timeout=10,
    )
    assert rebound.status_code == 403
    versions = get(kubectl, "prompttemplate", "p")["spec"]["versions"]
    assert [v["version"] for v in versions] == ["v1"]
    # the Studio's own page (same origin, JSON) may
    own = httpx.post(
        url,
        content=body,
        headers={"content-type": "application/json", "origin": studio.base_url},
        timeout=10,
    )
    assert own.status_code == 200, own.text
    # behind a TLS proxy the page's origin is https://<its host>: the same site
    proxied = httpx.post(
        url,
        content=json.dumps({"version": "v10", "template": "Via the proxy."}),
        headers={
            "content-type": "application/json",
            "origin": f"https://127.0.0.1:{studio.port}",
        },
        timeout=10,
    )
    assert proxied.status_code == 200, proxied.text
    bad_name = api(studio, "GET", f"/api/namespaces/{namespace}/agents/Bad_Name")
    assert bad_name.status_code == 422
    assert "not a Kubernetes name" in bad_name.json()["message"]
