"""Agent Studio's folder mode (``agentspec studio FOLDER``) next to ``agentspec up`` on the
same folder: the multi-agent example, offline demo model.

Asserted: the agents are listed Ready from the processes ``agentspec up`` runs; a prompt
version added and released through the Studio is written into the YAML file (the file's
other documents and its opening comment kept), and the running HR agent answers with the new
prompt without restarting; a save that would break the folder is refused naming the problem
and changes nothing; the playground reaches the local agent; the agents export their spans
to the Studio (OTLP) and a question the router hands to HR, whose knowledge source answers,
is one trace across both agents — shown as a waterfall in a real browser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import httpx
import yaml
from playwright.sync_api import expect

from tests.support.browser import chromium, new_page, shot
from tests.support.procs import ManagedProcess, start_process, wait_until
from tests.support.studio_proc import StudioProcess
from tests.support.tracing import Jaeger

ROOT = Path(__file__).resolve().parents[2]


def start_up(folder: Path, log: Path, otlp_endpoint: str) -> ManagedProcess:
    """``agentspec up`` on ``folder``, its agents exporting spans to ``otlp_endpoint``
    quickly (the batch delay is 5 s otherwise), once it says it is ready."""
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    up = start_process(
        "agentspec-up",
        [
            sys.executable, "-m", "agentspec_runtime.cli", "up", str(folder),
            "--port-base", "0", "--run-local-commands",
        ],
        log_path=log,
        env={**os.environ, **otlp},
        cwd=ROOT,
    )  # fmt: skip
    try:
        wait_until(
            lambda: "agentspec up: ready" in log.read_text(), timeout=90, what="agentspec up"
        )
    except BaseException:
        up.stop(grace=15)
        raise
    return up


def test_folder_mode_writes_the_files_and_the_running_agents_reload(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    shutil.copytree(ROOT / "examples" / "multi-agent", folder)
    log = tmp_path / "up.log"
    studio = StudioProcess(folder=folder).start()
    try:
        up = start_up(folder, log, studio.base_url)  # the agents send their spans to the Studio
    except BaseException:
        studio.stop()
        raise
    try:
        match = re.search(r"^  hr\s+(http://127\.0\.0\.1:\d+)", log.read_text(), re.M)
        assert match, log.read_text()
        hr = match.group(1)
        before = httpx.get(f"{hr}/status", timeout=10).json()["pid"]
        api = f"{studio.base_url}/api/namespaces/default"
        rows = httpx.get(f"{api}/agents", timeout=20).json()["items"]
        assert {r["name"]: r["ready"] for r in rows} == {
            "router": True,
            "hr": True,
            "finance": True,
        }

        prompts = folder / "prompts.yaml"
        opening = prompts.read_text().splitlines()[0]
        assert opening.startswith("#")
        # a comment opening the document the Studio will rewrite: it must stay
        marker = "# The HR agent's prompt: ask HR before changing it."
        prompts.write_text(
            prompts.read_text().replace(
                "---\napiVersion: agentspec.io/v1alpha1\nkind: PromptTemplate\nmetadata:\n"
                "  name: hr-prompt",
                f"---\n{marker}\napiVersion: agentspec.io/v1alpha1\nkind: PromptTemplate\n"
                "metadata:\n  name: hr-prompt",
            )
        )
        assert marker in prompts.read_text()
        base = f"{api}/prompts/hr-prompt"
        friendly = "You are the friendly HR assistant. Answer questions about leave."
        for path, body in (
            ("versions", {"version": "v2", "template": friendly}),
            ("canary", {"version": "v2", "weight": 50}),
            ("promote", {}),
        ):
            response = httpx.post(f"{base}/{path}", json=body, timeout=20)
            assert response.status_code == 200, response.text
        written = list(yaml.safe_load_all(prompts.read_text()))
        hr_prompt = next(d for d in written if d["metadata"]["name"] == "hr-prompt")
        assert hr_prompt["spec"]["release"] == {"stable": "v2"}
        assert {d["metadata"]["name"] for d in written} == {
            "router-prompt",
            "hr-prompt",
            "finance-prompt",
        }
        assert prompts.read_text().splitlines()[0] == opening
        assert f"---\n{marker}\napiVersion: agentspec.io/v1alpha1\n" in prompts.read_text()

        def hr_says() -> str:
            body = httpx.post(
                f"{hr}/v1/chat/completions",
                json={"model": "hr", "messages": [{"role": "user", "content": "hello"}]},
                timeout=20,
            ).json()
            answer: str = body["choices"][0]["message"]["content"]
            return answer

        wait_until(lambda: "friendly" in hr_says(), timeout=15, what="HR to reload")
        assert httpx.get(f"{hr}/status", timeout=10).json()["pid"] == before

        # a save that would break the folder: refused, naming why, nothing written
        text = (folder / "agents.yaml").read_text()
        broken: dict[str, object] = {
            "apiVersion": "agentspec.io/v1alpha1",
            "kind": "AgentSpec",
            "metadata": {"name": "hr"},
            "spec": {"promptRef": {"name": "nope"}, "model": {"model": "gpt-4o-mini"}},
        }
        for step in ("dry-run", "apply"):
            refused = httpx.post(
                f"{api}/{step}",
                json={"yaml": yaml.safe_dump(broken), "takeOwnership": True},
                timeout=20,
            )
            assert refused.status_code == 422, refused.text
            causes = [c["message"] for c in refused.json()["causes"]]
            assert any("PromptTemplate 'nope' not found" in c for c in causes), causes
        assert (folder / "agents.yaml").read_text() == text
        typo = {**broken, "apiVersion": "agentspec/v1alpha1"}
        wrong = httpx.post(f"{api}/apply", json={"yaml": yaml.safe_dump(typo)}, timeout=20)
        assert wrong.status_code == 422
        assert (folder / "agents.yaml").read_text() == text

        chat = httpx.post(f"{api}/agents/hr/chat", json={"message": "hello"}, timeout=30)
        assert chat.status_code == 200, chat.text
        assert "friendly" in chat.json()["answer"]
        assert chat.json()["agentspec"]["promptVersion"] == "v2"

        # one trace across router and HR: the router's partner call, HR's knowledge
        routed = httpx.post(
            f"{api}/agents/router/chat",
            json={"message": "How many leave days do I have?"},
            timeout=60,
        )
        assert routed.status_code == 200, routed.text
        assert "[hr-policies:leave.md#0]" in routed.json()["answer"]
        trace_id = routed.json()["traceId"]

        def spans() -> list[dict[str, object]]:
            found = httpx.get(f"{studio.base_url}/api/traces/{trace_id}", timeout=10)
            return list(found.json()["spans"]) if found.status_code == 200 else []

        def both_agents_reported() -> bool:
            names = {(s["service"], s["name"]) for s in spans()}
            return {("router", "invoke_agent router"), ("hr", "invoke_agent hr")} <= names

        wait_until(both_agents_reported, timeout=20, what="both agents' spans")
        names = {(s["service"], s["name"]) for s in spans()}
        assert ("hr", "execute_tool hr-policies") in names, names
        assert ("router", "execute_tool hr") in names, names
        assert all(s["traceId"] == trace_id for s in spans())

        with chromium() as browser, new_page(browser) as page:
            page.goto(f"{studio.base_url}/#/default/traces/{trace_id}")
            waterfall = page.get_by_label("Waterfall")
            expect(waterfall.locator('[data-span="execute_tool hr-policies"]')).to_be_visible()
            expect(waterfall.locator('[data-service="router"]').first).to_be_visible()
            shot(page, "10-trace-waterfall")
    finally:
        up.stop(grace=15)
        studio.stop()


def test_the_playground_streams_the_hop_to_hr_and_the_trace_comes_from_jaeger(
    tmp_path: Path,
) -> None:
    """The multi-agent demo with its spans in a real Jaeger v2 (``--jaeger-url``): a question
    to the router streams in with its hop to HR as it starts and finishes, in the API and
    in the browser; the trace link opens the waterfall across both agents, read back from
    Jaeger's query API; a Jaeger gone away is said plainly."""
    folder = tmp_path / "specs"
    shutil.copytree(ROOT / "examples" / "multi-agent", folder)
    log = tmp_path / "up.log"
    studio = None
    try:
        with Jaeger() as jaeger:
            studio = StudioProcess(folder=folder, args=("--jaeger-url", jaeger.query_url)).start()
            up = start_up(folder, log, jaeger.otlp_url)
            try:
                api = f"{studio.base_url}/api/namespaces/default"
                question = {"message": "How many leave days do I have?", "stream": True}
                with httpx.stream(
                    "POST", f"{api}/agents/router/chat", json=question, timeout=60
                ) as answer:
                    assert answer.status_code == 200, answer.read()
                    assert answer.headers["content-type"].startswith("text/event-stream")
                    events = [
                        json.loads(line[5:])
                        for line in answer.iter_lines()
                        if line.startswith("data:")
                    ]
                kinds = [e["type"] for e in events]
                assert kinds[0] == "start"
                hops = [e for e in events if e["type"] == "tool" and e["source"] == "partner"]
                assert [(h["event"], h["tool"], h["target"].split("/")[-1]) for h in hops] == [
                    ("tool_start", "hr", "hr"),
                    ("tool_end", "hr", "hr"),
                ]
                assert hops[1]["ok"] is True
                # the hop came and went before the router's answer began to stream
                assert kinds.index("tool") < kinds.index("delta")
                text = "".join(e["text"] for e in events if e["type"] == "delta")
                assert "[hr-policies:leave.md#0]" in text
                done = next(e for e in events if e["type"] == "done")
                assert done["agentspec"]["promptVersion"] == "v1"
                assert done["agentspec"]["partnerUsage"]["prompt_tokens"] > 0
                assert next(e for e in events if e["type"] == "usage")["usage"]["prompt_tokens"] > 0
                trace_id = events[0]["traceId"]

                def from_jaeger() -> set[tuple[str, str]]:
                    found = httpx.get(f"{studio.base_url}/api/traces/{trace_id}", timeout=10)
                    if found.status_code != 200:
                        return set()
                    return {(s["service"], s["name"]) for s in found.json()["spans"]}

                wait_until(
                    lambda: (
                        {("router", "execute_tool hr"), ("hr", "execute_tool hr-policies")}
                        <= from_jaeger()
                    ),
                    timeout=30,
                    what="the trace across router and HR in Jaeger",
                )
                assert {"router", "hr"} <= set(jaeger.services())

                # the same question over A2A: a task, its answer streamed, its prompt version
                over_a2a = {**question, "api": "a2a"}
                with httpx.stream(
                    "POST", f"{api}/agents/router/chat", json=over_a2a, timeout=60
                ) as answer:
                    assert answer.status_code == 200, answer.read()
                    a2a = [
                        json.loads(line[5:])
                        for line in answer.iter_lines()
                        if line.startswith("data:")
                    ]
                assert [e["type"] for e in a2a][:2] == ["start", "task"]
                assert "[hr-policies:leave.md#0]" in "".join(
                    e["text"] for e in a2a if e["type"] == "delta"
                )
                assert (
                    next(e for e in a2a if e["type"] == "done")["agentspec"]["promptVersion"]
                    == "v1"
                )
                assert next(e for e in a2a if e["type"] == "usage")["usage"]["prompt_tokens"] > 0
                assert not [e for e in a2a if e["type"] == "error"]
                refused = httpx.post(
                    f"{api}/agents/router/chat", json={**over_a2a, "stream": False}, timeout=20
                )
                assert refused.status_code == 422
                assert "answers as a stream" in refused.json()["message"]
                listed = httpx.get(f"{studio.base_url}/api/traces", timeout=20).json()["items"]
                assert trace_id in [t["traceId"] for t in listed]

                with chromium() as browser, new_page(browser) as page:
                    page.goto(f"{studio.base_url}/#/default/playground")
                    page.get_by_label("Agent").select_option("router")
                    page.get_by_role("textbox", name="Message").fill(
                        "How many leave days do I have?"
                    )
                    page.get_by_role("button", name="Send").click()
                    hop = page.get_by_label("Tool calls").locator('[data-source="partner"]')
                    expect(hop).to_contain_text(
                        re.compile(r"partner hop to hr — ok in [0-9.]+ ms"), timeout=60_000
                    )
                    conversation = page.get_by_label("Conversation")
                    expect(conversation).to_contain_text("[hr-policies:leave.md#0]")
                    details = page.get_by_label("Answer details")
                    expect(details).to_contain_text("prompt v1")
                    shot(page, "11-playground-streamed-hop")
                    details.get_by_role("link").click()
                    waterfall = page.get_by_label("Waterfall")
                    # the trace the browser's chat made, from Jaeger (the page retries while the
                    # spans are still on their way)
                    expect(waterfall.locator('[data-service="hr"]').first).to_be_visible(
                        timeout=30_000
                    )
                    expect(waterfall.locator('[data-span="execute_tool hr"]')).to_be_visible()
                    shot(page, "12-trace-from-jaeger")
            finally:
                up.stop(grace=15)
        # Jaeger gone: the Studio says so, and serves everything else
        gone = httpx.get(f"{studio.base_url}/api/traces", timeout=20)
        assert gone.status_code == 503
        assert "the trace backend (Jaeger at" in gone.json()["message"]
        assert "cannot be reached" in gone.json()["message"]
        assert httpx.get(f"{studio.base_url}/api/health", timeout=10).status_code == 200
    finally:
        if studio is not None:
            studio.stop()
