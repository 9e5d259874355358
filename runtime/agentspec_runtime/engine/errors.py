"""The engine's exception tree, classified by what the caller should do next.

::

    AgentspecError
    ├── RequestError          the caller's request is wrong: answer 4xx, change nothing
    │   ├── UnknownModelError     ``model`` is not this agent
    │   └── MissingVariableError  a required prompt variable has no value
    ├── ModelError            the model endpoint failed after retries: answer 502
    │   ├── ModelAuthError        the endpoint rejected our credentials
    │   └── ModelNotFoundError    the endpoint does not know the configured model
    ├── ToolError             one tool call failed: told to the model, never a crash
    ├── ConfigError           a config update is invalid: reject it, keep the last good one
    ├── NotReadyError         no config loaded yet, or draining: answer 503
    └── MemoryUnavailableError  the conversation store cannot be read: answer 503, retry
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


class ModelError(AgentspecError):
    """The model endpoint failed (after the client's retries)."""

    status = 502
    code = "model_error"


class ModelAuthError(ModelError):
    code = "model_auth_failed"


class ModelNotFoundError(ModelError):
    code = "model_not_found_at_endpoint"


class ToolError(AgentspecError):
    """A tool call failed; the message is what the model is told."""


class ConfigError(AgentspecError):
    """A config (or config update) cannot be loaded; the last good one keeps serving."""


class NotReadyError(AgentspecError):
    status = 503
    code = "not_ready"


class MemoryUnavailableError(AgentspecError):
    """The conversation store did not answer (answering without the history would be wrong)."""

    status = 503
    code = "memory_unavailable"
