"""Spans leave the runtime over OTLP/HTTP when the standard OTEL_* variables ask for it.

In: a runtime process with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local receiver (a plain
HTTP server decoding the protobuf payloads), and a request carrying a W3C traceparent.
Asserted: the exported spans continue the caller's trace, with GenAI span names; an A2A task
resumed after its process was killed runs in a new trace linked to the caller's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.a2a_client import task_state
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, ToolCall, Turn
from tests.support.mcp_servers import McpTestServer
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Receiver(ThreadingHTTPServer):
    spans: list[tuple[str, str, str]]  # (name, trace id, service.name)
    links: dict[str, list[str]]  # span name -> the trace ids it links to


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
                    self.server.links[span.name] = [link.trace_id.hex() for link in span.links]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.spans = []
    server.links = {}
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


def test_a_resumed_task_runs_in_a_new_trace_linked_to_the_callers(
    receiver: Receiver, tmp_path: Path
) -> None:
    with McpTestServer(tools=("slow_lookup",)) as mcp, FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "traced", "seconds": 2})),
            Turn.text("done"),
        )
        docs = agent_docs(
            llm_url=llm.base_url,
            mcp=[{"name": "tools", "url": mcp.url}],
            tasks={"leaseSeconds": 5},
        )
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        runtime = RuntimeProcess(config=write_docs(tmp_path / "agent.yaml", docs), env=env)
        with runtime:
            message = {"messageId": "m-traced", "role": "ROLE_USER", "parts": [{"text": "x"}]}
            response = httpx.post(
                f"{runtime.base_url}/a2a",
                headers={"a2a-version": "1.0", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "SendMessage",
                    "params": {"message": message, "configuration": {"returnImmediately": True}},
                },
            )
            task_id = response.json()["result"]["task"]["id"]
            wait_until(lambda: mcp.calls().get("slow_lookup:traced") == 1, timeout=10, what="call")
            runtime.kill()
            runtime.start()
            wait_until(
                lambda: task_state(runtime.base_url, task_id) == "TASK_STATE_COMPLETED",
                timeout=20,
                what="the resumed task",
            )
            wait_until(lambda: "resume_task" in receiver.links, timeout=10, what="its span")
    assert receiver.links["resume_task"] == [TRACE_ID]
    resumed = {trace for name, trace, _ in receiver.spans if name == "resume_task"}
    assert len(resumed) == 1
    assert TRACE_ID not in resumed, "a new trace, linked to the original"
