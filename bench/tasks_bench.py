"""Durable A2A tasks: what the store, the queue and the journal add, and how fast a task
resumes after its replica dies.

Run: .venv/bin/python -m bench.tasks_bench [--requests N] [--resumes K]

Three runtimes of one agent, measured in the same run: the **baseline** is the runtime as it
was before durable tasks (commit ``BASELINE``, extracted with ``git archive`` and run with this
venv: the sdk's in-memory task store, the agent run by the request), then the durable runtime
with its default SQLite store and with PostgreSQL (the test fixture's server, durability off
as in the tests). Blocking ``SendMessage`` requests, one at a time, to an instant fake LLM:
a one-turn task (one model turn) and a three-tool task (four model turns, three MCP calls).
Added = p50 minus the baseline's p50. The one-turn task's added latency is mostly the
per-task cost (the task row, the job, its claim, following its events); the cost per
journaled step is the difference between the two tasks' added latencies over the six
steps the three-tool task has more (three turns, three tool calls).

Then two PostgreSQL replicas with a 5 s lease: a task's replica is killed (SIGKILL) during a
slow tool call, ``--resumes`` times; the time from the kill to the other replica's repeated
call is the resume delay (target: lease + 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLMProcess
from tests.support.mcp_servers import McpTestServer
from tests.support.postgres_server import PostgresServer
from tests.support.runtime_proc import REPO_ROOT, RuntimeProcess

from bench.runtime_bench import pct

BASELINE = "95eb82b"
"""The last commit before durable tasks."""
LEASE = 5


def baseline_source(work: Path) -> Path:
    target = work / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", BASELINE, "runtime"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "runtime"


def send(client: httpx.Client, url: str, text: str) -> dict[str, Any]:
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    response = client.post(f"{url}/a2a", json=body, headers={"a2a-version": "1.0"})
    response.raise_for_status()
    task: dict[str, Any] = response.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    return task


def timed(client: httpx.Client, url: str, text: str, n: int) -> list[float]:
    for _ in range(30):  # warm-up
        send(client, url, text)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        send(client, url, text)
        out.append(time.perf_counter() - started)
    return out


def scrape(url: str) -> dict[str, float]:
    lines = httpx.get(url, timeout=5).text.splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


def latencies(args: argparse.Namespace, work: Path, pg: PostgresServer) -> dict[str, Any]:
    tools = [{"name": "tools", "url": ""}]
    with (
        FakeLLMProcess(responder="repeat_tool") as llm,
        McpTestServer(tools=("add",)) as mcp,
    ):
        tools[0]["url"] = mcp.url
        plain = agent_docs(name="bench", llm_url=llm.base_url, mcp=tools, memory={"type": "none"})
        store = {"storeUrlSecretRef": {"name": "task-store", "key": "url"}}
        shared = agent_docs(
            name="bench", llm_url=llm.base_url, mcp=tools, memory={"type": "none"}, tasks=store
        )
        runtimes = {
            "baseline (in-memory)": RuntimeProcess(
                config=write_docs(work / "baseline.yaml", plain),
                env={"PYTHONPATH": str(baseline_source(work))},
            ),
            "durable, SQLite": RuntimeProcess(config=write_docs(work / "sqlite.yaml", plain)),
            "durable, PostgreSQL": RuntimeProcess(
                config=write_docs(work / "pg.yaml", shared),
                env={"AGENTSPEC_SECRET_TASK_STORE_URL": pg.fresh_database()},
            ),
        }
        results: dict[str, dict[str, list[float]]] = {}
        writes: dict[str, float] = {}
        with httpx.Client(timeout=30) as client:
            for name, runtime in runtimes.items():
                with runtime:
                    results[name] = {
                        "one turn": timed(client, runtime.base_url, "hello", args.requests),
                        "three tools": timed(
                            client, runtime.base_url, "add a=1 b=2 times=3", args.requests
                        ),
                    }
                    if name != "baseline (in-memory)":
                        metrics = scrape(runtime.metrics_url)
                        done = metrics['agentspec_tasks_total{agent="bench",event="completed"}']
                        journal = metrics['agentspec_task_journal_writes_total{agent="bench"}']
                        writes[name] = journal / done
    report: dict[str, Any] = {}
    base = results["baseline (in-memory)"]
    for kind in ("one turn", "three tools"):
        rows = {}
        for name, figures in results.items():
            p50, p99 = pct(figures[kind], 0.5) * 1000, pct(figures[kind], 0.99) * 1000
            row = f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            if name != "baseline (in-memory)":
                added = p50 - pct(base[kind], 0.5) * 1000
                added99 = p99 - pct(base[kind], 0.99) * 1000
                row += f"; added p50 {added:+.2f} ms, p99 {added99:+.2f} ms"
            rows[name] = row
        report[kind] = rows
    for name in results:
        if name == "baseline (in-memory)":
            continue
        added_ms = {
            kind: (pct(results[name][kind], 0.5) - pct(base[kind], 0.5)) * 1000
            for kind in ("one turn", "three tools")
        }
        per_step = (added_ms["three tools"] - added_ms["one turn"]) / 6
        report.setdefault("added p50 per journaled step (target < 3 ms)", {})[name] = (
            f"{per_step:+.2f} ms"
        )
    report["journal writes per task (both kinds, averaged)"] = {
        k: round(v, 2) for k, v in writes.items()
    }
    return report


def resumes(args: argparse.Namespace, work: Path, pg: PostgresServer) -> dict[str, Any]:
    from tests.support.fake_llm import FakeLLM, ToolCall, Turn

    delays = []
    with McpTestServer(tools=("slow_lookup",)) as mcp, FakeLLM() as llm:
        docs = agent_docs(
            name="resumer",
            llm_url=llm.base_url,
            mcp=[{"name": "tools", "url": mcp.url}],
            memory={"type": "none"},
            tasks={
                "storeUrlSecretRef": {"name": "task-store", "key": "url"},
                "leaseSeconds": LEASE,
            },
        )
        config = write_docs(work / "resumer.yaml", docs)
        env = {"AGENTSPEC_SECRET_TASK_STORE_URL": pg.fresh_database()}
        group = [RuntimeProcess(config=config, env=env).start() for _ in range(2)]
        try:
            with httpx.Client(timeout=30, headers={"a2a-version": "1.0"}) as client:
                for i in range(args.resumes):
                    key = f"r{i}"
                    llm.script(
                        Turn.tool_calls(ToolCall("slow_lookup", {"key": key, "seconds": 1})),
                        Turn.text("ok"),
                    )
                    message = {"messageId": key, "role": "ROLE_USER", "parts": [{"text": "go"}]}
                    params = {"message": message, "configuration": {"returnImmediately": True}}
                    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
                    task = client.post(f"{group[0].base_url}/a2a", json=body).json()
                    task_id = task["result"]["task"]["id"]
                    while mcp.calls().get(f"slow_lookup:{key}") != 1:
                        time.sleep(0.01)
                    runner = next(r for r in group if task_id in r.status()["tasks"]["running"])
                    runner.kill()
                    killed = time.monotonic()
                    while mcp.calls().get(f"slow_lookup:{key}") != 2:
                        time.sleep(0.01)
                    delays.append(time.monotonic() - killed)
                    runner.start()  # back to two replicas for the next round
                    survivor = next(r for r in group if r is not runner)
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        state = client.post(
                            f"{survivor.base_url}/a2a",
                            json={"jsonrpc": "2.0", "id": 1, "method": "GetTask",
                                  "params": {"id": task_id}},
                        ).json()["result"]["status"]["state"]  # fmt: skip
                        if state == "TASK_STATE_COMPLETED":
                            break
                        time.sleep(0.05)
        finally:
            for runtime in group:
                runtime.stop()
    return {
        "lease": f"{LEASE} s",
        "kill -> the task's step running again on the other replica": (
            f"mean {sum(delays) / len(delays):.2f} s, max {max(delays):.2f} s (n={len(delays)})"
        ),
        "target": f"< lease + 1 s = {LEASE + 1} s",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--resumes", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AGENTSPEC_LOG_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp())
    with PostgresServer() as pg:
        report = latencies(args, work, pg)
        print(json.dumps(report, indent=2), flush=True)
        print(json.dumps({"resume after a replica died": resumes(args, work, pg)}, indent=2))


if __name__ == "__main__":
    main()
