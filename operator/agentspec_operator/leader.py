"""Leader election on a coordination.k8s.io Lease: many replicas, exactly one reconciling.

kopf's own peering cannot be used (equal priorities freeze every replica, and it writes
peering objects). The scheme is client-go's: a candidate takes the Lease when it is free or
expired (``renewTime + leaseDurationSeconds`` in the past), the leader renews it every third
of the duration, and every write carries the ``resourceVersion`` it read, so two candidates
can never both win. A leader that cannot renew before its lease would expire stops
reconciling and exits (its pod restarts as a standby); a leader that shuts down releases the
Lease so a standby takes over at once instead of waiting for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from pathlib import Path

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(
        self,
        *,
        kubeconfig: Path | None,
        name: str,
        namespace: str,
        identity: str,
        duration: float = 15.0,
        clock: Clock = _utc_now,
    ) -> None:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        self._client = AsyncClient(config)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self._clock = clock
        self._last_renew: float | None = None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this candidate leads (True), or until ``stop`` (False)."""
        announced = False
        while not stop.is_set():
            if await self._try():
                log.info(
                    "leader election: %s leads (Lease %s/%s)",
                    self.identity,
                    self.namespace,
                    self.name,
                )
                return True
            if not announced:
                log.info(
                    "leader election: %s is standby (Lease %s/%s)",
                    self.identity,
                    self.namespace,
                    self.name,
                )
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.duration / 4)
        return False

    async def hold(self, lost: asyncio.Event, stop: asyncio.Event) -> None:
        """Renew until ``stop``; set ``lost`` if the Lease cannot be kept."""
        loop = asyncio.get_running_loop()
        self._last_renew = loop.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.duration / 3)
            if stop.is_set():
                break
            if await self._try():
                self._last_renew = loop.time()
            elif loop.time() - self._last_renew > self.duration * 2 / 3:
                # another candidate may take it soon: stop reconciling before it can
                log.error("leader election: %s lost the Lease", self.identity)
                lost.set()
                return

    async def release(self) -> None:
        """Hand the Lease back (graceful shutdown) so a standby need not wait for expiry."""
        with contextlib.suppress(ApiError, OSError):
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                lease.spec.acquireTime = None
                await self._client.replace(lease)
        await self._client.close()

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; False when someone else holds it."""
        now = self._clock()
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as e:
            if e.status.code == 404:
                return await self._create(now)
            log.warning("leader election: reading the Lease failed: %s", e.status.reason)
            return False
        except OSError as e:
            log.warning("leader election: the API is unreachable: %s", e)
            return False
        spec = lease.spec or LeaseSpec()
        if not self._may_take(spec, now):
            return False
        if spec.holderIdentity != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity = self.identity
        spec.renewTime = now
        spec.leaseDurationSeconds = max(1, round(self.duration))
        lease.spec = spec
        return await self._write(lease)

    def _may_take(self, spec: LeaseSpec, now: datetime.datetime) -> bool:
        """Ours already, free, or expired."""
        if spec.holderIdentity in (None, "", self.identity) or spec.renewTime is None:
            return True
        duration = datetime.timedelta(seconds=spec.leaseDurationSeconds or self.duration)
        return spec.renewTime + duration < now

    async def _write(self, lease: Lease) -> bool:
        try:
            await self._client.replace(lease)  # carries resourceVersion: optimistic lock
        except ApiError as e:
            if e.status.code != 409:
                log.warning("leader election: writing the Lease failed: %s", e.status.reason)
            return False
        except OSError:
            return False
        return True

    async def _create(self, now: datetime.datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                acquireTime=now,
                renewTime=now,
                leaseDurationSeconds=max(1, round(self.duration)),
                leaseTransitions=0,
            ),
        )
        try:
            await self._client.create(lease)
        except ApiError:
            return False  # another candidate created it first
        return True
