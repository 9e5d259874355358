"""Token and request budgets on the shipped API, shared by two replicas through Redis.

In: two runtime processes of one agent (the same YAML, memory in a real ``redis-server``),
API keys naming four consumers — ``team-a`` in a generous class, ``team-b`` on the defaults,
``team-c`` and ``team-d`` in a class of one request a minute — and a model that always
spends 30 tokens (``maxTokens`` 20, so each call reserves a little more than it spends).
Asserted: across both replicas the tokens admitted for ``team-b`` stay within the budget
(by at most one call's refund error) and come close to it; refusals are 429s with
Retry-After and OpenAI's headers on both APIs (A2A as a JSON-RPC error); other consumers'
budgets are untouched; a raised budget applies to the next request, with no restart.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentspec_runtime.api.admission import RATE_LIMITED
from tests.support.a2a_client import user_message
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

BUDGET = 600
SPENT = 30  # per model call: 20 prompt + 10 completion tokens
KEYS = {"team-a": "key-a", "team-b": "key-b", "team-c": "key-c", "team-d": "key-d"}
BODY = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}


def docs(llm: FakeLLM, redis_url: str, budget: int) -> list[dict[str, Any]]:
    return agent_docs(
        llm_url=llm.base_url,
        model={"maxTokens": 20},
        memory={"type": "redis", "url": redis_url},
        runtime={
            "auth": {"apiKeysSecretRef": "agent-keys"},
            "rateLimit": {
                "tokensPerMinute": budget,
                "priorityClasses": [
                    {"name": "gold", "consumers": ["team-a"], "tokensPerMinute": 100_000},
                    {"name": "tiny", "consumers": ["team-c", "team-d"], "requestsPerMinute": 1},
                ],
            },
        },
    )


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    # open-ended traffic: every call answers "ok" and spends exactly SPENT tokens
    with FakeLLM(responder=Turn.text("ok").with_usage(prompt=20, completion=10)) as server:
        yield server


@pytest.fixture
def replicas(
    llm: FakeLLM, redis_url: str, tmp_path: Path
) -> Iterator[tuple[RuntimeProcess, RuntimeProcess, Path]]:
    path = write_docs(tmp_path / "agent.yaml", docs(llm, redis_url, BUDGET))
    keys = tmp_path / "secrets" / "agent-keys"  # the layout of a mounted Secret
    keys.mkdir(parents=True)
    for name, value in KEYS.items():
        (keys / name).write_text(value)
    env = {"AGENTSPEC_SECRETS_DIR": str(keys.parent)}
    with (
        RuntimeProcess(config=path, env=env) as one,
        RuntimeProcess(config=path, env=env) as two,
    ):
        yield one, two, path


def chat(runtime: RuntimeProcess, who: str) -> httpx.Response:
    return httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {KEYS[who]}"},
        timeout=30,
    )


def assert_refused_with_headers(response: httpx.Response, *, limit: str, dimension: str) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers[f"x-ratelimit-limit-{dimension}"] == limit
    assert int(response.headers[f"x-ratelimit-remaining-{dimension}"]) >= 0
    assert re.fullmatch(r"\d+ms|[\d.]+s|1m0s", response.headers[f"x-ratelimit-reset-{dimension}"])


def test_two_replicas_share_one_token_budget_per_consumer(
    replicas: tuple[RuntimeProcess, RuntimeProcess, Path], llm: FakeLLM, redis_url: str
) -> None:
    one, two, path = replicas

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{(one, two)[i % 2].base_url}/v1/chat/completions",
                        json=BODY,
                        headers={"Authorization": f"Bearer {KEYS['team-b']}"},
                    )
                    for i in range(40)
                )
            )

    responses = asyncio.run(burst())
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert ok
    assert refused
    for response in refused:
        assert_refused_with_headers(response, limit=str(BUDGET), dimension="tokens")
    assert {r.request.url.port for r in ok} == {one.port, two.port}  # both replicas served
    assert ok[0].headers["x-ratelimit-limit-tokens"] == str(BUDGET)  # on answers too
    # then one at a time until the budget is spent
    while (response := chat((one, two)[len(ok) % 2], "team-b")).status_code == 200:
        ok.append(response)
        assert len(ok) <= BUDGET // SPENT + 1
    assert_refused_with_headers(response, limit=str(BUDGET), dimension="tokens")
    admitted = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert {r.json()["usage"]["total_tokens"] for r in ok} == {SPENT}
    reserve = 40  # about what one call reserves: prompt estimate + maxTokens 20
    assert BUDGET - reserve <= admitted <= BUDGET + SPENT, admitted

    # another consumer has its own budget, on either replica
    for runtime in (one, two):
        gold = chat(runtime, "team-a")
        assert gold.status_code == 200
        assert gold.headers["x-ratelimit-limit-tokens"] == "100000"  # its class's budget
    status = httpx.get(
        f"{one.base_url}/status", headers={"Authorization": f"Bearer {KEYS['team-a']}"}
    ).json()
    assert status["rateLimit"]["store"] == redis_url
    rejected = [
        r.metric(
            "agentspec_rate_limit_decisions_total",
            agent="assistant",
            kind="tokens",
            outcome="rejected",
            priority_class="default",
        )
        or 0
        for r in (one, two)
    ]
    assert sum(rejected) >= 1, rejected

    # a bigger budget applies to the next request on both replicas, with no restart
    before = {one.pid, two.pid}
    revision = status["configRevision"]
    write_docs(path, docs(llm, redis_url, BUDGET * 4))
    for runtime in (one, two):

        def reloaded(r: RuntimeProcess = runtime) -> bool:
            answer = httpx.get(
                f"{r.base_url}/status", headers={"Authorization": f"Bearer {KEYS['team-a']}"}
            )
            return bool(answer.json()["configRevision"] != revision)

        wait_until(reloaded, timeout=15, what="the raised budget to load")
        assert chat(runtime, "team-b").status_code == 200
    assert {one.pid, two.pid} == before


def test_a_request_budget_refuses_at_the_door_on_both_apis(
    replicas: tuple[RuntimeProcess, RuntimeProcess, Path],
) -> None:
    one, two, _ = replicas
    assert chat(one, "team-c").status_code == 200
    refused = chat(two, "team-c")  # the other replica knows the request was spent
    assert_refused_with_headers(refused, limit="1", dimension="requests")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-ratelimit-limit-tokens" in refused.headers  # the default token budget too

    def a2a(runtime: RuntimeProcess, n: int) -> httpx.Response:
        return httpx.post(
            f"{runtime.base_url}/a2a",
            headers={"a2a-version": "1.0", "authorization": f"Bearer {KEYS['team-d']}"},
            json={
                "jsonrpc": "2.0",
                "id": n,
                "method": "SendMessage",
                "params": {"message": user_message("hi", message_id=f"m-{n}")},
            },
            timeout=30,
        )

    first = a2a(one, 1)
    assert first.status_code == 200, first.text
    assert "result" in first.json(), first.text
    # reading the task costs no request
    task_id = first.json()["result"]["task"]["id"]
    read = httpx.post(
        f"{one.base_url}/a2a",
        headers={"a2a-version": "1.0", "authorization": f"Bearer {KEYS['team-d']}"},
        json={"jsonrpc": "2.0", "id": 9, "method": "GetTask", "params": {"id": task_id}},
    )
    assert read.status_code == 200
    assert read.json()["result"]["id"] == task_id
    second = a2a(two, 2)
    assert_refused_with_headers(second, limit="1", dimension="requests")
    error = second.json()
    assert error["id"] == 2
    assert error["error"]["code"] == RATE_LIMITED
    assert error["error"]["data"]["reason"] == "rate_limit_exceeded"
