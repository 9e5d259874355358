"""A pod's volumes on the host, as a kubelet lays them out before its containers start.

``emptyDir`` is a directory (mode 0777, group ``fsGroup``); ``configMap``, ``secret``,
``downwardAPI`` and ``projected`` (with ``serviceAccountToken`` from the TokenRequest API,
bound to the pod, with the projection's audience and expiry) are written the way the
kubelet's atomic writer does — files in a timestamped directory published by swapping the
``..data`` symlink — so a refresh (a rotated token, an edited ConfigMap) is seen whole by
readers. Tokens are refreshed at 80 % of their lifetime; content is re-read every
``REFRESH_SECONDS``. Any other volume type is refused (:class:`VolumeError`).
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import KubeApi
from .podspec import Lookup

__all__ = ["PodVolumes", "VolumeError", "write_atomically"]

Json = dict[str, Any]
REFRESH_SECONDS = 5.0
DEFAULT_TOKEN_SECONDS = 3607


class VolumeError(Exception):
    """A volume could not be set up (yet): the pod waits in ContainerCreating and retries."""


def write_atomically(directory: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Publish ``files`` (relative path → (content, mode)) under ``directory``; False when
    they are what is already there."""
    directory.mkdir(parents=True, exist_ok=True)
    current = directory / "..data"
    if current.is_symlink() and _same(directory / os.readlink(current), files):
        return False
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    for rel, (content, mode) in files.items():
        path = stamp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    stamp.chmod(0o755)
    link = directory / "..data_tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(stamp.name)
    old = os.readlink(current) if current.is_symlink() else None
    link.replace(current)
    for rel in {r.split("/")[0] for r in files}:
        user_link = directory / rel
        if not user_link.is_symlink():
            user_link.symlink_to(f"..data/{rel}")
    if old is not None:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def _same(published: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    try:
        return all((published / rel).read_bytes() == content for rel, (content, _) in files.items())
    except OSError:
        return False


def _items(
    data: dict[str, bytes], items: list[Json] | None, mode: int
) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    out = {}
    for item in items:
        key = str(item["key"])
        if key in data:
            out[str(item["path"])] = (data[key], int(item.get("mode", mode)))
    return out


@dataclass
class PodVolumes:
    """The volumes of one pod under ``root`` (``<state>/pods/<uid>/volumes``)."""

    api: KubeApi
    lookup: Lookup
    pod: Json
    root: Path
    fs_group: int | None
    paths: dict[str, Path] = field(default_factory=dict)
    _token_expiry: dict[tuple[str, int], float] = field(default_factory=dict)
    _tokens: dict[tuple[str, int], bytes] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    async def sync(self) -> None:
        """Create or refresh every volume; raises :class:`VolumeError` to be retried."""
        for volume in (self.pod.get("spec") or {}).get("volumes") or []:
            name = str(volume["name"])
            path = self.root / name
            self.paths[name] = path
            if "emptyDir" in volume:
                if not path.is_dir():
                    path.mkdir(parents=True)
                    path.chmod(0o777)
                    if self.fs_group is not None:
                        os.chown(path, -1, self.fs_group)
                        path.chmod(0o2777)
                continue
            files = await self._files(volume)
            if write_atomically(path, files) and self.fs_group is not None:
                for dirpath, _dirs, names in os.walk(path):
                    for n in names:
                        os.chown(os.path.join(dirpath, n), -1, self.fs_group)

    async def _files(self, volume: Json) -> dict[str, tuple[bytes, int]]:
        if "configMap" in volume:
            return await self._object_files("configmaps", volume["configMap"], 0o644)
        if "secret" in volume:
            src = dict(volume["secret"])
            src["name"] = src.get("secretName")
            return await self._object_files("secrets", src, 0o644)
        if "downwardAPI" in volume:
            return self._downward(volume["downwardAPI"].get("items") or [], 0o644)
        if "projected" in volume:
            projected = volume["projected"]
            mode = int(projected.get("defaultMode", 0o644))
            files: dict[str, tuple[bytes, int]] = {}
            for source in projected.get("sources") or []:
                if "serviceAccountToken" in source:
                    files.update(await self._token(source["serviceAccountToken"], mode))
                elif "configMap" in source:
                    files.update(await self._object_files("configmaps", source["configMap"], mode))
                elif "secret" in source:
                    files.update(await self._object_files("secrets", source["secret"], mode))
                elif "downwardAPI" in source:
                    files.update(self._downward(source["downwardAPI"].get("items") or [], mode))
                else:
                    raise VolumeError(f"projected source {sorted(source)} is not supported")
            return files
        kinds = sorted(k for k in volume if k != "name")
        raise VolumeError(f"volume {volume['name']!r}: type {kinds} is not supported")

    async def _object_files(self, kind: str, src: Json, mode: int) -> dict[str, tuple[bytes, int]]:
        obj = await self.lookup(kind, self.namespace, str(src.get("name", "")))
        if obj is None:
            if src.get("optional"):
                return {}
            raise VolumeError(f'{kind[:-1]} "{src.get("name")}" not found')
        mode = int(src.get("defaultMode", mode))
        if kind == "secrets":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return _items(data, src.get("items"), mode)

    def _downward(self, items: list[Json], mode: int) -> dict[str, tuple[bytes, int]]:
        meta = self.pod.get("metadata") or {}
        out = {}
        for item in items:
            path = str(item.get("fieldRef", {}).get("fieldPath", ""))
            if path in ("metadata.namespace", "metadata.name", "metadata.uid"):
                value = str(meta.get(path.split(".")[1], ""))
            elif path in ("metadata.labels", "metadata.annotations"):
                entries = meta.get(path.split(".")[1]) or {}
                value = "\n".join(f'{k}="{v}"' for k, v in sorted(entries.items()))
            else:
                raise VolumeError(f"downwardAPI field {path!r} is not supported")
            out[str(item["path"])] = (value.encode(), int(item.get("mode", mode)))
        return out

    async def _token(self, src: Json, mode: int) -> dict[str, tuple[bytes, int]]:
        audience = str(src.get("audience", ""))
        seconds = int(src.get("expirationSeconds", DEFAULT_TOKEN_SECONDS))
        key = (audience, seconds)
        now = time.monotonic()
        if key not in self._tokens or now >= self._token_expiry[key]:
            meta = self.pod["metadata"]
            spec: Json = {
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
            if audience:
                spec["audiences"] = [audience]
            account = (self.pod.get("spec") or {}).get("serviceAccountName") or "default"
            try:
                review = await self.api.request(
                    "POST",
                    f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
                    body={
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenRequest",
                        "spec": spec,
                    },
                )
            except Exception as e:
                raise VolumeError(f"cannot request a token for {account}: {e}") from e
            status = review.get("status") or {}
            self._tokens[key] = str(status["token"]).encode()
            expires = datetime.datetime.fromisoformat(
                str(status["expirationTimestamp"]).replace("Z", "+00:00")
            )
            lifetime = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
            # the kubelet's rule: refresh at 80 % of the lifetime (and at least daily)
            self._token_expiry[key] = now + min(0.8 * max(lifetime, 1.0), 86400.0)
        return {str(src.get("path", "token")): (self._tokens[key], mode)}
