"""Model trouble handled like a gateway would: bounded retries, Retry-After passed on, one
timeout for the whole call, work stopped when the caller leaves, a circuit breaker, and no
upstream text (nor secret) in any answer.

In: a runtime process per test on a file config whose model is the fake LLM, scripted with
exactly the answers each scenario needs (429 with Retry-After, 500s, a hang, an error that
echoes the request's Authorization header). Asserted: status codes, Retry-After, how many
requests reached the model, elapsed times, ``/status`` and the circuit metric, and that the
API key appears in no answer (JSON, SSE, A2A) and only redacted in the log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

QUESTION = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
API_KEY = "sk-live-4f9a1c77e2b04d3c"


def runtime_for(
    tmp_path: Path, llm: FakeLLM, *, env: dict[str, str] | None = None, **model: Any
) -> RuntimeProcess:
    docs = agent_docs(
        llm_url=llm.base_url,
        model={"apiKeySecretRef": {"name": "llm", "key": "key"}, **model},
        memory={"type": "none"},
    )
    path = write_docs(tmp_path / "agent.yaml", docs)
    return RuntimeProcess(config=path, env={"AGENTSPEC_SECRET_LLM_KEY": API_KEY, **(env or {})})


def ask(runtime: RuntimeProcess, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{runtime.base_url}/v1/chat/completions", json={**QUESTION, **extra}, timeout=60
    )


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def a2a_send(runtime: RuntimeProcess, text: str) -> dict[str, Any]:
    message = {
        "messageId": f"m-{time.monotonic_ns()}",
        "role": "ROLE_USER",
        "parts": [{"text": text}],
    }
    response = httpx.post(
        f"{runtime.base_url}/a2a",
        headers={"a2a-version": "1.0"},
        json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}},
        timeout=60,
    )
    task: dict[str, Any] = response.json()["result"]["task"]
    return task


def test_429_within_the_budget_is_retried_after_retry_after(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.rate_limited(retry_after=0.3), Turn.text("made it"))
        with runtime_for(tmp_path, llm) as runtime:
            started = time.monotonic()
            response = ask(runtime)
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "made it"
            assert time.monotonic() - started >= 0.3
        llm.assert_script_consumed()


def test_429_asking_for_more_than_the_budget_is_passed_on_at_once(tmp_path: Path) -> None:
    """A caller was once held 90 s by three 30 s Retry-Afters; now it is told when to return."""
    with FakeLLM() as llm:
        llm.script(*[Turn.rate_limited(retry_after=120)] * 3)
        with runtime_for(tmp_path, llm, retryBudgetSeconds=5) as runtime:
            started = time.monotonic()
            response = ask(runtime)
            assert time.monotonic() - started < 3
            assert response.status_code == 429
            assert response.headers["retry-after"] == "120"
            assert response.json()["error"]["code"] == "model_rate_limited"

            streamed = ask(runtime, stream=True)
            assert streamed.status_code == 200  # the stream had begun
            error = sse_events(streamed)[-1]["error"]
            assert (error["code"], error["status"], error["retry_after"]) == (
                "model_rate_limited",
                429,
                120,
            )

            task = a2a_send(runtime, "hi")
            assert task["status"]["state"] == "TASK_STATE_FAILED"
            # status-update metadata lands on the task (as the completed task's usage does)
            assert task["metadata"]["agentspec.io/retryAfter"] == 120
            assert task["metadata"]["agentspec.io/httpStatus"] == 429
        assert len(llm.requests) == 3, "one attempt each, no retries into a 120 s wait"
        llm.assert_script_consumed()


def test_server_errors_are_retried_then_a_stable_502(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(*[Turn.server_error("upstream exploded at 10.1.2.3")] * 3)
        with runtime_for(tmp_path, llm, maxRetries=2) as runtime:
            response = ask(runtime)
            assert response.status_code == 502
            message = response.json()["error"]["message"]
            assert message == "the model endpoint failed (HTTP 500)"
            assert llm.base_url not in response.text
            assert "10.1.2.3" not in response.text
        assert len(llm.requests) == 3  # 1 + maxRetries
        llm.assert_script_consumed()


def test_the_timeout_bounds_the_whole_call(tmp_path: Path) -> None:
    """A hanging model once took 4x timeoutSeconds plus backoff to fail."""
    with FakeLLM() as llm:
        llm.script(Turn.text("too late").with_latency(first_byte=30))
        with runtime_for(tmp_path, llm, timeoutSeconds=2, maxRetries=3) as runtime:
            started = time.monotonic()
            response = ask(runtime)
            elapsed = time.monotonic() - started
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "model_timeout"
            assert 1.9 < elapsed < 4, elapsed
        assert len(llm.requests) == 1
        llm.assert_script_consumed()


def test_a_caller_who_leaves_stops_the_retries(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(*[Turn.error(503, "busy", retry_after=1)] * 4)
        with runtime_for(tmp_path, llm, maxRetries=3, retryBudgetSeconds=30) as runtime:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{runtime.base_url}/v1/chat/completions", json=QUESTION, timeout=0.5)
            wait_until(lambda: len(llm.requests) >= 1, timeout=5, what="the first attempt")
            seen = len(llm.requests)
            time.sleep(2.5)  # two more retries would have happened by now
            assert len(llm.requests) == seen, "no retry after the caller left"
            assert runtime.status()["inflight"] == 0
        llm.reset()


def circuit(runtime: RuntimeProcess) -> str:
    """The model breaker's state in /status, checked against the metric. Open turns half-open
    by time alone, so the metric is compared only when /status agrees before and after it."""
    before = runtime.status()["modelCircuit"]
    metrics = httpx.get(runtime.metrics_url, timeout=5).text
    state: str = runtime.status()["modelCircuit"]
    if state == before:
        line = f'agentspec_model_circuit_state{{agent="assistant",state="{state}"}} 1.0'
        assert line in metrics, metrics
    return state


def test_the_circuit_opens_fails_fast_half_opens_and_closes(tmp_path: Path) -> None:
    # 3 s open: long enough for the assertions made while open to see one state
    env = {"AGENTSPEC_MODEL_BREAKER_FAILURES": "2", "AGENTSPEC_MODEL_BREAKER_RESET_SECONDS": "3"}
    with FakeLLM() as llm:
        llm.script(Turn.server_error(), Turn.server_error(), Turn.text("recovered"))
        with runtime_for(tmp_path, llm, env=env, maxRetries=0) as runtime:
            assert circuit(runtime) == "closed"
            assert ask(runtime).status_code == 502
            assert ask(runtime).status_code == 502
            assert circuit(runtime) == "open"
            fast = ask(runtime)
            assert fast.status_code == 503
            assert fast.json()["error"]["code"] == "model_unavailable"
            assert 1 <= int(fast.headers["retry-after"]) <= 3
            assert len(llm.requests) == 2, "an open circuit sends nothing to the model"
            wait_until(lambda: circuit(runtime) == "half-open", timeout=5, what="half-open")
            assert ask(runtime).json()["choices"][0]["message"]["content"] == "recovered"
            assert circuit(runtime) == "closed"
        llm.assert_script_consumed()


@pytest.mark.parametrize("status", [400, 403, 500])
def test_upstream_text_echoing_the_key_reaches_no_caller(tmp_path: Path, status: int) -> None:
    """A gateway that echoes the Authorization header leaked the key on 12 of 12 paths."""

    with FakeLLM() as llm:
        llm.script(*[Turn.error(status, f"bad request; you sent Bearer {API_KEY}")] * 3)
        with runtime_for(tmp_path, llm, maxRetries=0) as runtime:
            plain = ask(runtime)
            streamed = ask(runtime, stream=True)
            task = a2a_send(runtime, "hi")
            answers = [plain.text, streamed.text, json.dumps(task)]
            for answer in answers:
                assert API_KEY not in answer
                assert "you sent" not in answer
            assert plain.status_code == 502
            assert task["status"]["state"] == "TASK_STATE_FAILED"
            log = runtime.log()
            assert API_KEY not in log
            assert "you sent Bearer [redacted]" in log
        assert [r.headers["authorization"] for r in llm.requests] == [f"Bearer {API_KEY}"] * 3
        llm.assert_script_consumed()


def test_no_upstream_error_is_retried_after_streaming_began(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.disconnect_after(2, content="one two three four five six"))
        with runtime_for(tmp_path, llm, maxRetries=3) as runtime:
            streamed = ask(runtime, stream=True)
            events = sse_events(streamed)
            assert "error" in events[-1]
        assert len(llm.requests) == 1, "what was streamed cannot be taken back"
        llm.assert_script_consumed()
