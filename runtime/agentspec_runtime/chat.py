"""``agentspec chat``: talk to a running agent from the terminal, streaming its answers.

``agentspec chat router`` finds the agent among those ``agentspec up`` started (it records
their URLs); ``--url`` talks to any runtime, in a cluster through a port-forward too.
``-m "question"`` asks once and exits; otherwise each line you type is a turn of one
conversation (history and context id kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import httpx

REGISTRY = Path.home() / ".cache" / "agentspec" / "up-agents.json"


def agent_url(agent: str) -> str:
    try:
        urls: dict[str, str] = json.loads(REGISTRY.read_text())
    except (OSError, ValueError):
        urls = {}
    if agent not in urls:
        raise SystemExit(
            f"agentspec chat: no running agent {agent!r} from `agentspec up`; "
            "start it or pass --url"
        )
    return urls[agent]


def turn(
    client: httpx.Client,
    url: str,
    *,
    agent: str,
    messages: list[dict[str, str]],
    context: str,
    api_key: str | None,
) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": agent, "stream": True, "context_id": context, "messages": messages}
    parts: list[str] = []
    with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        if response.status_code != 200:
            response.read()
            message = response.json().get("error", {}).get("message", response.text)
            raise SystemExit(f"agentspec chat: {response.status_code}: {message}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise SystemExit(f"agentspec chat: {chunk['error']['message']}")
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content") or ""
                parts.append(text)
                sys.stdout.write(text)
                sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentspec chat", description=__doc__.split("\n")[0])
    parser.add_argument("agent", help="the agent's name (its model name on the API)")
    parser.add_argument("--url", help="the runtime's base URL (default: from agentspec up)")
    parser.add_argument("-m", "--message", help="ask once and exit")
    parser.add_argument("--api-key", help="when the agent requires one")
    args = parser.parse_args(argv)
    url = (args.url or agent_url(args.agent)).rstrip("/")
    context = uuid.uuid4().hex
    messages: list[dict[str, str]] = []
    with httpx.Client(timeout=300) as client:
        questions = [args.message] if args.message else None
        while True:
            if questions is not None:
                if not questions:
                    return 0
                question = questions.pop(0)
            else:
                try:
                    question = input(f"{args.agent}> ")
                except EOFError:
                    return 0
            if not question.strip():
                continue
            messages.append({"role": "user", "content": question})
            answer = turn(
                client,
                url,
                agent=args.agent,
                messages=messages,
                context=context,
                api_key=args.api_key,
            )
            messages.append({"role": "assistant", "content": answer})
