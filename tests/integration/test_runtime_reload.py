"""Hot reload of a running agent from its file: under load, when invalid, and for MCP lists.

In: a runtime process watching its config file; the fake LLM answering with the system
prompt it received (so each answer shows which snapshot served it), holding its answers back
while the config changes under them. Asserted: 200 streams kept in flight across 20 reloads
(each reload retires one more snapshot that still serves its streams), then all answered
with no failure, each by the version that was current when it started; the last good config
serving through an invalid update; MCP servers added and removed without a restart; the
canary split sticky per conversation.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import ChatRequest, FakeLLM, Turn, prompt_tokens
from tests.support.mcp_servers import McpTestServer
from tests.support.procs import wait_until, wait_until_async
from tests.support.runtime_proc import RuntimeProcess
from tests.support.streaming import stream_chat


def system_prompt_echo(request: ChatRequest) -> Turn:
    return Turn.text(request.system_prompt or "")


def versioned(llm: FakeLLM, n: int) -> list[dict[str, object]]:
    return agent_docs(
        llm_url=llm.base_url,
        template=f"prompt version {n} speaking",
        version=f"v{n}",
        model={"timeoutSeconds": 60},  # the held answers wait for all 20 reloads
    )


async def stream_one(client: httpx.AsyncClient, i: int) -> tuple[str, str]:
    return await stream_chat(
        client,
        {
            "model": "assistant",
            "context_id": f"c{i}",
            "messages": [{"role": "user", "content": f"question {i}"}],
        },
    )


RELOADS = 20
BATCH = 10


def test_hot_reload_under_load_fails_no_request(tmp_path: Path) -> None:
    # A responder: the streams of a batch reach the model in no fixed order, and the answer
    # must come from the snapshot that served each; their number is asserted below.
    with FakeLLM(responder=system_prompt_echo) as llm:
        path = write_docs(tmp_path / "agent.yaml", versioned(llm, 0))
        with RuntimeProcess(config=path) as runtime:

            async def scenario() -> list[list[tuple[str, str] | BaseException]]:
                limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
                async with httpx.AsyncClient(
                    base_url=runtime.base_url, limits=limits, timeout=60
                ) as client:

                    async def status() -> dict[str, Any]:
                        answer: dict[str, Any] = (await client.get("/status")).json()
                        return answer

                    async def current(n: int) -> bool:
                        return bool((await status())["promptVersions"] == {f"v{n}": 100})

                    batches: list[asyncio.Future[list[tuple[str, str] | BaseException]]] = []
                    llm.hold()
                    for n in range(RELOADS + 1):
                        # BATCH streams start on version n and stay in flight (held) ...
                        batches.append(
                            asyncio.gather(
                                *(stream_one(client, n * BATCH + i) for i in range(BATCH)),
                                return_exceptions=True,
                            )
                        )
                        await asyncio.to_thread(llm.wait_for_requests, (n + 1) * BATCH)
                        if n == RELOADS:
                            break
                        # ... while the next version replaces it
                        write_docs(path, versioned(llm, n + 1))
                        await wait_until_async(
                            functools.partial(current, n + 1), timeout=10, what=f"v{n + 1}"
                        )
                        assert (await status())["retiringSnapshots"] == n + 1
                    llm.release()
                    return [await batch for batch in batches]

            batches = asyncio.run(scenario())
            failures = [r for batch in batches for r in batch if isinstance(r, BaseException)]
            assert failures == [], failures[:3]
            for n, batch in enumerate(batches):
                assert batch == [(f"prompt version {n} speaking", f"v{n}")] * BATCH, n
            assert len(llm.requests) == (RELOADS + 1) * BATCH
            status = runtime.status()
            assert status["reloads"] == {"applied": RELOADS + 1, "rejected": 0}
            assert status["retiringSnapshots"] == 0
            assert status["inflight"] == 0


def test_invalid_update_keeps_the_last_good_config(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(system_prompt_echo)
        path = write_docs(tmp_path / "agent.yaml", versioned(llm, 1))
        with RuntimeProcess(config=path) as runtime:
            good = runtime.status()["configRevision"]
            broken = versioned(llm, 2)
            broken[-1]["spec"]["maxIterations"] = 0  # type: ignore[index]
            write_docs(path, broken)
            wait_until(
                lambda: runtime.status()["reloads"]["rejected"] == 1,
                timeout=5,
                what="the invalid update to be rejected",
            )
            status = runtime.status()
            assert status["configRevision"] == good
            assert "spec.maxIterations" in status["lastReloadError"]
            response = httpx.post(
                f"{runtime.base_url}/v1/chat/completions",
                json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]},
            )
            assert response.json()["choices"][0]["message"]["content"] == (
                "prompt version 1 speaking"
            )
            metrics = httpx.get(runtime.metrics_url).text
            assert (
                'agentspec_config_reloads_total{agent="assistant",outcome="rejected"} 1.0'
                in metrics
            )
            assert "config rejected, keeping revision" in runtime.log()
            # a file that is not even YAML, then a fix
            path.write_text("{{{ not yaml")
            wait_until(
                lambda: runtime.status()["reloads"]["rejected"] == 2,
                timeout=5,
                what="the unparsable update to be rejected",
            )
            write_docs(path, versioned(llm, 3))
            wait_until(
                lambda: runtime.status()["promptVersions"] == {"v3": 100},
                timeout=5,
                what="the fixed config to load",
            )
            assert runtime.status()["lastReloadError"] is None


def test_mcp_servers_added_and_removed_without_restart(
    tmp_path: Path,
    mcp_server_http: McpTestServer,
    mcp_server_sse: McpTestServer,
) -> None:
    with FakeLLM() as llm:  # no model call: the tools are read from /status
        http_only = agent_docs(
            llm_url=llm.base_url,
            mcp=[{"name": "one", "url": mcp_server_http.url}],
            mcp_refs=[{"name": "one", "tools": ["add"]}],
        )
        path = write_docs(tmp_path / "agent.yaml", http_only)
        with RuntimeProcess(config=path) as runtime:
            pid = runtime.pid
            assert runtime.status()["tools"] == ["add"]
            both = agent_docs(
                llm_url=llm.base_url,
                mcp=[
                    {"name": "one", "url": mcp_server_http.url},
                    {"name": "two", "url": mcp_server_sse.url, "transport": "sse"},
                ],
                mcp_refs=[{"name": "one", "tools": ["add"]}, {"name": "two", "tools": ["echo"]}],
            )
            write_docs(path, both)
            wait_until(
                lambda: runtime.status()["tools"] == ["add", "echo"],
                timeout=10,
                what="the new MCP server's tools",
            )
            sse_only = agent_docs(
                llm_url=llm.base_url,
                mcp=[{"name": "two", "url": mcp_server_sse.url, "transport": "sse"}],
                mcp_refs=[{"name": "two", "tools": ["echo"]}],
            )
            write_docs(path, sse_only)
            wait_until(
                lambda: [s["name"] for s in runtime.status()["mcpServers"]] == ["two"],
                timeout=10,
                what="the removed MCP server to go",
            )
            assert runtime.status()["tools"] == ["echo"]
            assert runtime.pid == pid, "no restart"


@pytest.mark.parametrize("weight", [30])
def test_canary_split_is_sticky_per_conversation(tmp_path: Path, weight: int) -> None:
    with FakeLLM() as llm:
        llm.script(*[Turn.text("ok")] * 230)  # 200 conversations, 30 of them again
        docs = agent_docs(
            llm_url=llm.base_url,
            template="stable prompt",
            extra_versions={"v2": "canary prompt"},
            canary=("v2", weight),
        )
        path = write_docs(tmp_path / "agent.yaml", docs)
        with (
            RuntimeProcess(config=path) as runtime,
            httpx.Client(base_url=runtime.base_url, timeout=10) as client,
        ):

            def ask(context: str) -> str:
                body = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "assistant",
                        "context_id": context,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                ).json()
                version: str = body["agentspec"]["promptVersion"]
                return version

            first = {f"c{i}": ask(f"c{i}") for i in range(200)}
            assert 0.15 < list(first.values()).count("v2") / 200 < 0.45
            assert all(ask(c) == v for c, v in list(first.items())[:30]), "not sticky"
            systems = {r.system_prompt for r in llm.requests}
            assert systems == {"stable prompt", "canary prompt"}
            # each version's input tokens are exactly what its requests sent (a fresh process)
            metrics = {
                line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in httpx.get(runtime.metrics_url).text.splitlines()
                if line.startswith("agentspec_tokens_total{")
            }
            for version, prompt in (("v1", "stable prompt"), ("v2", "canary prompt")):
                key = (
                    f'agentspec_tokens_total{{agent="assistant",direction="input",'
                    f'model="fake-model",prompt_version="{version}"}}'
                )
                assert metrics[key] == sum(
                    prompt_tokens(r.messages) for r in llm.requests if r.system_prompt == prompt
                )


def test_missing_prompt_variable_is_a_400_naming_it(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.text("hi"))  # only for the request that names the variable
        docs = agent_docs(llm_url=llm.base_url, template="Serve {{ team }} well.")
        path = write_docs(tmp_path / "agent.yaml", docs)
        with RuntimeProcess(config=path) as runtime:
            url = f"{runtime.base_url}/v1/chat/completions"
            missing = httpx.post(
                url, json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]}
            )
            assert missing.status_code == 400
            assert "prompt variable 'team' is required" in missing.json()["error"]["message"]
            assert llm.requests == [], "the model is never called"
            given = httpx.post(
                url,
                json={
                    "model": "assistant",
                    "variables": {"team": "ops"},
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            assert given.status_code == 200
            assert llm.requests[0].system_prompt == "Serve ops well."
