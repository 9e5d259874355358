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
from tests.support.vector_mcp import VectorMcpServer


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


PARENTAL = "Parental leave lasts 16 weeks for birth parents and 8 weeks for other parents."
FILLER = [
    "quarterly",
    "roadmap",
    "review",
    "budget",
    "vendor",
    "contract",
    "facilities",
    "canteen",
    "parking",
    "badge",
    "printer",
    "meeting",
    "minutes",
    "newsletter",
    "survey",
    "onboarding",
    "archive",
    "catalogue",
    "warehouse",
]


def big_corpus(path: Path) -> Path:
    """Over 1 MiB of chunks (more than a ConfigMap holds), one of them the answer."""
    lines = []
    for i in range(1600):
        words = [FILLER[(i * 7 + j * 3) % len(FILLER)] for j in range(100)]
        lines.append({"document": f"archive-{i:04d}.md", "chunk": i % 5, "text": " ".join(words)})
    lines.insert(1234, {"document": "parental.md", "chunk": 0, "text": PARENTAL})
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def test_a_corpus_too_big_for_a_configmap_comes_from_a_vector_store_behind_mcp(
    tmp_path: Path,
) -> None:
    corpus = big_corpus(tmp_path / "corpus.jsonl")
    assert corpus.stat().st_size > 1 << 20
    with FakeLLM() as llm:
        with VectorMcpServer(corpus=corpus, embeddings_url=llm.base_url) as store:
            # "baby" is in no passage: the vector store finds it by meaning
            llm.script(
                Turn.tool_calls(ToolCall("archive", {"query": "time off after having a baby"})),
                Turn.text("16 weeks [archive:parental.md#0]."),
            )
            docs = agent_docs(llm_url=llm.base_url, mcp=[{"name": "vectors", "url": store.url}])
            docs[-1]["spec"]["knowledge"] = [
                {
                    "name": "archive",
                    "description": "Everything the company ever wrote down",
                    "topK": 2,
                    "mcpTool": {"server": "vectors", "tool": "search_knowledge"},
                }
            ]
            path = write_docs(tmp_path / "agent.yaml", docs)
            with RuntimeProcess(config=path) as runtime:
                chat(runtime, "How long is parental leave when we have a baby?")
            # topK went to the store as the tool's result count
            assert store.calls() == {"search_knowledge:limit=2": 1}
        # the store embedded the corpus (1,601 chunks) and then the one query, nothing else
        embedded = llm.embedded
        assert sum(len(batch) for batch in embedded[:-1]) == 1601
        assert embedded[-1] == ["time off after having a baby"]
    answer = json.loads(llm.requests[1].trailing_tool_results[0]["content"])
    assert answer["source"] == "archive"
    first, second = answer["passages"]
    assert (first["text"], first["citation"]) == (PARENTAL, "[archive:parental.md#0]")
    assert first["score"] > second["score"]
    assert second["document"].startswith("archive-")
