"""Knowledge behind an MCP tool (issue 17's ``mcpTool`` source), through the runtime as it
runs: a real MCP server whose ``search_policies`` tool searches the policy handbook, the fake
LLM scripted to ask the knowledge tool, the agent process in between.

Asserted exactly: the tool the model is offered (the source's name, its description, a
``query`` argument) while the server's allow-list hides the raw search tool; the arguments
the server received (the query, and ``topK`` as the tool's ``top_k``); the passages the model
read back, each with its citation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, ToolCall, Turn
from tests.support.mcp_servers import McpTestServer
from tests.support.runtime_proc import RuntimeProcess


def knowledge_docs(llm: FakeLLM, mcp: McpTestServer, *, top_k: int) -> list[dict[str, Any]]:
    docs = agent_docs(
        llm_url=llm.base_url,
        mcp=[{"name": "tools", "url": mcp.url}],
        mcp_refs=[{"name": "tools", "tools": ["echo"]}],  # the model sees echo, not the search
    )
    docs[-1]["spec"]["knowledge"] = [
        {
            "name": "handbook",
            "description": "The expense policy handbook: travel, meals, equipment",
            "topK": top_k,
            "mcpTool": {"server": "tools", "tool": "search_policies"},
        }
    ]
    return docs


def chat(runtime: RuntimeProcess, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_mcp_tool_source_answers_with_cited_passages(tmp_path: Path) -> None:
    with McpTestServer(tools=("echo", "search_policies")) as mcp, FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("handbook", {"query": "meals alcohol per day"})),
            Turn.text("Up to 40 EUR a day, no alcohol [handbook:meals.md#0]."),
        )
        path = write_docs(tmp_path / "agent.yaml", knowledge_docs(llm, mcp, top_k=1))
        with RuntimeProcess(config=path) as runtime:
            answer = chat(runtime, "How much can I spend on meals?")
            status = runtime.status()
        # the tool takes a result count: it was asked for topK, not its default of 10
        assert mcp.calls() == {"search_policies:top_k=1": 1}
    assert answer["choices"][0]["message"]["content"].endswith("[handbook:meals.md#0].")
    first, second = llm.requests
    offered = {t["function"]["name"]: t["function"] for t in first.tools}
    assert set(offered) == {"echo", "handbook"}
    assert offered["handbook"]["description"] == (
        "The expense policy handbook: travel, meals, equipment"
    )
    assert offered["handbook"]["parameters"]["required"] == ["query"]
    tool_message = second.messages[-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {
        "source": "handbook",
        "passages": [
            {
                "text": "Up to 40 EUR per person per day; alcohol is not reimbursed.",
                "citation": "[handbook:meals.md#0]",
                "document": "meals.md",
                "chunk": 0,
                "score": 4.0,
            }
        ],
    }
    assert status["knowledge"] == [
        {"name": "handbook", "server": "tools", "tool": "search_policies", "topK": 1}
    ]


def test_top_k_is_honoured(tmp_path: Path) -> None:
    with McpTestServer(tools=("echo", "search_policies")) as mcp, FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("handbook", {"query": "per day hotels flights manager"})),
            Turn.text("done"),
        )
        docs = knowledge_docs(llm, mcp, top_k=2)
        path = write_docs(tmp_path / "agent.yaml", docs)
        with RuntimeProcess(config=path) as runtime:
            chat(runtime, "Summarise the travel and equipment rules.")
            passages = json.loads(llm.requests[1].messages[-1]["content"])["passages"]
            assert len(passages) == 2
            assert [p["citation"] for p in passages] == [
                "[handbook:travel.md#0]",
                "[handbook:meals.md#0]",
            ]
