"""Agent Studio: a web application over the agents of a cluster (``agentspec studio``).

Layers, top to bottom (import-linter keeps them): ``main`` (the command) → ``app`` (the HTTP
API and server-sent events) → ``views`` (what the pages show and the edits they make, as
plain functions of Kubernetes objects) and ``cluster`` (the Kubernetes API, with the user's
own credentials). The Studio talks to the Kubernetes API only: never to an agent's
internals, never to the operator.
"""
