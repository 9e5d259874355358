"""Agentspec's operator: reconciles AgentSpec, PromptTemplate and McpServer resources.

Owns rendering and applying each agent's children (ConfigMap with the resolved config,
Deployment of the shared runtime image, Service, RBAC, HPA, PDB, NetworkPolicy) and the
status of the three custom resources.

Must not: call a model or run an agent (it never sits on the request path); import the
runtime's engine, adapters or APIs — only its spec models.
"""
