"""Lexical retrieval over a knowledge corpus: the shared BM25 index (``engine/search.py``).

Run: .venv/bin/python -m bench.retrieval_bench [--queries 200]

A synthetic corpus of chunks the size ``spec.knowledge[].documents.chunkTokens`` defaults to
(512 tokens, about 330 words drawn from a 20,000-word vocabulary with Zipf frequencies, as
natural text has once its stop words are left out), at 1,000 and 10,000 chunks. Queries are
3-6 words drawn the same way.
Measured in the same run:

- the index: build time, memory per 1,000 chunks (tracemalloc), and top-4 latency p50/p99;
- the baseline: BM25 in one pass over every chunk per query (``bm25_scores``: tokenize every
  document, count the query's words; what ranking a corpus once costs), at 1,000 chunks.

Target (issue 17): p50 < 5 ms at 10,000 chunks in-process.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections.abc import Callable

from agentspec_runtime.engine.search import Bm25Index, bm25_scores
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(17)  # noqa: S311 - a reproducible corpus, not a secret
    asked = queries(rng, args.queries)
    print("| chunks | build s | MiB per 1k chunks | top-4 p50 ms | top-4 p99 ms |")
    print("|---|---|---|---|---|")
    baseline: list[float] = []
    index_1k: list[float] = []
    for size in (1_000, 10_000):
        documents = corpus(rng, size)
        started = time.perf_counter()
        index = Bm25Index(documents)
        build = time.perf_counter() - started
        tracemalloc.start()  # the index's memory, built again under tracing (which is slow)
        traced = Bm25Index(documents[:1000])
        held = tracemalloc.get_traced_memory()[0] * size / 1000
        tracemalloc.stop()
        del traced
        latencies = timed(lambda q, i=index: i.top(q, 4), asked)  # type: ignore[misc]
        if size == 1_000:
            index_1k = latencies
            baseline = timed(lambda q, d=documents: scan_top(q, d, 4), asked[:20])  # type: ignore[misc]
        print(
            f"| {size:,} | {build:.2f} | {held / 2**20 / (size / 1000):.1f} | "
            f"{pct(latencies, 0.5):.2f} | {pct(latencies, 0.99):.2f} |"
        )
    print(
        f"\nbaseline (a scan per query, 1,000 chunks, 20 queries): p50 {pct(baseline, 0.5):.0f} ms"
        f" -> the index is {pct(baseline, 0.5) / pct(index_1k, 0.5):.0f}x faster at p50"
    )


if __name__ == "__main__":
    main()
