"""What may be shown of outbound endpoints and their answers: in /status, logs, errors, spans.

Never a credential: URLs lose their user info and query (a ``model.baseUrl`` or an
McpServer ``url`` may carry a key there), and text that came back from an upstream — which
may echo the request, ``Authorization`` header included — has every secret value the agent
sent it masked before it is logged or handed to a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "[redacted]"
_MIN_SECRET = 4  # shorter values would mask innocent text, and are no real secret anyway


def redis_location(url: str) -> str:
    """A Redis URL without credentials (for status, logs and errors)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: scheme, host, port and path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value masked (longest first)."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
