"""The fake model served by uvicorn: in a background thread (:class:`FakeLLM`) or as a child
process (:class:`FakeLLMProcess`), both strict by default.

Strict means the test states the traffic: every scripted step must be requested, and a
request no step answers fails the test when the fake stops (on a clean exit of its ``with``
block, or from :meth:`FakeLLM.assert_traffic_as_scripted`). A ``responder`` opts a fake into
open-ended traffic (load, rule-based partners); it answers whatever the script does not.

Must not: decide answers itself (that is :mod:`.app` and the script).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from tests.support.procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    free_ports,
    owned_tmp_dir,
    start_process,
    wait_until,
)

from .app import DroppableHttpTools, FakeLLMApp, ScriptState
from .turns import DEFAULT_MODEL, ChatRequest, Responder, Step, Turn

__all__ = ["FakeLLM", "FakeLLMProcess", "uvicorn_config"]


def uvicorn_config(
    app: FakeLLMApp, *, host: str, port: int = 0, log_level: str | None = None
) -> uvicorn.Config:
    """How both front ends run uvicorn: no lifespan, no access log, keep-alive as long as a
    test (the hand-written server it replaces never closed an idle connection)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=DroppableHttpTools,
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level=log_level,
        server_header=False,
        date_header=False,
        timeout_keep_alive=3600,
        backlog=2048,
        timeout_graceful_shutdown=1,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class FakeLLM(Managed):
    """The fake LLM on a background thread with its own event loop.

    ``with FakeLLM() as llm: llm.script(...)``; point clients at ``llm.base_url``. On a clean
    exit the ``with`` block asserts the traffic was exactly the script
    (:meth:`assert_traffic_as_scripted`). ``responder`` (a :class:`Responder` or a constant
    :class:`Turn`) answers requests the script does not: pass it only for open-ended traffic,
    and say why where you do.

    ``models`` lists what ``GET /v1/models`` reports; with ``strict_models=True`` any other
    model gets 404 ``model_not_found``. With ``api_key`` set, requests without
    ``Authorization: Bearer <api_key>`` get 401 ``invalid_api_key``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        responder: Responder | Turn | None = None,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        strict_models: bool = False,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        self._state = ScriptState(responder)
        self._models = models
        self._strict_models = strict_models
        self._api_key = api_key
        self._requested_port = port
        self._port: int | None = None
        self._app: FakeLLMApp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        if self._thread is not None:
            raise RuntimeError("FakeLLM already started")
        # Listening before uvicorn runs: a client connecting at once waits in the backlog.
        sock = socket.create_server((self.host, self._requested_port), backlog=2048)
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        loop = _new_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-llm", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        # The app's events belong to this loop, so it is built here.
        self._app = FakeLLMApp(
            self._state,
            models=self._models,
            strict_models=self._strict_models,
            api_key=self._api_key,
        )
        self._server = uvicorn.Server(uvicorn_config(self._app, host=self.host))
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))

    async def _close(self) -> None:
        """Faster than uvicorn's graceful shutdown (which polls every 0.1 s): end every wait,
        stop listening, close idle connections, let running answers finish."""
        app, server, serving = self._app, self._server, self._serving
        if app is not None:
            app.close()
        if serving is not None:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        if server is None:
            return
        for listener in getattr(server, "servers", []):
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
        tasks = list(server.server_state.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=5)
            for task in late:
                task.cancel()

    def stop(self) -> None:
        """Drop held and waiting answers, close the connections, end the server thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._loop = self._thread = self._server = self._serving = self._app = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.assert_traffic_as_scripted()

    def _on_loop(self, action: Callable[[FakeLLMApp], None]) -> None:
        app, loop = self._app, self._loop
        if app is None or loop is None:
            raise RuntimeError("FakeLLM not started")

        async def run() -> None:
            action(app)

        asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    # -- what tests use -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLLM not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` — what an OpenAI client takes as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def responder(self) -> Step | None:
        return self._state.responder

    @responder.setter
    def responder(self, value: Responder | Turn | None) -> None:
        self._state.responder = value

    def script(self, *steps: Step) -> FakeLLM:
        """Queue ``steps``: each answers exactly one of the next requests, in order. A step is
        a :class:`Turn`, or a :class:`Responder` computing the turn from its request."""
        self._state.script(steps)
        return self

    def hold(self) -> None:
        """Keep recording requests but answer none until :meth:`release` (the requests stay
        in flight, e.g. across a reload)."""
        self._on_loop(FakeLLMApp.hold)

    def release(self) -> None:
        self._on_loop(FakeLLMApp.release)

    def fail_embeddings(self, status: int | None = 503) -> None:
        """Answer every embeddings request with HTTP ``status`` (the endpoint down; not
        recorded in ``embedded``); None: answer them again."""

        def failing(app: FakeLLMApp) -> None:
            app.embeddings_failing = status

        self._on_loop(failing)

    @property
    def pending(self) -> int:
        """Scripted steps not yet used."""
        return self._state.pending

    @property
    def requests(self) -> list[ChatRequest]:
        """A snapshot of the chat-completions requests received so far, oldest first."""
        return self._state.requests()

    @property
    def moderated(self) -> list[str]:
        """The inputs of the moderation requests received so far, oldest first."""
        return self._state.moderated()

    @property
    def embedded(self) -> list[list[str]]:
        """The inputs of each embeddings request received so far, oldest first."""
        return self._state.embedded()

    @property
    def last_request(self) -> ChatRequest:
        requests = self._state.requests()
        if not requests:
            raise AssertionError("the fake LLM received no chat request")
        return requests[-1]

    def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> list[ChatRequest]:
        """Block until at least ``count`` chat requests arrived; return them."""
        return self._state.wait_for_requests(count, timeout=timeout)

    def assert_script_consumed(self) -> None:
        pending = self._state.pending
        if pending:
            raise AssertionError(f"{pending} scripted fake-LLM turn(s) were never requested")

    def assert_traffic_as_scripted(self) -> None:
        """Every scripted step was requested, and every request was expected (scripted or
        answered by the responder, which did not raise)."""
        report = self._state.report()
        if report is not None:
            raise AssertionError(f"fake LLM traffic differs from the script: {report}")

    def reset(self) -> None:
        """Drop queued steps, recorded requests and problems; answer held requests."""
        self._state.reset()
        if self._app is not None:
            self._on_loop(FakeLLMApp.release)


class FakeLLMProcess(Managed):
    """The fake LLM as a child process (for benchmarks and multi-process end-to-end tests).

    Scripted and inspected over the admin endpoints; the same ``script``/``requests``/
    ``wait_for_requests``/``assert_traffic_as_scripted`` surface as :class:`FakeLLM`, strict
    by default too. ``responder`` names one of ``RESPONDERS`` or ``text:<answer>``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        responder: str | None = None,
        script_file: Path | None = None,
        api_key: str | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self._responder = responder
        self._script_file = script_file
        self._api_key = api_key
        self._ready_timeout = ready_timeout
        self._port: int | None = None
        self._process: ManagedProcess | None = None
        self._tmp_dir: Path | None = None

    def start(self) -> FakeLLMProcess:
        self._tmp_dir = owned_tmp_dir("agentspec-fake-llm-")
        (port,) = free_ports(1)
        argv = [sys.executable, "-m", "tests.support.fake_llm", "--port", str(port)]
        if self._responder:
            argv += ["--responder", self._responder]
        if self._script_file is not None:
            argv += ["--script", str(self._script_file)]
        if self._api_key is not None:
            argv += ["--api-key", self._api_key]
        process = start_process(
            "fake-llm",
            argv,
            log_path=self._tmp_dir / "fake-llm.log",
            cwd=Path(__file__).resolve().parents[3],
        )
        self._process = process

        def healthy() -> bool:
            if not process.running():
                raise ExitedEarlyError
            try:
                return httpx.get(f"http://{self.host}:{port}/_fake/health", timeout=1).is_success
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=self._ready_timeout, what="fake LLM process")
        except (ExitedEarlyError, TimeoutError):
            message = process.describe_failure("did not become healthy")
            self.stop()
            raise RuntimeError(message) from None
        self._port = port
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=5.0)
            self._process = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        health = None
        try:
            if exc_type is None and self._process is not None:
                health = self._admin("GET", "health")
        finally:
            self.stop()
        if health is not None:
            _raise_unless_as_scripted(health)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLLMProcess not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        response = httpx.request(
            method, f"http://{self.host}:{self.port}/_fake/{path}", json=payload, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def script(self, *turns: Turn) -> FakeLLMProcess:
        self._admin("POST", "script", {"turns": [t.to_json() for t in turns]})
        return self

    def hold(self) -> None:
        self._admin("POST", "hold")

    def release(self) -> None:
        self._admin("POST", "release")

    @property
    def pending(self) -> int:
        return int(self._admin("GET", "health")["pending"])

    @property
    def requests(self) -> list[ChatRequest]:
        return [
            ChatRequest(body=r["body"], headers=r["headers"])
            for r in self._admin("GET", "requests")
        ]

    def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> list[ChatRequest]:
        wait_until(lambda: len(self.requests) >= count, timeout=timeout, what=f"{count} requests")
        return self.requests

    def assert_script_consumed(self) -> None:
        pending = self.pending
        if pending:
            raise AssertionError(f"{pending} scripted fake-LLM turn(s) were never requested")

    def assert_traffic_as_scripted(self) -> None:
        _raise_unless_as_scripted(self._admin("GET", "health"))

    def reset(self) -> None:
        self._admin("POST", "reset")


def _raise_unless_as_scripted(health: dict[str, Any]) -> None:
    lines = list(health["problems"])
    if health["pending"]:
        lines.insert(0, f"{health['pending']} scripted fake-LLM turn(s) were never requested")
    if lines:
        raise AssertionError(f"fake LLM traffic differs from the script: {'; '.join(lines)}")
