"""Knowledge sources as retrieval tools: the model asks a question, the source answers with at
most ``topK`` passages, each with a citation it can quote.

* ``mcpTool``: a named tool of a listed MCP server, called with the query; its answer
  normalised into passages (:class:`McpKnowledgeTool`).
* ``partner``: the partner agent asked over A2A; its answer is one passage whose document is
  the partner (:class:`PartnerKnowledgeTool`).
* ``documents``: a ConfigMap's keys, chunked and indexed in-process
  (:class:`DocumentsKnowledgeTool` over :class:`~.documents.DocumentsKnowledge`).

What the model gets back is JSON::

    {"source": "policies", "passages": [
        {"text": "...", "citation": "[policies:leave.md#2]", "document": "leave.md",
         "chunk": 2, "score": 0.83}, ...]}

An MCP tool's answer is read, in order, as: a JSON list of passages (or an object holding one
under ``passages``, ``results``, ``documents``, ``matches``, ``hits`` or ``items``), each a
string or an object whose text is in ``text``, ``content``, ``passage``, ``chunk_text`` or
``page_content``, with its document in ``document``, ``source``, ``id``, ``uri``, ``url``,
``title`` or ``path``, its position in ``chunk``, ``position`` or ``index`` and its score in
``score``, ``similarity`` or ``relevance``; failing that, the whole answer is one passage. The
``execute_tool`` span records how many passages came back and their scores.

Must not: import an adapter (connections arrive through ``ports``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace

from agentspec_runtime.spec.agent import KnowledgeSource

from .documents import DocumentsKnowledge
from .errors import ToolError
from .ports import McpConnection, Tool
from .types import ToolResult, ToolSpec

__all__ = [
    "DocumentsKnowledgeTool",
    "McpKnowledgeTool",
    "PartnerKnowledgeTool",
    "Passage",
    "passages_from",
    "render",
]

_LISTS = ("passages", "results", "documents", "matches", "hits", "items", "result")
_TEXT = ("text", "content", "passage", "chunk_text", "page_content")
_DOCUMENT = ("document", "source", "id", "uri", "url", "title", "path")
_POSITION = ("chunk", "position", "index")
_SCORE = ("score", "similarity", "relevance")
_TOP_K = ("top_k", "topK", "limit", "k", "n_results", "max_results")
"""Argument names under which a retrieval tool's schema may take the number of results."""
PASSAGES = "agentspec.knowledge.passages"
SCORES = "agentspec.knowledge.scores"
TEXT_BUDGET = 60_000
"""Characters of passage text one answer carries: under the loop's cut of a tool result
(64,000), so the JSON the model reads is always whole."""


@dataclass(frozen=True)
class Passage:
    text: str
    document: str
    chunk: int
    score: float | None = None


def _first(item: Mapping[str, Any], keys: tuple[str, ...], kinds: tuple[type, ...]) -> Any:
    """The first of ``keys`` holding a non-empty value of one of ``kinds`` (bools are not
    numbers here)."""
    for key in keys:
        value = item.get(key)
        if isinstance(value, kinds) and not isinstance(value, bool) and value != "":
            return value
    return None


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return score if math.isfinite(score) else None


def _passage(item: Any, *, default_document: str, position: int) -> Passage | None:
    if isinstance(item, str):
        return Passage(item, default_document, position) if item.strip() else None
    if not isinstance(item, Mapping):
        return None
    text = _first(item, _TEXT, (str,))
    if text is None or not text.strip():
        return None
    document = _first(item, _DOCUMENT, (str, int))
    chunk = _first(item, _POSITION, (int,))
    score = _first(item, _SCORE, (int, float))
    return Passage(
        text=text,
        document=str(document) if document is not None else default_document,
        chunk=chunk if chunk is not None else position,
        score=_score(score) if score is not None else None,
    )


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def passages_from(answer: str, *, document: str, top_k: int) -> list[Passage]:
    """An MCP tool's answer as at most ``top_k`` passages (see the module doc). An answer of
    several content blocks arrives one block a line (a tool returning a list of objects gets
    one block per object): lines that are each JSON are read as that list."""
    value: Any = _json(answer)
    if value is None and "\n" in answer:
        lines = [_json(line) for line in answer.splitlines() if line.strip()]
        if lines and all(isinstance(v, Mapping | str) for v in lines):
            value = lines
    if isinstance(value, Mapping):
        value = next((value[k] for k in _LISTS if isinstance(value.get(k), list)), None)
    if isinstance(value, list):
        found = [
            p
            for i, item in enumerate(value)
            if (p := _passage(item, default_document=document, position=i)) is not None
        ]
        if found or not value:
            return found[:top_k]
    return [Passage(answer, document, 0)] if answer.strip() else []


def render(source: str, passages: list[Passage]) -> str:
    """The JSON the model reads; each passage's text is cut to its share of
    ``TEXT_BUDGET`` (marked ``"truncated": true``)."""
    share = TEXT_BUDGET // max(1, len(passages))
    return json.dumps(
        {
            "source": source,
            "passages": [
                {
                    "text": p.text[:share],
                    **({"truncated": True} if len(p.text) > share else {}),
                    "citation": f"[{source}:{p.document}#{p.chunk}]",
                    "document": p.document,
                    "chunk": p.chunk,
                    **({"score": p.score} if p.score is not None else {}),
                }
                for p in passages
            ],
        },
        ensure_ascii=False,
    )


def _query_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "What to look for, in words likely to appear in the passages",
            }
        },
        "required": ["query"],
    }


def _query(arguments: Mapping[str, Any]) -> str:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("give the question as a non-empty string in 'query'")
    return query


def _recorded(source: KnowledgeSource, passages: list[Passage]) -> str:
    """The answer the model reads; the ``execute_tool`` span gets the count and scores."""
    span = trace.get_current_span()
    span.set_attribute(PASSAGES, len(passages))
    scores = [p.score for p in passages if p.score is not None]
    if scores:
        span.set_attribute(SCORES, scores)
    return render(source.name, passages)


class _KnowledgeTool:
    def __init__(self, source: KnowledgeSource, default_description: str) -> None:
        self._source = source
        self.spec = ToolSpec(
            name=source.name,
            description=source.description or default_description,
            parameters=_query_schema(),
            # a retrieval reads (an mcpTool's tool must be free of side effects, see
            # docs/runtime.md): a durable task may repeat it
            retry_safe=True,
        )

    @property
    def source(self) -> Literal["knowledge"]:
        return "knowledge"

    @property
    def target(self) -> str:
        return self._source.name


class McpKnowledgeTool(_KnowledgeTool):
    """The ``mcpTool`` source: the named tool of a listed MCP server, called with the query
    (and ``topK`` when the tool's schema takes a result count), even when the server's
    ``tools`` allow-list hides that tool from the model itself."""

    def __init__(self, source: KnowledgeSource, connection: McpConnection) -> None:
        assert source.mcp_tool is not None
        super().__init__(
            source, f"Search the knowledge source {source.name!r}; returns cited passages."
        )
        self._server = source.mcp_tool.server
        self._tool = source.mcp_tool.tool
        self._connection = connection

    def _arguments(self, query: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        arguments: dict[str, Any] = {"query": query}
        raw = schema.get("properties")
        properties = {
            name: prop
            for name, prop in (raw.items() if isinstance(raw, Mapping) else ())
            if isinstance(name, str) and isinstance(prop, Mapping)
        }
        if "query" not in properties:
            # a tool whose one required string argument has another name: use that name
            required = schema.get("required")
            strings = [
                name
                for name in (required if isinstance(required, list) else [])
                if properties.get(name, {}).get("type") == "string"
            ]
            if len(strings) == 1:
                arguments = {strings[0]: query}
        for name in _TOP_K:
            prop = properties.get(name)
            if prop is not None and prop.get("type", "integer") in ("integer", "number"):
                count = self._source.top_k
                if isinstance(prop.get("maximum"), int | float):
                    count = min(count, int(prop["maximum"]))
                if isinstance(prop.get("minimum"), int | float):
                    count = max(count, int(prop["minimum"]))
                arguments[name] = count
                break
        return arguments

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> str:
        query = _query(arguments)
        schema = self._connection.input_schema(self._tool)
        if schema is None and self._connection.status().get("connected"):
            raise ToolError(
                f"knowledge source {self._source.name!r}: MCP server {self._server!r} has no "
                f"tool {self._tool!r}"
            )
        arguments = self._arguments(query, schema or {})
        answer = await self._connection.call(self._tool, arguments, headers=headers)
        passages = passages_from(answer, document=self._tool, top_k=self._source.top_k)
        return _recorded(self._source, passages)


class PartnerKnowledgeTool(_KnowledgeTool):
    """The ``partner`` source: the question goes to the partner agent over A2A (its tool, so
    identity, hop limit, breaker and usage are the partner's); its answer is one passage
    whose document is the partner's name."""

    def __init__(self, source: KnowledgeSource, partner: Tool) -> None:
        assert source.partner is not None
        super().__init__(
            source,
            f"Ask the agent {source.partner.name!r}, which knows about {source.name!r}; "
            "returns its answer as a cited passage.",
        )
        self._partner = partner
        self._name = source.partner.name

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> ToolResult:
        query = _query(arguments)
        answer = await self._partner.call(
            {"message": query}, headers=headers, context_id=context_id, call_key=call_key
        )
        result = answer if isinstance(answer, ToolResult) else ToolResult(answer)
        passages = [Passage(result.content, self._name, 0)] if result.content.strip() else []
        return ToolResult(_recorded(self._source, passages), result.usage)


class DocumentsKnowledgeTool(_KnowledgeTool):
    """The ``documents`` source: its in-process index, BM25 fused with dense vectors when the
    source embeds; each passage's score is the fused (else the BM25) score."""

    def __init__(self, source: KnowledgeSource, knowledge: DocumentsKnowledge) -> None:
        assert source.documents is not None
        super().__init__(
            source, f"Search the documents of {source.name!r}; returns cited passages."
        )
        self._knowledge = knowledge

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> str:
        hits = await self._knowledge.search(_query(arguments), self._source.top_k)
        passages = [
            Passage(h.chunk.text, h.chunk.document, h.chunk.position, h.score) for h in hits
        ]
        return _recorded(self._source, passages)
