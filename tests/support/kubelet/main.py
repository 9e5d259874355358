"""The process kubelet: scheduler + kubelet + kube-proxy for one node of a test cluster.

``python -m tests.support.kubelet --server URL --ca F --cert F --key F --state-dir D
--images-json F --pod-cidr C`` registers Node ``--node-name`` (status and Lease renewed every
10 s, as a kubelet's heartbeat), binds every unscheduled Pod whose nodeSelector it matches to
itself (the scheduler's job; one node, so nothing to choose), runs the Pods bound to it
(:mod:`.pods`) and serves the Services (:mod:`.proxy`). SIGTERM kills every container and
exits; the Node stays (a node that stops heartbeating, as in a real cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.images import Image
from tests.support.podnet import ensure_local_route

from .api import STRATEGIC, ApiError, Informer, KubeApi
from .pods import SHIM_FILE, Node, PodWorker, now
from .proxy import HostsBook, ServiceProxy

Json = dict[str, Any]
log = logging.getLogger("kubelet")
HEARTBEAT_SECONDS = 10.0
KUBELET_VERSION = "v1.36.3"
SHIM_SOURCE = Path(__file__).with_name("bind_shim.c")


def compile_shim(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SHIM_FILE
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(target), str(SHIM_SOURCE), "-ldl"],
        check=True,
    )
    target.chmod(0o755)
    directory.chmod(0o755)
    return target


def host_resolv_conf() -> str:
    """The host's nameservers (there is no cluster DNS; Service names are in /etc/hosts)."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return ""
    return "".join(line + "\n" for line in lines if line.startswith("nameserver"))


def memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


class Kubelet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api = KubeApi(server=args.server, ca=args.ca, cert=args.cert, key=args.key)
        images = [Image.from_json(d) for d in json.loads(Path(args.images_json).read_text())]
        network = ipaddress.ip_network(args.pod_cidr)
        hosts = list(network.hosts())
        node_ip, pod_ips = str(hosts[0]), [str(ip) for ip in hosts[1:]]
        server = urlsplit(args.server)
        self.hosts = HostsBook()
        self.proxy = ServiceProxy(
            self.api, hosts=self.hosts, apiserver=(server.hostname or "", server.port or 443)
        )
        state = Path(args.state_dir)
        self.node = Node(
            name=args.node_name,
            ip=node_ip,
            api=self.api,
            images={i.ref: i for i in images},
            state_dir=state,
            shim_dir=compile_shim(state / "shim").parent,
            hosts=self.hosts,
            kubernetes_service=(args.kubernetes_service_ip, 443),
            capacity={
                "cpu": str(os.cpu_count() or 1),
                "memory": str(memory_bytes()),
                "pods": str(len(pod_ips)),
                "ephemeral-storage": "100Gi",
            },
            free_ips=pod_ips,
            lookup=self._lookup,
            services_in=self._services_in,
            resolv_conf=host_resolv_conf(),
            probe_client=httpx.AsyncClient(
                limits=httpx.Limits(max_keepalive_connections=0), follow_redirects=True
            ),
        )
        self.pods = Informer(
            self.api, "/api/v1/pods", self._on_pod, field_selector=f"spec.nodeName={args.node_name}"
        )
        self.unscheduled = Informer(
            self.api, "/api/v1/pods", self._on_unscheduled, field_selector="spec.nodeName="
        )
        self.labels = {
            "kubernetes.io/hostname": args.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "process-kubelet",
        }

    async def _lookup(self, kind: str, namespace: str, name: str) -> Json | None:
        return await self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")

    def _services_in(self, namespace: str) -> list[Json]:
        return [s for (ns, _), s in self.proxy.services.cache.items() if ns == namespace]

    # --- node --------------------------------------------------------------------------

    def _node_status(self) -> Json:
        stamp = now()
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": self.node.capacity,
            "allocatable": self.node.capacity,
            "addresses": [
                {"type": "InternalIP", "address": self.node.ip},
                {"type": "Hostname", "address": self.node.name},
            ],
            "conditions": [
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": "process kubelet",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for kind, value, reason in conditions
            ],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "process-kubelet://1",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "process kubelet (tests)",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def register(self) -> None:
        name = self.node.name
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": self.labels},
            "spec": {"podCIDR": self.args.pod_cidr, "podCIDRs": [self.args.pod_cidr]},
        }
        with contextlib.suppress(ApiError):
            await self.api.request("POST", "/api/v1/nodes", body=body)
        await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        name = self.node.name
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            body={"status": self._node_status()},
            content_type=STRATEGIC,
        )
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        renew = datetime_micro()
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
        }
        try:
            await self.api.request(
                "PATCH",
                lease_path,
                body=lease,
                content_type="application/apply-patch+yaml",
                params={"fieldManager": "process-kubelet", "force": "true"},
            )
        except ApiError as e:
            log.warning("node lease: %s", e)

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._heartbeat_once()
            except ApiError as e:
                log.warning("node heartbeat: %s", e)

    # --- scheduling and pods -----------------------------------------------------------------

    async def _on_unscheduled(self, kind: str, pod: Json) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        if kind == "DELETED" or meta.get("deletionTimestamp") or spec.get("nodeName"):
            return
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        selector = spec.get("nodeSelector") or {}
        if any(self.labels.get(k) != v for k, v in selector.items()):
            return  # stays Pending, as with a real scheduler and no matching node
        with contextlib.suppress(ApiError):
            await self.api.request(
                "POST",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                body={
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": meta["name"], "uid": meta["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node.name},
                },
            )

    async def _on_pod(self, kind: str, pod: Json) -> None:
        uid = str(pod["metadata"]["uid"])
        worker = self.node.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                await worker.vanished()
            return
        if worker is None:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            if (pod["metadata"]).get("deletionTimestamp"):
                # never started here (e.g. a kubelet restart): nothing to stop, finish the delete
                with contextlib.suppress(ApiError):
                    await self.api.request(
                        "DELETE",
                        f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/"
                        f"{pod['metadata']['name']}",
                        body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                    )
                return
            worker = PodWorker(self.node, pod)
            self.node.workers[uid] = worker
            worker.start()
        worker.update(pod)

    async def shutdown(self) -> None:
        for worker in list(self.node.workers.values()):
            worker.gone = True
            for c in worker.containers:
                if c.process is not None:
                    c.process.kill()
        for worker in list(self.node.workers.values()):
            await worker.vanished()

    async def run(self, stop: asyncio.Event) -> None:
        await self.register()
        tasks = [
            asyncio.ensure_future(self.heartbeat()),
            asyncio.ensure_future(self.proxy.run()),
        ]
        await self.proxy.services.synced.wait()
        tasks += [
            asyncio.ensure_future(self.pods.run()),
            asyncio.ensure_future(self.unscheduled.run()),
        ]
        log.info("process kubelet %s ready (pods %s)", self.node.name, self.args.pod_cidr)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await self.shutdown()


def datetime_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.kubelet", description=__doc__)
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--node-name", default="process-kubelet")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--images-json", required=True, help="a JSON list of images (Image.to_json)")
    p.add_argument("--pod-cidr", required=True)
    p.add_argument("--kubernetes-service-ip", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)

    ensure_local_route()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Kubelet(args).run(stop)

    asyncio.run(run())
    return 0
