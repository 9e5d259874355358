"""Whole resources (apiVersion, kind, metadata, spec, status) and the registry of kinds.

The registry is what the CRD generator, ``agentspec validate`` and local mode share:
one entry per kind with its names, models and printer columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._base import API_VERSION, GROUP, Invariant, SpecModel
from .agent import AgentSpec, AgentSpecStatus
from .mcp_server import McpServerSpec, McpServerStatus
from .problems import Problem
from .prompt import PromptTemplateSpec, PromptTemplateStatus


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata Agentspec reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


class _Resource(SpecModel):
    """Common envelope. Status is accepted (so `kubectl get -o yaml` output parses)."""

    api_version: Literal["agentspec.io/v1alpha1"] = Field(alias="apiVersion")
    """agentspec.io/v1alpha1"""
    metadata: ObjectMeta
    """Standard object metadata."""


# CEL sees only metadata.name (not the namespace), so the apiserver rejects a same-named
# partner unless another namespace is named; the models also know the namespace and reject
# a partner that names this agent's own namespace explicitly.
_NOT_OWN_PARTNER = Invariant(
    cel="!has(self.spec.partners) || "
    "self.spec.partners.all(p, p.name != self.metadata.name || has(p.__namespace__))",
    message="an agent cannot be its own partner",
    field_path=".spec.partners",
)


class AgentResource(_Resource):
    """An AgentSpec resource."""

    kind: Literal["AgentSpec"]
    spec: AgentSpec
    status: AgentSpecStatus | None = None

    @model_validator(mode="after")
    def _check(self) -> AgentResource:
        own_ns = self.metadata.namespace
        _NOT_OWN_PARTNER.check(
            all(
                p.name != self.metadata.name or (p.namespace not in (None, own_ns))
                for p in self.spec.partners
            )
        )
        return self


class PromptTemplateResource(_Resource):
    """A PromptTemplate resource."""

    kind: Literal["PromptTemplate"]
    spec: PromptTemplateSpec
    status: PromptTemplateStatus | None = None


class McpServerResource(_Resource):
    """An McpServer resource."""

    kind: Literal["McpServer"]
    spec: McpServerSpec
    status: McpServerStatus | None = None


AnyResource = AgentResource | PromptTemplateResource | McpServerResource


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        col: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            col["description"] = self.description
        if self.priority:
            col["priority"] = self.priority
        return col


_READY = PrinterColumn(
    "Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition"
)
_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


@dataclass(frozen=True)
class Kind:
    """Everything Agentspec knows about one custom resource kind."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    resource: type[_Resource]
    spec: type[SpecModel]
    status: type[SpecModel]
    columns: tuple[PrinterColumn, ...]
    root_invariants: tuple[Invariant, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind(
            kind="AgentSpec",
            plural="agentspecs",
            short_names=("agent", "agents"),
            resource=AgentResource,
            spec=AgentSpec,
            status=AgentSpecStatus,
            root_invariants=(_NOT_OWN_PARTNER,),
            columns=(
                _READY,
                PrinterColumn("Model", ".spec.model.model", description="Chat model"),
                PrinterColumn(
                    "Prompt", ".status.promptVersion", description="Serving prompt version(s)"
                ),
                PrinterColumn("Endpoint", ".status.endpoint", description="In-cluster URL"),
                PrinterColumn(
                    "Replicas",
                    ".status.readyReplicas",
                    type="integer",
                    description="Ready replicas",
                ),
                _AGE,
                PrinterColumn(
                    "Revision",
                    ".status.configRevision",
                    description="Loaded config hash",
                    priority=1,
                ),
            ),
        ),
        Kind(
            kind="PromptTemplate",
            plural="prompttemplates",
            short_names=("prompt", "prompts", "pt"),
            resource=PromptTemplateResource,
            spec=PromptTemplateSpec,
            status=PromptTemplateStatus,
            columns=(
                PrinterColumn("Stable", ".spec.release.stable", description="Stable version"),
                PrinterColumn(
                    "Canary", ".spec.release.canary.version", description="Canary version"
                ),
                PrinterColumn(
                    "Weight",
                    ".spec.release.canary.weight",
                    type="integer",
                    description="Canary percentage",
                ),
                _READY,
                _AGE,
            ),
        ),
        Kind(
            kind="McpServer",
            plural="mcpservers",
            short_names=("mcp",),
            resource=McpServerResource,
            spec=McpServerSpec,
            status=McpServerStatus,
            columns=(
                PrinterColumn("URL", ".spec.url"),
                PrinterColumn("Transport", ".spec.transport"),
                _READY,
                PrinterColumn("Tools", ".status.toolCount", type="integer"),
                _AGE,
            ),
        ),
    )
}


class SpecError(ValueError):
    """A document that is not a valid Agentspec resource; ``str()`` names every field."""

    def __init__(self, kind: str, name: str, problems: list[Problem]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        super().__init__(f"{kind}/{name}: " + "; ".join(map(str, problems)))


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tagged-")) or "[" in part:
            continue  # pydantic's names for validator steps, not fields
        else:
            out += f".{part}" if out else part
    return out


_INVARIANT_MSG = re.compile(r"^(?P<path>[A-Za-z_][\w.\[\]-]*): (?P<msg>.+)$", re.S)


def describe_errors(err: ValidationError) -> list[Problem]:
    """One problem per error, its field the path (``spec.release.stable``)."""
    lines: list[Problem] = []
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        path = _field_path(e["loc"])
        nested = _INVARIANT_MSG.match(msg) if e["type"] == "value_error" else None
        if nested:  # an Invariant names its field relative to the model it sits on
            path = ".".join(p for p in (path, nested["path"]) if p)
            msg = nested["msg"]
        lines.append(Problem("InvalidSpec", path, msg))
    return lines


def parse_resource(doc: dict[str, Any]) -> AnyResource:
    """Validate one document (as loaded from YAML) into its resource model.

    Raises :class:`SpecError` naming the offending fields.
    """
    kind = doc.get("kind")
    name = str((doc.get("metadata") or {}).get("name", "?"))
    if doc.get("apiVersion") != API_VERSION:
        raise SpecError(
            str(kind), name, [Problem("InvalidSpec", "apiVersion", f"must be {API_VERSION}")]
        )
    info = KINDS.get(str(kind))
    if info is None:
        raise SpecError(
            str(kind), name, [Problem("InvalidSpec", "kind", f"must be one of {', '.join(KINDS)}")]
        )
    try:
        resource = info.resource.model_validate(doc, by_alias=True)
    except ValidationError as e:
        raise SpecError(info.kind, name, describe_errors(e)) from e
    assert isinstance(resource, AgentResource | PromptTemplateResource | McpServerResource)
    return resource
