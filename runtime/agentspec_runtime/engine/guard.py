"""The content guard (``spec.runtime.guard``): the policy around the checks.

``input``: everything the caller wrote — its messages of any role, the tool-call arguments
in them, the prompt variables it set — is screened before the model sees it (and before
memory records it). ``output``: the answer is screened before the caller sees it. A deny
pattern match blocks or, with ``action: redact``, is masked (:data:`MASK`); a classifier's
flag (moderation endpoint, guard model) always blocks. A block raises
:class:`~.errors.ContentBlockedError`, which the loop turns into the refusal (finish reason
``content_filter``) unless part of the answer was already streamed — then the stream ends
with the error.

Streaming (:class:`GuardedStream`): text reaches the caller only after it was checked. The
raw text is matched whole as it grows; the last :data:`HOLD` characters are held back, and so
is a match that may still grow, so a pattern match up to that long is caught (or masked
whole) before any of it is released; with a classifier, text is released in steps of at
least :data:`CLASSIFY_EVERY` characters, each step classified (with :data:`HOLD` characters
of what precedes it) before it goes out. At the end of the run the rest is checked, then
released.

A classifier that cannot answer: ``failureMode: closed`` fails the request (503
``guard_unavailable``); ``open`` lets the text through. Every decision is counted
(``agentspec_guard_decisions_total{stage,action,category}``) and recorded on the current
span as an ``agentspec.guard`` event — the category and the action, never the text.
"""

from __future__ import annotations

import logging
import time

from opentelemetry import trace

from .errors import ContentBlockedError, GuardUnavailableError
from .ports import ContentGuard, GuardVerdict
from .snapshot import Snapshot
from .telemetry import Metrics
from .types import OnDelta

log = logging.getLogger(__name__)

MASK = "[redacted]"
HOLD = 256
CLASSIFY_EVERY = 512


def _decided(metrics: Metrics, stage: str, action: str, category: str = "") -> None:
    metrics.guard.labels(metrics.agent, stage, action, category).inc()
    trace.get_current_span().add_event(
        "agentspec.guard",
        {
            "agentspec.guard.stage": stage,
            "agentspec.guard.action": action,
            "agentspec.guard.category": category,
        },
    )


Match = tuple[int, int, int]
"""(start, end, pattern index), in characters of the raw text."""


class Screen:
    """One run's guard: the snapshot's checks and policy, and the run's metrics."""

    def __init__(self, snapshot: Snapshot, metrics: Metrics) -> None:
        spec = snapshot.config.guard
        assert spec is not None
        assert snapshot.guard is not None
        self.spec = spec
        self.checks: ContentGuard = snapshot.guard
        self.metrics = metrics
        self.redacted: set[str] = set()
        """The stages that masked something in this run."""
        self.stream: GuardedStream | None = None
        self.context = ""
        """The caller's last message, shown to a guard model with an answer it judges."""
        self.classify_seconds = 0.0
        """Time spent in classifiers (not the model's: kept out of slowModelSeconds)."""

    def on(self, stage: str) -> bool:
        return stage in self.spec.stages

    def find(self, text: str, stage: str, *, start: int = 0) -> list[Match]:
        """The pattern matches of ``text`` that end after ``start`` (before it: released,
        checked then); raises on one when the action is block."""
        pos = max(0, start - HOLD)  # the tail of what was released may begin a match
        found = [m for m in self.checks.matches(text, pos) if m[1] > start]
        if found and self.spec.action == "block":
            category = f"denyPatterns[{min(found)[2]}]"
            _decided(self.metrics, stage, "block", category)
            raise ContentBlockedError(self.spec.refusal, stage=stage, category=category)
        return found

    def masked(self, text: str, found: list[Match], stage: str, *, count: bool = True) -> str:
        """``text`` with ``found`` masked (redact), the decision recorded once per call."""
        if not found:
            return text
        if count:
            _decided(self.metrics, stage, "redact", f"denyPatterns[{min(found)[2]}]")
            self.redacted.add(stage)
        return _masked(text, found, 0)

    def patterns(self, text: str, stage: str, *, count: bool = True) -> str:
        """A whole text through the patterns: masked, or raises (block)."""
        return self.masked(text, self.find(text, stage), stage, count=count)

    async def classify(self, text: str, stage: str) -> None:
        """Raises when a classifier flags ``text`` (or cannot answer and the guard fails
        closed)."""
        if not self.checks.classifies or not text.strip():
            return
        started = time.perf_counter()
        try:
            verdict: GuardVerdict | None = await self.checks.classify(
                text, stage=stage, context=self.context if stage == "output" else None
            )
        except GuardUnavailableError:
            if self.spec.failure_mode == "closed":
                _decided(self.metrics, stage, "error_closed")
                raise
            _decided(self.metrics, stage, "error_open")
            return
        finally:
            self.classify_seconds += time.perf_counter() - started
        if verdict is not None:
            category = f"{verdict.check}:{verdict.category}"
            _decided(self.metrics, stage, "block", category)
            raise ContentBlockedError(self.spec.refusal, stage=stage, category=category)

    async def text(self, text: str, stage: str) -> str:
        """A whole text screened: patterns, then the classifiers."""
        screened = self.patterns(text, stage)
        await self.classify(screened, stage)
        self.passed(stage)
        return screened

    def passed(self, stage: str) -> None:
        """Record that ``stage`` let its text through (as it was, unless redacted)."""
        if stage not in self.redacted:
            _decided(self.metrics, stage, "allow")

    @property
    def streamed(self) -> bool:
        """Whether guarded text already reached the caller (a block must then end it)."""
        return self.stream is not None and self.stream.released


def _masked(text: str, found: list[Match], start: int) -> str:
    out, at = [], start
    for first, end, _ in sorted(found):
        begin = max(first, at)
        if end <= begin:
            continue
        out += [text[at:begin], MASK]
        at = end
    out.append(text[at:])
    return "".join(out)


class GuardedStream:
    """Wraps a run's ``on_delta``: the caller gets only checked text (module doc).

    The raw text is kept whole and matched whole (a match keeps growing as text arrives:
    masking early would cut it); what is released is the masked text up to a point no
    match straddles and no match still growing starts before."""

    def __init__(self, screen: Screen, on_delta: OnDelta) -> None:
        self._screen = screen
        self._send = on_delta
        self._raw = ""
        self._released = 0
        """Raw characters released (masked as they went)."""
        self._classified = 0

    @property
    def released(self) -> bool:
        return self._released > 0

    @property
    def text(self) -> str:
        """What the model streamed so far (raw)."""
        return self._raw

    async def add(self, delta: str) -> None:
        self._raw += delta
        found = self._screen.find(self._raw, "output", start=self._released)
        ready = len(self._raw) - HOLD
        for begin, end, _ in found:
            if begin < ready and (end > ready or end == len(self._raw)):
                ready = begin  # straddles the point, or may still grow: held back whole
        if self._screen.checks.classifies:
            if ready - self._classified < CLASSIFY_EVERY:
                return
            await self._classify_to(ready, found)
        await self._release_to(ready, found)

    async def finish(self) -> None:
        """The rest, checked, then released (the run has its answer)."""
        found = self._screen.find(self._raw, "output", start=self._released)
        await self._classify_to(len(self._raw), found)
        await self._release_to(len(self._raw), found)
        self._screen.passed("output")

    def _view(self, begin: int, end: int, found: list[Match], *, count: bool) -> str:
        """The raw text from ``begin`` to ``end`` as the caller sees it (masked)."""
        inside = [(b - begin, min(e, end) - begin, i) for b, e, i in found if e > begin and b < end]
        return self._screen.masked(self._raw[begin:end], inside, "output", count=count)

    async def _classify_to(self, end: int, found: list[Match]) -> None:
        if end > self._classified:
            begin = max(0, self._classified - HOLD)
            await self._screen.classify(self._view(begin, end, found, count=False), "output")
            self._classified = end

    async def _release_to(self, end: int, found: list[Match]) -> None:
        if end > self._released:
            text = self._view(self._released, end, found, count=True)
            self._released = end
            await self._send(text)
