"""Spec documents as one unit: parsed once, indexed by namespace and name, resolved per agent.

Everything that starts from documents a user wrote — the file config source (local mode and
tests), ``agentspec up``, ``agentspec validate`` and ``agentspec render`` — builds a
:class:`Bundle`: every agentspec.io document is parsed once and indexed by
``(namespace, name)`` (a document without a namespace belongs to the bundle's namespace, as
with ``kubectl apply -n``), and an agent is resolved against the resources of *its*
namespace exactly as the operator resolves it (:func:`~.resolved.resolve_agent`). The
operator's kopf indexes are the cluster-side counterpart of this class.

Pure data, like the rest of ``spec``: no files, no YAML parsing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .resolved import AgentConfig, ResolutionError, resolve_agent, unsupported_fields
from .resources import (
    AgentResource,
    AnyResource,
    McpServerResource,
    PromptTemplateResource,
    SpecError,
    parse_resource,
)

__all__ = ["Bundle", "Key"]

Key = tuple[str, str]
"""(namespace, name)"""


def is_spec_document(body: Mapping[str, Any]) -> bool:
    """An agentspec.io document (Secrets and other manifests may sit beside the specs)."""
    return str(body.get("apiVersion", "")).startswith("agentspec.io/")


@dataclass
class Bundle:
    namespace: str = "default"
    """Where documents without ``metadata.namespace`` belong."""
    agents: dict[Key, AgentResource] = field(default_factory=dict)
    prompts: dict[Key, PromptTemplateResource] = field(default_factory=dict)
    mcp_servers: dict[Key, McpServerResource] = field(default_factory=dict)
    where: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(kind, namespace, name) → where the document came from, for problem messages."""

    @classmethod
    def of(
        cls, documents: Iterable[tuple[Mapping[str, Any], str]], *, namespace: str = "default"
    ) -> tuple[Bundle, list[str]]:
        """A bundle of ``(body, where)`` documents and the schema problems found, each
        prefixed with its ``where``; documents that are not agentspec.io are skipped."""
        bundle = cls(namespace=namespace)
        problems: list[str] = []
        for body, where in documents:
            problems += bundle.add(body, where=where)
        return bundle, problems

    def add(self, body: Mapping[str, Any], *, where: str) -> list[str]:
        if not is_spec_document(body):
            return []
        try:
            resource = parse_resource(dict(body))
        except SpecError as e:
            return [f"{where}: {p}" for p in e.problems]
        key = (resource.metadata.namespace or self.namespace, resource.metadata.name)
        self._index(resource).__setitem__(key, resource)
        self.where[(resource.kind, *key)] = where
        return []

    def _index(self, resource: AnyResource) -> dict[Key, Any]:
        if isinstance(resource, AgentResource):
            return self.agents
        if isinstance(resource, PromptTemplateResource):
            return self.prompts
        return self.mcp_servers

    def agent_key(self, name: str | None) -> Key:
        """The key of the agent named ``name`` (any namespace), or of the only agent when
        ``name`` is None; raises ``LookupError`` saying what is there."""
        if name is None:
            if len(self.agents) != 1:
                names = ", ".join(n for _, n in sorted(self.agents)) or "none"
                raise LookupError(
                    f"the documents hold {len(self.agents)} AgentSpecs ({names}): "
                    "name the one to run"
                )
            return next(iter(self.agents))
        found = sorted(k for k in self.agents if k[1] == name)
        if not found:
            raise LookupError(f"no AgentSpec named {name!r}")
        return found[0]

    def resolve(self, key: Key, *, partner_url: str | None = None) -> AgentConfig:
        """The agent's config, resolved against its own namespace's resources; raises
        ``ResolutionError`` naming every dangling reference."""
        namespace, _ = key
        return resolve_agent(
            self.agents[key],
            namespace=namespace,
            prompts={n: r for (ns, n), r in self.prompts.items() if ns == namespace},
            mcp_servers={n: r for (ns, n), r in self.mcp_servers.items() if ns == namespace},
            partners=self.agents,
            partner_url=partner_url,
        )

    def callers(self, key: Key) -> list[Key]:
        """Agents that list ``key`` as a partner."""
        return sorted(
            (ns, agent.metadata.name)
            for (ns, _), agent in self.agents.items()
            if any(p.name == key[1] and (p.namespace or ns) == key[0] for p in agent.spec.partners)
        )

    def problems(self) -> list[str]:
        """Every reference no document satisfies and every field the engine cannot honour,
        as the operator would report them, each prefixed with where its AgentSpec came from."""
        problems: list[str] = []
        for key in self.agents:
            where = self.where[("AgentSpec", *key)]
            try:
                config = self.resolve(key)
            except ResolutionError as e:
                problems += [f"{where}: {p}" for p in e.problems]
                continue
            problems += [f"{where}: {p}" for p in unsupported_fields(config)]
        return problems
