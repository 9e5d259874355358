"""The operator's read model of the cluster: kopf indexes and typed lookups over them.

kopf keeps every index current from its watch streams before any handler runs, so a
reconcile reads the AgentSpec, the PromptTemplates/McpServers/partners it references and its
Deployment from memory — no GETs. The reverse indexes (who uses this PromptTemplate /
McpServer / partner) are what turns an edit of a shared resource into reconciles of exactly
its dependants.

Index functions are pure (body in, ``{key: value}`` out); :class:`World` wraps the live
indexes kopf hands to the startup handler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from agentspec_runtime.spec import (
    AgentResource,
    McpServerResource,
    PromptTemplateResource,
    SpecError,
    parse_resource,
)

Json = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name)"""

# Index ids: kopf passes each index to handlers as a keyword argument of this name.
AGENTS = "agentspec_bodies"
PROMPTS = "prompttemplate_bodies"
MCP_SERVERS = "mcpserver_bodies"
PROMPT_USERS = "prompttemplate_users"
MCP_USERS = "mcpserver_users"
PARTNER_USERS = "partner_users"
DEPLOYMENTS = "deployment_bodies"
CONFIG_MAPS = "configmap_meta"


class Store(Protocol):
    def __iter__(self) -> Any: ...


class IndexView(Protocol):
    """What the operator needs of a kopf ``Index``."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def __iter__(self) -> Any: ...


def body_of(body: Mapping[str, Any]) -> Json:
    """The raw parts of a kopf body worth keeping (the nested values are plain dicts)."""
    return {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in body}


# --- index functions (pure) ----------------------------------------------------------


def index_body(*, namespace: str, name: str, body: Mapping[str, Any]) -> dict[Key, Json]:
    return {(namespace, name): body_of(body)}


def index_prompt_users(*, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[Key, str]:
    ref = spec.get("promptRef") or {}
    return {(namespace, ref["name"]): name} if ref.get("name") else {}


def index_mcp_users(*, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[Key, str]:
    return {(namespace, s["name"]): name for s in spec.get("mcpServers") or [] if "name" in s}


def index_partner_users(*, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[Key, Key]:
    return {
        (p.get("namespace") or namespace, p["name"]): (namespace, name)
        for p in spec.get("partners") or []
        if "name" in p
    }


def index_config_map(*, namespace: str, name: str, meta: Mapping[str, Any]) -> dict[Key, Json]:
    return {(namespace, name): {"annotations": dict(meta.get("annotations") or {})}}


# --- typed view ----------------------------------------------------------------------


def _values(index: IndexView, key: Key) -> list[Any]:
    store = index.get(key)
    return list(store) if store is not None else []


def _first(index: IndexView, key: Key) -> Any:
    values = _values(index, key)
    return values[0] if values else None


def parse(body: Json) -> AgentResource | PromptTemplateResource | McpServerResource:
    """Validate a body (status left out: the operator writes it and the models need not)."""
    doc: Json = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    return parse_resource(doc)


class World:
    """Typed lookups over the live indexes, with parsed models cached per resourceVersion."""

    def __init__(self, indices: Mapping[str, IndexView]) -> None:
        self._ix = indices
        self._parsed: dict[tuple[str, str, str], tuple[str, Any]] = {}

    def body(self, index: str, key: Key) -> Json | None:
        found: Json | None = _first(self._ix[index], key)
        return found

    def _model(self, index: str, key: Key) -> Any:
        body = self.body(index, key)
        if body is None:
            return None
        rv = str(body.get("metadata", {}).get("resourceVersion", ""))
        cached = self._parsed.get((index, *key))
        if cached is not None and cached[0] == rv:
            return cached[1]
        try:
            model: Any = parse(body)
        except SpecError as e:
            model = e
        self._parsed[(index, *key)] = (rv, model)
        return model

    def agent(self, key: Key) -> AgentResource | SpecError | None:
        found: AgentResource | SpecError | None = self._model(AGENTS, key)
        return found

    def prompt(self, key: Key) -> PromptTemplateResource | None:
        found = self._model(PROMPTS, key)
        return found if isinstance(found, PromptTemplateResource) else None

    def mcp_server(self, key: Key) -> McpServerResource | None:
        found = self._model(MCP_SERVERS, key)
        return found if isinstance(found, McpServerResource) else None

    def partner(self, key: Key) -> AgentResource | None:
        found = self._model(AGENTS, key)
        return found if isinstance(found, AgentResource) else None

    def forget(self, index: str, key: Key) -> None:
        self._parsed.pop((index, *key), None)

    def prompt_users(self, key: Key) -> list[str]:
        return sorted(set(_values(self._ix[PROMPT_USERS], key)))

    def mcp_users(self, key: Key) -> list[str]:
        return sorted(set(_values(self._ix[MCP_USERS], key)))

    def callers(self, key: Key) -> list[Key]:
        """Agents that list ``key`` as a partner."""
        return sorted({tuple(v) for v in _values(self._ix[PARTNER_USERS], key)})

    def deployment(self, key: Key) -> Json | None:
        return self.body(DEPLOYMENTS, key)

    def config_map_annotations(self, key: Key) -> dict[str, str]:
        found = self.body(CONFIG_MAPS, key)
        return dict(found["annotations"]) if found else {}

    def keys(self, index: str) -> Iterable[Key]:
        return list(self._ix[index])
