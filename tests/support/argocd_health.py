"""Run the chart's Argo CD health scripts (Lua) the way Argo CD does: ``obj`` in, ``hs`` out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lupa import LuaRuntime

SNIPPET = Path(__file__).resolve().parents[2] / "charts" / "agentspec" / "argocd" / "argocd-cm.yaml"


def script(kind: str) -> str:
    snippet: dict[str, str] = yaml.safe_load(SNIPPET.read_text())
    return snippet[f"resource.customizations.health.agentspec.io_{kind}"]


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) the health script returns for ``obj``."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script(obj["kind"]))
    return str(result["status"]), str(result["message"] or "")
