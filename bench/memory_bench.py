"""Conversation memory benchmark: what recalling and recording a turn costs per request.

Run: .venv/bin/python -m bench.memory_bench [--quick]
Needs the fake LLM (tests/support) and Debian's ``redis-server``.

One runtime process per memory setting, pinned to core 0 (the fake LLM, Redis and the client
share core 1). Each request continues one conversation (the same context id) at concurrency 1,
so the figure is the latency a user's next turn pays: p50/p99 against ``memory.type: none``.
The "1000 stored turns" rows pre-fill the conversation first: relevance ranks all of them on
every request, recent loads only ``search.limit`` (20).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLMProcess
from tests.support.redis_server import RedisServer
from tests.support.runtime_proc import RuntimeProcess

from bench.runtime_bench import latencies, ms, pct, pin


def run_case(
    llm_url: str, memory: dict[str, Any], *, total: int, prefill: int, work: Path
) -> tuple[float, float]:
    path = write_docs(work / "agent.yaml", agent_docs(llm_url=llm_url, memory=memory))
    with RuntimeProcess(config=path) as runtime:
        pin(runtime.pid, 0)

        async def run() -> list[float]:
            async with httpx.AsyncClient(base_url=runtime.base_url, timeout=30) as client:
                turn = 0

                async def call() -> None:
                    nonlocal turn
                    turn += 1
                    response = await client.post(
                        "/v1/chat/completions",
                        headers={"X-Agentspec-Context-Id": "bench"},
                        json={
                            "model": "assistant",
                            "messages": [
                                {"role": "user", "content": f"question {turn} about leave days"}
                            ],
                        },
                    )
                    response.raise_for_status()

                await latencies(call, total=max(prefill, 200), concurrency=1)  # warm-up
                return await latencies(call, total=total, concurrency=1)

        values = asyncio.run(run())
    return pct(values, 0.5), pct(values, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 300 if args.quick else 1500
    os.environ.setdefault("AGENTSPEC_LOG_LEVEL", "WARNING")
    os.sched_setaffinity(0, {1})
    llm = FakeLLMProcess(responder="text:ok").start()  # a responder: load, any number of calls
    assert llm._process is not None
    pin(llm._process.pid, 1)
    redis = RedisServer().start()
    work = Path(tempfile.mkdtemp())
    report: dict[str, str] = {}
    try:
        cases: list[tuple[str, dict[str, Any], int]] = [
            ("none", {"type": "none"}, 0),
            ("inMemory, recent 20", {"type": "inMemory"}, 0),
            ("redis, recent 20", {"type": "redis", "url": redis.url_for_db(1)}, 0),
            (
                "inMemory, recent 20, 1000 stored turns",
                {"type": "inMemory", "search": {"limit": 20}},
                1000,
            ),
            (
                "inMemory, relevance 20, 1000 stored turns",
                {"type": "inMemory", "search": {"strategy": "relevance"}},
                1000,
            ),
            (
                "redis, relevance 20, 1000 stored turns",
                {"type": "redis", "url": redis.url_for_db(2), "search": {"strategy": "relevance"}},
                1000,
            ),
        ]
        base: tuple[float, float] | None = None
        for label, memory, prefill in cases:
            p50, p99 = run_case(llm.base_url, memory, total=total, prefill=prefill, work=work)
            if base is None:
                base = (p50, p99)
                report[label] = f"p50 {ms(p50)}, p99 {ms(p99)}"
            else:
                report[label] = (
                    f"p50 {ms(p50)} (+{ms(p50 - base[0])}), p99 {ms(p99)} (+{ms(p99 - base[1])})"
                )
    finally:
        redis.stop()
        llm.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
