"""The demo's expense-tools MCP server (streamable HTTP), a real ``mcp`` server.

Run: ``python -m agentspec_runtime.demo.expense_tools --port 8300`` (or PORT). The
multi-agent example's McpServer names this command in its ``agentspec.io/local-command``
annotation, so ``agentspec up`` starts it; in a cluster, deploy any server at the URL instead.
"""

from __future__ import annotations

import argparse
import json
import os

from mcp.server.mcpserver import MCPServer

CLAIMS = {
    "EXP-1001": {
        "employee": "Ada Lovelace",
        "amount": "142.50 EUR",
        "category": "travel",
        "status": "approved",
    },
    "EXP-1002": {
        "employee": "Alan Turing",
        "amount": "38.00 EUR",
        "category": "meals",
        "status": "pending",
    },
}
POLICIES = {
    "travel": "Economy class for flights under 6 hours; hotels up to 150 EUR per night.",
    "meals": "Up to 40 EUR per person per day; alcohol is not reimbursed.",
    "equipment": "Purchases over 1000 EUR need prior approval by a manager.",
}


def build() -> MCPServer:
    server = MCPServer("agentspec-demo-expense-tools", version="1.0.0")

    @server.tool()
    def lookup_claim(claim_id: str) -> str:
        """Look up an expense claim by id (for example EXP-1001)."""
        claim = CLAIMS.get(claim_id.strip().upper())
        if claim is None:
            raise ValueError(f"no expense claim {claim_id!r}")
        return json.dumps(claim, sort_keys=True)

    @server.tool()
    def expense_policy(topic: str) -> str:
        """The expense policy for a topic: travel, meals or equipment."""
        for name, text in POLICIES.items():
            if name in topic.lower():
                return text
        return "Topics: " + ", ".join(POLICIES)

    return server


def main() -> None:
    parser = argparse.ArgumentParser(prog="expense-tools")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8300")))
    args = parser.parse_args()
    import uvicorn

    # The library guards against DNS rebinding only when it knows it serves localhost; bound to
    # every address (a pod behind its Service) it must accept the Service names as Host.
    app = build().streamable_http_app(host=args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
