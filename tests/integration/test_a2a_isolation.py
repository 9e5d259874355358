"""A2A tasks belong to the consumer who created them, and finished ones do not pile up.

In: a runtime with two inbound API keys (consumers ``team_a`` and ``team_b``) and a one-second
task retention; the fake LLM scripted with one answer. Asserted: team_b, with its own valid
key, cannot get, list, cancel or subscribe to team_a's task (each as "task not found"), while
team_a can; a second later the finished task is evicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support.agent_files import agent_docs, write_docs
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

KEYS = {
    "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_A": "key-a",
    "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_B": "key-b",
}


def rpc(runtime: RuntimeProcess, key: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{runtime.base_url}/a2a",
        headers={"a2a-version": "1.0", "authorization": f"Bearer {key}"},
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


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
            message = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "plan?"}]}
            task = rpc(runtime, "key-a", "SendMessage", {"message": message})["result"]["task"]
            assert task["status"]["state"] == "TASK_STATE_COMPLETED"
            own = rpc(runtime, "key-a", "GetTask", {"id": task["id"]})
            assert own["result"]["id"] == task["id"]

            assert not_found(rpc(runtime, "key-b", "GetTask", {"id": task["id"]}))
            assert not_found(rpc(runtime, "key-b", "CancelTask", {"id": task["id"]}))
            listed = rpc(runtime, "key-b", "ListTasks", {})["result"]
            assert listed.get("tasks", []) == []
            subscribe = httpx.post(
                f"{runtime.base_url}/a2a",
                headers={"a2a-version": "1.0", "authorization": "Bearer key-b"},
                json={"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask",
                      "params": {"id": task["id"]}},
                timeout=30,
            )  # fmt: skip
            assert "the secret plan" not in subscribe.text
            assert "-32001" in subscribe.text or "-32004" in subscribe.text, subscribe.text
            mine = rpc(runtime, "key-a", "ListTasks", {})["result"]["tasks"]
            assert [t["id"] for t in mine] == [task["id"]]

            wait_until(
                lambda: not_found(rpc(runtime, "key-a", "GetTask", {"id": task["id"]})),
                timeout=10,
                what="the finished task to be evicted after its retention",
            )
        llm.assert_script_consumed()
