"""The McpServer probe: connect with the ``mcp`` client, list tools, within a deadline.

A probe never raises: it returns either the tools or a failure with a one-word reason
(``Unreachable``, ``Timeout``, ``Unauthorized``, ``ProtocolError``) and a message for the
Ready condition.
The probe sends no credentials — the values of an McpServer's required headers belong to
each AgentSpec — so a server that insists on them reports ``Unauthorized`` (SSE) or
``ProtocolError`` (streamable HTTP, whose client hides the HTTP status).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

MAX_PAGES = 20
PROBE_TIMEOUT_CAP = 10.0


@dataclass(frozen=True)
class ProbeResult:
    tools: list[dict[str, str]] | None
    """``[{"name", "description"}]`` sorted by name; None when the probe failed."""
    reason: str = ""
    message: str = ""


def as_seen_from(url: str, namespace: str) -> str:
    """``url`` as a pod of ``namespace`` resolves it, for a probe from the operator's own
    namespace: a one-label host (a Service of the same namespace, like ``http://tools:8300``)
    becomes ``<host>.<namespace>.svc.cluster.local``, the first name of a pod's DNS search
    path. IPs, ``localhost`` and dotted names are left alone."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or "." in host or host == "localhost":
        return url
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return url
    netloc = f"{host}.{namespace}.svc.cluster.local"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit(parts._replace(netloc=netloc))


def _describe(error: BaseException) -> tuple[str, str]:
    # anyio task groups wrap transport errors; the innermost one says what happened.
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {first_line}".rstrip(": ")
    if isinstance(error, TimeoutError):
        return "Timeout", text
    if isinstance(error, httpx2.HTTPStatusError) and error.response.status_code in (401, 403):
        return "Unauthorized", text
    if isinstance(error, httpx2.TransportError | OSError):
        return "Unreachable", text
    return "ProtocolError", text


def _transport(url: str, transport: str, timeout: float) -> Any:
    if transport == "sse":
        return sse_client(url, timeout=timeout, sse_read_timeout=timeout)
    return streamable_http_client(url)


async def _list_tools(url: str, transport: str, limit: float) -> list[dict[str, str]]:
    tools: dict[str, str] = {}
    async with Client(
        _transport(url, transport, limit), read_timeout_seconds=limit, cache=None
    ) as client:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                tools[tool.name] = tool.description or ""
            cursor = page.next_cursor
            if not cursor:
                break
    return [{"name": n, "description": d} for n, d in sorted(tools.items())]


async def probe(url: str, *, transport: str, timeout: float) -> ProbeResult:  # noqa: ASYNC109
    """List the server's tools; ``timeout`` bounds the whole probe (capped at 10 s)."""
    limit = min(timeout, PROBE_TIMEOUT_CAP)
    try:
        async with asyncio.timeout(limit):
            tools = await _list_tools(url, transport, limit)
    except TimeoutError:
        return ProbeResult(None, "Timeout", f"no answer from {url} within {limit:g}s")
    except Exception as e:  # a probe reports every failure, never raises
        reason, message = _describe(e)
        return ProbeResult(None, reason, f"{url}: {message}")
    return ProbeResult(tools)
