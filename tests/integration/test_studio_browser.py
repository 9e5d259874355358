"""Agent Studio in a real headless browser (Debian's chromium, driven by Playwright), against
the shipped cluster (the chart's operator, agents as pods of the built images).

Asserted, as a user sees it: an agent created through the form generated from the CRD's
schema (reviewed as a server-side dry run's diff, then applied) goes Ready in the agents
list; a prompt version added in the prompt center, a 20 % canary set, both versions shown
serving with their weights, and the canary rolled back — each with its confirmation; the
topology graph shows the agent; the agents page fits a phone-width screen; an unreachable
cluster is said plainly. Screenshots of each page are kept in ``test-artifacts/studio/``.

Not covered yet (not built): the playground chat, traces, token cost.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.cluster import ShippedCluster
from tests.support.control_plane import NamespacedKubectl
from tests.support.fake_llm import FakeLLM, echo
from tests.support.operator_testkit import prompt_doc
from tests.support.studio_proc import StudioProcess

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "studio"
# the browser itself: /usr/bin/chromium is Debian's launcher script
CHROMIUM = (
    "/usr/lib/chromium/chromium"
    if Path("/usr/lib/chromium/chromium").is_file()
    else shutil.which("chromium")
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM, "Debian's chromium is missing: scripts/setup.sh installs it"
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where chromium's sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_create_an_agent_release_a_prompt_canary_and_see_the_topology(
    cluster: ShippedCluster, cluster_ns: NamespacedKubectl, page: Page
) -> None:
    ns = cluster_ns.namespace
    cluster_ns.apply(prompt_doc("helper-prompt"))
    # echo: the agent's model is never asked here; it answers if it were
    with (
        FakeLLM(responder=echo) as llm,
        StudioProcess(kubeconfig=cluster.plane.kubeconfig) as studio,
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
        expect(row).to_contain_text("Ready", timeout=120_000)
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
        page.goto(f"{studio.base_url}/#/{ns}/prompts")
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

        page.goto(f"{studio.base_url}/#/{ns}/topology")
        expect(page.get_by_label("agent helper, healthy")).to_be_visible()
        shot(page, "4-topology")
        page.goto(f"{studio.base_url}/#/{ns}/registries")
        expect(page.get_by_role("link", name="helper")).to_be_visible()
        shot(page, "5-registries")

        # a phone-width screen: the agents page without sideways scrolling
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{studio.base_url}/#/{ns}/agents")
        expect(page.locator('tr[data-agent="helper"]')).to_contain_text("Ready")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at a 390px screen"
        shot(page, "6-agents-phone")


def test_an_unreachable_cluster_is_said_on_the_page(tmp_path: Path, page: Page) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with StudioProcess(kubeconfig=kubeconfig) as studio:
        page.goto(f"{studio.base_url}/")
        alert = page.get_by_role("alert").first
        expect(alert).to_contain_text("The cluster cannot be reached")
        shot(page, "7-unreachable")
