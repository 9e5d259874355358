"""The runtime as a process: a real tool-using conversation, its API contract and bad input.

In: ``agentspec runtime --config <file>`` started as a child process, the file holding the
PromptTemplate, McpServers and AgentSpec a user would apply; the fake LLM, every model call
scripted (an extra or missing call fails the test); real MCP servers over streamable HTTP and
SSE, and the npm server-everything. Asserted: what the caller gets (through the openai SDK
and raw HTTP), what the model and the tools saw, and the metrics a request adds.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, ToolCall, Turn, completion_tokens, prompt_tokens
from tests.support.fixtures_doubles import exact_traffic
from tests.support.mcp_servers import CLAIMS, EverythingServer, McpTestServer
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

SECRET_ENV = {"AGENTSPEC_SECRET_TOOLS_CREDENTIALS_TOKEN": "s3cret-token"}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def runtime(
    llm: FakeLLM,
    mcp_server_http: McpTestServer,
    mcp_server_sse: McpTestServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RuntimeProcess]:
    mcp: list[dict[str, Any]] = [
        {
            "name": "claims-http",
            "url": mcp_server_http.url,
            "transport": "streamable-http",
            "headers": [{"name": "X-Api-Key"}],
        },
        {"name": "claims-sse", "url": mcp_server_sse.url, "transport": "sse"},
    ]
    refs: list[dict[str, Any]] = [
        {
            "name": "claims-http",
            "tools": ["lookup_claim", "whoami", "add", "fail", "slow"],
            "headers": [
                {
                    "name": "X-Api-Key",
                    "valueFrom": {"secretKeyRef": {"name": "tools-credentials", "key": "token"}},
                },
                {"name": "X-Tenant", "value": "acme"},
            ],
            "queryParams": [{"name": "region", "value": "eu"}],
        },
        {"name": "claims-sse", "tools": ["expense_policy"]},
    ]
    path = tmp_path_factory.mktemp("agent") / "agent.yaml"
    write_docs(path, agent_docs(llm_url=llm.base_url, mcp=mcp, mcp_refs=refs, max_iterations=3))
    process = RuntimeProcess(config=path, env=SECRET_ENV, args=("--max-body-bytes", "4096"))
    with process:
        yield process


@pytest.fixture(autouse=True)
def _exact_traffic(llm: FakeLLM, request: pytest.FixtureRequest) -> Iterator[None]:
    yield from exact_traffic(request, llm)


def client(runtime: RuntimeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{runtime.base_url}/v1", api_key="unused", max_retries=0)


def test_multi_turn_conversation_uses_mcp_tools_over_both_transports(
    runtime: RuntimeProcess, llm: FakeLLM
) -> None:
    llm.script(
        Turn.tool_calls(ToolCall("lookup_claim", {"claim_id": "EXP-1001"})),
        Turn.text("Claim EXP-1001 is approved."),
        Turn.tool_calls(ToolCall("expense_policy", {"topic": "travel"})),  # over SSE
        Turn.text("Economy class."),
    )
    api = client(runtime)
    question: Any = {"role": "user", "content": "What about claim EXP-1001?"}
    first = api.chat.completions.create(model="assistant", messages=[question])
    assert first.choices[0].message.content == "Claim EXP-1001 is approved."
    # second turn, with the history
    history: list[Any] = [
        question,
        {"role": "assistant", "content": "Claim EXP-1001 is approved."},
        {"role": "user", "content": "And the travel policy?"},
    ]
    second = api.chat.completions.create(model="assistant", messages=history)
    assert second.choices[0].message.content == "Economy class."

    system = {"role": "system", "content": "You are the test assistant."}
    claim = json.dumps(CLAIMS["EXP-1001"], sort_keys=True)
    policy = "Economy class for flights under 6 hours; hotels up to 150 EUR per night."
    seen = llm.requests
    assert [r.messages for r in seen] == [
        [system, question],
        [system, question, _called(seen[1], "call_1_0"), _result("call_1_0", claim)],
        [system, *history],
        [system, *history, _called(seen[3], "call_3_0"), _result("call_3_0", policy)],
    ]
    # the allow-lists hold: only the listed tools of each server are offered
    assert sorted(seen[0].tool_names) == sorted(
        ["lookup_claim", "whoami", "add", "fail", "slow", "expense_policy"]
    )
    # usage adds up every model call of the request
    assert first.usage is not None
    assert first.usage.prompt_tokens == prompt_tokens(seen[0].messages) + prompt_tokens(
        seen[1].messages
    )


def _called(request: Any, call_id: str) -> dict[str, Any]:
    """The assistant message with the tool call, as the runtime sent it back (checked once)."""
    message: dict[str, Any] = request.messages[-2]
    assert message["role"] == "assistant"
    assert [c["id"] for c in message["tool_calls"]] == [call_id]
    return message


def _result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def test_configured_headers_and_query_params_reach_the_mcp_server(
    runtime: RuntimeProcess, llm: FakeLLM
) -> None:
    llm.script(Turn.tool_calls(ToolCall("whoami")), Turn.text("done"))
    client(runtime).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "who am I?"}]
    )
    (result,) = llm.requests[1].trailing_tool_results
    who = json.loads(result["content"])
    # the server got the value read from the Secret; echoed back, it is masked before the
    # model (and so the caller) can see it
    assert who["headers"]["x-api-key"] == "[redacted]"
    assert who["headerDigests"]["x-api-key"] == hashlib.sha256(b"s3cret-token").hexdigest()
    assert who["headers"]["x-tenant"] == "acme"
    assert who["query"]["region"] == "eu"
    assert "s3cret-token" not in json.dumps(runtime.status())


def test_streaming_with_usage(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    turns = [Turn.tool_calls(ToolCall("add", {"a": 2, "b": 40})), Turn.text("It is 42.")]
    llm.script(*turns)
    stream = client(runtime).chat.completions.create(
        model="assistant",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "add 2 and 40"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is 42."
    assert llm.requests[1].trailing_tool_results[0]["content"] == "42"
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        sum(prompt_tokens(r.messages) for r in llm.requests),
        sum(completion_tokens(t) for t in turns),
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # tool events are our extension: a plain OpenAI client asked for none and got none
    assert not [c for c in chunks if not c.choices and "agentspec" in (c.model_extra or {})]


def test_streaming_shows_the_tool_calls_when_asked(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    llm.script(
        Turn.tool_calls(
            ToolCall("add", {"a": 2, "b": 40}),
            ToolCall("fail", {}),
            ToolCall("leak_the_secret_plan", {}),  # a name the model made up
        ),
        Turn.text("It is 42."),
    )
    stream = client(runtime).chat.completions.create(
        model="assistant",
        stream=True,
        extra_body={"stream_options": {"include_agentspec_events": True}},
        messages=[{"role": "user", "content": "add 2 and 40"}],
    )
    chunks = list(stream)

    def event(chunk: Any) -> Any:
        return (chunk.model_extra or {})["agentspec"]

    events = [event(c) for c in chunks if not c.choices]
    starts = {e["tool"]: e for e in events if e["event"] == "tool_start"}
    ends = {e["tool"]: e for e in events if e["event"] == "tool_end"}
    assert set(starts) == set(ends) == {"add", "fail", "unknown"}
    assert {k: (e["source"], e["target"]) for k, e in ends.items()} == {
        "add": ("mcp", "claims-http"),
        "fail": ("mcp", "claims-http"),
        "unknown": ("unknown", "unknown"),
    }
    # the model's own text (a made-up name, its call ids) never reaches the caller this way:
    # the calls are numbered by the run
    assert "leak_the_secret_plan" not in json.dumps(events)
    assert sorted(e["callId"] for e in ends.values()) == ["1", "2", "3"]
    assert (ends["add"]["ok"], ends["fail"]["ok"]) == (True, False)
    assert ends["add"]["ms"] >= 0
    assert "ok" not in starts["add"]
    # each call's start comes before its end, and both before the answer's first text
    order = [
        f"{event(c)['event']}:{event(c)['tool']}" if not c.choices else "text"
        for c in chunks
        if not c.choices or c.choices[0].delta.content
    ]
    for tool in ("add", "fail"):
        assert order.index(f"tool_start:{tool}") < order.index(f"tool_end:{tool}")
    assert order.index("text") > max(i for i, o in enumerate(order) if o != "text")
    # the arguments and results stay out of the events: names and outcomes only
    assert {key for e in events for key in e} == {
        "event", "callId", "tool", "source", "target", "ok", "ms",
    }  # fmt: skip


def test_concurrent_tool_calls_run_in_parallel(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    llm.script(
        Turn.tool_calls(ToolCall("slow", {"seconds": 0.8}), ToolCall("slow", {"seconds": 0.8})),
        Turn.text("both done"),
    )
    started = time.perf_counter()
    answer = client(runtime).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "go"}]
    )
    elapsed = time.perf_counter() - started
    assert answer.choices[0].message.content == "both done"
    results = llm.requests[1].trailing_tool_results
    assert [r["content"] for r in results] == ["slept 0.8s", "slept 0.8s"]
    assert elapsed < 1.5, f"two 0.8 s tools took {elapsed:.2f}s: not concurrent"


def test_tool_failure_is_told_to_the_model_and_max_iterations_stop_the_loop(
    runtime: RuntimeProcess,
    llm: FakeLLM,
) -> None:
    # maxIterations is 3: the third call is the last, whatever the model asks for
    llm.script(*[Turn.tool_calls(ToolCall("fail", {"message": "database down"}))] * 3)
    response = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": "try"}]},
        timeout=20,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["agentspec"]["finishReason"] == "max_iterations"
    assert body["agentspec"]["iterations"] == 3
    seen = llm.requests
    error = "Error: Error executing tool fail: database down"  # the MCP server's own words
    assert [r.trailing_tool_results for r in seen] == [
        [],
        [_result("call_1_0", error)],
        [_result("call_2_0", error)],
    ]
    assert [len(r.tools) for r in seen] == [6, 6, 0], "no tools are offered on the last call"


def test_unknown_tool_and_bad_arguments_become_tool_errors(
    runtime: RuntimeProcess,
    llm: FakeLLM,
) -> None:
    llm.script(
        Turn.tool_calls(ToolCall("no_such_tool", {}), ToolCall("add", "{not json")),
        Turn.text("ok"),
    )
    answer = client(runtime).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content == "ok"
    missing, bad = (r["content"] for r in llm.requests[1].trailing_tool_results)
    assert missing == (
        "Error: no tool named 'no_such_tool'; available: add, expense_policy, fail, "
        "lookup_claim, slow, whoami"
    )
    assert bad == (
        "Error: the arguments are not valid JSON (Expecting property name enclosed in double "
        "quotes)"
    )


@pytest.mark.parametrize(
    ("turn", "status", "code", "says"),
    [
        (Turn.invalid_api_key(), 502, "model_auth_failed", "rejected the agent's credentials"),
        (
            Turn.model_not_found("fake-model"),
            502,
            "model_not_found_at_endpoint",
            "does not know model 'fake-model'",
        ),
    ],
    ids=["auth", "unknown-model"],
)
def test_model_endpoint_errors_are_clear(  # noqa: PLR0917 - pytest passes fixtures by position
    runtime: RuntimeProcess,
    llm: FakeLLM,
    turn: Turn,
    status: int,
    code: str,
    says: str,
) -> None:
    llm.script(turn)
    response = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]},
        timeout=20,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"]


def test_rate_limits_and_server_errors_are_retried(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    llm.script(Turn.rate_limited(retry_after=0.1), Turn.server_error(), Turn.text("finally"))
    answer = client(runtime).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content == "finally"
    assert len(llm.requests) == 3


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (json.dumps({"model": "assistant", "messages": "hi"}).encode(), 400, "messages"),
        (json.dumps({"model": "assistant", "messages": []}).encode(), 400, "messages"),
        (
            json.dumps(
                {"model": "assistant", "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            400,
            "messages.0.role",
        ),
        (json.dumps({"model": "assistant", "mesages": []}).encode(), 400, "mesages"),
        (
            json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(),
            404,
            "does not exist",
        ),
        (
            json.dumps(
                {"model": "assistant", "messages": [{"role": "user", "content": "x" * 5000}]}
            ).encode(),
            413,
            "exceeds 4096 bytes",
        ),
    ],
    ids=[
        "malformed",
        "not-object",
        "wrong-type",
        "empty",
        "bad-role",
        "unknown-field",
        "unknown-model",
        "too-large",
    ],
)
def test_bad_input_gets_a_clear_4xx(
    runtime: RuntimeProcess,
    body: bytes,
    status: int,
    fragment: str,
) -> None:
    response = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert runtime.get("/healthz")[0] == 200


def test_client_disconnect_mid_stream_leaks_nothing(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    llm.script(Turn.text("one two three four five six").with_latency(per_chunk=0.5))
    with httpx.stream(
        "POST",
        f"{runtime.base_url}/v1/chat/completions",
        json={"model": "assistant", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    # the client is gone: the run is cancelled, nothing stays in flight
    wait_until(
        lambda: runtime.status()["inflight"] == 0, timeout=5, what="the cancelled run to end"
    )
    assert runtime.status()["retiringSnapshots"] == 0
    assert client(runtime).models.list().data[0].id == "assistant"


def test_models_health_and_status(runtime: RuntimeProcess) -> None:
    assert [m.id for m in client(runtime).models.list().data] == ["assistant"]
    assert runtime.get("/healthz") == (200, b"ok")
    assert runtime.get("/readyz") == (200, b"ok")
    status = runtime.status()
    assert status["agent"] == "assistant"
    assert status["promptVersions"] == {"v1": 100}
    assert len(status["configRevision"]) == 16
    assert {s["name"]: s["connected"] for s in status["mcpServers"]} == {
        "claims-http": True,
        "claims-sse": True,
    }


def scrape(runtime: RuntimeProcess) -> dict[str, float]:
    text = httpx.get(runtime.metrics_url, timeout=5).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_are_scraped_from_the_metrics_port(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    turns = [Turn.tool_calls(ToolCall("add", {"a": 1, "b": 2})), Turn.text("3")]
    llm.script(*turns)
    before = scrape(runtime)
    client(runtime).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "add 1 and 2"}]
    )
    after = scrape(runtime)

    def added(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    tokens = 'agentspec_tokens_total{agent="assistant",direction="%s",model="fake-model",prompt_version="v1"}'  # noqa: E501
    input_tokens = sum(prompt_tokens(r.messages) for r in llm.requests)
    output_tokens = sum(completion_tokens(t) for t in turns)
    assert added(tokens % "input") == input_tokens
    assert added(tokens % "output") == output_tokens
    # who pays: the same tokens by consumer (no auth here: anonymous)
    paid = 'agentspec_consumer_tokens_total{agent="assistant",consumer="anonymous",direction="%s",model="fake-model"}'  # noqa: E501
    assert (added(paid % "input"), added(paid % "output")) == (input_tokens, output_tokens)
    # the same per call, as the OpenTelemetry GenAI conventions name it (two model calls)
    usage = (
        'gen_ai_client_token_usage_%s{agent="assistant",gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai",gen_ai_request_model="fake-model",'
        'gen_ai_token_type="%s"}'
    )
    assert (added(usage % ("count", "input")), added(usage % ("count", "output"))) == (2, 2)
    assert added(usage % ("sum", "input")) == input_tokens
    assert added(usage % ("sum", "output")) == output_tokens
    tool = (
        'agentspec_tool_calls_total{agent="assistant",outcome="%s",source="mcp",'
        'target="claims-http",tool="add"}'
    )
    assert (added(tool % "ok"), added(tool % "error")) == (1, 0)
    requests = 'agentspec_requests_total{agent="assistant",api="openai",outcome="%s"}'
    assert (added(requests % "ok"), added(requests % "error")) == (1, 0)
    model_calls = (
        'agentspec_model_call_duration_seconds_count{agent="assistant",model="fake-model",'
        'outcome="ok"}'
    )
    assert added(model_calls) == 2
    assert added('agentspec_request_duration_seconds_count{agent="assistant",api="openai"}') == 1
    # the same by the prompt version that served it (a canary's A/B figures); the error
    # series exists at 0 from the load, so a version's first failure is counted by rate()
    by_version = 'agentspec_prompt_version_requests_total{agent="assistant",outcome="%s",prompt_version="v1"}'  # noqa: E501
    assert (added(by_version % "ok"), added(by_version % "error")) == (1, 0)
    assert by_version % "error" in after
    assert (
        added(
            'agentspec_prompt_version_request_duration_seconds_count{agent="assistant",'
            'prompt_version="v1"}'
        )
        == 1
    )
    assert after['agentspec_config_reloads_total{agent="assistant",outcome="applied"}'] == 1
    assert after['agentspec_inflight_requests{agent="assistant"}'] == 0
    # tokens per second are Prometheus' rate() of the counters, not an in-process gauge
    assert not [name for name in after if name.startswith("agentspec_tokens_per_second")]


def test_npm_server_everything_tools_work(
    everything_server: EverythingServer,
    tmp_path: Path,
) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.tool_calls(ToolCall("echo", {"message": "hello"})), Turn.text("done"))
        path = write_docs(
            tmp_path / "agent.yaml",
            agent_docs(
                llm_url=llm.base_url,
                mcp=[{"name": "everything", "url": everything_server.url}],
                mcp_refs=[{"name": "everything", "tools": ["echo", "get-sum"]}],
            ),
        )
        with RuntimeProcess(config=path) as runtime:
            answer = client(runtime).chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "echo hello"}]
            )
            assert answer.choices[0].message.content == "done"
            assert sorted(llm.requests[0].tool_names) == ["echo", "get-sum"]
            assert llm.requests[1].trailing_tool_results[0]["content"] == "Echo: hello"


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.text("slow answer").with_latency(first_byte=1.5))
        path = write_docs(tmp_path / "agent.yaml", agent_docs(llm_url=llm.base_url))
        runtime = RuntimeProcess(config=path).start()
        result: dict[str, int | str] = {}

        def call() -> None:
            response = httpx.post(
                f"{runtime.base_url}/v1/chat/completions",
                json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]},
                timeout=10,
            )
            result["status"] = response.status_code
            result["content"] = response.json()["choices"][0]["message"]["content"]

        caller = threading.Thread(target=call)
        caller.start()
        llm.wait_for_requests(1, timeout=5)
        assert runtime.process is not None
        runtime.process.popen.send_signal(signal.SIGTERM)
        wait_until(
            lambda: runtime.get("/readyz")[0] == 503,
            timeout=1,
            interval=0.02,
            what="readiness to drop while draining",
        )
        caller.join(10)
        assert result == {"status": 200, "content": "slow answer"}
        assert runtime.process.popen.wait(10) == 0
        runtime.stop()
