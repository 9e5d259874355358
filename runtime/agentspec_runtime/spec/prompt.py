"""The PromptTemplate resource: one prompt key, its immutable versions, and its release."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ._base import (
    Conditions,
    Invariant,
    ShortText,
    SpecModel,
    Text,
    VariableName,
    invariants,
    list_map,
    unique_keys,
)

VersionName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
MAX_VERSIONS = 50
MAX_TEMPLATE_LEN = 65536

# {{ name }} placeholders; the renderer in the engine uses the same pattern.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptVariable(SpecModel):
    """A variable the template uses as {{ name }}."""

    name: VariableName
    """Variable name."""
    default: Text | None = None
    """Value used when none is given. No default: the variable is required."""
    description: Text = ""
    """What the variable means."""
    caller_settable: bool = False
    """A request may set it (the OpenAI API's ``variables``, A2A message metadata
    ``variables``). Off by default: only the AgentSpec (``promptRef.variables``) and the
    default decide the others, so a caller cannot rewrite the agent's instructions."""


_IMMUTABLE = Invariant(
    cel="self.template == oldSelf.template",
    message="a published version is immutable: add a new version instead of editing it",
    field_path=".template",
)


class PromptVersion(SpecModel):
    """One immutable version of the prompt."""

    model_config = ConfigDict(json_schema_extra=invariants(_IMMUTABLE))

    version: VersionName
    """Version name, unique within the template (for example v1, 2024-06-01)."""
    template: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEMPLATE_LEN)]
    """The prompt text; {{ name }} inserts a variable."""
    variables: Annotated[
        list[PromptVariable], Field(max_length=64, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """Variables the template declares."""
    description: Text = ""
    """What changed in this version."""

    @model_validator(mode="after")
    def _check(self) -> PromptVersion:
        unique_keys(self.variables, "name", field="variables")
        declared = {v.name for v in self.variables}
        for used in PLACEHOLDER.findall(self.template):
            if used not in declared:
                raise ValueError(
                    f"template: uses {{{{ {used} }}}} but variables does not declare {used!r}"
                )
        return self


class CanaryRelease(SpecModel):
    """A version served to a share of conversations, sticky per conversation."""

    version: VersionName
    """Canary version; must be one of spec.versions."""
    weight: Annotated[int, Field(ge=0, le=100)]
    """Percentage of conversations (0-100) that get the canary."""


_CANARY_NOT_STABLE = Invariant(
    cel="!has(self.canary) || self.canary.version != self.stable",
    message="the canary version must differ from the stable version",
    field_path=".canary.version",
)


class Release(SpecModel):
    """Which version serves traffic. Rollback: point stable back."""

    model_config = ConfigDict(json_schema_extra=invariants(_CANARY_NOT_STABLE))

    stable: VersionName
    """Version serving every conversation not picked for the canary."""
    canary: CanaryRelease | None = None
    """Optional gray release of another version."""

    @model_validator(mode="after")
    def _check(self) -> Release:
        _CANARY_NOT_STABLE.check(self.canary is None or self.canary.version != self.stable)
        return self


_STABLE_EXISTS = Invariant(
    cel="self.versions.exists(v, v.version == self.release.stable)",
    message="release.stable must name one of versions",
    field_path=".release.stable",
)
_CANARY_EXISTS = Invariant(
    cel="!has(self.release.canary) || "
    "self.versions.exists(v, v.version == self.release.canary.version)",
    message="release.canary.version must name one of versions",
    field_path=".release.canary.version",
)
_LABELS_EXIST = Invariant(
    cel="!has(self.labels) || "
    "self.labels.all(k, self.versions.exists(v, v.version == self.labels[k]))",
    message="every label must point at one of versions",
    field_path=".labels",
)


class PromptTemplateSpec(SpecModel):
    """A prompt under version control, released stable/canary to the agents that use it."""

    model_config = ConfigDict(
        json_schema_extra=invariants(_STABLE_EXISTS, _CANARY_EXISTS, _LABELS_EXIST)
    )

    prompt_key: Annotated[str, StringConstraints(max_length=253)] = ""
    """Logical prompt key (as in a prompt center). Empty: the resource name."""
    description: Text = ""
    """What the prompt is for."""
    versions: Annotated[
        list[PromptVersion],
        Field(min_length=1, max_length=MAX_VERSIONS, json_schema_extra=list_map("version")),
    ]
    """Immutable versions; add one to change the prompt."""
    release: Release
    """Which versions serve traffic."""
    labels: dict[ShortText, VersionName] = Field(default_factory=dict, max_length=32)
    """Named pointers to versions (for example prod) that an AgentSpec may pin."""

    @model_validator(mode="after")
    def _check(self) -> PromptTemplateSpec:
        unique_keys(self.versions, "version", field="versions")
        names = {v.version for v in self.versions}
        _STABLE_EXISTS.check(self.release.stable in names)
        _CANARY_EXISTS.check(self.release.canary is None or self.release.canary.version in names)
        _LABELS_EXIST.check(all(v in names for v in self.labels.values()))
        return self

    def version(self, name: str) -> PromptVersion | None:
        return next((v for v in self.versions if v.version == name), None)


class PromptTemplateStatus(SpecModel):
    """Observed state of a PromptTemplate."""

    conditions: Conditions = Field(default_factory=list)
    """Ready when the release is consistent."""
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    stable_version: str | None = None
    """Version serving stable traffic."""
    canary_version: str | None = None
    """Version in canary, if any."""
    canary_weight: int | None = None
    """Canary percentage, if any."""
    used_by: Annotated[list[str], Field(max_length=10000)] = Field(default_factory=list)
    """AgentSpecs using this template."""
