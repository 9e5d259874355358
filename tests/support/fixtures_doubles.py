"""Pytest fixtures for the LLM double and the real MCP test servers.

Owns the fixture wiring only (the components live in :mod:`tests.support.fake_llm` and
:mod:`tests.support.mcp_servers`). Register with ``pytest_plugins =
["tests.support.fixtures_doubles"]``.

* ``fake_llm`` — a fresh in-process :class:`FakeLLM` per test (empty script, no responder:
  unscripted requests get HTTP 500 "script exhausted"; set ``fake_llm.responder``).
* ``mcp_server_http`` / ``mcp_server_sse`` — one :class:`McpTestServer` per process (per
  xdist worker) over streamable HTTP / SSE, all test tools. Shared: don't stop, restart or
  ``enable_extra`` them; take a private one from ``make_mcp_server`` for that.
* ``make_mcp_server`` — ``make_mcp_server("sse", tools=..., require_header=...)`` starts a
  private server, stopped when the test ends.
* ``everything_server`` — the npm ``server-everything`` over streamable HTTP, one per process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import pytest

from .fake_llm import FakeLLM
from .mcp_servers import TOOL_NAMES, EverythingServer, McpTestServer, Transport

__all__ = [
    "McpServerFactory",
    "everything_server",
    "fake_llm",
    "make_mcp_server",
    "mcp_server_http",
    "mcp_server_sse",
]


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A scripted OpenAI-compatible server for this test; point clients at ``.base_url``."""
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="session")
def mcp_server_http() -> Iterator[McpTestServer]:
    """The shared streamable-HTTP test MCP server (``.url`` ends in ``/mcp``)."""
    with McpTestServer("streamable-http") as server:
        yield server


@pytest.fixture(scope="session")
def mcp_server_sse() -> Iterator[McpTestServer]:
    """The shared SSE test MCP server (``.url`` ends in ``/sse``)."""
    with McpTestServer("sse") as server:
        yield server


class McpServerFactory(Protocol):
    def __call__(
        self,
        transport: Transport = "streamable-http",
        *,
        tools: Sequence[str] = TOOL_NAMES,
        require_header: tuple[str, str] | None = None,
    ) -> McpTestServer: ...


@pytest.fixture
def make_mcp_server() -> Iterator[McpServerFactory]:
    """Start private test MCP servers; each is stopped when the test ends."""
    started: list[McpTestServer] = []

    def make(
        transport: Transport = "streamable-http",
        *,
        tools: Sequence[str] = TOOL_NAMES,
        require_header: tuple[str, str] | None = None,
    ) -> McpTestServer:
        server = McpTestServer(transport, tools=tools, require_header=require_header)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def everything_server() -> Iterator[EverythingServer]:
    """``@modelcontextprotocol/server-everything`` over streamable HTTP, one per process."""
    with EverythingServer() as server:
        yield server
