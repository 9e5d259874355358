"""Secret values, read only when a config is loaded and never logged.

In a cluster the runtime reads the Secrets its config references through the API (its
Role names exactly those Secrets), so adding or rotating a Secret is a hot change. Locally,
a value comes from ``AGENTSPEC_SECRETS_DIR/<secret>/<key>`` (the layout of a mounted Secret)
or from the environment variable ``AGENTSPEC_SECRET_<SECRET>_<KEY>``.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agentspec_runtime.engine.errors import ConfigError
from agentspec_runtime.spec._base import SecretKeySelector

if TYPE_CHECKING:  # lightkube is imported only in cluster mode
    from lightkube import AsyncClient


def env_name(ref: SecretKeySelector) -> str:
    return "AGENTSPEC_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{ref.name}_{ref.key}".upper())


class LocalSecrets:
    """Secrets from a folder or the environment (local mode and tests)."""

    def __init__(
        self, *, directory: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        self._directory = directory
        self._environ = os.environ if environ is None else environ

    async def get(self, ref: SecretKeySelector) -> str:
        if self._directory is not None:
            path = self._directory / ref.name / ref.key
            if path.is_file():
                return path.read_text().strip()
        name = env_name(ref)
        if name in self._environ:
            return self._environ[name]
        raise ConfigError(
            f"Secret {ref.name!r} key {ref.key!r} is not available: set {name}"
            + (f" or create {self._directory / ref.name / ref.key}" if self._directory else "")
        )

    async def get_all(self, name: str) -> dict[str, str]:
        values: dict[str, str] = {}
        folder = self._directory / name if self._directory is not None else None
        if folder is not None and folder.is_dir():
            values = {p.name: p.read_text().strip() for p in folder.iterdir() if p.is_file()}
        prefix = "AGENTSPEC_SECRET_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"
        for key, value in self._environ.items():
            if key.startswith(prefix):
                values.setdefault(key.removeprefix(prefix).lower(), value)
        if not values:
            raise ConfigError(
                f"Secret {name!r} is not available: set {prefix}<KEY> variables"
                + (f" or create files in {folder}" if folder else "")
            )
        return values


class KubeSecrets:
    """Secrets from the agent's own namespace, through the Kubernetes API."""

    def __init__(self, client: AsyncClient, *, namespace: str) -> None:
        self._client = client
        self._namespace = namespace

    async def get(self, ref: SecretKeySelector) -> str:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Secret

        where = f"Secret {self._namespace}/{ref.name}"
        try:
            secret = await self._client.get(Secret, ref.name, namespace=self._namespace)
        except ApiError as e:
            raise ConfigError(f"cannot read {where}: {e.status.reason or e.status.code}") from e
        data = secret.data or {}
        if ref.key in data:
            try:
                return base64.b64decode(data[ref.key]).decode()
            except ValueError as e:  # binascii and Unicode errors alike
                raise ConfigError(f"{where} key {ref.key!r} is not UTF-8 text") from e
        raise ConfigError(f"{where} has no key {ref.key!r}")

    async def get_all(self, name: str) -> dict[str, str]:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Secret

        try:
            secret = await self._client.get(Secret, name, namespace=self._namespace)
        except ApiError as e:
            raise ConfigError(
                f"cannot read Secret {self._namespace}/{name}: {e.status.reason or e.status.code}"
            ) from e
        try:
            return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        except ValueError as e:  # binascii and Unicode errors alike
            raise ConfigError(
                f"Secret {self._namespace}/{name} holds a value that is not UTF-8 text"
            ) from e
