"""A2A between real runtime processes: partners as tools, the card, both protocol versions.

In: runtime processes started from files (the router's file holds its partners' AgentSpecs,
as `kubectl apply` would), partners reached through AGENTSPEC_PARTNER_URLS; one fake LLM per
agent; the a2a-sdk client and raw JSON-RPC as outside callers. Asserted: delegation and its
answer, one trace id across processes, partner tokens accounted, card contents and hot
reload, 0.3 and 1.0 calls, task states, the breaker, the hop limit, hot-added partners.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.a2a_client import ask
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import ChatRequest, FakeLLM, ToolCall, Turn, echo, tool_then_answer
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def docs_for(name: str, llm: FakeLLM, **kwargs: Any) -> list[dict[str, Any]]:
    docs = agent_docs(name=name, llm_url=llm.base_url, **kwargs)
    docs[-1]["spec"]["description"] = f"The {name} department"
    return docs


def agent_file(
    tmp: Path,
    name: str,
    docs: list[dict[str, Any]],
    partners: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """The agent's documents plus the AgentSpecs of its partners (so references resolve)."""
    extra = [d for docs_ in (partners or {}).values() for d in docs_ if d["kind"] == "AgentSpec"]
    return write_docs(tmp / f"{name}.yaml", docs + extra)


def runtime_for(
    path: Path, name: str, partners: dict[str, RuntimeProcess] | None = None, **env: str
) -> RuntimeProcess:
    urls = {n: p.base_url for n, p in (partners or {}).items()}
    return RuntimeProcess(
        config=path, agent=name, env={"AGENTSPEC_PARTNER_URLS": json.dumps(urls), **env}
    )


@pytest.fixture(scope="module")
def hr_llm() -> Iterator[FakeLLM]:
    with FakeLLM(responder=echo) as llm:
        yield llm


@pytest.fixture(scope="module")
def router_llm() -> Iterator[FakeLLM]:
    with FakeLLM(responder=tool_then_answer) as llm:
        yield llm


@pytest.fixture(scope="module")
def system(
    hr_llm: FakeLLM, router_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, RuntimeProcess]]:
    tmp = tmp_path_factory.mktemp("a2a")
    hr_docs = docs_for("hr", hr_llm)
    hr = runtime_for(agent_file(tmp, "hr", hr_docs), "hr").start()
    router_docs = docs_for("router", router_llm, partners=[{"name": "hr"}])
    router = runtime_for(
        agent_file(tmp, "router", router_docs, {"hr": hr_docs}), "router", {"hr": hr}
    ).start()
    yield {"hr": hr, "router": router}
    router.stop()
    hr.stop()


@pytest.fixture(autouse=True)
def _fresh(hr_llm: FakeLLM, router_llm: FakeLLM) -> None:
    hr_llm.reset()
    router_llm.reset()
    hr_llm.responder = echo
    router_llm.responder = tool_then_answer


ASK_HR = "hr message='How many leave days do I have?'"


def test_router_delegates_over_a2a_in_one_trace_with_usage(
    system: dict[str, RuntimeProcess],
    hr_llm: FakeLLM,
    router_llm: FakeLLM,
) -> None:
    response = httpx.post(
        f"{system['router'].base_url}/v1/chat/completions",
        headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
        json={"model": "router", "messages": [{"role": "user", "content": ASK_HR}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == (
        "The tool said: Echo: How many leave days do I have?"
    )
    # the partner tool was described to the model from the partner's card
    tool = next(t for t in router_llm.requests[0].tools if t["function"]["name"] == "hr")
    assert "The hr department" in tool["function"]["description"]
    # one trace across router, its model, hr and hr's model
    hr_trace = hr_llm.requests[0].headers["traceparent"].split("-")[1]
    router_trace = router_llm.requests[0].headers["traceparent"].split("-")[1]
    assert hr_trace == router_trace == TRACE_ID
    assert hr_llm.requests[0].headers["x-agentspec-hops"] == "2"
    # partner tokens are accounted in the router's usage
    partner = body["agentspec"]["partnerUsage"]
    assert partner["prompt_tokens"] > 0
    assert body["usage"]["prompt_tokens"] > partner["prompt_tokens"]


def test_contexts_are_remembered_over_a2a_and_partners_continue_them(
    system: dict[str, RuntimeProcess], hr_llm: FakeLLM, router_llm: FakeLLM
) -> None:
    hr = system["hr"].base_url
    ask(hr, "My badge number is 42.", context_id="badge")
    ask(hr, "What is my badge number?", context_id="badge")
    assert [(m["role"], m["content"]) for m in hr_llm.requests[-1].messages[1:]] == [
        ("user", "My badge number is 42."),
        ("assistant", "Echo: My badge number is 42."),
        ("user", "What is my badge number?"),
    ]
    hr_llm.reset()
    ask(hr, "What is my badge number?")  # no context id: a new conversation
    assert len(hr_llm.requests[-1].messages) == 2

    # the router hands its context id to HR: both remember the conversation
    hr_llm.reset()
    for _ in range(2):
        response = httpx.post(
            f"{system['router'].base_url}/v1/chat/completions",
            json={
                "model": "router",
                "context_id": "routed",
                "messages": [{"role": "user", "content": ASK_HR}],
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
    assert [m["content"] for m in hr_llm.requests[-1].messages[1:]] == [
        "How many leave days do I have?",
        "Echo: How many leave days do I have?",
        "How many leave days do I have?",
    ]
    second_turn = router_llm.requests[2]  # turn 1: call + report; turn 2 starts here
    assert [m["content"] for m in second_turn.messages[1:]] == [
        ASK_HR,
        "The tool said: Echo: How many leave days do I have?",
        ASK_HR,
    ]


def test_a2a_sdk_client_streams_the_answer(system: dict[str, RuntimeProcess]) -> None:
    answer = ask(system["router"].base_url, ASK_HR)
    assert answer.text == "The tool said: Echo: How many leave days do I have?"
    assert answer.states[0] == "TASK_STATE_WORKING"
    assert answer.states[-1] == "TASK_STATE_COMPLETED"


def rpc(
    runtime: RuntimeProcess, method: str, params: dict[str, Any], version: str | None
) -> dict[str, Any]:
    headers = {"A2A-Version": version} if version else {}
    response = httpx.post(
        f"{runtime.base_url}/a2a",
        headers=headers,
        timeout=30,
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
    )
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def test_0_3_and_1_0_clients_against_the_same_server(system: dict[str, RuntimeProcess]) -> None:
    hr = system["hr"]
    old = rpc(
        hr,
        "message/send",
        {
            "message": {
                "kind": "message",
                "messageId": "m-old",
                "role": "user",
                "parts": [{"kind": "text", "text": "old client"}],
            }
        },
        None,
    )["result"]
    assert old["kind"] == "task"
    assert old["status"]["state"] == "completed"
    assert "".join(p["text"] for p in old["artifacts"][0]["parts"]) == "Echo: old client"
    new = rpc(
        hr,
        "SendMessage",
        {"message": {"messageId": "m-new", "role": "ROLE_USER", "parts": [{"text": "new client"}]}},
        "1.0",
    )["result"]["task"]
    assert new["status"]["state"] == "TASK_STATE_COMPLETED"
    assert "".join(p["text"] for p in new["artifacts"][0]["parts"]) == "Echo: new client"
    got = rpc(hr, "GetTask", {"id": new["id"]}, "1.0")["result"]
    assert got["status"]["state"] == "TASK_STATE_COMPLETED"
    old_got = rpc(hr, "tasks/get", {"id": old["id"]}, None)["result"]
    assert old_got["status"]["state"] == "completed"


def test_card_describes_the_agent(system: dict[str, RuntimeProcess]) -> None:
    card = httpx.get(f"{system['router'].base_url}/.well-known/agent-card.json").json()
    assert card["name"] == "router"
    assert card["description"] == "The router department"
    assert card["capabilities"]["streaming"] is True
    urls = {i["protocolVersion"]: i["url"] for i in card["supportedInterfaces"]}
    assert urls == {
        "1.0": f"{system['router'].base_url}/a2a",
        "0.3": f"{system['router'].base_url}/a2a",
    }
    assert "hr" in card["skills"][0]["tags"]
    assert "securitySchemes" not in card


def test_failed_and_input_required_tasks(tmp_path: Path) -> None:
    with FakeLLM(responder=Turn.invalid_api_key()) as broken, FakeLLM(responder=echo) as llm:
        failing = runtime_for(agent_file(tmp_path, "bad", docs_for("bad", broken)), "bad")
        asking = runtime_for(
            agent_file(tmp_path, "asker", docs_for("asker", llm, template="Serve {{ team }}.")),
            "asker",
        )
        with failing, asking:
            task = rpc(
                failing,
                "SendMessage",
                {"message": {"messageId": "f1", "role": "ROLE_USER", "parts": [{"text": "x"}]}},
                "1.0",
            )["result"]["task"]
            assert task["status"]["state"] == "TASK_STATE_FAILED"
            assert (
                "rejected the agent's credentials" in task["status"]["message"]["parts"][0]["text"]
            )
            first = rpc(
                asking,
                "SendMessage",
                {"message": {"messageId": "q1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}},
                "1.0",
            )["result"]["task"]
            assert first["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
            assert "'team' is required" in first["status"]["message"]["parts"][0]["text"]
            follow = rpc(
                asking,
                "SendMessage",
                {
                    "message": {
                        "messageId": "q2",
                        "role": "ROLE_USER",
                        "taskId": first["id"],
                        "contextId": first["contextId"],
                        "parts": [{"text": "ops"}],
                    },
                    "metadata": {"variables": {"team": "ops"}},
                },
                "1.0",
            )["result"]["task"]
            assert follow["status"]["state"] == "TASK_STATE_COMPLETED"
            assert llm.requests[-1].system_prompt == "Serve ops."
            assert [m["content"] for m in llm.requests[-1].messages[1:]] == ["hello", "ops"], (
                "the follow-up continues the task's conversation"
            )


def test_partner_down_opens_the_breaker_which_closes_when_it_returns(
    tmp_path: Path,
) -> None:
    with FakeLLM(responder=tool_then_answer) as router_llm, FakeLLM(responder=echo) as hr_llm:
        hr_docs = docs_for("hr", hr_llm)
        hr = runtime_for(agent_file(tmp_path, "hr", hr_docs), "hr")
        router = runtime_for(
            agent_file(
                tmp_path,
                "router",
                docs_for("router", router_llm, partners=[{"name": "hr"}]),
                {"hr": hr_docs},
            ),
            "router",
            {"hr": hr},
            AGENTSPEC_BREAKER_RESET_SECONDS="1",
        )
        with router:

            def ask() -> str:
                body = httpx.post(
                    f"{router.base_url}/v1/chat/completions",
                    timeout=30,
                    json={"model": "router", "messages": [{"role": "user", "content": ASK_HR}]},
                )
                answer: str = body.json()["choices"][0]["message"]["content"]
                return answer

            answers = [ask() for _ in range(4)]
            assert all("could not be reached" in a for a in answers[:3]), answers
            assert "circuit open" in answers[3]
            assert router.status()["partners"][0]["circuit"] == "open"
            hr.start()
            try:
                time.sleep(1.1)  # the breaker's own reset period (configured to 1 s)
                assert ask() == "The tool said: Echo: How many leave days do I have?"
                assert router.status()["partners"][0]["circuit"] == "closed"
            finally:
                hr.stop()


def test_a_call_cycle_stops_at_the_hop_limit(tmp_path: Path) -> None:
    def always_call_partner(request: ChatRequest) -> Turn:
        if request.trailing_tool_results:
            return Turn.text("partner said: " + request.trailing_tool_results[0]["content"])
        return Turn.tool_calls(ToolCall(request.tool_names[0], {"message": "ping"}))

    with FakeLLM(responder=always_call_partner) as llm:
        a_docs = docs_for("ping", llm, partners=[{"name": "pong"}])
        b_docs = docs_for("pong", llm, partners=[{"name": "ping"}])
        a = runtime_for(agent_file(tmp_path, "ping", a_docs, {"pong": b_docs}), "ping")
        b = runtime_for(agent_file(tmp_path, "pong", b_docs, {"ping": a_docs}), "pong")
        a.set_env(AGENTSPEC_PARTNER_URLS=json.dumps({"pong": b.base_url}), AGENTSPEC_MAX_HOPS="3")
        b.set_env(AGENTSPEC_PARTNER_URLS=json.dumps({"ping": a.base_url}), AGENTSPEC_MAX_HOPS="3")
        with a, b:
            response = httpx.post(
                f"{a.base_url}/v1/chat/completions",
                timeout=60,
                json={"model": "ping", "messages": [{"role": "user", "content": "start"}]},
            )
            assert response.status_code == 200
            answer = response.json()["choices"][0]["message"]["content"]
            assert "hop limit reached" in answer, answer
            # ping(0) -> pong(1) -> ping(2) -> pong(3) -> ping refuses hop 4
            assert len(llm.requests) == 8, [r.system_prompt for r in llm.requests]
            assert a.status()["partners"][0]["circuit"] == "closed", "a cycle is not an outage"


def test_hot_added_partner_is_callable_without_restart(tmp_path: Path) -> None:
    with FakeLLM(responder=tool_then_answer) as router_llm, FakeLLM(responder=echo) as llm:
        hr_docs, fin_docs = docs_for("hr", llm), docs_for("finance", llm)
        hr = runtime_for(agent_file(tmp_path, "hr", hr_docs), "hr")
        finance = runtime_for(agent_file(tmp_path, "finance", fin_docs), "finance")
        with hr, finance:
            urls = {"hr": hr, "finance": finance}
            path = agent_file(
                tmp_path,
                "router",
                docs_for("router", router_llm, partners=[{"name": "hr"}]),
                {"hr": hr_docs},
            )
            with runtime_for(path, "router", urls) as router:
                pid = router.pid
                agent_file(
                    tmp_path,
                    "router",
                    docs_for("router", router_llm, partners=[{"name": "hr"}, {"name": "finance"}]),
                    {"hr": hr_docs, "finance": fin_docs},
                )
                wait_until(
                    lambda: "finance" in router.status()["tools"],
                    timeout=10,
                    what="the new partner's tool",
                )
                body = httpx.post(
                    f"{router.base_url}/v1/chat/completions",
                    timeout=30,
                    json={
                        "model": "router",
                        "messages": [{"role": "user", "content": "finance message='budget?'"}],
                    },
                )
                assert body.json()["choices"][0]["message"]["content"] == (
                    "The tool said: Echo: budget?"
                )
                assert router.pid == pid


def test_partner_behind_api_keys_gets_the_configured_credentials(tmp_path: Path) -> None:
    with FakeLLM(responder=tool_then_answer) as router_llm, FakeLLM(responder=echo) as llm:
        hr_docs = docs_for("hr", llm, runtime={"auth": {"apiKeysSecretRef": "hr-keys"}})
        hr = runtime_for(
            agent_file(tmp_path, "hr", hr_docs), "hr", AGENTSPEC_SECRET_HR_KEYS_ROUTER="k-router"
        )
        with hr:
            card = httpx.get(f"{hr.base_url}/.well-known/agent-card.json").json()
            assert set(card["securitySchemes"]) == {"apiKey", "bearer"}
            assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"]["name"] == (
                "X-Api-Key"
            )
            denied = httpx.post(
                f"{hr.base_url}/a2a",
                json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}},
            )
            assert denied.status_code == 401
            header = {
                "name": "X-Api-Key",
                "valueFrom": {"secretKeyRef": {"name": "partner-keys", "key": "hr"}},
            }
            router_docs = docs_for(
                "router", router_llm, partners=[{"name": "hr", "headers": [header]}]
            )
            router = runtime_for(
                agent_file(tmp_path, "router", router_docs, {"hr": hr_docs}),
                "router",
                {"hr": hr},
                AGENTSPEC_SECRET_PARTNER_KEYS_HR="k-router",
            )
            with router:
                body = httpx.post(
                    f"{router.base_url}/v1/chat/completions",
                    timeout=30,
                    json={"model": "router", "messages": [{"role": "user", "content": ASK_HR}]},
                )
                assert body.json()["choices"][0]["message"]["content"] == (
                    "The tool said: Echo: How many leave days do I have?"
                )


def test_a_running_task_can_be_canceled(tmp_path: Path) -> None:
    llm = FakeLLM(responder=Turn.text("too late").with_latency(first_byte=5))
    with llm, runtime_for(agent_file(tmp_path, "slow", docs_for("slow", llm)), "slow") as slow:
        started = rpc(
            slow,
            "SendMessage",
            {
                "message": {"messageId": "c1", "role": "ROLE_USER", "parts": [{"text": "go"}]},
                "configuration": {"returnImmediately": True},
            },
            "1.0",
        )["result"]["task"]
        llm.wait_for_requests(1, timeout=5)
        canceled = rpc(slow, "CancelTask", {"id": started["id"]}, "1.0")["result"]
        assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
        got = rpc(slow, "GetTask", {"id": started["id"]}, "1.0")["result"]
        assert got["status"]["state"] == "TASK_STATE_CANCELED"
        wait_until(
            lambda: slow.status()["inflight"] == 0, timeout=5, what="the canceled run to stop"
        )
