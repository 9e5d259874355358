"""Conversation memory through the engine: in-process and in a real Redis.

In: an Engine with its real adapters (OpenAI client against the fake LLM, the in-process store
or a real ``redis-server``), configs from the YAML a user applies; every model call scripted
as a chat or a summary request, in order. Asserted on what the model receives: earlier turns
of a context come back (not another context's, not another API key's), a resent history is
not doubled, truncation keeps the budget, summarize folds old turns once into a model-written
summary that later turns carry (its tokens counted), relevance recalls the matching turn;
Redis memory is shared by replicas and survives them, folds are compare-and-set between
replicas, keys expire; an unreachable Redis rejects the config (the last good one serves) and
a Redis lost mid-flight fails requests with a clear 503 error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import yaml

from agentspec_runtime.adapters.config_sources import parse_config
from agentspec_runtime.adapters.openai_model import OpenAIModel
from agentspec_runtime.adapters.redis_memory import connect_redis_memory
from agentspec_runtime.adapters.secrets import LocalSecrets
from agentspec_runtime.adapters.urls import redis_location
from agentspec_runtime.engine import memory as mem
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import ConfigError, MemoryUnavailableError
from agentspec_runtime.engine.loop import AgentRequest, AgentResult
from agentspec_runtime.engine.ports import Endpoint, McpConnection, ModelClient
from agentspec_runtime.engine.telemetry import Metrics
from agentspec_runtime.server import memory_builder
from agentspec_runtime.spec.resolved import AgentConfig, ResolvedMcpServer
from tests.support.agent_files import agent_docs
from tests.support.fake_llm import ChatRequest, FakeLLM, Turn, prompt_tokens
from tests.support.procs import free_ports
from tests.support.redis_server import RedisServer, RespConnection


def chat(request: ChatRequest) -> Turn:
    """A scripted step for one chat request: ``A: <question>``."""
    assert request.system_prompt != mem.SUMMARY_INSTRUCTIONS, "a summary request came"
    return Turn.text(f"A: {request.last_user_text}")


def summarize(request: ChatRequest) -> Turn:
    """A scripted step for one summary request: what the user said, the earlier summary
    first."""
    assert request.system_prompt == mem.SUMMARY_INSTRUCTIONS, "a chat request came"
    said = [
        line.removeprefix("Earlier summary: SUMMARY ").removeprefix("user: ")
        for line in request.last_user_text.splitlines()
        if line.startswith(("user: ", "Earlier summary: "))
    ]
    return Turn.text("SUMMARY " + " / ".join(said))


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    return fake_llm


def config(llm: FakeLLM, **memory: Any) -> AgentConfig:
    docs = agent_docs(llm_url=llm.base_url, template="You are HR.", memory=memory or None)
    return parse_config(yaml.safe_dump_all(docs))


async def model(config: AgentConfig, api_key: str | None, headers: dict[str, str]) -> ModelClient:
    assert config.model.base_url is not None
    return OpenAIModel(base_url=config.model.base_url, api_key=api_key, headers=headers)


async def no_mcp(server: ResolvedMcpServer, endpoint: Endpoint) -> McpConnection:
    raise AssertionError("no MCP servers in these configs")


EngineFactory = Callable[[AgentConfig], Awaitable[Engine]]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    engines: list[Engine] = []

    async def make(config: AgentConfig) -> Engine:
        engine = Engine(
            agent="assistant",
            metrics=Metrics(agent="assistant"),
            secrets=LocalSecrets(environ={}),
            build_model=model,
            build_mcp=no_mcp,
            build_memory=memory_builder("assistant"),
        )
        engines.append(engine)
        await engine.load(config)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


async def say(
    engine: Engine, text: str, *, context: str = "c1", consumer: str | None = None
) -> AgentResult:
    request = AgentRequest(
        messages=[{"role": "user", "content": text}], context_id=context, consumer=consumer
    )
    return await engine.run(request)


def seen(request: ChatRequest) -> list[tuple[str, str]]:
    """What the model was shown after the system prompt."""
    return [(m["role"], m["content"]) for m in request.messages[1:]]


async def test_a_context_remembers_its_turns_and_only_its_own(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    llm.script(chat, chat, chat, chat)
    engine = await make_engine(config(llm))
    await say(engine, "My name is Ada.")
    result = await say(engine, "What is my name?")
    assert seen(llm.last_request) == [
        ("user", "My name is Ada."),
        ("assistant", "A: My name is Ada."),
        ("user", "What is my name?"),
    ]
    assert result.recalled_turns == 1
    await say(engine, "What is my name?", context="c2")
    assert seen(llm.last_request) == [("user", "What is my name?")]
    # the same context id under another API key is another conversation
    await say(engine, "What is my name?", consumer="team-b")
    assert seen(llm.last_request) == [("user", "What is my name?")]
    status = engine.status()["memory"]
    assert status["location"] == "in-process"
    assert status["compression"] == {"strategy": "truncate", "maxTokens": 8000}


async def test_memory_none_remembers_nothing(llm: FakeLLM, make_engine: EngineFactory) -> None:
    llm.script(chat, chat)
    engine = await make_engine(config(llm, type="none"))
    await say(engine, "My name is Ada.")
    await say(engine, "What is my name?")
    assert seen(llm.last_request) == [("user", "What is my name?")]
    assert engine.status()["memory"] == {"type": "none"}


async def test_a_resent_history_is_not_doubled(llm: FakeLLM, make_engine: EngineFactory) -> None:
    llm.script(chat, chat, chat)
    engine = await make_engine(config(llm))
    await say(engine, "My name is Ada.")
    resent = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "A: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    await engine.run(AgentRequest(messages=resent, context_id="c1"))
    assert seen(llm.last_request) == [(m["role"], m["content"]) for m in resent]
    await say(engine, "And my age?")
    assert len(seen(llm.last_request)) == 5  # two turns and the question, each once


async def test_truncate_keeps_the_latest_turns_within_the_budget(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    llm.script(*[chat] * 5)
    engine = await make_engine(config(llm, compression={"maxTokens": 128}))
    questions = [f"question {i}: " + "word " * 12 for i in range(5)]  # 45 tokens a turn
    for question in questions:
        await say(engine, question)
    shown = llm.last_request.messages[1:-1]  # recalled turns, before the new question
    assert mem.estimate_tokens(shown) <= 128
    assert [m["content"] for m in shown if m["role"] == "user"] == questions[2:4]


async def test_summarize_folds_old_turns_once_and_later_turns_carry_the_summary(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    # a turn is ~55 estimated tokens: the 4th request finds 3 stored (165 > 128) and folds
    # turns 1-2 (down to <= 64); the summary then takes part of the budget, so turns 5 and 6
    # each fold one more turn
    llm.script(chat, chat, chat, summarize, chat, summarize, chat, summarize, chat)
    engine = await make_engine(config(llm, compression={"strategy": "summarize", "maxTokens": 128}))
    results = [await say(engine, f"fact {i}: " + "detail " * 12) for i in range(6)]
    first, second = llm.requests[3], llm.requests[5]
    assert [line[:12] for line in first.last_user_text.splitlines()] == [
        "user: fact 0",
        "assistant: A",
        "user: fact 1",
        "assistant: A",
    ]
    assert second.last_user_text.startswith("Earlier summary: SUMMARY fact 0")
    last = llm.requests[-1]
    assert last.system_prompt is not None
    assert last.system_prompt.startswith(f"You are HR.\n\n{mem.SUMMARY_PREFIX}\nSUMMARY fact 0")
    shown_questions = [m["content"] for m in last.messages[1:] if m["role"] == "user"]
    # turns 1-4 are in the summary; the summary (this fake one only grows) leaves no room in
    # the budget for turn 5, which truncation then leaves out: only the new question is shown
    summary = last.system_prompt.partition(mem.SUMMARY_PREFIX)[2]
    assert [f"fact {i}:" in summary for i in range(6)] == [True] * 4 + [False] * 2
    assert [q[:6] for q in shown_questions] == ["fact 5"]
    # the request that folded paid for its summary: both calls' tokens are in its usage
    assert results[3].usage.input_tokens == prompt_tokens(first.messages) + prompt_tokens(
        llm.requests[4].messages
    )


async def test_summarize_failure_truncates_this_request_and_loses_nothing(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    llm.script(
        chat,
        chat,
        chat,
        Turn.error(400, "summaries are broken today"),  # the 4th request's fold fails ...
        chat,  # ... and it is answered all the same
        summarize,  # the next request folds successfully
        chat,
    )
    engine = await make_engine(config(llm, compression={"strategy": "summarize", "maxTokens": 128}))
    for i in range(3):
        await say(engine, f"fact {i}: " + "detail " * 12)
    result = await say(engine, "fact 3: " + "detail " * 12)
    assert result.content.startswith("A: fact 3")
    assert engine.metrics.memory.labels("assistant", "summarize", "error")._value.get() == 1
    await say(engine, "fact 4: " + "detail " * 12)
    assert llm.last_request.system_prompt is not None
    summarized = llm.last_request.system_prompt.partition(mem.SUMMARY_PREFIX)[2]
    assert all(f"fact {i}:" in summarized for i in (0, 1, 2))  # nothing was lost meanwhile


async def test_relevance_recalls_the_matching_turn(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    llm.script(*[chat] * 5)
    engine = await make_engine(config(llm, search={"strategy": "relevance", "limit": 2}))
    for question in [
        "Where do I park my bike?",
        "How many leave days do I get?",
        "What is in the canteen today?",
        "Who approves travel expenses?",
    ]:
        await say(engine, question)
    await say(engine, "Is the bike parking covered?")
    assert [c for r, c in seen(llm.last_request) if r == "user"] == [
        "Where do I park my bike?",
        "Who approves travel expenses?",  # the latest turn is always recalled
        "Is the bike parking covered?",
    ]


# -- Redis ------------------------------------------------------------------------------


async def test_redis_memory_is_shared_by_replicas_and_outlives_them(
    llm: FakeLLM, make_engine: EngineFactory, redis_url: str
) -> None:
    llm.script(chat, chat, chat)
    cfg = config(llm, type="redis", url=redis_url, ttlSeconds=3600)
    replica_a, replica_b = await make_engine(cfg), await make_engine(cfg)
    await say(replica_a, "My name is Ada.")
    await say(replica_b, "What is my name?")
    assert seen(llm.last_request)[:2] == [
        ("user", "My name is Ada."),
        ("assistant", "A: My name is Ada."),
    ]
    await replica_a.aclose()
    await replica_b.aclose()

    fresh = await make_engine(cfg)
    result = await say(fresh, "And my job?")
    assert result.recalled_turns == 2
    assert fresh.status()["memory"]["location"] == redis_url
    key = mem.conversation_key(
        namespace="default", agent="assistant", consumer=None, context_id="c1"
    )
    with RespConnection.from_url(redis_url) as redis:
        assert redis.command("LLEN", f"agentspec:memory:{{{key}}}:turns") == 3
        assert 3500 < int(redis.command("TTL", f"agentspec:memory:{{{key}}}:meta")) <= 3600  # type: ignore[arg-type]


async def test_redis_folds_are_compare_and_set_between_replicas(redis_url: str) -> None:
    one = await connect_redis_memory(redis_url, client_name="test-a")
    two = await connect_redis_memory(redis_url, client_name="test-b")
    try:
        for i in range(4):
            await one.append("k", [{"role": "user", "content": f"q{i}"}], tokens=5, ttl=60)
        summary_a = mem.Summary("from a", through=2, tokens=3)
        summary_b = mem.Summary("from b", through=3, tokens=3)
        won = await asyncio.gather(
            one.fold("k", summary_a, after=0, ttl=60), two.fold("k", summary_b, after=0, ttl=60)
        )
        assert sorted(won) == [False, True]
        history = await two.load("k")
        winner = summary_a if won[0] else summary_b
        assert history.summary == winner
        assert [t.seq for t in history.turns] == [s for s in (1, 2, 3, 4) if s > winner.through]
        await two.append("k", [{"role": "user", "content": "q4"}], tokens=5, ttl=60)
        assert (await one.load("k")).turns[-1].seq == 5
        latest = await one.load("k", last=1)
        assert [t.seq for t in latest.turns] == [5]
        assert latest.summary == winner
    finally:
        await one.aclose()
        await two.aclose()


async def test_unreachable_redis_rejects_the_config_and_the_last_good_one_serves(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    llm.script(chat, chat)
    engine = await make_engine(config(llm))
    await say(engine, "My name is Ada.")
    good = engine.state.revision
    (port,) = free_ports(1)
    with pytest.raises(ConfigError) as rejected:
        await engine.load(config(llm, type="redis", url=f"redis://127.0.0.1:{port}/0"))
    assert f"memory: Redis at redis://127.0.0.1:{port}/0 cannot be reached" in str(rejected.value)
    assert engine.state.revision == good
    assert engine.status()["lastReloadError"] == str(rejected.value)
    await say(engine, "What is my name?")  # still the in-process memory
    assert ("user", "My name is Ada.") in seen(llm.last_request)


async def test_redis_lost_mid_flight_fails_requests_with_a_clear_error(
    llm: FakeLLM, make_engine: EngineFactory
) -> None:
    llm.script(chat)  # the second request fails before its model call
    with RedisServer() as server:
        engine = await make_engine(config(llm, type="redis", url=server.url_for_db(0)))
        await say(engine, "My name is Ada.")
    with pytest.raises(MemoryUnavailableError) as failed:
        await say(engine, "What is my name?")
    assert failed.value.status == 503
    assert f"conversation memory at {server.url_for_db(0)} failed" in str(failed.value)
    assert engine.metrics.memory.labels("assistant", "recall", "error")._value.get() == 1


def test_locations_never_show_credentials() -> None:
    assert redis_location("redis://u:s3cret@redis.infra:6380/2") == "redis://redis.infra:6380/2"
    assert redis_location("rediss://:s3cret@redis.infra") == "rediss://redis.infra:6379/0"
