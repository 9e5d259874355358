"""Leader election on a coordination.k8s.io Lease: many replicas, exactly one reconciling.

kopf's own peering cannot be used (equal priorities freeze every replica, and it writes
peering objects). The scheme is client-go's:

* Expiry is judged by the candidate's own clock: a Lease held by someone else is free once
  its record (holder, renewTime, transitions) has not *changed* for ``leaseDurationSeconds``
  of local time since this candidate last saw it change — never by comparing the holder's
  ``renewTime`` with the local clock, which would trust two clocks to agree.
* Every write carries the ``resourceVersion`` it read (optimistic lock), so two candidates
  can never both win; the loser gets a conflict.
* The leader renews every third of the duration and stops reconciling once it has gone two
  thirds of the duration without a successful renewal — before any candidate can count the
  Lease expired. Every failure counts (an unreachable API, a timeout, a conflict, a bug): the
  renew loop never dies silently while the replica keeps reconciling.
* A leader that shuts down releases the Lease, so a standby takes over at once.

All API calls go through :class:`~.kube.Kube`, the operator's one error-translating seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from .errors import ConflictError, OperatorError
from .kube import Kube

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
Monotonic = Callable[[], float]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class _Observed:
    record: tuple[object, ...]
    at: float
    """Local monotonic time at which this record was first seen."""


class LeaderElector:
    def __init__(
        self,
        *,
        kube: Kube,
        name: str,
        namespace: str,
        identity: str,
        duration: float = 15.0,
        clock: Clock = _utc_now,
        monotonic: Monotonic | None = None,
    ) -> None:
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self._clock = clock
        self._monotonic = monotonic or (lambda: asyncio.get_running_loop().time())
        self._observed: _Observed | None = None
        self._last_renew: float | None = None

    @property
    def leading_for(self) -> float | None:
        """Seconds since the last successful renewal (None: not leading)."""
        return None if self._last_renew is None else self._monotonic() - self._last_renew

    def leads(self) -> bool:
        """True while the last renewal is recent enough that nobody else can hold the Lease."""
        held = self.leading_for
        return held is not None and held < self.duration * 2 / 3

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
        """Renew until ``stop``; set ``lost`` once the Lease cannot be counted on.

        ``lost`` is set on every way out but ``stop``, an unexpected exception included."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.duration / 3)
                if stop.is_set():
                    return
                await self._try()
                if not self.leads():
                    # another candidate may take it soon: stop reconciling before it can
                    log.error("leader election: %s lost the Lease", self.identity)
                    lost.set()
                    return
        except BaseException:
            lost.set()
            raise

    async def release(self) -> None:
        """Hand the Lease back (graceful shutdown) so a standby need not wait for expiry."""
        with contextlib.suppress(OperatorError):
            lease = await self.kube.lease(namespace=self.namespace, name=self.name)
            if lease is not None and lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                lease.spec.acquireTime = None
                await self.kube.write_lease(lease, create=False)
        self._last_renew = None

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease, within a third of the duration (an API
        that hangs must not hold the renew loop past the point of stopping); False when it is
        not ours, for whatever reason."""
        try:
            async with asyncio.timeout(self.duration / 3):
                return await self._attempt()
        except ConflictError:
            return False  # another candidate wrote first
        except OperatorError as e:
            log.warning("leader election: %s", e)
            return False
        except TimeoutError:
            log.warning("leader election: the API did not answer within %.1fs", self.duration / 3)
            return False

    async def _attempt(self) -> bool:
        started = self._monotonic()
        lease = await self.kube.lease(namespace=self.namespace, name=self.name)
        now = self._clock()
        if lease is None:
            await self.kube.write_lease(self._new_lease(now), create=True)
            self._last_renew = started
            return True
        spec = lease.spec or LeaseSpec()
        if not self._may_take(spec):
            return False
        if spec.holderIdentity != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity = self.identity
        spec.renewTime = now
        spec.leaseDurationSeconds = max(1, round(self.duration))
        lease.spec = spec
        await self.kube.write_lease(lease, create=False)
        # counted from before the read: the Lease is ours from no later than that
        self._last_renew = started
        return True

    def _may_take(self, spec: LeaseSpec) -> bool:
        """Ours already, free, or unchanged for a whole lease duration of local time."""
        if spec.holderIdentity in (None, "", self.identity):
            return True
        record = (spec.holderIdentity, spec.renewTime, spec.acquireTime, spec.leaseTransitions)
        now = self._monotonic()
        if self._observed is None or self._observed.record != record:
            self._observed = _Observed(record, now)
            return False
        duration = spec.leaseDurationSeconds or self.duration
        return now - self._observed.at > duration

    def _new_lease(self, now: datetime.datetime) -> Lease:
        return Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                acquireTime=now,
                renewTime=now,
                leaseDurationSeconds=max(1, round(self.duration)),
                leaseTransitions=0,
            ),
        )
