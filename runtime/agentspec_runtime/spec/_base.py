"""Shared building blocks of the spec models: base config, invariants, common types.

An :class:`Invariant` is one rule stated once and enforced twice: as a CEL
``x-kubernetes-validations`` entry in the generated CRD (so ``kubectl apply`` rejects a
bad spec) and by the pydantic model (so ``agentspec validate``, local mode and the
operator reject the same spec with the same message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "agentspec.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds keep CEL rule costs estimable by the apiserver and stop absurd documents early.
MAX_NAME_LEN = 253
MAX_SHORT_LEN = 63
MAX_TEXT_LEN = 4096
MAX_LIST = 64

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HTTP_URL = r"^https?://[^\s/$.?#][^\s]*$"

ResourceName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LEN, pattern=DNS_SUBDOMAIN)
]
NamespaceName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SHORT_LEN, pattern=DNS_LABEL)
]
HttpUrl = Annotated[str, StringConstraints(max_length=2048, pattern=HTTP_URL)]
VariableName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
"""A prompt template variable: an identifier."""
ShortText = Annotated[str, StringConstraints(max_length=MAX_SHORT_LEN)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LEN)]


@dataclass(frozen=True)
class Invariant:
    """A rule the schema alone cannot state, in CEL for the apiserver and Python for us.

    ``field_path`` is relative to the object the rule sits on (``.release.stable``); it
    makes the apiserver report the offending field, and prefixes our own message.
    """

    cel: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry

    def check(self, holds: bool) -> None:
        """Raise ``ValueError`` naming the field when the rule does not hold."""
        if holds:
            return
        where = (self.field_path or "").lstrip(".")
        raise ValueError(f"{where}: {self.message}" if where else self.message)


def has_userinfo(url: str | None) -> bool:
    """``scheme://user:password@host/...``: the authority carries credentials."""
    if url is None or "://" not in url:
        return False
    return "@" in url.split("://", 1)[1].split("/", 1)[0]


def no_url_credentials(field: str, *, instead: str) -> Invariant:
    """The rule every URL field obeys: no user info (credentials belong in Secrets)."""
    return Invariant(
        cel=f"!has(self.{field}) || !self.{field}.matches('^[a-zA-Z0-9+.-]+://[^/]*@')",
        message=f"credentials in {field} are not allowed: {instead}",
        field_path=f".{field}",
    )


def invariants(*rules: Invariant, **extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (and any other ``x-kubernetes-*`` keys)."""
    return {"x-kubernetes-validations": [r.to_schema() for r in rules], **extra}


def list_map(*keys: str) -> dict[str, Any]:
    """Mark a list as a map keyed by ``keys``: unique keys, merged by key under SSA."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def unique_keys(items: list[Any], key: str, *, field: str) -> None:
    """Python side of ``list_map``: reject a repeated key, naming the list and the key."""
    seen: set[Any] = set()
    for i, item in enumerate(items):
        value = getattr(item, key) if not isinstance(item, str) else item
        if value in seen:
            raise ValueError(f"{field}[{i}]: duplicate {key} {value!r}")
        seen.add(value)


class SpecModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected, immutable.

    Field descriptions come from the attribute docstrings and end up in the CRD, so
    ``kubectl explain`` shows them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        str_strip_whitespace=False,
    )


class SecretKeySelector(SpecModel):
    """A key of a Secret in the same namespace. Only the reference is ever stored."""

    name: ResourceName
    """Name of the Secret."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LEN)]
    """Key within the Secret."""


class ValueFrom(SpecModel):
    """Where a value comes from when it must not be written literally."""

    secret_key_ref: SecretKeySelector
    """Take the value from this Secret key."""


# Header names whose values are credentials: they may only come from a Secret.
SECRET_HEADER_NAMES = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "cookie",
)
_SECRET_NAMES_CEL = "[" + ", ".join(f"'{n}'" for n in SECRET_HEADER_NAMES) + "]"

_ONE_VALUE = Invariant(
    cel="has(self.value) != has(self.valueFrom)",
    message="set exactly one of value or valueFrom",
)
_NO_LITERAL_SECRET = Invariant(
    cel=f"!has(self.value) || !(self.name.lowerAscii() in {_SECRET_NAMES_CEL})",
    message="credentials must come from a Secret: use valueFrom.secretKeyRef, not value",
    field_path=".value",
)


class NamedValue(SpecModel):
    """A header or query parameter value: a literal for non-secrets, else a Secret key."""

    model_config = ConfigDict(json_schema_extra=invariants(_ONE_VALUE, _NO_LITERAL_SECRET))

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Header or parameter name."""
    value: Text | None = None
    """Literal value. Not allowed for credential headers such as Authorization."""
    value_from: ValueFrom | None = None
    """Take the value from a Secret instead."""

    @model_validator(mode="after")
    def _check(self) -> NamedValue:
        _ONE_VALUE.check((self.value is None) != (self.value_from is None))
        _NO_LITERAL_SECRET.check(self.value is None or self.name.lower() not in SECRET_HEADER_NAMES)
        return self


NamedValues = Annotated[
    list[NamedValue], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))
]


class Condition(SpecModel):
    """A status condition, shaped like ``metav1.Condition``."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316)]
    """Condition type: Ready, Reconciling or Stalled."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    """One-word CamelCase reason for the last transition."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """Human-readable detail; names the missing or invalid reference when Stalled."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""


Conditions = Annotated[list[Condition], Field(max_length=16, json_schema_extra=list_map("type"))]
