"""Reading a retrieval tool's answer as passages with citations (engine/knowledge.py).

What goes in: answers in the shapes retrieval MCP servers give (a JSON list, an object with
``results``, plain strings, plain text); what is asserted: the passages, their documents,
positions and scores, ``topK``, and the JSON the model reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from agentspec_runtime.engine.errors import ToolError
from agentspec_runtime.engine.knowledge import McpKnowledgeTool, Passage, passages_from, render
from agentspec_runtime.spec.agent import KnowledgeSource


def test_an_object_with_results_gives_passages_with_their_documents_and_scores() -> None:
    answer = json.dumps(
        {
            "results": [
                {"page_content": "Leave is 25 days.", "metadata": {}, "source": "leave.md",
                 "position": 3, "similarity": 0.91},
                {"text": "Sick leave needs a note.", "id": "doc-7", "score": 0.5},
                {"unrelated": True},
            ]
        }
    )  # fmt: skip
    assert passages_from(answer, document="search", top_k=5) == [
        Passage("Leave is 25 days.", "leave.md", 3, 0.91),
        Passage("Sick leave needs a note.", "doc-7", 1, 0.5),
    ]


def test_a_list_of_strings_is_one_passage_each_and_top_k_cuts() -> None:
    answer = json.dumps(["first", "second", "third"])
    assert passages_from(answer, document="kb", top_k=2) == [
        Passage("first", "kb", 0),
        Passage("second", "kb", 1),
    ]


def test_plain_text_is_one_passage_and_nothing_is_none() -> None:
    assert passages_from("Just an answer.", document="kb", top_k=3) == [
        Passage("Just an answer.", "kb", 0)
    ]
    assert passages_from("   ", document="kb", top_k=3) == []
    assert passages_from("[]", document="kb", top_k=3) == []
    # JSON the reader does not recognise is still what the tool said
    assert passages_from('{"answer": 42}', document="kb", top_k=3) == [
        Passage('{"answer": 42}', "kb", 0)
    ]


def test_the_model_reads_citations_it_can_quote() -> None:
    rendered = json.loads(render("handbook", [Passage("Meals: 40 EUR.", "meals.md", 0, 2.0)]))
    assert rendered == {
        "source": "handbook",
        "passages": [
            {
                "text": "Meals: 40 EUR.",
                "citation": "[handbook:meals.md#0]",
                "document": "meals.md",
                "chunk": 0,
                "score": 2.0,
            }
        ],
    }
    assert "score" not in json.loads(render("kb", [Passage("x", "d", 1)]))["passages"][0]


def test_one_block_per_result_is_read_as_the_list() -> None:
    """A tool returning a list of objects sends one content block per object, joined a line
    each by the MCP adapter."""
    answer = '{"text": "a", "score": 2}\n{"text": "b", "score": 1}'
    assert passages_from(answer, document="kb", top_k=1) == [Passage("a", "kb", 0, 2.0)]


def test_hostile_answers_never_raise() -> None:
    deep = "[" * 5000 + "]" * 5000
    assert passages_from(deep, document="kb", top_k=2) == [Passage(deep, "kb", 0)]
    odd = json.dumps([{"text": "x", "score": "NaN"}, {"text": "y", "score": 10**400}])
    assert passages_from(odd, document="kb", top_k=2) == [
        Passage("x", "kb", 0, None),
        Passage("y", "kb", 1, None),
    ]
    assert passages_from(
        json.dumps([{"text": ["parts"], "content": "c"}]), document="kb", top_k=1
    ) == [Passage("c", "kb", 0)]


def test_a_long_answer_stays_whole_json_within_the_budget() -> None:
    passages = [Passage("x" * 50_000, "d", i) for i in range(3)]
    rendered = json.loads(render("kb", passages))
    assert all(p["truncated"] for p in rendered["passages"])
    assert sum(len(p["text"]) for p in rendered["passages"]) <= 60_000


class Connection:
    """An MCP connection double: one listed tool, the calls it got."""

    def __init__(self, schemas: dict[str, dict[str, Any]], *, connected: bool = True) -> None:
        self.schemas = schemas
        self.connected = connected
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def tools(self) -> list[Any]:
        return []

    def input_schema(self, name: str) -> dict[str, Any] | None:
        return self.schemas.get(name)

    async def call(
        self, name: str, arguments: dict[str, Any], *, headers: Mapping[str, str]
    ) -> str:
        if not self.connected:
            raise ToolError("MCP server 'kb' is not connected")
        self.calls.append((name, arguments))
        return json.dumps(["p1", "p2", "p3"])

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected}

    async def aclose(self) -> None:
        return None


def _source(top_k: int = 2) -> KnowledgeSource:
    return KnowledgeSource.model_validate(
        {"name": "kb", "topK": top_k, "mcpTool": {"server": "srv", "tool": "find"}}
    )


@pytest.mark.parametrize(
    ("schema", "sent"),
    [
        ({"properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}},
         {"query": "q", "limit": 2}),
        ({"properties": {"q": {"type": "string"}}, "required": ["q"]}, {"q": "q"}),
        ({"properties": {"query": {"type": "string"}, "k": {"type": "integer", "maximum": 1}}},
         {"query": "q", "k": 1}),
        ({"properties": {"query": {"type": "string"}, "limit": {"type": "string"}}},
         {"query": "q"}),
        ({"properties": {"query": True}}, {"query": "q"}),
    ],
)  # fmt: skip
async def test_the_query_and_count_go_under_the_tools_own_names(
    schema: dict[str, Any], sent: dict[str, Any]
) -> None:
    connection = Connection({"find": schema})
    tool = McpKnowledgeTool(_source(), connection)
    answer = json.loads(await tool.call({"query": "q"}, headers={}, context_id="c"))
    assert connection.calls == [("find", sent)]
    assert [p["text"] for p in answer["passages"]] == ["p1", "p2"]


async def test_a_missing_tool_or_server_is_a_tool_error_for_the_model() -> None:
    tool = McpKnowledgeTool(_source(), Connection({"other": {}}))
    with pytest.raises(ToolError, match="MCP server 'srv' has no tool 'find'"):
        await tool.call({"query": "q"}, headers={}, context_id="c")
    down = McpKnowledgeTool(_source(), Connection({}, connected=False))
    with pytest.raises(ToolError, match="not connected"):
        await down.call({"query": "q"}, headers={}, context_id="c")
    with pytest.raises(ToolError, match="non-empty string"):
        await down.call({"query": " "}, headers={}, context_id="c")
