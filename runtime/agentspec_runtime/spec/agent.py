"""The AgentSpec resource: everything the engine needs to assemble one agent."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from ._base import (
    LIST_SET,
    MAX_LIST,
    Conditions,
    HttpUrl,
    Invariant,
    NamedValues,
    NamespaceName,
    ResourceName,
    SecretKeySelector,
    ShortText,
    SpecModel,
    Text,
    VariableName,
    has_userinfo,
    invariants,
    list_map,
    no_url_credentials,
    unique_keys,
)

_QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(_QUANTITY, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (for example 500m, 256Mi)")
    return value


Quantity = Annotated[
    int | str, AfterValidator(_quantity), Field(json_schema_extra={"pattern": _QUANTITY})
]
MAX_ITERATIONS = 100


# --- prompt --------------------------------------------------------------------

_VERSION_XOR_LABEL = Invariant(
    cel="!(has(self.version) && has(self.label))",
    message="set at most one of version or label",
    field_path=".label",
)


class PromptRef(SpecModel):
    """Which PromptTemplate renders this agent's system prompt, and with which values."""

    model_config = ConfigDict(json_schema_extra=invariants(_VERSION_XOR_LABEL))

    name: ResourceName
    """Name of the PromptTemplate in this namespace."""
    version: ShortText | None = None
    """Pin one version and ignore the template's release (no canary)."""
    label: ShortText | None = None
    """Pin the version a label of the template points at (for example prod)."""
    variables: dict[VariableName, Text] = Field(default_factory=dict, max_length=MAX_LIST)
    """Values for the template's variables; a request may still override them."""

    @model_validator(mode="after")
    def _check(self) -> PromptRef:
        _VERSION_XOR_LABEL.check(self.version is None or self.label is None)
        return self


# --- model ---------------------------------------------------------------------

_NO_LITERAL_KEY = Invariant(
    cel="!has(self.apiKey)",
    message="literal API keys are not allowed: reference a Secret with apiKeySecretRef",
    field_path=".apiKey",
)


_NO_BASE_URL_CREDENTIALS = no_url_credentials(
    "baseUrl", instead="reference the key with apiKeySecretRef or a header from a Secret"
)


class ModelSpec(SpecModel):
    """The OpenAI-compatible chat model the agent thinks with."""

    model_config = ConfigDict(
        json_schema_extra=invariants(_NO_LITERAL_KEY, _NO_BASE_URL_CREDENTIALS)
    )

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Model name sent to the endpoint (for example gpt-4o-mini or qwen-plus)."""
    base_url: HttpUrl | None = None
    """OpenAI-compatible base URL (.../v1). Empty: OPENAI_BASE_URL, else the offline demo model."""
    api_key_secret_ref: SecretKeySelector | None = None
    """Secret key holding the API key. Keys are only ever taken from Secrets."""
    api_key: str | None = None
    """Rejected: literal keys would leak into manifests and Git. Use apiKeySecretRef."""
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    """Sampling temperature, 0-2. Empty: the endpoint's default."""
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Upper bound on tokens the model may generate per call."""
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60
    """Timeout of one model call, in seconds, retries and their waits included."""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    """Retries of a model call that failed for a reason worth retrying (429, 5xx, a lost
    connection), with exponential backoff, or the wait the endpoint's Retry-After asks for."""
    retry_budget_seconds: Annotated[float, Field(ge=0, le=600)] = 10
    """Longest a request may spend waiting between retries, in all. When the endpoint asks
    for a longer wait, the caller gets 429/503 with Retry-After at once instead of being held."""
    headers: NamedValues = Field(default_factory=list)
    """Extra HTTP headers for the endpoint; credential headers only from Secrets."""

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        _NO_LITERAL_KEY.check(self.api_key is None)
        _NO_BASE_URL_CREDENTIALS.check(not has_userinfo(self.base_url))
        unique_keys(self.headers, "name", field="headers")
        return self


# --- tools: MCP servers, partners, knowledge -----------------------------------


class McpServerRef(SpecModel):
    """Use the tools of an McpServer registered in this namespace."""

    name: ResourceName
    """Name of the McpServer resource."""
    tools: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=128)]],
        Field(max_length=256, json_schema_extra=LIST_SET),
    ] = Field(default_factory=list)
    """Allow-list of tool names. Empty: every tool the server offers."""
    query_params: NamedValues = Field(default_factory=list)
    """Values for the query parameters the server requires."""
    headers: NamedValues = Field(default_factory=list)
    """Values for the headers the server requires; credentials only from Secrets."""

    @model_validator(mode="after")
    def _check(self) -> McpServerRef:
        unique_keys(self.tools, "tool", field="tools")
        unique_keys(self.query_params, "name", field="queryParams")
        unique_keys(self.headers, "name", field="headers")
        return self


class PartnerRef(SpecModel):
    """Another agent this one may call over A2A; it becomes a tool of the model."""

    name: ResourceName
    """Name of the partner's AgentSpec."""
    namespace: NamespaceName | None = None
    """Namespace of the partner. Empty: this agent's namespace."""
    headers: NamedValues = Field(default_factory=list)
    """Headers sent on every call to the partner; credentials only from Secrets."""

    @model_validator(mode="after")
    def _check(self) -> PartnerRef:
        unique_keys(self.headers, "name", field="headers")
        return self


class McpToolSource(SpecModel):
    """Retrieve knowledge by calling one MCP tool."""

    server: ResourceName
    """Name of an McpServer listed in spec.mcpServers."""
    tool: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """Name of the retrieval tool on that server."""


class PartnerSource(SpecModel):
    """Retrieve knowledge by asking a partner agent."""

    name: ResourceName
    """Name of an agent listed in spec.partners."""


_EMBEDDINGS_NO_BASE_URL_CREDENTIALS = no_url_credentials(
    "baseUrl", instead="reference the key with apiKeySecretRef"
)


class EmbeddingsSpec(SpecModel):
    """An OpenAI-compatible embeddings model (``POST {baseUrl}/embeddings``) for dense
    retrieval of documents, fused with BM25."""

    model_config = ConfigDict(json_schema_extra=invariants(_EMBEDDINGS_NO_BASE_URL_CREDENTIALS))

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Embeddings model name (for example text-embedding-3-small)."""
    base_url: HttpUrl | None = None
    """OpenAI-compatible base URL (.../v1). Empty: the chat model's baseUrl, else
    OPENAI_BASE_URL."""
    api_key_secret_ref: SecretKeySelector | None = None
    """Secret key holding the API key. Empty: the chat model's key."""

    @model_validator(mode="after")
    def _check(self) -> EmbeddingsSpec:
        _EMBEDDINGS_NO_BASE_URL_CREDENTIALS.check(not has_userinfo(self.base_url))
        return self


class DocumentsSource(SpecModel):
    """Documents from a ConfigMap (one per key), chunked and indexed in-process: BM25, plus
    dense vectors fused by reciprocal rank fusion when an embeddings model is named."""

    config_map: ResourceName
    """Name of the ConfigMap holding the documents (one per key)."""
    keys: Annotated[
        list[Annotated[str, StringConstraints(max_length=253)]],
        Field(max_length=256, json_schema_extra=LIST_SET),
    ] = Field(default_factory=list)
    """Keys to index. Empty: every key."""
    chunk_tokens: Annotated[int, Field(ge=32, le=8192)] = 512
    """Approximate chunk size in tokens."""
    embeddings: EmbeddingsSpec | None = None
    """Embeddings model for this source. Empty: spec.embeddings; neither: BM25 alone."""


_ONE_SOURCE = Invariant(
    cel="[has(self.mcpTool), has(self.partner), has(self.documents)].filter(x, x).size() == 1",
    message="set exactly one source: mcpTool, partner or documents",
)


class KnowledgeSource(SpecModel):
    """A retrieval source exposed to the model as a tool."""

    model_config = ConfigDict(json_schema_extra=invariants(_ONE_SOURCE))

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-zA-Z][a-zA-Z0-9_-]*$")
    ]
    """Tool name the model sees."""
    description: Text = ""
    """What the source knows; shown to the model to decide when to use it."""
    top_k: Annotated[int, Field(ge=1, le=50)] = 4
    """How many passages one retrieval returns."""
    mcp_tool: McpToolSource | None = None
    """Source: an MCP tool."""
    partner: PartnerSource | None = None
    """Source: a partner agent."""
    documents: DocumentsSource | None = None
    """Source: documents in a ConfigMap."""

    @model_validator(mode="after")
    def _check(self) -> KnowledgeSource:
        sources = (self.mcp_tool, self.partner, self.documents)
        _ONE_SOURCE.check(sum(s is not None for s in sources) == 1)
        return self


# --- memory --------------------------------------------------------------------


class CompressionSpec(SpecModel):
    """How history is kept within a token budget."""

    strategy: Literal["none", "truncate", "summarize"] = "truncate"
    """truncate leaves old turns out; summarize folds them into a model-written summary."""
    max_tokens: Annotated[int, Field(ge=128, le=2_000_000)] = 8000
    """Token budget of the recalled history (summary included) sent to the model."""


class MemorySearchSpec(SpecModel):
    """Which past turns are recalled into the prompt."""

    strategy: Literal["recent", "relevance"] = "recent"
    """recent: the last turns; relevance: turns ranked by BM25 to the question, plus the last."""
    limit: Annotated[int, Field(ge=1, le=1000)] = 20
    """How many turns are recalled at most."""


_REDIS_NEEDS_ADDRESS = Invariant(
    cel="self.type != 'redis' || has(self.url) || has(self.urlSecretRef)",
    message="redis memory needs url or urlSecretRef",
)
_NO_URL_CREDENTIALS = Invariant(
    cel="!has(self.url) || !self.url.matches('^[a-z0-9+]+://[^/]*@')",
    message="credentials in url are not allowed: put the URL in a Secret and use urlSecretRef",
    field_path=".url",
)


class MemorySpec(SpecModel):
    """Conversation memory per context id, shared by all replicas when in Redis."""

    model_config = ConfigDict(
        json_schema_extra=invariants(_REDIS_NEEDS_ADDRESS, _NO_URL_CREDENTIALS)
    )

    type: Literal["none", "inMemory", "redis"] = "inMemory"
    """inMemory: per process (one replica); redis: shared by all replicas; none: keep nothing."""
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^rediss?://")] | None = None
    """Redis URL without credentials (redis://host:6379/0)."""
    url_secret_ref: SecretKeySelector | None = None
    """Secret key holding the full Redis URL, credentials included."""
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    """Compression of long histories."""
    search: MemorySearchSpec = Field(default_factory=MemorySearchSpec)
    """Recall of past turns."""
    ttl_seconds: Annotated[int, Field(ge=60, le=31_536_000)] = 604_800
    """How long a conversation is kept after its last turn (default 7 days)."""

    @model_validator(mode="after")
    def _check(self) -> MemorySpec:
        _REDIS_NEEDS_ADDRESS.check(
            self.type != "redis" or self.url is not None or self.url_secret_ref is not None
        )
        _NO_URL_CREDENTIALS.check(self.url is None or "@" not in self.url.split("/")[2])
        return self


# --- durable tasks ---------------------------------------------------------------

_PUSH_HOST = (
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$"
)


class TasksSpec(SpecModel):
    """Durable A2A tasks: where they are kept, and how their work is leased and retried.

    Every A2A task is queued, leased by a replica and checkpointed step by step; a replica
    that dies leaves its tasks to another one, which resumes them without repeating done
    steps. With ``storeUrlSecretRef`` the tasks live in PostgreSQL, shared by every replica.
    Without it, in an SQLite file of the pod: one replica only (another replica answers
    "task not found"), and a task survives a container restart but not the pod.
    Changing the store restarts the pods.
    """

    store_url_secret_ref: SecretKeySelector | None = None
    """Secret key holding the PostgreSQL URL (postgresql://user:password@host:5432/db)."""
    retention_seconds: Annotated[int, Field(ge=1, le=31_536_000)] = 86_400
    """How long a task is kept after it finished or last waited for input (default a day)."""
    lease_seconds: Annotated[int, Field(ge=5, le=3600)] = 30
    """A replica's hold on a task it runs, renewed while it works; when the replica dies,
    another one resumes the task this long after its last renewal."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    """Runs of a task that may end without finishing (its replica died) before it fails."""
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 64
    """Tasks one replica runs at once; more wait in the queue (its depth is a metric)."""
    push_allowed_hosts: Annotated[
        list[Annotated[str, StringConstraints(max_length=260, pattern=_PUSH_HOST)]],
        Field(max_length=MAX_LIST, json_schema_extra=LIST_SET),
    ] = Field(default_factory=list)
    """Hosts (host or host:port; *.example.com for subdomains) push notifications may be
    sent to. Empty: push notifications are off (the card says so): a caller-supplied URL is
    a request the agent would make on the caller's behalf, inside the cluster."""

    def fixed_for_the_process(self) -> dict[str, Any]:
        """The settings a runtime reads once at start (the store, leases, limits): a change
        to them needs new pods (the operator rolls them); the rest is read live."""
        return self.model_dump(mode="json", by_alias=True, exclude={"push_allowed_hosts"})


# --- runtime -------------------------------------------------------------------

_MIN_LE_MAX = Invariant(
    cel="self.minReplicas <= self.maxReplicas",
    message="minReplicas must not exceed maxReplicas",
    field_path=".minReplicas",
)


_QUEUE_NEEDS_KEDA = Invariant(
    cel="!has(self.targetQueuedTasks) || self.provider == 'keda'",
    message="targetQueuedTasks needs provider keda (a custom metrics adapter averages a "
    "per-pod metric, and every replica reports the whole shared queue)",
    field_path=".targetQueuedTasks",
)


class AutoscalingSpec(SpecModel):
    """Scale replicas on the tokens per second the agent's pods process (a rate Prometheus
    computes from the runtime's token counters), and optionally on its queued tasks."""

    model_config = ConfigDict(json_schema_extra=invariants(_MIN_LE_MAX, _QUEUE_NEEDS_KEDA))

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Lower bound of replicas."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Upper bound of replicas."""
    target_tokens_per_second: Annotated[float, Field(ge=0.001, le=1e9)]
    """Target average tokens per second per pod (input plus output)."""
    target_queued_tasks: Annotated[float, Field(ge=0.001, le=1e6)] | None = None
    """Second trigger (keda only): durable A2A tasks waiting for a replica, per replica. The
    agent scales to whichever of the two triggers asks for more pods."""
    provider: Literal["hpa", "keda"] = "hpa"
    """keda: a KEDA ScaledObject with a Prometheus trigger (KEDA's HPA on an External metric);
    hpa: an autoscaling/v2 HPA on the Pods metric agentspec_tokens_per_second, which a custom
    metrics adapter (prometheus-adapter or the like) must serve. See docs/autoscaling.md."""
    scale_up_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 0
    """Scale up to the lowest recommendation of this many last seconds (Kubernetes' default: 0,
    at once)."""
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    """Scale down to the highest recommendation of this many last seconds (Kubernetes'
    default: 300), so a short lull does not drop pods a returning load needs."""

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        _MIN_LE_MAX.check(self.min_replicas <= self.max_replicas)
        _QUEUE_NEEDS_KEDA.check(self.target_queued_tasks is None or self.provider == "keda")
        return self


class PriorityClass(SpecModel):
    """A class of consumers with its own budgets (each consumer of the class gets them)."""

    name: ShortText
    """Class name."""
    consumers: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=253)]],
        Field(min_length=1, max_length=MAX_LIST, json_schema_extra=LIST_SET),
    ]
    """Consumers in this class: API-key names (the key's name in the Secret) or JWT consumer
    claims (for example system:serviceaccount:<ns>:<agent>)."""
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Token budget per consumer per minute (empty: the default)."""
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Request budget per consumer per minute (empty: the default)."""
    priority: Annotated[int, Field(ge=0, le=100)] = 50
    """Higher classes are served first when the agent is saturated (maxConcurrency), and
    keep their whole budget while the model pushes back (lower classes' budgets shrink)."""


class RateLimitSpec(SpecModel):
    """Token and request budgets per consumer over a sliding minute, shared by every replica
    when memory is in Redis (in the replica's own memory otherwise). The consumer is the
    authenticated caller (an API key's name or the JWT's consumer claim); without auth every
    caller shares the budget of the consumer "anonymous". A header cannot choose the consumer
    or the class: a client would pick a fresh one per request."""

    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Default token budget per consumer per minute (input plus output tokens)."""
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Default request budget per consumer per minute."""
    priority_classes: Annotated[
        list[PriorityClass], Field(max_length=16, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """Classes of consumers with their own budgets and priority."""
    default_priority: Annotated[int, Field(ge=0, le=100)] = 0
    """Priority of the consumers no class lists."""
    max_concurrency: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Model calls at once per replica; beyond it, calls queue by priority. Empty: no
    limit."""
    max_queued: Annotated[int, Field(ge=0, le=100_000)] = 100
    """Calls that may wait for a slot per replica; when full, a higher class pushes out the
    newest call of the lowest class (429)."""
    queue_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10
    """Longest a request waits for a slot before a 429."""
    slow_model_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    """A model call slower than this counts as the model pushing back (as its 429s and 503s
    do): the budgets of the classes below the highest shrink until it stops."""

    @model_validator(mode="after")
    def _check(self) -> RateLimitSpec:
        unique_keys(self.priority_classes, "name", field="priorityClasses")
        seen: dict[str, str] = {}
        for cls in self.priority_classes:
            for who in cls.consumers:
                if who in seen:
                    raise ValueError(
                        f"priorityClasses: consumer {who!r} is in both {seen[who]!r} and "
                        f"{cls.name!r}"
                    )
                seen[who] = cls.name
        return self


JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
"""Asymmetric algorithms only: never ``none``, never an HMAC (whose secret would be the
issuer's public key)."""
_DEFAULT_JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("RS256", "ES256")


class JwtAuthSpec(SpecModel):
    """Accept bearer JWTs signed by an issuer (API keys keep working alongside)."""

    issuer: HttpUrl
    """Expected iss claim, exactly (also where the keys are discovered from:
    <issuer>/.well-known/openid-configuration, unless jwksUrl is set)."""
    audiences: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=512)]],
        Field(min_length=1, max_length=16, json_schema_extra=LIST_SET),
    ]
    """Accepted aud claims; a token must name one of them (a token minted for another service
    is refused here)."""
    jwks_url: HttpUrl | None = None
    """Where the signing keys are published. Empty: discovered from the issuer."""
    algorithms: Annotated[
        list[JwtAlgorithm], Field(min_length=1, max_length=10, json_schema_extra=LIST_SET)
    ] = Field(default_factory=lambda: list(_DEFAULT_JWT_ALGORITHMS))
    """Signature algorithms accepted."""
    consumer_claim: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "sub"
    """The claim naming the consumer (tasks and conversations belong to it)."""
    leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 30
    """Clock skew tolerated on exp, nbf and iat."""


class CallerRef(SpecModel):
    """An agent allowed to call this one."""

    name: ResourceName
    """Name of the calling AgentSpec."""
    namespace: NamespaceName | None = None
    """Its namespace. Empty: this agent's namespace."""


class AgentCallersSpec(SpecModel):
    """Accept calls from other agents by their workload identity (in a cluster): a partner
    call carries the calling pod's ServiceAccount token minted for this agent, verified
    against the cluster's own issuer. No shared secret."""

    allowed: Annotated[list[CallerRef], Field(min_length=1, max_length=MAX_LIST)]
    """The agents that may call this one; any other agent's token is refused."""


class AuthSpec(SpecModel):
    """Inbound authentication on the API port (A2A and /v1/chat/completions)."""

    api_keys_secret_ref: ResourceName | None = None
    """Secret whose every key is an accepted API key (the key name identifies the consumer)."""
    jwt: JwtAuthSpec | None = None
    """Accept JWT bearer tokens."""
    agents: AgentCallersSpec | None = None
    """Accept other agents' calls by their ServiceAccount (in a cluster only); the consumer
    is system:serviceaccount:<namespace>:<agent>."""


GuardStage = Literal["input", "output"]
_BOTH_STAGES: tuple[GuardStage, ...] = ("input", "output")


class GuardModelSpec(SpecModel):
    """An OpenAI-compatible chat model that classifies text, like Llama Guard: it answers
    ``safe``, or ``unsafe`` and a category on the next line or after a space."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Model name sent to the endpoint."""
    base_url: HttpUrl
    """OpenAI-compatible base URL (.../v1)."""
    api_key_secret_ref: SecretKeySelector | None = None
    """Secret key holding the endpoint's API key."""


class GuardSpec(SpecModel):
    """Checks on what goes into the model and what comes out of it."""

    deny_patterns: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]],
        Field(max_length=MAX_LIST),
    ] = Field(default_factory=list)
    """Regular expressions in RE2 syntax (no backreferences or lookaround: matching takes
    linear time, so no text can make the agent hang); a text matching one is blocked or
    redacted."""
    moderation_url: HttpUrl | None = None
    """An OpenAI-compatible moderations endpoint (POST, the /v1/moderations shape); a text it
    flags is blocked."""
    moderation_api_key_secret_ref: SecretKeySelector | None = None
    """Secret key holding the moderation endpoint's API key."""
    model: GuardModelSpec | None = None
    """A guard model; a text it calls unsafe is blocked."""
    action: Literal["block", "redact"] = "block"
    """What a denyPatterns match does: block replaces the answer with the refusal; redact
    masks the matches. The moderation endpoint and the guard model always block."""
    stages: Annotated[list[GuardStage], Field(min_length=1, json_schema_extra=LIST_SET)] = Field(
        default_factory=lambda: list(_BOTH_STAGES)
    )
    """What is checked: the caller's input (before the model sees it), the output (before
    the caller sees it), or both."""
    failure_mode: Literal["closed", "open"] = "closed"
    """When the moderation endpoint or the guard model cannot answer: closed refuses the
    request (503), open lets the text through (counted and logged)."""
    refusal: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = (
        "I can't help with that."
    )
    """The answer that replaces a blocked one."""


_ENV_ONE_VALUE = Invariant(
    cel="!(has(self.value) && has(self.secretKeyRef))",
    message="set at most one of value or secretKeyRef",
)


class EnvVar(SpecModel):
    """An environment variable of the runtime container."""

    model_config = ConfigDict(json_schema_extra=invariants(_ENV_ONE_VALUE))

    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"),
    ]
    """Variable name."""
    value: Text | None = None
    """Literal value."""
    secret_key_ref: SecretKeySelector | None = None
    """Take the value from a Secret key (changing the Secret reference restarts the pods)."""

    @model_validator(mode="after")
    def _check(self) -> EnvVar:
        _ENV_ONE_VALUE.check(self.value is None or self.secret_key_ref is None)
        return self


class ResourceRequirements(SpecModel):
    """CPU and memory of the runtime container (changing them rolls the pods)."""

    requests: dict[Annotated[str, StringConstraints(max_length=253)], Quantity] = Field(
        default_factory=dict, max_length=16
    )
    """Minimum resources, for example cpu: 100m, memory: 128Mi."""
    limits: dict[Annotated[str, StringConstraints(max_length=253)], Quantity] = Field(
        default_factory=dict, max_length=16
    )
    """Maximum resources."""


class RuntimeSpec(SpecModel):
    """How the agent's pods run and are protected."""

    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Replicas when autoscaling is off (ignored when it is on)."""
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    """Runtime image override. Empty: the operator's default engine image."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """Container resources."""
    env: Annotated[list[EnvVar], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))] = (
        Field(default_factory=list)
    )
    """Extra environment variables."""
    autoscaling: AutoscalingSpec | None = None
    """Scale on tokens per second; when set, the operator leaves spec.replicas to the HPA."""
    rate_limit: RateLimitSpec | None = None
    """Token-based rate limits."""
    auth: AuthSpec | None = None
    """Inbound authentication."""
    guard: GuardSpec | None = None
    """Content guard on input and output."""

    @model_validator(mode="after")
    def _check(self) -> RuntimeSpec:
        unique_keys(self.env, "name", field="env")
        return self


# --- the agent -----------------------------------------------------------------

_ONE_PROMPT = Invariant(
    cel="has(self.promptRef) != has(self.prompt)",
    message="set exactly one of promptRef or prompt",
)
_QUEUE_NEEDS_SHARED_TASKS = Invariant(
    cel="!has(self.runtime) || !has(self.runtime.autoscaling) || "
    "!has(self.runtime.autoscaling.targetQueuedTasks) || "
    "(has(self.tasks) && has(self.tasks.storeUrlSecretRef))",
    message="targetQueuedTasks needs the shared task store (tasks.storeUrlSecretRef): with "
    "each pod's own store there is no agent-wide queue to scale on",
    field_path=".runtime.autoscaling.targetQueuedTasks",
)


class AgentSpec(SpecModel):
    """Desired state of one agent: model, prompt, tools, partners, memory and runtime."""

    model_config = ConfigDict(json_schema_extra=invariants(_ONE_PROMPT, _QUEUE_NEEDS_SHARED_TASKS))

    description: Text = ""
    """What the agent does; published in its A2A agent card."""
    prompt_ref: PromptRef | None = None
    """System prompt from a versioned PromptTemplate (hot-reloaded, canary-able)."""
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=65536)] | None = None
    """Inline system prompt, when no PromptTemplate is used."""
    max_iterations: Annotated[int, Field(ge=1, le=MAX_ITERATIONS)] = 10
    """Most think-act rounds in one request before the agent gives up."""
    model: ModelSpec
    """The chat model."""
    mcp_servers: Annotated[
        list[McpServerRef], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """MCP servers whose tools the agent may use."""
    partners: Annotated[
        list[PartnerRef], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """Agents this one may call over A2A."""
    knowledge: Annotated[
        list[KnowledgeSource], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """Retrieval sources, each exposed to the model as a tool."""
    embeddings: EmbeddingsSpec | None = None
    """Embeddings model of the documents knowledge sources that name none themselves."""
    memory: MemorySpec = Field(default_factory=MemorySpec)
    """Conversation memory."""
    tasks: TasksSpec = Field(default_factory=TasksSpec)
    """Durable A2A tasks."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """Pods, scaling, limits, auth and guard."""

    @model_validator(mode="after")
    def _check(self) -> AgentSpec:
        _ONE_PROMPT.check((self.prompt_ref is None) != (self.prompt is None))
        scaling = self.runtime.autoscaling
        _QUEUE_NEEDS_SHARED_TASKS.check(
            scaling is None
            or scaling.target_queued_tasks is None
            or self.tasks.store_url_secret_ref is not None
        )
        unique_keys(self.mcp_servers, "name", field="mcpServers")
        unique_keys(self.partners, "name", field="partners")
        unique_keys(self.knowledge, "name", field="knowledge")
        return self


class AgentSpecStatus(SpecModel):
    """Observed state of an agent, computed by the operator from the world."""

    conditions: Conditions = Field(default_factory=list)
    """Ready, Reconciling and Stalled."""
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    endpoint: str | None = None
    """In-cluster base URL of the agent (its Service)."""
    agent_card: str | None = None
    """URL of the agent's A2A agent card."""
    replicas: int | None = None
    """Desired replicas of the agent's Deployment."""
    ready_replicas: int | None = None
    """Replicas ready to serve."""
    config_revision: str | None = None
    """Hash of the resolved config in the agent's ConfigMap."""
    prompt_version: str | None = None
    """Serving prompt version(s), for example v2 or v2+v3@10%."""
