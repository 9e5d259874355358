"""Traces as waterfalls across agents (``invoke_agent``, ``chat``, ``execute_tool`` spans), from
one of two places:

- ``JaegerTraces``: the Jaeger v2 the user runs (``--jaeger-url``), read through its query
  API (``/api/v3``: services, traces found in a window, one trace by id — OTLP JSON);
- ``TraceStore``: the Studio itself as an OTLP/HTTP receiver (``POST /v1/traces``, protobuf or
  JSON), a development convenience of folder mode — point the agents' standard
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the Studio. The last ``MAX_TRACES`` traces are kept (at
  most ``MAX_SPANS`` spans each) in memory; nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2

from .views import EditError, Json, KubeApiError

TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")

MAX_TRACES = 200
MAX_SPANS = 2000
MAX_VALUE = 1000
"""Characters of an attribute's text kept."""
_KEPT = ("gen_ai.", "agentspec.", "http.", "error", "rpc.")


def _value(value: Any) -> Any:
    """An OTLP AnyValue (protobuf message or its JSON) as a plain value."""
    if hasattr(value, "WhichOneof"):
        return _proto_value(value)
    if isinstance(value, dict):
        if "arrayValue" in value:
            return [_value(v) for v in value["arrayValue"].get("values", [])]
        for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if key in value:
                return _plain(value[key])
    return None


def _proto_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(value, kind)
    if kind == "array_value":
        return [_value(v) for v in raw.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in raw.values}
    return _plain(raw)


def _plain(value: Any) -> Any:
    """What JSON can carry, short: bytes as hex, no NaN or infinity, strings cut."""
    if isinstance(value, bytes):
        value = value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and len(value) > MAX_VALUE:
        return value[:MAX_VALUE] + "…"
    return value


def _attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key = item.key if hasattr(item, "key") else item.get("key", "")
        value = item.value if hasattr(item, "value") else item.get("value")
        out[str(key)] = _value(value)
    return out


class TraceStore:
    def __init__(self, max_traces: int = MAX_TRACES) -> None:
        self._traces: OrderedDict[str, list[Json]] = OrderedDict()
        self._seen: dict[str, set[str]] = {}
        self.max_traces = max_traces

    async def recent_traces(self) -> list[Json]:
        return self.recent()

    async def find(self, trace_id: str) -> Json | None:
        return self.trace(trace_id)

    def receive(self, body: bytes, content_type: str) -> int:
        """Store the spans of one OTLP export; how many were taken."""
        if content_type.startswith("application/json"):
            try:
                request = json.loads(body)
            except ValueError as e:
                raise EditError(f"not OTLP JSON: {e}") from e
            return self.take_json(request)
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception as e:  # protobuf's DecodeError (untyped), or anything it raises
            raise EditError(f"not OTLP protobuf: {e}") from e
        return self._take(
            (
                _attributes(r.resource.attributes),
                [s for scope in r.scope_spans for s in scope.spans],
            )
            for r in message.resource_spans
        )

    def take_json(self, request: Any) -> int:
        """Store the spans of an OTLP JSON export already parsed (Jaeger's answers are one)."""
        if not isinstance(request, dict) or not isinstance(request.get("resourceSpans", []), list):
            raise EditError("not OTLP JSON: an object with resourceSpans")
        resources = [r for r in request.get("resourceSpans", []) if isinstance(r, dict)]
        return self._take(
            (
                _attributes(r.get("resource", {}).get("attributes", [])),
                [s for scope in r.get("scopeSpans", []) for s in scope.get("spans", [])],
            )
            for r in resources
        )

    def _take(self, batches: Any) -> int:
        taken = 0
        for resource, spans in batches:
            service = str(resource.get("service.name", "unknown"))
            for span in spans:
                if isinstance(span, dict):
                    trace_id = str(span.get("traceId", "")).lower()
                    span_id = str(span.get("spanId", "")).lower()
                    parent = str(span.get("parentSpanId", "")).lower()
                    name = str(span.get("name", ""))[:MAX_VALUE]
                    try:
                        start = int(span.get("startTimeUnixNano", 0))
                        end = int(span.get("endTimeUnixNano", 0))
                    except (TypeError, ValueError):
                        continue  # a span without its times says nothing here
                    attrs = _attributes(span.get("attributes", []))
                    error = (span.get("status") or {}).get("code") in (2, "STATUS_CODE_ERROR")
                else:
                    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                    parent = span.parent_span_id.hex()
                    name, start, end = span.name, span.start_time_unix_nano, span.end_time_unix_nano
                    attrs = _attributes(span.attributes)
                    error = span.status.code == 2
                kept = self._traces.setdefault(trace_id, [])
                self._traces.move_to_end(trace_id)
                seen = self._seen.setdefault(trace_id, set())
                # sent twice (a retried export, two query answers); a full trace takes no more
                if span_id in seen or len(kept) >= MAX_SPANS:
                    continue
                seen.add(span_id)
                if len(kept) < MAX_SPANS:
                    kept.append(
                        {
                            "traceId": trace_id,
                            "spanId": span_id,
                            "parentSpanId": parent or None,
                            "name": name,
                            "service": service,
                            "start": start,
                            "end": end,
                            "error": bool(error),
                            "attributes": {k: v for k, v in attrs.items() if k.startswith(_KEPT)},
                        }
                    )
                    taken += 1
        while len(self._traces) > self.max_traces:
            dropped, _ = self._traces.popitem(last=False)
            self._seen.pop(dropped, None)
        return taken

    def recent(self) -> list[Json]:
        out = []
        for trace_id, spans in reversed(self._traces.items()):
            start = min(s["start"] for s in spans)
            end = max(s["end"] for s in spans)
            roots = [s for s in spans if not s["parentSpanId"]] or spans
            out.append(
                {
                    "traceId": trace_id,
                    "root": min(roots, key=lambda s: s["start"])["name"],
                    "services": sorted({s["service"] for s in spans}),
                    "spans": len(spans),
                    "durationMs": round((end - start) / 1e6, 3),
                    "start": start,
                    "error": any(s["error"] for s in spans),
                }
            )
        return out

    def trace(self, trace_id: str) -> Json | None:
        spans = self._traces.get(trace_id.lower())
        if spans is None:
            return None
        start = min(s["start"] for s in spans)
        end = max(s["end"] for s in spans)
        by_id = {s["spanId"]: s for s in spans}

        def depth(span: Json) -> int:
            seen, level = set(), 0
            while span["parentSpanId"] in by_id and span["spanId"] not in seen:
                seen.add(span["spanId"])
                span = by_id[span["parentSpanId"]]
                level += 1
            return level

        ordered = sorted(spans, key=lambda s: (s["start"], depth(s)))
        return {
            "traceId": trace_id,
            "start": start,
            "durationMs": round((end - start) / 1e6, 3),
            "spans": [
                {
                    **s,
                    "depth": depth(s),
                    "offsetMs": round((s["start"] - start) / 1e6, 3),
                    "durationMs": round((s["end"] - s["start"]) / 1e6, 3),
                }
                for s in ordered
            ],
        }


class JaegerTraces:
    """Jaeger v2's query API (``/api/v3``, its OTLP JSON answers parsed as the receiver
    parses an export). The recent list asks each service (at most ``MAX_SERVICES``, in
    parallel) for its last ``PER_SERVICE`` traces of the past ``WINDOW``: the API finds
    traces by service only."""

    MAX_SERVICES = 30
    PER_SERVICE = 20
    WINDOW = timedelta(hours=1)
    MAX_LISTED = 100

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def _get(self, client: httpx2.AsyncClient, path: str, **params: Any) -> Json | None:
        """The answer's JSON; None for Jaeger's 404 (nothing found)."""
        try:
            response = await client.get(f"{self.url}{path}", params=params)
        except httpx2.HTTPError as e:
            raise KubeApiError(
                503, f"the trace backend (Jaeger at {self.url}) cannot be reached: {e}"
            ) from e
        if response.status_code == 404:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict):
            raise KubeApiError(
                502,
                f"Jaeger at {self.url} answered HTTP {response.status_code}: {response.text[:300]}",
            )
        return data

    @staticmethod
    def _store(answer: Json | None, into: TraceStore | None = None) -> TraceStore:
        store = into or TraceStore()
        result = (answer or {}).get("result")
        if isinstance(result, dict):
            store.take_json(result)
        return store

    async def recent_traces(self) -> list[Json]:
        now = datetime.now(UTC)
        window = {
            "query.start_time_min": (now - self.WINDOW).isoformat(),
            "query.start_time_max": now.isoformat(),
            "query.num_traces": str(self.PER_SERVICE),
        }
        async with httpx2.AsyncClient(timeout=15) as client:
            services = (await self._get(client, "/api/v3/services") or {}).get("services") or []
            answers = await asyncio.gather(
                *(
                    self._get(client, "/api/v3/traces", **window, **{"query.service_name": s})
                    for s in sorted(str(s) for s in services)[: self.MAX_SERVICES]
                )
            )
        # every trace found (one across agents comes once per service: its spans once), then
        # the newest
        store = TraceStore(max_traces=self.MAX_SERVICES * self.PER_SERVICE)
        for answer in answers:
            self._store(answer, store)
        return sorted(store.recent(), key=lambda t: -t["start"])[: self.MAX_LISTED]

    async def find(self, trace_id: str) -> Json | None:
        if not TRACE_ID.match(trace_id):
            raise EditError("a trace id is 32 hexadecimal digits")
        async with httpx2.AsyncClient(timeout=15) as client:
            answer = await self._get(client, f"/api/v3/traces/{trace_id.lower()}")
        return None if answer is None else self._store(answer).trace(trace_id)
