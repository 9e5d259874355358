"""The operator against the real kube-apiserver: children, hot changes, propagation, SSA, drift.

One operator subprocess serves the whole module; every test works in its own namespace. What
goes in: AgentSpec/PromptTemplate/McpServer documents applied with kubectl. What is asserted:
the children the apiserver holds (shape, count, owner), the pod template compared byte for
byte across changes, ConfigMap payloads, status conditions — all awaited with deadlines.
There is no kube-controller-manager here, so Deployments never become available.
"""

from __future__ import annotations

import json

import pytest

from agentspec_operator.reconcile import replicas_owners
from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.operator_proc import TEST_IMAGE, OperatorProcess
from tests.support.operator_testkit import (
    agent_doc,
    condition,
    config_of,
    eventually,
    get,
    mcp_doc,
    pod_template,
    prompt_doc,
)

PROPAGATION = 5.0  # seconds; the design target is 1-2 s, the slack absorbs a loaded CI box
CHILD_KINDS = "configmap,serviceaccount,role,rolebinding,service,networkpolicy,deployment"


@pytest.fixture
def k(kubectl: NamespacedKubectl, operator: OperatorProcess) -> NamespacedKubectl:
    return kubectl


def _applied(k: NamespacedKubectl, *docs: dict[str, object]) -> None:
    for doc in docs:
        k.apply(doc)


def _status_of(k: NamespacedKubectl, name: str) -> dict[str, object]:
    found: dict[str, object] = get(k, "agentspec", name).get("status") or {}
    return found


def _reconciled(k: NamespacedKubectl, name: str, *, generation: int | None = None) -> bool:
    agent = get(k, "agentspec", name)
    want = generation or agent["metadata"]["generation"]
    return condition(agent, "Stalled").get("observedGeneration") == want and bool(
        (agent.get("status") or {}).get("configRevision")
    )


def _wait_reconciled(k: NamespacedKubectl, name: str) -> None:
    eventually(lambda: _reconciled(k, name), timeout=PROPAGATION, what=f"{name} reconciled")


def test_agent_gets_every_child_once_with_owner_and_status(k: NamespacedKubectl) -> None:
    _applied(k, prompt_doc(), agent_doc("finance"))
    _wait_reconciled(k, "finance")
    items = k.json("get", CHILD_KINDS, "-l", "agentspec.io/agent=finance", "--show-managed-fields")[
        "items"
    ]
    kinds = sorted(i["kind"] for i in items)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Service",
            "NetworkPolicy",
            "Deployment",
        ]
    )
    uid = get(k, "agentspec", "finance")["metadata"]["uid"]
    for item in items:
        (owner,) = item["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("AgentSpec", uid, True)
        managers = {m["manager"] for m in item["metadata"]["managedFields"]}
        assert "agentspec-operator" in managers
    container = get(k, "deployment", "finance")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == TEST_IMAGE
    payload = config_of(k, "finance")
    assert payload["kind"] == "AgentConfig"
    assert payload["prompt"]["stable"] == "v1"
    status = _status_of(k, "finance")
    assert status["endpoint"] == f"http://finance.{k.namespace}.svc.cluster.local:8080"
    assert status["promptVersion"] == "v1"
    cm = get(k, "configmap", "finance-config")
    assert status["configRevision"] == cm["metadata"]["annotations"]["agentspec.io/config-revision"]
    agent = get(k, "agentspec", "finance")
    assert condition(agent, "Ready")["status"] == "False"  # no controller: never available
    assert condition(agent, "Reconciling")["status"] == "True"
    assert condition(agent, "Stalled")["status"] == "False"
    # kopf wrote nothing of its own onto the user's resource (no Argo CD drift).
    assert not agent["metadata"].get("finalizers")
    assert not [a for a in agent["metadata"].get("annotations", {}) if "kopf" in a]


def test_prompt_template_status_lists_release_and_users(k: NamespacedKubectl) -> None:
    _applied(
        k,
        prompt_doc(versions=("v1", "v2"), canary={"version": "v2", "weight": 20}),
        agent_doc("b"),
        agent_doc("a"),
    )

    def users() -> bool:
        status = get(k, "prompttemplate", "p").get("status") or {}
        assert status.get("usedBy") == ["a", "b"], status
        assert (status["stableVersion"], status["canaryVersion"]) == ("v1", "v2")
        return bool(status["canaryWeight"] == 20)

    eventually(users, timeout=PROPAGATION, what="PromptTemplate status")
    eventually(
        lambda: _status_of(k, "a").get("promptVersion") == "v1+v2@20%",
        timeout=PROPAGATION,
        what="promptVersion with canary",
    )
    k("delete", "agentspec", "b")
    eventually(
        lambda: (get(k, "prompttemplate", "p").get("status") or {}).get("usedBy") == ["a"],
        timeout=PROPAGATION,
        what="usedBy after a delete",
    )


def test_hot_changes_touch_only_the_config_map(k: NamespacedKubectl) -> None:
    _applied(
        k,
        prompt_doc(versions=("v1", "v2")),
        mcp_doc("tools", "http://tools.example:8000/mcp"),
        agent_doc("hr"),
        agent_doc("finance"),
    )
    _wait_reconciled(k, "finance")
    template = pod_template(k, "finance")
    generation = get(k, "deployment", "finance")["metadata"]["generation"]
    revisions = {config_of(k, "finance")["prompt"]["stable"]}

    def changed(mutate_doc: dict[str, object], check: str) -> None:
        k.apply(mutate_doc)

        def seen() -> bool:
            return check in get(k, "configmap", "finance-config")["data"]["agent.json"]

        eventually(seen, timeout=PROPAGATION, what=f"config with {check}")
        assert pod_template(k, "finance") == template
        assert get(k, "deployment", "finance")["metadata"]["generation"] == generation

    changed(prompt_doc(versions=("v1", "v2"), stable="v2"), '"stable":"v2"')
    changed(
        prompt_doc(versions=("v1", "v2"), stable="v2", canary={"version": "v1", "weight": 30}),
        '"weight":30',
    )
    changed(agent_doc("finance", model={"model": "m2", "temperature": 0.2}), '"temperature":0.2')
    changed(
        agent_doc("finance", model={"model": "m2"}, mcpServers=[{"name": "tools"}]),
        "tools.example",
    )
    changed(
        agent_doc(
            "finance",
            model={"model": "m2"},
            mcpServers=[{"name": "tools"}],
            partners=[{"name": "hr"}],
        ),
        f"hr.{k.namespace}.svc.cluster.local",
    )
    revisions.add(config_of(k, "finance")["prompt"]["stable"])
    assert revisions == {"v1", "v2"}

    # Image and resources do need new pods.
    k.apply(agent_doc("finance", runtime={"image": "other:2"}))
    eventually(
        lambda: "other:2" in pod_template(k, "finance"), timeout=PROPAGATION, what="new image"
    )
    rolled = pod_template(k, "finance")
    k.apply(
        agent_doc("finance", runtime={"image": "other:2", "resources": {"limits": {"cpu": "1"}}})
    )
    eventually(
        lambda: pod_template(k, "finance") != rolled, timeout=PROPAGATION, what="new resources"
    )


def test_prompt_edit_propagates_to_every_dependant(k: NamespacedKubectl) -> None:
    names = [f"agent-{i}" for i in range(5)]
    _applied(k, prompt_doc(versions=("v1", "v2")), *(agent_doc(n) for n in names))
    for n in names:
        _wait_reconciled(k, n)
    k.apply(prompt_doc(versions=("v1", "v2"), stable="v2"))

    def all_updated() -> bool:
        return all(config_of(k, n)["prompt"]["stable"] == "v2" for n in names)

    eventually(all_updated, timeout=PROPAGATION, what="every ConfigMap on v2")


def test_mcp_server_edit_and_partner_create_delete_propagate(k: NamespacedKubectl) -> None:
    _applied(
        k,
        prompt_doc(),
        mcp_doc("tools", "http://one.example/mcp"),
        agent_doc("hr", description="HR v1"),
        agent_doc("router", mcpServers=[{"name": "tools"}], partners=[{"name": "hr"}]),
    )
    _wait_reconciled(k, "router")
    k.apply(mcp_doc("tools", "http://two.example/mcp"))
    eventually(
        lambda: config_of(k, "router")["mcpServers"][0]["url"] == "http://two.example/mcp",
        timeout=PROPAGATION,
        what="new McpServer URL",
    )
    k.apply(agent_doc("hr", description="HR v2"))
    eventually(
        lambda: config_of(k, "router")["partners"][0]["description"] == "HR v2",
        timeout=PROPAGATION,
        what="partner description",
    )
    # The partner's NetworkPolicy admits its caller.
    peers = get(k, "networkpolicy", "hr")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"agentspec.io/agent": "router"}}} in peers
    k("delete", "agentspec", "hr")
    eventually(
        lambda: condition(get(k, "agentspec", "router"), "Stalled").get("status") == "True",
        timeout=PROPAGATION,
        what="router stalled without its partner",
    )
    k.apply(agent_doc("hr", description="HR v3"))
    eventually(
        lambda: config_of(k, "router")["partners"][0]["description"] == "HR v3",
        timeout=PROPAGATION,
        what="partner back",
    )
    assert condition(get(k, "agentspec", "router"), "Stalled")["status"] == "False"


def test_server_side_apply_leaves_other_managers_fields_alone(k: NamespacedKubectl) -> None:
    scaling = {"autoscaling": {"minReplicas": 1, "maxReplicas": 5, "targetTokensPerSecond": 50}}
    _applied(k, prompt_doc(), agent_doc("finance", runtime=scaling))
    _wait_reconciled(k, "finance")
    assert "replicas" not in json.dumps(
        [
            f
            for f in k.json("get", "deployment", "finance", "--show-managed-fields")["metadata"][
                "managedFields"
            ]
            if f["manager"] == "agentspec-operator"
        ]
    )
    hpa = get(k, "hpa", "finance")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "agentspec_tokens_per_second"
    # What an HPA and another tool would do.
    k("scale", "deployment", "finance", "--replicas=4")
    k("label", "deployment", "finance", "team=payments")
    k("label", "configmap", "finance-config", "backup=daily")
    # A spec change makes the operator re-apply both children.
    k.apply(agent_doc("finance", runtime=scaling, model={"model": "m2"}))
    eventually(
        lambda: config_of(k, "finance")["model"]["model"] == "m2",
        timeout=PROPAGATION,
        what="re-apply",
    )
    deployment = get(k, "deployment", "finance")
    assert deployment["spec"]["replicas"] == 4
    assert deployment["metadata"]["labels"]["team"] == "payments"
    assert get(k, "configmap", "finance-config")["metadata"]["labels"]["backup"] == "daily"
    # Autoscaling off: the operator takes replicas back and prunes the HPA.
    k.apply(agent_doc("finance", runtime={"replicas": 2}))
    eventually(
        lambda: get(k, "deployment", "finance")["spec"]["replicas"] == 2,
        timeout=PROPAGATION,
        what="replicas owned again",
    )
    eventually(lambda: not k.json("get", "hpa")["items"], timeout=PROPAGATION, what="HPA pruned")
    assert get(k, "pdb", "finance")["spec"]["minAvailable"] == 1
    k.apply(agent_doc("finance", runtime={"replicas": 1}))
    eventually(lambda: not k.json("get", "pdb")["items"], timeout=PROPAGATION, what="PDB pruned")


def _replicas_owners(k: NamespacedKubectl, name: str) -> set[str]:
    return replicas_owners(k.json("get", "deployment", name, "--show-managed-fields"))


def test_turning_autoscaling_on_keeps_the_replica_count(k: NamespacedKubectl) -> None:
    """An apply that drops a field its manager alone owns deletes it: without a hand-over the
    Deployment would fall to its default of 1 pod until the HPA's next sync. No controller
    manager runs here, so a drop would stay visible."""
    _applied(k, prompt_doc(), agent_doc("finance", runtime={"replicas": 3}))
    eventually(
        lambda: get(k, "deployment", "finance")["spec"]["replicas"] == 3,
        timeout=PROPAGATION,
        what="3 replicas",
    )
    assert _replicas_owners(k, "finance") == {"agentspec-operator"}
    scaling = {"autoscaling": {"minReplicas": 1, "maxReplicas": 5, "targetTokensPerSecond": 50}}
    k.apply(agent_doc("finance", runtime=scaling))
    eventually(lambda: bool(k.json("get", "hpa")["items"]), timeout=PROPAGATION, what="the HPA")
    _wait_reconciled(k, "finance")
    seen = set()
    for _ in range(10):  # some seconds of reading: nothing but the operator writes here
        seen.add(get(k, "deployment", "finance")["spec"]["replicas"])
    assert seen == {3}
    # the operator let go of the field; the hand-over manager holds the unchanged count
    assert _replicas_owners(k, "finance") == {"agentspec-operator-handover"}
    # no custom metrics adapter serves here: the plain HPA could never scale, and says so
    eventually(
        lambda: any("no adapter served" in m for m in _warning_events(k, "finance")),
        timeout=PROPAGATION,
        what="the AutoscalerMetricsUnavailable warning",
    )
    # and no controller manager runs, so the HPA never reports: the agent says that too
    active = condition(get(k, "agentspec", "finance"), "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "AutoscalerPending")
    # what the HPA controller does next: it owns the field through the scale subresource
    k("scale", "deployment", "finance", "--replicas=4")
    assert _replicas_owners(k, "finance") == {"kubectl/scale"}
    # a later change of the agent leaves the HPA's count alone
    k.apply(agent_doc("finance", runtime=scaling, model={"model": "m2"}))
    eventually(
        lambda: config_of(k, "finance")["model"]["model"] == "m2",
        timeout=PROPAGATION,
        what="re-apply",
    )
    assert get(k, "deployment", "finance")["spec"]["replicas"] == 4
    assert "agentspec-operator" not in _replicas_owners(k, "finance")
    # autoscaling off: the declared count again, owned by the operator
    k.apply(agent_doc("finance", runtime={"replicas": 2}))
    eventually(
        lambda: get(k, "deployment", "finance")["spec"]["replicas"] == 2,
        timeout=PROPAGATION,
        what="the declared count",
    )
    assert "agentspec-operator" in _replicas_owners(k, "finance")
    eventually(lambda: not k.json("get", "hpa")["items"], timeout=PROPAGATION, what="HPA pruned")
    # a count of 0 is handed over as the autoscaler's minimum: an HPA reads 0 as "disabled"
    k.apply(agent_doc("finance", runtime={"replicas": 0}))
    eventually(
        lambda: get(k, "deployment", "finance")["spec"]["replicas"] == 0,
        timeout=PROPAGATION,
        what="0 replicas",
    )
    k.apply(agent_doc("finance", runtime=scaling))
    eventually(
        lambda: _replicas_owners(k, "finance") == {"agentspec-operator-handover"},
        timeout=PROPAGATION,
        what="the hand-over",
    )
    assert get(k, "deployment", "finance")["spec"]["replicas"] == 1


def test_drift_is_corrected(k: NamespacedKubectl) -> None:
    _applied(k, prompt_doc(), agent_doc("finance"))
    _wait_reconciled(k, "finance")
    good = get(k, "configmap", "finance-config")["data"]
    template = pod_template(k, "finance")
    k("patch", "configmap", "finance-config", "--type=merge", "-p", '{"data":{"agent.json":"{}"}}')
    eventually(
        lambda: get(k, "configmap", "finance-config")["data"] == good,
        timeout=PROPAGATION,
        what="ConfigMap restored",
    )
    k("set", "image", "deployment/finance", "agent=evil:1")
    eventually(
        lambda: pod_template(k, "finance") == template,
        timeout=PROPAGATION,
        what="Deployment restored",
    )
    k("delete", "service", "finance")
    eventually(
        lambda: get(k, "service", "finance")["spec"]["ports"][0]["port"] == 8080,
        timeout=PROPAGATION,
        what="Service recreated",
    )
    k("delete", "configmap", "finance-config")
    eventually(
        lambda: get(k, "configmap", "finance-config")["data"] == good,
        timeout=PROPAGATION,
        what="ConfigMap recreated",
    )


def _stalled_message(k: NamespacedKubectl, name: str, needle: str) -> str:
    def stalled() -> str | None:
        cond = condition(get(k, "agentspec", name), "Stalled")
        if cond.get("status") == "True" and needle in cond.get("message", ""):
            return str(cond["message"])
        return None

    return eventually(stalled, timeout=PROPAGATION, what=f"{name} Stalled on {needle}")


def _warning_events(k: NamespacedKubectl, name: str) -> list[str]:
    events = k.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e["message"] for e in events if e["type"] == "Warning"]


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("prompt", "PromptTemplate 'missing' not found"),
        ("version", "has no version 'v9'"),
        ("mcp", "McpServer 'nope' not found"),
        ("partner", "partner AgentSpec"),
        ("secret", "Secret 'llm' not found"),
        ("keda", "KEDA ScaledObject CRD"),
    ],
)
def test_missing_reference_stalls_with_event_and_recovers(
    k: NamespacedKubectl, case: str, needle: str
) -> None:
    docs = {
        "prompt": (agent_doc("a", prompt="missing"), prompt_doc("missing")),
        "version": (
            agent_doc("a", promptRef={"name": "p", "version": "v9"}),
            prompt_doc(versions=("v1", "v9")),
        ),
        "mcp": (
            agent_doc("a", mcpServers=[{"name": "nope"}]),
            mcp_doc("nope", "http://nope.example/mcp"),
        ),
        "partner": (agent_doc("a", partners=[{"name": "b"}]), agent_doc("b")),
        "secret": (
            agent_doc("a", model={"model": "m", "apiKeySecretRef": {"name": "llm", "key": "k"}}),
            None,
        ),
        "keda": (
            agent_doc(
                "a",
                runtime={
                    "autoscaling": {
                        "maxReplicas": 3,
                        "targetTokensPerSecond": 10,
                        "provider": "keda",
                    }
                },
            ),
            agent_doc("a"),
        ),
    }
    broken, fix = docs[case]
    _applied(k, prompt_doc(), broken)
    message = _stalled_message(k, "a", needle)
    agent = get(k, "agentspec", "a")
    assert condition(agent, "Ready")["status"] == "False"
    assert condition(agent, "Stalled")["observedGeneration"] == agent["metadata"]["generation"]
    eventually(
        lambda: message in _warning_events(k, "a"), timeout=PROPAGATION, what="Warning Event"
    )
    if fix is None:
        k("create", "secret", "generic", "llm", "--from-literal=k=sk-test-value")
        k("annotate", "secret", "llm", "agentspec.io/allowed-agents=a")
    else:
        k.apply(fix)
    eventually(
        lambda: condition(get(k, "agentspec", "a"), "Stalled").get("status") == "False",
        timeout=PROPAGATION,
        what="recovery",
    )
    assert config_of(k, "a")["name"] == "a"
    # The Secret's value never reaches the ConfigMap, status or Events.
    everything = json.dumps([k.json("get", "configmap,agentspec,events")])
    assert "sk-test-value" not in everything


def test_stalled_keeps_the_last_good_config(k: NamespacedKubectl) -> None:
    _applied(k, prompt_doc(), agent_doc("a"))
    _wait_reconciled(k, "a")
    good = get(k, "configmap", "a-config")["data"]
    revision = _status_of(k, "a")["configRevision"]
    k.apply(agent_doc("a", mcpServers=[{"name": "gone"}]))
    _stalled_message(k, "a", "McpServer 'gone' not found")
    assert get(k, "configmap", "a-config")["data"] == good
    assert _status_of(k, "a")["configRevision"] == revision


def test_cross_namespace_partner_needs_consent(
    k: NamespacedKubectl, control_plane: ControlPlane
) -> None:
    other = f"{k.namespace}-x"
    control_plane.kubectl("create", "namespace", other)
    try:
        theirs = control_plane.bound(other)
        theirs.apply(prompt_doc())
        theirs.apply(agent_doc("payments"))
        _applied(
            k, prompt_doc(), agent_doc("a", partners=[{"name": "payments", "namespace": other}])
        )
        _stalled_message(k, "a", "does not accept callers")
        assert condition(get(k, "agentspec", "a"), "Stalled")["reason"] == "PartnerNotAccepted"
        theirs(
            "annotate", "agentspec", "payments", f"agentspec.io/accept-callers-from={k.namespace}"
        )
        eventually(
            lambda: condition(get(k, "agentspec", "a"), "Stalled").get("status") == "False",
            timeout=PROPAGATION,
            what="consent given",
        )
        assert config_of(k, "a")["partners"][0]["url"] == (
            f"http://payments.{other}.svc.cluster.local:8080"
        )
        peers = get(theirs, "networkpolicy", "payments")["spec"]["ingress"][0]["from"]
        assert {
            "podSelector": {"matchLabels": {"agentspec.io/agent": "a"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k.namespace}},
        } in peers
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false")


def test_a_secret_must_name_the_agents_it_may_be_given_to(k: NamespacedKubectl) -> None:
    """No confused deputy: writing an AgentSpec that names a Secret is not enough to get it."""
    k("create", "secret", "generic", "db", "--from-literal=password=hunter2")
    header = {"name": "X-Key", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    greedy = agent_doc("a", model={"model": "m", "headers": [header]})
    _applied(k, prompt_doc(), greedy)
    message = _stalled_message(k, "a", "Secret 'db' does not allow agent 'a'")
    assert condition(get(k, "agentspec", "a"), "Stalled")["reason"] == "SecretNotAllowed"
    assert "agentspec.io/allowed-agents" in message
    assert k("get", "role,deployment", "-o", "name").stdout.strip() == "", "nothing granted"
    k("annotate", "secret", "db", "agentspec.io/allowed-agents=b, a")
    _wait_reconciled(k, "a")
    role = get(k, "role", "a")
    assert {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db"],
            "verbs": ["get", "list", "watch"]} in role["rules"]  # fmt: skip
    assert "hunter2" not in json.dumps(k.json("get", "configmap,agentspec,events"))
    # right after 'a' passed: another agent naming the same Secret key is checked on its own
    k.apply(agent_doc("c", model={"model": "m", "headers": [header]}))
    _stalled_message(k, "c", "Secret 'db' does not allow agent 'c'")
    assert k("get", "role", "c", "--ignore-not-found", "-o", "name").stdout.strip() == ""


def test_several_pods_without_shared_state_get_a_warning(k: NamespacedKubectl) -> None:
    """Served (the OpenAI API needs no shared store), but told: A2A tasks would split per pod,
    and budgets kept per pod would let a consumer spend one per pod."""
    limited = {"replicas": 2, "rateLimit": {"tokensPerMinute": 1000}}
    _applied(
        k,
        prompt_doc(),
        agent_doc("one", runtime={"rateLimit": {"tokensPerMinute": 1000}}),
        agent_doc("many", runtime=limited),
    )
    _wait_reconciled(k, "many")
    for wanted, what in (
        ("spec.tasks.storeUrlSecretRef is not set", "the TasksNotShared warning"),
        ("a consumer may spend up to 2 times its budget", "the RateLimitNotShared warning"),
    ):
        eventually(
            lambda w=wanted: any(w in m for m in _warning_events(k, "many")),  # type: ignore[misc]
            timeout=PROPAGATION,
            what=what,
        )
    _wait_reconciled(k, "one")
    assert _warning_events(k, "one") == [], "one replica keeps its state: nothing to warn about"
