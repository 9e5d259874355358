"""Reading spec files as a user writes them: YAML files and folders, many documents each.

Shared by ``agentspec up``, ``validate`` and ``render``: files and folders become documents
and one :class:`~agentspec_runtime.spec.bundle.Bundle`. Every problem names the file, the
document (number, kind and name) and the field: schema errors from the models, and
cross-file references (a PromptTemplate, version, label, McpServer or partner that no file
defines) from the same resolution the operator runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentspec_runtime.spec.bundle import Bundle


@dataclass(frozen=True)
class Document:
    path: Path
    index: int
    """1-based position in the file."""
    body: dict[str, Any]

    @property
    def where(self) -> str:
        kind = self.body.get("kind", "?")
        name = (self.body.get("metadata") or {}).get("name", "?")
        return f"{self.path}: document {self.index} ({kind}/{name})"


def yaml_files(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def read(
    paths: Sequence[Path], *, namespace: str = "default"
) -> tuple[list[Document], Bundle, list[str]]:
    """Every document of every file, the :class:`Bundle` of the spec documents, and every
    problem found on the way (YAML, schema); references are checked by ``bundle.problems()``."""
    files, problems = yaml_files(paths)
    documents: list[Document] = []
    for path in files:
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{path}: not valid YAML: {e}")
            continue
        for i, body in enumerate(loaded, start=1):
            if not isinstance(body, dict):
                problems.append(f"{path}: document {i} is not a mapping")
                continue
            documents.append(Document(path, i, body))
    bundle, schema = Bundle.of(((d.body, d.where) for d in documents), namespace=namespace)
    return documents, bundle, problems + schema


def validate(paths: Sequence[Path]) -> list[str]:
    """Everything wrong with the files: YAML, schema, then (when those are clean) references
    and fields the engine cannot honour, each naming the file, document and field."""
    _, bundle, problems = read(paths)
    return problems or bundle.problems()
