"""The McpServer resource: one entry of the MCP registry."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ._base import (
    MAX_LIST,
    Conditions,
    HttpUrl,
    SpecModel,
    Text,
    has_userinfo,
    invariants,
    list_map,
    no_url_credentials,
    unique_keys,
)

HeaderName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class DeclaredValue(SpecModel):
    """A header or query parameter the server needs; each AgentSpec supplies the value."""

    name: HeaderName
    """Header or parameter name."""
    required: bool = True
    """Whether an AgentSpec using this server must supply a value."""
    description: Text = ""
    """What the value is (shown to agent authors)."""


_NO_URL_CREDENTIALS = no_url_credentials(
    "url", instead="declare headers or queryParams; each AgentSpec supplies them from Secrets"
)


class McpServerSpec(SpecModel):
    """Where an MCP server lives and what callers must send it."""

    model_config = ConfigDict(json_schema_extra=invariants(_NO_URL_CREDENTIALS))

    url: HttpUrl
    """Endpoint URL (.../mcp for streamable HTTP, .../sse for SSE)."""
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    """MCP transport."""
    description: Text = ""
    """What the server offers."""
    headers: Annotated[
        list[DeclaredValue], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """Headers the server requires (values come from each AgentSpec)."""
    query_params: Annotated[
        list[DeclaredValue], Field(max_length=MAX_LIST, json_schema_extra=list_map("name"))
    ] = Field(default_factory=list)
    """Query parameters the server requires (values come from each AgentSpec)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30
    """Timeout of one tool call, in seconds."""
    probe_interval_seconds: Annotated[int, Field(ge=5, le=86400)] = 60
    """How often the operator re-lists the server's tools."""

    @model_validator(mode="after")
    def _check(self) -> McpServerSpec:
        unique_keys(self.headers, "name", field="headers")
        unique_keys(self.query_params, "name", field="queryParams")
        _NO_URL_CREDENTIALS.check(not has_userinfo(self.url))
        return self


class DiscoveredTool(SpecModel):
    """A tool the operator found on the server."""

    name: str
    """Tool name."""
    description: str = ""
    """Tool description as the server reports it."""


class McpServerStatus(SpecModel):
    """Observed state of an McpServer, from the operator's probe."""

    conditions: Conditions = Field(default_factory=list)
    """Ready when the server answered the last probe."""
    observed_generation: int | None = None
    """The metadata.generation the operator last probed."""
    tools: Annotated[list[DiscoveredTool], Field(max_length=1024)] = Field(default_factory=list)
    """Tools discovered by the last successful probe."""
    tool_count: int | None = None
    """Number of discovered tools."""
    last_probe_time: str | None = None
    """When the server was last probed (RFC 3339)."""
