"""Runtime benchmarks: overhead per model turn, throughput, hot-reload latency, RSS, cold start.

Run: .venv/bin/python -m bench.runtime_bench [--quick] [--skip-configmap]
Needs the fake LLM (tests/support), ``wrk`` for throughput (``apt-get install wrk``), and the
control-plane binaries for the ConfigMap reload figures (scripts/build-k8s-tools.sh).

The runtime is pinned to core 0 (``taskset``); the fake LLM and the load generators share
core 1, so "one process on one core" is literal. The fake LLM answers instantly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLMProcess
from tests.support.procs import rss_bytes
from tests.support.runtime_proc import RuntimeProcess

from agentspec_runtime.spec import AgentResource, PromptTemplateResource, parse_resource
from agentspec_runtime.spec.resolved import CONFIG_KEY, config_map_name, resolve_agent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(v: float) -> str:
    return f"{v * 1000:.2f} ms"


def pin(pid: int, core: int) -> None:
    if shutil.which("taskset"):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(core), str(pid)], capture_output=True, check=False
        )


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 2**20 or float("nan")


async def latencies(
    call: Callable[[], Awaitable[None]], *, total: int, concurrency: int
) -> list[float]:
    out: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            out.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def overhead(llm_url: str, runtime: RuntimeProcess, *, total: int) -> dict[str, str]:
    """Same openai SDK client, same fake LLM: direct vs through the runtime."""
    results: dict[str, str] = {}

    async def run() -> None:
        direct = openai.AsyncOpenAI(base_url=llm_url, api_key="x", max_retries=0)
        via = openai.AsyncOpenAI(base_url=f"{runtime.base_url}/v1", api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "hello"}]

        async def call_direct() -> None:
            await direct.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]

        async def call_via() -> None:
            await via.chat.completions.create(model="assistant", messages=messages)  # type: ignore[arg-type]

        await latencies(call_direct, total=200, concurrency=1)  # warm-up
        await latencies(call_via, total=200, concurrency=1)
        d = await latencies(call_direct, total=total, concurrency=1)
        v = await latencies(call_via, total=total, concurrency=1)
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            added = pct(v, q) - pct(d, q)
            results[f"c1 {name}"] = (
                f"direct {ms(pct(d, q))}, via runtime {ms(pct(v, q))}, added {ms(added)}"
            )
        await direct.close()
        await via.close()

    asyncio.run(run())
    return results


def wrk(url: str, *, model: str, seconds: int, connections: int) -> dict[str, str]:
    """wrk POSTing one chat request: requests/s and latency percentiles."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {
        "req/s": next(
            line.split(":")[1].strip()
            for line in out.splitlines()
            if line.startswith("Requests/sec")
        )
    }
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            result[f"p{parts[0][:-1]}"] = parts[1]
        if "Non-2xx" in line or "Socket errors" in line:
            result["errors"] = line.strip()
    return result


def throughput(llm_url: str, runtime: RuntimeProcess, *, seconds: int) -> dict[str, object]:
    if not shutil.which("wrk"):
        return {"skipped": "install wrk (apt-get install wrk)"}
    return {
        "runtime, 1 connection": wrk(
            f"{runtime.base_url}/v1", model="assistant", seconds=seconds, connections=1
        ),
        "fake LLM direct, 1 connection": wrk(
            llm_url, model="fake-model", seconds=seconds, connections=1
        ),
        "runtime, 32 connections": wrk(
            f"{runtime.base_url}/v1", model="assistant", seconds=seconds, connections=32
        ),
        "runtime, 64 connections": wrk(
            f"{runtime.base_url}/v1", model="assistant", seconds=seconds, connections=64
        ),
        "fake LLM direct, 64 connections": wrk(
            llm_url, model="fake-model", seconds=seconds, connections=64
        ),
    }


def reload_file(path: Path, llm_url: str, runtime: RuntimeProcess, *, n: int) -> str:
    samples = []
    for i in range(n):
        before = runtime.status()["configRevision"]
        write_docs(path, agent_docs(llm_url=llm_url, template=f"prompt {i}", version=f"v{i}"))
        started = time.perf_counter()
        while runtime.status()["configRevision"] == before:
            time.sleep(0.002)
        samples.append(time.perf_counter() - started)
    return f"p50 {ms(pct(samples, 0.5))}, p99 {ms(pct(samples, 0.99))} (n={n})"


def reload_configmap(llm_url: str, *, n: int) -> str:
    from tests.support.control_plane import ControlPlane

    with ControlPlane() as plane:
        plane.kubectl("create", "namespace", "bench")

        def manifest(i: int) -> str:
            docs = agent_docs(llm_url=llm_url, template=f"prompt {i}", version=f"v{i}")
            parsed = [parse_resource(d) for d in docs]
            agent = next(r for r in parsed if isinstance(r, AgentResource))
            prompts = {r.metadata.name: r for r in parsed if isinstance(r, PromptTemplateResource)}
            config = resolve_agent(
                agent, namespace="bench", prompts=prompts, mcp_servers={}, partners={}
            )
            return json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": config_map_name("assistant")},
                    "data": {CONFIG_KEY: config.to_json()},
                }
            )

        plane.kubectl("apply", "-f", "-", namespace="bench", input=manifest(0))
        env = {
            "AGENT_NAME": "assistant",
            "POD_NAMESPACE": "bench",
            "KUBECONFIG": str(plane.kubeconfig),
        }
        with RuntimeProcess(env=env) as runtime:
            samples = []
            for i in range(1, n + 1):
                before = runtime.status()["configRevision"]
                plane.kubectl("apply", "-f", "-", namespace="bench", input=manifest(i))
                started = time.perf_counter()  # the write is committed when kubectl returns
                while runtime.status()["configRevision"] == before:
                    time.sleep(0.002)
                samples.append(time.perf_counter() - started)
    return f"p50 {ms(pct(samples, 0.5))}, p99 {ms(pct(samples, 0.99))} (n={n})"


def cold_start(path: Path, *, runs: int) -> tuple[str, str]:
    starts, rss = [], []
    for _ in range(runs):
        runtime = RuntimeProcess(config=path)
        started = time.perf_counter()
        runtime.start(timeout=30)
        starts.append(time.perf_counter() - started)
        time.sleep(1.0)
        rss.append(rss_mb(runtime.pid))
        runtime.stop()
    return (
        f"p50 {statistics.median(starts):.2f} s, max {max(starts):.2f} s (n={runs})",
        f"p50 {statistics.median(rss):.0f} MB, max {max(rss):.0f} MB",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-configmap", action="store_true")
    args = parser.parse_args()
    total = 500 if args.quick else 2000
    report: dict[str, object] = {}
    os.environ.setdefault("AGENTSPEC_LOG_LEVEL", "WARNING")
    os.sched_setaffinity(0, {1})  # the client side stays off the runtime's core
    llm = FakeLLMProcess(responder="text:ok").start()  # a responder: load, any number of calls
    assert llm._process is not None
    pin(llm._process.pid, 1)
    try:
        work = Path(tempfile.mkdtemp())
        path = write_docs(work / "agent.yaml", agent_docs(llm_url=llm.base_url))
        report["cold start to ready"], report["idle RSS"] = cold_start(
            path, runs=3 if args.quick else 5
        )
        with RuntimeProcess(config=path) as runtime:
            pin(runtime.pid, 0)
            report["overhead per model turn"] = overhead(llm.base_url, runtime, total=total)
            report["throughput, one process on one core (wrk)"] = throughput(
                llm.base_url, runtime, seconds=5 if args.quick else 10
            )
            report["RSS after load"] = f"{rss_mb(runtime.pid):.0f} MB"
            report["hot reload, file"] = reload_file(
                path, llm.base_url, runtime, n=10 if args.quick else 30
            )
        if not args.skip_configmap:
            report["hot reload, ConfigMap"] = reload_configmap(
                llm.base_url, n=10 if args.quick else 30
            )
    finally:
        llm.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
