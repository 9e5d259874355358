"""The Starlette apps: the API port (8080) and the metrics port (9090)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agentspec_runtime.api.a2a import Card, a2a_routes
from agentspec_runtime.api.admission import AdmissionMiddleware
from agentspec_runtime.api.bodies import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY, BodyGuard
from agentspec_runtime.api.inbound import InboundMiddleware
from agentspec_runtime.api.openai_api import ChatCompletions
from agentspec_runtime.api.tasks import TaskService
from agentspec_runtime.engine.agent import Engine

DEFAULT_MAX_HOPS = 5


@dataclass
class Lifecycle:
    """Process state the health endpoints report (set by the server)."""

    draining: bool = False


def api_app(
    engine: Engine,
    *,
    lifecycle: Lifecycle,
    tasks: TaskService,
    card: Card,
    max_body: int = DEFAULT_MAX_BODY,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_hops: int = DEFAULT_MAX_HOPS,
) -> Starlette:
    """``card`` says where callers reach this agent (its Service); ``tasks`` keeps its A2A
    tasks."""
    chat = ChatCompletions(engine)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> Response:
        if lifecycle.draining:
            return PlainTextResponse("draining", status_code=503)
        if not engine.ready:
            return PlainTextResponse("no configuration loaded", status_code=503)
        return PlainTextResponse("ok")

    async def status(_request: Request) -> Response:
        return JSONResponse(
            {
                **engine.status(),
                "tasks": tasks.status(),
                "draining": lifecycle.draining,
                "pid": os.getpid(),
            }
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat.create, methods=["POST"]),
            Route("/v1/models", chat.models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/status", status, methods=["GET"]),
            *a2a_routes(tasks, card=card),
        ],
        middleware=[
            # auth and the hop limit first: no body is read for a request that is refused
            Middleware(InboundMiddleware, engine=engine, max_hops=max_hops),
            Middleware(BodyGuard, max_body=max_body, timeout=body_timeout),
            # then the consumer's request budget (rateLimit), the A2A method read from the body
            Middleware(AdmissionMiddleware, engine=engine),
        ],
    )


def metrics_app(engine: Engine) -> Starlette:
    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
