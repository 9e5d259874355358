"""Conversation memory: what a context id remembers, and what of it the model is shown.

A conversation is stored as *turns*: the new user input of one request plus the agent's final
answer (tool calls and their results are not kept: the answer says what they gave, and a
history cut between a tool call and its result is one no model accepts). Older turns may have
been folded into a *summary*. The store (in-process or Redis, behind ``ports.MemoryStore``)
only keeps and hands back; everything else is decided here, with no I/O of its own:

* **new input** — a client that resends the conversation (OpenAI style) is not counted twice:
  the request's messages that repeat the stored ones are dropped (:func:`new_input`);
* **search** — ``recent`` recalls the last ``limit`` turns; ``relevance`` ranks every stored
  turn by BM25 against the question, the latest turn always first (:func:`recall`);
* **compression** — within ``maxTokens`` (summary included), ``truncate`` leaves out the
  turns that do not fit; ``summarize`` first folds the oldest turns into a summary written by
  the agent's model, once, so the stored history stays within budget (:func:`to_fold`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentspec_runtime.spec.agent import MemorySpec

from . import search
from .types import Message

if TYPE_CHECKING:
    from .ports import MemoryStore

MAX_TURNS = 1000
"""Turns a store keeps per conversation (the most ``search.limit`` can ask for)."""
IN_PROCESS = "inMemory"
"""The memory override (local mode) that keeps every agent's memory in its own process."""


@dataclass(frozen=True, slots=True)
class Turn:
    seq: int
    """Position in the conversation, from 1; never reused, also after folding."""
    messages: tuple[Message, ...]
    tokens: int


@dataclass(frozen=True, slots=True)
class Summary:
    text: str
    through: int
    """The seq of the last turn folded into it."""
    tokens: int


@dataclass(frozen=True, slots=True)
class History:
    summary: Summary | None
    turns: tuple[Turn, ...]
    """Stored turns after the summary, oldest first."""


EMPTY = History(None, ())


def conversation_key(*, namespace: str, agent: str, consumer: str | None, context_id: str) -> str:
    """One conversation of one agent for one consumer: another API key cannot read it."""
    identity = json.dumps([namespace, agent, consumer or "", context_id])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def estimate_tokens(messages: Iterable[Message]) -> int:
    """About what a BPE tokenizer counts: 4 ASCII characters or 1 other character a token."""
    return sum(4 + search.estimate_tokens(text_of(message)) for message in messages)


def text_of(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only the text ones are remembered
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _said(message: Message) -> tuple[str, str]:
    return str(message.get("role")), text_of(message)


def new_input(history: History, messages: Sequence[Message]) -> list[Message]:
    """The request's messages minus those that repeat the end of the stored conversation.

    A client that resends the whole conversation sends ``older + stored tail + new``: the
    largest ``p`` where ``messages[:p]`` ends with the stored messages' tail (all of them, or
    as many as ``p``) marks where the new input starts. At least one message stays new.
    """
    if len(messages) < 2 or not history.turns:
        return list(messages)
    stored = [_said(m) for turn in history.turns for m in turn.messages]
    sent = [_said(m) for m in messages]
    for p in range(len(sent) - 1, 0, -1):
        if sent[p - 1] != stored[-1]:
            continue
        n = min(p, len(stored))
        if sent[p - n : p] == stored[-n:]:
            return list(messages[p:])
    return list(messages)


def remembered(messages: Sequence[Message], answer: str) -> list[Message]:
    """What one exchange leaves in memory: the input's user/assistant text, then the answer."""
    kept: list[Message] = [
        {"role": m["role"], "content": text}
        for m in messages
        if m.get("role") in ("user", "assistant") and (text := text_of(m))
    ]
    kept.append({"role": "assistant", "content": answer})
    return kept


# -- search -------------------------------------------------------------------------------


def recall(history: History, *, question: str, spec: MemorySpec) -> list[Turn]:
    """The turns shown to the model, oldest first: chosen by the search strategy, then kept
    within the token budget (the summary's tokens count against it)."""
    turns = history.turns
    if not turns:
        return []
    if spec.search.strategy == "relevance":
        scores = search.bm25_scores(
            question, [" ".join(text_of(m) for m in t.messages) for t in turns]
        )
        latest = len(turns) - 1
        matching = sorted(
            (i for i in range(latest) if scores[i] > 0), key=lambda i: (-scores[i], -i)
        )
        order = [latest, *matching]
    else:
        order = list(range(len(turns) - 1, -1, -1))
    compress = spec.compression.strategy != "none"
    budget = spec.compression.max_tokens - (history.summary.tokens if history.summary else 0)
    chosen: list[int] = []
    for i in order[: spec.search.limit]:
        if compress and turns[i].tokens > budget:
            if spec.search.strategy == "recent":
                break  # recent history stays contiguous: nothing older than a gap
            continue
        budget -= turns[i].tokens
        chosen.append(i)
    return [turns[i] for i in sorted(chosen)]


# -- summarize ----------------------------------------------------------------------------

SUMMARY_INSTRUCTIONS = (
    "You maintain the memory of a conversation between a user and an AI assistant. Write a "
    "concise summary of the conversation below that keeps every fact, name, number, decision "
    "and open question the assistant may need later. Answer with the summary only."
)
SUMMARY_PREFIX = "Summary of the earlier conversation:"


def turns_needed(spec: MemorySpec) -> int | None:
    """How many of the latest stored turns a request needs (None: all of them): recent
    search only ever shows ``limit`` turns, but relevance ranks them all and summarize
    weighs them all against the budget."""
    if spec.search.strategy == "recent" and spec.compression.strategy != "summarize":
        return spec.search.limit
    return None


def to_fold(history: History, *, spec: MemorySpec) -> list[Turn]:
    """The oldest turns to fold into the summary (summarize strategy), or none.

    Nothing is folded while the summary and the stored turns fit in ``maxTokens``; past it,
    the oldest turns are folded until the rest fits in half of it (so folding happens once
    every few turns, not on every one). The latest turn is never folded.
    """
    if spec.compression.strategy != "summarize" or len(history.turns) < 2:
        return []
    budget = spec.compression.max_tokens
    stored = sum(t.tokens for t in history.turns)
    if stored + (history.summary.tokens if history.summary else 0) <= budget:
        return []
    folded: list[Turn] = []
    for turn in history.turns[:-1]:
        if stored <= budget // 2:
            break
        folded.append(turn)
        stored -= turn.tokens
    return folded


def summary_request(previous: Summary | None, turns: Sequence[Turn]) -> list[Message]:
    """The messages asking the model for the new summary."""
    lines = []
    if previous is not None:
        lines.append(f"Earlier summary: {previous.text}")
    for turn in turns:
        lines += [f"{m['role']}: {text_of(m)}" for m in turn.messages]
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS},
        {"role": "user", "content": "\n".join(lines)},
    ]


def with_summary(prompt: str, summary: Summary | None) -> str:
    """The system prompt with the summary after it (one system message: some chat templates
    reject a second)."""
    if summary is None:
        return prompt
    return f"{prompt}\n\n{SUMMARY_PREFIX}\n{summary.text}"


def describe(spec: MemorySpec, store: MemoryStore | None) -> dict[str, Any]:
    """Memory as /status shows it."""
    if store is None:
        return {"type": "none"}
    return {
        "location": store.location,
        "compression": spec.compression.model_dump(by_alias=True),
        "search": spec.search.model_dump(by_alias=True),
        "ttlSeconds": spec.ttl_seconds,
    }
