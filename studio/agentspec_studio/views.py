"""What the Studio's pages show and the edits they make, as plain functions of objects.

Objects are the Kubernetes API's JSON (dicts). Nothing here does I/O.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

Json = dict[str, Any]

FIELD_MANAGER = "agentspec-studio"
"""The field manager of every write the Studio makes (server-side apply and updates)."""
ARGO_TRACKING_LABEL = "app.kubernetes.io/instance"
ARGO_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
ARGO_INSTANCE_LABEL = "argocd.argoproj.io/instance"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
"""A Kubernetes object or namespace name (DNS-1123): nothing else goes into an API path."""
PREVIOUS_STABLE = "studio.agentspec.io/previous-stable"
"""Annotation on a PromptTemplate: the stable version before the last promotion (rollback)."""
_NOISE = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation")


class KubeApiError(Exception):
    """What the Kubernetes API (or the folder standing in for it) answered: its status, its
    message and each field's cause."""

    def __init__(self, status: int, message: str, causes: list[Json] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.causes = causes or []

    def to_json(self) -> Json:
        return {"status": self.status, "message": self.message, "causes": self.causes}


class EditError(ValueError):
    """An edit that cannot be made; the message says why (HTTP 409 or 422)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def answer_of(text: str) -> Json:
    """An HTTP answer's body as a JSON object (text that is not: under ``message``)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {"message": text[:2000]}
    return data if isinstance(data, dict) else {"value": data}


def argo_managed(obj: Mapping[str, Any]) -> str | None:
    """The Argo CD application that tracks ``obj`` (its tracking annotation, else its
    instance label when Argo CD set it), or None."""
    meta = obj.get("metadata") or {}
    tracking = (meta.get("annotations") or {}).get(ARGO_TRACKING_ANNOTATION)
    if tracking:
        return str(tracking).split(":", 1)[0]
    labels = meta.get("labels") or {}
    if ARGO_INSTANCE_LABEL in labels:  # Argo CD's recommended instanceLabelKey
        return str(labels[ARGO_INSTANCE_LABEL])
    if ARGO_TRACKING_LABEL in labels:  # the default key, shared with Helm: Argo CD wrote it?
        managers = {m.get("manager", "") for m in meta.get("managedFields") or []}
        if any("argocd" in m for m in managers):
            return str(labels[ARGO_TRACKING_LABEL])
    return None


def condition(obj: Mapping[str, Any], kind: str) -> Json | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def agent_summary(agent: Mapping[str, Any], prompts: Mapping[str, Mapping[str, Any]]) -> Json:
    """One row of the agents page."""
    spec = agent.get("spec") or {}
    status = agent.get("status") or {}
    ready = condition(agent, "Ready") or {}
    stalled = condition(agent, "Stalled") or {}
    ref = spec.get("promptRef") or {}
    template = prompts.get(ref.get("name", "")) if ref else None
    serving: list[Json] = []
    if spec.get("prompt"):
        serving = [{"version": "inline", "weight": 100}]
    elif template is not None:
        serving = prompt_serving(template, pinned=ref.get("version"), label=ref.get("label"))
    return {
        "name": agent["metadata"]["name"],
        "namespace": agent["metadata"].get("namespace"),
        "ready": ready.get("status") == "True",
        "reason": (stalled.get("reason") if stalled.get("status") == "True" else None)
        or ready.get("reason"),
        "message": stalled.get("message")
        if stalled.get("status") == "True"
        else ready.get("message"),
        "model": (spec.get("model") or {}).get("model"),
        "prompt": ref.get("name") if ref else None,
        "promptVersions": serving,
        "replicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "partners": [p["name"] for p in spec.get("partners") or []],
        "mcpServers": [m["name"] for m in spec.get("mcpServers") or []],
        "knowledge": [k["name"] for k in spec.get("knowledge") or []],
        "argoManaged": argo_managed(agent),
    }


def prompt_serving(
    template: Mapping[str, Any], *, pinned: str | None = None, label: str | None = None
) -> list[Json]:
    """The versions a template serves and their weights (a pin or label serves one)."""
    spec = template.get("spec") or {}
    if pinned:
        return [{"version": pinned, "weight": 100}]
    if label:
        version = (spec.get("labels") or {}).get(label)
        return [{"version": version, "weight": 100}] if version else []
    release = spec.get("release") or {}
    canary = release.get("canary")
    if canary and canary.get("weight"):
        weight = int(canary["weight"])
        return [
            {"version": release.get("stable"), "weight": 100 - weight},
            {"version": canary["version"], "weight": weight},
        ]
    return [{"version": release.get("stable"), "weight": 100}]


def clean(obj: Mapping[str, Any]) -> Json:
    """``obj`` without what the server writes (status, managed fields, versions)."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in _NOISE:
        meta.pop(key, None)
    return out


def as_yaml(obj: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(obj), sort_keys=False, allow_unicode=True, width=100)


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any], *, name: str) -> str:
    """A unified diff of the YAML the user sees (``before`` None: a new object)."""
    old = as_yaml(clean(before)).splitlines(keepends=True) if before else []
    new = as_yaml(clean(after)).splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, f"{name} (live)", f"{name} (after)"))


def parse_one(text: str) -> Json:
    """The one object a YAML (or JSON) text holds; ``EditError`` naming what is wrong."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise EditError(f"not valid YAML: {e}") from e
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise EditError("give exactly one object (a mapping with apiVersion, kind, metadata)")
    obj: Json = docs[0]
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str):
            raise EditError(f"{field} is missing")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise EditError("metadata.name is missing")
    check_name(meta["name"], "metadata.name")
    return obj


def check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise EditError(f"{what}: {value!r} is not a Kubernetes name (lower-case, digits, '-')")
    return value


# -- the prompt center -----------------------------------------------------------------------


def _versions(template: Mapping[str, Any]) -> list[Json]:
    return list((template.get("spec") or {}).get("versions") or [])


def _version_names(template: Mapping[str, Any]) -> list[str]:
    return [str(v.get("version")) for v in _versions(template)]


def _require(template: Mapping[str, Any], version: str) -> None:
    if version not in _version_names(template):
        raise EditError(
            f"PromptTemplate {template['metadata']['name']!r} has no version {version!r}"
        )


def version_diff(template: Mapping[str, Any], old: str, new: str) -> str:
    """A unified diff of two versions' templates."""
    _require(template, old)
    _require(template, new)
    # each text ends its last line, so the diff's lines never run together
    texts = {
        str(v["version"]): str(v.get("template", "")).rstrip("\n") + "\n"
        for v in _versions(template)
    }
    return "".join(
        difflib.unified_diff(
            texts[old].splitlines(keepends=True),
            texts[new].splitlines(keepends=True),
            f"{old}",
            f"{new}",
        )
    )


def add_version(template: Mapping[str, Any], version: Mapping[str, Any]) -> Json:
    """``template`` with a new version appended: versions are immutable, so a name already
    taken is refused (409), never overwritten."""
    name = version.get("version")
    if not isinstance(name, str) or not name:
        raise EditError("the version needs a name (version)")
    if not isinstance(version.get("template"), str) or not version["template"]:
        raise EditError("the version needs a template")
    if name in _version_names(template):
        raise EditError(
            f"version {name!r} exists and versions are immutable: give the new one another name",
            status=409,
        )
    out = copy.deepcopy(dict(template))
    allowed = {"version", "template", "variables", "description"}
    out["spec"]["versions"] = [
        *_versions(template),
        {k: v for k, v in version.items() if k in allowed},
    ]
    return out


def set_canary(template: Mapping[str, Any], version: str, weight: int) -> Json:
    _require(template, version)
    if not 0 <= weight <= 100:
        raise EditError("the canary weight is a percentage, 0-100")
    out = copy.deepcopy(dict(template))
    release = out["spec"]["release"]
    if version == release.get("stable"):
        raise EditError(f"{version!r} is the stable version already: pick another as canary")
    release["canary"] = {"version": version, "weight": weight}
    return out


def promote(template: Mapping[str, Any]) -> Json:
    """The canary becomes stable (the stable before is kept for a rollback)."""
    release = (template.get("spec") or {}).get("release") or {}
    canary = release.get("canary")
    if not canary:
        raise EditError("there is no canary to promote", status=409)
    out = copy.deepcopy(dict(template))
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[PREVIOUS_STABLE] = release["stable"]
    out["spec"]["release"] = {"stable": canary["version"]}
    return out


def rollback(template: Mapping[str, Any]) -> Json:
    """Roll back the last release step: a canary is dropped (all traffic to stable); without
    one, stable goes back to the version before the last promotion, else to the version
    listed before it."""
    spec = template.get("spec") or {}
    release = spec.get("release") or {}
    stable = release.get("stable")
    out = copy.deepcopy(dict(template))
    if release.get("canary"):
        out["spec"]["release"] = {"stable": stable}
        return out
    previous = ((template.get("metadata") or {}).get("annotations") or {}).get(PREVIOUS_STABLE)
    names = _version_names(template)
    if not previous or previous not in names or previous == stable:
        at = names.index(stable) if stable in names else 0
        if at == 0:
            raise EditError("there is no earlier version to roll back to", status=409)
        previous = names[at - 1]
    out["metadata"].setdefault("annotations", {}).pop(PREVIOUS_STABLE, None)
    out["spec"]["release"] = {"stable": previous}
    return out


# -- registries and topology -----------------------------------------------------------------


def mcp_summary(server: Mapping[str, Any]) -> Json:
    status = server.get("status") or {}
    ready = condition(server, "Ready") or {}
    return {
        "name": server["metadata"]["name"],
        "url": (server.get("spec") or {}).get("url"),
        "reachable": ready.get("status") == "True",
        "reason": ready.get("reason"),
        "message": ready.get("message"),
        "tools": status.get("tools") or [],
        "lastProbeTime": status.get("lastProbeTime"),
    }


def topology(
    agents: Iterable[Mapping[str, Any]],
    servers: Iterable[Mapping[str, Any]],
    rates: Mapping[tuple[str, str, str], float] | None = None,
) -> Json:
    """Nodes (agents, MCP servers, knowledge sources) and edges (calls), with health; with
    ``rates`` (tool calls per second by agent, source and target, from Prometheus), each
    edge's ``rate``."""
    nodes: list[Json] = []
    edges: list[Json] = []
    server_health = {
        s["metadata"]["name"]: (condition(s, "Ready") or {}).get("status") == "True"
        for s in servers
    }
    for name, healthy in sorted(server_health.items()):
        nodes.append({"id": f"mcp/{name}", "kind": "mcp", "name": name, "healthy": healthy})
    for agent in agents:
        name = agent["metadata"]["name"]
        spec = agent.get("spec") or {}
        ready = (condition(agent, "Ready") or {}).get("status") == "True"
        nodes.append({"id": f"agent/{name}", "kind": "agent", "name": name, "healthy": ready})
        namespace = agent["metadata"].get("namespace")

        def edge(to: str, kind: str, target: str, caller: str = name) -> Json:
            found: Json = {"from": f"agent/{caller}", "to": to, "kind": kind}
            if rates is not None:
                found["rate"] = rates.get((caller, kind, target), 0.0)
            return found

        for partner in spec.get("partners") or []:
            target = partner["name"]
            partner_ns = partner.get("namespace") or namespace
            if partner_ns != namespace:
                target = f"{partner_ns}/{target}"
            # the runtime counts a partner call by the partner's namespace/name
            edges.append(edge(f"agent/{target}", "partner", f"{partner_ns}/{partner['name']}"))
        for server in spec.get("mcpServers") or []:
            edges.append(edge(f"mcp/{server['name']}", "mcp", server["name"]))
        for source in spec.get("knowledge") or []:
            node = f"knowledge/{name}/{source['name']}"
            nodes.append(
                {"id": node, "kind": "knowledge", "name": source["name"], "healthy": ready}
            )
            edges.append(edge(node, "knowledge", source["name"]))
    # an edge to what is not here (another namespace, a missing server) gets a node saying so
    known = {n["id"] for n in nodes}
    for link in edges:
        if link["to"] not in known:
            kind, _, rest = link["to"].partition("/")
            nodes.append(
                {"id": link["to"], "kind": kind, "name": rest, "healthy": False, "missing": True}
            )
            known.add(link["to"])
    return {"nodes": nodes, "edges": edges}


def chat_events(data: str) -> list[Json]:
    """One chunk of an agent's OpenAI-style stream as the playground's events: ``delta``
    (answer text), ``tool`` (a tool call or partner hop starting or finished), ``done``
    (the prompt version, iterations and the partners' tokens), ``usage``, ``error``."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return []
    if not isinstance(chunk, dict):
        return []
    error = chunk.get("error")
    if isinstance(error, dict):
        return [{"type": "error", "message": str(error.get("message") or error)}]
    events: list[Json] = []
    choices = chunk.get("choices") or []
    extra = chunk.get("agentspec")
    if not choices and isinstance(extra, dict) and str(extra.get("event", "")).startswith("tool"):
        events.append({"type": "tool", **extra})
    for choice in choices[:1]:
        if not isinstance(choice, dict):
            continue
        text = (choice.get("delta") or {}).get("content")
        if text:
            events.append({"type": "delta", "text": text})
        if choice.get("finish_reason"):
            events.append(
                {"type": "done", "finishReason": choice["finish_reason"], "agentspec": extra}
            )
    if chunk.get("usage"):
        events.append({"type": "usage", "usage": chunk["usage"]})
    return events


A2A_STATE = re.compile(r"^TASK_STATE_")
A2A_PAUSED = ("input_required", "auth_required")
"""A2A states that end a stream without an answer: the task waits for the user."""


def a2a_events(data: str) -> list[Json]:
    """One JSON-RPC result of an A2A 1.0 ``SendStreamingMessage`` stream as the playground's
    events: ``task`` (its id and state), ``state`` (working, input required...), ``delta``
    (the answer artifact's text), then on completion ``done`` and ``usage`` from the task's
    ``agentspec.io/*`` metadata; a failed task or a JSON-RPC error is ``error``."""
    try:
        message = json.loads(data)
    except ValueError:
        return []
    if not isinstance(message, dict):
        return []
    error = message.get("error")
    if isinstance(error, dict):
        return [{"type": "error", "message": str(error.get("message") or error)}]
    result = message.get("result")
    return _a2a_result(result) if isinstance(result, dict) else []


def _a2a_result(result: Json) -> list[Json]:
    if isinstance(result.get("task"), dict):
        task = result["task"]
        status = task.get("status") or {}
        state = A2A_STATE.sub("", str(status.get("state", ""))).lower()
        events: list[Json] = [{"type": "task", "taskId": task.get("id"), "state": state}]
        if state in ("", "submitted", "working"):
            return events
        # a task already settled (a repeated message id answers with the task it made):
        # its whole answer, then how it ended
        answer = "".join(_texts(a) for a in task.get("artifacts") or [] if isinstance(a, dict))
        if answer:
            events.append({"type": "delta", "text": answer, "replace": True})
        return events + _a2a_status({"status": status, "metadata": task.get("metadata") or {}})
    if isinstance(result.get("artifactUpdate"), dict):
        update = result["artifactUpdate"]
        text = _texts(update.get("artifact") or {})
        # append false: the text replaces what came (a resumed task sends its answer whole)
        return (
            [{"type": "delta", "text": text, "replace": not update.get("append")}] if text else []
        )
    update = result.get("statusUpdate")
    return _a2a_status(update) if isinstance(update, dict) else []


def _texts(holder: Json) -> str:
    """The text of a message's or artifact's parts."""
    parts = holder.get("parts") or []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _a2a_status(update: Json) -> list[Json]:
    status = update.get("status") or {}
    state = A2A_STATE.sub("", str(status.get("state", ""))).lower()
    said = _texts(status.get("message") or {})
    if state in ("failed", "rejected", "canceled"):
        return [{"type": "error", "message": f"the task {state}: {said or 'no reason given'}"}]
    if state != "completed":  # working, or waiting for the user (what it asks: its message)
        return [{"type": "state", "state": state, **({"message": said} if said else {})}]
    meta = update.get("metadata") or {}
    usage = meta.get("agentspec.io/usage") or {}
    return [
        {
            "type": "done",
            "finishReason": "stop",
            "agentspec": {
                "promptVersion": meta.get("agentspec.io/promptVersion"),
                "configRevision": meta.get("agentspec.io/configRevision"),
            },
        },
        {
            "type": "usage",
            "usage": {
                "prompt_tokens": _count_of(usage.get("input_tokens")),
                "completion_tokens": _count_of(usage.get("output_tokens")),
            },
        },
    ]


def _count_of(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0
