"""Knowledge sources as retrieval tools: the model asks a question, the source answers with at
most ``topK`` passages, each with a citation it can quote.

Built here: the ``mcpTool`` source (a named tool of a listed MCP server, called with the
query; its answer normalised into passages). Not built yet, and refused by
``spec.resolved.unsupported_fields``: the ``partner`` and ``documents`` sources.

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

Must not: import an adapter (the MCP connection arrives through ``ports``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace

from agentspec_runtime.spec.agent import KnowledgeSource

from .errors import ToolError
from .ports import McpConnection
from .types import ToolSpec

__all__ = ["McpKnowledgeTool", "Passage", "passages_from", "render"]

_LISTS = ("passages", "results", "documents", "matches", "hits", "items")
_TEXT = ("text", "content", "passage", "chunk_text", "page_content")
_DOCUMENT = ("document", "source", "id", "uri", "url", "title", "path")
_POSITION = ("chunk", "position", "index")
_SCORE = ("score", "similarity", "relevance")
_TOP_K = ("top_k", "topK", "limit", "k", "n_results", "max_results")
"""Argument names under which a retrieval tool's schema may take the number of results."""
PASSAGES = "agentspec.knowledge.passages"
SCORES = "agentspec.knowledge.scores"


@dataclass(frozen=True)
class Passage:
    text: str
    document: str
    chunk: int
    score: float | None = None


def _first(item: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((item[k] for k in keys if item.get(k) not in (None, "")), None)


def _passage(item: Any, *, default_document: str, position: int) -> Passage | None:
    if isinstance(item, str):
        return Passage(item, default_document, position) if item.strip() else None
    if not isinstance(item, Mapping):
        return None
    text = _first(item, _TEXT)
    if not isinstance(text, str) or not text.strip():
        return None
    document = _first(item, _DOCUMENT)
    chunk = _first(item, _POSITION)
    score = _first(item, _SCORE)
    number = isinstance(score, int | float) and not isinstance(score, bool)
    return Passage(
        text=text,
        document=str(document) if document is not None else default_document,
        chunk=chunk if isinstance(chunk, int) and not isinstance(chunk, bool) else position,
        score=float(score) if number else None,
    )


def passages_from(answer: str, *, document: str, top_k: int) -> list[Passage]:
    """An MCP tool's answer as at most ``top_k`` passages (see the module doc)."""
    try:
        value: Any = json.loads(answer)
    except ValueError:
        value = None
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
    return json.dumps(
        {
            "source": source,
            "passages": [
                {
                    "text": p.text,
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


class McpKnowledgeTool:
    """The ``mcpTool`` source: the named tool of a listed MCP server, called with the query
    (and ``topK`` when the tool's schema takes a result count), even when the server's
    ``tools`` allow-list hides that tool from the model itself."""

    def __init__(self, source: KnowledgeSource, connection: McpConnection) -> None:
        assert source.mcp_tool is not None
        self._source = source
        self._server = source.mcp_tool.server
        self._tool = source.mcp_tool.tool
        self._connection = connection
        self.spec = ToolSpec(
            name=source.name,
            description=source.description
            or f"Search the knowledge source {source.name!r}; returns cited passages.",
            parameters=_query_schema(),
            retry_safe=True,  # a retrieval reads; a durable task may repeat it
        )

    @property
    def source(self) -> Literal["knowledge"]:
        return "knowledge"

    def _arguments(self, query: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"query": query}
        schema = self._connection.input_schema(self._tool)
        properties = (schema or {}).get("properties") or {}
        if "query" not in properties:
            # a tool whose one required string argument has another name: use that name
            required = [
                name
                for name in (schema or {}).get("required") or []
                if (properties.get(name) or {}).get("type") == "string"
            ]
            if len(required) == 1:
                arguments = {required[0]: query}
        count = next((name for name in _TOP_K if name in properties), None)
        if count is not None:
            arguments[count] = self._source.top_k
        return arguments

    async def call(
        self,
        arguments: dict[str, Any],
        *,
        headers: Mapping[str, str],
        context_id: str,
        call_key: str | None = None,
    ) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("give the question as a non-empty string in 'query'")
        answer = await self._connection.call(self._tool, self._arguments(query), headers=headers)
        passages = passages_from(answer, document=self._tool, top_k=self._source.top_k)
        span = trace.get_current_span()
        span.set_attribute(PASSAGES, len(passages))
        scores = [p.score for p in passages if p.score is not None]
        if scores:
            span.set_attribute(SCORES, scores)
        return render(self._source.name, passages)
