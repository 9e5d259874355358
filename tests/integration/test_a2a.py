"""A2A between real runtime processes: partners as tools, the card, both protocol versions.

In: runtime processes started from files (the router's file holds its partners' AgentSpecs,
as `kubectl apply` would), partners reached through AGENTSPEC_PARTNER_URLS; one fake LLM per
agent, every model call scripted (an extra or missing call on either side fails the test);
the a2a-sdk client and raw JSON-RPC as outside callers. Asserted: delegation and its answer,
one trace id across processes, partner tokens accounted exactly, card contents and hot
reload, 0.3 and 1.0 calls, task states, the breaker, the hop limit, hot-added partners.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.a2a_client import ask
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import (
    ChatRequest,
    FakeLLM,
    ToolCall,
    Turn,
    completion_tokens,
    echo,
    prompt_tokens,
)
from tests.support.fixtures_doubles import exact_traffic
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
    with FakeLLM() as llm:
        yield llm


@pytest.fixture(scope="module")
def router_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
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
def _exact_traffic(
    hr_llm: FakeLLM, router_llm: FakeLLM, request: pytest.FixtureRequest
) -> Iterator[None]:
    yield from exact_traffic(request, hr_llm, router_llm)


QUESTION = "How many leave days do I have?"
ASK_HR = f"Ask HR: {QUESTION}"


def delegate(partner: str = "hr", message: str = QUESTION) -> Turn:
    """The model's turn that hands ``message`` to a partner agent (its tool)."""
    return Turn.tool_calls(ToolCall(partner, {"message": message}))


def seen(request: ChatRequest) -> list[tuple[str, str]]:
    """What the model was shown after the system prompt."""
    return [(m["role"], m["content"]) for m in request.messages[1:]]


def tool_result(request: ChatRequest) -> str:
    (result,) = request.trailing_tool_results
    content: str = result["content"]
    return content


def test_router_delegates_over_a2a_in_one_trace_with_usage(
    system: dict[str, RuntimeProcess],
    hr_llm: FakeLLM,
    router_llm: FakeLLM,
) -> None:
    router_llm.script(delegate(), Turn.text("HR says: 30 days."))
    hr_turn = Turn.text("You have 30 leave days.")
    hr_llm.script(hr_turn)
    response = httpx.post(
        f"{system['router'].base_url}/v1/chat/completions",
        headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
        json={"model": "router", "messages": [{"role": "user", "content": ASK_HR}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "HR says: 30 days."
    assert seen(hr_llm.requests[0]) == [("user", QUESTION)]
    assert tool_result(router_llm.requests[1]) == "You have 30 leave days."
    # the partner tool was described to the model from the partner's card
    tool = next(t for t in router_llm.requests[0].tools if t["function"]["name"] == "hr")
    assert "The hr department" in tool["function"]["description"]
    # one trace across router, its model, hr and hr's model
    hr_trace = hr_llm.requests[0].headers["traceparent"].split("-")[1]
    router_trace = router_llm.requests[0].headers["traceparent"].split("-")[1]
    assert hr_trace == router_trace == TRACE_ID
    assert hr_llm.requests[0].headers["x-agentspec-hops"] == "2"
    # partner tokens are accounted in the router's usage, on top of its own
    partner = body["agentspec"]["partnerUsage"]
    hr_prompt = prompt_tokens(hr_llm.requests[0].messages)
    assert (partner["prompt_tokens"], partner["completion_tokens"]) == (
        hr_prompt,
        completion_tokens(hr_turn),
    )
    assert body["usage"]["prompt_tokens"] == hr_prompt + sum(
        prompt_tokens(r.messages) for r in router_llm.requests
    )


def test_contexts_are_remembered_over_a2a_and_partners_continue_them(
    system: dict[str, RuntimeProcess], hr_llm: FakeLLM, router_llm: FakeLLM
) -> None:
    hr_llm.script(
        Turn.text("Noted."),
        Turn.text("It is 42."),
        Turn.text("I do not know."),
        Turn.text("30 days."),  # the router's first question
        Turn.text("Still 30 days."),  # and its second, in the same context
    )
    router_llm.script(
        delegate(), Turn.text("HR says 30."), delegate(), Turn.text("HR says 30 again.")
    )
    hr = system["hr"].base_url
    ask(hr, "My badge number is 42.", context_id="badge")
    ask(hr, "What is my badge number?", context_id="badge")
    ask(hr, "What is my badge number?")  # no context id: a new conversation
    assert [seen(r) for r in hr_llm.requests] == [
        [("user", "My badge number is 42.")],
        [
            ("user", "My badge number is 42."),
            ("assistant", "Noted."),
            ("user", "What is my badge number?"),
        ],
        [("user", "What is my badge number?")],
    ]

    # the router hands its context id to HR: both remember the conversation
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
    assert seen(hr_llm.requests[-1]) == [
        ("user", QUESTION),
        ("assistant", "30 days."),
        ("user", QUESTION),
    ]
    second_turn = router_llm.requests[2]  # turn 1: call + report; turn 2 starts here
    assert seen(second_turn) == [("user", ASK_HR), ("assistant", "HR says 30."), ("user", ASK_HR)]


def test_a2a_sdk_client_streams_the_answer(
    system: dict[str, RuntimeProcess], hr_llm: FakeLLM, router_llm: FakeLLM
) -> None:
    router_llm.script(delegate(), Turn.text("HR says: 30 days."))
    hr_llm.script(Turn.text("30 days."))
    answer = ask(system["router"].base_url, ASK_HR)
    assert answer.text == "HR says: 30 days."
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


def test_0_3_and_1_0_clients_against_the_same_server(
    system: dict[str, RuntimeProcess], hr_llm: FakeLLM
) -> None:
    hr_llm.script(echo, echo)  # GetTask and tasks/get read the stored tasks
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
    with FakeLLM() as broken, FakeLLM() as llm:
        broken.script(Turn.invalid_api_key())  # not retried
        llm.script(Turn.text("Ready."))  # only once the variable is given
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
    with FakeLLM() as router_llm, FakeLLM() as hr_llm:
        # five questions, each a delegation and an answer; HR's model only for the last
        for i in range(5):
            router_llm.script(delegate(), Turn.text(f"answer {i}"))
        hr_llm.script(Turn.text("30 days."))
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

            def ask() -> None:
                body = httpx.post(
                    f"{router.base_url}/v1/chat/completions",
                    timeout=30,
                    json={"model": "router", "messages": [{"role": "user", "content": ASK_HR}]},
                )
                assert body.status_code == 200, body.text

            for _ in range(4):
                ask()
            results = [tool_result(r) for r in router_llm.requests[1::2]]
            assert all("could not be reached" in r for r in results[:3]), results
            assert "circuit open" in results[3]
            assert router.status()["partners"][0]["circuit"] == "open"
            hr.start()
            try:
                wait_until(
                    lambda: router.status()["partners"][0]["circuit"] == "half-open",
                    timeout=5,
                    what="the breaker's reset period (configured to 1 s)",
                )
                ask()
                assert tool_result(router_llm.requests[-1]) == "30 days."
                assert router.status()["partners"][0]["circuit"] == "closed"
            finally:
                hr.stop()


def test_a_call_cycle_stops_at_the_hop_limit(tmp_path: Path) -> None:
    def relay(request: ChatRequest) -> Turn:
        return Turn.text("partner said: " + tool_result(request))

    with FakeLLM() as llm:  # both agents' model
        # ping(0) -> pong(1) -> ping(2) -> pong(3) -> ping refuses hop 4; then each answers
        llm.script(
            delegate("pong", "ping"),
            delegate("ping", "ping"),
            delegate("pong", "ping"),
            delegate("ping", "ping"),
            *[relay] * 4,
        )
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
            refused = tool_result(llm.requests[4])
            assert "refused the call: hop limit reached" in refused, refused
            assert answer == "partner said: " * 4 + refused
            hops = [r.headers["x-agentspec-hops"] for r in llm.requests]
            assert hops == ["1", "2", "3", "4", "4", "3", "2", "1"]
            assert a.status()["partners"][0]["circuit"] == "closed", "a cycle is not an outage"


def test_hot_added_partner_is_callable_without_restart(tmp_path: Path) -> None:
    with FakeLLM() as router_llm, FakeLLM() as llm:
        router_llm.script(delegate("finance", "budget?"), Turn.text("Finance says: 10k."))
        llm.script(Turn.text("10k."))  # hr's and finance's model; only finance is asked
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
                        "messages": [{"role": "user", "content": "Ask finance: budget?"}],
                    },
                )
                assert body.json()["choices"][0]["message"]["content"] == "Finance says: 10k."
                assert tool_result(router_llm.requests[1]) == "10k."
                assert seen(llm.requests[0]) == [("user", "budget?")]
                assert router.pid == pid


def test_partner_behind_api_keys_gets_the_configured_credentials(tmp_path: Path) -> None:
    with FakeLLM() as router_llm, FakeLLM() as llm:
        router_llm.script(delegate(), Turn.text("HR says: 30 days."))
        llm.script(Turn.text("30 days."))
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
                assert body.json()["choices"][0]["message"]["content"] == "HR says: 30 days."
                assert tool_result(router_llm.requests[1]) == "30 days."


def test_a_running_task_can_be_canceled(tmp_path: Path) -> None:
    llm = FakeLLM()
    with llm, runtime_for(agent_file(tmp_path, "slow", docs_for("slow", llm)), "slow") as slow:
        llm.script(Turn.text("too late").with_latency(first_byte=5))  # cancelled before it
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
