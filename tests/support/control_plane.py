"""A private Kubernetes control plane for the tests: etcd + kube-apiserver, optionally
kube-controller-manager (the envtest approach, in Python).

Owns: finding the pinned binaries (``AGENTSPEC_K8S_BIN`` or ``scripts/build-k8s-tools.sh``),
the throwaway PKI (CA, apiserver serving cert, service-account key pair, admin client cert),
the admin kubeconfig, starting/stopping the processes on free loopback ports, and running the
pinned ``kubectl`` against them.

Several instances may run at once (one per pytest-xdist worker, plus private ones inside
tests): every port, file and directory is unique to the instance. No pytest dependency.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .pki import FRONT_PROXY_CLIENT, LOOPBACK, Pki, kubeconfig_text, write_pki
from .podnet import NetworkSlot, reserve_slot
from .procs import (
    ExitedEarlyError,
    Managed,
    ManagedProcess,
    free_ports,
    owned_tmp_dir,
    run_script,
    start_process,
    wait_until,
)

__all__ = [
    "BUILD_SCRIPT",
    "REPO_ROOT",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "NamespacedKubectl",
    "locate_k8s_bin_dir",
    "namespace_name",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-k8s-tools.sh"
BIN_DIR_ENV = "AGENTSPEC_K8S_BIN"
ETCD_ENV = "AGENTSPEC_ETCD"
"""Overrides only the etcd binary (e.g. Debian's /usr/bin/etcd) for compatibility checks."""

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
_PORT_RETRIES = 3
_ADDRESS_IN_USE = "address already in use"
_DNS_LABEL_MAX = 63
JsonObject = dict[str, Any]


class ControlPlaneError(RuntimeError):
    """The control plane (or one of its binaries) could not be found, started or reached."""


class KubectlError(subprocess.CalledProcessError):
    """A failed ``kubectl`` call; unlike its base class, ``str()`` includes kubectl's stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}\n{stderr}"


@functools.cache
def locate_k8s_bin_dir() -> Path:
    """The directory with the pinned binaries: ``$AGENTSPEC_K8S_BIN``, else the build script's.

    The script is idempotent and prints the cached directory at once when it is warm; a cold
    build takes many minutes. Cached per process, since every instance needs the same answer.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        bin_dir = Path(override)
    else:
        try:
            lines = run_script(BUILD_SCRIPT).strip().splitlines()
        except RuntimeError as e:
            raise ControlPlaneError(str(e)) from e
        if not lines:
            raise ControlPlaneError(f"{BUILD_SCRIPT} printed no bin directory")
        bin_dir = Path(lines[-1])
    missing = [name for name in _REQUIRED_BINARIES if not (bin_dir / name).is_file()]
    if missing:
        source = f"${BIN_DIR_ENV}" if override else str(BUILD_SCRIPT)
        raise ControlPlaneError(f"{bin_dir} (from {source}) lacks {', '.join(missing)}")
    return bin_dir


def namespace_name(test_name: str) -> str:
    """``t-<test-name-slug>-<random>``: a unique, valid namespace name (a DNS label, <= 63)."""
    suffix = secrets.token_hex(3)
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    slug = slug[: _DNS_LABEL_MAX - len("t--") - len(suffix)].rstrip("-")
    return f"t-{slug}-{suffix}" if slug else f"t-{suffix}"


# -- processes ------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # etcd reads ETCD_* variables as flags and refuses to start when one shadows a flag we
    # pass; a developer's shell may well have some.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


def _etcd_version(binary: Path) -> tuple[int, int]:
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.search(r"etcd Version: (\d+)\.(\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise ControlPlaneError(f"cannot tell the version of {binary}: {result.stdout!r}")
    return int(match.group(1)), int(match.group(2))


class ControlPlane(Managed):
    """etcd + kube-apiserver (+ optional kube-controller-manager) on free loopback ports.

    ``start()`` blocks until ``/readyz`` answers 200 (bounded by ``ready_timeout``) and
    returns ``self``; ``stop()`` kills everything it started and removes its directory. Also a
    context manager. Without the controller manager nothing reconciles: Deployments get no
    ReplicaSets, deleted namespaces stay Terminating, and namespaces have no ``default``
    ServiceAccount (so Pods cannot be created in them either).
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        etcd_binary: Path | None = None,
        ready_timeout: float = 60.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self._bin_dir_override = bin_dir
        self._etcd_override = etcd_binary
        self.ready_timeout = ready_timeout
        self._extra_apiserver_args = list(extra_apiserver_args)
        self._tmp_dir: Path | None = None
        self._pki: Pki | None = None
        self._bin_dir: Path | None = None
        self._server: str | None = None
        self._kubeconfig: Path | None = None
        self._etcd_url: str | None = None
        self._processes: dict[str, ManagedProcess] = {}
        self._all_pids: list[int] = []
        self._ready_deadline = 0.0
        self._network: NetworkSlot | None = None
        self.startup_seconds: float | None = None
        """Seconds from ``start()`` (binaries already located) until ``/readyz`` said ok."""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        if self._tmp_dir is not None:
            raise ControlPlaneError("ControlPlane already started")
        bin_dir = self._bin_dir_override or locate_k8s_bin_dir()
        etcd = self._etcd_override or Path(os.environ.get(ETCD_ENV) or bin_dir / "etcd")
        started = time.monotonic()
        self._ready_deadline = started + self.ready_timeout
        self._bin_dir = bin_dir
        self._tmp_dir = owned_tmp_dir("agentspec-k8s-")
        # Registered before any child exists: an interrupted run (Ctrl-C during setup, a
        # fixture that never reaches teardown) still cleans up on interpreter exit.
        atexit.register(self.stop)
        try:
            # Services get ClusterIPs from this instance's own slice of the pod network, so a
            # process kubelet can serve them (and parallel clusters never share an address).
            self._network = reserve_slot()
            self._pki = write_pki(
                self._tmp_dir / "pki", kubernetes_service_ip=self._network.kubernetes_service_ip
            )
            self._start_with_port_retry(lambda attempt: self._start_etcd(etcd, attempt))
            self._start_with_port_retry(self._start_apiserver)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every process (newest first), then remove the instance's directory.

        Idempotent. SIGTERM with a short grace period, then SIGKILL of the whole process
        group; the data is thrown away anyway, so no process gets long to shut down.
        """
        for name in reversed(list(self._processes)):
            self._processes.pop(name).stop(grace=5.0)
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
        if self._network is not None:
            self._network.release()
        # Everything below pointed into the removed directory or at dead processes.
        self._pki = self._server = self._kubeconfig = self._etcd_url = self._network = None
        atexit.unregister(self.stop)

    # -- what tests use ---------------------------------------------------------------------

    @property
    def server(self) -> str:
        """``https://127.0.0.1:<port>`` of the apiserver."""
        if self._server is None:
            raise ControlPlaneError("ControlPlane not started")
        return self._server

    @property
    def kubeconfig(self) -> Path:
        """An admin (system:masters) kubeconfig with embedded credentials."""
        if self._kubeconfig is None:
            raise ControlPlaneError("ControlPlane not started")
        return self._kubeconfig

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            raise ControlPlaneError("ControlPlane not started")
        return self._bin_dir

    @property
    def ca_cert(self) -> Path:
        return self._require_pki().ca_cert

    @property
    def pki(self) -> Pki:
        return self._require_pki()

    @property
    def network(self) -> NetworkSlot:
        """This instance's pod and Service address ranges (see ``podnet``)."""
        if self._network is None:
            raise ControlPlaneError("ControlPlane not started")
        return self._network

    @property
    def tmp_dir(self) -> Path | None:
        """The instance's directory (PKI, etcd data, logs); ``None`` once stopped."""
        return self._tmp_dir

    @property
    def pids(self) -> list[int]:
        """Every PID this instance ever started, including failed attempts and stopped ones."""
        return list(self._all_pids)

    def process_log(self, name: str) -> Path:
        """The log file of ``etcd``, ``kube-apiserver`` or ``kube-controller-manager``."""
        return self._processes[name].log_path

    def kubectl(
        self,
        *args: str,
        namespace: str | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as cluster admin; raise :class:`KubectlError` if ``check``."""
        tmp_dir = self._require_tmp_dir()
        argv = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={self.kubeconfig}",
            # A per-instance discovery cache: the default (~/.kube/cache, keyed by host:port)
            # would serve one run's API resources to a later instance that reuses the port.
            f"--cache-dir={tmp_dir / 'kubectl-cache'}",
        ]
        if namespace is not None:
            argv.append(f"--namespace={namespace}")
        argv.extend(args)
        result = subprocess.run(
            argv,
            input=input,
            # Without input, kubectl must not inherit (and block on) pytest's stdin.
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def kubectl_json(self, *args: str, namespace: str | None = None) -> JsonObject:
        """Run kubectl with ``-o json`` appended and parse its output."""
        result = self.kubectl(*args, "-o", "json", namespace=namespace)
        return cast(JsonObject, json.loads(result.stdout))

    def apply_crds(self, crd_dir: Path, *, timeout: float = 60.0) -> None:
        """Server-side apply every manifest in ``crd_dir``; wait until all CRDs are Established."""
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=agentspec-tests",
            "--force-conflicts",
            "-f",
            str(crd_dir),
        )
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            f"--timeout={timeout:.0f}s",
            timeout=timeout + 30,
        )

    def bound(self, namespace: str) -> NamespacedKubectl:
        return NamespacedKubectl(self, namespace)

    def start_controller_manager(self, *, timeout: float = 60.0) -> None:
        """Start kube-controller-manager and wait until its ``/healthz`` answers.

        Runs every default controller (deployments → replicasets → pods, namespace deletion,
        garbage collector, HPA, service accounts and their tokens, root CA publisher, ...).
        Pods stay Pending: there is no scheduler or kubelet.
        """
        if "kube-controller-manager" in self._processes:
            raise ControlPlaneError("kube-controller-manager already running")
        pki = self._require_pki()
        tmp_dir = self._require_tmp_dir()

        def start(attempt: int) -> None:
            (port,) = free_ports(1)
            argv = [
                str(self.bin_dir / "kube-controller-manager"),
                # No --authentication/authorization-kubeconfig: delegated authn would read the
                # front-proxy CA the apiserver does not have and log errors forever; /healthz
                # is always allowed, and nothing else of the KCM's own endpoint is used.
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                # One identity (ours) for every controller: no per-controller RBAC to wait for.
                "--use-service-account-credentials=false",
                "--controllers=*",
                f"--service-account-private-key-file={pki.sa_private_key}",
                f"--root-ca-file={pki.ca_cert}",
                # Lets the CSR signing controllers run too (they skip themselves otherwise).
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={self.network.service_cidr}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                # Serve /healthz with our CA-signed cert (SAN 127.0.0.1) so we can verify it.
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--cert-dir={tmp_dir / 'kcm-certs'}",
                # Default 15s makes HPA tests slow; a test cluster has few objects to sync.
                "--horizontal-pod-autoscaler-sync-period=1s",
                # Default client rate limits (20 qps) throttle bursts of test objects.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--profiling=false",
            ]
            process = self._spawn("kube-controller-manager", argv, attempt)
            self._wait_https_ok(process, port, "/healthz", timeout=timeout)

        self._start_with_port_retry(start)

    # -- internals --------------------------------------------------------------------------

    def _require_tmp_dir(self) -> Path:
        if self._tmp_dir is None:
            raise ControlPlaneError("ControlPlane not started")
        return self._tmp_dir

    def _remaining(self) -> float:
        # One deadline for the whole start, so ready_timeout bounds etcd + apiserver together.
        return max(self._ready_deadline - time.monotonic(), 0.1)

    def _require_pki(self) -> Pki:
        if self._pki is None:
            raise ControlPlaneError("ControlPlane not started")
        return self._pki

    def _require_etcd_url(self) -> str:
        if self._etcd_url is None:
            raise ControlPlaneError("etcd not started")
        return self._etcd_url

    def _spawn(self, name: str, argv: Sequence[str], attempt: int) -> ManagedProcess:
        tmp_dir = self._require_tmp_dir()
        process = start_process(
            name,
            argv,
            log_path=tmp_dir / "logs" / f"{name}-{attempt}.log",
            env=_child_env(),
            cwd=tmp_dir,
        )
        self._processes[name] = process
        self._all_pids.append(process.pid)
        return process

    def _start_with_port_retry(self, start: Callable[[int], None]) -> None:
        # Free ports are probed, closed and only then bound by the child, so a parallel
        # worker can steal one in between; that shows up as a bind error and earns a retry.
        for attempt in range(_PORT_RETRIES):
            try:
                start(attempt)
            except _PortTakenError:
                continue
            return
        raise ControlPlaneError(f"lost a free port to another process {_PORT_RETRIES} times")

    def _failed(self, process: ManagedProcess, problem: str) -> ControlPlaneError:
        if not process.running() and _ADDRESS_IN_USE in process.log_tail(400).lower():
            self._processes.pop(process.name, None)
            return _PortTakenError(problem)
        return ControlPlaneError(process.describe_failure(problem))

    def _start_etcd(self, binary: Path, attempt: int) -> None:
        tmp_dir = self._require_tmp_dir()
        client_port, peer_port = free_ports(2)
        client_url = f"http://{LOOPBACK}:{client_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        argv = [
            str(binary),
            "--name=agentspec",
            f"--data-dir={tmp_dir / f'etcd-data-{attempt}'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=agentspec={peer_url}",
            "--initial-cluster-state=new",
        ]
        if _etcd_version(binary) >= (3, 5):
            # The store is thrown away with the instance, and fsync is most of etcd's write
            # latency. (3.4, Debian's etcd-server, has no such flag.)
            argv.append("--unsafe-no-fsync")
        process = self._spawn("etcd", argv, attempt)

        def healthy() -> bool:
            if not process.running():
                raise ExitedEarlyError
            try:
                conn = http.client.HTTPConnection(LOOPBACK, client_port, timeout=2)
                try:
                    conn.request("GET", "/health")
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                return False
            return response.status == 200 and b'"health":"true"' in body

        try:
            wait_until(healthy, timeout=self._remaining(), what="etcd /health")
        except ExitedEarlyError:
            process.stop(grace=1.0)
            raise self._failed(process, "exited during startup") from None
        except TimeoutError as exc:
            raise ControlPlaneError(process.describe_failure(str(exc))) from None
        self._etcd_url = client_url

    def _start_apiserver(self, attempt: int) -> None:
        pki = self._require_pki()
        tmp_dir = self._require_tmp_dir()
        (port,) = free_ports(1)
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self._require_etcd_url()}",
            f"--secure-port={port}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={self.network.service_cidr}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The endpoint reconciler would publish the advertise address as the endpoint of
            # Service `kubernetes` and fails every 10s: loopback IPs are invalid endpoints.
            # Nothing here reaches the apiserver through that Service.
            "--endpoint-reconciler-type=none",
            # Would default to /var/run/kubernetes: shared between instances, and root-only.
            f"--cert-dir={tmp_dir / 'apiserver-certs'}",
            "--profiling=false",
            # The aggregation layer, so extension API servers (KEDA's metrics server) serve
            # through this apiserver and trust who it says the caller is.
            f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            *self._extra_apiserver_args,
        ]
        process = self._spawn("kube-apiserver", argv, attempt)
        self._wait_https_ok(process, port, "/readyz", timeout=self._remaining())
        self._server = f"https://{LOOPBACK}:{port}"
        self._kubeconfig = tmp_dir / "admin.kubeconfig"
        self._kubeconfig.write_text(kubeconfig_text(server=self._server, pki=pki))
        self._kubeconfig.chmod(0o600)

    def _wait_https_ok(
        self, process: ManagedProcess, port: int, path: str, *, timeout: float
    ) -> None:
        pki = self._require_pki()
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))

        def ok() -> bool:
            if not process.running():
                raise ExitedEarlyError
            try:
                conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=2, context=context)
                try:
                    conn.request("GET", path)
                    status = conn.getresponse().status
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                # Not listening yet, or TLS not up yet.
                return False
            return status == 200

        try:
            wait_until(ok, timeout=timeout, what=f"{process.name} {path}", interval=0.1)
        except ExitedEarlyError:
            process.stop(grace=1.0)
            raise self._failed(process, "exited during startup") from None
        except TimeoutError as exc:
            raise ControlPlaneError(process.describe_failure(str(exc))) from None


class _PortTakenError(ControlPlaneError):
    """A child lost its (probed-free) port to another process; the start is retried."""


@dataclass(frozen=True)
class NamespacedKubectl:
    """``kubectl`` bound to one control plane and one namespace (the ``kubectl`` fixture)."""

    control_plane: ControlPlane
    namespace: str

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, namespace=self.namespace, input=input, check=check)

    def json(self, *args: str) -> JsonObject:
        """``kubectl <args> -o json`` in the namespace, parsed."""
        return self.control_plane.kubectl_json(*args, namespace=self.namespace)

    def apply(self, manifest: str | JsonObject) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of a YAML string or a manifest dict, in the namespace."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", input=text)
