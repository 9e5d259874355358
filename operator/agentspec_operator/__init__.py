"""Agentspec's operator: reconciles AgentSpec, PromptTemplate and McpServer resources.

Owns rendering and applying each agent's children (ConfigMap with the resolved config,
Deployment of the shared runtime image, Service, RBAC, HPA, PDB, NetworkPolicy) and the
status of the three custom resources.

What is kopf and what is ours, and why:

* **kopf** (``handlers``) does the watching: list+watch streams with reconnects, the login,
  and *indexes* (``world``) that keep every AgentSpec, PromptTemplate, McpServer, Deployment
  and ConfigMap the operator reads in memory. Only level-style features are used
  (``@kopf.index``, ``@kopf.on.event``), so kopf never writes to user objects: no finalizers,
  no annotations, no ``status.kopf`` — Argo CD sees no drift.
* **Our controller machinery** decides and acts: ``controller`` routes every cause to keys
  (the agent, the dependants of a PromptTemplate, McpServer or partner, the owner of a
  child), ``workqueue`` coalesces them (client-go semantics: one reconcile per burst, never
  two at once for one key, retried with backoff), ``reconcile`` makes an agent's children
  match its spec (one level-based function for every cause), ``mcp_servers`` probes McpServers
  on their interval, ``leader`` elects one active replica through a Lease. kopf's own
  cause-based handlers, per-object timers and retries would write to the objects (finalizers,
  annotations) and could not coalesce a burst across related objects, hence ours.
* Pure functions: ``render`` (the wanted children; ``render_meta``, ``render_workload``,
  ``render_policy``) and ``status`` (conditions from the world), tested without a cluster.
  ``kube`` is the one seam to the API (server-side apply, status patches, Events).

Must not: call a model or run an agent (it never sits on the request path); import the
runtime's engine, adapters or APIs — only its spec models.
"""
