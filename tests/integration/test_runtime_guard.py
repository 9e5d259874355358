"""The content guard on the shipped runtime: RE2 deny patterns, the moderation endpoint and a
guard model, on input and output, plain and streaming, and a guard that is down.

In: runtime processes whose AgentSpec sets ``spec.runtime.guard``; the agent's model, its
moderation endpoint (the fake's ``/v1/moderations``, which flags a fixed lexicon) and a guard
model (a second fake that answers ``unsafe S9`` for texts naming poison) are the test double.
Asserted: the refusal and ``content_filter`` for a blocked answer, and that no blocked text
ever reaches the caller — not in a streamed chunk either; a blocked input never reaches the
model; redaction; a catastrophic-backtracking pattern answering at once; a pattern RE2
rejects refusing the config; fail closed and fail open; the decisions in metrics, and A2A
tasks rejected with the category.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.a2a_client import user_message
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import ChatRequest, FakeLLM, Turn
from tests.support.fixtures_doubles import exact_traffic
from tests.support.procs import free_ports, wait_until
from tests.support.runtime_proc import RuntimeProcess

CARD = r"\b\d{4}-\d{4}-\d{4}-\d{4}\b"
REFUSAL = "Sorry, I cannot share that."
CLEAN = "All good here. " * 40  # 600 characters: more than the stream holds back


def ask(runtime: RuntimeProcess, text: str) -> httpx.Response:
    body = {"model": "assistant", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{runtime.base_url}/v1/chat/completions", json=body, timeout=30)


def ask_streaming(runtime: RuntimeProcess, text: str) -> tuple[str, list[dict[str, Any]]]:
    """The streamed text and every event."""
    body = {"model": "assistant", "stream": True, "messages": [{"role": "user", "content": text}]}
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{runtime.base_url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line.removeprefix("data: ")))
    text = "".join(
        c["delta"].get("content") or "" for e in events if "choices" in e for c in e["choices"]
    )
    return text, events


def decisions(runtime: RuntimeProcess, stage: str, action: str, category: str) -> float | None:
    return runtime.metric(
        "agentspec_guard_decisions_total",
        agent="assistant",
        stage=stage,
        action=action,
        category=category,
    )


def guard_model(request: ChatRequest) -> Turn:
    """Llama Guard's way of answering: safe, or unsafe and a category."""
    text = " ".join(str(m.get("content")) for m in request.messages)
    return Turn.text("unsafe\nS9" if "poison" in text else "safe")


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def judge() -> Iterator[FakeLLM]:
    with FakeLLM(responder=guard_model) as server:  # rule-based: it judges any text
        yield server


@pytest.fixture(autouse=True)
def _exact_traffic(llm: FakeLLM, request: pytest.FixtureRequest) -> Iterator[None]:
    yield from exact_traffic(request, llm)


def guarded(llm: FakeLLM, tmp: Path, **guard: Any) -> Path:
    return write_docs(
        tmp / "agent.yaml", agent_docs(llm_url=llm.base_url, runtime={"guard": guard})
    )


@pytest.fixture(scope="module")
def blocking(
    llm: FakeLLM, judge: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeProcess]:
    path = guarded(
        llm,
        tmp_path_factory.mktemp("block"),
        denyPatterns=[CARD, "(a+)+$"],
        moderationUrl=f"{llm.base_url}/moderations",
        model={"model": "llama-guard", "baseUrl": judge.base_url},
        refusal=REFUSAL,
    )
    with RuntimeProcess(config=path) as runtime:
        yield runtime


def test_a_pattern_in_the_answer_is_replaced_by_the_refusal(
    blocking: RuntimeProcess, llm: FakeLLM
) -> None:
    llm.script(Turn.text("Your card is 4111-1111-1111-1111."))
    answer = ask(blocking, "what is my card number?").json()
    assert answer["choices"][0]["message"]["content"] == REFUSAL
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    assert "4111" not in json.dumps(answer)
    assert decisions(blocking, "output", "block", "denyPatterns[0]") == 1


def test_a_block_mid_stream_ends_it_with_an_error_and_never_leaks(
    blocking: RuntimeProcess, llm: FakeLLM
) -> None:
    long = CLEAN * 2  # with classifiers, text goes out in checked steps of 512 characters
    llm.script(Turn.text(long + "Your card is 4111-1111-1111-1111. " + CLEAN))
    text, events = ask_streaming(blocking, "tell me a lot")
    assert text, "the clean beginning was released"
    assert long.startswith(text), "only clean text went out"
    assert "4111" not in json.dumps(events)
    assert events[-1]["error"]["code"] == "content_blocked"
    assert events[-1]["error"]["message"] == REFUSAL


def test_a_block_before_anything_streamed_is_the_refusal(
    blocking: RuntimeProcess, llm: FakeLLM
) -> None:
    llm.script(Turn.text("4111-1111-1111-1111"))
    text, events = ask_streaming(blocking, "card?")
    assert text == REFUSAL
    assert "4111" not in json.dumps(events)
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_a_blocked_input_never_reaches_the_model(blocking: RuntimeProcess, llm: FakeLLM) -> None:
    before = len(llm.requests)
    answer = ask(blocking, "store 4111-1111-1111-1111 for me").json()
    assert answer["choices"][0]["message"]["content"] == REFUSAL
    assert len(llm.requests) == before  # no model call (the fake is strict: none scripted)
    assert not any("4111" in m for m in llm.moderated), "nor the moderation endpoint"


def test_every_message_a_caller_sends_is_input(blocking: RuntimeProcess, llm: FakeLLM) -> None:
    """An earlier 'assistant' turn the caller writes reaches the model too."""
    before = len(llm.requests)
    body = {
        "model": "assistant",
        "messages": [
            {"role": "user", "content": "what did you say?"},
            {"role": "assistant", "content": "Your card is 4111-1111-1111-1111."},
            {"role": "user", "content": "repeat it"},
        ],
    }
    answer = httpx.post(f"{blocking.base_url}/v1/chat/completions", json=body, timeout=30).json()
    assert answer["choices"][0]["message"]["content"] == REFUSAL
    assert len(llm.requests) == before


def test_moderation_and_the_guard_model_flag_input_and_output(
    blocking: RuntimeProcess, llm: FakeLLM, judge: FakeLLM
) -> None:
    flagged = ask(blocking, "how do I build a grenade").json()
    assert flagged["choices"][0]["message"]["content"] == REFUSAL
    assert "how do I build a grenade" in llm.moderated
    llm.script(Turn.text("Add poison to the soup."))
    answer = ask(blocking, "a recipe").json()
    assert answer["choices"][0]["message"]["content"] == REFUSAL
    judged = [r.messages[-1] for r in judge.requests]
    assert {"role": "assistant", "content": "Add poison to the soup."} in judged
    assert decisions(blocking, "input", "block", "moderation:violence") == 1
    assert decisions(blocking, "output", "block", "model:S9") == 1
    llm.script(Turn.text("Here is a soup recipe."))
    fine = ask(blocking, "a recipe").json()
    assert fine["choices"][0]["message"]["content"] == "Here is a soup recipe."


def test_a_catastrophic_backtracking_pattern_answers_at_once(
    blocking: RuntimeProcess, llm: FakeLLM
) -> None:
    """``(a+)+$`` against 'aaa…ab' takes Python's re exponential time; RE2 is linear."""
    llm.script(Turn.text("fine"))
    started = time.monotonic()
    answer = ask(blocking, "a" * 20_000 + "b").json()
    assert time.monotonic() - started < 5
    assert answer["choices"][0]["message"]["content"] == "fine"


def test_a_blocked_a2a_task_is_rejected_with_the_category(
    blocking: RuntimeProcess, llm: FakeLLM
) -> None:
    llm.script(Turn.text("It is 4111-1111-1111-1111."))
    response = httpx.post(
        f"{blocking.base_url}/a2a",
        headers={"a2a-version": "1.0"},
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": user_message("card?", message_id="m-1")},
        },
        timeout=30,
    )
    task = response.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_REJECTED"
    assert task["status"]["message"]["parts"][0]["text"] == REFUSAL
    assert task["metadata"]["agentspec.io/guard"] == {
        "stage": "output",
        "category": "denyPatterns[0]",
    }
    assert "4111" not in response.text


def test_redact_masks_the_matches_plain_and_streaming(llm: FakeLLM, tmp_path: Path) -> None:
    grows = r"secret(\s+\w+){0,3}"  # a match that grows word by word as the stream arrives
    path = guarded(llm, tmp_path, denyPatterns=[CARD, grows], action="redact", stages=["output"])
    with RuntimeProcess(config=path) as runtime:
        llm.script(Turn.text("Card 4111-1111-1111-1111 on file."))
        answer = ask(runtime, "card 5555-5555-5555-5555?").json()  # input is not checked
        assert answer["choices"][0]["message"]["content"] == "Card [redacted] on file."
        assert "5555-5555-5555-5555" in json.dumps(llm.last_request.messages)
        llm.script(Turn.text(CLEAN + "Card 4111-1111-1111-1111 on file."))
        text, _ = ask_streaming(runtime, "again")
        assert text == CLEAN + "Card [redacted] on file."
        told = "The secret alpha beta gamma, said twice: secret delta."
        llm.script(Turn.text(CLEAN * 2 + told), Turn.text(told))
        text, _ = ask_streaming(runtime, "a long one")  # the match is masked whole
        assert text == CLEAN * 2 + "The [redacted], said twice: [redacted]."
        answer = ask(runtime, "a short one").json()["choices"][0]["message"]["content"]
        assert answer == "The [redacted], said twice: [redacted]."


def test_a_pattern_re2_cannot_run_refuses_the_config(llm: FakeLLM, tmp_path: Path) -> None:
    path = guarded(llm, tmp_path, denyPatterns=["ok", "(?<=secret)word"])
    refused = RuntimeProcess(config=path).start(wait_ready=False)
    assert refused.process is not None
    assert refused.process.popen.wait(20) == 2
    assert "spec.runtime.guard.denyPatterns[1]: not a valid RE2 pattern" in refused.log()
    refused.stop()


def test_a_guard_that_is_down_fails_closed_or_open_per_the_field(
    llm: FakeLLM, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    down = f"http://127.0.0.1:{port}/v1/moderations"
    path = guarded(llm, tmp_path, moderationUrl=down)
    with RuntimeProcess(config=path) as runtime:
        closed = ask(runtime, "hello")
        assert closed.status_code == 503
        assert closed.json()["error"]["code"] == "guard_unavailable"
        assert closed.headers["retry-after"] == "5"
        status = runtime.status()["guard"]
        assert status["failureMode"] == "closed"
        assert status["moderation"]["lastError"] == "ConnectError"
        revision = runtime.status()["configRevision"]
        guarded(llm, tmp_path, moderationUrl=down, failureMode="open")
        wait_until(
            lambda: runtime.status()["configRevision"] != revision,
            timeout=15,
            what="failureMode open to load",
        )
        llm.script(Turn.text("hi there"))
        opened = ask(runtime, "hello")
        assert opened.status_code == 200
        assert opened.json()["choices"][0]["message"]["content"] == "hi there"
        assert decisions(runtime, "input", "error_open", "") == 1
        assert decisions(runtime, "input", "error_closed", "") == 1
