"""Priority under saturation and budgets that tighten while the model pushes back, on the
shipped runtime.

In: one runtime with ``maxConcurrency: 2``, API keys for a ``vip`` consumer (class ``gold``,
priority 90) and a ``crowd`` consumer (no class, priority 0), and a model slowed to
:data:`SLOW` seconds a call; later the model answers 429 for a while, then recovers.
Asserted: while the crowd floods the agent, each vip request finishes within
:data:`BOUND` (one run ahead of it plus its own; first come, first served would make it
wait for the whole flood), and the flood is still served; 429s from the model shrink the
crowd's effective budget and the pressure gauge, not gold's; once they stop, both recover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

SLOW = 0.5
FLOOD = 24
BOUND = 2 * SLOW + 1.0  # one run ahead, its own run, and a second of this machine's noise
KEYS = {"vip": "key-vip", "crowd": "key-crowd"}
BODY = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    # open-ended traffic: every call answers after SLOW seconds
    with FakeLLM(responder=Turn.text("ok").with_latency(first_byte=SLOW)) as server:
        yield server


@pytest.fixture
def runtime(llm: FakeLLM, tmp_path: Path) -> Iterator[RuntimeProcess]:
    keys = tmp_path / "secrets" / "agent-keys"
    keys.mkdir(parents=True)
    for name, value in KEYS.items():
        (keys / name).write_text(value)
    docs = agent_docs(
        llm_url=llm.base_url,
        model={"maxRetries": 0},  # the model's 429s reach the engine at once
        runtime={
            "auth": {"apiKeysSecretRef": "agent-keys"},
            "rateLimit": {
                "tokensPerMinute": 1_000_000,
                "maxConcurrency": 2,
                "queueTimeoutSeconds": 60,
                "priorityClasses": [
                    {
                        "name": "gold",
                        "consumers": ["vip"],
                        "priority": 90,
                        "tokensPerMinute": 2_000_000,
                    }
                ],
            },
        },
    )
    path = write_docs(tmp_path / "agent.yaml", docs)
    with RuntimeProcess(config=path, env={"AGENTSPEC_SECRETS_DIR": str(keys.parent)}) as process:
        yield process


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def test_a_low_priority_flood_does_not_hold_up_high_priority_requests(
    runtime: RuntimeProcess,
) -> None:
    async def scenario() -> tuple[list[int], list[float]]:
        async with httpx.AsyncClient(base_url=runtime.base_url, timeout=120) as client:
            flood = [
                asyncio.create_task(
                    client.post("/v1/chat/completions", json=BODY, headers=_auth("crowd"))
                )
                for _ in range(FLOOD)
            ]
            await asyncio.sleep(SLOW)  # the flood is queued behind the two running
            took = []
            for _ in range(3):
                started = time.monotonic()
                vip = await client.post("/v1/chat/completions", json=BODY, headers=_auth("vip"))
                took.append(time.monotonic() - started)
                assert vip.status_code == 200, vip.text
            statuses = [r.status_code for r in await asyncio.gather(*flood)]
            return statuses, took

    statuses, took = asyncio.run(scenario())
    assert max(took) < BOUND, took  # first come, first served: about FLOOD / 2 * SLOW = 6 s
    assert statuses == [200] * FLOOD  # the flood waited, and was served
    queued = runtime.metric(
        "agentspec_rate_limit_decisions_total",
        agent="assistant",
        kind="slot",
        outcome="queued",
        priority_class="default",
    )
    assert queued is not None
    assert queued >= FLOOD - 2


def test_the_models_429s_shrink_lower_budgets_until_they_stop(
    runtime: RuntimeProcess, llm: FakeLLM
) -> None:
    def budget(cls: str) -> float | None:
        return runtime.metric(
            "agentspec_rate_limit_effective_budget",
            agent="assistant",
            dimension="tokens",
            priority_class=cls,
        )

    def pressure() -> float | None:
        return runtime.metric("agentspec_rate_limit_pressure", agent="assistant")

    for who in ("crowd", "vip"):
        assert httpx.post(
            f"{runtime.base_url}/v1/chat/completions", json=BODY, headers=_auth(who)
        ).is_success
    assert budget("default") == 1_000_000
    llm.script(*[Turn.rate_limited(retry_after=1) for _ in range(3)])
    for _ in range(3):
        refused = httpx.post(
            f"{runtime.base_url}/v1/chat/completions", json=BODY, headers=_auth("crowd")
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "model_rate_limited"
        time.sleep(1.05)  # pushbacks a second apart count one each
    squeezed = pressure()
    assert squeezed is not None
    assert squeezed < 0.5
    for who in ("crowd", "vip"):
        assert httpx.post(
            f"{runtime.base_url}/v1/chat/completions", json=BODY, headers=_auth(who)
        ).is_success
    assert (budget("default") or 0) < 600_000
    assert budget("gold") == 2_000_000

    def recovered() -> bool:
        return pressure() == 1.0

    wait_until(recovered, timeout=15, what="the pressure to ease once the 429s stopped")
    assert httpx.post(
        f"{runtime.base_url}/v1/chat/completions", json=BODY, headers=_auth("crowd")
    ).is_success
    assert budget("default") == 1_000_000
