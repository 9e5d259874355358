"""Retrieval over a documents knowledge source (``engine/documents.py``): BM25, dense, fused.

Run: .venv/bin/python -m bench.retrieval_bench [--queries 200] [--dimensions 1536]

A synthetic corpus of chunks the size ``spec.knowledge[].documents.chunkTokens`` defaults to
(512 tokens, about 330 words drawn from a 20,000-word vocabulary with Zipf frequencies, as
natural text has once its stop words are left out), at 1,000 and 10,000 chunks, each with a
random unit vector of ``--dimensions`` (1,536: OpenAI's text-embedding-3-small) from an
in-process embedder (the HTTP round trips are the endpoint's, not the index's). Queries are
3-6 words drawn the same way, with a random vector. Measured in the same run:

- the index (``build_index``: chunking, BM25, the vector matrix): build time, memory per
  1,000 chunks (tracemalloc, numpy's buffers included), and top-4 latency p50/p99 for BM25
  alone, dense alone and fused (both rankings 50 deep, reciprocal rank fusion: what a
  documents source with embeddings does per question, the query's embedding aside);
- the baseline: BM25 in one pass over every chunk per query (``bm25_scores``: tokenize every
  document, count the query's words; what ranking a corpus once costs), at 1,000 chunks.

Target (issue 17): p50 < 5 ms at 10,000 chunks in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence

import numpy as np

from agentspec_runtime.engine.documents import CANDIDATES, DocumentIndex, build_index
from agentspec_runtime.engine.search import bm25_scores
from bench.runtime_bench import pct

VOCABULARY = 20_000
WORDS_PER_CHUNK = 330


def _zipf() -> tuple[list[str], list[float]]:
    """Content words with Zipf frequencies: rank r weighs 1/r, from rank 100 on (the most
    frequent words of a language are stop words, which the index leaves out)."""
    vocabulary = [f"term{i}" for i in range(VOCABULARY)]
    return vocabulary, [1 / (i + 100) for i in range(VOCABULARY)]


def corpus(rng: random.Random, chunks: int) -> list[str]:
    vocabulary, weights = _zipf()
    return [" ".join(rng.choices(vocabulary, weights, k=WORDS_PER_CHUNK)) for _ in range(chunks)]


def queries(rng: random.Random, count: int) -> list[str]:
    vocabulary, weights = _zipf()
    return [" ".join(rng.choices(vocabulary, weights, k=rng.randint(3, 6))) for _ in range(count)]


def scan_top(query: str, documents: list[str], k: int) -> list[int]:
    """The baseline: BM25 in one pass over every document per query (``bm25_scores``, what
    conversation memory uses to rank a conversation's turns once)."""
    scores = bm25_scores(query, documents)
    return sorted(range(len(documents)), key=lambda i: -scores[i])[:k]


def timed(run: Callable[[str], object], asked: list[str]) -> list[float]:
    out = []
    for query in asked:
        started = time.perf_counter()
        run(query)
        out.append((time.perf_counter() - started) * 1000)
    return out


class RandomEmbedder:
    """Unit vectors from a seeded generator: the index's cost, not an endpoint's."""

    identity = "random@bench"

    def __init__(self, dimensions: int) -> None:
        self._rng = np.random.default_rng(17)
        self._dimensions = dimensions

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        rows = self._rng.standard_normal((len(texts), self._dimensions), dtype=np.float32)
        return list(rows)  # rows of float32: what the index reads (np.asarray keeps them)

    async def aclose(self) -> None:
        return None


def index_of(documents: list[str], dimensions: int) -> DocumentIndex:
    named = {f"doc-{i:05d}.md": text for i, text in enumerate(documents)}
    # 1024: the synthetic words ("term1234") are twice as long as natural ones, so this keeps
    # one 330-word chunk per document, as 512 tokens of natural text would be
    return asyncio.run(build_index(named, chunk_tokens=1024, embedder=RandomEmbedder(dimensions)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dimensions", type=int, default=1536)
    args = parser.parse_args()
    rng = random.Random(17)  # noqa: S311 - a reproducible corpus, not a secret
    asked = queries(rng, args.queries)
    vectors = np.random.default_rng(3).standard_normal((len(asked), args.dimensions))
    query_vector = dict(zip(asked, vectors.astype(np.float32), strict=False))
    print(
        "| chunks | build s | MiB per 1k chunks | BM25 p50 / p99 ms | dense p50 / p99 ms "
        "| fused p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|")
    baseline: list[float] = []
    bm25_1k: list[float] = []
    for size in (1_000, 10_000):
        documents = corpus(rng, size)
        started = time.perf_counter()
        index = index_of(documents, args.dimensions)
        build = time.perf_counter() - started
        assert len(index.chunks) == size, "one chunk a document"
        tracemalloc.start()  # the index's memory, built again under tracing (which is slow)
        traced = index_of(documents[:1000], args.dimensions)
        held = tracemalloc.get_traced_memory()[0] * size / 1000
        tracemalloc.stop()
        del traced
        lexical = timed(lambda q, i=index: i.bm25.top(q, 4), asked)  # type: ignore[misc]
        dense = timed(
            lambda q, i=index: i.dense(query_vector[q], CANDIDATES),  # type: ignore[misc]
            asked,
        )
        fused = timed(lambda q, i=index: i.search(q, 4, query_vector[q]), asked)  # type: ignore[misc]
        if size == 1_000:
            bm25_1k = lexical
            baseline = timed(lambda q, d=documents: scan_top(q, d, 4), asked[:20])  # type: ignore[misc]
        print(
            f"| {size:,} | {build:.2f} | {held / 2**20 / (size / 1000):.1f} | "
            + " | ".join(f"{pct(t, 0.5):.2f} / {pct(t, 0.99):.2f}" for t in (lexical, dense, fused))
            + " |"
        )
    print(
        f"\nbaseline (a scan per query, 1,000 chunks, 20 queries): p50 {pct(baseline, 0.5):.0f} ms"
        f" -> the BM25 index is {pct(baseline, 0.5) / pct(bm25_1k, 0.5):.0f}x faster at p50"
    )


if __name__ == "__main__":
    main()
