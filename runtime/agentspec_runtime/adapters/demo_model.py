"""The offline demo model: deterministic answers, tools and partners by simple rules, no key.

Used only when neither the AgentSpec (``model.baseUrl``) nor ``OPENAI_BASE_URL`` names an
endpoint, and always says so: every answer starts with ``[offline demo model]``, and the
runtime logs it at start. It lets the README demo run on a fresh machine with no key.

Rules, in order:
0. asked for a summary of a conversation (memory compression): the user's questions in it;
   asked what the user asked before: the earlier questions of the conversation (memory);
1. after tool results: report them (``<tool> says: <result>``; a knowledge source's passages
   as ``According to <citation>: <passage>``, the best one quoted);
2. a tool whose name appears in the user's text is called — for a partner with the user's
   text as ``message``, for an MCP tool with ``key=value`` pairs from the text;
3. otherwise a tool whose description shares a keyword with the user's text (``leave`` finds
   the agent that "answers questions about leave") is called the same way;
4. otherwise the agent answers from its system prompt's first sentence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agentspec_runtime.engine.memory import SUMMARY_INSTRUCTIONS, SUMMARY_PREFIX
from agentspec_runtime.engine.types import (
    Message,
    ModelParams,
    ModelTurn,
    OnDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

LABEL = "[offline demo model]"
_WORD = re.compile(r"[a-z][a-z0-9_-]{2,}")
_ASKED_BEFORE = re.compile(
    r"\bwhat (?:did|have) i (?:just |already )?(?:ask|said|say)|"
    r"\b(?:which|what) questions? (?:did|have) i\b|\bmy (?:last|previous|first) question\b",
    re.IGNORECASE,
)
_PAIR = re.compile(r"""(\w+)=("(?:[^"\\]|\\.)*"|'[^']*'|\S+)""")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "about",
        "with",
        "what",
        "how",
        "many",
        "much",
        "does",
        "this",
        "that",
        "you",
        "your",
        "are",
        "can",
        "questions",
        "answers",
        "agent",
        "ask",
        "tool",
        "from",
        "into",
        "have",
        "has",
        "please",
        "tell",
        "when",
        "where",
        "who",
        "which",
    ]
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> set[str]:
    # a crude stem (expenses ~ expense) is enough for a demo's keyword routing
    return {w.removesuffix("s") for w in _WORD.findall(text.lower()) if w not in _STOP}


def _arguments(spec: ToolSpec, user: str) -> dict[str, Any]:
    properties = dict(spec.parameters.get("properties") or {})
    if "message" in properties:
        return {"message": user}
    args: dict[str, Any] = {}
    for key, raw in _PAIR.findall(user):
        if key in properties:
            try:
                args[key] = json.loads(raw.strip("'"))
            except json.JSONDecodeError:
                args[key] = raw.strip("'\"")
    required = list(spec.parameters.get("required") or [])
    if not args and len(required) == 1 and properties.get(required[0], {}).get("type") == "string":
        args[required[0]] = user  # one text parameter: the question itself
    return args


def _choose(tools: list[ToolSpec], user: str) -> ToolSpec | None:
    lowered = user.lower()
    named = [
        t for t in tools if re.search(rf"(?<![\w-]){re.escape(t.name.lower())}(?![\w-])", lowered)
    ]
    if named:
        return min(named, key=lambda t: lowered.index(t.name.lower()))
    asked = _words(user)
    scored = [(len(asked & _words(t.description)), t) for t in tools]
    best = max(scored, key=lambda pair: pair[0], default=(0, None))
    return best[1] if best[0] > 0 else None


def _cited(content: str) -> str | None:
    """A knowledge source's answer (``{"source", "passages"}``) as a cited sentence."""
    try:
        value = json.loads(content)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {"source", "passages"}:
        return None
    passages = [p for p in value["passages"] if isinstance(p, dict) and "citation" in p]
    if not passages:
        return f"{value['source']} has nothing on that."
    best = passages[0]
    text = " ".join(str(best.get("text", "")).split())
    return f"According to {best['citation']}: {text}"


def _from_memory(messages: list[Message]) -> str | None:
    """Rule 0: a summary of the conversation, or what the user asked before."""
    if messages and _text(messages[0].get("content")) == SUMMARY_INSTRUCTIONS:
        asked = [
            line.removeprefix("user: ")
            for line in _text(messages[-1].get("content")).splitlines()
            if line.startswith(("user: ", "Earlier summary: "))
        ]
        return "The user asked: " + " | ".join(asked)
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if not users or not _ASKED_BEFORE.search(users[-1]):
        return None
    system = _text(messages[0].get("content")) if messages[0].get("role") == "system" else ""
    summary = system.partition(f"{SUMMARY_PREFIX}\n")[2]
    earlier = ([summary] if summary else []) + users[:-1]
    if not earlier:
        return f"{LABEL} This is the first question of our conversation."
    return f"{LABEL} Earlier in this conversation you asked: " + " | ".join(earlier)


def _tokens(text: str) -> int:
    return len(text.split())


class DemoModel:
    """A ``ModelClient`` that needs no network."""

    endpoint = "offline demo model (no model endpoint configured)"

    async def complete(
        self,
        *,
        params: ModelParams,
        messages: list[Message],
        tools: list[ToolSpec],
        on_delta: OnDelta | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelTurn:
        del headers
        prompt_tokens = sum(_tokens(_text(m.get("content"))) for m in messages)
        remembered = _from_memory(messages)
        if remembered is not None:
            return await self._answer(remembered, params, prompt_tokens, on_delta)
        results: list[Message] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.insert(0, message)
        if results:
            names = {
                c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()
            }
            text = f"{LABEL} " + " | ".join(
                _cited(_text(r.get("content")))
                or f"{names.get(r.get('tool_call_id'), 'the tool')} says: "
                f"{_text(r.get('content')).removeprefix(LABEL).strip()}"
                for r in results
            )
            return await self._answer(text, params, prompt_tokens, on_delta)
        user = next(
            (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        tool = _choose(tools, user)
        if tool is not None:
            call = ToolCall(
                id=f"call_{len(messages)}",
                name=tool.name,
                arguments=json.dumps(_arguments(tool, user)),
            )
            return ModelTurn(
                content=None,
                tool_calls=(call,),
                model=params.model,
                usage=Usage(prompt_tokens, 1 + _tokens(call.arguments)),
                finish_reason="tool_calls",
            )
        system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
        first = re.split(r"(?<=[.!?])\s", system.strip(), maxsplit=1)[0] if system else ""
        text = f"{LABEL} {first} You asked: {user}".replace("  ", " ")
        return await self._answer(text, params, prompt_tokens, on_delta)

    @staticmethod
    async def _answer(
        text: str, params: ModelParams, prompt_tokens: int, on_delta: OnDelta | None
    ) -> ModelTurn:
        if on_delta is not None:
            for piece in re.findall(r"\S+\s*", text):
                await on_delta(piece)
        return ModelTurn(
            content=text, model=params.model, usage=Usage(prompt_tokens, _tokens(text))
        )

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "circuit": "closed"}

    async def aclose(self) -> None:
        return None
