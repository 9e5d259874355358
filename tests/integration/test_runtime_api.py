"""The runtime as a process: a real tool-using conversation, its API contract and bad input.

In: ``agentspec runtime --config <file>`` started as a child process, the file holding the
PromptTemplate, McpServers and AgentSpec a user would apply; the scripted fake LLM; real
MCP servers over streamable HTTP and SSE, and the npm server-everything. Asserted: what
the caller gets (through the openai SDK and raw HTTP) and what the model and the tools saw.
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
from tests.support.fake_llm import (
    ChatRequest,
    FakeLLM,
    ToolCall,
    Turn,
    prompt_tokens,
    tool_then_answer,
)
from tests.support.mcp_servers import CLAIMS, EverythingServer, McpTestServer
from tests.support.runtime_proc import RuntimeProcess

SECRET_ENV = {"AGENTSPEC_SECRET_TOOLS_CREDENTIALS_TOKEN": "s3cret-token"}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(responder=tool_then_answer) as server:
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
def _fresh(llm: FakeLLM) -> None:
    llm.reset()
    llm.responder = tool_then_answer


def client(runtime: RuntimeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{runtime.base_url}/v1", api_key="unused", max_retries=0)


def test_multi_turn_conversation_uses_mcp_tools_over_both_transports(
    runtime: RuntimeProcess, llm: FakeLLM
) -> None:
    api = client(runtime)
    first = api.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "lookup_claim claim_id=EXP-1001"}],
    )
    claim = json.dumps(CLAIMS["EXP-1001"], sort_keys=True)
    assert first.choices[0].message.content == f"The tool said: {claim}"
    # second turn, with the history, through the SSE server
    second = api.chat.completions.create(
        model="assistant",
        messages=[
            {"role": "user", "content": "lookup_claim claim_id=EXP-1001"},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "expense_policy topic=travel"},
        ],
    )
    assert second.choices[0].message.content == (
        "The tool said: Economy class for flights under 6 hours; hotels up to 150 EUR per night."
    )
    seen = llm.requests
    assert len(seen) == 4  # tool call + answer, twice
    assert seen[0].system_prompt == "You are the test assistant."
    # the allow-lists hold: only the listed tools of each server are offered
    assert sorted(seen[0].tool_names) == sorted(
        ["lookup_claim", "whoami", "add", "fail", "slow", "expense_policy"]
    )
    assert seen[1].trailing_tool_results[0]["content"] == claim
    # usage adds up every model call of the request
    assert first.usage is not None
    assert first.usage.prompt_tokens == prompt_tokens(seen[0].messages) + prompt_tokens(
        seen[1].messages
    )


def test_configured_headers_and_query_params_reach_the_mcp_server(
    runtime: RuntimeProcess,
) -> None:
    answer = (
        client(runtime)
        .chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "whoami"}],
        )
        .choices[0]
        .message.content
    )
    assert answer is not None
    who = json.loads(answer.removeprefix("The tool said: "))
    # the server got the value read from the Secret; echoed back, it is masked before the
    # model (and so the caller) can see it
    assert who["headers"]["x-api-key"] == "[redacted]"
    assert who["headerDigests"]["x-api-key"] == hashlib.sha256(b"s3cret-token").hexdigest()
    assert who["headers"]["x-tenant"] == "acme"
    assert who["query"]["region"] == "eu"
    assert "s3cret-token" not in json.dumps(runtime.status())


def test_streaming_with_usage(runtime: RuntimeProcess) -> None:
    stream = client(runtime).chat.completions.create(
        model="assistant",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "add a=2 b=40"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The tool said: 42"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


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
    def always_fail(request: ChatRequest) -> Turn:
        return Turn.tool_calls(ToolCall("fail", {"message": "database down"}))

    llm.responder = always_fail
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
    assert len(seen) == 3
    assert seen[1].trailing_tool_results[0]["content"].startswith("Error: ")
    assert "database down" in seen[1].trailing_tool_results[0]["content"]
    assert seen[2].tools == [], "no tools are offered on the last iteration"


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
    assert missing.startswith("Error: no tool named 'no_such_tool'")
    assert "not valid JSON" in bad


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
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and runtime.status()["inflight"]:
        time.sleep(0.05)
    assert runtime.status()["inflight"] == 0
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


def test_metrics_are_scraped_from_the_metrics_port(runtime: RuntimeProcess) -> None:
    client(runtime).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "add a=1 b=2"}]
    )
    text = httpx.get(runtime.metrics_url, timeout=5).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    key = (
        'agentspec_tokens_total{agent="assistant",direction="input",model="fake-model",'
        'prompt_version="v1"}'
    )
    assert samples[key] > 0
    assert (
        samples[
            'agentspec_tool_calls_total{agent="assistant",outcome="ok",source="mcp",tool="add"}'
        ]
        >= 1
    )
    assert samples['agentspec_requests_total{agent="assistant",api="openai",outcome="ok"}'] >= 1
    assert samples['agentspec_config_reloads_total{agent="assistant",outcome="applied"}'] == 1
    assert samples['agentspec_inflight_requests{agent="assistant"}'] == 0
    assert samples['agentspec_tokens_per_second{agent="assistant"}'] > 0
    assert any(k.startswith("agentspec_model_call_duration_seconds_bucket") for k in samples)
    assert any(k.startswith("agentspec_request_duration_seconds_bucket") for k in samples)


def test_npm_server_everything_tools_work(
    everything_server: EverythingServer,
    tmp_path: Path,
) -> None:
    with FakeLLM(responder=tool_then_answer) as llm:
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
                model="assistant", messages=[{"role": "user", "content": "echo message=hello"}]
            )
            assert answer.choices[0].message.content == "The tool said: Echo: hello"
            assert sorted(llm.requests[0].tool_names) == ["echo", "get-sum"]


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    with FakeLLM(responder=Turn.text("slow answer").with_latency(first_byte=1.5)) as llm:
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
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and runtime.get("/readyz")[0] == 200:
            time.sleep(0.02)
        assert runtime.get("/readyz")[0] == 503, "readiness must drop while draining"
        caller.join(10)
        assert result == {"status": 200, "content": "slow answer"}
        assert runtime.process.popen.wait(10) == 0
        runtime.stop()
