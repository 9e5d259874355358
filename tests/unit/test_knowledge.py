"""Reading a retrieval tool's answer as passages with citations (engine/knowledge.py).

What goes in: answers in the shapes retrieval MCP servers give (a JSON list, an object with
``results``, plain strings, plain text); what is asserted: the passages, their documents,
positions and scores, ``topK``, and the JSON the model reads.
"""

from __future__ import annotations

import json

from agentspec_runtime.engine.knowledge import Passage, passages_from, render


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
