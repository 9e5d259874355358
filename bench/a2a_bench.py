"""A2A hop overhead: router -> partner (over A2A) -> fake LLM, versus the partner alone.

Run: .venv/bin/python -m bench.a2a_bench [--requests N]
The router's model calls the partner tool once, then answers with its result: the router
path is two router model turns (instant fake LLM) plus one A2A call to the partner, whose own
path is what "partner alone" measures. Sequential requests, one client.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLMProcess
from tests.support.runtime_proc import RuntimeProcess

from bench.runtime_bench import pct


def timed(client: httpx.Client, url: str, model: str, text: str, n: int) -> list[float]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    for _ in range(50):  # warm-up
        client.post(url, json=body).raise_for_status()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        client.post(url, json=body).raise_for_status()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    os.environ.setdefault("AGENTSPEC_LOG_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp())
    # Responders: a benchmark's traffic is load, as many calls as it takes.
    with (
        FakeLLMProcess(responder="echo") as hr_llm,
        FakeLLMProcess(responder="tool_then_answer") as router_llm,
    ):
        hr_docs = agent_docs(name="hr", llm_url=hr_llm.base_url)
        hr = RuntimeProcess(config=write_docs(work / "hr.yaml", hr_docs), agent="hr")
        router_docs = agent_docs(
            name="router", llm_url=router_llm.base_url, partners=[{"name": "hr"}]
        )
        router = RuntimeProcess(
            config=write_docs(work / "router.yaml", router_docs + hr_docs[-1:]),
            agent="router",
            env={"AGENTSPEC_PARTNER_URLS": json.dumps({"hr": hr.base_url})},
        )
        with hr, router, httpx.Client(timeout=30) as client:
            alone = timed(client, f"{hr.base_url}/v1/chat/completions", "hr", "hi", args.requests)
            url = f"{router.base_url}/v1/chat/completions"
            routed = timed(client, url, "router", "hr message=hi", args.requests)
            direct = timed(client, url, "router", "hello", args.requests)
    report = {}
    for q, f in (("p50", 0.5), ("p99", 0.99)):
        a, r, d = pct(alone, f) * 1000, pct(routed, f) * 1000, pct(direct, f) * 1000
        report[q] = (
            f"partner alone {a:.2f} ms; router answering itself (1 turn) {d:.2f} ms; "
            f"router -> partner {r:.2f} ms: added {r - a:.2f} ms, of which one more router "
            f"model turn ~{d:.2f} ms and the A2A hop ~{r - a - d:.2f} ms"
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
