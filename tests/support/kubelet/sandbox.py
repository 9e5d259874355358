"""Start one container: ``python sandbox.py SPEC.json`` — then it *is* the container's process.

The process kubelet runs this (as root) for every container it starts. It builds the
container's filesystem in a private mount namespace and replaces itself with the container's
command, so the PID the kubelet holds is the container's:

* the image's exported filesystem as the read-only lower layer of an overlay, with a fresh
  writable layer per container start (as a container runtime does); made read-only when the
  pod asks for ``readOnlyRootFilesystem``;
* ``/proc`` (the host's), a small ``/dev`` (null, zero, full, random, urandom, tty, shm);
* the pod's volumes and its ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``, bind
  mounted at their paths (resolved inside the image, so ``/var/run`` → ``/run`` holds);
* its own hostname (UTS namespace), then ``chroot``, the working directory, the user, group
  and supplementary groups, ``no_new_privs``, and death with the kubelet (``PDEATHSIG``).

Stdlib only (it runs before anything of the image can be used). SPEC is written by
``tests/support/kubelet/pods.py``; see :func:`main` for its keys.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_MAX_SYMLINKS = 40

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def resolve_in_root(root: Path, path: str) -> Path:
    """``path`` inside ``root``, following symlinks as if ``root`` were ``/`` (never leaving it)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise OSError(f"too many symlinks resolving {path} in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _mountpoint(root: Path, path: str, *, is_dir: bool) -> Path:
    target = resolve_in_root(root, path)
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.touch()
    return target


def _bind(source: str, target: Path, *, read_only: bool) -> None:
    _mount(source, str(target), None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, str(target), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_REC)


def _devices(root: Path) -> None:
    dev = _mountpoint(root, "/dev", is_dir=True)
    _mount("tmpfs", str(dev), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name in DEVICES:
        (dev / name).touch()
        _mount(f"/dev/{name}", str(dev / name), None, MS_BIND)
    (dev / "shm").mkdir()
    _mount("shm", str(dev / "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777")
    os.symlink("/proc/self/fd", dev / "fd")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", dev / name)


def build_root(spec: dict[str, Any]) -> Path:
    """Mount the container's filesystem; returns its root (not yet chrooted into)."""
    layer = Path(spec["layerDir"])
    upper, work, root = layer / "upper", layer / "work", layer / "root"
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    _mount(
        "overlay",
        str(root),
        "overlay",
        0,
        f"lowerdir={spec['rootfs']},upperdir={upper},workdir={work}",
    )
    proc = _mountpoint(root, "/proc", is_dir=True)
    _mount("/proc", str(proc), None, MS_BIND | MS_REC)
    _devices(root)
    for mount in spec["mounts"]:
        source = mount["source"]
        is_dir = stat.S_ISDIR(os.stat(source).st_mode)
        target = _mountpoint(root, mount["target"], is_dir=is_dir)
        _bind(source, target, read_only=bool(mount.get("readOnly")))
    _mountpoint(root, spec["cwd"], is_dir=True)
    if spec.get("readOnlyRoot"):
        _mount(None, str(root), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    return root


def main(argv: list[str]) -> int:
    """SPEC keys: rootfs, layerDir, mounts [{source, target, readOnly}], readOnlyRoot,
    hostname, cwd, uid, gid, groups, noNewPrivs, argv, env."""
    spec: dict[str, Any] = json.loads(Path(argv[1]).read_text())
    parent = os.getppid()
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = build_root(spec)
        hostname = spec["hostname"].encode()
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
        os.chroot(root)
        os.chdir(spec["cwd"])
        os.setgroups(spec["groups"])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        if spec.get("noNewPrivs"):
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        # After setuid: changing credentials clears the parent-death signal.
        _check(_libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0), "pdeathsig")
        if os.getppid() != parent:
            return 1
    except OSError as e:
        print(f"process kubelet: cannot create the container: {e}", file=sys.stderr)
        return 128
    os.umask(0o022)
    env: dict[str, str] = spec["env"]
    try:
        os.execvpe(spec["argv"][0], spec["argv"], env)  # noqa: S606 - becoming the container
    except OSError as e:
        print(
            f"process kubelet: cannot start {spec['argv'][0]!r} "
            f"(PATH={env.get('PATH', '')}): {e.strerror}",
            file=sys.stderr,
        )
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
