"""The content guard (``spec.runtime.guard``): the policy around the checks.

``input``: the caller's new messages are screened before the model sees them (and before
memory records them). ``output``: the answer is screened before the caller sees it. A deny
pattern match blocks or, with ``action: redact``, is masked (:data:`MASK`); a classifier's
flag (moderation endpoint, guard model) always blocks. A block raises
:class:`~.errors.ContentBlockedError`, which the loop turns into the refusal (finish reason
``content_filter``) unless part of the answer was already streamed — then the stream ends
with the error.

Streaming (:class:`GuardedStream`): text reaches the caller only after it was checked. The
last :data:`HOLD` characters are held back, so a pattern match up to that long is caught (or
masked) before any of it is released; with a classifier, text is released in steps of at
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


class Screen:
    """One run's guard: the snapshot's checks and policy, and the run's metrics."""

    def __init__(self, snapshot: Snapshot, metrics: Metrics) -> None:
        spec = snapshot.config.guard
        assert spec is not None
        assert snapshot.guard is not None
        self.spec = spec
        self.checks: ContentGuard = snapshot.guard
        self.metrics = metrics
        self.redacted = False
        self.stream: GuardedStream | None = None

    def on(self, stage: str) -> bool:
        return stage in self.spec.stages

    def patterns(self, text: str, stage: str, *, start: int = 0) -> str:
        """``text`` with its matches masked (redact); raises on a match (block). Matches
        ending before ``start`` are left alone (already released)."""
        base = max(0, start - HOLD)  # what was released was checked: rescan only its tail
        found = [
            (begin + base, end + base, i)
            for begin, end, i in self.checks.matches(text[base:])
            if end + base > start
        ]
        if not found:
            return text
        first = min(found)
        category = f"denyPatterns[{first[2]}]"
        if self.spec.action == "block":
            _decided(self.metrics, stage, "block", category)
            raise ContentBlockedError(self.spec.refusal, stage=stage, category=category)
        _decided(self.metrics, stage, "redact", category)
        self.redacted = True
        return _masked(text, found, start)

    async def classify(self, text: str, stage: str) -> None:
        """Raises when a classifier flags ``text`` (or cannot answer and the guard fails
        closed)."""
        if not self.checks.classifies or not text.strip():
            return
        try:
            verdict: GuardVerdict | None = await self.checks.classify(text, stage=stage)
        except GuardUnavailableError:
            if self.spec.failure_mode == "closed":
                _decided(self.metrics, stage, "error_closed")
                raise
            _decided(self.metrics, stage, "error_open")
            return
        if verdict is not None:
            category = f"{verdict.check}:{verdict.category}"
            _decided(self.metrics, stage, "block", category)
            raise ContentBlockedError(self.spec.refusal, stage=stage, category=category)

    async def text(self, text: str, stage: str) -> str:
        """A whole text screened: patterns, then the classifiers."""
        screened = self.patterns(text, stage)
        await self.classify(screened, stage)
        if screened == text:
            _decided(self.metrics, stage, "allow")
        return screened

    @property
    def streamed(self) -> bool:
        """Whether guarded text already reached the caller (a block must then end it)."""
        return self.stream is not None and self.stream.released


def _masked(text: str, found: list[tuple[int, int, int]], start: int) -> str:
    out, at = [], 0
    for first, end, _ in sorted(found):
        begin = max(first, start, at)
        if end <= begin:
            continue
        out += [text[at:begin], MASK]
        at = end
    out.append(text[at:])
    return "".join(out)


class GuardedStream:
    """Wraps a run's ``on_delta``: the caller gets only checked text (module doc)."""

    def __init__(self, screen: Screen, on_delta: OnDelta) -> None:
        self._screen = screen
        self._send = on_delta
        self._text = ""
        """Everything streamed so far, masked where redacted."""
        self._released = 0
        self._classified = 0

    @property
    def released(self) -> bool:
        return self._released > 0

    @property
    def text(self) -> str:
        """What the model streamed so far (masked where redacted)."""
        return self._text

    async def add(self, delta: str) -> None:
        self._text = self._screen.patterns(self._text + delta, "output", start=self._released)
        ready = len(self._text) - HOLD
        if self._screen.checks.classifies:
            if ready - self._classified < CLASSIFY_EVERY:
                return
            await self._classify_to(ready)
        await self._release_to(ready)

    async def finish(self) -> None:
        """The rest, checked, then released (the run has its answer)."""
        self._text = self._screen.patterns(self._text, "output", start=self._released)
        await self._classify_to(len(self._text))
        await self._release_to(len(self._text))
        if not self._screen.redacted:
            _decided(self._screen.metrics, "output", "allow")

    async def _classify_to(self, end: int) -> None:
        if end > self._classified:
            window = self._text[max(0, self._classified - HOLD) : end]
            await self._screen.classify(window, "output")
            self._classified = end

    async def _release_to(self, end: int) -> None:
        if end > self._released:
            text, self._released = self._text[self._released : end], end
            await self._send(text)
