"""Agentspec's execution engine: one image that becomes any agent described by a spec.

Owns the spec models (``agentspec_runtime.spec``: the single source of truth for the CRD
schemas, the operator's ConfigMap payload and the runtime config) and the command line.

Layers, imports pointing down only (checked by import-linter in the test suite)::

    cli        command line entry points (``agentspec ...``)
    api        HTTP apps: OpenAI-compatible API, A2A, health, metrics
    adapters   model client, MCP, A2A client, Redis, Kubernetes watch
    engine     the agent loop and hot reload over immutable config snapshots
    spec       pure data: pydantic models, invariants, CRD generation — no I/O

Must not: write to the Kubernetes API beyond its own status and Events, or import the
operator.
"""
