"""Lexical search the engine shares: the words of a text, Okapi BM25 over an inverted index,
chunking documents for retrieval, and reciprocal rank fusion of several rankings.

Conversation memory ranks a conversation's turns with it (``memory.recall``); knowledge
sources (issue 17) index their documents' chunks with it. Pure and in-process: no I/O.

* :func:`words` — lower-cased words without English stop words; text in scripts without
  spaces (Chinese, Japanese) as overlapping character pairs, the usual way to index it
  without a lexicon.
* :class:`Bm25Index` — built once over its documents (postings per word, document lengths),
  then queried many times: a query costs the postings of its own words, not a pass over the
  corpus. :func:`bm25_scores` ranks a corpus once (the same scores, in one pass).
* :func:`chunk` — a document cut into chunks of about ``tokens`` tokens on paragraph, then
  sentence, then word boundaries, consecutive chunks sharing ``overlap`` tokens, each with
  its character span (a citation's position). Sizes are estimated at 4 characters a token,
  right for English; Chinese or Japanese text runs about a token a character, so its chunks
  hold up to 4 times the tokens asked for.
* :func:`reciprocal_rank_fusion` — several rankings of the same items fused by
  ``sum(1 / (k + rank))`` (Cormack et al., 2009), so scores on different scales (BM25, cosine)
  never need calibrating against each other.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Bm25Index",
    "Chunk",
    "bm25_scores",
    "chunk",
    "estimate_tokens",
    "reciprocal_rank_fusion",
    "words",
]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    """a an and are as at be but by can could did do does for from had has have how i if in
    into is it its me my no not of on or our so than that the their them then there these
    they this to was we were what when where which who why will with would you your""".split()  # noqa: SIM905
)
CHARS_PER_TOKEN = 4
"""The usual estimate for English text with OpenAI-style tokenizers."""


def estimate_tokens(text: str) -> int:
    """About what a BPE tokenizer counts: 4 ASCII characters or 1 other character a token."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + (len(text) - ascii_chars)


_UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
"""Kana and CJK ideographs: scripts written without spaces between words."""


def words(text: str) -> list[str]:
    """Lower-cased words without (English) stop words; a run of Chinese or Japanese as its
    overlapping character pairs. Other scripts (accented Latin, Cyrillic, Greek, Korean) are
    written with spaces: their words stay whole."""
    found: list[str] = []
    for word in _WORD.findall(text.lower()):
        if _UNSPACED.search(word) is None:
            if len(word) > 1 and word not in _STOP:
                found.append(word)
        elif len(word) < 3:
            found.append(word)
        else:
            found += [word[i : i + 2] for i in range(len(word) - 1)]
    return found


class Bm25Index:
    """Okapi BM25 (k1 = 1.2, b = 0.75) over fixed documents, by an inverted index whose
    postings hold each (document, word) pair's finished BM25 weight: a query only adds."""

    def __init__(self, documents: Iterable[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        counted: list[dict[str, int]] = []
        lengths: list[int] = []
        for document in documents:
            counts: dict[str, int] = {}
            for term in words(document):
                counts[term] = counts.get(term, 0) + 1
            counted.append(counts)
            lengths.append(sum(counts.values()))
        n = len(lengths)
        average = (sum(lengths) / n if n else 0.0) or 1.0
        df: dict[str, int] = {}
        for counts in counted:
            for term in counts:
                df[term] = df.get(term, 0) + 1
        idf = {term: math.log(1 + (n - d + 0.5) / (d + 0.5)) for term, d in df.items()}
        ids: dict[str, list[int]] = {}
        weights: dict[str, list[float]] = {}
        for i, (counts, length) in enumerate(zip(counted, lengths, strict=True)):
            norm = k1 * (1 - b + b * length / average)
            for term, tf in counts.items():
                ids.setdefault(term, []).append(i)
                weights.setdefault(term, []).append(idf[term] * tf * (k1 + 1) / (tf + norm))
        # machine arrays, not lists of Python numbers: a tenth of the memory, and nothing
        # for the garbage collector to walk (a 10k-chunk corpus holds millions of postings)
        self._postings = {term: (array("l", ids[term]), array("d", weights[term])) for term in ids}
        self._size = n

    def __len__(self) -> int:
        return self._size

    def scores(self, query: str) -> dict[int, float]:
        """Each document sharing a word with the query, by index: its score (>0)."""
        scores: dict[int, float] = {}
        get = scores.get
        for term in set(words(query)):
            posting = self._postings.get(term)
            if posting is not None:
                for i, weight in zip(*posting, strict=True):
                    scores[i] = get(i, 0.0) + weight
        return scores

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best documents (index, score), best first; ties by index."""
        found = self.scores(query)
        return heapq.nlargest(k, found.items(), key=lambda item: (item[1], -item[0]))


def bm25_scores(
    query: str, documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 of each document for the query (0 for a document sharing no word with it), in
    one pass that counts only the query's words: for a corpus ranked once (a conversation's
    turns), where building a :class:`Bm25Index` would cost several times more."""
    terms = set(words(query))
    if not documents or not terms:
        return [0.0] * len(documents)
    lengths: list[int] = []
    found: list[dict[str, int]] = []  # per document, only the query's words
    df = dict.fromkeys(terms, 0)
    for document in documents:
        tokens = words(document)
        lengths.append(len(tokens))
        tf: dict[str, int] = {}
        for token in tokens:
            if token in terms:
                tf[token] = tf.get(token, 0) + 1
        for term in tf:
            df[term] += 1
        found.append(tf)
    n = len(documents)
    average = (sum(lengths) / n) or 1.0
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    scores = []
    for tf, length in zip(found, lengths, strict=True):
        norm = k1 * (1 - b + b * length / average)
        scores.append(sum(idf[t] * f * (k1 + 1) / (f + norm) for t, f in tf.items()))
    return scores


# -- chunking -------------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile("(?<=[.!?])\\s+|(?<=[\u3002\uff01\uff1f])")
"""After a sentence's end: Latin punctuation and a space, or CJK's full stops (no space)."""
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its text and where it is (characters ``start:end``)."""

    position: int
    """The chunk's rank in its document (0, 1, ...)."""
    start: int
    end: int
    text: str


def _pieces(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """``text[start:end]`` as spans of at most ``limit`` characters, cut at the coarsest
    boundary that gets under it: paragraphs, then sentences, then whitespace, then anywhere."""
    if end - start <= limit:
        return [(start, end)]
    for boundary in (_PARAGRAPH, _SENTENCE, _SPACE):
        cuts = [m.end() for m in boundary.finditer(text, start, end)]
        if cuts:
            spans, left = [], start
            for cut in [*cuts, end]:
                if cut > left:
                    spans.append((left, cut))
                    left = cut
            if len(spans) > 1:
                return [s for span in spans for s in _pieces(text, span[0], span[1], limit)]
    return [(i, min(i + limit, end)) for i in range(start, end, limit)]


def chunk(text: str, *, tokens: int, overlap: int | None = None) -> list[Chunk]:
    """``text`` in chunks of at most ``tokens`` tokens (as :func:`estimate_tokens` counts
    them, over the whole text), filled with whole
    paragraphs or sentences where they fit; each chunk after the first starts with about the
    last ``overlap`` tokens (default: an eighth) before it, so a passage cut at a boundary is
    whole in one of them. Blank text gives no chunk."""
    if tokens < 1:
        raise ValueError("tokens must be at least 1")
    # characters a token in this text: 4 in English, about 1 in Chinese or Japanese
    per_token = len(text) / max(1, estimate_tokens(text))
    limit = max(1, int(tokens * per_token))
    keep = int((tokens // 8 if overlap is None else overlap) * per_token)
    if not 0 <= keep < limit:
        raise ValueError("overlap must be at least 0 and smaller than the chunk")
    body = limit - keep
    groups: list[tuple[int, int]] = []
    for left, right in _pieces(text, 0, len(text), body):
        if groups and right - groups[-1][0] <= body:
            groups[-1] = (groups[-1][0], right)
        else:
            groups.append((left, right))
    made = [
        # the overlap never reaches back over half the previous chunk: a short chunk (a
        # heading) is not repeated whole at the start of the next
        _made(text, _back(text, left, min(keep, (left - groups[i - 1][0]) // 2)), right)
        if i and keep
        else _made(text, left, right)
        for i, (left, right) in enumerate(groups)
    ]
    kept = [c for c in made if c[2]]
    return [Chunk(position, start, end, piece) for position, (start, end, piece) in enumerate(kept)]


def _back(text: str, end: int, keep: int) -> int:
    """Where an overlap of at most ``keep`` characters before ``end`` starts: at a word."""
    start = max(0, end - keep)
    if start == 0 or text[start - 1].isspace():
        return start
    space = _SPACE.search(text, start, end)
    # no word boundary in reach (CJK text, one huge word): a character boundary will do
    return space.end() if space else start


def _made(text: str, start: int, end: int) -> tuple[int, int, str]:
    """The span without its surrounding whitespace."""
    piece = text[start:end]
    stripped = piece.strip()
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + lead + len(stripped), stripped


# -- fusion ---------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Iterable[Sequence[K]], *, k: int = 60
) -> list[tuple[K, float]]:
    """Items of every ranking (best first) with their fused score ``sum(1 / (k + rank))``
    over the rankings they appear in (rank from 1), best first; ties keep first-seen order."""
    fused: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(fused)}
    return [
        (item, fused[item]) for item in sorted(fused, key=lambda item: (-fused[item], order[item]))
    ]
