"""Consumer budgets in Redis, one sliding window shared by every replica of an agent.

Layout per key ``<k>`` (agent and consumer hash, in a hash tag so the keys share a Redis
Cluster slot):

* ``agentspec:ratelimit:{<k>}:tok`` — a sorted set of token charges (member: the charge id,
  score: its time in ms), ``:toh`` a hash charge id -> tokens, ``:tot`` their running total;
* ``agentspec:ratelimit:{<k>}:req`` — a sorted set of the requests' times.

A charge is one Lua script: it drops what left the window, checks both budgets against
Redis's own clock (replicas' clocks never matter) and records the charge only if both fit —
so two replicas can never both take the last of a budget. A settlement changes a charge's
amount in place (a reservation already out of the window is charged what it underestimated,
at the time of settling). Both scripts are idempotent: the client retries a script whose
reply was lost. Every key expires a second after the window; a running total that is missing
(evicted) is recounted from the charges. Same rules as the in-process limiter
(``rate_limits.py``).
"""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from agentspec_runtime.engine.errors import LimiterUnavailableError
from agentspec_runtime.engine.ports import Limits, RateDecision

from .redis_conn import open_redis
from .urls import redis_location

_CHARGE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local edge = t - window
while true do
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', edge, 'LIMIT', 0, 500)
  if #old == 0 then break end
  local amounts = redis.call('HMGET', KEYS[2], unpack(old))
  local freed = 0
  for i = 1, #amounts do freed = freed + (tonumber(amounts[i]) or 0) end
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
  redis.call('DECRBY', KEYS[3], freed)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', edge)
local total = tonumber(redis.call('GET', KEYS[3]) or '-1')
if total < 0 then
  -- the running total is missing (evicted) or wrong: the charges themselves say
  total = 0
  for _, amount in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(amount) end
  redis.call('SET', KEYS[3], total)
end
local count = redis.call('ZCARD', KEYS[4])
local tlim, rlim = tonumber(ARGV[2]), tonumber(ARGV[3])
local tcost, rcost = tonumber(ARGV[4]), tonumber(ARGV[5])
local refused, retry = 0, 0
-- a retried script (the client resends after a lost reply) must not charge twice
local again = redis.call('HEXISTS', KEYS[2], ARGV[6]) == 1
  or redis.call('ZSCORE', KEYS[4], ARGV[6]) ~= false
if again then tcost, rcost = 0, 0 end
if again then
elseif tlim >= 0 then
  local need = total + math.max(tcost, 1) - tlim
  if need > 0 then
    refused = 1
    local wait = -1
    local freed = 0
    local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[2], entries[i])) or 0)
      if freed >= need then wait = tonumber(entries[i + 1]) + window - t break end
    end
    if wait < 0 then retry = -1 elseif retry >= 0 and wait > retry then retry = wait end
  end
end
if rlim >= 0 and not again then
  local need = count + math.max(rcost, 1) - rlim
  if need > 0 then
    refused = 1
    local at = redis.call('ZRANGE', KEYS[4], need - 1, need - 1, 'WITHSCORES')
    local wait = window
    if #at > 0 then wait = tonumber(at[2]) + window - t end
    if retry >= 0 and wait > retry then retry = wait end
  end
end
if refused == 0 then
  if tcost > 0 then
    redis.call('ZADD', KEYS[1], t, ARGV[6])
    redis.call('HSET', KEYS[2], ARGV[6], tcost)
    total = redis.call('INCRBY', KEYS[3], tcost)
  end
  if rcost > 0 then
    redis.call('ZADD', KEYS[4], t, ARGV[6])
    count = count + 1
  end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], window + 1000) end
local treset, rreset = 0, 0
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #newest > 0 then treset = tonumber(newest[2]) + window - t end
newest = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
if #newest > 0 then rreset = tonumber(newest[2]) + window - t end
return {1 - refused, total, count, retry, treset, rreset}
"""

_SETTLE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[5])
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local at = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
  if at > t - window then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - tonumber(old))
    return 1
  end
  -- out of the window, not yet swept: gone now
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DECRBY', KEYS[3], tonumber(old))
end
-- the reservation left the window (a call longer than it): what it underestimated is
-- charged now, as a charge of its own (the settlement's id: a retry charges it once)
local extra = tonumber(ARGV[2]) - tonumber(ARGV[3])
if extra <= 0 or redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], t, ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], extra)
redis.call('INCRBY', KEYS[3], extra)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], window + 1000) end
return 2
"""


def _keys(key: str) -> list[str]:
    base = f"agentspec:ratelimit:{{{key}}}"
    return [f"{base}:tok", f"{base}:toh", f"{base}:tot", f"{base}:req"]


class RedisLimiter:
    def __init__(self, client: redis.Redis, *, where: str, window: float = 60.0) -> None:
        self._client = client
        self._where = where
        self._window_ms = int(window * 1000)
        self._charge = client.register_script(_CHARGE)
        self._settle = client.register_script(_SETTLE)

    @property
    def location(self) -> str:
        return self._where

    def _failed(self, error: RedisError) -> LimiterUnavailableError:
        return LimiterUnavailableError(
            f"the rate-limit store at {self._where} failed ({type(error).__name__})"
        )

    async def charge(self, key: str, limits: Limits, *, tokens: int, requests: int) -> RateDecision:
        charge_id = uuid.uuid4().hex
        args: list[int | str] = [
            self._window_ms,
            -1 if limits.tokens is None else limits.tokens,
            -1 if limits.requests is None else limits.requests,
            tokens,
            requests,
            charge_id,
        ]
        try:
            raw: Any = await self._charge(keys=_keys(key), args=args)
        except RedisError as e:
            raise self._failed(e) from e
        allowed, total, count, retry, treset, rreset = (int(v) for v in raw)
        return RateDecision(
            allowed=bool(allowed),
            limits=limits,
            tokens_remaining=None if limits.tokens is None else max(0, limits.tokens - total),
            requests_remaining=None if limits.requests is None else max(0, limits.requests - count),
            retry_after=float("inf") if retry < 0 else retry / 1000,
            tokens_reset=treset / 1000,
            requests_reset=rreset / 1000,
            reservation=charge_id if allowed and tokens > 0 else None,
        )

    async def settle(self, key: str, reservation: str, tokens: int, *, reserved: int) -> None:
        args: list[int | str] = [reservation, tokens, reserved, f"{reservation}+", self._window_ms]
        try:
            await self._settle(keys=_keys(key), args=args)
        except RedisError as e:
            raise self._failed(e) from e

    async def aclose(self) -> None:
        await self._client.aclose()


async def connect_redis_limiter(
    url: str, *, client_name: str, window: float = 60.0
) -> RedisLimiter:
    """A limiter on ``url`` (checked with a PING: see ``redis_conn``)."""
    client = await open_redis(url, client_name=client_name, purpose="rateLimit")
    return RedisLimiter(client, where=redis_location(url), window=window)
