"""URLs as they may be shown: in /status, logs, errors and spans, never with credentials."""

from __future__ import annotations

from urllib.parse import urlsplit


def redis_location(url: str) -> str:
    """A Redis URL without credentials (for status, logs and errors)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"
