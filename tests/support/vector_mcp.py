"""A knowledge base too big for a ConfigMap: a real vector store (Qdrant, local mode, on disk)
behind a small MCP server, the way issue 17 says large corpora reach an agent (its
``mcpTool`` knowledge source).

The child (``python -m tests.support.vector_mcp --port N --corpus FILE --store DIR
--embeddings-url URL``) reads the corpus (JSON lines ``{"document", "chunk", "text"}``),
embeds every text through the OpenAI-compatible ``/embeddings`` endpoint it is given (the
fake LLM's), stores the vectors and payloads in a Qdrant collection on disk, and serves one
MCP tool, ``search_knowledge(query, limit)``: the query embedded the same way, the nearest
chunks as a JSON list of ``{"text", "document", "chunk", "score"}``. The port is bound first;
``GET /healthz`` answers once the corpus is stored; ``GET /calls`` counts the searches by
``limit`` (``{"search_knowledge:limit=2": 1}``).

:class:`VectorMcpServer` runs that child on a free port (``with VectorMcpServer(...) as s``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from . import mcp_servers
from .mcp_servers import _ChildServer, _http_ok, _wrap_app

COLLECTION = "knowledge"
BATCH = 256


def _embed(client: httpx.Client, url: str, texts: Sequence[str]) -> list[list[float]]:
    response = client.post(f"{url}/embeddings", json={"model": "fake-embed", "input": list(texts)})
    response.raise_for_status()
    rows = sorted(response.json()["data"], key=lambda row: row["index"])
    return [row["embedding"] for row in rows]


def serve(*, port: int, corpus: Path, store: Path, embeddings_url: str) -> None:
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from qdrant_client import QdrantClient, models

    # the port is held from the start (a parallel test cannot take it while the corpus is
    # embedded); connections wait in the backlog until it is stored and uvicorn serves
    sock = socket.create_server(("127.0.0.1", port), backlog=128)
    chunks = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
    http = httpx.Client(timeout=60)
    qdrant = QdrantClient(path=str(store))
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), BATCH):
        vectors += _embed(http, embeddings_url, [c["text"] for c in chunks[start : start + BATCH]])
    qdrant.create_collection(
        COLLECTION,
        vectors_config=models.VectorParams(size=len(vectors[0]), distance=models.Distance.COSINE),
    )
    qdrant.upload_points(
        COLLECTION,
        points=[
            models.PointStruct(id=i, vector=vector, payload=chunk)
            for i, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))
        ],
    )

    server: MCPServer = MCPServer("agentspec-test-vector-store", version="1.0.0")

    def search_knowledge(query: str, limit: int = 5) -> str:
        """Search the knowledge base by meaning; returns the nearest passages as JSON."""
        key = f"search_knowledge:limit={limit}"
        mcp_servers._CALLS[key] = mcp_servers._CALLS.get(key, 0) + 1  # GET /calls
        (vector,) = _embed(http, embeddings_url, [query])
        found = qdrant.query_points(COLLECTION, query=vector, limit=limit).points
        hits: list[dict[str, Any]] = [
            {**(point.payload or {}), "score": round(point.score, 4)} for point in found
        ]
        return json.dumps(hits)

    server.add_tool(search_knowledge)
    app = _wrap_app(server.streamable_http_app(), required_header=None)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.vector_mcp")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--embeddings-url", required=True)
    args = parser.parse_args(argv)
    serve(port=args.port, corpus=args.corpus, store=args.store, embeddings_url=args.embeddings_url)


class VectorMcpServer(_ChildServer):
    """The vector-store MCP server in a child process; ``url`` ends in ``/mcp``."""

    name = "vector-mcp"
    path = "/mcp"

    def __init__(self, *, corpus: Path, embeddings_url: str, ready_timeout: float = 90.0) -> None:
        super().__init__(ready_timeout=ready_timeout)
        self.corpus = corpus
        self.embeddings_url = embeddings_url

    def _argv(self, port: int) -> list[str]:
        assert self._tmp_dir is not None
        return [
            sys.executable,
            "-m",
            "tests.support.vector_mcp",
            "--port",
            str(port),
            "--corpus",
            str(self.corpus),
            "--store",
            str(self._tmp_dir / f"qdrant-{port}"),
            "--embeddings-url",
            self.embeddings_url,
        ]

    def _ready(self, port: int) -> bool:
        return _http_ok(f"http://{self.host}:{port}/healthz")

    def start(self) -> VectorMcpServer:
        super().start()
        return self

    def calls(self) -> dict[str, int]:
        answer: dict[str, int] = httpx.get(f"http://{self.host}:{self.port}/calls").json()
        return answer


if __name__ == "__main__":
    main()
