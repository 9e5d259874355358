"""The one allowed test double: a scripted OpenAI-compatible chat-completions HTTP server.

Owns the fake model endpoint every engine test and benchmark talks to instead of a real
model: ``POST /v1/chat/completions`` (JSON and SSE streaming, with tool calls, usage, HTTP
errors, latency and dropped connections), ``POST /v1/moderations`` (OpenAI's shape; flags
the words of ``MODERATION_WORDS``, records every input: ``moderated``),
``POST /v1/embeddings`` (deterministic vectors that know synonyms, see ``embeddings``;
records every request's inputs: ``embedded``) and ``GET /v1/models``, served by uvicorn from a
plain ASGI app, in-process on a background thread (:class:`FakeLLM`) or as a child process
(``python -m tests.support.fake_llm --port N``, driven by :class:`FakeLLMProcess`).

Strict by default: the test scripts the traffic it expects and the fake fails the test when
the traffic differs.

* **steps** — :class:`Turn` values (or functions of the request, :class:`Responder`) queued
  with ``script(...)`` answer the next requests, one each, in order. When the ``with`` block
  ends cleanly, every step must have been requested and no request may have come that no
  step answered (``assert_traffic_as_scripted()``); an unscripted request gets HTTP 500
  "script exhausted" at once.
* **responder** — opt-in for open-ended traffic (load, reload under load, rule-based
  partners): ``FakeLLM(responder=echo)`` answers whatever the script does not. Say why at the
  call site. :func:`echo` and :func:`tool_then_answer` are ready-made.
* **hold** — ``hold()``/``release()`` keep answers back while requests are recorded, so a
  test can keep requests in flight deterministically (across a reload, say).
* **usage** — deterministic: ``prompt_tokens`` is :func:`prompt_tokens` of the request's
  messages (whitespace-separated words of their text), ``completion_tokens`` is
  :func:`completion_tokens` of the turn; a turn may override both with ``with_usage``.

What a test asserts: ``requests`` (every chat request received, parsed body plus lower-cased
headers), ``wait_for_requests(n)`` for engines running in other threads or processes.

Admin endpoints (used by :class:`FakeLLMProcess`, handy with curl): ``POST /_fake/script``
``{"turns": [...]}``, ``GET /_fake/requests``, ``POST /_fake/reset``, ``POST /_fake/hold``,
``POST /_fake/release``, ``GET /_fake/health`` (pending steps and problems).

Must not: call anything outside the test machine, or answer a request the test did not
account for without saying so.
"""

from __future__ import annotations

from .servers import FakeLLM, FakeLLMProcess
from .turns import (
    DEFAULT_MODEL,
    RESPONDERS,
    ChatRequest,
    HttpError,
    Responder,
    Step,
    ToolCall,
    Turn,
    completion_tokens,
    count_tokens,
    echo,
    parse_call_arguments,
    prompt_tokens,
    tool_then_answer,
)

__all__ = [
    "DEFAULT_MODEL",
    "RESPONDERS",
    "ChatRequest",
    "FakeLLM",
    "FakeLLMProcess",
    "HttpError",
    "Responder",
    "Step",
    "ToolCall",
    "Turn",
    "completion_tokens",
    "count_tokens",
    "echo",
    "parse_call_arguments",
    "prompt_tokens",
    "tool_then_answer",
]
