"""Each extra is complete on its own: ``[runtime]``, ``[operator]`` and ``[studio]`` in
fresh venvs.

The first release shipped a runtime extra without aiohttp; the tests passed because the dev
venv had every extra. Here each extra is installed alone, the way a user would
(``pip install 'agentspec[runtime]'``), pinned by its lock file, into a venv of its own, and
started.

In: ``uv venv`` + ``uv pip install '.[<extra>]' --constraint requirements/<extra>.txt``; the
fake LLM; a private control plane for the operator. Asserted: the runtime venv holds no
operator package (kopf) and serves ``/readyz`` and a chat answer; the operator venv holds no
runtime package (openai) and reconciles an AgentSpec into its children; the studio venv holds
neither and answers its API from the real apiserver.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.agent_files import agent_docs, write_docs
from tests.support.control_plane import ControlPlane
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.operator_proc import OperatorProcess
from tests.support.operator_testkit import agent_doc, eventually, prompt_doc
from tests.support.runtime_proc import RuntimeProcess
from tests.support.studio_proc import StudioProcess

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def uv() -> str:
    """The pinned uv the scripts install (scripts/uv.sh)."""
    out = subprocess.run(
        ["bash", "-c", "source scripts/uv.sh >/dev/null && echo $UV"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def venv_with(extra: str, path: Path) -> Path:
    """A fresh venv with the project and exactly one extra; returns its ``bin``."""
    subprocess.run([uv(), "venv", "--quiet", "--python", "python3", str(path)], check=True)
    subprocess.run(
        [
            uv(), "pip", "install", "--quiet", "--python", str(path / "bin" / "python"),
            f"{ROOT}[{extra}]", "--constraint", str(ROOT / "requirements" / f"{extra}.txt"),
        ],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    return path / "bin"


# Every adapter, read from the folder: an adapter added later is checked without anyone
# remembering to list it (the guard's, the limiters' and workload identity's were not).
LAZY_ADAPTERS = sorted(
    p.stem
    for p in (ROOT / "runtime/agentspec_runtime/adapters").glob("*.py")
    if p.stem != "__init__"
)
LAZY_LIBRARIES = ("lightkube", "numpy")  # imported outside the adapters, when a spec needs it


def importable(bin_dir: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(bin_dir / "python"), "-c", probe], check=False).returncode == 0


@pytest.mark.timeout(600)
def test_the_runtime_extra_alone_serves_an_agent(tmp_path: Path) -> None:
    bin_dir = venv_with("runtime", tmp_path / "venv")
    assert not importable(bin_dir, "kopf")
    # what the runtime imports only when a spec needs it (a missing one would fail the first
    # agent using that feature, not the start)
    lazy = [f"agentspec_runtime.adapters.{m}" for m in LAZY_ADAPTERS] + list(LAZY_LIBRARIES)
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", f"import {', '.join(lazy)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    with FakeLLM() as llm:
        llm.script(Turn.text("hello from the model"))
        config = write_docs(tmp_path / "agent.yaml", agent_docs(llm_url=llm.base_url))
        with RuntimeProcess(config=config, command=(str(bin_dir / "agentspec"),)) as runtime:
            assert runtime.get("/readyz")[0] == 200
            answer = httpx.post(
                f"{runtime.base_url}/v1/chat/completions",
                json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "hello from the model"
            assert llm.last_request.last_user_text == "hi"


@pytest.mark.timeout(600)
def test_the_operator_extra_alone_reconciles_an_agent(tmp_path: Path) -> None:
    bin_dir = venv_with("operator", tmp_path / "venv")
    assert not importable(bin_dir, "openai")
    with ControlPlane() as plane:
        plane.apply_crds(ROOT / "crds")
        operator = OperatorProcess(plane, command=[str(bin_dir / "agentspec")]).start()
        try:
            plane.kubectl("create", "namespace", "agents")
            k = plane.bound("agents")
            k.apply(prompt_doc())
            k.apply(agent_doc("hr"))
            eventually(
                lambda: k("get", "deployment", "hr", check=False).returncode == 0,
                timeout=30,
                what="the operator from the [operator] venv to create the Deployment",
            )
        finally:
            operator.stop()


@pytest.mark.timeout(600)
def test_the_studio_extra_alone_serves_its_api(tmp_path: Path, control_plane: ControlPlane) -> None:
    bin_dir = venv_with("studio", tmp_path / "venv")
    assert not importable(bin_dir, "openai")
    assert not importable(bin_dir, "kopf")
    with StudioProcess(
        kubeconfig=control_plane.kubeconfig, command=(str(bin_dir / "agentspec"),)
    ) as studio:
        # a fresh apiserver answers 429 "storage is (re)initializing" for a moment
        eventually(
            lambda: httpx.get(f"{studio.base_url}/api/health", timeout=10).status_code == 200,
            timeout=30,
            what="the studio to reach the apiserver",
        )
        agents = httpx.get(f"{studio.base_url}/api/namespaces/default/agents", timeout=10)
        assert agents.status_code == 200, agents.text
        assert agents.json() == {"items": []}
