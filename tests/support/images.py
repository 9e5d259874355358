"""The images the product ships, as built for the tests by ``scripts/build-images.sh``.

Owns finding them: ``$AGENTSPEC_IMAGES_JSON`` (the script's output, saved by
``scripts/test.sh``) or, failing that, running the script (idempotent: a second or so when
nothing changed; minutes on a cold machine). Each :class:`Image` carries its reference, the
exported filesystem and the config the kubelet needs (entrypoint, cmd, env, workdir, user).
No pytest dependency.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import run_script

__all__ = ["BUILD_SCRIPT", "Image", "Images", "locate_images"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-images.sh"
IMAGES_ENV = "AGENTSPEC_IMAGES_JSON"


@dataclass(frozen=True)
class Image:
    ref: str
    rootfs: Path
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    working_dir: str
    user: str
    rootfs_bytes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        config = data.get("config") or {}
        return cls(
            ref=str(data["ref"]),
            rootfs=Path(data["rootfs"]),
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            env=list(config.get("Env") or []),
            working_dir=str(config.get("WorkingDir") or "/"),
            user=str(config.get("User") or ""),
            rootfs_bytes=int(data.get("rootfsBytes") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "rootfs": str(self.rootfs),
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "Env": self.env,
                "WorkingDir": self.working_dir,
                "User": self.user,
            },
            "rootfsBytes": self.rootfs_bytes,
        }


@dataclass(frozen=True)
class Images:
    runtime: Image
    operator: Image
    studio: Image

    def all(self) -> list[Image]:
        return [self.runtime, self.operator, self.studio]


@functools.cache
def locate_images() -> Images:
    saved = os.environ.get(IMAGES_ENV)
    fresh = saved and Path(saved).is_file()
    text = Path(saved).read_text() if saved and fresh else run_script(BUILD_SCRIPT)
    data = json.loads(text.strip().splitlines()[-1])
    images = Images(
        runtime=Image.from_json(data["runtime"]),
        operator=Image.from_json(data["operator"]),
        studio=Image.from_json(data["studio"]),
    )
    for image in images.all():
        if not image.rootfs.is_dir():
            raise RuntimeError(f"{image.ref}: exported filesystem {image.rootfs} is missing")
    return images
