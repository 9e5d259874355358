"""The McpServer registry: the operator probes real MCP servers and records what it found.

In: McpServer resources pointing at real test servers (streamable HTTP and SSE, child
processes from ``tests.support.mcp_servers``) or at nothing. Asserted: ``status.tools``,
``toolCount``, the Ready condition and its reason, re-probing on the spec's interval when a
server goes away and comes back, and no status writes between probes.
"""

from __future__ import annotations

import time

import pytest

from tests.support.control_plane import NamespacedKubectl
from tests.support.fixtures_doubles import McpServerFactory
from tests.support.mcp_servers import McpTestServer
from tests.support.operator_proc import OperatorProcess
from tests.support.operator_testkit import condition, eventually, get, mcp_doc

pytest_plugins = ["tests.support.fixtures_doubles"]

PROBE_DEADLINE = 15.0


@pytest.fixture
def k(kubectl: NamespacedKubectl, operator: OperatorProcess) -> NamespacedKubectl:
    return kubectl


def _ready(k: NamespacedKubectl, name: str, want: str) -> dict[str, object]:
    def check() -> dict[str, object] | None:
        obj = get(k, "mcpserver", name)
        return obj if condition(obj, "Ready").get("status") == want else None

    return eventually(check, timeout=PROBE_DEADLINE, what=f"McpServer {name} Ready={want}")


@pytest.mark.parametrize("server_fixture", ["mcp_server_http", "mcp_server_sse"])
def test_probe_lists_tools(
    k: NamespacedKubectl, server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server: McpTestServer = request.getfixturevalue(server_fixture)
    k.apply(mcp_doc("tools", server.url, transport=server.transport))
    obj = _ready(k, "tools", "True")
    status = obj["status"]
    assert isinstance(status, dict)
    names = [t["name"] for t in status["tools"]]
    assert names == sorted(names)
    assert {"add", "echo", "lookup_claim"} <= set(names)
    assert status["toolCount"] == len(names)
    assert status["lastProbeTime"]
    assert condition(obj, "Ready")["reason"] == "ToolsListed"
    add = next(t for t in status["tools"] if t["name"] == "add")
    assert add["description"]


def test_unreachable_server_is_not_ready_with_the_reason(k: NamespacedKubectl) -> None:
    k.apply(mcp_doc("down", "http://127.0.0.1:9/mcp", timeoutSeconds=2))
    obj = _ready(k, "down", "False")
    cond = condition(obj, "Ready")
    assert cond["reason"] == "Unreachable"
    assert "127.0.0.1:9" in cond["message"]


def test_server_is_reprobed_on_its_interval(
    k: NamespacedKubectl, make_mcp_server: McpServerFactory
) -> None:
    server = make_mcp_server("streamable-http", tools=["add", "echo"])
    k.apply(mcp_doc("flaky", server.url, probeIntervalSeconds=5, timeoutSeconds=2))
    ready = _ready(k, "flaky", "True")
    status = ready["status"]
    assert isinstance(status, dict)
    assert status["toolCount"] == 2
    # Between probes nothing is written.
    rv = get(k, "mcpserver", "flaky")["metadata"]["resourceVersion"]
    time.sleep(2)  # shorter than the interval: asserting the absence of writes needs time
    assert get(k, "mcpserver", "flaky")["metadata"]["resourceVersion"] == rv
    server.kill()
    _ready(k, "flaky", "False")
    server.start()
    back = _ready(k, "flaky", "True")
    back_status = back["status"]
    assert isinstance(back_status, dict)
    assert back_status["toolCount"] == 2


def test_a_server_starting_after_its_mcpserver_is_seen_before_the_interval(
    k: NamespacedKubectl, make_mcp_server: McpServerFactory
) -> None:
    """The usual rollout: the McpServer and the server's pod are applied together and the
    first probe finds nothing; the next comes after 5 s, not the 60 s interval."""
    server = make_mcp_server("streamable-http", tools=["add"])
    server.kill()
    k.apply(mcp_doc("late", server.url, timeoutSeconds=2))  # probeIntervalSeconds: 60
    _ready(k, "late", "False")
    server.start()
    started = time.monotonic()
    _ready(k, "late", "True")  # within PROBE_DEADLINE (15 s), a quarter of the interval
    assert time.monotonic() - started < PROBE_DEADLINE


def test_server_demanding_credentials_is_unauthorized(
    k: NamespacedKubectl, make_mcp_server: McpServerFactory
) -> None:
    server = make_mcp_server("sse", require_header=("x-api-key", "secret"))
    k.apply(
        mcp_doc(
            "guarded",
            server.url,
            transport="sse",
            headers=[{"name": "x-api-key", "description": "per-agent key"}],
        )
    )
    cond = condition(_ready(k, "guarded", "False"), "Ready")
    assert cond["reason"] == "Unauthorized"
    assert "401" in cond["message"]
