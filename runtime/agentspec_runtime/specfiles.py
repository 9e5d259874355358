"""Reading spec files as a user writes them: YAML files and folders, many documents each.

Shared by ``agentspec up`` and ``agentspec validate``. Every problem names the file, the
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

from agentspec_runtime.spec import (
    AgentResource,
    AnyResource,
    McpServerResource,
    PromptTemplateResource,
    parse_resource,
)
from agentspec_runtime.spec.resolved import ResolutionError, resolve_agent, unsupported_fields
from agentspec_runtime.spec.resources import SpecError


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


def read(paths: Sequence[Path]) -> tuple[list[Document], list[str]]:
    """Every document of every file, and every problem (YAML and schema) found on the way."""
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
            document = Document(path, i, body)
            if str(body.get("apiVersion", "")).startswith("agentspec.io/"):
                try:
                    parse_resource(body)
                except SpecError as e:
                    problems += [f"{document.where}: {p}" for p in e.problems]
                    continue
            documents.append(document)
    return documents, problems


def check_references(documents: list[Document], *, namespace: str = "default") -> list[str]:
    """Resolve every AgentSpec against the documents, as the operator would (fields the
    engine cannot honour yet are problems too)."""
    parsed: list[tuple[Document, AnyResource]] = [
        (d, parse_resource(d.body))
        for d in documents
        if str(d.body.get("apiVersion", "")).startswith("agentspec.io/")
    ]
    prompts = {r.metadata.name: r for _, r in parsed if isinstance(r, PromptTemplateResource)}
    servers = {r.metadata.name: r for _, r in parsed if isinstance(r, McpServerResource)}
    agents = {
        (r.metadata.namespace or namespace, r.metadata.name): r
        for _, r in parsed
        if isinstance(r, AgentResource)
    }
    problems: list[str] = []
    for document, resource in parsed:
        if not isinstance(resource, AgentResource):
            continue
        try:
            config = resolve_agent(
                resource,
                namespace=resource.metadata.namespace or namespace,
                prompts=prompts,
                mcp_servers=servers,
                partners=agents,
            )
        except ResolutionError as e:
            problems += [f"{document.where}: {p}" for p in e.problems]
            continue
        problems += [f"{document.where}: {p}" for p in unsupported_fields(config)]
    return problems


def validate(paths: Sequence[Path]) -> list[str]:
    documents, problems = read(paths)
    return problems + check_references(documents)
