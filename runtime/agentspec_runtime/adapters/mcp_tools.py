"""MCP tools: one live connection per MCP server, with the ``mcp`` 2.x client.

A connection runs in its own task (the mcp client's anyio scopes must be entered and left
in one task): it connects over streamable HTTP or SSE with the configured headers and
query parameters, lists the tools (filtered by the allow-list), refreshes the list when
the server announces a change, and reconnects with backoff when the server goes away. A
call that meets a dead connection waits for the reconnect and is retried once; a call that
exceeds the server's timeout, or that the server reports as an error, becomes a
``ToolError`` the model reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared.exceptions import MCPError

from agentspec_runtime.engine.errors import ToolError
from agentspec_runtime.engine.ports import Endpoint, Tool
from agentspec_runtime.engine.types import ToolSpec
from agentspec_runtime.spec.resolved import ResolvedMcpServer

from .urls import public_url, redact

log = logging.getLogger(__name__)

# Errors that mean "the connection is gone", as opposed to "the tool failed".
_CONNECTION_ERRORS = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    httpx2.TransportError,
    httpx2.HTTPStatusError,
    ConnectionError,
)
_INITIAL_BACKOFF = 0.2
_MAX_BACKOFF = 10.0
_CALL_WAIT = 2.0
_CLOSE_WAIT = 5.0


def _describe(error: BaseException) -> str:
    """What went wrong, without the request URL: its query may carry secrets."""
    if isinstance(error, httpx2.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    if isinstance(error, MCPError):
        return f"MCP error {error.error.code}"
    return type(error).__name__


async def _first_of(*events: asyncio.Event, within: float | None = None) -> None:
    """Return when any event is set (or after ``within`` seconds)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _with_params(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(dict(params))) if q)
    return urlunsplit(parts._replace(query=query))


def _text(result: mcp_types.CallToolResult) -> str:
    pieces = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            pieces.append(block.text)
        else:
            pieces.append(block.model_dump_json(by_alias=True, exclude_none=True))
    if not pieces and result.structured_content is not None:
        pieces.append(json.dumps(result.structured_content))
    return "\n".join(pieces)


class McpTool:
    """One tool of one server, as the engine sees it."""

    def __init__(self, connection: McpServerConnection, tool: mcp_types.Tool) -> None:
        self._connection = connection
        self._name = tool.name
        hints = tool.annotations
        self.spec = ToolSpec(
            name=tool.name,
            description=tool.description or "",
            parameters=tool.input_schema or {"type": "object", "properties": {}},
            # the server says a second call does no harm: a durable task may repeat it
            retry_safe=hints is not None and bool(hints.read_only_hint or hints.idempotent_hint),
        )

    @property
    def source(self) -> Literal["mcp"]:
        return "mcp"

    @property
    def target(self) -> str:
        return self._connection.server.name

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> str:
        return await self._connection.call(self._name, arguments, headers=headers)


class McpServerConnection:
    """A self-healing connection to one MCP server."""

    def __init__(
        self, server: ResolvedMcpServer, endpoint: Endpoint, *, connect_timeout: float = 10.0
    ) -> None:
        self.server = server
        self._headers = dict(endpoint.headers)
        self._secrets = endpoint.secrets
        self._url = _with_params(server.url, endpoint.params)
        self._allowed = set(server.tools)
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._tools: list[Tool] = []
        self._schemas: dict[str, dict[str, Any]] = {}
        self._connected = asyncio.Event()
        self._broken = asyncio.Event()
        self._closing = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.connects = 0
        self.listed_at: float | None = None

    async def start(self) -> McpServerConnection:
        """Start connecting; wait (bounded) for the first connection, but never fail on it:
        a server that is down now is retried in the background and its tools appear then."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"mcp:{self.server.name}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout)
        return self

    def tools(self) -> list[Tool]:
        return self._tools if self._connected.is_set() else []

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """The input schema the server lists for tool ``name`` (None: not listed)."""
        return self._schemas.get(name)

    @property
    def closed(self) -> bool:
        """True once the connection task has ended for good (after ``aclose``)."""
        return self._task is not None and self._task.done()

    def status(self) -> dict[str, Any]:
        return {
            "url": public_url(self.server.url),
            "transport": self.server.transport,
            "connected": self._connected.is_set(),
            "tools": [t.spec.name for t in self._tools],
            "connects": self.connects,
            "lastError": self.last_error,
        }

    async def aclose(self) -> None:
        self._closing.set()
        if self._refresh is not None:
            self._refresh.cancel()
        if self._task is not None:
            # a session stuck connecting or listing must not hold up a drain or shutdown
            done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_WAIT)
            if not done:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    # -- calls --------------------------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any], *, headers: Mapping[str, str]
    ) -> str:
        timeout = self.server.timeout_seconds
        meta: mcp_types.RequestParamsMeta | None = None
        trace = {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
        if trace:
            meta = mcp_types.RequestParamsMeta(**trace)  # type: ignore[typeddict-item]
        for attempt in (1, 2):
            client = await self._client_for_call(timeout)
            retry = False
            try:
                result = await asyncio.wait_for(
                    client.call_tool(name, arguments, read_timeout_seconds=timeout, meta=meta),
                    timeout,
                )
            except TimeoutError as e:
                raise ToolError(
                    f"MCP tool {name!r} on {self.server.name!r} timed out after {timeout:g}s"
                ) from e
            except MCPError as e:
                if e.error.code != mcp_types.CONNECTION_CLOSED:
                    said = redact(e.error.message, self._secrets)
                    raise ToolError(f"MCP server {self.server.name!r}: {said}") from e
                failure: Exception = e
                retry = True  # the session was already gone: the call never ran
            except _CONNECTION_ERRORS as e:
                failure = e
                # only a call that provably never reached the server may run again
                retry = isinstance(e, httpx2.ConnectError | ConnectionRefusedError)
            else:
                if result.is_error:
                    said = redact(_text(result), self._secrets)
                    raise ToolError(said or f"MCP tool {name!r} reported an error")
                return redact(_text(result), self._secrets)
            self._mark_broken(client, _describe(failure))
            if attempt == 2 or not retry:
                raise ToolError(
                    f"MCP server {self.server.name!r} is unreachable ({_describe(failure)})"
                ) from failure
        raise AssertionError("unreachable")

    async def _client_for_call(self, wait: float) -> Client:
        if not self._connected.is_set():
            # A call is demand: cut the reconnect backoff short, then wait briefly. A server
            # that stays down fails the call fast, as an error the model can act on.
            self._retry_now.set()
            try:
                await asyncio.wait_for(self._connected.wait(), min(wait, _CALL_WAIT))
            except TimeoutError as e:
                raise ToolError(
                    f"MCP server {self.server.name!r} is not connected"
                    + (f" ({self.last_error})" if self.last_error else "")
                ) from e
        assert self._client is not None
        return self._client

    def _mark_broken(self, client: Client | None, reason: str) -> None:
        """Report that ``client`` failed; a failure of an older client changes nothing."""
        if client is not self._client:
            return
        if self._connected.is_set():
            log.warning(
                "MCP server %s: connection lost (%s); reconnecting", self.server.name, reason
            )
        self.last_error = reason
        self._connected.clear()
        self._broken.set()

    # -- the connection task --------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _INITIAL_BACKOFF
        while not self._closing.is_set():
            try:
                await self._session()
                backoff = _INITIAL_BACKOFF
            except Exception as e:  # anything: the server is down, refused us, or broke
                self.last_error = _describe(e)
                log.info("MCP server %s unavailable: %s", self.server.name, self.last_error)
            self._connected.clear()
            self._client = None
            if self._closing.is_set():
                break
            self._retry_now.clear()
            await _first_of(self._closing, self._retry_now, within=backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _session(self) -> None:
        async with self._open() as client:
            self._broken.clear()
            await self._list(client)
            self._client = client
            self.connects += 1
            self.last_error = None
            self._connected.set()
            async with anyio.create_task_group() as group:
                group.start_soon(self._listen, client)
                try:
                    await _first_of(self._closing, self._broken)
                finally:
                    group.cancel_scope.cancel()

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[Client]:
        if self.server.transport == "sse":
            transport: Any = sse_client(
                self._url, headers=self._headers, timeout=self.server.timeout_seconds
            )
            async with Client(transport, message_handler=self._on_message) as client:
                yield client
            return
        # The client the mcp package's own helper builds (a private module): headers and
        # timeouts, redirects left off (the transport follows same-origin ones itself).
        http = httpx2.AsyncClient(
            headers=self._headers,
            timeout=httpx2.Timeout(self.server.timeout_seconds, read=300.0),
        )
        async with http:
            transport = streamable_http_client(self._url, http_client=http)
            async with Client(transport, message_handler=self._on_message) as client:
                yield client

    async def _list(self, client: Client) -> None:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        allowed = [t for t in tools if not self._allowed or t.name in self._allowed]
        self._tools = [McpTool(self, t) for t in allowed]
        # every tool's schema, the allow-list aside: a knowledge source may name a tool the
        # model is not offered directly
        self._schemas = {t.name: dict(t.input_schema or {}) for t in tools}
        self.listed_at = time.time()

    async def _on_message(self, message: Any) -> None:
        notification = getattr(message, "root", message)
        if isinstance(notification, mcp_types.ToolListChangedNotification):
            self._schedule_refresh()
        await anyio.lowlevel.checkpoint()

    async def _listen(self, client: Client) -> None:
        """On 2026-07-28 sessions list changes arrive through ``subscriptions/listen``."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    await self._list(client)
        except (ListenNotSupportedError, MCPError):
            return  # an older session: list_changed arrives as a notification instead
        except _CONNECTION_ERRORS as e:
            self._mark_broken(client, _describe(e))

    def _schedule_refresh(self) -> None:
        client = self._client
        if client is None or (self._refresh is not None and not self._refresh.done()):
            return

        async def refresh() -> None:
            try:
                await self._list(client)
            except Exception as e:
                log.warning(
                    "MCP server %s: refreshing tools failed: %s", self.server.name, _describe(e)
                )

        self._refresh = asyncio.get_running_loop().create_task(refresh())


async def connect_mcp(server: ResolvedMcpServer, endpoint: Endpoint) -> McpServerConnection:
    """The engine's ``McpBuilder``."""
    return await McpServerConnection(server, endpoint).start()
