"""The engine's shared lexical search: BM25 over an inverted index, chunking, rank fusion.

What goes in: small texts written here, and for the index a random corpus checked against a
direct transcription of the BM25 formula. What is asserted: scores and rankings, chunk spans
(each chunk is the document's own text at its span, within the size, overlapping the one
before), and fused orders.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from agentspec_runtime.engine.search import (
    Bm25Index,
    bm25_scores,
    chunk,
    reciprocal_rank_fusion,
    words,
)


def test_bm25_prefers_rare_words_and_shorter_documents() -> None:
    scores = bm25_scores(
        "budget approval",
        [
            "the budget approval process",
            "the budget is large and the budget is long and the budget is big",
            "nothing here",
        ],
    )
    assert scores[0] > scores[1] > scores[2] == 0.0


def _reference(query: str, documents: list[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """BM25 as the formula reads, document by document."""
    docs = [words(d) for d in documents]
    n = len(docs)
    average = sum(map(len, docs)) / n or 1.0
    out = []
    for doc in docs:
        score = 0.0
        for term in set(words(query)):
            df = sum(term in d for d in docs)
            tf = doc.count(term)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / average))
        out.append(score)
    return out


def test_the_inverted_index_scores_as_the_formula_does() -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible corpus, not a secret
    vocabulary = [f"w{i}" for i in range(60)]
    documents = [" ".join(rng.choices(vocabulary, k=rng.randint(1, 40))) for _ in range(200)]
    index = Bm25Index(documents)
    for _ in range(30):
        query = " ".join(rng.choices(vocabulary, k=3))
        assert bm25_scores(query, documents) == pytest.approx(_reference(query, documents))
        top = index.top(query, 5)
        expected = sorted(
            ((i, s) for i, s in enumerate(_reference(query, documents)) if s > 0),
            key=lambda item: (-item[1], item[0]),
        )[:5]
        assert [i for i, _ in top] == [i for i, _ in expected]


def test_an_index_of_nothing_or_a_query_of_stop_words_finds_nothing() -> None:
    assert Bm25Index([]).top("leave", 3) == []
    assert Bm25Index(["the leave policy"]).top("the and of", 3) == []
    assert len(Bm25Index(["a", "b"])) == 2


POLICY = (
    "Leave policy. Employees get 25 days of paid leave per year, taken in agreement with "
    "their manager.\n\n"
    "Sick leave is separate. Up to 10 days a year need no certificate; a doctor's note is "
    "needed from the fourth day of an absence.\n\n"
    "Parental leave is 16 weeks for the primary carer and 4 weeks for the other parent. It "
    "can start up to two weeks before the expected birth."
)


def test_chunks_are_the_documents_own_text_within_size_and_overlapping() -> None:
    chunks = chunk(POLICY, tokens=30, overlap=4)
    assert len(chunks) > 2
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert POLICY[c.start : c.end] == c.text
        assert len(c.text) <= 30 * 4
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "consecutive chunks overlap"
        assert after.start > before.start
    assert chunks[-1].end == len(POLICY.rstrip())
    covered = set()
    for c in chunks:
        covered |= set(range(c.start, c.end))
    assert {i for i, ch in enumerate(POLICY) if not ch.isspace()} <= covered


def test_chunks_keep_paragraphs_whole_when_they_fit() -> None:
    paragraphs = [p.strip() for p in POLICY.split("\n\n")]  # 98, 126, 138 characters
    # 35 tokens hold any one paragraph but no two: one chunk each
    assert [c.text for c in chunk(POLICY, tokens=35, overlap=0)] == paragraphs
    # 60 tokens hold the first two together
    assert [c.text for c in chunk(POLICY, tokens=60, overlap=0)] == [
        POLICY[: POLICY.index("Parental")].strip(),
        paragraphs[2],
    ]
    assert chunk("  \n\n ", tokens=10) == []
    with pytest.raises(ValueError, match="overlap"):
        chunk(POLICY, tokens=10, overlap=10)


def test_a_word_longer_than_a_chunk_is_cut_anyway() -> None:
    text = "x" * 100
    chunks = chunk(text, tokens=10, overlap=0)
    assert [len(c.text) for c in chunks] == [40, 40, 20]
    # with an overlap and no space to start it at, it starts at a character
    overlapping = chunk(text, tokens=10, overlap=2)
    for before, after in itertools.pairwise(overlapping):
        assert before.start < after.start < before.end


def test_a_short_heading_is_not_repeated_whole_in_the_next_chunk() -> None:
    text = "Title\n\n" + "alpha " * 17 + "."  # 110 characters, 28 tokens
    chunks = chunk(text, tokens=31, overlap=4)
    assert chunks[0].text == "Title"
    assert all(c.start > 0 for c in chunks[1:])
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_chinese_is_cut_after_its_full_stops_and_overlaps() -> None:
    sentence = "今天天气很好我们去公园。"  # 12 characters, no spaces
    text = sentence * 40
    chunks = chunk(text, tokens=30, overlap=4)  # a character a token: 30 characters
    assert len(chunks) > 3
    assert all(len(c.text) <= 30 for c in chunks)
    for c in chunks[:-1]:
        assert c.text.endswith("。"), c.text  # cut after a full stop, not mid-sentence
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start < before.end


def test_words_keep_accented_words_whole_and_pair_chinese() -> None:
    assert words("Résumé of the présumé") == ["résumé", "présumé"]
    assert words("年假多少天") == ["年假", "假多", "多少", "少天"]
    assert words("Привет мир") == ["привет", "мир"]


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    bm25 = ["a", "b", "c"]
    dense = ["c", "a", "d"]
    fused = reciprocal_rank_fusion([bm25, dense])
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([["x", "y"]]) == [("x", 1 / 61), ("y", 1 / 62)]
