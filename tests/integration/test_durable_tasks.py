"""Durable A2A tasks across replicas: a shared store, a leased queue, step checkpoints.

In: two or three ``agentspec runtime`` processes of one agent sharing a real PostgreSQL
database (``spec.tasks.storeUrlSecretRef``), a real MCP server whose two slow tools are
annotated (``slow_lookup`` read-only and idempotent, ``slow_charge`` destructive) and count
the calls they receive, the fake LLM, and a webhook the test serves. Replicas are killed with
SIGKILL (no drain) or stopped with SIGTERM, mid-tool or mid-model-turn.

Asserted: any replica answers GetTask, SubscribeToTask and CancelTask for a task another runs
(cancel stops it there); a replica killed during an idempotent tool call leaves the task to
another, which resumes it within the lease + 1 s, repeats that call once and no earlier one;
a non-idempotent call is not repeated and the model reads that it was interrupted; a tool
result recorded before the kill is not asked for again; the same messageId is one task; a
task whose runs keep dying fails after maxAttempts; SIGTERM hands a task back so another
replica resumes it long before its lease would expire; consumers cannot see each other's
tasks; push notifications reach the webhook after the accepting replica died.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.a2a_client import rpc, send, subscribe, task_state, user_message
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, ToolCall, Turn
from tests.support.mcp_servers import McpTestServer
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

pytestmark = pytest.mark.timeout(180)

LEASE = 5
"""Seconds: short, so a dead replica's tasks come back within the test's patience."""
KEYS = {
    "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_A": "key-a",
    "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_B": "key-b",
}


@pytest.fixture(scope="module")
def mcp() -> Iterator[McpTestServer]:
    with McpTestServer(tools=("slow_lookup", "slow_charge")) as server:
        yield server


@contextmanager
def replicas(
    count: int,
    *,
    tmp_path: Path,
    llm: FakeLLM,
    mcp: McpTestServer,
    postgres_url: str,
    tasks: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[list[RuntimeProcess]]:
    """``count`` replicas of the agent ``worker``, one config, one PostgreSQL store."""
    docs = agent_docs(
        name="worker",
        llm_url=llm.base_url,
        mcp=[{"name": "tools", "url": mcp.url}],
        memory={"type": "none"},
        runtime=runtime,
        tasks={
            "storeUrlSecretRef": {"name": "task-store", "key": "url"},
            "leaseSeconds": LEASE,
            **(tasks or {}),
        },
    )
    config = write_docs(tmp_path / "worker.yaml", docs)
    environ = {"AGENTSPEC_SECRET_TASK_STORE_URL": postgres_url, **(env or {})}
    with ExitStack() as stack:
        yield [
            stack.enter_context(RuntimeProcess(config=config, env=environ)) for _ in range(count)
        ]


def runner(group: list[RuntimeProcess], task_id: str, *, timeout: float = 10) -> RuntimeProcess:
    """The replica running the task (its /status lists it)."""
    found: list[RuntimeProcess] = []

    def running() -> bool:
        found[:] = [
            r for r in group if r.process is not None and task_id in r.status()["tasks"]["running"]
        ]
        return bool(found)

    wait_until(running, timeout=timeout, what=f"a replica to run task {task_id}")
    return found[0]


def settled(base_url: str, task_id: str, *, timeout: float = 30, key: str | None = None) -> str:
    states: list[str] = []

    def done() -> bool:
        states.append(task_state(base_url, task_id, key=key))
        return states[-1] not in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")

    wait_until(done, timeout=timeout, what=f"task {task_id} to settle")
    return states[-1]


def answer_of(base_url: str, task_id: str) -> str:
    task = rpc(base_url, "GetTask", {"id": task_id})["result"]
    return "".join(p.get("text", "") for a in task.get("artifacts", []) for p in a["parts"])


def tool_results(request: Any) -> list[str]:
    return [m["content"] for m in request.messages if m.get("role") == "tool"]


def metric(runtime: RuntimeProcess, event: str) -> float:
    return runtime.metric("agentspec_tasks_total", agent="worker", event=event) or 0.0


# -- any replica answers for any task --------------------------------------------------------


def test_get_subscribe_and_cancel_work_from_a_replica_that_does_not_run_the_task(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    with FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "s1", "seconds": 2})),
            Turn.text("record s1 is ok"),
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "s2", "seconds": 30})),
        )
        with replicas(2, tmp_path=tmp_path, llm=llm, mcp=mcp, postgres_url=postgres_url) as group:
            task = send(group[0].base_url, "check s1", message_id="m-s1", wait=False)
            assert task["status"]["state"] == "TASK_STATE_SUBMITTED"
            running = runner(group, task["id"])
            other = group[1] if running is group[0] else group[0]

            assert task_state(other.base_url, task["id"]) in (
                "TASK_STATE_SUBMITTED",
                "TASK_STATE_WORKING",
            )
            events = subscribe(other.base_url, task["id"])
            assert events[0]["task"]["id"] == task["id"], "the task so far, then live events"
            assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
            streamed = "".join(
                p["text"]
                for e in events
                if "artifactUpdate" in e
                for p in e["artifactUpdate"]["artifact"]["parts"]
            )
            assert streamed == "record s1 is ok"
            assert answer_of(running.base_url, task["id"]) == "record s1 is ok"

            slow = send(other.base_url, "check s2", message_id="m-s2", wait=False)
            busy = runner(group, slow["id"])
            wait_until(lambda: mcp.calls().get("slow_lookup:s2") == 1, timeout=10, what="s2")
            idle = group[1] if busy is group[0] else group[0]
            cancelled = rpc(idle.base_url, "CancelTask", {"id": slow["id"]})["result"]
            assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
            wait_until(
                lambda: slow["id"] not in busy.status()["tasks"]["running"],
                timeout=5,
                what="the replica running the task to stop it",
            )
            assert task_state(busy.base_url, slow["id"]) == "TASK_STATE_CANCELED"
            assert metric(busy, "cancelled") == 1
        llm.assert_traffic_as_scripted()


# -- kill -9 mid-step ------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["slow_lookup", "slow_charge"])
def test_a_replica_killed_during_a_tool_call_leaves_the_task_to_another(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str, tool: str
) -> None:
    """slow_lookup is idempotent: repeated once. slow_charge is not: never repeated."""
    key = f"k-{tool}"
    with FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_lookup", {"key": f"{key}-first", "seconds": 0})),
            Turn.tool_calls(ToolCall(tool, {"key": key, "seconds": 3})),
            Turn.text("all done"),
        )
        with replicas(2, tmp_path=tmp_path, llm=llm, mcp=mcp, postgres_url=postgres_url) as group:
            task = send(group[0].base_url, "do it", message_id=f"m-{tool}", wait=False)
            running = runner(group, task["id"])
            wait_until(lambda: mcp.calls().get(f"{tool}:{key}") == 1, timeout=10, what="call")
            running.kill()
            killed_at = time.monotonic()
            survivor = next(r for r in group if r is not running)

            if tool == "slow_lookup":
                wait_until(
                    lambda: mcp.calls().get(f"{tool}:{key}") == 2,
                    timeout=LEASE + 10,
                    what="the resumed run to repeat the idempotent call",
                )
                resumed_after = time.monotonic() - killed_at
                assert resumed_after < LEASE + 1 + 1.5, (
                    f"resumed {resumed_after:.1f}s after the kill (lease {LEASE}s)"
                )
            assert settled(survivor.base_url, task["id"]) == "TASK_STATE_COMPLETED"
            assert answer_of(survivor.base_url, task["id"]) == "all done"
            assert metric(survivor, "resumed") == 1

        calls = mcp.calls()
        assert calls[f"slow_lookup:{key}-first"] == 1, "a call recorded before is not repeated"
        last = llm.requests[-1]
        if tool == "slow_lookup":
            assert calls[f"{tool}:{key}"] == 2
            assert tool_results(last)[-1] == f"record {key}: ok"
        else:
            assert calls[f"{tool}:{key}"] == 1, "a destructive call is never repeated"
            assert "was interrupted" in tool_results(last)[-1]
        llm.assert_traffic_as_scripted()


def test_a_tool_result_recorded_before_the_kill_is_not_asked_for_again(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    with FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_charge", {"key": "after", "seconds": 0})),
            Turn.text("never seen").with_latency(first_byte=60),  # the model is busy: kill
            Turn.text("charged once"),
        )
        with replicas(2, tmp_path=tmp_path, llm=llm, mcp=mcp, postgres_url=postgres_url) as group:
            task = send(group[0].base_url, "charge", message_id="m-after", wait=False)
            running = runner(group, task["id"])
            llm.wait_for_requests(2, timeout=10)  # the tool ran; the next turn is in flight
            running.kill()
            survivor = next(r for r in group if r is not running)
            assert settled(survivor.base_url, task["id"]) == "TASK_STATE_COMPLETED"
            assert answer_of(survivor.base_url, task["id"]) == "charged once"

        assert mcp.calls()["slow_charge:after"] == 1
        assert tool_results(llm.requests[-1]) == ["charged after"], "the recorded result"
        llm.assert_traffic_as_scripted()


# -- the queue: duplicates, poison, hand-back ------------------------------------------------


def test_the_same_message_id_is_one_task_on_every_replica(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.text("only once").with_latency(first_byte=1))
        with replicas(2, tmp_path=tmp_path, llm=llm, mcp=mcp, postgres_url=postgres_url) as group:
            first = send(group[0].base_url, "hello", message_id="dup-1", wait=False)
            again = send(group[1].base_url, "hello", message_id="dup-1", wait=False)
            assert again["id"] == first["id"]
            done = send(group[1].base_url, "hello", message_id="dup-1", wait=True)
            assert (done["id"], done["status"]["state"]) == (first["id"], "TASK_STATE_COMPLETED")
            listed = rpc(group[0].base_url, "ListTasks", {})["result"]["tasks"]
            assert [t["id"] for t in listed] == [first["id"]]
        llm.assert_traffic_as_scripted()


def test_a_task_whose_runs_keep_dying_fails_after_max_attempts(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    with FakeLLM() as llm:
        # every run hangs in its first model call, and the test kills the replica there
        llm.script(*[Turn.text("never").with_latency(first_byte=120)] * 2)
        with replicas(
            3,
            tmp_path=tmp_path,
            llm=llm,
            mcp=mcp,
            postgres_url=postgres_url,
            tasks={"maxAttempts": 2},
        ) as group:
            task = send(group[0].base_url, "poison", message_id="m-poison", wait=False)
            for runs in (1, 2):
                running = runner(group, task["id"], timeout=LEASE + 10)
                llm.wait_for_requests(runs, timeout=10)
                running.kill()
            alive = [r for r in group if r.process is not None]
            assert settled(alive[0].base_url, task["id"], timeout=LEASE + 15) == (
                "TASK_STATE_FAILED"
            )
            final = rpc(alive[0].base_url, "GetTask", {"id": task["id"]})["result"]
            assert "interrupted 2 times" in final["status"]["message"]["parts"][0]["text"]
            assert sum(metric(r, "poisoned") for r in alive) == 1
        assert len(llm.requests) == 2, "the third claim fails the task without running it"
        llm.assert_traffic_as_scripted()


def test_sigterm_hands_the_task_back_long_before_its_lease_would_expire(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    with FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "term", "seconds": 4})),
            Turn.text("finished elsewhere"),
        )
        with replicas(
            2,
            tmp_path=tmp_path,
            llm=llm,
            mcp=mcp,
            postgres_url=postgres_url,
            tasks={"leaseSeconds": 60},
            env={"AGENTSPEC_DRAIN_SECONDS": "1"},
        ) as group:
            task = send(group[0].base_url, "long job", message_id="m-term", wait=False)
            running = runner(group, task["id"])
            wait_until(lambda: mcp.calls().get("slow_lookup:term") == 1, timeout=10, what="call")
            running.terminate()
            stopped_at = time.monotonic()
            survivor = next(r for r in group if r is not running)
            wait_until(
                lambda: mcp.calls().get("slow_lookup:term") == 2,
                timeout=15,
                what="the other replica to resume the handed-back task",
            )
            assert time.monotonic() - stopped_at < 6, "handed back, not left to the 60 s lease"
            assert settled(survivor.base_url, task["id"]) == "TASK_STATE_COMPLETED"
            running.stop()
        llm.assert_traffic_as_scripted()


# -- consumers and push notifications ---------------------------------------------------------


def test_consumers_cannot_see_each_others_tasks_in_the_shared_store(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.text("team a's answer"), Turn.text("b").with_latency(first_byte=60))
        with replicas(
            2,
            tmp_path=tmp_path,
            llm=llm,
            mcp=mcp,
            postgres_url=postgres_url,
            runtime={"auth": {"apiKeysSecretRef": "agent-keys"}},
            env=KEYS,
        ) as group:
            a, b = (r.base_url for r in group)
            task = send(a, "plan", message_id="m-a", key="key-a")
            assert task_state(b, task["id"], key="key-a") == "TASK_STATE_COMPLETED"
            for method in ("GetTask", "CancelTask"):
                assert rpc(b, method, {"id": task["id"]}, key="key-b")["error"]["code"] == -32001
            assert rpc(b, "ListTasks", {}, key="key-b")["result"].get("tasks", []) == []
            mine = rpc(b, "ListTasks", {}, key="key-a")["result"]["tasks"]
            assert [t["id"] for t in mine] == [task["id"]], "the owner lists it on any replica"
            refused = subscribe(b, task["id"], key="key-b")
            assert refused[0]["error"]["code"] in (-32001, -32004)
            # the same message id from another consumer is another message
            again = send(b, "plan", message_id="m-a", key="key-b", wait=False)
            assert again["id"] != task["id"]
            llm.wait_for_requests(2, timeout=10)
            cancelled = rpc(b, "CancelTask", {"id": again["id"]}, key="key-b")["result"]
            assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
        assert llm.requests[0].messages[-1]["content"] == "plan"


class Webhook:
    """An HTTP endpoint recording every push it receives (body and token)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with hook._lock:
                    hook.received.append((self.headers.get("x-a2a-notification-token", ""), body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self) -> list[str]:
        with self._lock:
            bodies = [body for _, body in self.received]
        return [
            (b.get("task") or b.get("statusUpdate") or {}).get("status", {}).get("state", "")
            for b in bodies
        ]

    def close(self) -> None:
        self.server.shutdown()


def test_push_notifications_arrive_after_the_accepting_replica_died(
    tmp_path: Path, mcp: McpTestServer, postgres_url: str
) -> None:
    hook = Webhook()
    try:
        with FakeLLM() as llm:
            llm.script(
                Turn.tool_calls(ToolCall("slow_lookup", {"key": "push", "seconds": 3})),
                Turn.text("pushed"),
            )
            with replicas(
                2,
                tmp_path=tmp_path,
                llm=llm,
                mcp=mcp,
                postgres_url=postgres_url,
                tasks={"pushAllowedHosts": [f"127.0.0.1:{hook.port}"]},
            ) as group:
                url = f"http://127.0.0.1:{hook.port}/hook"
                refused = rpc(
                    group[0].base_url,
                    "SendMessage",
                    {
                        "message": user_message("x", message_id="m-bad-hook"),
                        "configuration": {
                            "taskPushNotificationConfig": {"url": "http://169.254.169.254/"}
                        },
                    },
                )
                assert refused["error"]["code"] == -32602, "a host not allowed is refused"

                task = send(
                    group[0].base_url,
                    "look it up",
                    message_id="m-push",
                    wait=False,
                    configuration={"taskPushNotificationConfig": {"url": url, "token": "tok-1"}},
                )
                running = runner(group, task["id"])
                wait_until(lambda: "TASK_STATE_WORKING" in hook.states(), timeout=10, what="push")
                running.kill()
                wait_until(
                    lambda: "TASK_STATE_COMPLETED" in hook.states(),
                    timeout=LEASE + 15,
                    what="the completion pushed by the replica that resumed the task",
                )
            llm.assert_traffic_as_scripted()
        tokens = {token for token, _ in hook.received}
        assert tokens == {"tok-1"}
        assert hook.states()[0] == "TASK_STATE_SUBMITTED"
    finally:
        hook.close()


# -- the embedded default --------------------------------------------------------------------


def test_without_a_store_tasks_live_in_sqlite_and_survive_the_process(
    tmp_path: Path, mcp: McpTestServer
) -> None:
    """One replica, no PostgreSQL: the SQLite file under AGENTSPEC_STATE_DIR keeps the task
    across a kill -9, and the restarted process resumes it."""
    with FakeLLM() as llm:
        llm.script(
            Turn.tool_calls(ToolCall("slow_lookup", {"key": "local", "seconds": 3})),
            Turn.text("resumed locally"),
        )
        docs = agent_docs(
            name="worker",
            llm_url=llm.base_url,
            mcp=[{"name": "tools", "url": mcp.url}],
            memory={"type": "none"},
            tasks={"leaseSeconds": LEASE},
        )
        runtime = RuntimeProcess(config=write_docs(tmp_path / "worker.yaml", docs))
        with runtime:
            assert runtime.status()["tasks"]["shared"] is False
            task = send(runtime.base_url, "look", message_id="m-local", wait=False)
            wait_until(lambda: mcp.calls().get("slow_lookup:local") == 1, timeout=10, what="call")
            runtime.kill()
            runtime.start()
            assert settled(runtime.base_url, task["id"], timeout=LEASE + 15) == (
                "TASK_STATE_COMPLETED"
            )
            assert answer_of(runtime.base_url, task["id"]) == "resumed locally"
        assert mcp.calls()["slow_lookup:local"] == 2
        llm.assert_traffic_as_scripted()
