"""The ``documents`` and ``partner`` knowledge sources through the runtime as it runs (issue 17).

In: runtime processes from spec files; a documents source's ConfigMap is, locally, the folder
of that name beside the spec; the fake LLM answers chat and embeddings (deterministic
vectors that know synonyms, see ``tests/support/fake_llm/embeddings.py``) and records every
embeddings request, so what was embedded is counted exactly; Redis for the shared vector
cache; a real partner agent process for the partner source.

Asserted exactly: the passages and citations the model reads; which chunks were sent to be
embedded (all at first, then only the changed document's, none on a restart or a new
replica); a dense-only hit (a synonym BM25 cannot match) fused first; with the embeddings
endpoint down, the last good index serves (BM25 for the query) and says so in ``/status``,
and the change is indexed once it is back; a partner's answer as one cited passage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from agentspec_runtime.spec import AgentResource, PromptTemplateResource, parse_resource
from agentspec_runtime.spec.resolved import CONFIG_KEY, config_map_name, resolve_agent
from tests.support.agent_files import agent_docs, write_docs
from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.fake_llm import FakeLLM, ToolCall, Turn
from tests.support.procs import wait_until
from tests.support.runtime_proc import RuntimeProcess

LEAVE = "Every employee has 28 vacation days a year. Up to 5 unused days roll over."
REMOTE = "Staff may telework up to three days a week with the agreement of their manager."
EXPENSES = "Submit claims with form EXP-7 within 30 days; receipts are required."
POLICIES = {"leave.md": LEAVE, "remote.md": REMOTE, "expenses.md": EXPENSES}


def edit(path: Path, text: str) -> None:
    """Replace a document whole, as an editor's save or the kubelet does (a rename): the
    runtime never reads it half-written."""
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def policies_folder(root: Path) -> Path:
    folder = root / "policies"
    folder.mkdir(parents=True)
    for name, text in POLICIES.items():
        (folder / name).write_text(text)
    return folder


def documents_agent(
    llm: FakeLLM,
    *,
    top_k: int = 1,
    embeddings: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    docs = agent_docs(llm_url=llm.base_url, memory=memory)
    docs[-1]["spec"]["embeddings"] = embeddings or {"model": "fake-embed"}
    docs[-1]["spec"]["knowledge"] = [
        {
            "name": "policies",
            "description": "The staff handbook",
            "topK": top_k,
            "documents": {"configMap": "policies", "chunkTokens": 64},
        }
    ]
    return docs


def ask(runtime: RuntimeProcess, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json={
            "model": runtime.agent or "assistant",
            "messages": [{"role": "user", "content": text}],
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def knowledge(runtime: RuntimeProcess) -> dict[str, Any]:
    (source,) = runtime.status()["knowledge"]
    return dict(source)


def last_build(runtime: RuntimeProcess) -> dict[str, Any]:
    indexed = knowledge(runtime)["indexed"]
    assert indexed is not None, knowledge(runtime)
    return dict(indexed["lastBuild"])


def retrieved(llm: FakeLLM, request: int) -> Any:
    """The knowledge tool's answer as the model read it in request ``request``."""
    (result,) = llm.requests[request].trailing_tool_results
    return json.loads(result["content"])


def test_documents_are_cited_and_only_changed_chunks_are_embedded(tmp_path: Path) -> None:
    policies_folder(tmp_path)
    state = {"AGENTSPEC_STATE_DIR": str(tmp_path / "state")}
    with FakeLLM() as llm:
        llm.script(
            # "holiday" is in no document: only the embeddings (holiday ~ vacation) find it
            Turn.tool_calls(ToolCall("policies", {"query": "how much holiday is there"})),
            Turn.text("28 days [policies:leave.md#0]."),
        )
        path = write_docs(tmp_path / "agent.yaml", documents_agent(llm))
        with RuntimeProcess(config=path, env=state) as runtime:
            # the first index is built before the agent serves: every chunk, one request
            assert llm.embedded == [[EXPENSES, LEAVE, REMOTE]]
            assert last_build(runtime) == {
                "rechunked": ["expenses.md", "leave.md", "remote.md"],
                "embedded": 3,
                "cached": 0,
                "reused": 0,
            }
            answer = ask(runtime, "How many days of holiday do I get?")
            assert answer["choices"][0]["message"]["content"] == "28 days [policies:leave.md#0]."
            assert retrieved(llm, 1) == {
                "source": "policies",
                "passages": [
                    {
                        "text": LEAVE,
                        "citation": "[policies:leave.md#0]",
                        "document": "leave.md",
                        "chunk": 0,
                        "score": round(1 / 61, 5),  # first in the dense ranking, absent in BM25
                    }
                ],
            }
            offered = {t["function"]["name"]: t["function"] for t in llm.requests[0].tools}
            assert offered["policies"]["description"] == "The staff handbook"
            assert llm.embedded[1:] == [["how much holiday is there"]]

            # one document edited: only it is re-chunked, only its chunk embedded
            changed = REMOTE.replace("three", "two")
            edit(tmp_path / "policies" / "remote.md", changed)
            wait_until(
                lambda: last_build(runtime)["rechunked"] == ["remote.md"],
                timeout=15,
                what="the edited document to be re-indexed",
            )
            assert last_build(runtime) == {
                "rechunked": ["remote.md"],
                "embedded": 1,
                "cached": 0,
                "reused": 2,
            }
            assert llm.embedded[2:] == [[changed]]
            status = knowledge(runtime)
            assert status["error"] is None
            assert status["indexed"]["documents"] == 3
            assert status["vectorCache"] == str(tmp_path / "state" / "vectors")

        # a restart reads every vector from the cache on disk: nothing is embedded again
        with RuntimeProcess(config=path, env=state) as runtime:
            assert last_build(runtime) == {
                "rechunked": ["expenses.md", "leave.md", "remote.md"],
                "embedded": 0,
                "cached": 3,
                "reused": 0,
            }
        assert len(llm.embedded) == 3


def test_a_new_replica_reads_the_vectors_from_redis(tmp_path: Path, redis_url: str) -> None:
    policies_folder(tmp_path)
    memory = {"type": "redis", "url": redis_url}
    with FakeLLM() as llm:
        path = write_docs(tmp_path / "agent.yaml", documents_agent(llm, memory=memory))
        with RuntimeProcess(config=path, env={"AGENTSPEC_STATE_DIR": str(tmp_path / "a")}) as a:
            assert last_build(a)["embedded"] == 3
            assert knowledge(a)["vectorCache"].startswith("redis://127.0.0.1:")
            # a second replica: its own disk, the same Redis
            with RuntimeProcess(config=path, env={"AGENTSPEC_STATE_DIR": str(tmp_path / "b")}) as b:
                assert last_build(b) == {
                    "rechunked": ["expenses.md", "leave.md", "remote.md"],
                    "embedded": 0,
                    "cached": 3,
                    "reused": 0,
                }
        assert llm.embedded == [[EXPENSES, LEAVE, REMOTE]]


def test_with_the_embeddings_endpoint_down_the_last_index_serves(tmp_path: Path) -> None:
    policies_folder(tmp_path)
    with FakeLLM() as llm, FakeLLM() as embedder:
        changed = LEAVE.replace("5", "8")
        ask_leave = Turn.tool_calls(
            ToolCall("policies", {"query": "unused vacation days roll over"})
        )
        llm.script(ask_leave, Turn.text("5 days."), ask_leave, Turn.text("8 days."))
        embeddings = {"model": "fake-embed", "baseUrl": embedder.base_url}
        docs = documents_agent(llm, top_k=2, embeddings=embeddings)
        path = write_docs(tmp_path / "agent.yaml", docs)
        env = {"AGENTSPEC_STATE_DIR": str(tmp_path / "state")}
        with RuntimeProcess(config=path, env=env) as runtime:
            assert last_build(runtime)["embedded"] == 3
            embedder.fail_embeddings(503)
            edit(tmp_path / "policies" / "leave.md", changed)
            wait_until(
                lambda: knowledge(runtime)["error"] is not None,
                timeout=30,
                what="the failed re-index to show in /status",
            )
            assert knowledge(runtime)["error"].startswith(
                "indexing failed, the last good index serves: embeddings model "
                f"fake-embed@{embeddings['baseUrl']}"
            )
            ask(runtime, "What happens to unused days?")
            # the old text, ranked by BM25 alone (the query could not be embedded either);
            # topK 2: the two documents sharing words with the query, best first
            passages = retrieved(llm, 1)["passages"]
            assert [(p["text"], p["citation"]) for p in passages] == [
                (LEAVE, "[policies:leave.md#0]"),
                (EXPENSES, "[policies:expenses.md#0]"),
            ]
            assert passages[0]["score"] > passages[1]["score"] > 0.1  # BM25's, not fused
            assert runtime.get("/readyz")[0] == 200

            # the endpoint is back: a retry (1 s, 2 s, 4 s ... apart) indexes the change,
            # embedding only it, and the new text is served, fused again
            embedder.fail_embeddings(None)
            wait_until(
                lambda: knowledge(runtime)["error"] is None,
                timeout=40,
                what="the retry to index the change",
            )
            assert last_build(runtime)["rechunked"] == ["leave.md"]
            assert embedder.embedded == [[EXPENSES, LEAVE, REMOTE], [changed]]
            ask(runtime, "And now?")
            passages = retrieved(llm, 3)["passages"]
            assert passages[0]["text"] == changed
            assert passages[0]["score"] < 0.04  # reciprocal rank fusion's


def test_a_partner_source_answers_with_one_cited_passage(tmp_path: Path) -> None:
    with FakeLLM() as hr_llm, FakeLLM() as llm:
        hr_llm.script(Turn.text("You have 28 leave days a year."))
        llm.script(
            Turn.tool_calls(ToolCall("hr-answers", {"query": "How many leave days?"})),
            Turn.text("28 [hr-answers:hr#0]"),
        )
        hr_docs = agent_docs(name="hr", llm_url=hr_llm.base_url)
        hr = RuntimeProcess(config=write_docs(tmp_path / "hr.yaml", hr_docs), agent="hr")
        with hr:
            docs = agent_docs(llm_url=llm.base_url, partners=[{"name": "hr"}])
            docs[-1]["spec"]["knowledge"] = [
                {"name": "hr-answers", "description": "HR's answers", "partner": {"name": "hr"}}
            ]
            hr_spec = next(d for d in hr_docs if d["kind"] == "AgentSpec")
            path = write_docs(tmp_path / "agent.yaml", [*docs, hr_spec])
            env = {"AGENTSPEC_PARTNER_URLS": json.dumps({"hr": hr.base_url})}
            with RuntimeProcess(config=path, agent="assistant", env=env) as runtime:
                body = ask(runtime, "How many leave days do I have?")
                status = knowledge(runtime)
        assert body["choices"][0]["message"]["content"] == "28 [hr-answers:hr#0]"
        assert hr_llm.requests[0].last_user_text == "How many leave days?"
        assert retrieved(llm, 1) == {
            "source": "hr-answers",
            "passages": [
                {
                    "text": "You have 28 leave days a year.",
                    "citation": "[hr-answers:hr#0]",
                    "document": "hr",
                    "chunk": 0,
                }
            ],
        }
        # the partner's tokens count in this agent's usage, as for the partner tool
        assert body["agentspec"]["partnerUsage"]["completion_tokens"] > 0
        assert {t["function"]["name"] for t in llm.requests[0].tools} == {"hr", "hr-answers"}
        assert status == {"name": "hr-answers", "topK": 4, "partner": "hr"}


def documents_config_map(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "policies"}, "data": data}


def test_a_configmap_source_is_read_and_watched_through_the_api(
    control_plane: ControlPlane, kubectl: NamespacedKubectl, namespace: str, tmp_path: Path
) -> None:
    """In cluster mode (the real apiserver in place of the pod's): the documents are the
    ConfigMap's keys; an edit of one key embeds that key's chunk alone; a deletion drops the
    index and says so."""
    with FakeLLM() as llm:
        resources = [parse_resource(d) for d in documents_agent(llm)]
        agent = next(r for r in resources if isinstance(r, AgentResource))
        prompts = {r.metadata.name: r for r in resources if isinstance(r, PromptTemplateResource)}
        config = resolve_agent(
            agent, namespace=namespace, prompts=prompts, mcp_servers={}, partners={}
        )
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": config_map_name(config.name)},
                "data": {CONFIG_KEY: config.to_json()},
            }
        )
        kubectl.apply(documents_config_map(POLICIES))
        env = {
            "AGENT_NAME": config.name,
            "POD_NAMESPACE": namespace,
            "KUBECONFIG": str(control_plane.kubeconfig),
            "AGENTSPEC_STATE_DIR": str(tmp_path / "state"),
        }
        with RuntimeProcess(env=env) as runtime:
            assert llm.embedded == [[EXPENSES, LEAVE, REMOTE]]
            assert knowledge(runtime)["documents"] == f"ConfigMap {namespace}/policies"
            changed = REMOTE.replace("three", "two")
            kubectl.apply(documents_config_map({**POLICIES, "remote.md": changed}))
            wait_until(
                lambda: last_build(runtime)["rechunked"] == ["remote.md"],
                timeout=15,
                what="the edited key to be re-indexed",
            )
            assert llm.embedded[1:] == [[changed]]
            assert last_build(runtime)["reused"] == 2

            kubectl("delete", "configmap", "policies")
            wait_until(
                lambda: knowledge(runtime)["error"] is not None,
                timeout=15,
                what="the deletion to show in /status",
            )
            status = knowledge(runtime)
            assert status["error"] == f"ConfigMap {namespace}/policies was deleted"
            assert status["indexed"] is None  # what was deleted is no longer quoted
            assert runtime.get("/readyz")[0] == 200  # the agent itself serves on
