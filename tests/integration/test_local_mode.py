"""Local mode: the README demo command, and `agentspec up` hot reload on file edits.

In: scripts/demo.sh run exactly as the README shows it (non-interactively, as CI runs it),
and `agentspec up` on a copy of examples/multi-agent with the offline demo model. Asserted:
the demo prints the routed answers it promises; an edited prompt changes the next answer
without restarting any process; a broken edit is rejected and the previous version serves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.procs import ManagedProcess, start_process, wait_until
from tests.support.redis_server import RespConnection

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTSPEC_"))}
    env["CI"] = "true"
    return env


def test_readme_demo_command_prints_the_routed_answers() -> None:
    result = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "router       http://127.0.0.1:8100" in out
    # router -> hr over A2A -> hr's knowledge source (examples/multi-agent/hr-policies/),
    # answered with the passage's citation
    assert (
        "> How many leave days do I have?\n[offline demo model] hr says: According to "
        "[hr-policies:leave.md#0]: # Leave policy Every full-time employee has 28 leave days a "
        "year, on top of public holidays."
    ) in out
    assert (
        "> What is the travel expense policy?\n[offline demo model] finance says: "
        "expense_policy says: Economy class for flights under 6 hours; hotels up to 150 "
        "EUR per night."
    ) in out
    # the three questions are one conversation: the router remembers the first two
    assert (
        "> What did I ask before?\n[offline demo model] Earlier in this conversation you asked: "
        "How many leave days do I have? | What is the travel expense policy?"
    ) in out
    assert "conversation memory: in each agent's process" in out
    assert "answering with the offline demo model, not a real LLM" in out


class UpProcess:
    def __init__(self, folder: Path, log: Path, *args: str) -> None:
        self.log_path = log
        self.process: ManagedProcess = start_process(
            "agentspec-up",
            [
                str(ROOT / ".venv" / "bin" / "agentspec"),
                "up",
                str(folder),
                "--port-base",
                "0",
                *args,
            ],
            log_path=log,
            env=clean_env(),
            cwd=ROOT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, agent: str) -> str:
        match = re.search(rf"^  {agent}\s+(http://127\.0\.0\.1:\d+)", self.log(), re.M)
        assert match, self.log()
        return match.group(1)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[UpProcess, Path]]:
    folder = tmp_path / "specs"
    shutil.copytree(ROOT / "examples" / "multi-agent", folder)
    process = UpProcess(folder, tmp_path / "up.log", "--run-local-commands")
    try:
        wait_until(
            lambda: "agentspec up: ready" in process.log(),
            timeout=60,
            what="agentspec up to start every agent",
        )
        yield process, folder
    finally:
        process.process.stop(grace=15)


def test_up_hot_reloads_edits_and_rejects_broken_ones(up: tuple[UpProcess, Path]) -> None:
    process, folder = up
    hr = process.url("hr")

    def ask() -> str:
        body = httpx.post(
            f"{hr}/v1/chat/completions",
            timeout=20,
            json={"model": "hr", "messages": [{"role": "user", "content": "hello"}]},
        ).json()
        answer: str = body["choices"][0]["message"]["content"]
        return answer

    def pid() -> int:
        value: int = httpx.get(f"{hr}/status").json()["pid"]
        return value

    assert ask().startswith("[offline demo model] You are the HR assistant.")
    before = pid()
    prompts = folder / "prompts.yaml"
    docs = list(yaml.safe_load_all(prompts.read_text()))
    hr_prompt = next(d for d in docs if d["metadata"]["name"] == "hr-prompt")
    hr_prompt["spec"]["versions"].append(
        {"version": "v2", "template": "You are the friendly HR assistant."}
    )
    hr_prompt["spec"]["release"]["stable"] = "v2"
    good = yaml.safe_dump_all(docs, sort_keys=False)
    prompts.write_text(good)
    wait_until(lambda: "friendly" in ask(), timeout=10, what="the edited prompt to serve")
    assert pid() == before, "hot reload, not a restart"

    prompts.write_text(good.replace("stable: v2", "stable: v9"))
    wait_until(
        lambda: "edit rejected" in process.log(), timeout=10, what="the broken edit to be reported"
    )
    assert "release.stable must name one of versions" in process.log()
    assert "friendly" in ask(), "the previous version keeps serving"
    assert pid() == before

    # agentspec chat finds the agent `up` started, and streams its answer
    chat = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "agentspec"), "chat", "hr", "-m", "hello there"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() == (
        "[offline demo model] You are the friendly HR assistant. You asked: hello there"
    )

    # the knowledge folder beside the spec is watched too: an edited policy is re-indexed
    # in the running agent, no restart
    def leave_answer() -> str:
        body = httpx.post(
            f"{hr}/v1/chat/completions",
            timeout=20,
            json={"model": "hr", "messages": [{"role": "user", "content": "leave days?"}]},
        ).json()
        answer: str = body["choices"][0]["message"]["content"]
        return answer

    assert "has 28 leave days a year" in leave_answer()
    policy = folder / "hr-policies" / "leave.md"
    policy.write_text(policy.read_text().replace("28 leave days", "30 leave days"))
    wait_until(
        lambda: "has 30 leave days a year" in leave_answer(),
        timeout=15,
        what="the edited policy to be re-indexed",
    )
    assert leave_answer().startswith("[offline demo model] According to [hr-policies:leave.md#0]")
    assert pid() == before


def test_up_starts_a_new_agent_and_running_agents_reach_it(up: tuple[UpProcess, Path]) -> None:
    process, folder = up
    (folder / "legal.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "agentspec.io/v1alpha1",
                "kind": "AgentSpec",
                "metadata": {"name": "legal"},
                "spec": {
                    "description": "Answers legal questions.",
                    "prompt": "You are the legal assistant.",
                    "model": {"model": "demo"},
                },
            }
        )
    )
    wait_until(
        lambda: re.search(r"^  legal\s+http", process.log(), re.M) is not None,
        timeout=30,
        what="agentspec up to start the new agent",
    )
    agents = folder / "agents.yaml"
    docs = list(yaml.safe_load_all(agents.read_text()))
    docs[0]["spec"]["partners"].append({"name": "legal"})  # the router
    agents.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    router = process.url("router")

    def ask() -> str:
        body = httpx.post(
            f"{router}/v1/chat/completions",
            timeout=20,
            json={
                "model": "router",
                "messages": [{"role": "user", "content": "Ask legal whether I may sign."}],
            },
        ).json()
        answer: str = body["choices"][0]["message"]["content"]
        return answer

    wait_until(
        lambda: "legal says" in ask(),
        timeout=15,
        what="the router to reach the agent started after it",
    )
    assert ask() == (
        "[offline demo model] legal says: You are the legal assistant. "
        "You asked: Ask legal whether I may sign."
    )


def ready(process: UpProcess) -> Callable[[], bool]:
    return lambda: "agentspec up: ready" in process.log()


def test_up_keeps_memory_in_redis_across_restarts(tmp_path: Path, redis_url: str) -> None:
    folder = tmp_path / "specs"
    shutil.copytree(ROOT / "examples" / "multi-agent", folder)

    def ask(process: UpProcess, question: str) -> str:
        body = httpx.post(
            f"{process.url('router')}/v1/chat/completions",
            timeout=20,
            json={
                "model": "router",
                "context_id": "kept",
                "messages": [{"role": "user", "content": question}],
            },
        ).json()
        answer: str = body["choices"][0]["message"]["content"]
        return answer

    for run, question in enumerate(["How many leave days do I have?", "What did I ask before?"]):
        process = UpProcess(
            folder, tmp_path / f"up-{run}.log", "--redis-url", redis_url, "--run-local-commands"
        )
        try:
            wait_until(ready(process), timeout=60, what="agentspec up to start every agent")
            assert f"conversation memory: {redis_url}" in process.log()
            answer = ask(process, question)
        finally:
            process.process.stop(grace=15)
    # the second `up` (new processes) recalled the first one's turn from Redis
    assert answer == (
        "[offline demo model] Earlier in this conversation you asked: "
        "How many leave days do I have?"
    )
    with RespConnection.from_url(redis_url) as redis:
        keys = redis.command("KEYS", "agentspec:memory:*")
    assert isinstance(keys, list)
    assert len(keys) == 4  # router and hr (the router passed its context on): turns + meta


def test_up_runs_no_command_named_in_a_file_without_the_flag(tmp_path: Path) -> None:
    """A spec file must not run a command on this machine just by being run."""
    folder = tmp_path / "specs"
    shutil.copytree(ROOT / "examples" / "multi-agent", folder)
    marker = tmp_path / "ran"
    mcp = folder / "mcp.yaml"
    mcp.write_text(
        mcp.read_text().replace("python -m agentspec_runtime.demo.expense_tools", f"touch {marker}")
    )
    refusal = (
        "not starting MCP server expense-tools: its agentspec.io/local-command annotation "
        f"asks to run `touch {marker}` on this machine; pass --run-local-commands"
    )
    process = UpProcess(folder, tmp_path / "up.log")
    try:
        # said before any agent starts (the agents' start is not what this test is about)
        wait_until(lambda: refusal in process.log(), timeout=60, what="the refusal")
        assert not marker.exists()
    finally:
        process.process.stop(grace=15)
    allowed = UpProcess(folder, tmp_path / "up2.log", "--run-local-commands")
    try:
        wait_until(marker.exists, timeout=60, what="the allowed command to run")
        assert f"running the local command of MCP server expense-tools: touch {marker}" in (
            allowed.log()
        )
    finally:
        allowed.process.stop(grace=15)
