"""Prompt selection (stable/canary, sticky per conversation) and rendering."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from agentspec_runtime.spec.prompt import PLACEHOLDER
from agentspec_runtime.spec.resolved import ResolvedPrompt, ResolvedPromptVersion

from .errors import MissingVariableError, VariableNotSettableError


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    text: str
    version: str
    variant: str
    """``stable`` or ``canary``."""


def bucket(context_id: str) -> int:
    """A stable 0-99 bucket for a conversation: the same id always gets the same variant."""
    digest = hashlib.blake2b(context_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


class PromptSelector:
    """Chooses and renders the system prompt for one request; immutable per snapshot."""

    def __init__(self, prompt: ResolvedPrompt) -> None:
        self._prompt = prompt
        self._versions = {v.version: v for v in prompt.versions}
        self._stable = self._versions[prompt.stable]
        canary = prompt.canary
        self._canary = self._versions[canary.version] if canary and canary.weight > 0 else None
        self._weight = canary.weight if canary else 0

    @property
    def versions(self) -> dict[str, int]:
        """Serving versions and their traffic share in percent."""
        if self._canary is None:
            return {self._stable.version: 100}
        return {self._stable.version: 100 - self._weight, self._canary.version: self._weight}

    def choose(self, context_id: str) -> tuple[ResolvedPromptVersion, str]:
        if self._canary is not None and bucket(context_id) < self._weight:
            return self._canary, "canary"
        return self._stable, "stable"

    def render(self, *, context_id: str, variables: Mapping[str, str]) -> RenderedPrompt:
        """Render the chosen version. A request may set only the variables the version
        declares ``callerSettable`` (its value wins over the spec's); any other it names is
        refused, before the model is called."""
        version, variant = self.choose(context_id)
        settable = {v.name for v in version.variables if v.caller_settable}
        refused = sorted(set(variables) - settable)
        if refused:
            raise VariableNotSettableError(
                "prompt variable "
                + ", ".join(repr(r) for r in refused)
                + f" cannot be set by a request: prompt version {version.version!r} does not "
                "declare it callerSettable"
            )
        values: dict[str, str] = {}
        for declared in version.variables:
            value = variables.get(declared.name, self._prompt.variables.get(declared.name))
            if value is None:
                value = declared.default
            if value is None:
                raise MissingVariableError(
                    f"prompt variable {declared.name!r} is required by prompt version "
                    f"{version.version!r} and has no value: pass it in the request's variables"
                )
            values[declared.name] = value
        text = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), version.template)
        return RenderedPrompt(text=text, version=version.version, variant=variant)
