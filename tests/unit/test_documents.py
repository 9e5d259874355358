"""The documents index (engine/documents.py): hybrid retrieval on a labelled set, and builds.

The labelled set: ten policy documents, each with a form or ticket code, and twelve questions
with the one document that answers each. Half ask in other words than the document's
(holiday for vacation, unwell for ill): only the embeddings find those. Half ask for a code
(HR-20, IT-404): the fake embeddings model is blind to codes, as real ones blur them, so only
BM25 finds those. Recall@2 over the set (asserted below, and in bench/RESULTS.md):
BM25 7/12 (it also finds "wages paid" by "paid"), dense 6/12, fused 12/12.

The embedder is the fake LLM's embeddings model called in-process (the HTTP path is tested
through the runtime in tests/integration/test_runtime_documents.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from agentspec_runtime.engine.documents import BuildReport, DocumentIndex, build_index
from agentspec_runtime.engine.errors import ToolError
from tests.support.fake_llm.embeddings import embed

CORPUS = {
    "vacation.md": "Employees receive 28 vacation days each year; request them in the portal "
    "under form HR-11.",
    "sick.md": "If you are ill, notify your manager before ten; a doctor's certificate is "
    "required from day four (form HR-12).",
    "parental.md": "Parental leave lasts 16 weeks for birth parents and 8 weeks for other "
    "parents; file form HR-20.",
    "remote.md": "Telework is allowed up to three days a week; register your address with "
    "form HR-31.",
    "travel.md": "Book flights in economy and hotels under 150 EUR a night through the travel "
    "desk, code TRV-2.",
    "expenses.md": "Claims need receipts and must be filed within 30 days using form EXP-7.",
    "laptop.md": "Each employee gets a laptop; lost hardware must be reported to IT within one "
    "day, ticket IT-404.",
    "security.md": "Never share passwords; report phishing emails to the security team via SEC-9.",
    "payroll.md": "Salary is paid on the 25th of every month; payslips are in the HR portal, "
    "reference PAY-3.",
    "notice.md": "The notice period after resignation is one month in the first year, then "
    "three months (form HR-50).",
}
PARAPHRASES = [
    ("how much holiday do I get", "vacation.md"),
    ("I feel unwell, what should I do", "sick.md"),
    ("time off after having a baby", "parental.md"),
    ("can I wfh", "remote.md"),
    ("when are wages paid", "payroll.md"),
    ("I want to quit", "notice.md"),
]
CODES = [
    ("where is HR-20", "parental.md"),
    ("IT-404", "laptop.md"),
    ("SEC-9", "security.md"),
    ("TRV-2", "travel.md"),
    ("EXP-7", "expenses.md"),
    ("PAY-3", "payroll.md"),
]
K = 2


class InProcessEmbedder:
    identity = "fake-embed@in-process"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.down = False

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.down:
            raise ToolError("embeddings model fake-embed: connection refused")
        self.calls.append(list(texts))
        return [embed(t) for t in texts]

    async def aclose(self) -> None:
        return None


def index_of(documents: dict[str, str], **kwargs: object) -> DocumentIndex:
    return asyncio.run(build_index(documents, chunk_tokens=64, **kwargs))  # type: ignore[arg-type]


def recall(index: DocumentIndex, mode: str) -> int:
    """How many of the labelled questions find their document in the top ``K``."""
    found = 0
    for question, answer in PARAPHRASES + CODES:
        vector = embed(question)
        if mode == "bm25":
            ranked = [index.chunks[i].document for i, _ in index.bm25.top(question, K)]
        elif mode == "dense":
            ranked = [index.chunks[i].document for i, _ in index.dense(vector, K)]
        else:
            ranked = [h.chunk.document for h in index.search(question, K, vector)]
        found += answer in ranked
    return found


def test_hybrid_retrieval_beats_bm25_and_dense_alone_on_the_labelled_set() -> None:
    index = index_of(CORPUS, embedder=InProcessEmbedder())
    assert len(index.chunks) == len(CORPUS)  # one chunk each: the answer is a document
    figures = {mode: recall(index, mode) for mode in ("bm25", "dense", "fused")}
    assert figures == {"bm25": 7, "dense": 6, "fused": 12}


def test_each_method_finds_what_the_other_cannot() -> None:
    index = index_of(CORPUS, embedder=InProcessEmbedder())
    question, answer = PARAPHRASES[0]
    assert index.bm25.top(question, K) == [] or all(
        index.chunks[i].document != answer for i, _ in index.bm25.top(question, K)
    )
    assert index.chunks[index.dense(embed(question), 1)[0][0]].document == answer
    code, holder = CODES[1]
    assert index.chunks[index.bm25.top(code, 1)[0][0]].document == holder
    assert embed(code) == [0.0] * len(embed(code))  # a code alone has no meaning to it


def test_without_embeddings_the_index_is_bm25_alone() -> None:
    index = index_of(CORPUS)
    assert index.vectors is None
    hits = index.search("form EXP-7 receipts", 1, None)
    assert [(h.chunk.document, h.chunk.position) for h in hits] == [("expenses.md", 0)]
    assert hits[0].score > 1  # a BM25 score


def test_a_rebuild_embeds_only_the_changed_chunks_and_keeps_the_rest() -> None:
    embedder = InProcessEmbedder()
    first = index_of(CORPUS, embedder=embedder)
    assert sum(len(c) for c in embedder.calls) == len(CORPUS)
    changed = {**CORPUS, "remote.md": CORPUS["remote.md"].replace("three", "two")}
    del changed["notice.md"]
    report = BuildReport()
    second = index_of(changed, embedder=embedder, previous=first, report=report)
    assert embedder.calls[-1] == [changed["remote.md"]]
    assert report.rechunked == ["remote.md"]
    assert (report.embedded, report.reused) == (1, len(CORPUS) - 2)
    assert "notice.md" not in {c.document for c in second.chunks}
    # the unchanged documents' chunks are the very same objects
    assert second.by_document["vacation.md"] is first.by_document["vacation.md"]


def test_a_failed_embedding_raises_and_a_dimension_mismatch_is_named() -> None:
    embedder = InProcessEmbedder()
    index = index_of(CORPUS, embedder=embedder)
    embedder.down = True
    with pytest.raises(ToolError, match="connection refused"):
        index_of({**CORPUS, "new.md": "A new policy."}, embedder=embedder, previous=index)
    with pytest.raises(ToolError, match="3 dimensions; the index has 64"):
        index.search("holiday", 1, [1.0, 0.0, 0.0])
