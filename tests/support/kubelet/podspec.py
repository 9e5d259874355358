"""What a container runs, as a kubelet derives it from the pod spec and the image config.

Pure functions apart from the ``Lookup`` they are handed (ConfigMaps and Secrets): the
command line (image ``Entrypoint``/``Cmd`` vs. the container's ``command``/``args``, with
``$(VAR)`` expansion), the environment (image env, the ``kubernetes`` Service variables,
service links, ``env`` with ``value``/``fieldRef``/``resourceFieldRef``/``secretKeyRef``/
``configMapKeyRef``, ``envFrom``), and the user, group and supplementary groups.

A spec the kubelet cannot honour raises :class:`ContainerConfigError` with the reason a real
kubelet would report (``CreateContainerConfigError``), never a silent guess.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.support.images import Image

__all__ = [
    "ContainerConfigError",
    "Lookup",
    "User",
    "command_line",
    "container_env",
    "container_user",
    "expand",
    "parse_quantity",
]

Json = dict[str, Any]
Lookup = Callable[[str, str, str], Awaitable[Json | None]]
"""(kind: "secrets" | "configmaps", namespace, name) → object or None."""


class ContainerConfigError(Exception):
    """The container cannot be created as specified (reason CreateContainerConfigError)."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known variables replaced, ``$$`` escapes ``$``,
    unknown references left as they are."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(replace, text)


def command_line(container: Json, image: Image, env: Mapping[str, str]) -> list[str]:
    """``command`` replaces the image's Entrypoint (and drops its Cmd); ``args`` replaces Cmd."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [*command, *(args or [])]
    else:
        argv = [*image.entrypoint, *(image.cmd if args is None else args)]
    if not argv:
        raise ContainerConfigError("no command specified (neither the pod nor the image has one)")
    return [expand(a, env) for a in argv]


_SUFFIXES: dict[str, Decimal] = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
}  # fmt: skip


def parse_quantity(value: str | int | float) -> Decimal:
    text = str(value).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(text)


def _field(pod: Json, path: str, *, pod_ip: str, node_ip: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": node_ip,
        "status.hostIPs": node_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef {path!r}")


def _resource(container: Json, ref: Json, *, node_capacity: Mapping[str, str]) -> str:
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind in ("limits", "requests"):
        value = (resources.get("limits") or {}).get(name) if kind == "requests" else None
        value = value if value is not None else node_capacity.get(name)
    if value is None:
        raise ContainerConfigError(f"unsupported resourceFieldRef {resource!r}")
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


async def _key_ref(ref: Json, kind: str, namespace: str, lookup: Lookup) -> str | None:
    obj = await lookup(kind, namespace, str(ref.get("name", "")))
    optional = bool(ref.get("optional"))
    what = "secret" if kind == "secrets" else "configmap"
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{what} "{ref.get("name")}" not found')
    key = str(ref.get("key", ""))
    data = obj.get("data") or {}
    if key in data:
        value = data[key]
        return base64.b64decode(value).decode() if kind == "secrets" else str(value)
    binary = obj.get("binaryData") or {}
    if kind == "configmaps" and key in binary:
        return base64.b64decode(binary[key]).decode()
    if optional:
        return None
    raise ContainerConfigError(f"couldn't find key {key} in {what} {namespace}/{ref.get('name')}")


async def _env_from(container: Json, namespace: str, lookup: Lookup) -> dict[str, str]:
    """``envFrom``: every key of the named ConfigMaps and Secrets, with the prefix."""
    out: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        for kind, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = source.get(field)
            if ref is None:
                continue
            obj = await lookup(kind, namespace, str(ref.get("name", "")))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind[:-1]} "{ref.get("name")}" not found')
            for key, value in (obj.get("data") or {}).items():
                out[prefix + key] = (
                    base64.b64decode(value).decode() if kind == "secrets" else str(value)
                )
    return out


def _service_links(services: list[Json]) -> dict[str, str]:
    """The docker-link style variables a kubelet gives for every Service of the namespace."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = str((service.get("metadata") or {}).get("name", "")).upper().replace("-", "_")
        ports = spec.get("ports") or []
        env[f"{name}_SERVICE_HOST"] = ip
        for port in ports:
            proto = str(port.get("protocol", "TCP"))
            number = port.get("port")
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{str(port['name']).upper().replace('-', '_')}"] = str(
                    number
                )
            prefix = f"{name}_PORT_{number}_{proto}"
            env[prefix] = f"{proto.lower()}://{ip}:{number}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(number)
            env[f"{prefix}_ADDR"] = ip
        if ports:
            env[f"{name}_SERVICE_PORT"] = str(ports[0].get("port"))
            first = ports[0]
            env[f"{name}_PORT"] = (
                f"{str(first.get('protocol', 'TCP')).lower()}://{ip}:{first.get('port')}"
            )
    return env


async def container_env(
    pod: Json,
    container: Json,
    image: Image,
    *,
    pod_ip: str,
    node_ip: str,
    kubernetes_service: tuple[str, int],
    namespace_services: list[Json],
    node_capacity: Mapping[str, str],
    lookup: Lookup,
) -> dict[str, str]:
    """The container's environment, in the order of precedence a kubelet applies."""
    namespace = str((pod.get("metadata") or {}).get("namespace"))
    env: dict[str, str] = {}
    for item in image.env:
        key, _, text = item.partition("=")
        env[key] = text
    env["HOSTNAME"] = str((pod.get("metadata") or {}).get("name"))
    host, port = kubernetes_service
    service: dict[str, str] = {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }
    if (pod.get("spec") or {}).get("enableServiceLinks", True):
        service = {**_service_links(namespace_services), **service}
    env.update(service)
    declared = await _env_from(container, namespace, lookup)
    for var in container.get("env") or []:
        name = str(var["name"])
        if "valueFrom" not in var:
            declared[name] = expand(str(var.get("value", "")), {**env, **declared})
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = _field(
                pod, str(source["fieldRef"]["fieldPath"]), pod_ip=pod_ip, node_ip=node_ip
            )
        elif "resourceFieldRef" in source:
            value = _resource(container, source["resourceFieldRef"], node_capacity=node_capacity)
        elif "secretKeyRef" in source:
            value = await _key_ref(source["secretKeyRef"], "secrets", namespace, lookup)
        elif "configMapKeyRef" in source:
            value = await _key_ref(source["configMapKeyRef"], "configmaps", namespace, lookup)
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            declared[name] = value
    env.update(declared)
    return env


class User:
    def __init__(self, uid: int, gid: int, groups: list[int]) -> None:
        self.uid, self.gid, self.groups = uid, gid, groups


def _lookup_passwd(rootfs: Path, name: str, *, field: int, db: str) -> int | None:
    try:
        lines = (rootfs / "etc" / db).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > field and parts[0] == name:
            return int(parts[field])
    return None


def container_user(pod: Json, container: Json, image: Image) -> User:
    """runAsUser/runAsGroup (container over pod over image), fsGroup and supplementalGroups;
    ``runAsNonRoot`` refuses uid 0 like a kubelet does."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    image_user, _, image_group = image.user.partition(":")
    uid: int | None = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    if uid is None:
        if not image_user:
            uid = 0
        elif image_user.isdigit():
            uid = int(image_user)
        else:
            found = _lookup_passwd(image.rootfs, image_user, field=2, db="passwd")
            if found is None:
                raise ContainerConfigError(f"image user {image_user!r} is not in /etc/passwd")
            uid = found
    gid: int | None = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    if gid is None:
        if image_group.isdigit():
            gid = int(image_group)
        elif image_group:
            gid = _lookup_passwd(image.rootfs, image_group, field=2, db="group") or 0
        else:
            gid = 0
    non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
    if non_root and uid == 0:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    groups = [gid, *[int(g) for g in pod_ctx.get("supplementalGroups") or []]]
    if pod_ctx.get("fsGroup") is not None:
        groups.append(int(pod_ctx["fsGroup"]))
    return User(uid, gid, list(dict.fromkeys(groups)))
