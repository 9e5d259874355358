"""Agent Studio in a real headless browser (Debian's chromium, driven by Playwright), against
the shipped cluster (the chart's operator, agents as pods of the built images).

Asserted, as a user sees it: an agent created through the form generated from the CRD's
schema (reviewed as a server-side dry run's diff, then applied) goes Ready in the agents
list; a prompt version added in the prompt center, a 20 % canary set, both versions serving
with their weights and, once conversations ran on each, both versions' token figures from a
real Prometheus side by side, then the canary rolled back — each step with its confirmation;
a chat in the playground (through the apiserver's service proxy) with the prompt version,
tokens and trace id it was served with; the usage page's tokens and cost per prompt version;
the topology graph; the agents page at phone width; an unreachable cluster said plainly.
The multi-agent example deployed: its topology (router → HR, finance, expense-tools MCP,
HR's knowledge) with the call rates Prometheus measured on the edges; a chat with the router
in the playground showing the hop to HR as it streams, then the trace link opening the
waterfall across router and HR read from the cluster's Jaeger v2 (the agents export to it
through the chart's ``otel.endpoint``); the tokens and cost by consumer. Screenshots of each
page are kept in ``test-artifacts/studio/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from agentspec_runtime.engine.prompts import bucket
from tests.support.browser import chromium, new_page, shot
from tests.support.cluster import ShippedCluster
from tests.support.control_plane import NamespacedKubectl
from tests.support.fake_llm import FakeLLM, echo, tool_then_answer
from tests.support.metrics_stack import Prometheus
from tests.support.multi_agent import (
    example_documents,
    expense_tools_server,
    hr_model,
    policies_config_map,
)
from tests.support.operator_testkit import eventually, prompt_doc
from tests.support.studio_proc import StudioProcess, unreachable_kubeconfig


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as opened:
        yield opened


def chat(studio: StudioProcess, ns: str, context: str) -> Any:
    response = httpx.post(
        f"{studio.base_url}/api/namespaces/{ns}/agents/helper/chat",
        json={"message": "hello", "contextId": context},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_create_an_agent_release_a_prompt_canary_and_see_the_topology(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl, page: Page, tmp_path: Path
) -> None:
    ns = cluster_ns.namespace
    cluster_ns.apply(prompt_doc("helper-prompt"))
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {input: 0.15, output: 0.6}\n")
    # echo: open-ended; the conversations below are counted by Prometheus, not scripted
    with (
        FakeLLM(responder=echo) as llm,
        Prometheus(cluster.plane) as prometheus,
        StudioProcess(
            kubeconfig=cluster.plane.kubeconfig,
            args=("--prometheus-url", prometheus.url, "--prices", str(prices)),
        ) as studio,
    ):
        page.goto(f"{studio.base_url}/#/{ns}/agents")
        expect(page.get_by_text("No agents here yet.")).to_be_visible()

        # the form generated from the CRD's schema
        page.goto(f"{studio.base_url}/#/{ns}/new")
        page.locator('[data-path="metadata.name"]').fill("helper")
        page.locator('[data-path="spec.model.model"]').fill("gpt-4o-mini")
        page.locator('[data-path="spec.model.baseUrl"]').fill(llm.base_url)
        page.locator('[data-path="spec.promptRef.name"]').fill("helper-prompt")
        expect(page.locator("#f-spec-maxIterations-help")).to_contain_text("think-act rounds")
        page.get_by_role("button", name="Review changes").click()
        diff = page.get_by_label("Diff")
        expect(diff).to_contain_text("+kind: AgentSpec")
        expect(diff).to_contain_text("+    baseUrl: " + llm.base_url)
        shot(page, "1-spec-editor-review")
        page.get_by_role("button", name="Apply", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("Saved helper")
        applied = yaml.safe_load(cluster_ns("get", "agentspec", "helper", "-o", "yaml").stdout)
        assert applied["spec"]["promptRef"] == {"name": "helper-prompt"}

        # the agents page follows the cluster (server-sent events) until the agent is Ready
        page.goto(f"{studio.base_url}/#/{ns}/agents")
        row = page.locator('tr[data-agent="helper"]')
        expect(row.locator(".badge")).to_have_text("Ready", timeout=120_000)
        expect(row).to_contain_text("v1 100%")
        shot(page, "2-agents")

        # the prompt center: a version, a 20 % canary, both serving, rolled back
        page.goto(f"{studio.base_url}/#/{ns}/prompts")
        card = page.locator('[data-template="helper-prompt"]')
        card.get_by_role("textbox", name="New version").fill("v2")
        card.get_by_label("Template").fill("You are a brief helper.")
        card.get_by_role("button", name="Create version").click()
        card.get_by_role("button", name="Confirm").click()
        card = page.locator('[data-template="helper-prompt"]')
        expect(card.get_by_role("cell", name="v2", exact=True)).to_be_visible()
        card.get_by_label("Canary").select_option("v2")
        card.get_by_label("Weight %").fill("20")
        card.get_by_role("button", name="Set canary").click()
        expect(card.get_by_role("alertdialog")).to_contain_text("Send 20% to v2?")
        card.get_by_role("button", name="Confirm").click()
        card = page.locator('[data-template="helper-prompt"]')
        expect(card.get_by_label("Serving")).to_have_text("Serving: v1 80% · v2 20%")
        page.goto(f"{studio.base_url}/#/{ns}/agents")
        expect(page.locator('tr[data-agent="helper"]')).to_contain_text("v1 80%, v2 20%")

        # conversations on both versions (their buckets decide: the runtime's own function)
        canary_ctx = next(f"c{i}" for i in range(1000) if bucket(f"c{i}") < 20)
        stable_ctx = next(f"s{i}" for i in range(1000) if bucket(f"s{i}") >= 20)
        eventually(
            lambda: chat(studio, ns, canary_ctx)["agentspec"]["promptVersion"] == "v2",
            timeout=60,
            what="the agent to serve the canary",
        )
        # Prometheus counts from a series' first scraped sample: once the new version's
        # series (created at 0 when the config loaded) has been scraped, converse on both
        time.sleep(3)
        for _ in range(2):
            assert chat(studio, ns, canary_ctx)["agentspec"]["promptVersion"] == "v2"
            assert chat(studio, ns, stable_ctx)["agentspec"]["promptVersion"] == "v1"
        page.goto(f"{studio.base_url}/#/{ns}/prompts")
        card = page.locator('[data-template="helper-prompt"]')
        # both versions' token figures, side by side, once Prometheus has scraped them
        for version in ("v1", "v2"):
            expect(card.locator(f'[data-figures="{version}"]')).not_to_have_text(
                "0 / 0", timeout=60_000
            )
            expect(card.locator(f'[data-figures="{version}"]')).not_to_have_text("—")
            # requests, errors and the median latency by version: the A/B comparison
            expect(card.locator(f'[data-requests="{version}"]')).to_have_text(
                re.compile(r"^[1-9][0-9]* · 0 · [0-9.]+ ms$"), timeout=60_000
            )
        shot(page, "3-prompt-center-canary")
        card = page.locator('[data-template="helper-prompt"]')
        card.get_by_role("button", name="Roll back").click()
        card.get_by_role("button", name="Confirm").click()
        card = page.locator('[data-template="helper-prompt"]')
        expect(card.get_by_label("Serving")).to_have_text("Serving: v1 100%")
        release = yaml.safe_load(
            cluster_ns("get", "prompttemplate", "helper-prompt", "-o", "yaml").stdout
        )["spec"]["release"]
        assert release == {"stable": "v1"}

        # the playground: through the apiserver's service proxy, as the user
        page.goto(f"{studio.base_url}/#/{ns}/playground")
        page.get_by_role("textbox", name="Message").fill("Are you there?")
        page.get_by_role("button", name="Send").click()
        details = page.get_by_label("Answer details")
        expect(details).to_contain_text("prompt v1")
        expect(details).to_contain_text("trace ")
        expect(page.get_by_label("Conversation")).to_contain_text("Are you there?")
        assert llm.requests[-1].last_user_text == "Are you there?"
        trace = llm.requests[-1].headers["traceparent"].split("-")[1]
        expect(details).to_contain_text(trace)  # the trace id shown is the one the agent used
        shot(page, "4-playground")

        page.goto(f"{studio.base_url}/#/{ns}/usage")
        for version in ("v1", "v2"):
            row = page.locator(f'tr[data-usage="helper/{version}"]')
            expect(row).to_be_visible(timeout=30_000)
            expect(row).not_to_contain_text("no price")
        shot(page, "5-usage")

        page.goto(f"{studio.base_url}/#/{ns}/topology")
        expect(page.get_by_label("agent helper, healthy")).to_be_visible()
        shot(page, "6-topology")
        page.goto(f"{studio.base_url}/#/{ns}/registries")
        expect(page.get_by_role("link", name="helper")).to_be_visible()
        shot(page, "7-registries")

        # a phone-width screen: the agents page without sideways scrolling
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{studio.base_url}/#/{ns}/agents")
        expect(page.locator('tr[data-agent="helper"] .badge')).to_have_text("Ready")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at a 390px screen"
        shot(page, "8-agents-phone")


def test_an_unreachable_cluster_is_said_on_the_page(tmp_path: Path, page: Page) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path / "kubeconfig")
    with StudioProcess(kubeconfig=kubeconfig) as studio:
        page.goto(f"{studio.base_url}/")
        alert = page.get_by_role("alert").first
        expect(alert).to_contain_text("The cluster cannot be reached")
        shot(page, "9-unreachable")


def test_the_multi_agent_example_topology_hop_and_trace(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl, page: Page, tmp_path: Path
) -> None:
    ns = cluster_ns.namespace
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {input: 0.15, output: 0.6}\n")
    with (
        FakeLLM(responder=tool_then_answer) as router_llm,
        FakeLLM(responder=hr_model) as hr_llm,
        FakeLLM(responder=tool_then_answer) as finance_llm,
        Prometheus(cluster.plane) as prometheus,
        StudioProcess(
            kubeconfig=cluster.plane.kubeconfig,
            args=(
                "--prometheus-url", prometheus.url,
                "--jaeger-url", cluster.jaeger.query_url,
                "--prices", str(prices),
            ),
        ) as studio,
    ):  # fmt: skip
        for doc in expense_tools_server(cluster.images.runtime.ref):
            cluster_ns.apply(doc)
        cluster_ns.apply(policies_config_map())
        urls = {"router": router_llm, "hr": hr_llm, "finance": finance_llm}
        for doc in example_documents({a: llm.base_url for a, llm in urls.items()}):
            cluster_ns.apply(doc)
        for agent in ("hr", "finance", "router"):
            cluster.wait_agent_ready(cluster_ns, agent)

        # the playground: the router's hop to HR streams in as it happens
        page.goto(f"{studio.base_url}/#/{ns}/playground")
        page.get_by_label("Agent").select_option("router")
        page.get_by_role("textbox", name="Message").fill("hr message='How many leave days?'")
        page.get_by_role("button", name="Send").click()
        hop = page.get_by_label("Tool calls").locator('[data-source="partner"]')
        expect(hop).to_contain_text(
            re.compile(r"partner hop to hr — ok in [0-9.]+ ms"), timeout=60_000
        )
        expect(page.get_by_label("Conversation")).to_contain_text(
            "The tool said: HR says: How many leave days?"
        )
        details = page.get_by_label("Answer details")
        expect(details).to_contain_text("prompt v1")
        expect(details).to_contain_text("tool calls 1")
        shot(page, "13-cluster-playground-hop")
        trace = details.get_by_role("link").inner_text()
        assert re.fullmatch(r"[0-9a-f]{32}", trace)
        # the id the Studio sent is the one the router's model call carried
        assert any(trace in r.headers.get("traceparent", "") for r in router_llm.requests)

        # the trace link: the waterfall across router and HR, from the cluster's Jaeger
        details.get_by_role("link").click()
        waterfall = page.get_by_label("Waterfall")
        expect(waterfall.locator('[data-span="invoke_agent hr"]')).to_be_visible(timeout=30_000)
        expect(waterfall.locator('[data-span="execute_tool hr"]')).to_be_visible()
        expect(waterfall.locator('[data-service="router"]').first).to_be_visible()
        shot(page, "14-cluster-trace-from-jaeger")

        # more calls for the figures, once Prometheus has scraped the router's count (rate()
        # measures increases between samples: the calls before its first sample are not)
        eventually(
            lambda: prometheus.query(f'agentspec_tool_calls_total{{namespace="{ns}"}}'),
            timeout=60,
            what="Prometheus to scrape the router's tool calls",
        )
        for _ in range(3):
            answered = httpx.post(
                f"{studio.base_url}/api/namespaces/{ns}/agents/router/chat",
                json={"message": "hr message='And sick days?'"},
                timeout=60,
            )
            assert answered.status_code == 200, answered.text

        # the topology: every declared call, the router → HR edge weighted by its rate
        def rates() -> dict[str, float]:
            graph = httpx.get(f"{studio.base_url}/api/namespaces/{ns}/topology", timeout=20)
            return {f"{e['from']}->{e['to']}": e.get("rate", 0) for e in graph.json()["edges"]}

        try:
            eventually(
                lambda: rates()["agent/router->agent/hr"] > 0,
                timeout=60,
                what="the router's calls to HR counted",
            )
        except AssertionError as e:
            counted = prometheus.query('agentspec_tool_calls_total{agent="router"}')
            raise AssertionError(f"{e}: {rates()}; Prometheus has {counted}") from e
        assert rates()["agent/router->agent/finance"] == 0
        page.goto(f"{studio.base_url}/#/{ns}/topology")
        for label in (
            "agent router, healthy",
            "agent hr, healthy",
            "agent finance, healthy",
            "knowledge hr-policies, healthy",
        ):
            expect(page.get_by_label(label)).to_be_visible()
        to_hr = page.locator('tr[data-edge="agent/router->agent/hr"]')
        expect(to_hr.locator("td").last).not_to_have_text(
            re.compile(r"^(—|0\.00)$"), timeout=60_000
        )
        to_finance = page.locator('tr[data-edge="agent/router->agent/finance"]')
        expect(to_finance.locator("td").last).to_have_text("0.00")  # no call went there
        shot(page, "15-cluster-topology-rates")

        # the registry of agents: each card's skill, its tags naming the tools it calls
        page.goto(f"{studio.base_url}/#/{ns}/registries")
        skill = page.get_by_label("Skills of router").locator('[data-skill="router"]')
        expect(skill).to_contain_text("Front desk that routes employee questions")
        expect(skill).to_contain_text("tags: agentspec, finance, hr")
        shot(page, "18-cluster-registries-cards")

        # the agents list: tokens per second and errors, live from Prometheus
        page.goto(f"{studio.base_url}/#/{ns}/agents")
        row = page.locator('tr[data-agent="router"]')
        expect(row.locator('[data-figure="errors"]')).to_have_text("0", timeout=30_000)
        expect(row.locator('[data-figure="tokens"]')).to_have_text(
            re.compile(r"^[0-9]+(\.[0-9]+)?$")
        )
        shot(page, "17-cluster-agents-figures")

        # who paid: the router's callers are anonymous (no auth in the example)
        page.goto(f"{studio.base_url}/#/{ns}/usage")
        paid = page.locator('tr[data-consumer="router/anonymous"]')
        expect(paid).to_be_visible(timeout=60_000)
        expect(paid).not_to_contain_text("no price")
        shot(page, "16-cluster-usage-by-consumer")
