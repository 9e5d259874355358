"""The resolved agent config: the operator's ConfigMap payload and the runtime's input.

:func:`resolve_agent` turns an AgentSpec plus the resources it references (PromptTemplates,
McpServers, partner AgentSpecs) into one self-contained :class:`AgentConfig`. The operator
calls it with objects from the cluster; local mode calls it with documents from YAML files.
Both get the same result and the same :class:`ResolutionError` for a dangling reference.

Secrets stay references (``SecretKeySelector``); the runtime reads their values itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from ._base import NamedValue, SecretKeySelector, SpecModel
from .agent import (
    AgentSpec,
    AuthSpec,
    GuardSpec,
    KnowledgeSource,
    MemorySpec,
    ModelSpec,
    RateLimitSpec,
    TasksSpec,
)
from .problems import Problem
from .prompt import PLACEHOLDER, CanaryRelease, PromptVariable
from .resources import AgentResource, McpServerResource, PromptTemplateResource

CONFIG_KEY = "agent.json"
"""Key of the payload in the agent's ConfigMap."""
REVISION_ANNOTATION = "agentspec.io/config-revision"
ACCEPT_CALLERS_ANNOTATION = "agentspec.io/accept-callers-from"
"""On an AgentSpec: comma-separated namespaces (or ``*``) whose agents may list it as partner."""
A2A_PORT = 8080
INLINE_VERSION = "inline"


def config_map_name(agent: str) -> str:
    return f"{agent}-config"


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{A2A_PORT}"


class ResolvedPromptVersion(SpecModel):
    version: str
    template: str
    variables: list[PromptVariable] = Field(default_factory=list)


class ResolvedPrompt(SpecModel):
    """The prompt versions that may serve, and how traffic is split between them."""

    template_name: str | None = None
    """PromptTemplate name; None for an inline prompt."""
    prompt_key: str
    stable: str
    canary: CanaryRelease | None = None
    versions: list[ResolvedPromptVersion]
    """Only the versions that can serve (stable, canary, or the pinned one)."""
    variables: dict[str, str] = Field(default_factory=dict)
    """Values the AgentSpec gives; requests may override them."""


class ResolvedMcpServer(SpecModel):
    name: str
    url: str
    transport: Literal["streamable-http", "sse"]
    timeout_seconds: float
    tools: list[str] = Field(default_factory=list)
    """Allow-list; empty means every tool."""
    headers: list[NamedValue] = Field(default_factory=list)
    query_params: list[NamedValue] = Field(default_factory=list)


class ResolvedPartner(SpecModel):
    name: str
    namespace: str
    url: str
    """Base URL of the partner's A2A endpoint (Service DNS in a cluster)."""
    description: str = ""
    headers: list[NamedValue] = Field(default_factory=list)


class AgentConfig(SpecModel):
    """Everything the engine needs to run one agent; immutable once loaded."""

    api_version: Literal["agentspec.io/v1alpha1"] = Field(
        "agentspec.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["AgentConfig"] = "AgentConfig"
    name: str
    namespace: str
    generation: int | None = None
    """metadata.generation of the AgentSpec this was resolved from."""
    description: str = ""
    model: ModelSpec
    prompt: ResolvedPrompt
    max_iterations: int
    mcp_servers: list[ResolvedMcpServer] = Field(default_factory=list)
    partners: list[ResolvedPartner] = Field(default_factory=list)
    knowledge: list[KnowledgeSource] = Field(default_factory=list)
    memory: MemorySpec
    tasks: TasksSpec = Field(default_factory=TasksSpec)
    rate_limit: RateLimitSpec | None = None
    auth: AuthSpec | None = None
    guard: GuardSpec | None = None

    def to_json(self) -> str:
        """Canonical JSON: the same config always gives the same text (and revision)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def revision(self) -> str:
        """Hash of the content: the AgentSpec's generation is left out, so an edit that
        changes nothing the engine uses (the image, say) reloads nothing."""
        return config_revision(self.model_copy(update={"generation": None}).to_json())

    def secret_refs(self) -> list[SecretKeySelector]:
        """Every Secret key the runtime must read, deduplicated, in a stable order."""
        refs: dict[tuple[str, str], SecretKeySelector] = {}
        if self.model.api_key_secret_ref:
            ref = self.model.api_key_secret_ref
            refs[(ref.name, ref.key)] = ref
        values = list(self.model.headers)
        for server in self.mcp_servers:
            values += server.headers + server.query_params
        for partner in self.partners:
            values += partner.headers
        for source in self.knowledge:
            embeddings = source.documents.embeddings if source.documents else None
            if embeddings is not None and embeddings.api_key_secret_ref is not None:
                ref = embeddings.api_key_secret_ref
                refs[(ref.name, ref.key)] = ref
        for value in values:
            if value.value_from:
                ref = value.value_from.secret_key_ref
                refs[(ref.name, ref.key)] = ref
        guard = self.guard
        for extra in (
            self.memory.url_secret_ref,
            self.tasks.store_url_secret_ref,
            guard.moderation_api_key_secret_ref if guard else None,
            guard.model.api_key_secret_ref if guard and guard.model else None,
        ):
            if extra is not None:
                refs[(extra.name, extra.key)] = extra
        return [refs[k] for k in sorted(refs)]


def agent_audience(namespace: str, name: str) -> str:
    """The audience of the ServiceAccount tokens that call agent ``namespace/name``: a token
    minted for one agent is refused by every other, and by the kube-apiserver."""
    return f"agentspec.io/agents/{namespace}/{name}"


AGENT_IDENTITY_PREFIX = "system:serviceaccount:"
"""What every agent's identity (a ServiceAccount's username) begins with."""


def agent_identity(namespace: str, name: str) -> str:
    """The consumer an agent's calls arrive as: its ServiceAccount's username."""
    return f"{AGENT_IDENTITY_PREFIX}{namespace}:{name}"


def allowed_callers(config: AgentConfig) -> frozenset[str]:
    """The identities ``spec.runtime.auth.agents`` lets in."""
    if config.auth is None or config.auth.agents is None:
        return frozenset()
    return frozenset(
        agent_identity(ref.namespace or config.namespace, ref.name)
        for ref in config.auth.agents.allowed
    )


def _unsupported_set(config: AgentConfig) -> list[tuple[str, bool, str]]:
    """(field, set in this config, why it cannot be honoured yet): none at the moment."""
    del config
    return []


def unsupported_fields(config: AgentConfig) -> list[Problem]:
    """Fields the schema accepts but this engine cannot honour yet, one message each.

    Fail closed: an agent that sets one is refused (the operator stalls it with reason
    ``Unsupported``, the runtime rejects the config) rather than served as if the field were
    not there (an agent with only ``auth.jwt`` would otherwise answer anyone). The list shrinks
    as the features land.
    """
    return [
        Problem(
            "Unsupported",
            field,
            f"not supported by this version of the engine ({why}); remove the field",
        )
        for field, is_set, why in _unsupported_set(config)
        if is_set
    ]


def config_revision(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ResolutionError(ValueError):
    """References that cannot be resolved; each problem names the field and the reference."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


def resolve_agent(
    agent: AgentResource,
    *,
    namespace: str,
    prompts: Mapping[str, PromptTemplateResource],
    mcp_servers: Mapping[str, McpServerResource],
    partners: Mapping[tuple[str, str], AgentResource],
    partner_url: str | None = None,
) -> AgentConfig:
    """Resolve ``agent`` (in ``namespace``) against the resources it references.

    ``prompts`` and ``mcp_servers`` are keyed by name (same namespace); ``partners`` by
    ``(namespace, name)``. ``partner_url`` is a format string with ``{name}`` and
    ``{namespace}`` (default: the Service DNS name). Raises :class:`ResolutionError`
    listing every dangling or invalid reference.
    """
    spec = agent.spec
    problems: list[Problem] = []
    prompt = _resolve_prompt(spec, prompts, problems)
    servers = [_resolve_mcp(spec, i, mcp_servers, problems) for i in range(len(spec.mcp_servers))]
    peers = [
        _resolve_partner(
            agent,
            i,
            namespace=namespace,
            partners=partners,
            partner_url=partner_url,
            problems=problems,
        )
        for i in range(len(spec.partners))
    ]
    _check_knowledge(spec, problems)
    if problems or prompt is None:
        raise ResolutionError(problems)
    return AgentConfig(
        name=agent.metadata.name,
        namespace=namespace,
        generation=agent.metadata.generation,
        description=spec.description,
        model=spec.model,
        prompt=prompt,
        max_iterations=spec.max_iterations,
        mcp_servers=[s for s in servers if s is not None],
        partners=[p for p in peers if p is not None],
        knowledge=[_with_embeddings(spec, k) for k in spec.knowledge],
        memory=spec.memory,
        tasks=spec.tasks,
        rate_limit=spec.runtime.rate_limit,
        auth=spec.runtime.auth,
        guard=spec.runtime.guard,
    )


def _resolve_prompt(
    spec: AgentSpec, prompts: Mapping[str, PromptTemplateResource], problems: list[Problem]
) -> ResolvedPrompt | None:
    if spec.prompt is not None:
        # an inline prompt has no other way to get its values: every one is the caller's
        variables = [
            PromptVariable(name=n, caller_settable=True)
            for n in dict.fromkeys(PLACEHOLDER.findall(spec.prompt))
        ]
        return ResolvedPrompt(
            prompt_key=INLINE_VERSION,
            stable=INLINE_VERSION,
            versions=[
                ResolvedPromptVersion(
                    version=INLINE_VERSION, template=spec.prompt, variables=variables
                )
            ],
        )
    ref = spec.prompt_ref
    assert ref is not None  # the model guarantees exactly one of prompt / promptRef
    template = prompts.get(ref.name)
    if template is None:
        problems.append(
            Problem(
                "ReferenceNotFound", "spec.promptRef.name", f"PromptTemplate {ref.name!r} not found"
            )
        )
        return None
    body = template.spec
    canary = body.release.canary
    if ref.version is not None:
        stable, canary = ref.version, None
        field = "spec.promptRef.version"
    elif ref.label is not None:
        if ref.label not in body.labels:
            problems.append(
                Problem(
                    "ReferenceNotFound",
                    "spec.promptRef.label",
                    f"PromptTemplate {ref.name!r} has no label {ref.label!r}",
                )
            )
            return None
        stable, canary = body.labels[ref.label], None
        field = "spec.promptRef.label"
    else:
        stable = body.release.stable
        field = "spec.promptRef.name"
    wanted = [stable] + ([canary.version] if canary else [])
    versions = []
    for name in wanted:
        version = body.version(name)
        if version is None:
            problems.append(
                Problem(
                    "ReferenceNotFound",
                    field,
                    f"PromptTemplate {ref.name!r} has no version {name!r}",
                )
            )
            return None
        versions.append(
            ResolvedPromptVersion(
                version=version.version, template=version.template, variables=version.variables
            )
        )
    unknown = sorted(set(ref.variables) - {v.name for ver in versions for v in ver.variables})
    if unknown:
        problems.append(
            Problem(
                "InvalidReference",
                "spec.promptRef.variables",
                f"PromptTemplate {ref.name!r} declares no variable "
                + ", ".join(repr(u) for u in unknown),
            )
        )
    return ResolvedPrompt(
        template_name=ref.name,
        prompt_key=body.prompt_key or template.metadata.name,
        stable=stable,
        canary=canary,
        versions=versions,
        variables=dict(ref.variables),
    )


def _resolve_mcp(
    spec: AgentSpec, index: int, registry: Mapping[str, McpServerResource], problems: list[Problem]
) -> ResolvedMcpServer | None:
    ref = spec.mcp_servers[index]
    field = f"spec.mcpServers[{index}]"
    server = registry.get(ref.name)
    if server is None:
        problems.append(
            Problem("ReferenceNotFound", f"{field}.name", f"McpServer {ref.name!r} not found")
        )
        return None
    body = server.spec
    for kind, declared, given in (
        ("header", body.headers, ref.headers),
        ("query parameter", body.query_params, ref.query_params),
    ):
        supplied = {v.name.lower() for v in given}
        for need in declared:
            if need.required and need.name.lower() not in supplied:
                attr = "headers" if kind == "header" else "queryParams"
                problems.append(
                    Problem(
                        "InvalidReference",
                        f"{field}.{attr}",
                        f"McpServer {ref.name!r} requires {kind} {need.name!r}",
                    )
                )
    return ResolvedMcpServer(
        name=ref.name,
        url=body.url,
        transport=body.transport,
        timeout_seconds=body.timeout_seconds,
        tools=ref.tools,
        headers=ref.headers,
        query_params=ref.query_params,
    )


def _accepts(partner: AgentResource, caller_namespace: str) -> bool:
    allowed = partner.metadata.annotations.get(ACCEPT_CALLERS_ANNOTATION, "")
    names = {n.strip() for n in allowed.split(",") if n.strip()}
    return "*" in names or caller_namespace in names


def _resolve_partner(
    agent: AgentResource,
    index: int,
    *,
    namespace: str,
    partners: Mapping[tuple[str, str], AgentResource],
    partner_url: str | None,
    problems: list[Problem],
) -> ResolvedPartner | None:
    ref = agent.spec.partners[index]
    field = f"spec.partners[{index}]"
    ns = ref.namespace or namespace
    if ns == namespace and ref.name == agent.metadata.name:
        problems.append(
            Problem("InvalidReference", f"{field}.name", "an agent cannot be its own partner")
        )
        return None
    partner = partners.get((ns, ref.name))
    if partner is None:
        problems.append(
            Problem(
                "ReferenceNotFound", f"{field}.name", f"partner AgentSpec {ns}/{ref.name} not found"
            )
        )
        return None
    if ns != namespace and not _accepts(partner, namespace):
        problems.append(
            Problem(
                "PartnerNotAccepted",
                f"{field}.namespace",
                f"AgentSpec {ns}/{ref.name} does not accept callers from "
                f"namespace {namespace!r} (annotation {ACCEPT_CALLERS_ANNOTATION})",
            )
        )
        return None
    url = (partner_url or service_url("{name}", "{namespace}")).format(name=ref.name, namespace=ns)
    return ResolvedPartner(
        name=ref.name,
        namespace=ns,
        url=url,
        description=partner.spec.description,
        headers=ref.headers,
    )


def _with_embeddings(spec: AgentSpec, source: KnowledgeSource) -> KnowledgeSource:
    """A documents source with its effective embeddings model: its own, else the agent's;
    an empty baseUrl is the chat model's, and so is the key, but only when both name the
    same endpoint (the chat model's key is never sent to another host)."""
    documents = source.documents
    if documents is None:
        return source
    embeddings = documents.embeddings or spec.embeddings
    if embeddings is None:
        return source
    model = spec.model
    base_url = embeddings.base_url or model.base_url
    key = embeddings.api_key_secret_ref
    if key is None and base_url == model.base_url:
        key = model.api_key_secret_ref
    embeddings = embeddings.model_copy(update={"base_url": base_url, "api_key_secret_ref": key})
    return source.model_copy(
        update={"documents": documents.model_copy(update={"embeddings": embeddings})}
    )


def _check_knowledge(spec: AgentSpec, problems: list[Problem]) -> None:
    servers = {s.name for s in spec.mcp_servers}
    partners = {p.name for p in spec.partners}
    for i, source in enumerate(spec.knowledge):
        if source.mcp_tool and source.mcp_tool.server not in servers:
            problems.append(
                Problem(
                    "InvalidReference",
                    f"spec.knowledge[{i}].mcpTool.server",
                    f"{source.mcp_tool.server!r} is not in spec.mcpServers",
                )
            )
        if source.partner and source.partner.name not in partners:
            problems.append(
                Problem(
                    "InvalidReference",
                    f"spec.knowledge[{i}].partner.name",
                    f"{source.partner.name!r} is not in spec.partners",
                )
            )
