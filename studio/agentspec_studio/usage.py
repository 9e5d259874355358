"""Token usage and cost from the Prometheus that scrapes the agents (``--prometheus-url``):
per agent and prompt version over a window, priced by the Studio's price table
(``--prices FILE``: ``{model: {input: <USD per 1M tokens>, output: ...}}``).

The agents' metrics (see docs/runtime.md): ``agentspec_tokens_total{agent, model,
prompt_version, direction}``, the same by who pays, ``agentspec_consumer_tokens_total{agent,
consumer, model, direction}``, ``agentspec_requests_total{agent, api, outcome}``, the tool
calls by what they reach (``agentspec_tool_calls_total{agent, source, target}``: the
topology's call rates) and, by
prompt version, ``agentspec_prompt_version_requests_total{agent, prompt_version, outcome}``
and its latency histogram (the median per version: the A/B comparison), with the
``namespace`` label the scrape adds (a PodMonitor, or the chart's scrape config).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import yaml

from .views import EditError, Json

WINDOW = re.compile(r"^[1-9][0-9]{0,3}[smhd]$")
LIVE_TIMEOUT = 5.0
"""Seconds the pages' live figures (polled every 10 s) wait for Prometheus."""
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _count(raw: Any) -> int:
    value = float(raw)
    return round(value) if math.isfinite(value) else 0


class PrometheusError(Exception):
    """Prometheus cannot be reached or refused the query; the page says so."""


def load_prices(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping of model -> {{input, output}} USD per 1M tokens")
    prices: dict[str, dict[str, float]] = {}
    for model, price in data.items():
        if not isinstance(price, dict):
            raise ValueError(f"{path}: {model}: give input and output USD per 1M tokens")
        prices[str(model)] = {k: float(price.get(k, 0)) for k in ("input", "output")}
    return prices


class Usage:
    def __init__(self, url: str | None, prices: Mapping[str, Mapping[str, float]]) -> None:
        self.url = url.rstrip("/") if url else None
        self.prices = prices

    async def _query(self, client: httpx2.AsyncClient, promql: str) -> list[Json]:
        try:
            response = await client.get(f"{self.url}/api/v1/query", params={"query": promql})
            data = response.json()
        except (httpx2.HTTPError, ValueError) as e:
            raise PrometheusError(f"Prometheus at {self.url} cannot be reached: {e}") from e
        if data.get("status") != "success":
            raise PrometheusError(f"Prometheus refused the query: {data.get('error')}")
        result: list[Json] = data["data"]["result"]
        return result

    def _priced(self, tokens: list[Json], label: str, key: str) -> list[Json]:
        """Token series summed by (agent, ``label``, model), input and output, priced."""
        rows: dict[tuple[str, str, str], Json] = {}
        for series in tokens:
            labels = series["metric"]
            group = (labels.get("agent", ""), labels.get(label, ""), labels.get("model", ""))
            row = rows.setdefault(
                group,
                {"agent": group[0], key: group[1], "model": group[2], "input": 0, "output": 0},
            )
            direction = "input" if labels.get("direction") == "input" else "output"
            row[direction] += _count(series["value"][1])
        for row in rows.values():
            price = self.prices.get(row["model"])
            row["cost"] = (
                round((row["input"] * price["input"] + row["output"] * price["output"]) / 1e6, 6)
                if price
                else None
            )
        return list(rows.values())

    def _selector(self, namespace: str) -> str:
        if not self.url:
            raise PrometheusError("no Prometheus configured (agentspec studio --prometheus-url)")
        if not NAMESPACE.match(namespace):
            raise EditError(f"{namespace!r} is not a namespace name")
        return f'namespace="{namespace}"'

    async def agent_figures(self, namespace: str) -> dict[str, Json]:
        """Per agent: tokens per second (the last minute) and failed requests (the last
        hour), the agents page's live figures."""
        selector = self._selector(namespace)
        async with httpx2.AsyncClient(timeout=LIVE_TIMEOUT) as client:
            tokens = await self._query(
                client, f"sum by (agent) (rate(agentspec_tokens_total{{{selector}}}[1m]))"
            )
            requests = await self._query(
                client,
                f"sum by (agent, outcome) (increase(agentspec_requests_total{{{selector}}}[1h]))",
            )
        figures: dict[str, Json] = {}
        for series in tokens:
            value = float(series["value"][1])
            figures.setdefault(series["metric"].get("agent", ""), {})["tokensPerSecond"] = (
                round(value, 2) if math.isfinite(value) else 0.0
            )
        for series in requests:  # an agent that served requests, none failing, has 0 errors
            entry = figures.setdefault(series["metric"].get("agent", ""), {})
            failed = _count(series["value"][1]) if series["metric"].get("outcome") != "ok" else 0
            entry["errors"] = entry.get("errors", 0) + failed
        return figures

    async def call_rates(self, namespace: str) -> dict[tuple[str, str, str], float]:
        """Tool calls per second over the last 5 minutes by (agent, source, target)."""
        selector = self._selector(namespace)
        async with httpx2.AsyncClient(timeout=LIVE_TIMEOUT) as client:
            result = await self._query(
                client,
                "sum by (agent, source, target) "
                f"(rate(agentspec_tool_calls_total{{{selector}}}[5m]))",
            )
        rates: dict[tuple[str, str, str], float] = {}
        for series in result:
            labels = series["metric"]
            value = float(series["value"][1])
            key = (labels.get("agent", ""), labels.get("source", ""), labels.get("target", ""))
            rates[key] = value if math.isfinite(value) else 0.0
        return rates

    async def report(self, namespace: str, window: str) -> Json:
        selector = self._selector(namespace)
        if not WINDOW.match(window):
            raise EditError("window: a number and s, m, h or d (for example 1h)")
        async with httpx2.AsyncClient(timeout=15) as client:
            tokens = await self._query(
                client,
                "sum by (agent, model, prompt_version, direction) "
                f"(increase(agentspec_tokens_total{{{selector}}}[{window}]))",
            )
            requests = await self._query(
                client,
                "sum by (agent, outcome) "
                f"(increase(agentspec_requests_total{{{selector}}}[{window}]))",
            )
            by_version = await self._query(
                client,
                "sum by (agent, prompt_version, outcome) (increase("
                f"agentspec_prompt_version_requests_total{{{selector}}}[{window}]))",
            )
            latency = await self._query(
                client,
                "histogram_quantile(0.5, sum by (agent, prompt_version, le) (rate("
                f"agentspec_prompt_version_request_duration_seconds_bucket{{{selector}}}"
                f"[{window}])))",
            )
            by_consumer = await self._query(
                client,
                "sum by (agent, consumer, model, direction) "
                f"(increase(agentspec_consumer_tokens_total{{{selector}}}[{window}]))",
            )
        rows = self._priced(tokens, "prompt_version", "promptVersion")
        consumers = self._priced(by_consumer, "consumer", "consumer")
        outcomes: dict[str, Json] = {}
        for series in requests:
            labels = series["metric"]
            entry = outcomes.setdefault(labels.get("agent", ""), {"agent": labels.get("agent", "")})
            value = float(series["value"][1])
            entry[labels.get("outcome", "unknown")] = round(value) if math.isfinite(value) else 0
        versions: dict[tuple[str, str], Json] = {}
        for series in by_version:
            labels = series["metric"]
            pair = (labels.get("agent", ""), labels.get("prompt_version", ""))
            entry = versions.setdefault(
                pair, {"agent": pair[0], "promptVersion": pair[1], "requests": 0, "errors": 0}
            )
            count = _count(series["value"][1])
            entry["requests"] += count
            if labels.get("outcome") != "ok":
                entry["errors"] += count
        for series in latency:
            labels = series["metric"]
            pair = (labels.get("agent", ""), labels.get("prompt_version", ""))
            median = float(series["value"][1])
            if pair in versions and math.isfinite(median):
                versions[pair]["p50Ms"] = round(median * 1000, 1)
        return {
            "window": window,
            "versions": sorted(versions.values(), key=lambda r: (r["agent"], r["promptVersion"])),
            "rows": sorted(rows, key=lambda r: (r["agent"], r["promptVersion"])),
            "consumers": sorted(consumers, key=lambda r: (r["agent"], r["consumer"])),
            "requests": sorted(outcomes.values(), key=lambda r: r["agent"]),
            "priced": sorted(self.prices),
            "prices": {model: dict(price) for model, price in sorted(self.prices.items())},
        }
