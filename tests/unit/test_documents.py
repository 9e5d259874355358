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
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentspec_runtime.adapters.documents import FolderDocuments
from agentspec_runtime.adapters.embeddings import FolderVectorCache
from agentspec_runtime.engine import documents as docs_module
from agentspec_runtime.engine.documents import (
    BuildReport,
    DocumentIndex,
    DocumentsKnowledge,
    build_index,
    vector_key,
)
from agentspec_runtime.engine.errors import ToolError
from agentspec_runtime.spec.agent import DocumentsSource
from tests.support.fake_llm.embeddings import embed
from tests.support.procs import wait_until

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
    """The fake LLM's embeddings model, called in process; ``answer`` may replace a text's
    vector with what a broken endpoint sends (NaN, another size, zeros)."""

    identity = "fake-embed@in-process"

    def __init__(self, answer: Callable[[str], Any] = embed) -> None:
        self.calls: list[list[str]] = []
        self.down = False
        self.answer = answer

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.down:
            raise ToolError("embeddings model fake-embed: connection refused")
        self.calls.append(list(texts))
        return [self.answer(t) for t in texts]

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


def test_zero_vectors_are_no_dense_evidence_and_leave_bm25_its_finds() -> None:
    """An endpoint that answers zeros for every chunk: the fused ranking is BM25's."""
    index = index_of(CORPUS, embedder=InProcessEmbedder(lambda _text: [0.0] * 64))
    hits = index.search("form EXP-7 receipts", 2, embed("refund claims"))
    lexical = [index.chunks[i].document for i, _ in index.bm25.top("form EXP-7 receipts", 2)]
    assert [h.chunk.document for h in hits] == lexical
    assert index.dense(embed("refund claims"), 5) == []


def test_cached_vectors_of_another_size_or_not_finite_are_embedded_again(tmp_path: Path) -> None:
    """The model behind a name changed (other size), or the cache was written to (NaN):
    those entries are misses."""
    cache = FolderVectorCache(tmp_path / "vectors")
    embedder = InProcessEmbedder()
    vacation, sick = CORPUS["vacation.md"], CORPUS["sick.md"]
    docs_module_digest = docs_module._digest  # the key the index uses
    asyncio.run(
        cache.put_many(
            {
                vector_key(embedder.identity, docs_module_digest(vacation)): np.ones(
                    8, dtype=np.float32
                ).tobytes(),
                vector_key(embedder.identity, docs_module_digest(sick)): np.full(
                    64, np.nan, dtype=np.float32
                ).tobytes(),
            }
        )
    )
    report = BuildReport()
    index = index_of(
        {"vacation.md": vacation, "sick.md": sick, "remote.md": CORPUS["remote.md"]},
        embedder=embedder,
        cache=cache,
        report=report,
    )
    assert index.vectors is not None
    assert index.vectors.shape == (3, 64)
    assert (report.embedded, report.cached) == (3, 0)
    assert sorted(t for call in embedder.calls for t in call) == sorted(
        [vacation, sick, CORPUS["remote.md"]]
    )


def test_a_changed_embeddings_model_reuses_no_vector() -> None:
    first = index_of(CORPUS, embedder=InProcessEmbedder())
    other = InProcessEmbedder()
    other.identity = "another-model@in-process"
    report = BuildReport()
    index_of(CORPUS, embedder=other, previous=first, report=report)
    assert (report.reused, report.embedded) == (0, len(CORPUS))


def replace(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


async def test_nonsense_from_the_endpoint_keeps_the_last_index_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source as it runs, on a real folder: a NaN vector fails the build (the last index
    serves, the error is in status, and a question is answered by BM25 alone); once the
    endpoint is sane the retry indexes the change; the folder deleted drops the index."""
    monkeypatch.setattr(docs_module, "RETRY_CAP", 0.2)
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    broken = False

    def answer(text: str) -> list[float]:
        return [float("nan")] * 64 if broken else embed(text)

    embedder = InProcessEmbedder(answer)
    source = DocumentsSource.model_validate({"configMap": "policies", "chunkTokens": 64})
    knowledge = DocumentsKnowledge(
        source, feed=FolderDocuments("policies", [tmp_path]), embedder=embedder, cache=None
    )
    await knowledge.start()
    try:
        assert knowledge.index is not None
        assert knowledge.error is None
        broken = True
        replace(folder / "remote.md", "Telework is allowed two days a week.")
        await asyncio.to_thread(
            wait_until, lambda: knowledge.error is not None, timeout=10, what="a failed build"
        )
        assert str(knowledge.error).startswith("indexing failed, the last good index serves: ")
        (hit,) = await knowledge.search("telework three days", 1)
        assert hit.chunk.text == CORPUS["remote.md"]  # the last index, BM25 alone
        assert hit.score > 1

        broken = False
        await asyncio.to_thread(
            wait_until, lambda: knowledge.error is None, timeout=10, what="the retry"
        )
        (hit,) = await knowledge.search("telework", 1)
        assert hit.chunk.text == "Telework is allowed two days a week."

        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        await asyncio.to_thread(
            wait_until, lambda: knowledge.index is None, timeout=10, what="the index dropped"
        )
        assert str(knowledge.error) == f"{folder} was deleted"
        with pytest.raises(ToolError, match=r"are not indexed: .* was deleted"):
            await knowledge.search("telework", 1)
    finally:
        await knowledge.aclose()
