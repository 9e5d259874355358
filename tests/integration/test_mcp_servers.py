"""The MCP test servers are real servers that the ``mcp`` 2.x client can use.

In: :class:`McpTestServer` children over streamable HTTP and SSE (shared ones, and private
ones for tests that restart or mutate them) and the npm ``server-everything``, reached with
``mcp.Client`` over ``streamable_http_client`` / ``sse_client``. Asserted: the tool list and
every tool's result (tool errors as ``is_error`` results), configured headers and query
parameters arriving at ``whoami``, the required-header 401, a new session working after a
restart on the same port, and the tool-list change reaching clients of both protocol eras
(``notifications/tools/list_changed`` on handshake sessions, a ``subscriptions/listen`` event
on 2026-07-28 sessions).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.mcp_servers import CLAIMS, TOOL_NAMES, EverythingServer, McpTestServer

if TYPE_CHECKING:
    # Imported for typing only: pytest_plugins must import the plugin module first, or
    # its assertions are not rewritten.
    from tests.support.fixtures_doubles import McpServerFactory

pytestmark = pytest.mark.timeout(60)

TRANSPORTS = ["streamable-http", "sse"]


@asynccontextmanager
async def connect(
    url: str,
    *,
    transport: str,
    headers: Mapping[str, str] | None = None,
    mode: str = "auto",
    on_message: Any = None,
) -> AsyncIterator[Client]:
    """An initialised ``mcp.Client`` for ``url`` over ``transport``."""
    if transport == "sse":
        stream = sse_client(url, headers=dict(headers or {}))
    else:
        stream = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))
    async with Client(stream, mode=mode, message_handler=on_message) as client:
        yield client


def text_of(result: mcp_types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, mcp_types.TextContent)
    return content.text


@pytest.fixture(params=TRANSPORTS)
def shared_server(request: pytest.FixtureRequest) -> McpTestServer:
    name = "mcp_server_http" if request.param == "streamable-http" else "mcp_server_sse"
    server: McpTestServer = request.getfixturevalue(name)
    return server


async def test_lists_and_calls_every_tool(shared_server: McpTestServer) -> None:
    async with connect(shared_server.url, transport=shared_server.transport) as client:
        tools = await client.list_tools()
        add = await client.call_tool("add", {"a": 2, "b": 40})
        echoed = await client.call_tool("echo", {"text": "héllo wörld"})
        claim = await client.call_tool("lookup_claim", {"claim_id": "EXP-1001"})
        missing = await client.call_tool("lookup_claim", {"claim_id": "EXP-9"})
        policy = await client.call_tool("expense_policy", {"topic": "Meals"})
        started = time.monotonic()
        slow = await client.call_tool("slow", {"seconds": 0.3})
        slept = time.monotonic() - started
        failed = await client.call_tool("fail", {"message": "boom"})

    assert [t.name for t in tools.tools] == list(TOOL_NAMES)
    assert (text_of(add), add.structured_content, add.is_error) == ("42", {"result": 42}, False)
    assert text_of(echoed) == "héllo wörld"
    assert json.loads(text_of(claim)) == CLAIMS["EXP-1001"]
    assert missing.is_error
    assert "no expense claim with id 'EXP-9'" in text_of(missing)
    assert text_of(policy).startswith("Up to 40 EUR")
    assert (text_of(slow), slept >= 0.3) == ("slept 0.3s", True)
    assert failed.is_error
    assert text_of(failed).endswith("boom")


async def test_headers_and_query_params_reach_whoami(shared_server: McpTestServer) -> None:
    url = f"{shared_server.url}?tenant=acme&region=eu"
    headers = {"X-Api-Key": "secret-1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    async with connect(url, transport=shared_server.transport, headers=headers) as client:
        who = json.loads(text_of(await client.call_tool("whoami", {})))

    assert who["transport"] == shared_server.transport
    assert who["query"] == {"tenant": "acme", "region": "eu"}
    assert who["headers"]["x-api-key"] == "secret-1"
    assert who["headers"]["traceparent"] == headers["traceparent"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_required_header_is_enforced(
    make_mcp_server: McpServerFactory, transport: str
) -> None:
    server = make_mcp_server(transport, require_header=("Authorization", "Bearer t0k"))  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        rejected = await http.post(server.url, json={})
    assert rejected.status_code == 401

    headers = {"Authorization": "Bearer t0k"}
    async with connect(server.url, transport=transport, headers=headers) as client:
        result = await client.call_tool("add", {"a": 1, "b": 1})
    assert text_of(result) == "2"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_new_session_works_after_restart_on_the_same_port(
    make_mcp_server: McpServerFactory, transport: str
) -> None:
    server = make_mcp_server(transport)  # type: ignore[arg-type]
    url, port = server.url, server.port
    async with connect(url, transport=transport) as client:
        assert text_of(await client.call_tool("echo", {"text": "before"})) == "before"

    server.kill()
    assert not server.running
    server.start()

    assert (server.url, server.port) == (url, port)
    async with connect(url, transport=transport) as client:
        assert text_of(await client.call_tool("echo", {"text": "after"})) == "after"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tool_list_change_reaches_a_handshake_era_session(
    make_mcp_server: McpServerFactory, transport: str
) -> None:
    server = make_mcp_server(transport)  # type: ignore[arg-type]
    changed = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            changed.set()

    async with connect(
        server.url, transport=transport, mode="legacy", on_message=on_message
    ) as client:
        capabilities = client.server_capabilities.tools
        assert capabilities is not None
        assert capabilities.list_changed
        assert text_of(await client.call_tool("enable_extra", {})) == "extra enabled"
        with anyio.fail_after(5):
            await changed.wait()
        tools = [t.name for t in (await client.list_tools()).tools]
        extra = await client.call_tool("extra", {"text": "x"})

    assert tools == [*TOOL_NAMES, "extra"]
    assert text_of(extra) == "extra: x"


async def test_tool_list_change_reaches_a_listen_stream(make_mcp_server: McpServerFactory) -> None:
    server = make_mcp_server("streamable-http")
    async with connect(server.url, transport="streamable-http") as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("enable_extra", {})
            with anyio.fail_after(5):
                event = await subscription.__anext__()
        tools = [t.name for t in (await client.list_tools()).tools]

    assert type(event).__name__ == "ToolsListChanged"
    assert "extra" in tools


async def test_everything_server_lists_and_calls_tools(everything_server: EverythingServer) -> None:
    async with connect(everything_server.url, transport="streamable-http") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        echoed = await client.call_tool("echo", {"message": "hi there"})
        summed = await client.call_tool("get-sum", {"a": 2, "b": 3})

    assert {"echo", "get-sum"} <= tools
    assert text_of(echoed) == "Echo: hi there"
    assert "5" in text_of(summed)
