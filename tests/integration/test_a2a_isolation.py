"""A2A tasks belong to the consumer who created them, and finished ones do not pile up.

In: a runtime with two inbound API keys (consumers ``team_a`` and ``team_b``) and a one-second
task retention; the fake LLM scripted with one answer. Asserted: team_b, with its own valid
key, cannot get, list, cancel or subscribe to team_a's task (each as "task not found"), while
team_a can; a second later the finished task is evicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.a2a_client import rpc, send, subscribe
from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

KEYS = {
    "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_A": "key-a",
    "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_B": "key-b",
}


def not_found(answer: dict[str, Any]) -> bool:
    return bool(answer.get("error", {}).get("code") == -32001)  # A2A TaskNotFoundError


def test_another_consumer_cannot_see_or_touch_a_task_and_finished_tasks_expire(
    tmp_path: Path,
) -> None:
    with FakeLLM() as llm:
        llm.script(Turn.text("the secret plan"))
        docs = agent_docs(
            llm_url=llm.base_url,
            runtime={"auth": {"apiKeysSecretRef": "agent-keys"}},
            tasks={"retentionSeconds": 1},
        )
        with RuntimeProcess(config=write_docs(tmp_path / "agent.yaml", docs), env=KEYS) as runtime:
            url = runtime.base_url
            task = send(url, "plan?", message_id="m1", key="key-a")
            assert task["status"]["state"] == "TASK_STATE_COMPLETED"
            own = rpc(url, "GetTask", key="key-a", params={"id": task["id"]})
            assert own["result"]["id"] == task["id"]

            assert not_found(rpc(url, "GetTask", key="key-b", params={"id": task["id"]}))
            assert not_found(rpc(url, "CancelTask", key="key-b", params={"id": task["id"]}))
            listed = rpc(url, "ListTasks", key="key-b", params={})["result"]
            assert listed.get("tasks", []) == []
            refused = subscribe(url, task["id"], key="key-b")
            assert "the secret plan" not in str(refused)
            assert refused[0]["error"]["code"] in (-32001, -32004), refused
            mine = rpc(url, "ListTasks", key="key-a", params={})["result"]["tasks"]
            assert [t["id"] for t in mine] == [task["id"]]

            wait_until(
                lambda: not_found(rpc(url, "GetTask", key="key-a", params={"id": task["id"]})),
                timeout=10,
                what="the finished task to be evicted after its retention",
            )
        llm.assert_script_consumed()
