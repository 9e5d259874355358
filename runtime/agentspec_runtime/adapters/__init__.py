"""Adapters: the engine's interfaces implemented against the outside world.

Owns the OpenAI-compatible model client, MCP connections, config sources (a file, a
Kubernetes ConfigMap) and secret resolution. Library errors are translated here, at the
boundary, into the engine's own exception tree (``raise ... from e``).

Must not: contain agent logic (that is the engine's), serve HTTP (that is the API's), or
write to the Kubernetes API beyond the agent's own Events.
"""
