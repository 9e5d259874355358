"""A problem with a spec is a value: why (a condition reason), where (the field), what (text).

Created where the problem is found — the schema (:class:`~.resources.SpecError`), the
resolver (:class:`~.resolved.ResolutionError`), the fail-closed check
(:func:`~.resolved.unsupported_fields`), the operator's checks — and carried as is to the
``Stalled`` condition (its ``reason``), Events and CLI output (``str()``). Nobody decides a
reason by reading a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Problem", "Reason"]

Reason = Literal[
    "InvalidSpec",
    "ReferenceNotFound",
    "InvalidReference",
    "PartnerNotAccepted",
    "SecretNotAllowed",
    "Unsupported",
    "AutoscalerUnavailable",
]


@dataclass(frozen=True)
class Problem:
    reason: Reason
    """A CamelCase condition reason, stable for automation (Argo CD, alerts)."""
    field: str
    """The field at fault, ``spec.promptRef.name``; empty when no single field is."""
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message
