"""Conversation memory in Redis, shared by every replica of an agent.

Layout per conversation (``<k>`` = :func:`~agentspec_runtime.engine.memory.conversation_key`,
in a hash tag so both keys share a Redis Cluster slot):

* ``agentspec:memory:{<k>}:turns`` — a list of JSON turns ``{"seq", "messages", "tokens"}``,
  oldest first, at most ``MAX_TURNS``;
* ``agentspec:memory:{<k>}:meta`` — a hash: ``seq`` (the last turn's), ``summary`` (JSON)
  and ``through`` (the last seq folded into it).

Appending and folding are Lua scripts, so replicas never interleave inside one: seqs stay
unique and a fold applies only if nobody folded since the history it summarized was read.
Both keys expire ``ttl`` seconds after the last write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from agentspec_runtime.engine.errors import MemoryUnavailableError
from agentspec_runtime.engine.memory import MAX_TURNS, History, Summary, Turn
from agentspec_runtime.engine.types import Message

from .redis_conn import open_redis
from .urls import redis_location

_APPEND = """
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('RPUSH', KEYS[1], '{"seq":' .. seq .. ',' .. ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return seq
"""

_FOLD = """
local current = tonumber(redis.call('HGET', KEYS[2], 'through') or '0')
if current ~= tonumber(ARGV[3]) then return 0 end
local through = tonumber(ARGV[2])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local seq = tonumber(string.match(head, '^{"seq":(%d+),'))
  if seq == nil or seq > through then break end
  redis.call('LPOP', KEYS[1])
end
redis.call('HSET', KEYS[2], 'summary', ARGV[1], 'through', through)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


class RedisMemoryStore:
    def __init__(self, client: redis.Redis, *, where: str) -> None:
        self._client = client
        self._where = where
        self._append = client.register_script(_APPEND)
        self._fold = client.register_script(_FOLD)

    @property
    def location(self) -> str:
        return self._where

    def _failed(self, error: RedisError) -> MemoryUnavailableError:
        return MemoryUnavailableError(
            f"conversation memory at {self._where} failed ({type(error).__name__})"
        )

    async def load(self, key: str, *, last: int | None = None) -> History:
        turns_key, meta_key = _keys(key)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrange(turns_key, -last if last else 0, -1)
                pipe.hget(meta_key, "summary")
                raw_turns, raw_summary = await pipe.execute()
        except RedisError as e:
            raise self._failed(e) from e
        # one parse for the whole list: a json.loads call per turn costs more than the parsing
        turns = [
            Turn(int(data["seq"]), tuple(data["messages"]), int(data["tokens"]))
            for data in json.loads(b"[" + b",".join(raw_turns) + b"]")
        ]
        summary = None
        if raw_summary:
            data = json.loads(raw_summary)
            summary = Summary(str(data["text"]), int(data["through"]), int(data["tokens"]))
        return History(summary, tuple(turns))

    async def append(self, key: str, messages: Sequence[Message], *, tokens: int, ttl: int) -> None:
        body = json.dumps({"messages": list(messages), "tokens": tokens}, ensure_ascii=False)
        try:
            await self._append(keys=_keys(key), args=[body[1:], ttl * 1000, MAX_TURNS])
        except RedisError as e:
            raise self._failed(e) from e

    async def fold(self, key: str, summary: Summary, *, after: int, ttl: int) -> bool:
        body = json.dumps(
            {"text": summary.text, "through": summary.through, "tokens": summary.tokens},
            ensure_ascii=False,
        )
        try:
            done: Any = await self._fold(
                keys=_keys(key), args=[body, summary.through, after, ttl * 1000]
            )
        except RedisError as e:
            raise self._failed(e) from e
        return bool(done)

    async def aclose(self) -> None:
        await self._client.aclose()


def _keys(key: str) -> list[str]:
    return [f"agentspec:memory:{{{key}}}:turns", f"agentspec:memory:{{{key}}}:meta"]


async def connect_redis_memory(url: str, *, client_name: str) -> RedisMemoryStore:
    """A store on ``url`` (checked with a PING: see ``redis_conn``)."""
    client = await open_redis(url, client_name=client_name, purpose="memory")
    return RedisMemoryStore(client, where=redis_location(url))
