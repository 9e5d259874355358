"""No test can reach a real model: ``OPENAI_*`` never reaches the tests or their children.

In: ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` set in the environment pytest starts with, and a
child started through :func:`start_process` (the seam every test component uses) with and
without an explicit environment. Asserted: the variables are gone in the pytest process (the
session fixture in ``tests/conftest.py``) and in the children.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import start_process

ROOT = Path(__file__).resolve().parents[2]
REAL = {"OPENAI_API_KEY": "sk-real-key", "OPENAI_BASE_URL": "https://api.openai.com/v1"}


def test_this_process_has_no_model_variables() -> None:
    assert [name for name in os.environ if name.startswith("OPENAI_")] == []


def test_a_pytest_run_started_with_real_model_variables_drops_them() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__).relative_to(ROOT)}::test_this_process_has_no_model_variables",
        ],
        cwd=ROOT,
        env={**os.environ, **REAL},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("explicit", [False, True], ids=["inherited", "explicit"])
def test_children_never_see_model_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, explicit: bool
) -> None:
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    env = {**os.environ, "KEPT": "yes"} if explicit else None
    child = start_process(
        "env-dump", [sys.executable, "-c", code], log_path=tmp_path / "log", env=env
    )
    assert child.popen.wait(10) == 0
    seen = json.loads(out.read_text())
    assert [name for name in seen if name.startswith("OPENAI_")] == []
    assert seen["PATH"] == os.environ["PATH"]
    assert seen.get("KEPT") == ("yes" if explicit else None)
