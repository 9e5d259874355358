"""The execution engine: the agent loop and hot reload over immutable config snapshots.

Owns the think -> act -> observe loop (typed steps, concurrent tool calls, maxIterations),
prompt selection and rendering (stable/canary, sticky per conversation), the snapshot
holder that swaps configs atomically while in-flight requests finish on theirs, and the
engine's metrics and spans.

Talks to the outside only through narrow interfaces (``ModelClient``, ``ToolSource``,
``SecretResolver``) implemented in ``agentspec_runtime.adapters``.

Must not: import adapters, HTTP frameworks or Kubernetes clients; read files, environment
or the network itself.
"""
