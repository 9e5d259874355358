"""The execution engine: the agent loop and hot reload over immutable config snapshots.

Where things live:

* ``ports`` — every interface the adapters implement (model, tools, MCP, partners, secrets,
  memory) and the builders the entry point hands over: start here.
* ``types`` — the value types that cross the ports (messages, turns, tool specs, usage).
* ``agent`` — :class:`Engine`: load a config (hot reload), serve a request on a snapshot.
* ``assembly`` — a config becomes a snapshot: secrets read, resources from the pool.
* ``snapshot`` — immutable snapshots, their leases, the shared resource pool.
* ``loop`` — the think -> act -> observe loop as typed steps (concurrent tool calls,
  maxIterations); ``prompts`` — stable/canary selection, sticky per conversation;
  ``memory`` — conversation recall and compression; ``status`` — what /status says;
  ``telemetry`` — metrics and spans; ``breaker`` — circuit breakers; ``errors`` — the
  exception tree, classified by what the caller does next.

Must not: import adapters, HTTP frameworks or Kubernetes clients; read files, environment
or the network itself.
"""
