"""Pytest fixtures for the LLM double and the real MCP test servers.

Owns the fixture wiring only (the components live in :mod:`tests.support.fake_llm` and
:mod:`tests.support.mcp_servers`). Register with ``pytest_plugins =
["tests.support.fixtures_doubles"]``.

* ``fake_llm`` — a fresh in-process :class:`FakeLLM` per test, strict: script every request
  the test causes; when the test passed, its traffic must have been exactly the script.
* :func:`exact_traffic` — the same check per test for fake LLMs a module shares (use it in
  an autouse fixture of that module).
* ``mcp_server_http`` / ``mcp_server_sse`` — one :class:`McpTestServer` per process (per
  xdist worker) over streamable HTTP / SSE, all test tools. Shared: don't stop, restart or
  ``enable_extra`` them; take a private one from ``make_mcp_server`` for that.
* ``make_mcp_server`` — ``make_mcp_server("sse", tools=..., require_header=...)`` starts a
  private server, stopped when the test ends.
* ``everything_server`` — the npm ``server-everything`` over streamable HTTP, one per process.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Protocol

import pytest

from .fake_llm import FakeLLM
from .mcp_servers import TOOL_NAMES, EverythingServer, McpTestServer, Transport

__all__ = [
    "McpServerFactory",
    "everything_server",
    "exact_traffic",
    "fake_llm",
    "has_failed",
    "make_mcp_server",
    "mcp_server_http",
    "mcp_server_sse",
]

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Remembered for the fixtures' teardown: a failed test is not also blamed for its traffic.
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


def has_failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test using this fixture has failed (setup or call) so far."""
    return bool(request.node.stash.get(_FAILED, False))


def exact_traffic(request: pytest.FixtureRequest, *llms: FakeLLM) -> Iterator[None]:
    """Body of an autouse fixture for fake LLMs shared by a module: each test starts from an
    empty script and, if it passed, must have caused exactly the traffic it scripted."""
    for llm in llms:
        llm.reset()
    yield
    if has_failed(request):
        for llm in llms:
            llm.reset()  # the failure is reported already; the next test starts clean
        return
    differences = []
    for llm in llms:
        try:
            llm.assert_traffic_as_scripted()
        except AssertionError as e:
            differences.append(f"{llm.base_url}: {e}")
            llm.reset()
    if differences:
        raise AssertionError("\n".join(differences))


@pytest.fixture
def fake_llm(request: pytest.FixtureRequest) -> Iterator[FakeLLM]:
    """A strict scripted OpenAI-compatible server for this test; point clients at
    ``.base_url``."""
    server = FakeLLM().start()
    try:
        yield server
    finally:
        server.stop()
    if not has_failed(request):
        server.assert_traffic_as_scripted()


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
