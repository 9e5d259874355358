"""Operator-wide settings: what every agent gets unless its spec overrides it.

One frozen value built once by ``main`` from flags and environment and passed down; nothing
reads the environment after start-up, so tests build settings directly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FIELD_MANAGER = "agentspec-operator"
CUSTOM_METRICS_API_SERVICES = ("v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io")
"""The APIServices an HPA's Pods metrics come through (the HPA controller prefers v1beta2)."""
REPLICAS_HANDOVER_MANAGER = "agentspec-operator-handover"
"""Holds an agent's replica count, unchanged, while autoscaling takes it over."""
DEFAULT_RUNTIME_IMAGE = "ghcr.io/agentspec/agentspec-runtime:0.1.0"
RUNTIME_IMAGE_ENV = "AGENTSPEC_RUNTIME_IMAGE"
# Forwarded to every agent so traces of all agents land in the same collector.
OTEL_PREFIX = "OTEL_"

DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_RATE_WINDOW = "1m"
RATE_WINDOW = re.compile(r"^([1-9][0-9]{1,5}s|[1-9][0-9]{0,5}[mh])$")
"""A rate() window of at least 10 s: shorter holds too few scrapes to give any rate."""


@dataclass(frozen=True)
class PrometheusAuth:
    """How KEDA authenticates to Prometheus: a ClusterTriggerAuthentication (which holds the
    token, the basic-auth pair or the client certificate) and KEDA's authModes for it."""

    name: str
    modes: str


Selector = dict[str, Any]
"""A NetworkPolicy peer: ``{"namespaceSelector": ..., "podSelector": ...}``."""


@dataclass(frozen=True)
class OperatorSettings:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    otel_env: Mapping[str, str] = field(default_factory=dict)
    """OTEL_* variables passed through to every runtime container."""
    gateway_peers: tuple[Selector, ...] = ()
    """Extra NetworkPolicy peers allowed on the API port (gateways, ingress controllers)."""
    monitoring_peers: tuple[Selector, ...] = ()
    """NetworkPolicy peers allowed on the metrics port. Empty: nobody."""
    workers: int = 32
    """Reconciles running at once; they mostly wait on the apiserver."""
    resync_seconds: float = 300.0
    """Full re-apply of every agent: restores children whose kinds are not watched."""
    stalled_retry_seconds: float = 10.0
    """Retry of a Stalled agent: a missing Secret has no watch, so time brings recovery."""
    keda_available: bool = False
    """Whether the KEDA ScaledObject CRD exists (detected at start-up)."""
    custom_metrics_available: bool = True
    """Whether the cluster served the custom metrics API (which ``provider: hpa`` needs) when
    the operator started; True when it could not tell."""
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    """The Prometheus KEDA's triggers query (it must scrape the agents' metrics ports)."""
    prometheus_auth: PrometheusAuth | None = None
    """Credentials for that Prometheus, by reference; None: it needs none."""
    scaling_rate_window: str = DEFAULT_RATE_WINDOW
    """The window of the tokens/s rate scaling acts on: at least four scrape intervals."""


def otel_passthrough(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(environ.items()) if k.startswith(OTEL_PREFIX)}


def runtime_image_from_env(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(RUNTIME_IMAGE_ENV) or DEFAULT_RUNTIME_IMAGE
