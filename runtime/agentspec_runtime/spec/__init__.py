"""Spec models: pure data describing agents, prompts and MCP servers — no I/O.

The single source of truth for the CRD schemas (``crd.py`` generates ``crds/*.yaml``),
the operator's ConfigMap payload and the runtime's configuration. Every rule the schema
cannot state is an :class:`Invariant`, enforced both as CEL by the apiserver and here.

Must not: perform I/O, import network or Kubernetes libraries, or depend on the engine.
"""

from ._base import API_VERSION, GROUP, VERSION, Condition, Invariant, SecretKeySelector
from .agent import AgentSpec, AgentSpecStatus
from .mcp_server import McpServerSpec, McpServerStatus
from .prompt import PromptTemplateSpec, PromptTemplateStatus
from .resources import (
    KINDS,
    AgentResource,
    AnyResource,
    Kind,
    McpServerResource,
    PromptTemplateResource,
    SpecError,
    parse_resource,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "AgentResource",
    "AgentSpec",
    "AgentSpecStatus",
    "AnyResource",
    "Condition",
    "Invariant",
    "Kind",
    "McpServerResource",
    "McpServerSpec",
    "McpServerStatus",
    "PromptTemplateResource",
    "PromptTemplateSpec",
    "PromptTemplateStatus",
    "SecretKeySelector",
    "SpecError",
    "parse_resource",
]
