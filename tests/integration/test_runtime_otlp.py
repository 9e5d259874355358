"""Spans leave the runtime over OTLP/HTTP when the standard OTEL_* variables ask for it.

In: a runtime process with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local receiver (a plain
HTTP server decoding the protobuf payloads), and a request carrying a W3C traceparent.
Asserted: the exported spans continue the caller's trace, with GenAI span names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Receiver(ThreadingHTTPServer):
    spans: list[tuple[str, str, str]]  # (name, trace id, service.name)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.server.spans.append((span.name, span.trace_id.hex(), service))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_spans_are_exported_over_otlp_and_continue_the_callers_trace(
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.text("traced"))
        path = write_docs(tmp_path / "agent.yaml", agent_docs(llm_url=llm.base_url))
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with RuntimeProcess(config=path, env=env) as runtime:
            response = httpx.post(
                f"{runtime.base_url}/v1/chat/completions",
                headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
                json={"model": "assistant", "messages": [{"role": "user", "content": "x"}]},
            )
            assert response.status_code == 200
            wait_until(lambda: len(receiver.spans) >= 2, timeout=10, what="exported spans")
    names = {name for name, _, _ in receiver.spans}
    assert {"invoke_agent assistant", "chat fake-model"} <= names
    assert {trace for _, trace, _ in receiver.spans} == {TRACE_ID}
    assert {service for _, _, service in receiver.spans} == {"assistant"}
    assert llm.requests[0].headers["traceparent"].split("-")[1] == TRACE_ID
