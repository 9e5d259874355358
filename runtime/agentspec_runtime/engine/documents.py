"""The ``documents`` knowledge source: a ConfigMap's keys chunked and indexed in-process.

:class:`DocumentIndex` is one immutable index: every chunk of every document, BM25 over them
(the engine's one BM25, shared with memory: :class:`~.search.Bm25Index`) and, when the source
names an embeddings model, their unit vectors; a query ranks both ways and the rankings are
fused by reciprocal rank fusion. :func:`build_index` makes a new index from the documents and
the previous index: a document whose text is unchanged keeps its chunks, and a chunk whose
text was embedded before (in the previous index, else in the :class:`~.ports.VectorCache`
under the hash of the embedder and the text) is not embedded again.

:class:`DocumentsKnowledge` is the pooled resource behind one source: it follows the
ConfigMap (:class:`~.ports.DocumentsFeed`), builds each new index off the request path and
swaps it in whole; a build that fails (the embeddings endpoint is down) keeps the last good
index serving, says so in ``/status`` and is retried with backoff.

Must not: import an adapter, or numpy at module level (agents without embeddings never load
it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from agentspec_runtime.spec.agent import DocumentsSource

from .errors import DocumentsGoneError, ToolError
from .ports import DocumentsFeed, Embedder, VectorCache
from .search import Bm25Index, chunk, estimate_tokens, reciprocal_rank_fusion

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix: TypeAlias = npt.NDArray[np.float32]

__all__ = ["Chunk", "DocumentIndex", "DocumentsKnowledge", "Hit", "build_index"]

log = logging.getLogger(__name__)
EMBED_BATCH = 64
"""Texts per embeddings request, at most."""
EMBED_BATCH_TOKENS = 60_000
"""Tokens per embeddings request, about (OpenAI's cap is 300,000)."""
QUERY_EMBED_SECONDS = 5.0
"""How long a question waits for its embedding before BM25 answers alone."""
CANDIDATES = 50
"""How deep each ranking goes before fusion (at least topK)."""
FIRST_INDEX_WAIT = 30.0
"""How long assembling a snapshot waits for a new source's first index."""
RETRY_CAP = 60.0


@dataclass(frozen=True, slots=True)
class Chunk:
    document: str
    """The ConfigMap key (file name) it comes from."""
    position: int
    """Its rank in the document (0, 1, ...)."""
    text: str
    digest: str
    """Hash of the text: the key of its vector."""


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def vector_key(embedder: str, digest: str) -> str:
    """The cache key of a chunk's vector: the embedder's identity and the text's hash."""
    return hashlib.sha256(f"{embedder}\0{digest}".encode()).hexdigest()


@dataclass(frozen=True)
class DocumentIndex:
    chunks: tuple[Chunk, ...]
    texts: Mapping[str, str]
    """Each document's text (to see what changed)."""
    by_document: Mapping[str, tuple[Chunk, ...]]
    bm25: Bm25Index
    vectors: Matrix | None = None
    """One unit row per chunk (float32), when the source embeds."""
    embedder: str | None = None
    built_at: float = field(default_factory=time.time)

    def vector_of(self) -> dict[str, Any]:
        """Digest -> row, for reuse by the next build."""
        if self.vectors is None:
            return {}
        return {c.digest: self.vectors[i] for i, c in enumerate(self.chunks)}

    def search(self, query: str, top_k: int, query_vector: Sequence[float] | None) -> list[Hit]:
        """The ``top_k`` best chunks: BM25 alone, or fused with the dense ranking when there
        are vectors and ``query_vector``."""
        depth = max(top_k, CANDIDATES)
        lexical = self.bm25.top(query, depth)
        if self.vectors is None or query_vector is None or not self.chunks:
            return [Hit(self.chunks[i], round(score, 4)) for i, score in lexical[:top_k]]
        dense = self.dense(query_vector, depth)
        fused = reciprocal_rank_fusion([[i for i, _ in lexical], [i for i, _ in dense]])
        return [Hit(self.chunks[i], round(score, 5)) for i, score in fused[:top_k]]

    def dense(self, query_vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        """The ``k`` chunks nearest the query by cosine (index, similarity), best first."""
        import numpy as np

        assert self.vectors is not None
        query = np.asarray(query_vector, dtype=np.float32)
        if query.shape != (self.vectors.shape[1],):
            raise ToolError(
                f"the embeddings model answered a query vector of {query.shape[0]} dimensions; "
                f"the index has {self.vectors.shape[1]}"
            )
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            return []
        similarity = self.vectors @ (query / norm)
        k = min(k, len(similarity))
        best = np.argpartition(-similarity, k - 1)[:k]
        ranked = sorted(best.tolist(), key=lambda i: (-float(similarity[i]), i))
        # a chunk at 0 or below (no vector, or nothing in common) is no dense evidence: it
        # must not push BM25's finds out of the fused ranking
        return [(i, float(similarity[i])) for i in ranked if similarity[i] > 0]


@dataclass
class BuildReport:
    embedded: int = 0
    """Chunks sent to the embeddings endpoint."""
    cached: int = 0
    """Chunks whose vector came from the cache."""
    reused: int = 0
    """Chunks whose vector came from the previous index."""
    rechunked: list[str] = field(default_factory=list)
    """Documents chunked anew (new or changed)."""


def _chunks(
    documents: Mapping[str, str],
    *,
    tokens: int,
    previous: DocumentIndex | None,
    report: BuildReport,
) -> tuple[tuple[Chunk, ...], dict[str, tuple[Chunk, ...]]]:
    by_document: dict[str, tuple[Chunk, ...]] = {}
    for key in sorted(documents):
        text = documents[key]
        if previous is not None and previous.texts.get(key) == text:
            by_document[key] = previous.by_document[key]
            continue
        report.rechunked.append(key)
        by_document[key] = tuple(
            Chunk(key, c.position, c.text, _digest(c.text)) for c in chunk(text, tokens=tokens)
        )
    return tuple(c for key in sorted(by_document) for c in by_document[key]), by_document


def _usable(row: Any) -> Any:
    """``row`` as a vector: a non-empty 1-D float32 array of finite numbers, else None."""
    import numpy as np

    try:
        vector = np.asarray(row, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return None
    if vector.ndim != 1 or vector.size == 0 or not bool(np.isfinite(vector).all()):
        return None
    return vector


def _batches(digests: Sequence[str], texts: Mapping[str, str]) -> list[list[str]]:
    """At most ``EMBED_BATCH`` texts and about ``EMBED_BATCH_TOKENS`` tokens a request
    (endpoints cap both)."""
    batches: list[list[str]] = []
    tokens = 0
    for digest in digests:
        size = estimate_tokens(texts[digest])
        if not batches or len(batches[-1]) >= EMBED_BATCH or tokens + size > EMBED_BATCH_TOKENS:
            batches.append([])
            tokens = 0
        batches[-1].append(digest)
        tokens += size
    return batches


async def _embed(
    digests: Sequence[str],
    texts: Mapping[str, str],
    *,
    embedder: Embedder,
    cache: VectorCache | None,
    report: BuildReport,
) -> dict[str, Any]:
    """Fresh vectors for ``digests``, written to the cache as they come."""
    out: dict[str, Any] = {}
    for batch in _batches(digests, texts):
        rows = await embedder.embed([texts[d] for d in batch])
        if len(rows) != len(batch):
            raise ToolError(f"the embeddings model answered {len(rows)} vectors for {len(batch)}")
        fresh: dict[str, bytes] = {}
        for digest, row in zip(batch, rows, strict=True):
            vector = _usable(row)
            if vector is None:
                raise ToolError(
                    "the embeddings model answered a vector that is empty, not numbers or not "
                    "finite"
                )
            out[digest] = vector
            fresh[vector_key(embedder.identity, digest)] = vector.tobytes()
        report.embedded += len(batch)
        if cache is not None:
            await cache.put_many(fresh)
    return out


async def _vectors(
    chunks: Sequence[Chunk],
    *,
    embedder: Embedder,
    cache: VectorCache | None,
    previous: DocumentIndex | None,
    report: BuildReport,
) -> Matrix:
    """One unit row per chunk: from the previous index (same embedder), else the cache,
    else the endpoint. A cached vector that is not usable, or not of the size the endpoint
    answers now (the model behind the name changed), is embedded again."""
    import numpy as np

    identity = embedder.identity
    same = previous is not None and previous.embedder == identity and previous.vectors is not None
    known: dict[str, Any] = previous.vector_of() if same and previous is not None else {}
    size = previous.vectors.shape[1] if same and previous and previous.vectors is not None else None
    texts = {c.digest: c.text for c in chunks}
    wanted = list(dict.fromkeys(c.digest for c in chunks if c.digest not in known))
    report.reused = sum(1 for c in chunks if c.digest in known)
    cached: dict[str, Any] = {}
    if wanted and cache is not None:
        keys = [vector_key(identity, d) for d in wanted]
        for digest, raw in zip(wanted, await cache.get_many(keys), strict=True):
            if raw and len(raw) % 4 == 0:
                vector = _usable(np.frombuffer(raw, dtype=np.float32))
                if vector is not None:
                    cached[digest] = vector
    fresh = await _embed(
        [d for d in wanted if d not in cached],
        texts,
        embedder=embedder,
        cache=cache,
        report=report,
    )
    sizes = (
        [v.size for v in fresh.values()]
        or ([size] if size else [])
        or [v.size for v in cached.values()]
    )
    if sizes:
        size = max(set(sizes), key=sizes.count)
    stale = [d for d, v in cached.items() if v.size != size]
    if stale:
        log.warning("%d cached vectors of another size than %s: embedded again", len(stale), size)
        fresh |= await _embed(stale, texts, embedder=embedder, cache=cache, report=report)
    report.cached = len(cached) - len(stale)
    known |= {d: v for d, v in cached.items() if v.size == size} | fresh
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32)
    if len({known[c.digest].size for c in chunks}) != 1:
        raise ToolError("the embeddings model answered vectors of several sizes")
    matrix = np.stack([known[c.digest] for c in chunks]).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Matrix = matrix / norms
    return result


async def build_index(
    documents: Mapping[str, str],
    *,
    chunk_tokens: int,
    previous: DocumentIndex | None = None,
    embedder: Embedder | None = None,
    cache: VectorCache | None = None,
    report: BuildReport | None = None,
) -> DocumentIndex:
    """A new index of ``documents``; raises ``ToolError`` when embedding fails."""
    report = report if report is not None else BuildReport()
    chunks, by_document = _chunks(documents, tokens=chunk_tokens, previous=previous, report=report)
    vectors = None
    if embedder is not None:
        vectors = await _vectors(
            chunks, embedder=embedder, cache=cache, previous=previous, report=report
        )
    # BM25's statistics span the corpus: it is rebuilt whole, in a thread (not the loop's)
    bm25 = await asyncio.to_thread(Bm25Index, [c.text for c in chunks])
    return DocumentIndex(
        chunks=chunks,
        texts=dict(documents),
        by_document=by_document,
        bm25=bm25,
        vectors=vectors,
        embedder=embedder.identity if embedder else None,
    )


class DocumentsKnowledge:
    """One documents source, kept indexed: the pooled resource its tool reads."""

    def __init__(
        self,
        spec: DocumentsSource,
        *,
        feed: DocumentsFeed,
        embedder: Embedder | None,
        cache: VectorCache | None,
    ) -> None:
        self._spec = spec
        self._feed = feed
        self._embedder = embedder
        self._cache = cache
        self.index: DocumentIndex | None = None
        self._latest: Mapping[str, str] | None = None
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._first = asyncio.Event()
        self.feed_error: str | None = None
        """Why the documents cannot be read (cleared when they can again)."""
        self.build_error: str | None = None
        """Why the last build failed (cleared by the next that succeeds)."""
        self.missing: list[str] = []
        self.last_report = BuildReport()

    @property
    def error(self) -> str | None:
        return self.feed_error or self.build_error

    async def start(self, wait: float = FIRST_INDEX_WAIT) -> DocumentsKnowledge:
        """Follow the documents; wait (at most ``wait`` s) for the first attempt at an index.
        An agent whose documents cannot be read or embedded yet still starts: its tool says
        why, ``/status`` too, and the index arrives when they can."""
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"documents:{self._spec.config_map}"),
            asyncio.create_task(self._build_loop(), name=f"index:{self._spec.config_map}"),
        ]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), wait)
        except BaseException:  # cancelled while assembling: nothing may keep running
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                async for update in self._feed.watch(self._stop):
                    self._take(update)
                    backoff = 1.0
                return
            except Exception as e:  # a feed that breaks is followed again, not abandoned
                self.feed_error = f"cannot follow {self._feed.location}: {e}"
                log.warning("documents: %s", self.feed_error, exc_info=True)
                self._first.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, RETRY_CAP)

    def _take(self, update: Mapping[str, str] | Exception) -> None:
        if isinstance(update, DocumentsGoneError):
            # deleted: what was removed is no longer quoted
            self.feed_error, self.index, self._latest = str(update), None, None
            self._first.set()
            return
        if isinstance(update, Exception):  # unreadable for now: the last index serves
            self.feed_error = str(update)
            self._first.set()
            return
        wanted = self._spec.keys
        self.missing = [k for k in wanted if k not in update]
        latest = {k: v for k, v in update.items() if not wanted or k in wanted}
        if wanted and not latest:
            self.feed_error = f"{self._feed.location} has none of the keys {list(wanted)}"
            self._first.set()
            return
        self.feed_error = None
        if latest == self._latest and (self.index is not None or self.build_error):
            return  # the same documents again (a watch re-listed): nothing to rebuild
        self._latest = latest
        self._changed.set()

    async def _build_loop(self) -> None:
        backoff = 1.0
        while True:
            await self._changed.wait()
            self._changed.clear()
            documents = self._latest
            if documents is None:
                continue
            report = BuildReport()
            try:
                index = await build_index(
                    documents,
                    chunk_tokens=self._spec.chunk_tokens,
                    previous=self.index,
                    embedder=self._embedder,
                    cache=self._cache,
                    report=report,
                )
            except Exception as e:  # an endpoint's nonsense as much as its outage
                serving = "the last good index serves" if self.index else "no index yet"
                self.build_error = f"indexing failed, {serving}: {e}"
                log.warning(
                    "documents %s: %s",
                    self._feed.location,
                    self.build_error,
                    exc_info=not isinstance(e, ToolError),
                )
                self._first.set()
                # retry the same documents, unless newer ones arrive first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), backoff)
                backoff = min(backoff * 2, RETRY_CAP)
                self._changed.set()
                continue
            if self._latest is None:  # deleted while this was built
                continue
            self.index, self.build_error, self.last_report = index, None, report
            backoff = 1.0
            self._first.set()
            log.info(
                "documents %s: %d chunks indexed (%d embedded, %d cached, %d reused)",
                self._feed.location,
                len(index.chunks),
                report.embedded,
                report.cached,
                report.reused,
            )

    async def search(self, query: str, top_k: int) -> list[Hit]:
        index = self.index
        if index is None:
            raise ToolError(
                f"the documents of {self._feed.location} are not indexed"
                + (f": {self.error}" if self.error else " yet")
            )
        vector = None
        if index.vectors is not None and self._embedder is not None:
            try:
                rows = await asyncio.wait_for(self._embedder.embed([query]), QUERY_EMBED_SECONDS)
                vector = _usable(rows[0])
                if vector is None:
                    raise ToolError("an unusable vector (empty, not numbers or not finite)")
            except Exception as e:  # the words still find passages
                log.warning(
                    "documents %s: question not embedded (%s): BM25 alone", self._feed.location, e
                )
        try:
            return index.search(query, top_k, vector)
        except ToolError as e:  # a query vector of another size: the model changed
            log.warning("documents %s: %s: BM25 alone", self._feed.location, e)
            return index.search(query, top_k, None)

    def status(self) -> dict[str, Any]:
        index = self.index
        report = self.last_report
        return {
            "documents": self._feed.location,
            "indexed": None
            if index is None
            else {
                "documents": len(index.texts),
                "chunks": len(index.chunks),
                "dense": index.vectors is not None,
                "builtAt": round(index.built_at, 3),
                "lastBuild": {
                    "rechunked": report.rechunked,
                    "embedded": report.embedded,
                    "cached": report.cached,
                    "reused": report.reused,
                },
            },
            **({"embeddings": self._embedder.identity} if self._embedder else {}),
            **({"vectorCache": self._cache.location} if self._cache else {}),
            **({"missingKeys": self.missing} if self.missing else {}),
            "error": self.error,
        }
