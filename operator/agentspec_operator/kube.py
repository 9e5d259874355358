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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx2
import msgspec
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apiregistration_v1 import APIService
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Event, Secret, Service, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import PatchType

from agentspec_runtime.spec import GROUP, VERSION

from .errors import (
    ConflictError,
    NamespaceGoingError,
    OperatorError,
    PermanentError,
    TemporaryError,
)
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
_TEMPORARY_CODES = {408, 425, 429, 500, 502, 503, 504}
NOT_FOUND = 404
FORBIDDEN = 403
CONFLICT = 409
APPLY_RETRYABLE = frozenset({NOT_FOUND})
MAX_IN_FLIGHT = 20


def _translate(
    e: Exception, what: str, *, also_temporary: frozenset[int] = frozenset()
) -> OperatorError:
    if isinstance(e, ApiError):
        code = e.status.code or 0
        message = f"{what}: {e.status.message} ({code})"
        if code == CONFLICT:
            return ConflictError(message)
        causes = (e.status.details.causes if e.status.details else None) or []
        if code == FORBIDDEN and any(c.reason == "NamespaceTerminating" for c in causes):
            return NamespaceGoingError(f"{what}: its namespace is being deleted")
        if code in _TEMPORARY_CODES or code in also_temporary:
            return TemporaryError(message)
        return PermanentError(message)
    # transport failures (httpx2), TLS and socket errors, an unreadable answer: all "try later"
    return TemporaryError(f"{what}: {type(e).__name__}: {e}")


T = TypeVar("T")
_MISSING: Any = object()


@dataclass(frozen=True)
class Applied:
    """What the apiserver answered to an apply: enough to detect drift and read readiness."""

    resource_version: str
    body: Json | None
    """The whole object for kinds whose status the reconciler reads (Deployment)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SecretInfo:
    """What the operator may know of a Secret: its keys and annotations, never its values."""

    keys: set[str]
    annotations: dict[str, str]


class Kube:
    """Typed, error-translated calls; one shared connection pool for all reconciles.

    ``fence``: writes are refused (a ``TemporaryError``) while it returns False — a replica
    that stopped leading makes no write, even while its watches are still shutting down."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        fence: Callable[[], bool] = lambda: True,
    ) -> None:
        self._client = client
        # More concurrency only queues in the apiserver, while the client's pool bookkeeping
        # grows with every waiting request; 20 is also httpx's keep-alive pool size.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._fence = fence
        self.requests = 0
        """API calls made (for the benchmark's requests-per-reconcile figure)."""

    @classmethod
    def connect(cls, kubeconfig: Path | None, *, fence: Callable[[], bool] = lambda: True) -> Kube:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        timeout = httpx2.Timeout(30.0)
        # HTTP/1.1 (pure-Python HTTP/2 measured ~10 % more CPU per request); the in-flight
        # limit below equals the pool's keep-alive size, so connections are reused, never
        # churned (unbounded concurrency spent a third of the CPU on TLS handshakes).
        client = AsyncClient(config, field_manager=FIELD_MANAGER, timeout=timeout)
        return cls(client, fence=fence)

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        write: bool = False,
        absent: T = _MISSING,
        also_temporary: frozenset[int] = frozenset(),
    ) -> T:
        """The one seam: every API call goes through here and every failure leaves it as an
        :class:`~.errors.OperatorError` (``absent`` is returned for a 404 when given)."""
        if write and not self._fence():
            raise TemporaryError(f"{what}: this replica does not lead")
        self.requests += 1
        async with self._in_flight:
            try:
                return await call()
            except ApiError as e:
                if e.status.code == NOT_FOUND and absent is not _MISSING:
                    return absent
                raise _translate(e, what, also_temporary=also_temporary) from e
            except Exception as e:  # transport, TLS, decoding: never a library exception out
                raise _translate(e, what) from e

    async def apply(self, manifest: Json, *, field_manager: str = FIELD_MANAGER) -> Applied:
        kind = manifest["kind"]
        meta = manifest["metadata"]
        obj: Any = await self._call(
            f"apply {kind} {meta['namespace']}/{meta['name']}",
            lambda: self._client.patch(
                RESOURCES[kind],
                meta["name"],
                manifest,
                namespace=meta["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=field_manager,
                # Forced only over the fields in the manifest: those are ours by definition.
                force=True,
            ),
            write=True,
            # An apply creates what is missing, so its 404 is never "absent": creating a
            # RoleBinding checks the Role it binds through the RBAC cache, which may not hold
            # a Role created a moment ago (non-admin operators only). Retry it.
            also_temporary=APPLY_RETRYABLE,
        )
        body = msgspec.to_builtins(obj) if kind == "Deployment" else None
        return Applied(resource_version=obj.metadata.resourceVersion or "", body=body)

    async def delete(self, kind: str, *, namespace: str, name: str) -> bool:
        """Delete if present; False when it was already gone."""

        async def delete() -> bool:
            await self._client.delete(RESOURCES[kind], name, namespace=namespace)
            return True

        return await self._call(
            f"delete {kind} {namespace}/{name}", delete, write=True, absent=False
        )

    async def names(
        self, kind: str, *, label_selector: str, namespace: str = "*"
    ) -> set[tuple[str, str]]:
        """``(namespace, name)`` of every object of ``kind`` with the labels (``*``: all)."""

        async def names() -> set[tuple[str, str]]:
            return {
                (o.metadata.namespace or "", o.metadata.name or "")
                async for o in self._client.list(
                    cast(Any, RESOURCES[kind]), namespace=namespace, labels=_labels(label_selector)
                )
            }

        return await self._call(f"list {kind}", names)

    async def patch_status(
        self, kind: str, *, namespace: str, name: str, status: Json, old: Json | None
    ) -> None:
        """Merge-patch the status subresource; keys gone from ``status`` are nulled. An object
        deleted meanwhile has nothing to report on."""
        patch: Json = dict(status)
        for key in old or {}:
            patch.setdefault(key, None)

        async def write() -> None:
            await self._client.patch(
                RESOURCES[kind].Status,  # type: ignore[attr-defined]
                name,
                {"status": patch},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )

        await self._call(f"status of {kind} {namespace}/{name}", write, write=True, absent=None)

    async def secret(self, *, namespace: str, name: str) -> SecretInfo | None:
        """A Secret's keys and annotations (never its values), or None when it is absent."""

        async def get() -> SecretInfo | None:
            secret = await self._client.get(Secret, name, namespace=namespace)
            return SecretInfo(
                keys=set(secret.data or {}) | set(secret.stringData or {}),
                annotations=dict(secret.metadata.annotations or {}) if secret.metadata else {},
            )

        return await self._call(f"get Secret {namespace}/{name}", get, absent=None)

    async def wait_served(
        self, kinds: tuple[str, ...], *, namespaces: list[str], within: float = 300.0
    ) -> None:
        """Return once every kind can be listed. Right after its CRD is created (a
        `helm install` creates CRDs and the operator together) the apiserver answers 404/429
        ("storage is (re)initializing") for a while; kopf's watches would give up on that."""
        deadline = asyncio.get_running_loop().time() + within
        for kind in kinds:
            for namespace in namespaces:

                async def one(kind: str = kind, namespace: str = namespace) -> None:
                    async for _ in self._client.list(
                        cast(Any, RESOURCES[kind]), namespace=namespace, chunk_size=1
                    ):
                        break

                while True:
                    try:
                        await self._call(f"list {kind}", one, also_temporary=APPLY_RETRYABLE)
                        break
                    except OperatorError as e:
                        if asyncio.get_running_loop().time() > deadline:
                            raise
                        log.info("waiting for %s to be served: %s", kind, e)
                        await asyncio.sleep(1.0)

    async def deployment(self, *, namespace: str, name: str) -> Json | None:
        """The live Deployment (None when there is none)."""

        async def get() -> Json | None:
            found = await self._client.get(Deployment, name, namespace=namespace)
            body: Json = msgspec.to_builtins(found)
            return body

        return await self._call(f"get Deployment {namespace}/{name}", get, absent=None)

    async def hpa_condition(self, *, namespace: str, name: str, kind: str) -> Json | None:
        """Condition ``kind`` of HPA ``name`` as a dict (``{}`` when the HPA has not reported
        it; None when there is no such HPA)."""

        async def get() -> Json | None:
            found = await self._client.get(HorizontalPodAutoscaler, name, namespace=namespace)
            for cond in (found.status.conditions if found.status else None) or []:
                if cond.type == kind:
                    return {
                        "type": cond.type,
                        "status": cond.status,
                        "reason": cond.reason,
                        "message": cond.message,
                    }
            return {}

        return await self._call(f"get HPA {namespace}/{name}", get, absent=None)

    async def crd_exists(self, name: str) -> bool:
        async def get() -> bool:
            await self._client.get(CustomResourceDefinition, name)
            return True

        return await self._call(f"get CRD {name}", get, absent=False)

    async def api_service_available(self, name: str) -> bool:
        """Whether APIService ``name`` (an aggregated API such as a metrics adapter's) is
        registered and its server answers, as the aggregator reports it."""

        async def get() -> bool:
            found = await self._client.get(APIService, name)
            conditions = (found.status.conditions if found.status else None) or []
            return any(c.type == "Available" and c.status == "True" for c in conditions)

        return await self._call(f"get APIService {name}", get, absent=False)

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

        async def create() -> None:
            await self._client.create(cast(Any, event))

        try:
            await self._call(f"Event {reason} on {meta['name']}", create, write=True)
        except OperatorError as e:
            log.warning("could not post an Event: %s", e)

    # --- the leader election Lease --------------------------------------------------------

    async def lease(self, *, namespace: str, name: str) -> Lease | None:
        async def get() -> Lease | None:
            found: Lease = await self._client.get(Lease, name, namespace=namespace)
            return found

        return await self._call(f"get Lease {namespace}/{name}", get, absent=None)

    async def write_lease(self, lease: Lease, *, create: bool) -> None:
        """Create, or replace carrying the resourceVersion read (optimistic lock): a
        :class:`~.errors.ConflictError` when another candidate wrote first."""
        meta = lease.metadata
        what = f"{'create' if create else 'update'} Lease {meta.namespace}/{meta.name}"  # type: ignore[union-attr]

        async def write() -> None:
            if create:
                await self._client.create(lease)
            else:
                await self._client.replace(lease)

        await self._call(what, write)


def _labels(selector: str) -> dict[str, Any]:
    pairs = (item.split("=", 1) for item in selector.split(",") if item)
    return {k: v for k, v in pairs}  # noqa: C416 - pairs are lists, not tuples
