"""Operator metrics (Prometheus): queue depth, reconciles, probes and API calls.

Read from the live controller at scrape time; nothing on the reconcile path updates them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .controller import Controller


class _ControllerCollector(Collector):
    def __init__(self, ref: Sequence[Controller]) -> None:
        self._ref = ref

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if not self._ref:
            return
        ctl = self._ref[0]
        depth = GaugeMetricFamily(
            "agentspec_operator_queue_depth", "Keys waiting or in progress", labels=["queue"]
        )
        depth.add_metric(["agents"], len(ctl.agents))
        depth.add_metric(["prompts"], len(ctl.prompts))
        depth.add_metric(["probes"], len(ctl.probes))
        yield depth
        yield CounterMetricFamily(
            "agentspec_operator_reconciles",
            "AgentSpec reconciles run",
            value=ctl.reconciler.reconciles,
        )
        yield CounterMetricFamily(
            "agentspec_operator_api_requests",
            "Kubernetes API calls made (excluding watches)",
            value=ctl.reconciler.kube.requests,
        )
        yield CounterMetricFamily(
            "agentspec_operator_mcp_probes", "McpServer probes run", value=ctl.mcp.probes
        )


def serve_metrics(port: int, ref: Sequence[Controller]) -> None:
    REGISTRY.register(_ControllerCollector(ref))
    start_http_server(port)
