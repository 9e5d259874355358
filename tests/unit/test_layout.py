"""Repository layout guards: the operator/ and runtime/ folders never shadow anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_imports_from_the_repo_root() -> None:
    # -S: no site, so nothing imported `operator` before the repo root is on sys.path
    code = (
        "import sys; sys.path.insert(0, '.'); "
        "import operator; print(operator.__file__); print(operator.itemgetter(1)([0, 7]))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out[0]).parent != ROOT / "operator"
    assert "lib" in Path(out[0]).parts
    assert out[1] == "7"


def test_plain_folders_are_not_packages() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "runtime" / "__init__.py").exists()
    assert (ROOT / "operator" / "agentspec_operator" / "__init__.py").is_file()
    assert (ROOT / "runtime" / "agentspec_runtime" / "__init__.py").is_file()


def test_every_package_says_what_it_owns_and_must_not_do() -> None:
    for init in list((ROOT / "runtime").rglob("__init__.py")) + list(
        (ROOT / "operator").rglob("__init__.py")
    ):
        doc = init.read_text().split('"""')
        assert len(doc) >= 3, f"{init}: no docstring"
        assert "Must not" in doc[1], f"{init}: docstring lacks 'Must not'"
