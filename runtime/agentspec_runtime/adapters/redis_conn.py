"""One way to open a Redis client (conversation memory, consumer budgets): short timeouts,
a couple of jittered retries, and a PING first, so an unreachable Redis rejects the config
(the last good one keeps serving) instead of failing every request after it."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from agentspec_runtime.engine.errors import ConfigError

from .urls import redis_location


async def open_redis(url: str, *, client_name: str, purpose: str) -> redis.Redis:
    """A checked client for ``url``; ``purpose`` names the use in the error (``memory``)."""
    where = redis_location(url)
    client = redis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=3,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2),
        health_check_interval=30,
        client_name=client_name,
    )
    try:
        await client.ping()
    except RedisError as e:
        await client.aclose()
        detail = str(e).replace(url, where)
        raise ConfigError(f"{purpose}: Redis at {where} cannot be reached: {detail}") from e
    return client
