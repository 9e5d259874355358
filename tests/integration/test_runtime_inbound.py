"""Inbound checks: API keys from a Secret guard the API; the hop header stops call cycles.

In: a runtime whose AgentSpec names an API-key Secret (served locally from the
environment), requests with no key, a wrong key and each accepted form. Asserted: 401 with
no detail, open health endpoints, and 508 past the hop limit; accepted requests forward one
more hop than they arrived with; refused requests never reach the model (every model call is
scripted).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.fixtures_doubles import exact_traffic
from tests.support.runtime_proc import RuntimeProcess

BODY = {"model": "assistant", "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _exact_traffic(llm: FakeLLM, request: pytest.FixtureRequest) -> Iterator[None]:
    yield from exact_traffic(request, llm)


@pytest.fixture(scope="module")
def runtime(llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    path = tmp_path_factory.mktemp("auth") / "agent.yaml"
    write_docs(
        path, agent_docs(llm_url=llm.base_url, runtime={"auth": {"apiKeysSecretRef": "agent-keys"}})
    )
    env = {
        "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_A": "key-a",
        "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_B": "key-b",
        "AGENTSPEC_MAX_HOPS": "3",
    }
    with RuntimeProcess(config=path, env=env) as process:
        yield process


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-Api-Key": "key-a-but-longer"},
        {"Authorization": "Basic a2V5LWE="},
    ],
    ids=["none", "wrong-bearer", "wrong-header", "basic"],
)
def test_requests_without_a_valid_key_get_a_bare_401(
    runtime: RuntimeProcess,
    headers: dict[str, str],
) -> None:
    for path, method in (("/v1/chat/completions", "POST"), ("/v1/models", "GET")):
        response = httpx.request(method, f"{runtime.base_url}{path}", json=BODY, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "unauthorized"
        assert "key" not in response.text.lower()


def test_valid_keys_in_either_header_are_accepted(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    llm.script(Turn.text("hello"), Turn.text("hello"))
    for headers in ({"Authorization": "Bearer key-a"}, {"X-Api-Key": "key-b"}):
        response = httpx.post(f"{runtime.base_url}/v1/chat/completions", json=BODY, headers=headers)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "hello"


def test_probes_and_card_stay_open_but_status_needs_a_key(runtime: RuntimeProcess) -> None:
    assert runtime.get("/healthz")[0] == 200
    assert runtime.get("/readyz")[0] == 200
    assert runtime.get("/.well-known/agent-card.json")[0] == 200
    assert runtime.get("/status")[0] == 401
    status = httpx.get(f"{runtime.base_url}/status", headers={"X-Api-Key": "key-a"})
    assert status.status_code == 200
    assert "key-a" not in status.text


@pytest.mark.parametrize("value", [b"x", b"-1", b"9" * 5000, b"\xb2"])
def test_a_malformed_hop_header_is_a_400(runtime: RuntimeProcess, value: bytes) -> None:
    response = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json=BODY,
        headers={b"Authorization": b"Bearer key-a", b"X-Agentspec-Hops": value},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_hops"


def test_hop_limit(runtime: RuntimeProcess, llm: FakeLLM) -> None:
    auth = {"Authorization": "Bearer key-a"}
    llm.script(Turn.text("hello"))  # the second request is refused before the model
    ok = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json=BODY,
        headers={**auth, "X-Agentspec-Hops": "3"},
    )
    assert ok.status_code == 200
    assert llm.requests[0].headers["x-agentspec-hops"] == "4", "one more hop goes out"
    cycle = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json=BODY,
        headers={**auth, "X-Agentspec-Hops": "4"},
    )
    assert cycle.status_code == 508
    assert "hop limit of 3 reached" in cycle.json()["error"]["message"]


def test_auth_config_without_keys_is_rejected_at_start(tmp_path: Path) -> None:
    path = write_docs(
        tmp_path / "agent.yaml",
        agent_docs(
            llm_url="http://127.0.0.1:9/v1", runtime={"auth": {"apiKeysSecretRef": "missing"}}
        ),
    )
    runtime = RuntimeProcess(config=path).start(wait_ready=False)
    assert runtime.process is not None
    assert runtime.process.popen.wait(20) == 2
    assert "Secret 'missing' is not available" in runtime.log()
    runtime.stop()
