"""Consumer budgets: both limiters (this process's and a real ``redis-server``'s) keep the
same sliding window, and the policy that picks a consumer's budget.

In: charges against a window shortened to a second (the rules do not depend on its length);
for Redis, two clients standing for two replicas. Asserted: what fits and what is refused,
the retry and reset times, reservations settled both ways, refill after the window, and that
a concurrent burst takes exactly the budget — on one replica and across two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agentspec_runtime.adapters.rate_limits import InProcessLimiter
from agentspec_runtime.adapters.redis_limits import connect_redis_limiter
from agentspec_runtime.engine import limits
from agentspec_runtime.engine.errors import ConfigError, LimiterUnavailableError
from agentspec_runtime.engine.ports import Limits, RateDecision, RateLimiter
from agentspec_runtime.spec.agent import RateLimitSpec
from tests.support.procs import free_ports
from tests.support.redis_server import RedisServer, RespConnection

WINDOW = 1.0
Factory = Callable[[], Awaitable[RateLimiter]]


@pytest.fixture(params=["in-process", "redis"])
async def make_limiter(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Factory]:
    """Limiters sharing one store: in-process, one limiter; Redis, a client per call (a
    replica each)."""
    made: list[RateLimiter] = []
    shared = InProcessLimiter(window=WINDOW)

    async def make() -> RateLimiter:
        if request.param == "in-process":
            return shared
        url = request.getfixturevalue("redis_url")
        limiter = await connect_redis_limiter(url, client_name="test-limits", window=WINDOW)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def test_tokens_fit_until_the_budget_is_spent_and_settling_moves_it(
    make_limiter: Factory,
) -> None:
    limiter = await make_limiter()
    budget = Limits(tokens=100, requests=None)
    first = await limiter.charge("k", budget, tokens=60, requests=0)
    assert first.allowed
    assert first.tokens_remaining == 40
    assert first.reservation
    assert 0 < first.tokens_reset <= WINDOW
    refused = await limiter.charge("k", budget, tokens=50, requests=0)
    assert not refused.allowed
    assert refused.reservation is None
    assert 0 < refused.retry_after <= WINDOW
    assert refused.tokens_remaining == 40  # a refused charge takes nothing
    await limiter.settle("k", first.reservation, 30, reserved=60)  # spent less: refund 30
    second = await limiter.charge("k", budget, tokens=50, requests=0)
    assert second.allowed
    assert second.tokens_remaining == 20
    assert second.reservation is not None
    await limiter.settle("k", second.reservation, 70, reserved=50)  # more: the extra charged
    door = await limiter.charge("k", budget, tokens=0, requests=0)
    assert not door.allowed
    assert door.tokens_remaining == 0
    other = await limiter.charge("other", budget, tokens=100, requests=0)
    assert other.allowed
    assert other.tokens_remaining == 0


async def test_requests_are_counted_and_the_window_refills(make_limiter: Factory) -> None:
    limiter = await make_limiter()
    budget = Limits(tokens=None, requests=2)
    decisions = [await limiter.charge("k", budget, tokens=0, requests=1)]
    await asyncio.sleep(WINDOW / 2)
    decisions += [await limiter.charge("k", budget, tokens=0, requests=1) for _ in range(2)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert [d.requests_remaining for d in decisions] == [1, 0, 0]
    assert decisions[2].tokens_remaining is None
    wait = decisions[2].retry_after  # until the first request leaves the window
    assert 0 < wait <= WINDOW / 2
    await asyncio.sleep(wait + 0.05)
    again = await limiter.charge("k", budget, tokens=0, requests=1)
    assert again.allowed
    assert again.requests_remaining == 0
    assert 0 < again.requests_reset <= WINDOW


async def test_a_concurrent_burst_takes_exactly_the_budget(make_limiter: Factory) -> None:
    """50 charges of 10 at once against 100, spread over two limiters (two replicas for
    Redis): exactly 10 fit, whatever the interleaving."""
    one, two = await make_limiter(), await make_limiter()
    budget = Limits(tokens=100, requests=None)
    decisions: list[RateDecision] = await asyncio.gather(
        *((one if i % 2 else two).charge("burst", budget, tokens=10, requests=0) for i in range(50))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert all(0 < d.retry_after <= WINDOW for d in decisions if not d.allowed)


async def test_a_call_that_outlives_the_window_pays_its_underestimate(
    make_limiter: Factory,
) -> None:
    limiter = await make_limiter()
    budget = Limits(tokens=100, requests=None)
    held = await limiter.charge("k", budget, tokens=10, requests=0)
    assert held.reservation is not None
    await asyncio.sleep(WINDOW + 0.1)  # the reservation leaves the window mid-call
    await limiter.settle("k", held.reservation, 40, reserved=10)
    await limiter.settle("k", held.reservation, 40, reserved=10)  # a retry charges once
    after = await limiter.charge("k", budget, tokens=0, requests=0)
    assert after.tokens_remaining == 70


async def test_a_lost_running_total_is_recounted_from_the_charges(redis_url: str) -> None:
    limiter = await connect_redis_limiter(redis_url, client_name="t", window=WINDOW)
    try:
        budget = Limits(tokens=100, requests=None)
        assert (await limiter.charge("k", budget, tokens=70, requests=0)).allowed
        with RespConnection.from_url(redis_url) as redis:  # evicted, say
            assert redis.command("DEL", "agentspec:ratelimit:{k}:tot") == 1
        refused = await limiter.charge("k", budget, tokens=50, requests=0)
        assert not refused.allowed
        assert refused.tokens_remaining == 30
    finally:
        await limiter.aclose()


async def test_an_unreachable_redis_rejects_the_config_and_a_lost_one_fails_closed(
    redis_url: str,
) -> None:
    (port,) = free_ports(1)
    with pytest.raises(ConfigError, match=rf"rateLimit: Redis at redis://127.0.0.1:{port}/0"):
        await connect_redis_limiter(f"redis://127.0.0.1:{port}/0", client_name="t")
    server = RedisServer().start()
    limiter = await connect_redis_limiter(server.url_for_db(0), client_name="t")
    try:
        budget = Limits(tokens=10, requests=None)
        assert (await limiter.charge("k", budget, tokens=5, requests=0)).allowed
        server.stop()
        with pytest.raises(LimiterUnavailableError, match="rate-limit store at redis://"):
            await limiter.charge("k", budget, tokens=5, requests=0)
    finally:
        await limiter.aclose()


def test_a_consumer_gets_its_class_budget_else_the_default() -> None:
    spec = RateLimitSpec.model_validate(
        {
            "tokensPerMinute": 1000,
            "requestsPerMinute": 10,
            "priorityClasses": [
                {"name": "gold", "consumers": ["team-a"], "tokensPerMinute": 5000, "priority": 90},
                {
                    "name": "batch",
                    "consumers": ["system:serviceaccount:ns:etl"],
                    "requestsPerMinute": 2,
                    "priority": 10,
                },
            ],
        }
    )
    assert limits.budget_of(spec, "team-a") == limits.Budget(
        "gold", 90, Limits(tokens=5000, requests=10)
    )
    assert limits.budget_of(spec, "system:serviceaccount:ns:etl") == limits.Budget(
        "batch", 10, Limits(tokens=1000, requests=2)
    )
    default = limits.Budget("default", 0, Limits(tokens=1000, requests=10))
    assert limits.budget_of(spec, "someone") == default
    assert limits.budget_of(spec, None) == default
    # while the model pushes back, every class below the highest gets its share
    assert limits.budget_of(spec, "team-a", 0.25).limits == Limits(tokens=5000, requests=10)
    assert limits.budget_of(spec, "x", 0.25).limits == Limits(tokens=250, requests=2)
    assert limits.budget_of(spec, "system:serviceaccount:ns:etl", 0.1).limits == Limits(
        tokens=100, requests=1
    )
    with pytest.raises(ValueError, match="consumer 'a' is in both 'x' and 'y'"):
        RateLimitSpec.model_validate(
            {
                "priorityClasses": [
                    {"name": "x", "consumers": ["a"]},
                    {"name": "y", "consumers": ["a"]},
                ]
            }
        )


def test_headers_follow_openai_and_name_only_the_limited_dimensions() -> None:
    refused = RateDecision(
        allowed=False,
        limits=Limits(tokens=1000, requests=None),
        tokens_remaining=12,
        requests_remaining=None,
        retry_after=2.2,
        tokens_reset=61.5,
        requests_reset=0.0,
    )
    assert limits.headers(refused) == {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "12",
        "x-ratelimit-reset-tokens": "1m0s",  # never beyond the window
        "retry-after": "3",
    }
    admitted = RateDecision(
        allowed=True,
        limits=Limits(tokens=None, requests=5),
        tokens_remaining=None,
        requests_remaining=4,
        retry_after=0.0,
        tokens_reset=0.0,
        requests_reset=0.25,
    )
    assert limits.headers(admitted) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "250ms",
    }
