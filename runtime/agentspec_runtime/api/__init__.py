"""HTTP APIs of the runtime: OpenAI-compatible chat completions, A2A, health, status, metrics.

Owns request parsing and validation (every bad input a clear 4xx), response shapes,
streaming, the A2A binding and the inbound checks (API keys, hop limit).

Must not: contain agent logic, or talk to models, MCP servers or Kubernetes itself — it
calls the engine.
"""
