"""Embeddings for documents knowledge: an OpenAI-compatible ``/v1/embeddings`` client
(:class:`~..engine.ports.Embedder`) and the vector caches (:class:`~..engine.ports.VectorCache`)
that keep a chunk from being embedded twice: in Redis (shared by every replica and restart;
keys ``agentspec:vec:<hash>``, kept 30 days after they were last read or written) or in a
folder on this machine (``<state dir>/vectors``: restarts of a local agent, or a pod's
emptyDir; never pruned: it holds what the agent's documents ever were).

A cache is best effort: one that fails is a miss (and a write is dropped), never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from agentspec_runtime.engine.errors import ToolError

from .urls import public_url, redact, redis_location

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger(__name__)
VECTOR_TTL = 30 * 24 * 3600
_PREFIX = "agentspec:vec:"
_READ_BATCH = 256


class OpenAIEmbedder:
    def __init__(
        self, *, model: str, base_url: str, api_key: str | None, timeout: float = 30.0
    ) -> None:
        self._model = model
        self._base_url = base_url.rstrip("/")
        self._secret = api_key
        self._client = AsyncOpenAI(
            base_url=self._base_url,
            api_key=api_key or "unset",  # local servers accept any key; the SDK needs one
            max_retries=2,
            timeout=timeout,
            http_client=DefaultAioHttpClient(),
        )

    @property
    def identity(self) -> str:
        """Model and endpoint, credentials left out (it is shown in /status and logs)."""
        return f"{self._model}@{public_url(self._base_url)}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            answer = await self._client.embeddings.create(
                model=self._model, input=list(texts), encoding_format="float"
            )
            rows = sorted(answer.data, key=lambda d: d.index)
            vectors = [list(r.embedding) for r in rows]
        except openai.APIError as e:
            detail = redact(str(e), [self._secret] if self._secret else [])
            raise ToolError(f"embeddings model {self.identity}: {detail}") from e
        except (TypeError, ValueError, AttributeError, RuntimeError) as e:  # not the shape
            raise ToolError(f"embeddings model {self.identity}: unusable answer ({e})") from e
        if len(vectors) != len(texts):
            raise ToolError(
                f"embeddings model {self.identity}: answered {len(vectors)} vectors for "
                f"{len(texts)} texts"
            )
        return vectors

    async def aclose(self) -> None:
        await self._client.close()


class RedisVectorCache:
    def __init__(self, client: redis.Redis, url: str) -> None:
        self._client = client
        self._where = redis_location(url)

    @property
    def location(self) -> str:
        return self._where

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """In pipelines of ``_READ_BATCH`` keys; a hit's expiry starts again (a corpus in use
        never expires), a failed batch reads as misses."""
        from redis.exceptions import RedisError

        out: list[bytes | None] = []
        for start in range(0, len(keys), _READ_BATCH):
            batch = keys[start : start + _READ_BATCH]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.getex(_PREFIX + key, ex=VECTOR_TTL)
                    values = await pipe.execute()
            except RedisError as e:
                log.warning("vector cache %s: %s (read as misses)", self._where, e)
                values = [None] * len(batch)
            out += [v if isinstance(v, bytes) else None for v in values]
        return out

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        from redis.exceptions import RedisError

        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(_PREFIX + key, value, ex=VECTOR_TTL)
                await pipe.execute()
        except RedisError as e:
            log.warning("vector cache %s: %s (vectors not kept)", self._where, e)

    async def aclose(self) -> None:
        await self._client.aclose()


class FolderVectorCache:
    """One file per vector, written atomically (a rename), two levels of folders."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @property
    def location(self) -> str:
        return str(self._folder)

    def _path(self, key: str) -> Path:
        return self._folder / key[:2] / key

    def _get(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            try:
                out.append(self._path(key).read_bytes())
            except OSError:
                out.append(None)
        return out

    def _put(self, items: Mapping[str, bytes]) -> None:
        for key, value in items.items():
            path = self._path(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                os.replace(tmp, path)
            except OSError as e:
                log.warning("vector cache %s: %s (vectors not kept)", self._folder, e)
                with contextlib.suppress(OSError, UnboundLocalError):
                    os.unlink(tmp)
                return

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await asyncio.to_thread(self._get, keys)

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        await asyncio.to_thread(self._put, items)

    async def aclose(self) -> None:
        return None
