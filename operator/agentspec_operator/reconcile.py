"""Make it so: one idempotent reconcile per AgentSpec, plus PromptTemplate status.

:meth:`Reconciler.reconcile_agent` reads the world (indexes), resolves the spec, renders every
child, applies what differs with server-side apply, prunes optional children no longer
wanted, and writes status computed from the world. Every cause ends here; nothing here
depends on which cause it was.

Applies are skipped when the rendered manifest is unchanged *and* the child has not been
touched by anybody since our last apply (tracked by resourceVersion from the watch), so a
steady state costs no API calls; a periodic resync clears that memory to re-assert children
of kinds that are not watched.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agentspec_runtime.spec import AgentResource, SpecError
from agentspec_runtime.spec.agent import AutoscalingSpec
from agentspec_runtime.spec.problems import Problem
from agentspec_runtime.spec.resolved import (
    REVISION_ANNOTATION,
    AgentConfig,
    ResolutionError,
    config_map_name,
    resolve_agent,
    unsupported_fields,
)

from .errors import ConflictError, OperatorError, PermanentError
from .kube import KEDA_CRD, Kube, SecretInfo
from .render import OPTIONAL_KINDS, optional_kinds_wanted, render_children
from .render_workload import PROMPT_VERSION_ANNOTATION, prompt_version, secret_names
from .settings import FIELD_MANAGER, REPLICAS_HANDOVER_MANAGER, OperatorSettings
from .status import (
    SCALING_ACTIVE,
    agent_status,
    prompt_template_status,
    same_status,
    stalled_reason,
)
from .world import AGENTS, PROMPTS, Json, Key, World

log = logging.getLogger(__name__)

SECRET_CACHE_SECONDS = 30.0
SCALING_RECHECK_SECONDS = 15.0
"""How soon an autoscaled agent whose HPA cannot act (yet) is looked at again."""
ALLOWED_AGENTS_ANNOTATION = "agentspec.io/allowed-agents"
"""On a Secret: the agents (comma-separated names, or ``*``) whose pods may be given it."""


def allows(annotations: dict[str, str], agent: str) -> bool:
    names = {n.strip() for n in annotations.get(ALLOWED_AGENTS_ANNOTATION, "").split(",")}
    return "*" in names or agent in names


ChildKey = tuple[str, str, str]
"""(kind, namespace, name)"""


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(manifest: Json) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _newer_spec(applied: Json | None, watched: Json | None) -> Json | None:
    """The copy to compute status from: the one our apply returned while the watch has not
    yet shown that spec (a lower ``metadata.generation``), else the watched one, whose status
    is the latest the Deployment controller wrote. (resourceVersions are opaque: never
    ordered.)"""
    if applied is None or watched is None:
        return watched or applied

    def generation(x: Json) -> int:
        return int((x.get("metadata") or {}).get("generation") or 0)

    return applied if generation(applied) > generation(watched) else watched


class Reconciler:
    def __init__(
        self,
        *,
        kube: Kube,
        world: World,
        settings: OperatorSettings,
        now: Callable[[], str] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.world = world
        self.settings = settings
        self._now = now
        self._monotonic = monotonic
        self._applied: dict[ChildKey, tuple[str, str]] = {}
        """child → (manifest digest, resourceVersion our apply produced)."""
        self._deployments: dict[Key, Json] = {}
        """Deployments as our applies returned them (newer than the watch, for a moment)."""
        self._in_flight: set[ChildKey] = set()
        self.optional_present: set[ChildKey] = set()
        """Optional children (PDB, HPA, ScaledObject) known to exist; seeded by a LIST."""
        self._stalled_event: dict[Key, str] = {}
        self._advised: dict[Key, dict[str, str]] = {}  # the *NotShared warnings last posted
        self._secrets_ok: dict[tuple[str, str, str, str | None], float] = {}
        """(namespace, agent, Secret, key) -> when it last passed the checks."""
        self.reconciles = 0

    # --- drift bookkeeping -------------------------------------------------------------

    def child_changed(self, child: ChildKey, resource_version: str | None) -> bool:
        """A watch event for a child; True when it was not our own write (drift or status)."""
        if resource_version is not None and child in self._in_flight:
            # Most likely the echo of the apply still awaiting its response; were it someone
            # else's edit, the reconcile running now re-applies over it anyway.
            return False
        known = self._applied.get(child)
        if known is not None and resource_version is not None and known[1] == resource_version:
            return False
        self._applied.pop(child, None)
        return True

    def forget_agent(self, key: Key) -> None:
        ns, name = key
        for child in [c for c in self._applied if c[1] == ns and c[2] in (name, f"{name}-config")]:
            del self._applied[child]
        self._deployments.pop(key, None)
        self._stalled_event.pop(key, None)
        self._advised.pop(key, None)
        self.world.forget(AGENTS, key)

    def resync(self) -> None:
        """Forget what was applied: the next reconcile of each agent re-asserts everything."""
        self._applied.clear()

    def _fresher_deployment(self, key: Key) -> Json | None:
        return _newer_spec(self._deployments.get(key), self.world.deployment(key))

    # --- AgentSpec ---------------------------------------------------------------------

    async def reconcile_agent(self, key: Key) -> float | None:
        """Returns a delay after which the agent wants another look (Stalled), else None."""
        self.reconciles += 1
        namespace = key[0]
        body = self.world.body(AGENTS, key)
        if body is None:
            self.forget_agent(key)
            return None
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # the garbage collector removes the children via ownerReferences
        agent = self.world.agent(key)
        config: AgentConfig | None = None
        problems: list[Problem]
        if isinstance(agent, SpecError):
            problems = agent.problems
        elif agent is None:
            return None
        else:
            problems = []
            try:
                config = self._resolve(agent, namespace=namespace)
            except ResolutionError as e:
                problems = list(e.problems)
            if config is not None:
                problems = unsupported_fields(config) or [
                    *self._check_scaling(agent),
                    *await self._check_secrets(agent, config, namespace=namespace),
                ]
        if problems or config is None or not isinstance(agent, AgentResource):
            await self._report_stalled(key, body, problems)
            return self.settings.stalled_retry_seconds
        try:
            deployment = await self._apply_children(key, agent, config)
        except OperatorError as e:
            live = self.world.config_map_annotations((namespace, config_map_name(key[1])))
            await self._write_agent_status(
                key,
                body,
                problems=[],
                deployment=self._fresher_deployment(key),
                revision=live.get(REVISION_ANNOTATION),
                version=live.get(PROMPT_VERSION_ANNOTATION),
                apply_error=str(e),
                apply_error_permanent=isinstance(e, PermanentError),
            )
            raise
        await self._write_agent_status(
            key,
            body,
            problems=[],
            deployment=deployment,
            revision=config.revision(),
            version=prompt_version(config),
            scaling=(scaling := await self._scaling_condition(key, agent, body)),
        )
        if self._stalled_event.pop(key, None) is not None:
            await self.kube.post_event(
                _involved(body),
                warning=False,
                reason="Resolved",
                message="every reference resolved; config applied",
            )
        await self._advise(key, body, _sharing_advice(agent) | self._autoscaling_advice(agent))
        if scaling is not None and scaling.get("status") != "True":
            # HPAs are not watched: look again soon while the autoscaler cannot act
            return SCALING_RECHECK_SECONDS
        return None

    def _autoscaling_advice(self, agent: AgentResource) -> dict[str, str]:
        """A plain HPA with no custom metrics adapter never scales: say so, not silently."""
        scaling = agent.spec.runtime.autoscaling
        if scaling is None or scaling.provider != "hpa" or self.settings.custom_metrics_available:
            return {}
        return {
            "AutoscalerMetricsUnavailable": (
                "spec.runtime.autoscaling.provider hpa scales on the Pods metric "
                "agentspec_tokens_per_second from the custom metrics API "
                "(custom.metrics.k8s.io), which no adapter served when the operator started: "
                "the HPA cannot read it and the agent keeps its current replica count; install "
                "an adapter (prometheus-adapter's rule is in docs/autoscaling.md) and restart "
                "the operator, or use provider keda"
            )
        }

    async def _advise(self, key: Key, body: dict[str, Any], advice: dict[str, str]) -> None:
        """Post each warning once (again when its message changes); forget the ones that
        no longer apply."""
        posted = self._advised.setdefault(key, {})
        for reason, message in advice.items():
            if posted.get(reason) != message:
                posted[reason] = message
                await self.kube.post_event(
                    _involved(body), warning=True, reason=reason, message=message
                )
        for reason in set(posted) - set(advice):
            del posted[reason]

    def _resolve(self, agent: AgentResource, *, namespace: str) -> AgentConfig:
        spec = agent.spec
        prompts = {}
        if spec.prompt_ref is not None:
            found = self.world.prompt((namespace, spec.prompt_ref.name))
            if found is not None:
                prompts[spec.prompt_ref.name] = found
        servers = {}
        for ref in spec.mcp_servers:
            server = self.world.mcp_server((namespace, ref.name))
            if server is not None:
                servers[ref.name] = server
        partners = {}
        for p in spec.partners:
            pkey = (p.namespace or namespace, p.name)
            partner = self.world.partner(pkey)
            if partner is not None:
                partners[pkey] = partner
        return resolve_agent(
            agent, namespace=namespace, prompts=prompts, mcp_servers=servers, partners=partners
        )

    def _check_scaling(self, agent: AgentResource) -> list[Problem]:
        scaling = agent.spec.runtime.autoscaling
        if scaling is not None and scaling.provider == "keda" and not self.settings.keda_available:
            return [
                Problem(
                    "AutoscalerUnavailable",
                    "spec.runtime.autoscaling.provider",
                    f"keda needs the KEDA ScaledObject CRD ({KEDA_CRD}), which is not "
                    "installed; use provider hpa or install KEDA",
                )
            ]
        return []

    async def _check_secrets(
        self, agent: AgentResource, config: AgentConfig, *, namespace: str
    ) -> list[Problem]:
        """Every referenced Secret key must exist (the pods would fail on it otherwise), and
        every Secret must consent to this agent (``agentspec.io/allowed-agents``): whoever may
        write an AgentSpec must not be able to make the operator hand its pods any Secret of
        the namespace (to send as a bearer token to a URL the spec names)."""
        problems: list[Problem] = []
        # every Secret the agent's Role will grant (secret_names: the one list), and the keys
        # its config and its pods' env read
        wanted: list[tuple[str, str | None]] = [(n, None) for n in secret_names(agent, config)]
        wanted += [(r.name, r.key) for r in config.secret_refs()]
        wanted += [
            (e.secret_key_ref.name, e.secret_key_ref.key)
            for e in agent.spec.runtime.env
            if e.secret_key_ref
        ]
        now = self._monotonic()
        found: dict[str, SecretInfo | None] = {}
        name = agent.metadata.name
        # no field in these problems: one Secret may back several fields
        for secret, key in sorted(set(wanted), key=lambda w: (w[0], w[1] or "")):
            # per agent: the Secret's consent names agents, so one agent's pass is not another's
            checked = (namespace, name, secret, key)
            if self._secrets_ok.get(checked, -1e9) > now - SECRET_CACHE_SECONDS:
                continue
            if secret not in found:
                found[secret] = await self.kube.secret(namespace=namespace, name=secret)
            info = found[secret]
            needed = f" (needed for key {key!r})" if key else ""
            if info is None:
                problems.append(
                    Problem("ReferenceNotFound", "", f"Secret {secret!r} not found{needed}")
                )
            elif not allows(info.annotations, name):
                problems.append(
                    Problem(
                        "SecretNotAllowed",
                        "",
                        f"Secret {secret!r} does not allow agent {name!r}: add its name (or *) "
                        f"to the Secret's annotation {ALLOWED_AGENTS_ANNOTATION}",
                    )
                )
            elif key is not None and key not in info.keys:
                problems.append(
                    Problem("ReferenceNotFound", "", f"Secret {secret!r} has no key {key!r}")
                )
            else:
                self._secrets_ok[checked] = now
        return problems

    async def _apply_children(
        self, key: Key, agent: AgentResource, config: AgentConfig
    ) -> Json | None:
        namespace, name = key
        manifests = render_children(
            agent,
            config,
            namespace=namespace,
            callers=self.world.callers(key),
            settings=self.settings,
        )
        # The ConfigMap first: a new pod must find its config when it starts.
        await self._apply_if_changed(manifests[0])
        # Then the autoscaler no longer wanted goes, before its successor comes: KEDA's
        # admission webhook refuses a ScaledObject for a Deployment another HPA scales, and
        # an HPA left over while the operator takes the count back would fight over it.
        wanted = optional_kinds_wanted(agent)
        for kind in OPTIONAL_KINDS:
            child = (kind, namespace, name)
            if kind not in wanted and child in self.optional_present:
                await self.kube.delete(kind, namespace=namespace, name=name)
                if kind == "ScaledObject":
                    # KEDA's HPA would outlive its ScaledObject until KEDA's clean-up and
                    # the garbage collector come, scaling against the declared count or
                    # the plain HPA meanwhile: it goes now
                    await self.kube.delete(
                        "HorizontalPodAutoscaler", namespace=namespace, name=keda_hpa_name(name)
                    )
                self.optional_present.discard(child)
                self._applied.pop(child, None)
        scaling = agent.spec.runtime.autoscaling
        if scaling is not None:
            await self._hand_over_replicas(namespace, name, scaling)
        await asyncio.gather(*(self._apply_if_changed(m) for m in manifests[1:]))
        return self._fresher_deployment(key)

    async def _apply_if_changed(self, manifest: Json) -> None:
        meta = manifest["metadata"]
        child = (manifest["kind"], meta["namespace"], meta["name"])
        digest = _digest(manifest)
        known = self._applied.get(child)
        if known is not None and known[0] == digest:
            return
        self._in_flight.add(child)
        try:
            applied = await self.kube.apply(manifest)
        finally:
            self._in_flight.discard(child)
        self._applied[child] = (digest, applied.resource_version)
        if child[0] in OPTIONAL_KINDS:
            self.optional_present.add(child)
        if applied.body is not None:
            self._deployments[(child[1], child[2])] = applied.body

    async def _hand_over_replicas(
        self, namespace: str, name: str, scaling: AutoscalingSpec
    ) -> None:
        """Autoscaling turned on: leave ``spec.replicas`` to the autoscaler without a jump.

        An apply that drops a field its manager alone owns deletes the field, and the
        Deployment's default (1) would replace the count until the HPA's next sync. So while
        this operator still owns the field, the live count is first applied by a second field
        manager, at the live resourceVersion (a count changed meanwhile is a conflict and a
        fresh read, never a stale write); the field then survives our apply and is the
        autoscaler's to change. The count is kept, brought within [minReplicas, maxReplicas]:
        an HPA takes 0 replicas for "scaling disabled" and would never act.
        """
        known = self._fresher_deployment((namespace, name))
        if known is None or FIELD_MANAGER not in replicas_owners(known):
            return
        for attempt in range(3):
            live = await self.kube.deployment(namespace=namespace, name=name)
            if live is None or FIELD_MANAGER not in replicas_owners(live):
                return
            count = int(live["spec"].get("replicas", 1))
            count = min(max(count, scaling.min_replicas), scaling.max_replicas)
            try:
                await self.kube.apply(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {
                            "name": name,
                            "namespace": namespace,
                            "resourceVersion": live["metadata"]["resourceVersion"],
                        },
                        "spec": {"replicas": count},
                    },
                    field_manager=REPLICAS_HANDOVER_MANAGER,
                )
                return
            except ConflictError:
                if attempt == 2:
                    raise

    async def _report_stalled(self, key: Key, body: Json, problems: list[Problem]) -> None:
        """Stalled: status + one Warning Event per distinct message; children untouched."""
        namespace, name = key
        live = self.world.config_map_annotations((namespace, config_map_name(name)))
        await self._write_agent_status(
            key,
            body,
            problems=problems,
            deployment=self._fresher_deployment(key),
            revision=live.get(REVISION_ANNOTATION),
            version=live.get(PROMPT_VERSION_ANNOTATION),
        )
        message = "; ".join(map(str, problems))
        if self._stalled_event.get(key) != message:
            self._stalled_event[key] = message
            log.warning("AgentSpec %s/%s stalled: %s", namespace, name, message)
            await self.kube.post_event(
                _involved(body), warning=True, reason=stalled_reason(problems), message=message
            )

    async def _scaling_condition(self, key: Key, agent: AgentResource, body: Json) -> Json | None:
        """The ScalingActive condition of the HPA that scales the agent (KEDA's for provider
        keda); None without autoscaling. Read at each reconcile (the Deployment the HPA scales
        is watched) and every ``SCALING_RECHECK_SECONDS`` while it is not True. A failed read
        keeps what the status said."""
        scaling = agent.spec.runtime.autoscaling
        if scaling is None:
            return None
        namespace, name = key
        hpa = name if scaling.provider == "hpa" else keda_hpa_name(name)
        try:
            found = await self.kube.hpa_condition(
                namespace=namespace, name=hpa, kind=SCALING_ACTIVE
            )
        except OperatorError as e:  # the status is a view: it never fails the reconcile
            log.info("agent %s/%s: cannot read HPA %s: %s", namespace, name, hpa, e)
            old = (body.get("status") or {}).get("conditions") or []
            return next((dict(c) for c in old if c.get("type") == SCALING_ACTIVE), {})
        return found if found is not None else {}

    async def _write_agent_status(
        self,
        key: Key,
        body: Json,
        *,
        problems: list[Problem],
        deployment: Json | None,
        revision: str | None,
        version: str | None,
        apply_error: str | None = None,
        apply_error_permanent: bool = False,
        scaling: Json | None = None,
    ) -> None:
        namespace, name = key
        old = body.get("status") or None
        status = agent_status(
            name=name,
            namespace=namespace,
            generation=(body.get("metadata") or {}).get("generation"),
            problems=problems,
            deployment=deployment,
            live_revision=revision,
            live_prompt_version=version,
            old=old,
            now=self._now(),
            apply_error=apply_error,
            apply_error_permanent=apply_error_permanent,
            scaling=scaling,
        )
        if not same_status(status, old):
            await self.kube.patch_status(
                "AgentSpec", namespace=namespace, name=name, status=status, old=old
            )

    # --- PromptTemplate ----------------------------------------------------------------

    async def reconcile_prompt(self, key: Key) -> None:
        body = self.world.body(PROMPTS, key)
        if body is None:
            return
        old = body.get("status") or None
        status = prompt_template_status(
            spec=body.get("spec") or {},
            generation=(body.get("metadata") or {}).get("generation"),
            used_by=self.world.prompt_users(key),
            old=old,
            now=self._now(),
        )
        if not same_status(status, old):
            await self.kube.patch_status(
                "PromptTemplate", namespace=key[0], name=key[1], status=status, old=old
            )


def _involved(body: Json) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", "agentspec.io/v1alpha1"),
        "kind": body.get("kind", "AgentSpec"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }


def keda_hpa_name(agent: str) -> str:
    """The HPA KEDA makes for the agent's ScaledObject (KEDA names it so by default)."""
    return f"keda-hpa-{agent}"


def replicas_owners(deployment: Json) -> set[str]:
    """The field managers owning the Deployment's ``spec.replicas`` (``manager`` for writes
    of the object, ``manager/subresource`` for writes through a subresource such as scale)."""
    owners = set()
    for entry in deployment.get("metadata", {}).get("managedFields") or ():
        if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {}):
            sub = entry.get("subresource")
            owners.add(f"{entry.get('manager')}/{sub}" if sub else str(entry.get("manager")))
    return owners


def _sharing_advice(agent: AgentResource) -> dict[str, str]:
    """Warnings (reason -> message) when the agent may run several pods but keeps state each
    pod should share in the pod: its A2A tasks in SQLite (a task is visible only on the pod
    that took it), its consumers' budgets in memory (each pod admits the whole budget). Not a
    refusal: the agent works, and scaling out is legitimate; the operator says what it costs."""
    spec = agent.spec
    scaling = spec.runtime.autoscaling
    most = max(spec.runtime.replicas, scaling.max_replicas if scaling is not None else 0)
    advice: dict[str, str] = {}
    if most <= 1:
        return advice
    if spec.tasks.store_url_secret_ref is None:
        advice["TasksNotShared"] = (
            f"the agent may run {most} pods but spec.tasks.storeUrlSecretRef is not set: each "
            "pod keeps its own A2A tasks, so GetTask, SubscribeToTask and CancelTask reaching "
            "another pod answer 'task not found' and a pod's tasks do not survive it; set a "
            "PostgreSQL store to share them"
        )
    if spec.runtime.rate_limit is not None and spec.memory.type != "redis":
        advice["RateLimitNotShared"] = (
            f"the agent may run {most} pods but its memory is not in Redis: each pod keeps its "
            "own spec.runtime.rateLimit budgets, so a consumer may spend up to "
            f"{most} times its budget; put memory in Redis to share them"
        )
    return advice
