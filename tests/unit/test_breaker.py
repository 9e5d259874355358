"""The circuit breaker's states under an injected clock: closed -> open -> half-open -> closed."""

from __future__ import annotations

import pytest

from agentspec_runtime.engine.breaker import CircuitBreaker, CircuitOpenError


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # a call, so mypy does not carry narrowing between asserts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_recovers_through_one_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker("partner hr", failures=3, reset_after=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.failure()
    assert state(breaker) == "closed"
    breaker.before_call()
    breaker.failure()
    assert state(breaker) == "open"
    with pytest.raises(CircuitOpenError, match="partner hr is unavailable after 3 failed calls"):
        breaker.before_call()
    clock.now += 10
    assert state(breaker) == "half-open"
    breaker.before_call()  # the one trial
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # no second trial while the first is out
    breaker.failure()
    assert state(breaker) == "open", "a failed trial opens it again"
    clock.now += 10
    breaker.before_call()
    breaker.success()
    assert state(breaker) == "closed"
    breaker.before_call()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("x", failures=2, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert state(breaker) == "closed"
