"""Where a ``documents`` knowledge source's texts come from (``ports.DocumentsFeed``).

In a cluster, the ConfigMap the source names, read and watched through the API like the
agent's own config (the operator's Role lets the agent read that ConfigMap by name, nothing
else); ``binaryData`` keys are not documents. Locally, the folder named like the ConfigMap in
one of the documents folders (``AGENTSPEC_DOCUMENTS_DIR``: the spec files' folders under
``agentspec up``, else the config file's): each file directly in it is one key, as
``kubectl create configmap NAME --from-file=FOLDER`` would make it, so the same folder serves
both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from agentspec_runtime.engine.errors import ConfigError, DocumentsGoneError

from .config_sources import watch_config_map_data

if TYPE_CHECKING:
    from lightkube import AsyncClient

MAX_BYTES = 1 << 20
"""A folder holds at most what a ConfigMap can (1 MiB): bigger corpora go behind an MCP tool."""


class ConfigMapDocuments:
    def __init__(self, client: AsyncClient, *, name: str, namespace: str) -> None:
        self._client = client
        self._name = name
        self._namespace = namespace

    @property
    def location(self) -> str:
        return f"ConfigMap {self._namespace}/{self._name}"

    async def watch(self, stop: asyncio.Event) -> AsyncIterator[Mapping[str, str] | Exception]:
        async for data in watch_config_map_data(
            self._client, name=self._name, namespace=self._namespace, stop=stop
        ):
            yield DocumentsGoneError(f"{self.location} was deleted") if data is None else data


class FolderDocuments:
    """The regular files of the first ``<dir>/<name>/`` that exists among ``dirs`` (hidden
    files and symbolic links are not documents: a link could point anywhere)."""

    def __init__(self, name: str, dirs: Sequence[Path]) -> None:
        self._name = name
        self._dirs = [d.resolve() for d in dirs]

    def _folder(self) -> Path | None:
        for d in self._dirs:
            with contextlib.suppress(OSError):
                if (d / self._name).is_dir():
                    return d / self._name
        return None

    @property
    def location(self) -> str:
        folder = self._folder()
        return str(folder) if folder else f"folder {self._name!r} (not found)"

    def read(self) -> dict[str, str] | Exception:
        folder = self._folder()
        if folder is None:
            where = ", ".join(map(str, self._dirs)) or "no documents folder"
            return ConfigError(
                f"no folder {self._name!r} in {where}: locally, the documents of ConfigMap "
                f"{self._name!r} are the files of a folder of that name beside the spec"
            )
        documents: dict[str, str] = {}
        size = 0
        try:
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or path.is_symlink() or not path.is_file():
                    continue
                size += path.stat().st_size
                if size > MAX_BYTES:
                    return ConfigError(
                        f"{folder} holds more than a ConfigMap can (1 MiB): serve a corpus this "
                        "big through an mcpTool knowledge source"
                    )
                try:
                    documents[path.name] = path.read_bytes().decode()
                except UnicodeDecodeError:
                    return ConfigError(f"{path} is not UTF-8 text")
        except OSError as e:
            return ConfigError(f"cannot read {folder}: {e.strerror}")
        return documents

    async def watch(self, stop: asyncio.Event) -> AsyncIterator[Mapping[str, str] | Exception]:
        """The folder's documents now and after each change; watched without recursion (the
        spec folders, for the documents folder to appear or go, and the documents folder)."""
        last = await asyncio.to_thread(self.read)
        yield last
        while not stop.is_set():
            folder = self._folder()
            paths = [d for d in self._dirs if d.is_dir()] + ([folder] if folder else [])
            if not paths:
                return
            async for _changes in watchfiles.awatch(
                *paths,
                stop_event=stop,
                recursive=False,
                debounce=50,
                step=10,
                rust_timeout=200,
            ):
                current = await asyncio.to_thread(self.read)
                if isinstance(current, dict) and current == last:
                    continue
                if self._folder() != folder:  # the folder came or went: watch anew
                    gone = folder is not None and self._folder() is None
                    last = current
                    yield DocumentsGoneError(f"{folder} was deleted") if gone else current
                    break
                last = current
                yield current
