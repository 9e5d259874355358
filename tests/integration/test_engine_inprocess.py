"""The engine in-process with its real adapters: spans, and MCP connection lifecycles.

In: an Engine wired to the OpenAI adapter (against the fake LLM, every call scripted) and MCP
connections to real test servers; an in-memory span exporter. Asserted: the span tree of a
tool-using request (GenAI names, parents, usage attributes) and the trace context the model
receives; that a reload dropping an MCP server closes its session once drained while shared
ones stay; that tools announced by list_changed appear; that a restarted server is
reconnected; that a slow tool times out as an error the model reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentspec_runtime.adapters.config_sources import parse_config
from agentspec_runtime.adapters.mcp_tools import McpServerConnection, connect_mcp
from agentspec_runtime.adapters.openai_model import OpenAIModel
from agentspec_runtime.adapters.secrets import LocalSecrets
from agentspec_runtime.engine.agent import Engine
from agentspec_runtime.engine.errors import ToolError
from agentspec_runtime.engine.loop import AgentRequest
from agentspec_runtime.engine.ports import Endpoint, ModelClient
from agentspec_runtime.engine.telemetry import Metrics
from agentspec_runtime.server import memory_builder
from agentspec_runtime.spec.resolved import AgentConfig, ResolvedMcpServer
from tests.support.agent_files import agent_docs
from tests.support.fake_llm import FakeLLM, ToolCall, Turn, completion_tokens
from tests.support.fixtures_doubles import McpServerFactory
from tests.support.mcp_servers import McpTestServer
from tests.support.procs import wait_until_async

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracing() -> None:
    # The global provider can be set once per process; the engine's tracer follows it.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


def config(llm: FakeLLM, servers: dict[str, McpTestServer]) -> AgentConfig:
    docs = agent_docs(
        llm_url=llm.base_url,
        mcp=[{"name": n, "url": s.url, "transport": s.transport} for n, s in servers.items()],
    )
    return parse_config(yaml.safe_dump_all(docs))


class Built:
    def __init__(self) -> None:
        self.connections: dict[str, McpServerConnection] = {}

    async def mcp(self, server: ResolvedMcpServer, endpoint: Endpoint) -> McpServerConnection:
        connection = await connect_mcp(server, endpoint)
        self.connections[server.name] = connection
        return connection


async def model(config: AgentConfig, api_key: str | None, headers: dict[str, str]) -> ModelClient:
    assert config.model.base_url is not None
    return OpenAIModel(base_url=config.model.base_url, api_key=api_key, headers=headers)


@pytest.fixture
async def engine_and_built() -> AsyncIterator[tuple[Engine, Built]]:
    built = Built()
    engine = Engine(
        agent="assistant",
        metrics=Metrics(agent="assistant"),
        secrets=LocalSecrets(environ={}),
        build_model=model,
        build_mcp=built.mcp,
        build_memory=memory_builder("assistant"),
    )
    yield engine, built
    await engine.aclose()


def ask(text: str) -> AgentRequest:
    return AgentRequest(messages=[{"role": "user", "content": text}], context_id="ctx-1")


async def test_span_tree_follows_genai_conventions(
    engine_and_built: tuple[Engine, Built],
    mcp_server_http: McpTestServer,
) -> None:
    engine, _ = engine_and_built
    EXPORTER.clear()
    turns = [Turn.tool_calls(ToolCall("add", {"a": 20, "b": 22})), Turn.text("42")]
    with FakeLLM() as llm:
        llm.script(*turns)
        await engine.load(config(llm, {"claims": mcp_server_http}))
        result = await engine.run(ask("add 20 and 22"))
        assert result.content == "42"
        spans = {s.name: s for s in EXPORTER.get_finished_spans()}
        root = spans["invoke_agent assistant"]
        chats = [s for s in EXPORTER.get_finished_spans() if s.name == "chat fake-model"]
        tool = spans["execute_tool add"]
        assert len(chats) == 2
        assert root.parent is None
        for child in (*chats, tool):
            assert child.parent is not None
            assert child.parent.span_id == root.context.span_id
        attrs: dict[str, Any] = dict(root.attributes or {})
        assert attrs["gen_ai.operation.name"] == "invoke_agent"
        assert attrs["gen_ai.agent.name"] == "assistant"
        assert attrs["agentspec.prompt.version"] == "v1"
        assert attrs["gen_ai.usage.input_tokens"] == result.usage.input_tokens
        chat: dict[str, Any] = dict(chats[0].attributes or {})
        assert chat["gen_ai.operation.name"] == "chat"
        assert chat["gen_ai.request.model"] == "fake-model"
        assert chat["gen_ai.usage.output_tokens"] == completion_tokens(turns[0])
        assert dict(tool.attributes or {})["gen_ai.tool.name"] == "add"
        # the model received the trace context of its chat span
        traceparent = llm.requests[0].headers["traceparent"]
        assert traceparent.split("-")[1] == format(root.context.trace_id, "032x")
        assert traceparent.split("-")[2] == format(chats[0].context.span_id, "016x")


async def test_reload_closes_sessions_of_removed_servers_only(
    engine_and_built: tuple[Engine, Built],
    make_mcp_server: McpServerFactory,
) -> None:
    engine, built = engine_and_built
    kept, dropped = make_mcp_server("streamable-http"), make_mcp_server("sse")
    with FakeLLM() as llm:
        llm.script(Turn.tool_calls(ToolCall("add", {"a": 1, "b": 1})), Turn.text("2"))
        await engine.load(config(llm, {"kept": kept, "dropped": dropped}))
        kept_connection = built.connections["kept"]
        dropped_connection = built.connections["dropped"]
        await engine.load(config(llm, {"kept": kept}))
        await engine.pool.drain()
        assert dropped_connection.closed
        assert not kept_connection.closed, "an unchanged server keeps its session"
        assert len(built.connections) == 2, "the kept server was not reconnected"
        result = await engine.run(ask("add 1 and 1"))
        assert result.content == "2"
        assert llm.requests[1].trailing_tool_results[0]["content"] == "2"


async def test_tools_announced_by_list_changed_appear(
    engine_and_built: tuple[Engine, Built],
    make_mcp_server: McpServerFactory,
) -> None:
    engine, _ = engine_and_built
    server = make_mcp_server("streamable-http")
    with FakeLLM() as llm:  # no model call: the tools are called directly
        snapshot = await engine.load(config(llm, {"s": server}))
        assert "extra" not in snapshot.tools()
        await snapshot.tools()["enable_extra"].call({}, headers={}, context_id="ctx-1")
        await wait_until_async(
            lambda: "extra" in snapshot.tools(), timeout=5, what="the announced tool"
        )
        assert (
            await snapshot.tools()["extra"].call({"text": "hi"}, headers={}, context_id="ctx-1")
            == "extra: hi"
        )


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_restarted_server_is_reconnected(
    engine_and_built: tuple[Engine, Built],
    make_mcp_server: McpServerFactory,
    transport: str,
) -> None:
    engine, built = engine_and_built
    server = make_mcp_server(transport)  # type: ignore[arg-type]
    with FakeLLM() as llm:  # no model call: the tool is called directly
        snapshot = await engine.load(config(llm, {"s": server}))
        add = snapshot.tools()["add"]
        assert await add.call({"a": 1, "b": 2}, headers={}, context_id="ctx-1") == "3"
        server.kill()
        with pytest.raises(ToolError, match="MCP server 's'"):
            await add.call({"a": 1, "b": 2}, headers={}, context_id="ctx-1")
        server.start()
        await wait_until_async(
            lambda: built.connections["s"].status()["connected"],
            timeout=10,
            interval=0.1,
            what="the MCP session to reconnect",
        )
        assert (
            await snapshot.tools()["add"].call({"a": 2, "b": 2}, headers={}, context_id="ctx-1")
            == "4"
        )
        assert built.connections["s"].connects >= 2


async def test_slow_tool_call_times_out_as_a_tool_error(
    engine_and_built: tuple[Engine, Built],
    mcp_server_http: McpTestServer,
) -> None:
    engine, _ = engine_and_built
    with FakeLLM() as llm:
        llm.script(Turn.tool_calls(ToolCall("slow", {"seconds": 3})), Turn.text("too slow"))
        docs = agent_docs(
            llm_url=llm.base_url,
            mcp=[{"name": "s", "url": mcp_server_http.url, "timeoutSeconds": 0.5}],
        )
        snapshot = await engine.load(parse_config(yaml.safe_dump_all(docs)))
        with pytest.raises(ToolError, match=r"timed out after 0\.5s"):
            await snapshot.tools()["slow"].call({"seconds": 3}, headers={}, context_id="ctx-1")
        result = await engine.run(ask("take 3 seconds"))
        assert result.content == "too slow"
        assert llm.requests[1].trailing_tool_results[0]["content"] == (
            "Error: MCP tool 'slow' on 's' timed out after 0.5s"
        )
