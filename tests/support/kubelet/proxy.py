"""Services for the pods: ClusterIPs that balance over the ready endpoints, and their names.

Plays kube-proxy and cluster DNS for the process kubelet. Every ClusterIP Service gets a TCP
listener on its real ClusterIP and port (the control plane hands ClusterIPs out of its own
slice of 198.19.0.0/16, routed to the loopback device, see ``podnet``). Each accepted
connection goes to the next *ready* endpoint of the Service's EndpointSlices — written by the
real EndpointSlice controller from the pods' readiness — round-robin per connection, as
kube-proxy balances; with no ready endpoint, serving-but-terminating ones are used, and with
none at all the connection is closed at once (kube-proxy rejects it). Service ``kubernetes``
(no endpoints: the test apiserver runs with ``--endpoint-reconciler-type=none``) leads to the
apiserver itself.

Names: instead of a DNS server, :class:`HostsBook` keeps every pod's ``/etc/hosts`` current,
with ``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``, ``<svc>.<ns>`` and, in the pod's
own namespace, ``<svc>`` (lines are only ever appended, so a reader never sees half a file).
Not emulated: headless Services, NodePorts, UDP, session affinity, topology hints.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Informer, KubeApi

__all__ = ["HostsBook", "ServiceProxy"]

Json = dict[str, Any]
log = logging.getLogger("kubelet.proxy")
SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass
class HostsBook:
    """The ``/etc/hosts`` of every pod on the node."""

    services: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, name) → ClusterIP."""
    files: dict[Path, str] = field(default_factory=dict)
    """hosts file → the namespace of its pod."""

    @staticmethod
    def _line(namespace: str, name: str, ip: str, *, own_namespace: str) -> str:
        names = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc"]
        names.append(f"{name}.{namespace}")
        if namespace == own_namespace:
            names.append(name)
        return f"{ip}\t{' '.join(names)}\n"

    def add_pod(self, path: Path, *, namespace: str, pod_ip: str, hostname: str) -> None:
        lines = [
            "# Kubernetes-managed hosts file (the tests' process kubelet).\n",
            "127.0.0.1\tlocalhost\n",
            "::1\tlocalhost ip6-localhost ip6-loopback\n",
            f"{pod_ip}\t{hostname}\n",
        ]
        lines += [
            self._line(ns, name, ip, own_namespace=namespace)
            for (ns, name), ip in sorted(self.services.items())
        ]
        path.write_text("".join(lines))
        path.chmod(0o644)
        self.files[path] = namespace

    def remove_pod(self, path: Path) -> None:
        self.files.pop(path, None)

    def add_service(self, namespace: str, name: str, ip: str) -> None:
        if self.services.get((namespace, name)) == ip:
            return
        self.services[(namespace, name)] = ip
        for path, own in list(self.files.items()):
            try:
                with path.open("a") as f:
                    f.write(self._line(namespace, name, ip, own_namespace=own))
            except OSError:
                self.files.pop(path, None)


class ServiceProxy:
    def __init__(self, api: KubeApi, *, hosts: HostsBook, apiserver: tuple[str, int]) -> None:
        self.api = api
        self.hosts = hosts
        self.apiserver = apiserver
        self.services = Informer(api, "/api/v1/services", self._on_service)
        self.slices = Informer(api, "/apis/discovery.k8s.io/v1/endpointslices", self._on_slice)
        self._listeners: dict[tuple[str, int], asyncio.Server] = {}
        self._owner: dict[tuple[str, int], tuple[str, str, Json]] = {}
        """(ip, port) → (namespace, service, service port)."""
        self._turn = itertools.count()
        self.connections: dict[str, int] = {}
        """endpoint "ip:port" → connections sent there (for tests and debugging)."""

    async def run(self) -> None:
        await asyncio.gather(self.services.run(), self.slices.run())

    async def _on_slice(self, kind: str, obj: Json) -> None:
        return None  # read from the cache at connection time

    async def _on_service(self, kind: str, service: Json) -> None:
        meta = service.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        wanted: dict[tuple[str, int], Json] = {}
        if kind != "DELETED" and ip and ip != "None":
            self.hosts.add_service(namespace, name, ip)
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") == "TCP":
                    wanted[(ip, int(port["port"]))] = port
        mine = [k for k, (ns, svc, _) in self._owner.items() if (ns, svc) == (namespace, name)]
        for key in mine:
            if key not in wanted:
                self._close(key)
        for key, port in wanted.items():
            self._owner[key] = (namespace, name, port)
            if key not in self._listeners:
                await self._listen(key)

    async def _listen(self, key: tuple[str, int]) -> None:
        ip, port = key
        try:
            self._listeners[key] = await asyncio.start_server(
                lambda r, w: self._forward(key, r, w), host=ip, port=port, reuse_address=True
            )
        except OSError as e:
            log.error("cannot serve Service address %s:%d: %s", ip, port, e)

    def _close(self, key: tuple[str, int]) -> None:
        self._owner.pop(key, None)
        server = self._listeners.pop(key, None)
        if server is not None:
            server.close()

    def endpoints(self, namespace: str, name: str, port: Json) -> list[tuple[str, int]]:
        """The addresses a connection to ``port`` of the Service may go to, best first."""
        if (namespace, name) == ("default", "kubernetes"):
            return [self.apiserver]
        ready: list[tuple[str, int]] = []
        serving: list[tuple[str, int]] = []
        for (ns, _), es in self.slices.cache.items():
            labels = (es.get("metadata") or {}).get("labels") or {}
            if ns != namespace or labels.get(SERVICE_LABEL) != name:
                continue
            number = None
            for p in es.get("ports") or []:
                if (p.get("name") or "") == (port.get("name") or ""):
                    number = p.get("port")
            if number is None:
                continue
            for endpoint in es.get("endpoints") or []:
                cond = endpoint.get("conditions") or {}
                for address in endpoint.get("addresses") or []:
                    if cond.get("ready") is not False:
                        ready.append((address, int(number)))
                    elif cond.get("serving") and cond.get("terminating"):
                        serving.append((address, int(number)))
        return sorted(ready) or sorted(serving)

    async def _forward(
        self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        owner = self._owner.get(key)
        targets = self.endpoints(*owner) if owner else []
        if not targets:
            writer.transport.abort()
            return
        host, port = targets[next(self._turn) % len(targets)]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        endpoint = f"{host}:{port}"
        self.connections[endpoint] = self.connections.get(endpoint, 0) + 1
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction; pass the half-close on (HTTP/1.1 clients may rely on it)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
