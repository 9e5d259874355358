"""The one seam to the Kubernetes API (lightkube): apply, delete, status, Events, lookups.

Every lightkube/httpx error is translated here into :mod:`errors` (``raise ... from e``):
throttling, conflicts, timeouts and 5xx are temporary; validation and authorization failures
are permanent. Callers never see a library exception.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
import msgspec
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Event, Secret, Service, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import PatchType

from agentspec_runtime.spec import GROUP, VERSION

from .errors import PermanentError, TemporaryError
from .settings import FIELD_MANAGER

Json = dict[str, Any]
log = logging.getLogger(__name__)

ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
AgentSpecRes = create_namespaced_resource(GROUP, VERSION, "AgentSpec", "agentspecs")
PromptTemplateRes = create_namespaced_resource(GROUP, VERSION, "PromptTemplate", "prompttemplates")
McpServerRes = create_namespaced_resource(GROUP, VERSION, "McpServer", "mcpservers")

RESOURCES: dict[str, type[NamespacedResource]] = {
    "ConfigMap": ConfigMap,
    "ServiceAccount": ServiceAccount,
    "Role": Role,
    "RoleBinding": RoleBinding,
    "Service": Service,
    "NetworkPolicy": NetworkPolicy,
    "Deployment": Deployment,
    "PodDisruptionBudget": PodDisruptionBudget,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "ScaledObject": ScaledObject,
    "AgentSpec": AgentSpecRes,
    "PromptTemplate": PromptTemplateRes,
    "McpServer": McpServerRes,
}
KEDA_CRD = "scaledobjects.keda.sh"
_TEMPORARY_CODES = {408, 409, 425, 429, 500, 502, 503, 504}
NOT_FOUND = 404
APPLY_RETRYABLE = frozenset({NOT_FOUND})
MAX_IN_FLIGHT = 20


def _translate(
    e: Exception, what: str, *, also_temporary: frozenset[int] = frozenset()
) -> Exception:
    if isinstance(e, ApiError):
        code = e.status.code or 0
        message = f"{what}: {e.status.message} ({code})"
        if code in _TEMPORARY_CODES or code in also_temporary:
            return TemporaryError(message)
        return PermanentError(message)
    return TemporaryError(f"{what}: {type(e).__name__}: {e}")


@dataclass(frozen=True)
class Applied:
    """What the apiserver answered to an apply: enough to detect drift and read readiness."""

    resource_version: str
    body: Json | None
    """The whole object for kinds whose status the reconciler reads (Deployment)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """Typed, error-translated calls; one shared connection pool for all reconciles."""

    def __init__(self, client: AsyncClient, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._client = client
        # More concurrency only queues in the apiserver, while the client's pool bookkeeping
        # grows with every waiting request; 20 is also httpx's keep-alive pool size.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.requests = 0
        """API calls made (for the benchmark's requests-per-reconcile figure)."""

    @classmethod
    def connect(cls, kubeconfig: Path | None) -> Kube:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        timeout = httpx2.Timeout(30.0)
        # HTTP/1.1 (pure-Python HTTP/2 measured ~10 % more CPU per request); the in-flight
        # limit below equals the pool's keep-alive size, so connections are reused, never
        # churned (unbounded concurrency spent a third of the CPU on TLS handshakes).
        client = AsyncClient(config, field_manager=FIELD_MANAGER, timeout=timeout)
        return cls(client)

    async def close(self) -> None:
        await self._client.close()

    async def apply(self, manifest: Json) -> Applied:
        kind = manifest["kind"]
        meta = manifest["metadata"]
        what = f"apply {kind} {meta['namespace']}/{meta['name']}"
        self.requests += 1
        async with self._in_flight:
            try:
                obj: Any = await self._client.patch(
                    RESOURCES[kind],
                    meta["name"],
                    manifest,
                    namespace=meta["namespace"],
                    patch_type=PatchType.APPLY,
                    field_manager=FIELD_MANAGER,
                    # Forced only over the fields in the manifest: those are ours by definition.
                    force=True,
                )
            except (ApiError, httpx2.HTTPError) as e:
                # An apply creates what is missing, so its 404 is never "absent": creating a
                # RoleBinding checks the Role it binds through the RBAC cache, which may not
                # hold a Role created a moment ago (non-admin operators only). Retry it.
                raise _translate(e, what, also_temporary=APPLY_RETRYABLE) from e
        body = msgspec.to_builtins(obj) if kind == "Deployment" else None
        return Applied(resource_version=obj.metadata.resourceVersion or "", body=body)

    async def delete(self, kind: str, *, namespace: str, name: str) -> bool:
        """Delete if present; False when it was already gone."""
        self.requests += 1
        async with self._in_flight:
            try:
                await self._client.delete(RESOURCES[kind], name, namespace=namespace)
            except ApiError as e:
                if e.status.code == NOT_FOUND:
                    return False
                raise _translate(e, f"delete {kind} {namespace}/{name}") from e
            except httpx2.HTTPError as e:
                raise _translate(e, f"delete {kind} {namespace}/{name}") from e
        return True

    async def names(
        self, kind: str, *, label_selector: str, namespace: str = "*"
    ) -> set[tuple[str, str]]:
        """``(namespace, name)`` of every object of ``kind`` with the labels (``*``: all)."""
        self.requests += 1
        async with self._in_flight:
            try:
                return {
                    (o.metadata.namespace or "", o.metadata.name or "")
                    async for o in self._client.list(
                        cast(Any, RESOURCES[kind]),
                        namespace=namespace,
                        labels=_labels(label_selector),
                    )
                }
            except (ApiError, httpx2.HTTPError) as e:
                raise _translate(e, f"list {kind}") from e

    async def patch_status(
        self, kind: str, *, namespace: str, name: str, status: Json, old: Json | None
    ) -> None:
        """Merge-patch the status subresource; keys gone from ``status`` are nulled."""
        patch: Json = dict(status)
        for key in old or {}:
            patch.setdefault(key, None)
        self.requests += 1
        async with self._in_flight:
            try:
                await self._client.patch(
                    RESOURCES[kind].Status,  # type: ignore[attr-defined]
                    name,
                    {"status": patch},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
            except ApiError as e:
                if e.status.code == NOT_FOUND:
                    return  # deleted meanwhile: nothing to report on
                raise _translate(e, f"status of {kind} {namespace}/{name}") from e
            except httpx2.HTTPError as e:
                raise _translate(e, f"status of {kind} {namespace}/{name}") from e

    async def secret_keys(self, *, namespace: str, name: str) -> set[str] | None:
        """The keys of a Secret (never its values), or None when it does not exist."""
        self.requests += 1
        async with self._in_flight:
            try:
                secret = await self._client.get(Secret, name, namespace=namespace)
            except ApiError as e:
                if e.status.code == NOT_FOUND:
                    return None
                raise _translate(e, f"get Secret {namespace}/{name}") from e
            except httpx2.HTTPError as e:
                raise _translate(e, f"get Secret {namespace}/{name}") from e
        return set(secret.data or {}) | set(secret.stringData or {})

    async def wait_served(
        self, kinds: tuple[str, ...], *, namespaces: list[str], within: float = 300.0
    ) -> None:
        """Return once every kind can be listed. Right after its CRD is created (a
        `helm install` creates CRDs and the operator together) the apiserver answers 404/429
        ("storage is (re)initializing") for a while; kopf's watches would give up on that."""
        deadline = asyncio.get_running_loop().time() + within
        for kind in kinds:
            for namespace in namespaces:
                while True:
                    try:
                        async for _ in self._client.list(
                            cast(Any, RESOURCES[kind]), namespace=namespace, chunk_size=1
                        ):
                            break
                        break
                    except (ApiError, httpx2.HTTPError) as e:
                        if asyncio.get_running_loop().time() > deadline:
                            raise _translate(e, f"list {kind}") from e
                        log.info("waiting for %s to be served: %s", kind, e)
                        await asyncio.sleep(1.0)

    async def crd_exists(self, name: str) -> bool:
        self.requests += 1
        async with self._in_flight:
            try:
                await self._client.get(CustomResourceDefinition, name)
            except ApiError as e:
                if e.status.code == NOT_FOUND:
                    return False
                raise _translate(e, f"get CRD {name}") from e
            except httpx2.HTTPError as e:
                raise _translate(e, f"get CRD {name}") from e
        return True

    async def post_event(self, involved: Json, *, warning: bool, reason: str, message: str) -> None:
        """A core/v1 Event on ``involved`` (apiVersion, kind, name, namespace, uid).

        Best effort: an Event that cannot be written is logged, never retried.
        """
        meta = involved
        now = _now()
        event = Event.from_dict(
            {
                "metadata": {
                    "name": f"{meta['name']}.{secrets.token_hex(8)}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message[:1024],
                "type": "Warning" if warning else "Normal",
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": FIELD_MANAGER,
                "reportingInstance": FIELD_MANAGER,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )
        self.requests += 1
        async with self._in_flight:
            try:
                await self._client.create(cast(Any, event))
            except (ApiError, httpx2.HTTPError) as e:
                log.warning("could not post Event %s on %s: %s", reason, meta["name"], e)


def _labels(selector: str) -> dict[str, Any]:
    pairs = (item.split("=", 1) for item in selector.split(",") if item)
    return {k: v for k, v in pairs}  # noqa: C416 - pairs are lists, not tuples
