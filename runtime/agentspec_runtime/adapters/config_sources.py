"""Where an agent's config comes from: a file (local mode, tests) or its ConfigMap.

Both sources yield raw text; :func:`parse_config` turns text into an ``AgentConfig``. A file
may hold the operator's resolved payload (``kind: AgentConfig``, JSON or YAML) or the
documents a user would ``kubectl apply`` (an AgentSpec plus the PromptTemplates, McpServers
and partner AgentSpecs it references), resolved here exactly as the operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import watchfiles
import yaml

from agentspec_runtime.engine.errors import ConfigError
from agentspec_runtime.spec.bundle import Bundle
from agentspec_runtime.spec.resolved import CONFIG_KEY, AgentConfig, ResolutionError

if TYPE_CHECKING:  # lightkube is imported only in cluster mode
    from lightkube import AsyncClient

log = logging.getLogger(__name__)
LOCAL_URL_ANNOTATION = "agentspec.io/local-url"
"""Set by `agentspec up` on each AgentSpec: where that agent listens on this machine."""


def parse_config(
    text: str,
    *,
    agent: str | None = None,
    namespace: str = "default",
    partner_urls: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Parse a config file's or ConfigMap's text; raise ``ConfigError`` saying what is wrong."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML or JSON: {e}") from e
    if not docs:
        raise ConfigError("the config is empty")
    if len(docs) == 1 and isinstance(docs[0], dict) and docs[0].get("kind") == "AgentConfig":
        try:
            config = AgentConfig.model_validate(docs[0])
        except ValueError as e:
            raise ConfigError(f"invalid AgentConfig: {e}") from e
    else:
        config = _resolve_documents(docs, agent=agent, namespace=namespace)
    return with_partner_urls(config, partner_urls or {})


def _resolve_documents(docs: list[Any], *, agent: str | None, namespace: str) -> AgentConfig:
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ConfigError(f"document {i + 1} is not a mapping")
    bundle, problems = Bundle.of(
        ((doc, f"document {i + 1}") for i, doc in enumerate(docs)), namespace=namespace
    )
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        key = bundle.agent_key(agent)
    except LookupError as e:
        hint = " (--agent or AGENT_NAME)" if agent is None else " in the file"
        raise ConfigError(f"{e}{hint}") from e
    try:
        config = bundle.resolve(key)
    except ResolutionError as e:
        raise ConfigError(str(e)) from e
    # `agentspec up` writes where each agent listens into the file it watches, so agents it
    # starts later are reachable from those already running (the file hot-reloads).
    local = {
        name: r.metadata.annotations[LOCAL_URL_ANNOTATION]
        for (_, name), r in bundle.agents.items()
        if LOCAL_URL_ANNOTATION in r.metadata.annotations
    }
    return with_partner_urls(config, local)


def with_partner_urls(config: AgentConfig, urls: Mapping[str, str]) -> AgentConfig:
    """Point partners at local URLs (``AGENTSPEC_PARTNER_URLS``) instead of Service DNS."""
    if not urls or not any(p.name in urls for p in config.partners):
        return config
    partners = [
        p.model_copy(update={"url": urls[p.name]}) if p.name in urls else p for p in config.partners
    ]
    return config.model_copy(update={"partners": partners})


def parse_partner_urls(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"AGENTSPEC_PARTNER_URLS is not JSON: {e}") from e
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError("AGENTSPEC_PARTNER_URLS must be a JSON object of name -> URL")
    return {str(k): v for k, v in value.items()}


async def watch_file(path: Path, *, stop: asyncio.Event) -> AsyncIterator[str | Exception]:
    """The file's text now and after every change (editors' atomic renames included)."""
    path = path.resolve()  # noqa: ASYNC240 - once, before watching
    last: str | None = None

    def read() -> str | Exception:
        try:
            return path.read_text()
        except OSError as e:
            return ConfigError(f"cannot read {path}: {e.strerror}")

    first = read()
    last = first if isinstance(first, str) else None
    yield first
    # Watch the folder: an atomic save replaces the file, which a file watch would lose.
    async for changes in watchfiles.awatch(
        path.parent,
        stop_event=stop,
        debounce=50,
        step=10,
        rust_timeout=200,
        watch_filter=lambda _change, name: Path(name).resolve() == path,
    ):
        del changes
        current = read()
        if isinstance(current, str) and current == last:
            continue
        last = current if isinstance(current, str) else last
        yield current


async def watch_config_map(
    client: AsyncClient, *, name: str, namespace: str, stop: asyncio.Event
) -> AsyncIterator[str | Exception]:
    """The ConfigMap's payload now and on every change, through the API (not the kubelet's
    slow volume refresh); re-lists and re-watches after any watch error."""
    last: str | None = None
    async for data in watch_config_map_data(client, name=name, namespace=namespace, stop=stop):
        if isinstance(data, Exception):
            yield data
            continue
        if data is None:
            yield ConfigError(f"ConfigMap {namespace}/{name} was deleted")
            continue
        text = data.get(CONFIG_KEY)
        if text is None:
            yield ConfigError(f"ConfigMap {name} has no key {CONFIG_KEY!r}")
        elif text != last:
            last = text
            yield text


async def watch_config_map_data(
    client: AsyncClient, *, name: str, namespace: str, stop: asyncio.Event
) -> AsyncIterator[dict[str, str] | Exception | None]:
    """A ConfigMap's ``data`` after every (re-)list and whenever a watch event changes it,
    through the API; ``None`` when it is deleted. Re-lists and re-watches after any watch
    error (each yielded as ``ConfigError``; the next list's data says it is over)."""
    from lightkube.resources.core_v1 import ConfigMap

    last: dict[str, str] | None = None
    backoff = 0.2
    while not stop.is_set():
        try:
            cm = await client.get(ConfigMap, name, namespace=namespace)
            version = cm.metadata.resourceVersion if cm.metadata else None
            last = dict(cm.data or {})
            yield last
            backoff = 0.2
            async for op, obj in client.watch(
                ConfigMap,
                namespace=namespace,
                fields={"metadata.name": name},
                resource_version=version,
            ):
                if op == "DELETED":
                    last = None
                    yield None
                    continue
                if (obj.data or {}) != last:
                    last = dict(obj.data or {})
                    yield last
        except Exception as e:  # the API is down, the watch expired, we may not read it yet
            if stop.is_set():
                return
            log.info("ConfigMap %s/%s watch: %s; retrying", namespace, name, e)
            yield ConfigError(f"cannot read ConfigMap {namespace}/{name}: {e}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)
