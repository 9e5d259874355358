"""Real MCP servers for the tests: our own ``MCPServer`` in a child process, and the npm one.

Owns:

* :func:`build_server` — an ``mcp`` 2.x ``MCPServer`` with deterministic test tools
  (:data:`TOOL_NAMES`): ``add``, ``echo``, ``lookup_claim`` (a fake expense-claim DB; unknown
  ids are a tool error), ``expense_policy``, ``slow`` (sleeps, for timeouts), ``fail`` (always
  a tool error), ``whoami`` (JSON of the headers and query parameters the server received, for
  asserting configured ones arrive) and ``enable_extra`` (registers the ``extra`` tool at run
  time and announces it: ``notifications/tools/list_changed`` on handshake-era sessions, a
  ``subscriptions/listen`` event on 2026-07-28 sessions), and two slow tools with annotations
  for durable-task resumes: ``slow_lookup`` (``readOnlyHint``/``idempotentHint``: safe to
  repeat) and ``slow_charge`` (``destructiveHint``: not). ``GET /calls`` answers how often each
  tool was called, per key (``{"slow_charge:k1": 1, ...}``), counted when the call arrives.
* the child-process entry point ``python -m tests.support.mcp_servers --port N --transport
  streamable-http|sse [--require-header NAME=VALUE] [--tools add,echo,...]`` — streamable HTTP
  at ``/mcp``, SSE at ``/sse`` (messages at ``/messages/``), ``GET /healthz`` for readiness;
  with ``--require-header`` every MCP request lacking that header value gets 401.
* :class:`McpTestServer` — starts that child on a free loopback port, waits until it answers,
  and can ``stop()`` and ``restart()`` it on the same port (for reconnect tests).
* :class:`EverythingServer` — the third-party ``@modelcontextprotocol/server-everything``
  (installed by ``scripts/install-npm-tools.sh``) in streamable-HTTP mode.

Children are started through :mod:`tests.support.procs`, so none outlives the test run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    free_ports,
    owned_tmp_dir,
    start_process,
    wait_until,
)

__all__ = [
    "CLAIMS",
    "EVERYTHING_VERSION",
    "TOOL_NAMES",
    "EverythingServer",
    "McpServerError",
    "McpTestServer",
    "Transport",
    "build_server",
    "main",
]

Transport = Literal["streamable-http", "sse"]

REPO_ROOT = Path(__file__).resolve().parents[2]
EVERYTHING_VERSION = "2026.8.31"
"""Must match ``EVERYTHING_VERSION`` in ``scripts/install-npm-tools.sh``."""

TOOL_NAMES = (
    "add",
    "echo",
    "lookup_claim",
    "expense_policy",
    "slow",
    "fail",
    "whoami",
    "enable_extra",
    "slow_lookup",
    "slow_charge",
)
RETRIEVAL_TOOLS = ("search_policies",)
"""Offered only when asked for (``tools=``): a retrieval tool, for knowledge sources."""

CLAIMS: dict[str, dict[str, Any]] = {
    "EXP-1001": {
        "id": "EXP-1001",
        "employee": "Ada Lovelace",
        "amount": 142.50,
        "currency": "EUR",
        "category": "travel",
        "status": "approved",
    },
    "EXP-1002": {
        "id": "EXP-1002",
        "employee": "Alan Turing",
        "amount": 1890.00,
        "currency": "EUR",
        "category": "equipment",
        "status": "pending",
    },
}
"""The fake expense-claim database behind ``lookup_claim``."""

POLICIES = {
    "travel": "Economy class for flights under 6 hours; hotels up to 150 EUR per night.",
    "meals": "Up to 40 EUR per person per day; alcohol is not reimbursed.",
    "equipment": "Purchases over 1000 EUR need prior approval by a manager.",
}
"""The fake policy handbook behind ``expense_policy``."""


class McpServerError(RuntimeError):
    """A test MCP server could not be started."""


# -- the server (runs in the child) -------------------------------------------------------


def build_server(*, tools: Sequence[str] = TOOL_NAMES, transport: Transport) -> MCPServer:
    """An ``MCPServer`` offering ``tools`` (a subset of :data:`TOOL_NAMES`)."""
    unknown = set(tools) - set(TOOL_NAMES) - set(RETRIEVAL_TOOLS)
    if unknown:
        raise ValueError(f"unknown test tools: {sorted(unknown)}")
    server: MCPServer = MCPServer("agentspec-test-mcp", version="1.0.0")

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    def lookup_claim(claim_id: str) -> str:
        """Look up an expense claim by id (e.g. EXP-1001); returns the claim as JSON."""
        claim = CLAIMS.get(claim_id)
        if claim is None:
            raise ToolError(f"no expense claim with id {claim_id!r}")
        return json.dumps(claim, sort_keys=True)

    def expense_policy(topic: str) -> str:
        """The company expense policy for a topic: travel, meals or equipment."""
        return POLICIES.get(topic.lower(), f"No policy found for {topic!r}.")

    async def slow(seconds: float) -> str:
        """Sleep for the given number of seconds, then say so."""
        await anyio.sleep(seconds)
        return f"slept {seconds:g}s"

    def fail(message: str) -> str:
        """Always fails with the given message."""
        raise ToolError(message)

    async def whoami(ctx: Context) -> str:
        """The headers and query parameters this request reached the server with, as JSON."""
        return json.dumps(_who(ctx, transport), sort_keys=True)

    def extra(text: str) -> str:
        """A tool that exists only after enable_extra was called."""
        return f"extra: {text}"

    async def enable_extra(ctx: Context) -> str:
        """Register the `extra` tool and notify clients that the tool list changed."""
        if any(t.name == "extra" for t in await server.list_tools()):
            return "extra already enabled"
        server.add_tool(extra)
        # 2026-07-28 sessions learn of it through subscriptions/listen streams...
        await ctx.notify_tools_changed()
        # ...handshake-era sessions through the notification on their session's stream
        # (the SDK drops this one on modern sessions).
        await ctx.session.send_tool_list_changed()
        return "extra enabled"

    async def slow_lookup(key: str, seconds: float) -> str:
        """Look a record up by key, slowly (takes the given seconds); reads only."""
        _CALLS[f"slow_lookup:{key}"] = _CALLS.get(f"slow_lookup:{key}", 0) + 1
        await anyio.sleep(seconds)
        return f"record {key}: ok"

    async def slow_charge(key: str, seconds: float) -> str:
        """Charge the account for the order with this key, slowly (takes the given seconds)."""
        _CALLS[f"slow_charge:{key}"] = _CALLS.get(f"slow_charge:{key}", 0) + 1
        await anyio.sleep(seconds)
        return f"charged {key}"

    def search_policies(query: str, top_k: int = 10) -> str:
        """Search the expense policy handbook; returns the best passages as JSON."""
        _CALLS[f"search_policies:top_k={top_k}"] = (
            _CALLS.get(f"search_policies:top_k={top_k}", 0) + 1
        )
        asked = {w.strip(".,?!").lower() for w in query.split()}
        scored: list[tuple[int, str, str]] = []
        for topic, text in POLICIES.items():
            said = {w.strip(".,;").lower() for w in text.split()} | {topic}
            if overlap := len(asked & said):
                scored.append((overlap, topic, text))
        scored.sort(key=lambda hit: (-hit[0], hit[1]))
        hits = [
            {"text": text, "document": f"{topic}.md", "chunk": 0, "score": overlap}
            for overlap, topic, text in scored[:top_k]
        ]
        return json.dumps({"results": hits})

    annotated = {
        "slow_lookup": ToolAnnotations(read_only_hint=True, idempotent_hint=True),
        "slow_charge": ToolAnnotations(destructive_hint=True, idempotent_hint=False),
    }
    functions: dict[str, Callable[..., Any]] = {
        "add": add,
        "echo": echo,
        "lookup_claim": lookup_claim,
        "expense_policy": expense_policy,
        "slow": slow,
        "fail": fail,
        "whoami": whoami,
        "enable_extra": enable_extra,
        "slow_lookup": slow_lookup,
        "slow_charge": slow_charge,
        "search_policies": search_policies,
    }
    for name in tools:
        server.add_tool(functions[name], annotations=annotated.get(name))
    _advertise_tools_list_changed(server)
    return server


def _advertise_tools_list_changed(server: MCPServer) -> None:
    """Make handshake-era ``initialize`` results say ``tools.listChanged: true``.

    mcp 2.x derives that flag from ``NotificationOptions`` passed to the low-level server's
    ``create_initialization_options``, but ``MCPServer``'s HTTP apps call it without any and
    offer no setting, so the bound method is wrapped (2026-07-28 sessions derive the flag from
    ``subscriptions/listen`` being served, which ``MCPServer`` does by default).
    """
    lowlevel = server._lowlevel_server
    original = lowlevel.create_initialization_options

    def with_tools_changed(notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        options = notification_options or NotificationOptions(tools_changed=True)
        return original(options, *args, **kwargs)

    lowlevel.create_initialization_options = with_tools_changed  # type: ignore[method-assign]


_SSE_CONNECTIONS: dict[str, dict[str, dict[str, str]]] = {}
_CALLS: dict[str, int] = {}
"""``<tool>:<key>`` -> calls received (the slow annotated tools)."""
"""SSE session id → headers and query of the ``GET /sse`` that opened it (child only)."""


def _who(ctx: Any, transport: Transport) -> dict[str, Any]:
    """What ``whoami`` reports.

    ``headers``: of the HTTP request carrying this call (for SSE merged over those of the
    ``GET /sse`` that opened the session). ``query``: the query parameters of the URL the
    client was configured with — the POST's for streamable HTTP, the ``GET /sse``'s for SSE
    (an SSE client posts to the server-chosen message URL, not to its configured URL).
    ``headerDigests``: the SHA-256 of each header value.
    """
    request = ctx.request_context.request
    headers = dict(request.headers) if request is not None else {}
    query = dict(request.query_params) if request is not None else {}
    if transport == "sse":
        session = _SSE_CONNECTIONS.get(query.pop("session_id", ""), {})
        headers = {**session.get("headers", {}), **headers}
        query = dict(session.get("query", {}))
    # digests prove which value arrived even where the runtime masks the echoed value
    digests = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in headers.items()}
    return {"transport": transport, "headers": headers, "headerDigests": digests, "query": query}


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]
_SESSION_IN_ENDPOINT = re.compile(rb"session_id=([0-9a-f]{32})")


def _wrap_app(app: _App, *, required_header: tuple[str, str] | None) -> _App:
    """``/healthz``, the optional required-header check, and SSE connection bookkeeping."""

    async def wrapped(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] == "/healthz":
            await _plain(send, 200, b"ok")
            return
        if scope["path"] == "/calls":
            await _plain(send, 200, json.dumps(_CALLS, sort_keys=True).encode())
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if required_header is not None:
            name, value = required_header
            if headers.get(name.lower()) != value:
                await _plain(send, 401, f"missing or wrong {name} header".encode())
                return
        if scope["method"] == "GET" and scope["path"].rstrip("/") == "/sse":
            await app(scope, receive, _remember_sse_session(send, scope, headers))
            return
        await app(scope, receive, send)

    return wrapped


def _remember_sse_session(send: _Send, scope: _Scope, headers: dict[str, str]) -> _Send:
    from urllib.parse import parse_qsl

    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    seen = False

    async def spy(message: _Message) -> None:
        nonlocal seen
        if not seen and message["type"] == "http.response.body":
            match = _SESSION_IN_ENDPOINT.search(message.get("body", b""))
            if match:
                seen = True
                _SSE_CONNECTIONS[match.group(1).decode()] = {"headers": headers, "query": query}
        await send(message)

    return spy


async def _plain(send: _Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(
    *,
    port: int,
    transport: Transport,
    tools: Sequence[str] = TOOL_NAMES,
    required_header: tuple[str, str] | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Run the test server in this process until it is signalled (uvicorn)."""
    import uvicorn

    server = build_server(tools=tools, transport=transport)
    app = server.streamable_http_app() if transport == "streamable-http" else server.sse_app()
    config = uvicorn.Config(
        _wrap_app(app, required_header=required_header),
        host=host,
        port=port,
        log_level="warning",
        # Open SSE streams would otherwise hold a SIGTERM-ed server for the whole grace period.
        timeout_graceful_shutdown=1,
        lifespan="on",
    )
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.mcp_servers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--transport", choices=["streamable-http", "sse"], default="streamable-http"
    )
    parser.add_argument("--require-header", metavar="NAME=VALUE", default=None)
    parser.add_argument("--tools", default=",".join(TOOL_NAMES), help="comma-separated subset")
    args = parser.parse_args(argv)
    required = None
    if args.require_header:
        name, sep, value = args.require_header.partition("=")
        if not sep or not name:
            parser.error("--require-header takes NAME=VALUE")
        required = (name, value)
    serve(
        port=args.port,
        host=args.host,
        transport=args.transport,
        tools=[t for t in args.tools.split(",") if t],
        required_header=required,
    )


# -- the parent side ----------------------------------------------------------------------


class _ChildServer(Managed):
    """A server child on a fixed loopback port, restartable on that port."""

    host = "127.0.0.1"
    name = "mcp-server"
    path = "/"

    def __init__(self, *, ready_timeout: float) -> None:
        self._ready_timeout = ready_timeout
        self._port: int | None = None
        self._process: ManagedProcess | None = None
        self._tmp_dir: Path | None = None
        self._starts = 0

    def _argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _env(self, port: int) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self, port: int) -> bool:
        raise NotImplementedError

    def start(self) -> Any:
        if self._process is not None:
            raise McpServerError(f"{self.name} already running")
        if self._tmp_dir is None:
            self._tmp_dir = owned_tmp_dir(f"agentspec-{self.name}-")
        try:
            if self._port is not None:
                # A restart keeps its port, so clients configured with the old URL reconnect.
                if not self._try_start(self._port):
                    raise McpServerError(f"{self.name}: port {self._port} was taken meanwhile")
                return self
            for _ in range(3):
                (port,) = free_ports(1, host=self.host)
                if self._try_start(port):
                    self._port = port
                    return self
            raise McpServerError(f"{self.name} kept losing its port to other processes")
        except BaseException:
            self._stop_process()
            raise

    def _try_start(self, port: int) -> bool:
        assert self._tmp_dir is not None
        self._starts += 1
        process = start_process(
            self.name,
            self._argv(port),
            log_path=self._tmp_dir / f"{self.name}-{self._starts}.log",
            env=self._env(port),
            cwd=REPO_ROOT,
        )
        self._process = process

        def ready() -> bool:
            if not process.running():
                raise ExitedEarlyError
            return self._ready(port)

        try:
            wait_until(ready, timeout=self._ready_timeout, what=f"{self.name} on port {port}")
        except ExitedEarlyError:
            process.stop(grace=1.0)
            self._process = None
            log = process.log_tail(200)
            if "address already in use" in log.lower() or "EADDRINUSE" in log:
                return False
            raise McpServerError(process.describe_failure("exited during startup")) from None
        except TimeoutError as exc:
            raise McpServerError(process.describe_failure(str(exc))) from None
        return True

    def _stop_process(self) -> None:
        if self._process is not None:
            self._process.stop(grace=3.0)
            self._process = None

    def stop(self) -> None:
        """Stop the child and remove its directory; ``start()`` afterwards picks a new port."""
        self._stop_process()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
        self._port = None

    def kill(self) -> None:
        """Stop the child but keep port and logs, for a later :meth:`restart`."""
        self._stop_process()

    def restart(self) -> Any:
        """Stop the child (if running) and start a new one on the same port."""
        self._stop_process()
        return self.start()

    def _exit(self) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise McpServerError(f"{self.name} not started")
        return self._port

    @property
    def url(self) -> str:
        """The full endpoint URL clients connect to."""
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def log_tail(self, lines: int = 40) -> str:
        return "<not running>" if self._process is None else self._process.log_tail(lines)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


class McpTestServer(_ChildServer):
    """Our ``MCPServer`` test server in a child process (see the module docstring).

    ``McpTestServer(transport="sse").start()`` or ``with McpTestServer() as server:``;
    ``server.url`` is ``http://127.0.0.1:<port>/mcp`` (or ``/sse``). ``kill()`` then
    ``start()`` (or just ``restart()``) brings it back on the same port with a fresh state
    (sessions gone, ``extra`` disabled).
    """

    def __init__(
        self,
        transport: Transport = "streamable-http",
        *,
        tools: Sequence[str] = TOOL_NAMES,
        require_header: tuple[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        super().__init__(ready_timeout=ready_timeout)
        self.transport: Transport = transport
        self.tools = tuple(tools)
        self.require_header = require_header
        self.name = f"mcp-test-{transport}"
        self.path = "/mcp" if transport == "streamable-http" else "/sse"

    def _argv(self, port: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "tests.support.mcp_servers",
            "--port",
            str(port),
            "--transport",
            self.transport,
            "--tools",
            ",".join(self.tools),
        ]
        if self.require_header is not None:
            argv += ["--require-header", "=".join(self.require_header)]
        return argv

    def _ready(self, port: int) -> bool:
        return _http_ok(f"http://{self.host}:{port}/healthz")

    def start(self) -> McpTestServer:
        super().start()
        return self

    def restart(self) -> McpTestServer:
        super().restart()
        return self

    def calls(self) -> dict[str, int]:
        """How often each slow annotated tool was called, per key (since the start)."""
        import httpx

        answer: dict[str, int] = httpx.get(f"http://{self.host}:{self.port}/calls").json()
        return answer


def install_npm_tools() -> Path:
    """Run ``scripts/install-npm-tools.sh`` (instant once installed); the install directory.

    ``AGENTSPEC_NPM_DIR`` short-circuits it with an existing install.
    """
    preset = os.environ.get("AGENTSPEC_NPM_DIR")
    if preset:
        return Path(preset)
    script = REPO_ROOT / "scripts" / "install-npm-tools.sh"
    result = subprocess.run(
        [str(script)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "EVERYTHING_VERSION": EVERYTHING_VERSION},
        timeout=600,
    )
    if result.returncode != 0:
        raise McpServerError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


class EverythingServer(_ChildServer):
    """``@modelcontextprotocol/server-everything`` over streamable HTTP (``/mcp``).

    Needs ``node``; installs the pinned package on first use (see :func:`install_npm_tools`).
    """

    name = "mcp-everything"
    path = "/mcp"

    def __init__(self, *, ready_timeout: float = 30.0) -> None:
        super().__init__(ready_timeout=ready_timeout)
        self._entry: Path | None = None

    def _argv(self, port: int) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise McpServerError("node is not on PATH; run scripts/setup.sh")
        if self._entry is None:
            package = "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
            self._entry = install_npm_tools() / package
        return [node, str(self._entry), "streamableHttp"]

    def _env(self, port: int) -> dict[str, str]:
        return {**os.environ, "PORT": str(port)}

    def _ready(self, port: int) -> bool:
        # Any HTTP answer means express is listening; a GET without a session is a 4xx.
        return _http_ok(f"http://{self.host}:{port}/mcp")

    def start(self) -> EverythingServer:
        super().start()
        return self

    def restart(self) -> EverythingServer:
        super().restart()
        return self


if __name__ == "__main__":
    main()
