"""The Kubernetes API, as the Studio's user: their kubeconfig's current context (or a given
one), so what they may see and change is what their RBAC lets them.

Every error the API answers becomes :class:`KubeApiError` with the API's status and message
(and, for a refused object, each field's cause: a CEL rule's message, a schema error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import (
    create_global_resource,
    create_namespaced_resource,
)
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Event, Service, ServiceAccount

from .views import FIELD_MANAGER, Json, KubeApiError, answer_of

GROUP, VERSION = "agentspec.io", "v1alpha1"
KINDS = {
    "AgentSpec": create_namespaced_resource(GROUP, VERSION, "AgentSpec", "agentspecs"),
    "PromptTemplate": create_namespaced_resource(
        GROUP, VERSION, "PromptTemplate", "prompttemplates"
    ),
    "McpServer": create_namespaced_resource(GROUP, VERSION, "McpServer", "mcpservers"),
}
PLURALS = {
    "AgentSpec": "agentspecs",
    "PromptTemplate": "prompttemplates",
    "McpServer": "mcpservers",
}
CRD = create_global_resource(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions"
)
CHILD_KINDS: list[Any] = [Deployment, Service, ConfigMap, ServiceAccount]
READ_RETRIES = 3
T = TypeVar("T")
UNREACHABLE = (OSError, httpx2.TransportError)
"""What a cluster that cannot be reached raises (refused, timed out, TLS)."""


def _problem(error: ApiError) -> KubeApiError:
    status = error.status
    details = getattr(status, "details", None)
    causes = [
        {"field": c.field, "message": c.message, "reason": c.reason}
        for c in (getattr(details, "causes", None) or [])
    ]
    return KubeApiError(int(status.code or 500), str(status.message or error), causes)


def _in(obj: Json, namespace: str) -> Json:
    """``obj`` in ``namespace`` (the page's: a namespace in the YAML must agree)."""
    given = (obj.get("metadata") or {}).get("namespace")
    if given not in (None, namespace):
        raise KubeApiError(422, f"the object names namespace {given!r}, the page {namespace!r}")
    return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}


def _dict(obj: Any) -> Json:
    out: Json = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return out


class Cluster:
    def __init__(
        self, client: AsyncClient, *, namespace: str, config: SingleConfig | None = None
    ) -> None:
        self.client = client
        self.namespace = namespace
        self._config = config
        self._http: httpx2.AsyncClient | None = None
        """The kubeconfig context's namespace: the one pages open on."""

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> Cluster:
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        single = config.get(context_name=context)
        if single is None:
            raise ValueError(f"no context {context!r} in the kubeconfig")
        client = AsyncClient(single, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(15))
        return cls(client, namespace=single.namespace or "default", config=single)

    def _kind(self, kind: str) -> Any:
        try:
            return KINDS[kind]
        except KeyError:
            raise KubeApiError(404, f"the Studio does not edit kind {kind!r}") from None

    async def check(self) -> None:
        """Raise ``KubeApiError`` (or a connection error) unless the API answers this user."""
        await self.list_of("AgentSpec", self.namespace)

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read, repeated when the apiserver answers 429 (a CRD's storage starting, API
        priority and fairness): a read is safe to repeat."""
        for attempt in range(READ_RETRIES + 1):
            try:
                return await read()
            except ApiError as e:
                if e.status.code != 429 or attempt == READ_RETRIES:
                    raise _problem(e) from e
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    async def list_of(self, kind: str, namespace: str) -> list[Json]:
        resource = self._kind(kind)

        async def read() -> list[Json]:
            return [_dict(o) async for o in self.client.list(resource, namespace=namespace)]

        return await self._read(read)

    async def get(self, kind: str, namespace: str, name: str) -> Json | None:
        resource = self._kind(kind)

        async def read() -> Json | None:
            try:
                return _dict(await self.client.get(resource, name, namespace=namespace))
            except ApiError as e:
                if e.status.code == 404:
                    return None
                raise

        return await self._read(read)

    async def apply(self, obj: Json, namespace: str, *, dry_run: bool, force: bool = False) -> Json:
        """Server-side apply under the Studio's field manager; fields another manager owns
        are a 409 (``FieldManagerConflict`` causes) unless ``force`` takes them over."""
        resource = self._kind(obj["kind"]).from_dict(_in(obj, namespace))
        try:
            done = await self.client.apply(
                resource, field_manager=FIELD_MANAGER, dry_run=dry_run, force=force
            )
        except ApiError as e:
            raise _problem(e) from e
        return _dict(done)

    async def replace(self, obj: Json, namespace: str) -> Json:
        """An update at the object's resourceVersion: a concurrent change is a 409."""
        resource = self._kind(obj["kind"]).from_dict(_in(obj, namespace))
        try:
            done = await self.client.replace(resource, field_manager=FIELD_MANAGER)
        except ApiError as e:
            raise _problem(e) from e
        return _dict(done)

    async def events(self, namespace: str, kind: str, name: str) -> list[Json]:
        try:
            found = [
                _dict(e)
                async for e in self.client.list(
                    Event,
                    namespace=namespace,
                    fields={"involvedObject.kind": kind, "involvedObject.name": name},
                )
            ]
        except ApiError as e:
            raise _problem(e) from e
        return [
            {
                "type": e.get("type"),
                "reason": e.get("reason"),
                "message": e.get("message"),
                "count": e.get("count"),
                "lastTimestamp": e.get("lastTimestamp") or e.get("eventTime"),
            }
            for e in found
        ]

    async def children(self, namespace: str, name: str, uid: str) -> list[Json]:
        """The objects the operator made for an agent: those labelled with its name (one
        list each, not the namespace's every object) that it owns."""
        out: list[Json] = []
        for kind in CHILD_KINDS:
            try:
                async for obj in self.client.list(
                    kind, namespace=namespace, labels={"app.kubernetes.io/instance": name}
                ):
                    meta = obj.metadata
                    owners = (meta.ownerReferences if meta else None) or []
                    if any(o.uid == uid for o in owners):
                        out.append({"kind": kind.__name__, "name": meta.name if meta else None})
            except ApiError as e:
                if e.status.code != 403:  # what the user may not list, they do not see
                    raise _problem(e) from e
        return out

    async def schema(self, kind: str) -> Json:
        """The installed CRD's OpenAPI schema of ``kind`` (what the server validates)."""
        self._kind(kind)
        try:
            crd = _dict(await self.client.get(CRD, f"{PLURALS[kind]}.{GROUP}"))
        except ApiError as e:
            raise _problem(e) from e
        version = next((v for v in crd["spec"]["versions"] if v["name"] == VERSION), None)
        if version is None:
            raise KubeApiError(404, f"the installed {kind} CRD does not serve {VERSION}")
        schema: Json = version["schema"]["openAPIV3Schema"]
        return schema

    async def watch(self, namespace: str) -> AsyncIterator[Json]:
        """Every change to the agents, prompts and MCP servers of ``namespace``; a watch
        this user may not make is said once (type ERROR) and not retried, another failure
        is said and retried with backoff (1 s doubling to 30 s)."""
        queue: asyncio.Queue[Json] = asyncio.Queue(maxsize=1000)

        async def follow(kind: str) -> None:
            backoff = 1.0
            while True:
                try:
                    async for op, obj in self.client.watch(self._kind(kind), namespace=namespace):
                        meta = obj.metadata
                        await queue.put(
                            {"kind": kind, "type": op, "name": meta.name if meta else None}
                        )
                        backoff = 1.0
                except ApiError as e:
                    await queue.put({"kind": kind, "type": "ERROR", "message": str(e)})
                    if e.status.code in (401, 403, 404):
                        return
                except Exception as e:  # the cluster unreachable, credentials expired
                    await queue.put({"kind": kind, "type": "ERROR", "message": str(e)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

        tasks = [asyncio.create_task(follow(kind)) for kind in KINDS]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()

    async def proxy_post(
        self,
        namespace: str,
        service: str,
        path: str,
        body: Json,
        *,
        port: int,
        headers: dict[str, str],
    ) -> tuple[int, Json]:
        """POST to a Service through the apiserver's service proxy (the user needs
        ``services/proxy`` there): the Studio reaches an agent as the user may, from outside
        the cluster."""
        url = _proxy_path(namespace, service, port, path)
        response = await self._proxy_client().post(url, json=body, headers=headers)
        return response.status_code, answer_of(response.text)

    async def proxy_get(
        self, namespace: str, service: str, path: str, *, port: int
    ) -> tuple[int, Json]:
        """GET through the service proxy (``services/proxy`` get)."""
        response = await self._proxy_client().get(_proxy_path(namespace, service, port, path))
        return response.status_code, answer_of(response.text)

    @contextlib.asynccontextmanager
    async def proxy_stream(
        self,
        namespace: str,
        service: str,
        path: str,
        body: Json,
        *,
        port: int,
        headers: dict[str, str],
    ) -> AsyncIterator[httpx2.Response]:
        """``proxy_post`` with the answer read as it comes (an SSE stream): the apiserver's
        service proxy passes it through unbuffered."""
        url = _proxy_path(namespace, service, port, path)
        async with self._proxy_client().stream(
            "POST", url, json=body, headers=headers, timeout=STREAM_TIMEOUT
        ) as answer:
            yield answer

    def _proxy_client(self) -> httpx2.AsyncClient:
        if self._config is None:
            raise KubeApiError(501, "no kubeconfig to reach Services through")
        if self._http is None:
            self._http = client_adapter.AsyncClient(
                self._config, client_adapter.ConnectionParams(timeout=httpx2.Timeout(180))
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.client.close()


STREAM_TIMEOUT = httpx2.Timeout(30.0, read=600.0)
"""A streamed answer may be silent while a tool or partner works (a partner may take 300 s)."""


def _proxy_path(namespace: str, service: str, port: int, path: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
