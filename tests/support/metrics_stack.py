"""Prometheus and KEDA for the autoscaling tests, run the way a platform team runs them.

- :class:`Prometheus` discovers the agents' pods through ``kubernetes_sd_configs`` against the
  test apiserver and scrapes their ``metrics`` ports at the pod IPs the process kubelet gave
  them, with the target labels a Prometheus Operator PodMonitor adds (``namespace``, ``pod``).
- :class:`Keda` runs KEDA's operator and its metrics API server (built from the Go module
  proxy by ``scripts/build-metrics-tools.sh``) as host processes, as hostNetwork pods would
  run. The metrics server is registered with the apiserver's aggregation layer as
  ``v1beta1.external.metrics.k8s.io`` behind Service ``keda/keda-metrics-apiserver``, whose
  endpoint is the node's address (the EndpointSlice mirrored from a selector-less Endpoints):
  the apiserver reaches it through the kubelet's service proxy and authenticates to it with
  its front-proxy certificate, and the HPA controller reads KEDA's metrics through the
  apiserver — the path an aggregated API takes in a real cluster. Both KEDA processes use the
  test's admin credentials instead of KEDA's own RBAC; the operator and the metrics server
  talk gRPC over mutual TLS with a pair made for them.

No pytest dependency.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import yaml

from .control_plane import ControlPlane
from .pki import write_tls_pair
from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    cpu_seconds,
    free_ports,
    owned_tmp_dir,
    rss_bytes,
    run_script,
    start_process,
    wait_until,
)

__all__ = ["KEDA_NAMESPACE", "Keda", "Prometheus", "install_keda_crds", "locate_metrics_bin_dir"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-metrics-tools.sh"
BIN_DIR_ENV = "AGENTSPEC_METRICS_BIN"
KEDA_NAMESPACE = "keda"
METRICS_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS_API = "v1beta1.external.metrics.k8s.io"
Json = dict[str, Any]


@functools.cache
def locate_metrics_bin_dir() -> Path:
    """``$AGENTSPEC_METRICS_BIN``, else what the (idempotent, cached) build script prints."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Path(override)
    return Path(run_script(BUILD_SCRIPT).strip().splitlines()[-1])


def binary(name: str) -> Path:
    path = locate_metrics_bin_dir() / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing (built by {BUILD_SCRIPT})")
    return path


def install_keda_crds(plane: ControlPlane) -> None:
    """KEDA's CRDs, from the same module the binaries were built from. The agentspec operator
    looks for the ScaledObject CRD when it starts, so this comes before the chart."""
    plane.apply_crds(locate_metrics_bin_dir().parent / "keda-crds")


def _wait_http_ok(process: ManagedProcess, url: str, *, timeout: float, **kw: Any) -> None:
    def ok() -> bool:
        if not process.running():
            raise ExitedEarlyError(process.describe_failure("exited while starting"))
        try:
            return httpx.get(url, timeout=2, **kw).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ok, timeout=timeout, what=f"{process.name} at {url}", interval=0.2)
    except TimeoutError as e:
        raise RuntimeError(process.describe_failure(f"not ready: {e}")) from e


class Prometheus(Managed):
    """One Prometheus scraping every agent pod of the cluster every ``scrape_interval``."""

    def __init__(
        self, plane: ControlPlane, *, port: int | None = None, scrape_interval: str = "1s"
    ):
        self.plane = plane
        self.port = port or free_ports(1)[0]
        self.scrape_interval = scrape_interval
        self.process: ManagedProcess | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> Json:
        """The scrape config: pods labelled as agents, their port named ``metrics``."""
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "agentspec-agents",
                    "kubernetes_sd_configs": [
                        {"role": "pod", "kubeconfig_file": str(self.plane.kubeconfig)}
                    ],
                    "relabel_configs": [
                        {
                            "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                            "regex": "agentspec-agent",
                            "action": "keep",
                        },
                        {
                            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                            "regex": "metrics",
                            "action": "keep",
                        },
                        {
                            "source_labels": ["__meta_kubernetes_namespace"],
                            "target_label": "namespace",
                        },
                        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    ],
                }
            ],
        }

    def start(self) -> Prometheus:
        self._dir = owned_tmp_dir("agentspec-prometheus-")
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.process = start_process(
            "prometheus",
            [
                str(binary("prometheus")),
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ],
            log_path=self._dir / "prometheus.log",
            cwd=self._dir,
        )
        try:
            _wait_http_ok(self.process, f"{self.url}/-/ready", timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def query(self, promql: str) -> list[Json]:
        """An instant query's vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        answer.raise_for_status()
        data = answer.json()["data"]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The single value of a query that sums to one series (None: no series yet)."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, bool]:
        """Scraped pods (``namespace/pod``) and whether their last scrape worked."""
        answer = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10)
        answer.raise_for_status()
        return {
            f"{t['labels'].get('namespace')}/{t['labels'].get('pod')}": t["health"] == "up"
            for t in answer.json()["data"]["activeTargets"]
        }

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid) if self.process else 0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid) if self.process else 0.0


class Keda(Managed):
    """KEDA's operator and metrics API server for ``plane`` (its kubelet must be running:
    the apiserver reaches the metrics server through the kubelet's service proxy)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.operator: ManagedProcess | None = None
        self.adapter: ManagedProcess | None = None
        self._dir: Path | None = None

    def start(self) -> Keda:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._dir = owned_tmp_dir("agentspec-keda-")
        node_ip = self.plane.network.node_ip
        certs = self._dir / "certs"
        pair = write_tls_pair(
            certs,
            common_name="keda",
            dns_names=[
                f"{METRICS_SERVICE}.{KEDA_NAMESPACE}.svc",
                f"keda-operator.{KEDA_NAMESPACE}.svc.cluster.local",
            ],
            ips=["127.0.0.1", node_ip],
        )
        grpc, probe, op_metrics, adapter_metrics = free_ports(4)
        (secure,) = free_ports(1, host=node_ip)
        kubeconfig = str(self.plane.kubeconfig)
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
            "WATCH_NAMESPACE": "",
        }
        self.plane.kubectl("create", "namespace", KEDA_NAMESPACE, check=False)
        self.operator = start_process(
            "keda-operator",
            [
                str(binary("keda-operator")),
                "--leader-elect=false",
                f"--metrics-bind-address=127.0.0.1:{op_metrics}",
                f"--health-probe-bind-address=127.0.0.1:{probe}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc}",
                f"--cert-dir={certs}",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                "--zap-log-level=info",
            ],
            log_path=self._dir / "keda-operator.log",
            env=env,
            cwd=self._dir,
        )
        _wait_http_ok(self.operator, f"http://127.0.0.1:{probe}/readyz", timeout=90)
        self.adapter = start_process(
            "keda-adapter",
            [
                str(binary("keda-adapter")),
                f"--secure-port={secure}",
                f"--bind-address={node_ip}",
                f"--tls-cert-file={pair.cert}",
                f"--tls-private-key-file={pair.key}",
                f"--cert-dir={certs}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{grpc}",
                f"--port={adapter_metrics}",
                "--zap-log-level=info",
            ],
            log_path=self._dir / "keda-adapter.log",
            env=env,
            cwd=self._dir,
        )
        _wait_http_ok(
            self.adapter,
            f"https://{node_ip}:{secure}/readyz",
            timeout=90,
            verify=ssl.create_default_context(cafile=pair.ca_cert),
        )
        self._register(node_ip, secure, pair.ca_cert)

    def _register(self, node_ip: str, port: int, ca_cert: Path) -> None:
        """Service + endpoint + APIService, then wait until the aggregator says Available."""
        docs: list[Json] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": METRICS_SERVICE, "namespace": KEDA_NAMESPACE},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
            },
            {
                # Endpoints of a selector-less Service are mirrored into an EndpointSlice.
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": METRICS_SERVICE, "namespace": KEDA_NAMESPACE},
                "subsets": [
                    {"addresses": [{"ip": node_ip}], "ports": [{"name": "https", "port": port}]}
                ],
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": EXTERNAL_METRICS_API},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"name": METRICS_SERVICE, "namespace": KEDA_NAMESPACE, "port": 443},
                    "caBundle": base64.b64encode(ca_cert.read_bytes()).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ]
        self.plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )

        def available() -> bool:
            assert self.adapter is not None
            if not self.adapter.running():
                raise ExitedEarlyError(self.adapter.describe_failure("exited"))
            service = self.plane.kubectl_json("get", "apiservice", EXTERNAL_METRICS_API)
            conditions = service.get("status", {}).get("conditions", [])
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        try:
            wait_until(
                available, timeout=60, what=f"APIService {EXTERNAL_METRICS_API}", interval=0.5
            )
        except TimeoutError as e:
            service = self.plane.kubectl_json("get", "apiservice", EXTERNAL_METRICS_API)
            raise RuntimeError(f"{e}: {service.get('status')}\n{self.logs()}") from e

    def logs(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log_tail(lines)}" for p in (self.operator, self.adapter) if p
        )

    def stop(self) -> None:
        for process in (self.adapter, self.operator):
            if process is not None:
                process.stop()
        self.adapter = self.operator = None

    def rss_bytes(self) -> int:
        return sum(rss_bytes(p.pid) for p in (self.operator, self.adapter) if p)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in (self.operator, self.adapter) if p)
