"""The engine's exception tree, classified by what the caller should do next.

::

    AgentspecError
    ├── RequestError          the caller's request is wrong: answer 4xx, change nothing
    │   ├── UnknownModelError     ``model`` is not this agent
    │   ├── MissingVariableError  a required prompt variable has no value
    │   └── VariableNotSettableError  the request sets a variable it may not
    ├── ModelError            the model endpoint failed after retries: answer 502
    │   ├── ModelAuthError        the endpoint rejected our credentials
    │   ├── ModelNotFoundError    the endpoint does not know the configured model
    │   ├── ModelRateLimitedError the endpoint asks us to slow down: 429 + Retry-After
    │   ├── ModelUnavailableError overloaded (503) or its circuit is open: 503 + Retry-After
    │   └── ModelTimeoutError     no answer within model.timeoutSeconds: 504

Messages are the engine's own, stable and safe to show a caller: never the upstream's text
(it may echo credentials) nor an internal URL. The upstream's text is logged, redacted.
    ├── ToolError             one tool call failed: told to the model, never a crash
    ├── ConfigError           a config update is invalid: reject it, keep the last good one
    │   └── DocumentsGoneError    a documents source's ConfigMap (folder) was deleted
    ├── NotReadyError         no config loaded yet, or draining: answer 503
    ├── RateLimitedError      the consumer's budget is spent: 429 + Retry-After + x-ratelimit-*
    ├── LimiterUnavailableError  the shared budgets cannot be read: answer 503 (fail closed)
    ├── ContentBlockedError   the content guard blocked the input or output (the refusal)
    ├── GuardUnavailableError the moderation endpoint or guard model did not answer: 503
    ├── MemoryUnavailableError  the conversation store cannot be read: answer 503, retry
    └── CheckpointError       a durable task's journal cannot be written, or this replica
                              lost the task: stop running it (it resumes elsewhere)
"""

from __future__ import annotations


class AgentspecError(Exception):
    """Base of every error the engine raises on purpose."""


class RequestError(AgentspecError):
    """The request is invalid; ``status`` is the HTTP status to answer with."""

    status = 400
    code = "invalid_request"


class UnknownModelError(RequestError):
    status = 404
    code = "model_not_found"


class MissingVariableError(RequestError):
    code = "missing_variable"


class VariableNotSettableError(RequestError):
    code = "variable_not_settable"


class ModelError(AgentspecError):
    """The model endpoint failed (after the client's retries). ``retry_after``: seconds after
    which the caller may try again, when the endpoint (or the circuit breaker) says."""

    status = 502
    code = "model_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelAuthError(ModelError):
    code = "model_auth_failed"


class ModelNotFoundError(ModelError):
    code = "model_not_found_at_endpoint"


class ModelRateLimitedError(ModelError):
    status = 429
    code = "model_rate_limited"


class ModelUnavailableError(ModelError):
    status = 503
    code = "model_unavailable"


class ModelTimeoutError(ModelError):
    status = 504
    code = "model_timeout"


class ToolError(AgentspecError):
    """A tool call failed; the message is what the model is told."""


class ConfigError(AgentspecError):
    """A config (or config update) cannot be loaded; the last good one keeps serving."""


class DocumentsGoneError(ConfigError):
    """The documents a knowledge source follows were deleted: their index is dropped (what
    was removed is no longer quoted)."""


class NotReadyError(AgentspecError):
    status = 503
    code = "not_ready"


class MemoryUnavailableError(AgentspecError):
    """The conversation store did not answer (answering without the history would be wrong)."""

    status = 503
    code = "memory_unavailable"


class UnauthorizedError(AgentspecError):
    """An inbound credential that is not valid here. The message says why, for the log;
    the caller gets a bare 401."""

    status = 401
    code = "unauthorized"


class CheckpointError(AgentspecError):
    """A step of a durable task could not be recorded (the task store did not answer), or
    this replica no longer holds the task (its lease was taken over, the task cancelled).
    The run stops without a result: the task is resumed from its journal, here or elsewhere."""

    status = 503
    code = "task_checkpoint_failed"


class RateLimitedError(AgentspecError):
    """The consumer's token or request budget (``spec.runtime.rateLimit``) is spent.
    ``headers``: what the caller is told (Retry-After and OpenAI's x-ratelimit-*)."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers


class LimiterUnavailableError(AgentspecError):
    """The store of the shared budgets (Redis) did not answer. Requests are refused rather
    than served unmetered: a limit that lapses when Redis does is no limit."""

    status = 503
    code = "rate_limiter_unavailable"

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContentBlockedError(AgentspecError):
    """The content guard (``spec.runtime.guard``) blocked a text. The message is the
    agent's refusal; ``stage`` (input, output) and ``category`` say why — never the text."""

    status = 400
    code = "content_blocked"

    def __init__(self, refusal: str, *, stage: str, category: str) -> None:
        super().__init__(refusal)
        self.stage = stage
        self.category = category


class GuardUnavailableError(AgentspecError):
    """A check of the content guard (moderation endpoint, guard model) did not answer, and
    the guard fails closed: the text is neither passed nor blocked as if it were bad."""

    status = 503
    code = "guard_unavailable"

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
