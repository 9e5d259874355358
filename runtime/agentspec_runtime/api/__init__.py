"""HTTP APIs of the runtime: OpenAI-compatible chat completions, health, status, metrics.

Owns request parsing and validation (every bad input a clear 4xx), response shapes, and
streaming. The A2A binding joins here (the A2A issue).

Must not: contain agent logic, or talk to models, MCP servers or Kubernetes itself — it
calls the engine.
"""
