"""Addresses for the tests' pods and Services: a private slice of 198.18.0.0/15 per cluster.

Owns which addresses a test cluster's pods and ClusterIP Services use, and the one host route
that makes them work. Pods get IPs from 198.18.0.0/16 and Services ClusterIPs from
198.19.0.0/16 (RFC 2544's benchmarking range: never routed on a real network). Both are made
local by one route on the loopback device, ``local 198.18.0.0/15 dev lo`` — the way
127.0.0.0/8 is local — so any address in them can be bound and reached on this machine with no
network namespace. Loopback addresses themselves cannot be used: the apiserver refuses
127.0.0.0/8 in EndpointSlices.

Clusters running at the same time (one per pytest-xdist worker, plus private ones) each hold a
*slot* — a /22 of pod IPs and the matching /22 of ClusterIPs — reserved with a lock file, so
their addresses never collide. No pytest dependency.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["LOCAL_ROUTE", "NetworkSlot", "ensure_local_route", "reserve_slot"]

LOCAL_ROUTE = "198.18.0.0/15"
_POD_BASE = ipaddress.IPv4Network("198.18.0.0/16")
_SERVICE_BASE = ipaddress.IPv4Network("198.19.0.0/16")
_SLOT_PREFIX = 22
_SLOTS = 2 ** (_SLOT_PREFIX - 16)


@dataclass
class NetworkSlot:
    """One cluster's addresses; the slot stays reserved while the lock file is held open."""

    index: int
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def kubernetes_service_ip(self) -> str:
        """The first ClusterIP: the apiserver gives it to Service ``default/kubernetes``."""
        return str(self.service_cidr.network_address + 1)

    @property
    def node_ip(self) -> str:
        """The node's own address (the first of the pod range, as on many CNIs)."""
        return str(self.pod_cidr.network_address + 1)

    def pod_ips(self) -> list[str]:
        """Every address a pod may get (the node's excluded)."""
        return [str(ip) for ip in list(self.pod_cidr.hosts())[1:]]

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def reserve_slot() -> NetworkSlot:
    """Reserve a free slot (lock files in the temp dir; a dead holder frees its slot)."""
    lock_dir = Path(tempfile.gettempdir()) / "agentspec-podnet"
    lock_dir.mkdir(exist_ok=True)
    order = list(range(_SLOTS))
    random.shuffle(order)
    for index in order:
        handle = (lock_dir / f"slot-{index}.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        os.set_inheritable(handle.fileno(), False)
        return NetworkSlot(
            index=index,
            pod_cidr=list(_POD_BASE.subnets(new_prefix=_SLOT_PREFIX))[index],
            service_cidr=list(_SERVICE_BASE.subnets(new_prefix=_SLOT_PREFIX))[index],
            _lock=handle,
        )
    raise RuntimeError(f"all {_SLOTS} network slots are taken by running test clusters")


def ensure_local_route() -> None:
    """Add ``local 198.18.0.0/15 dev lo`` to the local table unless it is there (needs root).

    Left in place afterwards: other clusters may be using it, and it routes nothing but
    addresses no real network uses.
    """
    shown = subprocess.run(
        ["ip", "route", "show", "table", "local", LOCAL_ROUTE],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode == 0 and LOCAL_ROUTE.split("/", maxsplit=1)[0] in shown.stdout:
        return
    added = subprocess.run(
        ["ip", "route", "add", "local", LOCAL_ROUTE, "dev", "lo", "table", "local"],
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0 and "File exists" not in added.stderr:
        raise RuntimeError(
            f"cannot route {LOCAL_ROUTE} to the loopback device (the process kubelet needs "
            f"root for it): {added.stderr.strip()}"
        )
