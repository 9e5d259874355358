"""The process kubelet's one seam to the apiserver: requests, errors, and list+watch caches.

Every call goes through :meth:`KubeApi.request`, which maps transport failures and error
statuses to :class:`ApiError` once. :class:`Informer` keeps a cache of one collection
current (list, then watch from its resourceVersion; a lost or expired watch lists again and
reports what vanished meanwhile), calling back on every change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

__all__ = ["ApiError", "Informer", "Json", "KubeApi", "key_of"]

Json = dict[str, Any]
log = logging.getLogger("kubelet.api")
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """An error status from the apiserver, or ``status`` 0 when it could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def key_of(obj: Json) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class KubeApi:
    """An admin client of one apiserver (client certificate)."""

    def __init__(self, *, server: str, ca: str, cert: str, key: str) -> None:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        self.server = server
        self._client = httpx.AsyncClient(
            base_url=server, verify=context, timeout=httpx.Timeout(30.0)
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        try:
            response = await self._client.request(
                method,
                path,
                params=params,
                content=None if body is None else json.dumps(body),
                headers={"Content-Type": content_type},
            )
        except httpx.HTTPError as e:
            raise ApiError(0, f"{method} {path}: {e!r}") from e
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {path}: {message}")
        result: Json = response.json() if response.content else {}
        return result

    async def get(self, path: str) -> Json | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def stream_watch(
        self, path: str, params: dict[str, str], on_line: Callable[[Json], Awaitable[None]]
    ) -> None:
        try:
            async with self._client.stream(
                "GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ApiError(response.status_code, f"watch {path}: {response.text}")
                async for line in response.aiter_lines():
                    if line:
                        await on_line(json.loads(line))
        except httpx.HTTPError as e:
            raise ApiError(0, f"watch {path}: {e!r}") from e


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class Informer:
    """Keeps ``cache`` (key → object) of ``path`` current and calls ``on_change(kind, obj)``
    with kind ``ADDED``, ``MODIFIED`` or ``DELETED`` for every change it sees."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        on_change: Callable[[str, Json], Awaitable[None]],
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.api = api
        self.path = path
        self.on_change = on_change
        self.params: dict[str, str] = {}
        if field_selector:
            self.params["fieldSelector"] = field_selector
        if label_selector:
            self.params["labelSelector"] = label_selector
        self.cache: dict[tuple[str, str], Json] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                version = await self._list()
                self.synced.set()
                while True:
                    version = await self._watch(version)
            except _ExpiredError:
                continue
            except ApiError as e:
                log.warning("%s: %s; listing again in 1s", self.path, e)
                await asyncio.sleep(1.0)

    async def _list(self) -> str:
        listed = await self.api.request("GET", self.path, params=self.params)
        seen = {}
        for item in listed.get("items") or []:
            seen[key_of(item)] = item
        gone = [k for k in self.cache if k not in seen]
        for k in gone:
            await self.on_change("DELETED", self.cache.pop(k))
        for k, item in seen.items():
            kind = "MODIFIED" if k in self.cache else "ADDED"
            if kind == "ADDED" or _rv(self.cache[k]) != _rv(item):
                self.cache[k] = item
                await self.on_change(kind, item)
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        params = {
            **self.params,
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        latest = version

        async def on_line(event: Json) -> None:
            nonlocal latest
            kind = event.get("type")
            obj: Json = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _ExpiredError
                raise ApiError(int(obj.get("code") or 0), str(obj.get("message")))
            latest = _rv(obj) or latest
            if kind == "BOOKMARK":
                return
            k = key_of(obj)
            if kind == "DELETED":
                self.cache.pop(k, None)
            else:
                self.cache[k] = obj
            await self.on_change(str(kind), obj)

        try:
            await self.api.stream_watch(self.path, params, on_line)
        except ApiError as e:
            if e.status == 410:
                raise _ExpiredError from e
            raise
        return latest


def _rv(obj: Json) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
