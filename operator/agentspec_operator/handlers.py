"""kopf wiring: indexes and watch-event handlers, registered on a private registry.

Only level-style kopf features are used — ``@kopf.index`` and ``@kopf.on.event`` — so kopf
never writes to user resources: no finalizers, no ``last-handled-configuration`` annotation,
no ``status.kopf`` (Argo CD sees no drift). Timers live in the controller for the same reason
(kopf timers would add a finalizer). Children are watched with a server-side label selector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import kopf

from agentspec_runtime.spec import GROUP, VERSION

from . import world as w
from .controller import Controller
from .render_meta import MANAGED_BY

Handler = Callable[..., Any]
Decorator = Callable[[Handler], Handler]
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# Children whose drift is corrected at once; the rest are re-asserted by the resync.
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "services", "Service"),
)


def _selector(group: str, version: str, plural: str) -> tuple[str, str] | tuple[str, str, str]:
    # kopf spells the core group as a bare version: ("v1", "configmaps").
    return (group, version, plural) if group else (version, plural)


def _key(namespace: str | None, name: str | None) -> w.Key:
    return (namespace or "", name or "")


def build_registry(controller_ref: list[Controller]) -> kopf.OperatorRegistry:
    """Handlers for a controller created at start-up (``controller_ref[0]``)."""
    registry = kopf.OperatorRegistry()

    def ctl() -> Controller:
        return controller_ref[0]

    def on(plural: str, *, group: str = GROUP, version: str = VERSION, **kw: Any) -> Decorator:
        decorator = kopf.on.event(*_selector(group, version, plural), registry=registry, **kw)
        return cast(Decorator, decorator)

    def index(
        plural: str, ident: str, *, group: str = GROUP, version: str = VERSION, **kw: Any
    ) -> Decorator:
        decorator = kopf.index(
            *_selector(group, version, plural), id=ident, registry=registry, **kw
        )
        return cast(Decorator, decorator)

    # --- indexes (kept current by kopf before any handler runs) ------------------------

    @index("agentspecs", w.AGENTS)
    def agents(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
        return w.index_body(namespace=namespace, name=name, body=body)

    @index("prompttemplates", w.PROMPTS)
    def prompts(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
        return w.index_body(namespace=namespace, name=name, body=body)

    @index("mcpservers", w.MCP_SERVERS)
    def mcp_servers(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
        return w.index_body(namespace=namespace, name=name, body=body)

    @index("agentspecs", w.PROMPT_USERS)
    def prompt_users(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> Any:
        return w.index_prompt_users(namespace=namespace, name=name, spec=spec)

    @index("agentspecs", w.MCP_USERS)
    def mcp_users(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> Any:
        return w.index_mcp_users(namespace=namespace, name=name, spec=spec)

    @index("agentspecs", w.PARTNER_USERS)
    def partner_users(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> Any:
        return w.index_partner_users(namespace=namespace, name=name, spec=spec)

    @index("deployments", w.DEPLOYMENTS, group="apps", version="v1", labels=MANAGED)
    def deployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
        return w.index_body(namespace=namespace, name=name, body=body)

    @index("configmaps", w.CONFIG_MAPS, group="", version="v1", labels=MANAGED)
    def config_maps(namespace: str, name: str, meta: kopf.Meta, **_: Any) -> Any:
        return w.index_config_map(namespace=namespace, name=name, meta=meta)

    # --- events → keys -----------------------------------------------------------------

    @on("agentspecs")
    def agent_event(type: str | None, namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
        ctl().on_agent(_key(namespace, name), w.body_of(body), deleted=type == "DELETED")

    @on("prompttemplates")
    def prompt_event(
        type: str | None, namespace: str, name: str, body: kopf.Body, **_: Any
    ) -> None:
        ctl().on_prompt(_key(namespace, name), w.body_of(body), deleted=type == "DELETED")

    @on("mcpservers")
    def mcp_event(type: str | None, namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
        ctl().on_mcp_server(_key(namespace, name), w.body_of(body), deleted=type == "DELETED")

    for group, version, plural, kind in WATCHED_CHILDREN:

        def child_event(type: str | None, body: kopf.Body, _kind: str = kind, **_: Any) -> None:
            ctl().on_child(_kind, w.body_of(body), deleted=type == "DELETED")

        on(plural, group=group, version=version, labels=MANAGED, id=f"{plural}-drift")(child_event)

    return registry


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """No diff base: with only level handlers kopf never diffs, yet its default storage
    deep-copies every watched body (Deployments included) on every event — the largest CPU
    cost of an operator watching thousands of objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings for a level-based, write-nothing-to-users operator."""
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    settings.peering.standalone = True
    settings.posting.enabled = False  # our own Events are precise; kopf's would be noise
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    for group, version, plural, _ in WATCHED_CHILDREN:
        settings.watching.label_selectors[_selector(group, version, plural)] = MANAGED_SELECTOR
