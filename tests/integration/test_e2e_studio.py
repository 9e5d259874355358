"""Agent Studio from the chart, as shipped: ``studio.enabled`` runs the built studio image as
a pod of the shipped cluster, with its own ServiceAccount, read-only by default.

Asserted: the pod serves its UI and API through its Service; it reads the agents with its
ServiceAccount; a write is refused by the apiserver (the chart gave it no write verbs) and
said as such; a request with another Host (DNS rebinding) is refused by the Studio itself.
The chart is returned to studio.enabled=false afterwards.
"""

from __future__ import annotations

import httpx

from tests.support.cluster import CHART, OPERATOR_NAMESPACE, ShippedCluster
from tests.support.control_plane import NamespacedKubectl
from tests.support.operator_testkit import agent_doc, prompt_doc

HOST = f"agentspec-studio.{OPERATOR_NAMESPACE}.svc:8500"


def test_the_chart_runs_the_studio_read_only(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl
) -> None:
    ns = cluster_ns.namespace
    cluster_ns.apply(prompt_doc("p"))
    cluster_ns.apply(agent_doc("a"))

    def helm_studio(enabled: bool) -> None:
        cluster.helm(
            "upgrade", "agentspec", str(CHART), "-n", OPERATOR_NAMESPACE, "--reuse-values",
            "--set", f"studio.enabled={str(enabled).lower()}",
        )  # fmt: skip

    helm_studio(True)
    try:
        cluster.node.wait_ready(
            OPERATOR_NAMESPACE, "app.kubernetes.io/name=agentspec-studio", count=1, timeout=120
        )
        url = cluster.service_url("agentspec-studio", OPERATOR_NAMESPACE, port=8500)
        with httpx.Client(base_url=url, headers={"host": HOST}, timeout=20) as client:
            page = client.get("/")
            assert page.status_code == 200
            assert "<title>Agent Studio</title>" in page.text
            agents = client.get(f"/api/namespaces/{ns}/agents")
            assert agents.status_code == 200, agents.text
            assert [row["name"] for row in agents.json()["items"]] == ["a"]
            refused = client.post(
                f"/api/namespaces/{ns}/prompts/p/versions",
                json={"version": "v2", "template": "Changed."},
            )
            assert refused.status_code == 403, refused.text
            assert "forbidden" in refused.json()["message"]
            assert (
                "system:serviceaccount:agentspec-system:agentspec-studio"
                in (refused.json()["message"])
            )
            rebound = client.get(f"/api/namespaces/{ns}/agents", headers={"host": "evil:8500"})
            assert rebound.status_code == 403
    finally:
        helm_studio(False)
