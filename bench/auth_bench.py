"""Traffic policy: what checking an API key, verifying a JWT and charging rate limits add
to a request.

Run: .venv/bin/python -m bench.auth_bench [--requests N]

One agent, runtimes running side by side against an instant fake LLM, their requests taking
turns (so the machine's drift hits each alike): no auth (the baseline), API keys, JWTs
(RS256, keys fetched once from a JWKS the bench serves over HTTP; every request carries the
same token, so each request pays one signature check and claim validation, not a fetch), and
API keys plus token and request budgets (never exhausted, so every request pays the door's
charge and one reservation and settlement) kept in-process and in a real Redis, and those
plus the content guard's deny patterns (RE2, on the input and the output). The Redis
case has its own baseline (memory in the same Redis, no limits), since putting the budgets
in Redis means memory is there too. Requests are ``/v1/chat/completions``, one at a time,
with httpx; the runtimes are pinned to core 0, the rest to core 1 (see runtime_bench).
Targets (issue 15): < 1 ms p50 added in-process, < 2 ms with Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLMProcess
from tests.support.oidc_issuer import Issuer
from tests.support.redis_server import RedisServer
from tests.support.runtime_proc import RuntimeProcess

from bench.runtime_bench import pct, pin


def interleaved(targets: dict[str, tuple[str, dict[str, str]]], n: int) -> dict[str, list[float]]:
    """``n`` requests to each target, taking turns (the machine's drift hits all alike)."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    out: dict[str, list[float]] = {name: [] for name in targets}
    with httpx.Client(timeout=30) as client:
        for i in range(n + 50):
            for name, (url, headers) in targets.items():
                started = time.perf_counter()
                response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if i >= 50:  # warm-up
                    out[name].append(elapsed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer_server = Issuer()
    issuer_server.publish(("bench", key))
    jwks_url = f"{issuer_server.url}/keys"
    issuer = "https://issuer.bench"
    token = jwt.encode(
        {"iss": issuer, "aud": "bench", "sub": "team-a", "exp": int(time.time()) + 3600},
        key,
        algorithm="RS256",
        headers={"kid": "bench"},
    )
    jwt_auth = {"issuer": issuer, "audiences": ["bench"], "jwksUrl": jwks_url}
    redis = RedisServer().start()
    in_redis = {"type": "redis", "url": redis.url_for_db(0)}
    key_a = {"authorization": "Bearer key-a"}
    keys = {"apiKeysSecretRef": "keys"}
    limits = {
        "tokensPerMinute": 10**12,
        "requestsPerMinute": 10**9,
        "priorityClasses": [{"name": "gold", "consumers": ["team-b"], "tokensPerMinute": 10**12}],
    }
    no_memory = {"type": "none"}
    # the guard's in-process checks (a classifier is a network call, measured by its endpoint)
    guard = {"denyPatterns": [r"\b\d{4}-\d{4}-\d{4}-\d{4}\b", "(?i)internal use only"]}
    everything = {"auth": keys, "rateLimit": limits, "guard": guard}
    setups: dict[str, tuple[dict[str, Any] | None, dict[str, Any], dict[str, str]]] = {
        "none (baseline)": (None, no_memory, {}),
        "API key": ({"auth": keys}, no_memory, key_a),
        "JWT (RS256)": (
            {"auth": {"jwt": jwt_auth}},
            no_memory,
            {"authorization": f"Bearer {token}"},
        ),
        "API key + rate limit (in-process)": (
            {"auth": keys, "rateLimit": limits},
            no_memory,
            key_a,
        ),
        "API key + rate limit + guard (in-process)": (everything, no_memory, key_a),
        "memory in Redis (Redis baseline)": (None, in_redis, {}),
        "API key + rate limit (Redis)": ({"auth": keys, "rateLimit": limits}, in_redis, key_a),
        "API key + rate limit + guard (Redis)": (everything, in_redis, key_a),
    }
    with (
        FakeLLMProcess(responder="text:ok") as llm,  # a responder: any number of calls
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
    ):
        stack.callback(redis.stop)
        assert llm._process is not None
        pin(llm._process.pid, 1)
        assert redis.pid is not None
        pin(redis.pid, 1)
        targets: dict[str, tuple[str, dict[str, str]]] = {}
        for name, (runtime, memory, headers) in setups.items():
            docs = agent_docs(name="bench", llm_url=llm.base_url, runtime=runtime, memory=memory)
            config = write_docs(Path(tmp) / f"{len(targets)}.yaml", docs)
            env = {"AGENTSPEC_SECRET_KEYS_TEAM_A": "key-a"}
            agent = stack.enter_context(RuntimeProcess(config=config, env=env))
            assert agent.process is not None
            pin(agent.process.popen.pid, 0)
            targets[name] = (agent.base_url, headers)
        results = interleaved(targets, args.requests)
    issuer_server.close()
    report = {}
    for name, figures in results.items():
        base = results["memory in Redis (Redis baseline)" if "Redis" in name else "none (baseline)"]
        row = f"p50 {pct(figures, 0.5) * 1000:.2f} ms, p99 {pct(figures, 0.99) * 1000:.2f} ms"
        if figures is not base:
            added = (pct(figures, 0.5) - pct(base, 0.5)) * 1000
            added99 = (pct(figures, 0.99) - pct(base, 0.99)) * 1000
            row += f"; added p50 {added:+.2f} ms, p99 {added99:+.2f} ms"
        report[name] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
