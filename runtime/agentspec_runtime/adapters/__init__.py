"""Adapters: the engine's interfaces implemented against the outside world.

Owns the implementations of ``engine.ports``: the OpenAI-compatible model client, MCP
connections, A2A partner clients, memory stores (in-process, Redis), secret resolution,
plus config sources (a file, a Kubernetes ConfigMap) and credential-free URLs (``urls``).
Library errors are translated here, at the boundary, into the engine's own exception tree
(``raise ... from e``).

Must not: contain agent logic (that is the engine's), serve HTTP (that is the API's), or
write to the Kubernetes API beyond the agent's own Events.
"""
