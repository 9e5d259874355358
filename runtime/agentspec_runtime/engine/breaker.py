"""A circuit breaker for calls to things that fail together (the model, partners, servers).

Closed: calls go through; ``failures`` consecutive failures open it. Open: calls fail at
once (the model is told the dependency is unavailable) until ``reset_after`` seconds pass.
Half-open: one trial call goes through; success closes it, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from agentspec_runtime.engine.errors import ToolError

State = Literal["closed", "open", "half-open"]


class CircuitOpenError(ToolError):
    """The breaker is open: the call was not attempted."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures: int = 3,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failures
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset_after:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Raise ``CircuitOpenError`` unless a call may go through now."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._trial:
            self._trial = True  # exactly one trial call while half-open
            return
        wait = self.seconds_to_trial()
        raise CircuitOpenError(
            f"{self.name} is unavailable after {self._failures} failed calls "
            f"(circuit open; next try in {wait:.0f}s)"
        )

    def seconds_to_trial(self) -> float:
        """Seconds until the next trial call is let through (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._reset_after - (self._clock() - self._opened_at))

    def release(self) -> None:
        """The call ended without a verdict (cancelled): free the trial slot, change nothing."""
        self._trial = False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()
