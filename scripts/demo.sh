#!/usr/bin/env bash
# The local demo: a router agent that delegates to HR and finance agents over A2A (finance
# uses an MCP tool) — no cluster, no API key (the offline demo model answers, and says so).
# Set OPENAI_BASE_URL / OPENAI_API_KEY to use a real model instead.
# Interactive: keeps running, hot-reloading examples/multi-agent on save, until Ctrl-C.
# Non-interactive (CI, no terminal): answers the three questions (one conversation) and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python-only
# --run-local-commands: the example's MCP server is the bundled demo (a printed command).
args=(examples/multi-agent --run-local-commands --agent router
      --ask "How many leave days do I have?"
      --ask "What is the travel expense policy?"
      --ask "What did I ask before?")
if [[ -n "${CI:-}" || ! -t 0 ]]; then args+=(--exit); fi
exec .venv/bin/agentspec up "${args[@]}"
