"""The Studio's pure functions (studio/agentspec_studio/views.py): Argo CD detection, what an
agent serves, the prompt center's edits, YAML parsing and the topology."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentspec_studio import views
from agentspec_studio.views import EditError

Json = dict[str, Any]


def template(
    stable: str = "v1", canary: Json | None = None, versions: tuple[str, ...] = ("v1", "v2")
) -> Json:
    release: Json = {"stable": stable, **({"canary": canary} if canary else {})}
    return {
        "metadata": {"name": "p"},
        "spec": {
            "versions": [{"version": v, "template": f"text {v}"} for v in versions],
            "release": release,
        },
    }


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"annotations": {"argocd.argoproj.io/tracking-id": "agents:agentspec.io/x"}}, "agents"),
        ({"labels": {"argocd.argoproj.io/instance": "team-a"}}, "team-a"),
        # the default instance label is Helm's too: only when Argo CD wrote it
        ({"labels": {"app.kubernetes.io/instance": "rel"}}, None),
        (
            {
                "labels": {"app.kubernetes.io/instance": "rel"},
                "managedFields": [{"manager": "argocd-controller"}],
            },
            "rel",
        ),
        ({}, None),
    ],
)
def test_argo_cd_tracking_is_detected(metadata: Json, expected: str | None) -> None:
    assert views.argo_managed({"metadata": {"name": "a", **metadata}}) == expected


def test_serving_weights_and_pins() -> None:
    t = template(canary={"version": "v2", "weight": 30})
    assert views.prompt_serving(t) == [
        {"version": "v1", "weight": 70},
        {"version": "v2", "weight": 30},
    ]
    assert views.prompt_serving(t, pinned="v2") == [{"version": "v2", "weight": 100}]
    labelled = {**t, "spec": {**t["spec"], "labels": {"prod": "v1"}}}
    assert views.prompt_serving(labelled, label="prod") == [{"version": "v1", "weight": 100}]
    assert views.prompt_serving(labelled, label="none") == []


def test_versions_are_immutable_and_edits_name_what_is_wrong() -> None:
    with pytest.raises(EditError, match="versions are immutable") as taken:
        views.add_version(template(), {"version": "v1", "template": "x"})
    assert taken.value.status == 409
    added = views.add_version(template(), {"version": "v3", "template": "x", "extra": 1})
    assert added["spec"]["versions"][-1] == {"version": "v3", "template": "x"}
    with pytest.raises(EditError, match="has no version 'v9'"):
        views.set_canary(template(), "v9", 10)
    with pytest.raises(EditError, match="stable version already"):
        views.set_canary(template(), "v1", 10)
    with pytest.raises(EditError, match="no canary to promote"):
        views.promote(template())


def test_rollback_drops_a_canary_else_returns_to_the_stable_before_the_promotion() -> None:
    with_canary = template(canary={"version": "v2", "weight": 20})
    assert views.rollback(with_canary)["spec"]["release"] == {"stable": "v1"}
    promoted = views.promote(
        template(canary={"version": "v3", "weight": 50}, versions=("v1", "v2", "v3"))
    )
    assert promoted["metadata"]["annotations"][views.PREVIOUS_STABLE] == "v1"
    back = views.rollback(promoted)
    assert back["spec"]["release"] == {"stable": "v1"}
    assert views.PREVIOUS_STABLE not in back["metadata"]["annotations"]
    # no record: the version listed before
    assert views.rollback(template(stable="v2"))["spec"]["release"] == {"stable": "v1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [b", "not valid YAML"),
        ("- a\n- b", "exactly one object"),
        ("kind: AgentSpec\nmetadata: {name: a}", "apiVersion is missing"),
        ("apiVersion: v1\nkind: AgentSpec\nmetadata: [a]", "metadata.name is missing"),
        (
            "apiVersion: v1\nkind: AgentSpec\nmetadata: {name: ../../secrets/x}",
            "not a Kubernetes name",
        ),
    ],
)
def test_bad_yaml_is_named(text: str, message: str) -> None:
    with pytest.raises(EditError, match=message):
        views.parse_one(text)


def test_the_diff_leaves_out_what_the_server_writes() -> None:
    live: Json = {
        "apiVersion": "v1",
        "kind": "AgentSpec",
        "metadata": {"name": "a", "resourceVersion": "7", "managedFields": [{}], "uid": "u"},
        "spec": {"model": {"model": "m1"}},
        "status": {"conditions": []},
    }
    after: Json = {
        **live,
        "metadata": {**live["metadata"], "resourceVersion": "8"},
        "spec": {"model": {"model": "m2"}},
    }
    diff = views.diff(live, after, name="a")
    assert "-    model: m1\n+    model: m2\n" in diff
    assert "resourceVersion" not in diff
    assert "status" not in diff


def test_topology_edges_reach_nodes_and_name_what_is_missing() -> None:
    agents: list[Json] = [
        {
            "metadata": {"name": "router", "namespace": "ns"},
            "spec": {
                "partners": [
                    {"name": "hr", "namespace": "ns"},
                    {"name": "pay", "namespace": "fin"},
                ],
                "mcpServers": [{"name": "ghost"}],
                "knowledge": [{"name": "kb"}],
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        {"metadata": {"name": "hr", "namespace": "ns"}, "spec": {}},
    ]
    graph = views.topology(agents, [])
    ids = {n["id"]: n for n in graph["nodes"]}
    assert {e["to"] for e in graph["edges"]} <= set(ids)
    assert "agent/hr" in ids
    assert not ids["agent/hr"].get("missing")
    assert ids["agent/fin/pay"]["missing"] is True
    assert ids["mcp/ghost"]["missing"] is True
    assert ids["knowledge/router/kb"]["healthy"] is True


def test_topology_edges_carry_the_call_rate_of_what_they_reach() -> None:
    agents: list[Json] = [
        {
            "metadata": {"name": "router", "namespace": "ns"},
            "spec": {
                "partners": [{"name": "hr"}, {"name": "pay", "namespace": "fin"}],
                "mcpServers": [{"name": "tools"}],
                "knowledge": [{"name": "kb"}],
            },
        },
    ]
    # as the runtime labels them: a partner by namespace/name (its own namespace too)
    rates = {
        ("router", "partner", "ns/hr"): 0.5,
        ("router", "partner", "fin/pay"): 0.25,
        ("router", "mcp", "tools"): 2.0,
        ("other", "mcp", "tools"): 9.0,
    }
    graph = views.topology(agents, [], rates)
    by_target = {e["to"]: e["rate"] for e in graph["edges"]}
    assert by_target == {
        "agent/hr": 0.5,
        "agent/fin/pay": 0.25,
        "mcp/tools": 2.0,
        "knowledge/router/kb": 0.0,
    }
    assert "rate" not in views.topology(agents, [])["edges"][0]  # no Prometheus: no figure


def test_a_stream_chunk_becomes_the_playground_events() -> None:
    tool = {"event": "tool_end", "tool": "hr", "source": "partner", "target": "ns/hr", "ok": True}
    assert views.chat_events(json.dumps({"choices": [], "agentspec": tool})) == [
        {"type": "tool", **tool}
    ]
    text = {"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]}
    assert views.chat_events(json.dumps(text)) == [{"type": "delta", "text": "Hi"}]
    last = {
        "choices": [{"delta": {}, "finish_reason": "stop"}],
        "agentspec": {"promptVersion": "v2"},
    }
    assert views.chat_events(json.dumps(last)) == [
        {"type": "done", "finishReason": "stop", "agentspec": {"promptVersion": "v2"}}
    ]
    usage = {"choices": [], "usage": {"prompt_tokens": 3}}
    assert views.chat_events(json.dumps(usage)) == [
        {"type": "usage", "usage": {"prompt_tokens": 3}}
    ]
    failed = {"error": {"message": "rate limit reached", "status": 429}}
    assert views.chat_events(json.dumps(failed)) == [
        {"type": "error", "message": "rate limit reached"}
    ]
    assert views.chat_events("not json") == []
    assert views.chat_events("[1]") == []


def test_an_a2a_stream_becomes_the_playground_events() -> None:
    def result(payload: Json) -> str:
        return json.dumps({"jsonrpc": "2.0", "id": 1, "result": payload})

    submitted = {"task": {"id": "t1", "status": {"state": "TASK_STATE_SUBMITTED"}}}
    assert views.a2a_events(result(submitted)) == [
        {"type": "task", "taskId": "t1", "state": "submitted"}
    ]
    working = {"statusUpdate": {"taskId": "t1", "status": {"state": "TASK_STATE_WORKING"}}}
    assert views.a2a_events(result(working)) == [{"type": "state", "state": "working"}]
    first = {"artifactUpdate": {"artifact": {"parts": [{"text": "28 "}, {"text": "days"}]}}}
    assert views.a2a_events(result(first)) == [
        {"type": "delta", "text": "28 days", "replace": True}
    ]
    more = {"artifactUpdate": {"artifact": {"parts": [{"text": " a year"}]}, "append": True}}
    assert views.a2a_events(result(more)) == [
        {"type": "delta", "text": " a year", "replace": False}
    ]
    waiting = {
        "statusUpdate": {
            "status": {
                "state": "TASK_STATE_INPUT_REQUIRED",
                "message": {"parts": [{"text": "which country?"}]},
            }
        }
    }
    assert views.a2a_events(result(waiting)) == [
        {"type": "state", "state": "input_required", "message": "which country?"}
    ]
    # a repeated message id answers with the settled task: its answer whole, then its end
    settled = {
        "task": {
            "id": "t0",
            "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"parts": [{"text": "28 days"}]}],
            "metadata": {"agentspec.io/promptVersion": "v1"},
        }
    }
    task, answer, done, _usage = views.a2a_events(result(settled))
    assert task == {"type": "task", "taskId": "t0", "state": "completed"}
    assert answer == {"type": "delta", "text": "28 days", "replace": True}
    assert done["agentspec"]["promptVersion"] == "v1"
    completed = {
        "statusUpdate": {
            "status": {"state": "TASK_STATE_COMPLETED"},
            "metadata": {
                "agentspec.io/promptVersion": "v2",
                "agentspec.io/configRevision": "abc",
                "agentspec.io/usage": {"input_tokens": 269.0, "output_tokens": 114.0},
            },
        }
    }
    done, usage = views.a2a_events(result(completed))
    assert done["agentspec"]["promptVersion"] == "v2"
    assert usage["usage"] == {"prompt_tokens": 269, "completion_tokens": 114}
    failed = {
        "statusUpdate": {
            "status": {
                "state": "TASK_STATE_FAILED",
                "message": {"parts": [{"text": "the model is unavailable"}]},
            }
        }
    }
    assert views.a2a_events(result(failed)) == [
        {"type": "error", "message": "the task failed: the model is unavailable"}
    ]
    refused = json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32009, "message": "no"}})
    assert views.a2a_events(refused) == [{"type": "error", "message": "no"}]
    assert views.a2a_events("{") == []
