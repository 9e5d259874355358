"""The fake embeddings model: deterministic vectors that know synonyms and are blind to codes.

A text's vector adds, for each of its words (lower-cased, stop words out), one unit on the
dimension of the word's *concept* when :data:`CONCEPTS` lists it (``vacation``, ``holiday``
and ``pto`` share one), else a smaller weight on a dimension picked by the word's hash. Words
holding a digit (``HR-27B``, ``2026``) add nothing, as real embedding models blur exact codes.
So dense retrieval finds a paraphrase BM25 misses, and BM25 finds a form number dense
retrieval misses: the labelled set of the knowledge tests relies on both.

Must not: depend on anything but the standard library (the tests' MCP vector store uses it).
"""

from __future__ import annotations

import hashlib
import math
import re

DIMENSIONS = 64
_WORD = re.compile(r"[\w-]+")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by can do does for from how i if in is it my of on or the to what "
        "when where which who will with you your",
    )
)
_SYNONYMS = [
    ("vacation", "holiday", "holidays", "pto", "leave", "annual", "time-off", "days-off"),
    ("sick", "illness", "ill", "unwell", "medical"),
    ("parental", "maternity", "paternity", "newborn", "baby", "adoption"),
    ("remote", "home", "telework", "wfh", "work-from-home"),
    ("expenses", "expense", "reimbursement", "reimbursed", "refund", "claim", "claims"),
    ("travel", "trip", "flight", "flights", "hotel", "hotels"),
    ("salary", "pay", "payroll", "wage", "wages", "compensation"),
    ("laptop", "computer", "equipment", "hardware", "device"),
    ("security", "password", "passwords", "phishing", "credentials"),
    ("carry", "rollover", "roll", "unused", "transfer"),
    ("approve", "approval", "approved", "manager", "sign-off"),
    ("notice", "resign", "resignation", "quit", "leaving"),
]
CONCEPTS = {word: i for i, group in enumerate(_SYNONYMS) for word in group}
"""Word -> concept dimension; the other words hash onto the dimensions after them."""


def _dimension(word: str) -> int:
    digest = hashlib.sha256(word.encode()).digest()
    free = DIMENSIONS - len(_SYNONYMS)
    return len(_SYNONYMS) + int.from_bytes(digest[:4], "big") % free


def embed(text: str) -> list[float]:
    """The unit vector of ``text`` (all zeros for a text with no usable word)."""
    vector = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        if word in _STOP or any(c.isdigit() for c in word):
            continue
        concept = CONCEPTS.get(word)
        if concept is not None:
            vector[concept] += 1.0
        else:
            vector[_dimension(word)] += 0.35
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector
