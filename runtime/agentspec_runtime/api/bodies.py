"""Request bodies of both APIs, read and parsed once, within limits, before any handler.

:class:`BodyGuard` sits in front of ``POST /v1/...`` and ``POST /a2a``: it reads the body
within ``max_body`` bytes (413) and ``timeout`` seconds (408), and parses it as JSON with
msgspec, which — unlike the standard library — refuses what would crash a handler later:
nesting deeper than :data:`MAX_DEPTH` levels (the standard library recurses until
``RecursionError``), numbers beyond 64 bits or doubles (it builds 5,000-digit ints until
Python's digit limit raises), lone surrogates (``"\\ud800"``, which cannot be encoded again
and failed only when the answer was written), and undecodable bytes. Every refusal is a 400
in the API's own error shape — OpenAI's error object, or a JSON-RPC parse error — and the
handler never runs. The parsed value is handed on in ``scope["state"]`` (the OpenAI API uses
it); the raw bytes are replayed to the a2a-sdk, which parses them again, now safely.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PARSED = "agentspec.json"
"""``scope["state"][PARSED]``: the body, parsed."""
MAX_DEPTH = 64
DEFAULT_MAX_BODY = 1 << 20
DEFAULT_BODY_TIMEOUT = 30.0
_decoder = msgspec.json.Decoder()


class BadBodyError(Exception):
    """The body cannot be served: ``status`` (400, 408, 413), ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_json(raw: bytes) -> Any:
    """Parse a request body, or raise :class:`BadBodyError` saying why not."""
    try:
        value = _decoder.decode(raw)
    except RecursionError as e:
        raise BadBodyError(
            400, "invalid_json", f"the body nests deeper than {MAX_DEPTH} levels"
        ) from e
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadBodyError(
            400,
            "invalid_json",
            f"the body is not valid JSON in UTF-8 (numbers within 64 bits, no lone "
            f"surrogates): {e}",
        ) from e
    if _too_deep(value):
        raise BadBodyError(400, "invalid_json", f"the body nests deeper than {MAX_DEPTH} levels")
    return value


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class BodyGuard:
    """ASGI middleware: the bodies of ``POST`` requests under ``prefixes``, within limits."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefixes: tuple[str, ...] = ("/v1/", "/a2a"),
        max_body: int = DEFAULT_MAX_BODY,
        timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.prefixes = prefixes
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not path.startswith(self.prefixes)
        ):
            await self.app(scope, receive, send)
            return
        try:
            raw = await self._read(scope, receive)
            parsed = parse_json(raw)
        except BadBodyError as e:
            await _refuse(send, e, json_rpc=path.startswith("/a2a"))
            return
        except _DisconnectedError:
            return
        scope.setdefault("state", {})[PARSED] = parsed
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise BadBodyError(413, "body_too_large", f"the body exceeds {self.max_body} bytes")
        body = bytearray()
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _DisconnectedError
                    body += message.get("body", b"")
                    if len(body) > self.max_body:
                        raise BadBodyError(
                            413, "body_too_large", f"the body exceeds {self.max_body} bytes"
                        )
                    if not message.get("more_body"):
                        return bytes(body)
        except TimeoutError as e:
            raise BadBodyError(
                408, "body_timeout", f"the body did not arrive within {self.timeout:g}s"
            ) from e


class _DisconnectedError(Exception):
    """The client left while sending the body: nobody to answer."""


async def _refuse(send: Send, error: BadBodyError, *, json_rpc: bool) -> None:
    close = [(b"connection", b"close")] if error.status == 408 else []
    if not json_rpc:
        await send_error(send, error.status, str(error), error.code, headers=close)
        return
    code = -32700 if error.code == "invalid_json" else -32600
    payload = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": code, "message": str(error), "data": {"reason": error.code}},
    }
    await send_json(send, error.status, payload, headers=close)


async def send_error(
    send: Send, status: int, message: str, code: str, *, headers: list[tuple[bytes, bytes]]
) -> None:
    """An OpenAI-shaped error answered below the framework (middleware, before routing)."""
    payload = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    await send_json(send, status, payload, headers=headers)


async def send_json(
    send: Send, status: int, payload: Any, *, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
