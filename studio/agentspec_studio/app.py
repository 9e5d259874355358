"""The Studio's HTTP API (JSON under ``/api``), live updates as server-sent events, and the
built UI's static files.

Every write is the user's own (their kubeconfig): a spec is saved by a server-side dry run
first (``POST .../dry-run``: the diff, the server's verdict with each field's message, the
fields other managers own, and whether Argo CD manages the object), then applied under the
field manager ``agentspec-studio`` (``POST .../apply``): fields other managers own (``kubectl
apply``, a controller) are taken over only with ``takeOwnership`` (the user confirmed the
diff), else 409 listing them; an object Argo CD manages is not applied (409 with the YAML to
commit instead) unless the request says ``force``. Prompt changes are updates at
the object's resourceVersion (a concurrent change answers 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import views
from .cluster import UNREACHABLE, Cluster
from .folder import Folder
from .traces import JaegerTraces, TraceStore
from .usage import PrometheusError, Usage
from .views import EditError, Json, KubeApiError

STATIC = Path(__file__).parent / "static"
MAX_OTLP_BYTES = 8 << 20
log = logging.getLogger("agentspec.studio")
Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _guarded(handler: Handler) -> Handler:
    """Problems as JSON: the API's own status and causes, an edit's reason, or 503 when the
    cluster cannot be reached (the page says so)."""

    async def run(request: Request) -> Response:
        try:
            for key in ("ns", "name"):
                if key in request.path_params:
                    views.check_name(request.path_params[key], key)
            return await handler(request)
        except KubeApiError as e:
            return _json(e.to_json(), e.status)
        except EditError as e:
            return _json({"status": e.status, "message": str(e), "causes": []}, e.status)
        except PrometheusError as e:
            return _json({"status": 503, "message": str(e), "causes": []}, 503)
        except UNREACHABLE as e:
            message = f"the cluster cannot be reached: {e}"
            return _json({"status": 503, "message": message, "causes": []}, 503)
        except Exception as e:  # a bug or a surprise: said as JSON, logged with its trace
            log.exception("%s %s", request.method, request.url.path)
            message = f"the Studio failed: {type(e).__name__}: {e}"
            return _json({"status": 500, "message": message, "causes": []}, 500)

    return run


async def _body(request: Request) -> Json:
    try:
        value = json.loads(await request.body() or b"{}")
    except ValueError as e:
        raise EditError(f"the body is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise EditError("the body must be a JSON object")
    return value


class _Api:
    """The handlers, over one cluster connection."""

    def __init__(
        self, cluster: Cluster | Folder, usage: Usage, traces: JaegerTraces | TraceStore | None
    ) -> None:
        self.cluster = cluster
        self.usage = usage
        self.traces = traces

    async def health(self, _: Request) -> Response:
        try:
            await self.cluster.check()
        except KubeApiError as e:
            return _json({"cluster": {"ok": False, "error": e.message}}, 503)
        except UNREACHABLE as e:
            return _json({"cluster": {"ok": False, "error": f"unreachable: {e}"}}, 503)
        return _json(
            {
                "cluster": {"ok": True},
                "namespace": self.cluster.namespace,
                "traces": (
                    f"Jaeger at {self.traces.url}"
                    if isinstance(self.traces, JaegerTraces)
                    else "kept in memory (OTLP to this Studio)"
                    if self.traces is not None
                    else None
                ),
            }
        )

    async def agents(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        prompts = {
            p["metadata"]["name"]: p for p in await self.cluster.list_of("PromptTemplate", ns)
        }
        rows = [
            views.agent_summary(a, prompts) for a in await self.cluster.list_of("AgentSpec", ns)
        ]
        return _json({"items": rows})

    async def agent(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        obj = await self.cluster.get("AgentSpec", ns, name)
        if obj is None:
            raise KubeApiError(404, f"AgentSpec {ns}/{name} not found")
        prompts = {
            p["metadata"]["name"]: p for p in await self.cluster.list_of("PromptTemplate", ns)
        }
        return _json(
            {
                "summary": views.agent_summary(obj, prompts),
                "object": obj,
                "yaml": views.as_yaml(views.clean(obj)),
                "conditions": (obj.get("status") or {}).get("conditions") or [],
                "events": await self.cluster.events(ns, "AgentSpec", name),
                "children": await self.cluster.children(ns, name, obj["metadata"]["uid"]),
                "agentCard": (obj.get("status") or {}).get("agentCard"),
            }
        )

    async def schema(self, request: Request) -> Response:
        return _json(await self.cluster.schema(request.path_params["kind"]))

    async def dry_run(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        obj = views.parse_one((await _body(request)).get("yaml", ""))
        live = await self.cluster.get(obj["kind"], ns, obj["metadata"]["name"])
        conflicts: list[Json] = []
        try:
            after = await self.cluster.apply(obj, ns, dry_run=True)
        except KubeApiError as e:
            conflicts = _conflicts(e)
            if not conflicts:
                raise
            # the result if the user takes those fields over (they confirm on apply)
            after = await self.cluster.apply(obj, ns, dry_run=True, force=True)
        return _json(
            {
                "diff": views.diff(live, after, name=obj["metadata"]["name"]),
                "created": live is None,
                "argoManaged": views.argo_managed(live) if live else None,
                "conflicts": conflicts,
                "object": after,
            }
        )

    async def apply(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        body = await _body(request)
        obj = views.parse_one(body.get("yaml", ""))
        live = await self.cluster.get(obj["kind"], ns, obj["metadata"]["name"])
        app_name = views.argo_managed(live) if live else None
        if app_name and not body.get("force"):
            return _json(
                {
                    "status": 409,
                    "message": f"Argo CD application {app_name!r} manages this object: commit "
                    "the YAML to its Git source instead (the next sync would undo the change)",
                    "argoManaged": app_name,
                    "yaml": views.as_yaml(views.clean(obj)),
                    "causes": [],
                },
                409,
            )
        try:
            done = await self.cluster.apply(
                obj, ns, dry_run=False, force=bool(body.get("takeOwnership"))
            )
        except KubeApiError as e:
            conflicts = _conflicts(e)
            if not conflicts:
                raise
            fields = ", ".join(c["field"] for c in conflicts)
            return _json(
                {
                    "status": 409,
                    "message": f"other field managers own {fields}: confirm to take them over "
                    "(takeOwnership)",
                    "conflicts": conflicts,
                    "causes": e.causes,
                },
                409,
            )
        return _json({"object": done})

    async def prompts(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        items = [
            {
                "name": p["metadata"]["name"],
                "versions": (p.get("spec") or {}).get("versions") or [],
                "release": (p.get("spec") or {}).get("release"),
                "labels": (p.get("spec") or {}).get("labels") or {},
                "serving": views.prompt_serving(p),
                "status": p.get("status") or {},
                "argoManaged": views.argo_managed(p),
            }
            for p in await self.cluster.list_of("PromptTemplate", ns)
        ]
        return _json({"items": items})

    async def _template(self, request: Request) -> Json:
        ns, name = request.path_params["ns"], request.path_params["name"]
        template = await self.cluster.get("PromptTemplate", ns, name)
        if template is None:
            raise KubeApiError(404, f"PromptTemplate {ns}/{name} not found")
        return template

    async def version_diff(self, request: Request) -> Response:
        template = await self._template(request)
        old, new = request.query_params.get("from", ""), request.query_params.get("to", "")
        return _json({"diff": views.version_diff(template, old, new)})

    def prompt_edit(self, edit: Callable[[Json, Json], Json]) -> Handler:
        async def run(request: Request) -> Response:
            template = await self._template(request)
            body = await _body(request)
            app_name = views.argo_managed(template)
            if app_name and not body.get("force"):
                raise EditError(
                    f"Argo CD application {app_name!r} manages this PromptTemplate: change it in "
                    "Git (the next sync would undo this), or send force",
                    status=409,
                )
            changed = edit(template, body)
            done = await self.cluster.replace(changed, request.path_params["ns"])
            return _json({"object": done, "serving": views.prompt_serving(done)})

        return run

    async def figures(self, request: Request) -> Response:
        """The agents page's live figures; without Prometheus, none and why (not an error:
        Prometheus is optional)."""
        try:
            return _json({"agents": await self.usage.agent_figures(request.path_params["ns"])})
        except PrometheusError as e:
            return _json({"agents": {}, "problem": str(e)})

    async def usage_report(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        return _json(await self.usage.report(ns, request.query_params.get("window", "1h")))

    async def chat(self, request: Request) -> Response:
        """The playground: one message to the agent's OpenAI-compatible API through the
        apiserver's service proxy, in a conversation (``contextId``) and a trace of its own
        (the trace id is sent as ``traceparent`` and returned). With ``stream``: server-sent
        events as the agent answers (``views.chat_events``: its text, its tool calls and
        partner hops as they start and finish, then the prompt version and usage). With
        ``"api": "a2a"``: over the agent's A2A endpoint instead (``SendStreamingMessage``, A2A
        1.0, always streamed: ``views.a2a_events``; the task and its states, no tool calls)."""
        ns, name = request.path_params["ns"], request.path_params["name"]
        body = await _body(request)
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            raise EditError("message: the text to send")
        context = body.get("contextId") or secrets.token_hex(8)
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        api = body.get("api", "openai")
        if api not in ("openai", "a2a"):
            raise EditError("api: openai or a2a")
        if api == "a2a" and body.get("stream") is False:  # not silently a stream anyway
            raise EditError("api a2a answers as a stream: leave stream out or send true")
        start = {"type": "start", "traceId": trace_id, "contextId": str(context), "api": api}
        if api == "a2a":
            rpc = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendStreamingMessage",
                "params": {
                    "message": {
                        "messageId": secrets.token_hex(16),
                        "role": "ROLE_USER",
                        "parts": [{"text": message}],
                        "contextId": str(context),
                    }
                },
            }
            return await self._relay(
                ns,
                name,
                "a2a",
                rpc,
                headers={**headers, "A2A-Version": "1.0"},
                start=start,
                translate=views.a2a_events,
            )
        payload: Json = {
            "model": name,
            "messages": [{"role": "user", "content": message}],
            "context_id": str(context),
        }
        if body.get("stream"):
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True, "include_agentspec_events": True}
            return await self._relay(
                ns,
                name,
                "v1/chat/completions",
                payload,
                headers=headers,
                start=start,
                translate=views.chat_events,
            )
        status, answer = await self.cluster.proxy_post(
            ns, name, "v1/chat/completions", payload, port=8080, headers=headers
        )
        if status != 200:
            raise _agent_error(name, status, answer)
        choice = (answer.get("choices") or [{}])[0]
        return _json(
            {
                "answer": (choice.get("message") or {}).get("content"),
                "usage": answer.get("usage"),
                "agentspec": answer.get("agentspec"),
                "traceId": trace_id,
                "contextId": context,
            }
        )

    async def _relay(
        self,
        ns: str,
        name: str,
        path: str,
        payload: Json,
        *,
        headers: dict[str, str],
        start: Json,
        translate: Callable[[str], list[Json]],
    ) -> Response:
        """The agent's SSE answer at ``path``, each ``data:`` translated into the playground's
        events, after ``start``."""
        upstream = contextlib.AsyncExitStack()

        async def close() -> None:
            # even while being cancelled (the browser left): the agent's stream must close,
            # so the agent stops working for nobody and the proxy connection is freed
            with anyio.CancelScope(shield=True):
                await upstream.aclose()

        try:
            answer = await upstream.enter_async_context(
                self.cluster.proxy_stream(ns, name, path, payload, port=8080, headers=headers)
            )
            if answer.status_code != 200:  # refused before the stream began: a plain error
                await answer.aread()
                raise _agent_error(name, answer.status_code, views.answer_of(answer.text))
            if not answer.headers.get("content-type", "").startswith("text/event-stream"):
                # an answer whole, not a stream (A2A answers a request it refuses before its
                # first event as one JSON-RPC error, HTTP 200): what it says, else why not
                await answer.aread()
                said = [e["message"] for e in translate(answer.text) if e["type"] == "error"]
                raise KubeApiError(
                    502, f"agent {name!r}: {said[0] if said else 'it did not stream its answer'}"
                )
        except BaseException:
            await close()
            raise

        async def events() -> AsyncIterator[bytes]:
            ended = False  # the agent said it finished (or failed)
            try:
                yield _sse(start)
                async for line in answer.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    for event in translate(data):
                        ended = (
                            ended
                            or event["type"] in ("done", "error")
                            or (event["type"] == "state" and event["state"] in views.A2A_PAUSED)
                        )
                        yield _sse(event)
                if not ended:
                    yield _sse({"type": "error", "message": "the answer ended unfinished"})
            except httpx2.HTTPError as e:  # the agent or the proxy went away mid-answer
                yield _sse({"type": "error", "message": f"the answer broke off: {e}"})
            except Exception as e:  # an answer this Studio cannot read: said, not a blank
                log.exception("relaying %s/%s", ns, name)
                yield _sse({"type": "error", "message": f"the Studio failed: {e}"})
            finally:
                await close()

        return _ClosingStream(
            events(),
            close=close,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def card(self, request: Request) -> Response:
        """The agent's A2A card (its skills, capabilities, interfaces), as a peer reads it,
        through the service proxy."""
        ns, name = request.path_params["ns"], request.path_params["name"]
        status, card = await self.cluster.proxy_get(
            ns, name, ".well-known/agent-card.json", port=8080
        )
        if status != 200:
            raise _agent_error(name, status, card)
        return _json(card)

    async def receive_traces(self, request: Request) -> Response:
        """OTLP/HTTP: the agents' spans (``OTEL_EXPORTER_OTLP_ENDPOINT`` = this Studio)."""
        body = b""
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_OTLP_BYTES:
                raise EditError(f"an export is at most {MAX_OTLP_BYTES >> 20} MiB", status=413)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as e:
                raise EditError(f"not gzip: {e}") from e
            if len(body) > MAX_OTLP_BYTES:
                raise EditError(f"an export is at most {MAX_OTLP_BYTES >> 20} MiB", status=413)
        assert isinstance(self.traces, TraceStore)  # the route exists only then
        taken = self.traces.receive(
            body, request.headers.get("content-type", "application/x-protobuf")
        )
        return _json({"partialSuccess": {}, "taken": taken})

    def _trace_backend(self) -> JaegerTraces | TraceStore:
        if self.traces is None:
            raise KubeApiError(
                503,
                "no trace backend: start the Studio with --jaeger-url (the query API of the "
                "Jaeger v2 the agents export to)",
            )
        return self.traces

    async def recent_traces(self, _: Request) -> Response:
        return _json({"items": await self._trace_backend().recent_traces()})

    async def trace(self, request: Request) -> Response:
        trace_id = request.path_params["trace"]
        backend = self._trace_backend()
        found = await backend.find(trace_id)
        if found is None:
            where = (
                f"Jaeger at {backend.url} has no such trace (yet: spans arrive in batches)"
                if isinstance(backend, JaegerTraces)
                else "the Studio keeps the traces the agents send it: OTEL_EXPORTER_OTLP_ENDPOINT"
            )
            raise KubeApiError(404, f"trace {trace_id} is not here ({where})")
        return _json(found)

    async def mcp_servers(self, request: Request) -> Response:
        items = await self.cluster.list_of("McpServer", request.path_params["ns"])
        return _json({"items": [views.mcp_summary(s) for s in items]})

    async def topology(self, request: Request) -> Response:
        """The graph; its edges weighted by call rate when Prometheus answers (else the
        graph alone, and ``ratesError`` says why)."""
        ns = request.path_params["ns"]

        async def rates() -> dict[tuple[str, str, str], float] | str:
            try:
                return await self.usage.call_rates(ns)
            except PrometheusError as e:
                return str(e)

        agents, servers, measured = await asyncio.gather(
            self.cluster.list_of("AgentSpec", ns), self.cluster.list_of("McpServer", ns), rates()
        )
        if isinstance(measured, str):
            return _json({**views.topology(agents, servers), "ratesError": measured})
        return _json({**views.topology(agents, servers, measured), "ratesError": None})

    async def live(self, request: Request) -> Response:
        ns = request.path_params["ns"]

        async def stream() -> AsyncIterator[bytes]:
            yield b": connected\n\n"
            async for change in self.cluster.watch(ns):
                event = "problem" if change.get("type") == "ERROR" else "change"
                yield f"event: {event}\ndata: {json.dumps(change)}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")


class LocalOnly:
    """Refuses what a hostile web page could send through the user's browser (the API acts
    with the user's cluster credentials): a ``Host`` other than the Studio's own (DNS
    rebinding), and any request but GET that is not JSON or comes from another ``Origin``
    (cross-site request forgery: a page cannot send JSON or protobuf cross-origin without a
    preflight, which this server never answers)."""

    def __init__(self, app: Any, *, hosts: set[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            problem = self._problem(scope["method"], headers)
            if problem is not None:
                await _json({"status": 403, "message": problem, "causes": []}, 403)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)

    def _problem(self, method: str, headers: dict[str, str]) -> str | None:
        host = headers.get("host", "")
        if host not in self.hosts:
            return f"Host {host!r} is not this Studio's (allowed: {sorted(self.hosts)})"
        if method in ("GET", "HEAD"):
            return None
        origin = headers.get("origin")
        # the page's own origin, whatever its scheme (behind a TLS proxy it is https://)
        if origin is not None and urlsplit(origin).netloc != host:
            return f"requests from {origin!r} are refused (cross-site)"
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", "application/x-protobuf"):
            # text/plain, forms: what another site's page may send without a preflight
            return "send JSON (content-type: application/json)"
        return None


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> set[str]:
    """The ``Host`` values the Studio answers: its own address, loopback names, and the
    names a proxy in front of it uses (``--allow-host``)."""
    names = {host, "127.0.0.1", "localhost", "[::1]"}
    return {f"{n}:{port}" for n in names} | set(extra)


def build_app(
    cluster: Cluster | Folder,
    usage: Usage | None = None,
    *,
    jaeger_url: str | None = None,
    hosts: set[str] | None = None,
) -> Any:
    """The ASGI app; ``jaeger_url``: the trace backend (else, in folder mode only, traces
    received in memory); ``hosts``: the allowed ``Host`` values (None: no check, for tests
    that call the app in process)."""
    traces: JaegerTraces | TraceStore | None = (
        JaegerTraces(jaeger_url)
        if jaeger_url
        else TraceStore()
        if isinstance(cluster, Folder)
        else None
    )
    api = _Api(cluster, usage or Usage(None, {}), traces)
    base = "/api/namespaces/{ns}"
    routes: list[Any] = [
        Route("/api/health", api.health),
        Route(f"{base}/agents", _guarded(api.agents)),
        Route(f"{base}/agents/{{name}}", _guarded(api.agent)),
        Route("/api/schema/{kind}", _guarded(api.schema)),
        Route(f"{base}/dry-run", _guarded(api.dry_run), methods=["POST"]),
        Route(f"{base}/apply", _guarded(api.apply), methods=["POST"]),
        Route(f"{base}/prompts", _guarded(api.prompts)),
        Route(f"{base}/prompts/{{name}}/diff", _guarded(api.version_diff)),
        Route(
            f"{base}/prompts/{{name}}/versions",
            _guarded(api.prompt_edit(views.add_version)),
            methods=["POST"],
        ),
        Route(
            f"{base}/prompts/{{name}}/canary",
            _guarded(
                api.prompt_edit(lambda t, b: views.set_canary(t, str(b.get("version")), _int(b)))
            ),
            methods=["POST"],
        ),
        Route(
            f"{base}/prompts/{{name}}/promote",
            _guarded(api.prompt_edit(lambda t, _b: views.promote(t))),
            methods=["POST"],
        ),
        Route(
            f"{base}/prompts/{{name}}/rollback",
            _guarded(api.prompt_edit(lambda t, _b: views.rollback(t))),
            methods=["POST"],
        ),
        Route(f"{base}/usage", _guarded(api.usage_report)),
        Route(f"{base}/figures", _guarded(api.figures)),
        Route("/api/traces", _guarded(api.recent_traces)),
        Route("/api/traces/{trace:str}", _guarded(api.trace)),
        Route(f"{base}/agents/{{name}}/chat", _guarded(api.chat), methods=["POST"]),
        Route(f"{base}/agents/{{name}}/card", _guarded(api.card)),
        Route(f"{base}/mcpservers", _guarded(api.mcp_servers)),
        Route(f"{base}/topology", _guarded(api.topology)),
        Route(f"{base}/live", _guarded(api.live)),
    ]
    if isinstance(traces, TraceStore):
        # the in-memory OTLP receiver: a development convenience of folder mode only (in a
        # cluster, anything that reaches the Service could send spans)
        routes.append(Route("/v1/traces", _guarded(api.receive_traces), methods=["POST"]))
    if STATIC.is_dir():
        routes.append(Mount("/", StaticFiles(directory=STATIC, html=True)))
    app = Starlette(routes=routes)
    return app if hosts is None else LocalOnly(app, hosts=hosts)


class _ClosingStream(StreamingResponse):
    """A stream that runs ``close`` however it ends — also when it is cancelled before its
    body's generator started (then the generator's own ``finally`` never runs)."""

    def __init__(self, content: Any, *, close: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._close = close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._close()


def _sse(event: Json) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _agent_error(name: str, status: int, answer: Json) -> KubeApiError:
    if answer.get("kind") == "Status":  # the apiserver's own refusal (RBAC), not the agent's
        return KubeApiError(status, f"the cluster refused: {answer.get('message')}")
    error = answer.get("error")
    detail = error.get("message") if isinstance(error, dict) else answer.get("message")
    return KubeApiError(status, f"agent {name!r} answered HTTP {status}: {detail or answer}")


def _conflicts(error: KubeApiError) -> list[Json]:
    """The fields another manager owns, from a server-side apply's 409."""
    if error.status != 409:
        return []
    return [
        {"field": c["field"], "owner": c["message"]}
        for c in error.causes
        if c.get("reason") == "FieldManagerConflict"
    ]


def _int(body: Json) -> int:
    weight = body.get("weight")
    if not isinstance(weight, int) or isinstance(weight, bool):
        raise EditError("weight must be a whole number, 0-100")
    return weight
