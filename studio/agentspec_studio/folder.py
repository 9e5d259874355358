"""Folder mode (``agentspec studio FOLDER``): the YAML files ``agentspec up`` runs stand in
for the cluster. Reads are the files' documents; a save is checked as ``agentspec validate``
would check the folder with it (schema, references) and written into the file that holds the
object (only that document is rewritten: the others keep their text and comments), or into
a new ``<kind>-<name>.yaml``; the running agents hot-reload the file. An agent is Ready when
the process ``agentspec up`` started for it answers ``/readyz`` (its registry:
``~/.cache/agentspec/up-agents.json``); the playground talks to that process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import watchfiles
import yaml

from agentspec_runtime.spec.bundle import Bundle
from agentspec_runtime.spec.crd import all_crds
from agentspec_runtime.specfiles import read, yaml_files

from .views import Json, KubeApiError, answer_of

REGISTRY = Path.home() / ".cache" / "agentspec" / "up-agents.json"
KINDS = ("AgentSpec", "PromptTemplate", "McpServer")
_SEPARATOR = re.compile(r"^(---[ \t]*(?:#[^\n]*)?\r?)$", re.MULTILINE)
API_VERSION = "agentspec.io/v1alpha1"


class _Dumper(yaml.SafeDumper):
    """Multi-line text (a prompt template) as a literal block, as people write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _split(text: str) -> tuple[list[str], list[str]]:
    """A file's documents as text, and the separator lines between them (kept as written,
    a comment on one included): ``_join`` puts them back together."""
    pieces = _SEPARATOR.split(text)
    return pieces[0::2], pieces[1::2]


def _join(parts: list[str], separators: list[str]) -> str:
    out = parts[0]
    for separator, part in zip(separators, parts[1:], strict=True):
        out += separator + part
    return out


def _key(doc: Any) -> tuple[str, str] | None:
    if not isinstance(doc, dict):
        return None
    return str(doc.get("kind")), str((doc.get("metadata") or {}).get("name"))


class Folder:
    namespace = "default"

    def __init__(self, folder: Path, *, registry: Path = REGISTRY) -> None:
        self.folder = folder.resolve()
        self.registry = registry

    # -- reading ------------------------------------------------------------------------

    def _documents(self) -> list[tuple[Path, int, Json]]:
        """Every document of every file: (file, index of its text among the file's parts,
        body); a part index of -1: the file cannot be rewritten document by document."""
        files, _ = yaml_files([self.folder])
        out: list[tuple[Path, int, Json]] = []
        for path in files:
            try:
                text = path.read_text()
                whole = [d for d in yaml.safe_load_all(text) if d is not None]
            except (OSError, yaml.YAMLError):
                continue  # _problems says so
            parts: list[tuple[int, Any]] = []
            try:
                parts = [(i, yaml.safe_load(part)) for i, part in enumerate(_split(text)[0])]
            except yaml.YAMLError:
                parts = []
            split = [(i, d) for i, d in parts if d is not None]
            if [d for _, d in split] == whole:
                out += [(path, i, d) for i, d in split if isinstance(d, dict)]
            else:  # separators this splitting does not know: read, but never rewrite
                out += [(path, -1, d) for d in whole if isinstance(d, dict)]
        return out

    def _problems(self) -> list[str]:
        """What keeps the folder from loading at all (a file that is not YAML)."""
        _, _, problems = read([self.folder])
        return [p for p in problems if "not valid YAML" in p or "not a mapping" in p]

    def _urls(self) -> dict[str, str]:
        try:
            data = json.loads(self.registry.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    async def check(self) -> None:
        if not self.folder.is_dir():
            raise KubeApiError(503, f"the folder {self.folder} is not there")

    async def _with_status(self, doc: Json) -> Json:
        out = copy.deepcopy(doc)
        out.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        if doc.get("kind") != "AgentSpec":
            return out
        url = self._urls().get(out["metadata"].get("name", ""))
        ready, reason = False, "NotRunning"
        if url:
            try:
                async with httpx2.AsyncClient(timeout=2) as client:
                    ready = (await client.get(f"{url}/readyz")).status_code == 200
                reason = "Running" if ready else "NotReady"
            except httpx2.HTTPError:
                reason = "NotRunning"
        message = f"served at {url}" if ready else "not running: start it with agentspec up"
        out["status"] = {
            "conditions": [
                {"type": "Ready", "status": str(ready), "reason": reason, "message": message}
            ],
            **({"agentCard": f"{url}/.well-known/agent-card.json"} if url else {}),
        }
        return out

    async def list_of(self, kind: str, namespace: str) -> list[Json]:
        del namespace
        docs = [d for _, _, d in self._documents() if d.get("kind") == kind]
        return [await self._with_status(d) for d in docs]

    async def get(self, kind: str, namespace: str, name: str) -> Json | None:
        del namespace
        for _, _, doc in self._documents():
            if _key(doc) == (kind, name):
                found = await self._with_status(doc)
                found["metadata"].setdefault("uid", f"{kind}/{name}")
                return found
        return None

    async def events(self, namespace: str, kind: str, name: str) -> list[Json]:
        return []

    async def children(self, namespace: str, name: str, uid: str) -> list[Json]:
        return []

    async def schema(self, kind: str) -> Json:
        for crd in all_crds().values():
            if crd["spec"]["names"]["kind"] == kind:
                schema: Json = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                return schema
        raise KubeApiError(404, f"the Studio does not edit kind {kind!r}")

    # -- writing ------------------------------------------------------------------------

    def _as_in_file(self, obj: Json, documents: list[Json]) -> Json:
        """``obj`` as its document would read in the file: no status or server fields, and
        a namespace only when the file's document has one (or the object names another)."""
        body = copy.deepcopy(obj)
        body.pop("status", None)
        meta = body.setdefault("metadata", {})
        for noise in ("uid", "resourceVersion", "managedFields", "generation"):
            meta.pop(noise, None)
        original = next((d for d in documents if _key(d) == _key(body)), None)
        had = (original or {}).get("metadata", {}).get("namespace")
        if had is None and meta.get("namespace") in (None, self.namespace):
            meta.pop("namespace", None)
        return body

    def _validated(self, obj: Json) -> Json:
        """``obj`` as it would be written, checked with the folder's other documents as
        ``agentspec validate`` checks them; raises naming every problem."""
        if obj.get("kind") not in KINDS or obj.get("apiVersion") != API_VERSION:
            raise KubeApiError(
                422,
                f"the Studio edits {', '.join(KINDS)} of apiVersion {API_VERSION}, not "
                f"{obj.get('apiVersion')!r} {obj.get('kind')!r}",
            )
        documents = [d for _, _, d in self._documents()]  # the files, read once
        body = self._as_in_file(obj, documents)
        problems = self._problems()
        docs = [d for d in documents if _key(d) != _key(body)] + [body]
        bundle, schema = Bundle.of(
            ((d, f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}") for d in docs),
            namespace=self.namespace,
        )
        problems = problems or schema or bundle.problems()
        if problems:
            raise KubeApiError(
                422,
                "the folder would not be valid",
                [{"field": "", "message": p, "reason": "Invalid"} for p in problems],
            )
        return body

    async def apply(self, obj: Json, namespace: str, *, dry_run: bool, force: bool = False) -> Json:
        del namespace, force
        body = self._validated(obj)
        if not dry_run:
            self._write(body)
        done = copy.deepcopy(body)
        done.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        return done

    async def replace(self, obj: Json, namespace: str) -> Json:
        return await self.apply(obj, namespace, dry_run=False)

    def _write(self, body: Json) -> None:
        text = yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        for path, index, doc in self._documents():
            if _key(doc) != _key(body):
                continue
            if index < 0:
                raise KubeApiError(
                    409,
                    f"{path} separates its documents in a way the Studio does not rewrite "
                    "safely: edit that file by hand",
                )
            parts, separators = _split(path.read_text())
            # the comment lines that open the document stay; its YAML is replaced
            opening = []
            for line in parts[index].lstrip("\n").splitlines():
                if not line.startswith("#"):
                    break
                opening.append(line + "\n")
            parts[index] = ("\n" if index else "") + "".join(opening) + text
            self._save(path, _join(parts, separators))
            return
        kind, name = _key(body) or ("object", "new")
        self._save(self.folder / f"{kind.lower()}-{name}.yaml", text)

    @staticmethod
    def _save(path: Path, text: str) -> None:
        """Atomically (a rename): the agents never read a half-written file."""
        scratch = path.with_name(f".{path.name}.studio-tmp")
        scratch.write_text(text)
        os.replace(scratch, path)

    # -- live and the playground --------------------------------------------------------

    async def watch(self, namespace: str) -> AsyncIterator[Json]:
        del namespace
        async for _changes in watchfiles.awatch(self.folder, debounce=100, step=20):
            yield {"kind": "*", "type": "MODIFIED", "name": None}
            await asyncio.sleep(0)

    async def proxy_post(
        self,
        namespace: str,
        service: str,
        path: str,
        body: Json,
        *,
        port: int,
        headers: dict[str, str],
    ) -> tuple[int, Json]:
        async with self.proxy_stream(
            namespace, service, path, body, port=port, headers=headers
        ) as response:
            await response.aread()
        return response.status_code, answer_of(response.text)

    async def proxy_get(
        self, namespace: str, service: str, path: str, *, port: int
    ) -> tuple[int, Json]:
        del namespace, port
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self._url_of(service)}/{path.lstrip('/')}")
        return response.status_code, answer_of(response.text)

    def _url_of(self, service: str) -> str:
        url = self._urls().get(service)
        if url is None:
            raise KubeApiError(503, f"agent {service!r} is not running: start it with agentspec up")
        return url

    @contextlib.asynccontextmanager
    async def proxy_stream(
        self,
        namespace: str,
        service: str,
        path: str,
        body: Json,
        *,
        port: int,
        headers: dict[str, str],
    ) -> AsyncIterator[httpx2.Response]:
        """The agent ``agentspec up`` runs under that name, its answer read as it comes."""
        del namespace, port
        url = self._url_of(service)
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=600.0)) as client,
            client.stream(
                "POST", f"{url}/{path.lstrip('/')}", json=body, headers=headers
            ) as answer,
        ):
            yield answer

    async def aclose(self) -> None:
        return None
