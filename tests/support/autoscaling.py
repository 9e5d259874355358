"""The autoscaling scenario the end-to-end test asserts on and ``bench/autoscale_bench.py``
measures: one agent with ``provider: keda`` in a shipped cluster with Prometheus and KEDA, a
step of load through its Service, a prompt change during the scale-up, the load's end.

:class:`AutoscalingStack` is the cluster (the chart installed with the Prometheus address and
the rate window), Prometheus and KEDA. :func:`run_scale_scenario` drives one run and returns
what happened (:class:`ScaleRun`): timings, every answer and failure, and the audit of who
changed the Deployment's replica count. No pytest dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from agentspec_operator.reconcile import replicas_owners
from agentspec_operator.settings import FIELD_MANAGER

from .cluster import ShippedCluster
from .control_plane import NamespacedKubectl
from .fake_llm import ChatRequest, FakeLLM, Turn
from .metrics_stack import Keda, Prometheus, install_keda_crds
from .operator_testkit import prompt_doc
from .procs import Managed, free_ports, owned_tmp_dir, wait_until, wait_until_async

__all__ = ["AGENT", "AutoscalingStack", "ScaleRun", "run_scale_scenario"]

AGENT = "assistant"
SELECTOR = f"agentspec.io/agent={AGENT}"
TOKENS_PER_REQUEST = 100
"""Small requests, many of them: a 10 s rate window then holds ~65 of them, so the measured
rate stays within a few percent of the offered load (at 500 it swung by a fifth)."""
Json = dict[str, Any]


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            # every write of a Deployment or its scale, with the body the writer sent
            "level": "Request",
            "verbs": ["create", "update", "patch"],
            "resources": [{"group": "apps", "resources": ["deployments", "deployments/scale"]}],
        },
        {"level": "None"},
    ],
}


@dataclass(frozen=True)
class ReplicaWrite:
    """A write that set a Deployment's ``spec.replicas``, from the apiserver's audit log."""

    user_agent: str
    username: str
    verb: str
    subresource: str
    replicas: int | None


class AutoscalingStack(Managed):
    def __init__(self, *, rate_window: str = "10s") -> None:
        self.rate_window = rate_window
        self._stack = contextlib.ExitStack()
        self.cluster: ShippedCluster
        self.prometheus: Prometheus
        self.keda: Keda
        self.audit_log: Path

    def start(self) -> Self:
        (port,) = free_ports(1)
        values = [
            "--set", f"autoscaling.prometheusUrl=http://127.0.0.1:{port}",
            "--set", f"autoscaling.rateWindow={self.rate_window}",
        ]  # fmt: skip
        work = owned_tmp_dir("agentspec-autoscaling-")
        self._stack.callback(shutil.rmtree, work, ignore_errors=True)
        policy = work / "audit-policy.yaml"
        policy.write_text(json.dumps(AUDIT_POLICY))
        self.audit_log = work / "audit.log"
        audit_args = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]
        try:
            self.cluster = self._stack.enter_context(
                ShippedCluster(
                    helm_values=values,
                    before_install=install_keda_crds,
                    extra_apiserver_args=audit_args,
                )
            )
            self.prometheus = self._stack.enter_context(Prometheus(self.cluster.plane, port=port))
            self.keda = self._stack.enter_context(Keda(self.cluster.plane))
        except BaseException:
            self._stack.close()
            raise
        return self

    def stop(self) -> None:
        self._stack.close()

    def replica_writes(self, namespace: str, name: str) -> list[ReplicaWrite]:
        """Every successful write that set ``spec.replicas`` of Deployment ``name``: through
        the ``scale`` subresource, or a create/update/patch of the Deployment whose body
        carries the field (status writes do not count)."""
        writes = []
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if (ref.get("resource"), ref.get("namespace"), ref.get("name")) != (
                "deployments",
                namespace,
                name,
            ) or event.get("stage") != "ResponseComplete":
                continue
            if event.get("responseStatus", {}).get("code", 0) >= 300:
                continue
            subresource = ref.get("subresource", "")
            spec = (event.get("requestObject") or {}).get("spec") or {}
            if subresource == "status" or (subresource != "scale" and "replicas" not in spec):
                continue
            writes.append(
                ReplicaWrite(
                    event.get("userAgent", ""),
                    event.get("user", {}).get("username", ""),
                    event["verb"],
                    subresource,
                    spec.get("replicas"),
                )
            )
        return writes


def answer_with_usage(request: ChatRequest) -> Turn:
    """A fixed usage per request (80 in, 20 out) and the system prompt as the answer."""
    return (
        Turn.text(request.system_prompt or "")
        .with_usage(prompt=80, completion=TOKENS_PER_REQUEST - 80)
        .with_latency(first_byte=0.02)
    )


def prompt(stable: str) -> Json:
    doc = prompt_doc(versions=("v1", "v2"), stable=stable)
    for version in doc["spec"]["versions"]:
        version["template"] = f"prompt {version['version']} speaking"
    return doc


def agent(llm: FakeLLM, *, target: float, scale_down_window: int) -> Json:
    return {
        "apiVersion": "agentspec.io/v1alpha1",
        "kind": "AgentSpec",
        "metadata": {"name": AGENT},
        "spec": {
            "promptRef": {"name": "p"},
            "model": {"model": "gpt-4o-mini", "baseUrl": llm.base_url},
            "memory": {"type": "none"},
            "runtime": {
                "autoscaling": {
                    "provider": "keda",
                    "minReplicas": 1,
                    "maxReplicas": 6,
                    "targetTokensPerSecond": target,
                    "scaleDownStabilizationSeconds": scale_down_window,
                }
            },
        },
    }


@dataclass
class ReplicaAudit:
    """Samples the Deployment every half second: each change of ``spec.replicas`` with the
    managers that owned the field (``manager/subresource``), and any sample in which the
    operator owned it."""

    kubectl: NamespacedKubectl
    changes: list[tuple[float, int, frozenset[str]]] = field(default_factory=list)
    operator_owned: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: Exception | None = None

    def start(self) -> ReplicaAudit:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise AssertionError(f"the replica sampler failed: {self._error!r}")
        self._sample()  # the state the run ended in

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(0.5)
        except Exception as e:  # surfaced by stop(): a dead sampler must not pass quietly
            self._error = e

    def _sample(self) -> None:
        deployment = self.kubectl.json("get", "deployment", AGENT, "--show-managed-fields")
        replicas = int(deployment["spec"]["replicas"])
        owners = frozenset(replicas_owners(deployment))
        if FIELD_MANAGER in owners:
            self.operator_owned.append(deployment["metadata"]["resourceVersion"])
        if not self.changes or self.changes[-1][1] != replicas:
            self.changes.append((time.monotonic(), replicas, owners))

    @property
    def counts(self) -> list[int]:
        return [count for _, count, _ in self.changes]


@dataclass
class Load:
    """Requests at a fixed rate through the Service, each on a new connection (balanced per
    connection, as kube-proxy does); every outcome is kept."""

    url: str
    rps: float
    sent: int = 0
    answers: list[tuple[str, str]] = field(default_factory=list)
    failures: list[BaseException | str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=30) as client:
            pending: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            i = 0
            while not stop.is_set():
                i += 1
                self.sent += 1
                task = asyncio.ensure_future(self._one(client, i))
                pending.add(task)
                task.add_done_callback(pending.discard)
                # on schedule, not after the previous answer: a fixed offered load
                delay = started + i / self.rps - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
            if pending:
                await asyncio.gather(*pending)

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        body = {"model": AGENT, "messages": [{"role": "user", "content": f"q{i}"}]}
        try:
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                self.failures.append(f"{response.status_code}: {response.text[:200]}")
                return
            data = response.json()
            self.answers.append(
                (data["choices"][0]["message"]["content"], data["agentspec"]["promptVersion"])
            )
        except Exception as e:  # every failure counts, whatever raised it
            self.failures.append(e)


@dataclass
class ScaleRun:
    target: float
    offered_tokens_per_second: float
    load: Load
    audit: ReplicaAudit
    query: str
    timings: dict[str, float] = field(default_factory=dict)
    steady_replicas: int = 0
    steady_rate: float | None = None
    """The trigger's query, as Prometheus answered it while 3 pods served the load."""
    pods_serving: set[str] = field(default_factory=set)


def ready_pods(cluster: ShippedCluster, ns: str) -> list[Json]:
    return [
        p
        for p in cluster.node.pods(ns, SELECTOR)
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


def pods_served(prometheus: Prometheus, ns: str) -> set[str]:
    """Pods Prometheus saw answer a chat request."""
    result = prometheus.query(
        f'sum by (pod) (agentspec_requests_total{{namespace="{ns}",agent="{AGENT}"}}) > 0'
    )
    return {r["metric"]["pod"] for r in result}


def _scaled_object_ready(kubectl: NamespacedKubectl) -> bool:
    status = kubectl.json("get", "scaledobject", AGENT).get("status", {})
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def run_scale_scenario(
    stack: AutoscalingStack,
    kubectl: NamespacedKubectl,
    *,
    target: float = 250.0,
    load_factor: float = 2.6,
    scale_down_window: int = 5,
) -> ScaleRun:
    """Deploy the agent at 1 pod, offer ``load_factor`` x ``target`` tokens/s through its
    Service until 3 pods serve (changing the prompt as the second pod comes), stop, wait for
    1 pod again. Timings: ``second_replica`` and ``three_ready`` from the load step,
    ``scaled_down`` from the load's end, ``every_replica_v2`` from the prompt change."""
    cluster, prometheus, ns = stack.cluster, stack.prometheus, kubectl.namespace
    with FakeLLM(responder=answer_with_usage) as llm:
        kubectl.apply(prompt("v1"))
        kubectl.apply(agent(llm, target=target, scale_down_window=scale_down_window))
        cluster.wait_agent_ready(kubectl, AGENT)
        trigger = kubectl.json("get", "scaledobject", AGENT)["spec"]["triggers"][0]
        wait_until(
            lambda: _scaled_object_ready(kubectl),
            timeout=60,
            what="ScaledObject Ready",
            interval=0.5,
        )
        (first,) = cluster.node.wait_ready(ns, SELECTOR, count=1, timeout=60)
        wait_until(
            lambda: f"{ns}/{first['metadata']['name']}" in prometheus.targets_up(),
            timeout=30,
            what="Prometheus scraping the agent pod",
            interval=0.5,
        )
        rps = load_factor * target / TOKENS_PER_REQUEST
        run = ScaleRun(
            target=target,
            offered_tokens_per_second=rps * TOKENS_PER_REQUEST,
            load=Load(cluster.service_url(AGENT, ns), rps),
            audit=ReplicaAudit(kubectl).start(),
            query=trigger["metadata"]["query"],
        )
        try:
            asyncio.run(_drive(stack, kubectl, run))
        finally:
            run.audit.stop()
        return run


async def _drive(stack: AutoscalingStack, kubectl: NamespacedKubectl, run: ScaleRun) -> None:
    cluster, prometheus, ns = stack.cluster, stack.prometheus, kubectl.namespace

    def replicas() -> int:
        return int(kubectl.json("get", "deployment", AGENT)["spec"]["replicas"])

    async def until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:  # noqa: ASYNC109
        """Poll ``condition`` (kubectl, HTTP) off the event loop that drives the load, so the
        load keeps its schedule."""
        await wait_until_async(
            lambda: asyncio.to_thread(condition), timeout=timeout, what=what, interval=0.5
        )

    stop = asyncio.Event()
    running = asyncio.ensure_future(run.load.run(stop))
    started = time.monotonic()
    try:
        await until(lambda: replicas() >= 2, timeout=120, what="a second replica")
        run.timings["second_replica"] = time.monotonic() - started
        # the scale-up is under way: the prompt changes while pods are being added
        changed = time.monotonic()
        await asyncio.to_thread(kubectl.apply, prompt("v2"))
        await until(lambda: len(ready_pods(cluster, ns)) >= 3, timeout=180, what="3 ready pods")
        run.timings["three_ready"] = time.monotonic() - started
        three = await asyncio.to_thread(
            lambda: {p["metadata"]["name"] for p in ready_pods(cluster, ns)}
        )

        def every_replica_on_v2() -> bool:
            return all(
                httpx.get(f"http://{pod['status']['podIP']}:8080/status", timeout=5).json()[
                    "promptVersions"
                ]
                == {"v2": 100}
                for pod in ready_pods(cluster, ns)
            )

        await until(every_replica_on_v2, timeout=30, what="v2 on every replica")
        run.timings["every_replica_v2"] = time.monotonic() - changed

        # the load stays until each of the (at least) three pods has answered through the
        # Service, as Prometheus saw it
        def every_pod_serving() -> bool:
            run.pods_serving = pods_served(prometheus, ns)
            return run.pods_serving >= three

        await until(every_pod_serving, timeout=60, what="every pod serving")
        run.steady_replicas = replicas()
        run.steady_rate = await asyncio.to_thread(prometheus.value, run.query)
    finally:
        stop.set()
        await running
    stopped = time.monotonic()
    await until(lambda: replicas() == 1, timeout=180, what="scale back to 1")
    run.timings["scaled_down"] = time.monotonic() - stopped
