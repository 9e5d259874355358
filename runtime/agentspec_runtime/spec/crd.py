"""Generate CustomResourceDefinitions from the spec models (the single source of truth).

pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3.0 schema: no
``$ref``, no ``null`` branches, ``properties`` and ``additionalProperties`` never together,
``x-kubernetes-int-or-string`` instead of ``anyOf`` of int and string, boolean
``exclusiveMinimum``. :func:`structural` performs that translation; descriptions (from the
models' attribute docstrings) are kept so ``kubectl explain`` documents every field.
"""

from __future__ import annotations

from typing import Any

from ._base import API_VERSION, GROUP, VERSION, SpecModel
from .resources import KINDS, Kind

Schema = dict[str, Any]

_COPIED = (
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "maxProperties",
    "minProperties",
    "format",
)
_SCALARS = (str, int, float, bool)


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline a ``$ref``; keywords beside it (a field's description, default) win."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
    if "allOf" in node and len(node["allOf"]) == 1:
        base = _resolve(node["allOf"][0], defs)
        return {**base, **{k: v for k, v in node.items() if k != "allOf"}}
    return node


def _union(node: Schema, defs: dict[str, Schema], *, defaults: bool) -> Schema:
    siblings = {k: v for k, v in node.items() if k != "anyOf"}
    branches = [_resolve(b, defs) for b in node["anyOf"] if b.get("type") != "null"]
    if len(branches) == 1:  # Optional[X]: absence, not null, is how YAML omits it
        return structural({**branches[0], **siblings}, defs, defaults=defaults)
    if sorted(str(b.get("type")) for b in branches) == ["integer", "string"]:
        out: Schema = {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
        }
        out.update({k: siblings[k] for k in ("description", "pattern") if k in siblings})
        return out
    raise ValueError(f"cannot express a union of {branches} in a structural schema")


def _map(node: Schema, out: Schema, defs: dict[str, Schema], *, defaults: bool) -> None:
    """A dict: values become ``additionalProperties``; key constraints become CEL rules."""
    values = node.get("additionalProperties")
    key_rules: list[dict[str, str]] = []
    patterns = node.get("patternProperties") or {}
    if len(patterns) > 1:
        raise ValueError(f"cannot express several key patterns: {list(patterns)}")
    for pattern, sub in patterns.items():  # pydantic's form for dict[ConstrainedStr, V]
        values = sub
        key_rules.append(
            {
                "rule": f"self.all(k, k.matches({_cel_str(pattern)}))",
                "message": f"every key must match {pattern}",
            }
        )
    names = node.get("propertyNames", {})
    if "maxLength" in names:
        key_rules.append(
            {
                "rule": f"self.all(k, size(k) <= {names['maxLength']})",
                "message": f"keys must be at most {names['maxLength']} characters",
            }
        )
    if isinstance(values, dict):
        out["additionalProperties"] = structural(values, defs, defaults=defaults)
    if key_rules:
        out["x-kubernetes-validations"] = key_rules


def _cel_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def structural(node: Schema, defs: dict[str, Schema], *, defaults: bool = True) -> Schema:
    """Translate one pydantic JSON-schema node into a structural CRD schema node."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        return _union(node, defs, defaults=defaults)
    out = {k: node[k] for k in _COPIED if k in node}
    if "const" in node:
        out["enum"] = [node["const"]]
    kind = node.get("type") or ("string" if "enum" in out else None)
    if kind is None:
        raise ValueError(f"schema node without a type: {node}")
    out["type"] = kind
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[flag] = node[bound]
            out[bound] = True
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {
                name: structural(sub, defs, defaults=defaults) for name, sub in props.items()
            }
            if node.get("required"):
                out["required"] = list(node["required"])
        else:
            _map(node, out, defs, defaults=defaults)
    elif kind == "array":
        out["items"] = structural(node["items"], defs, defaults=defaults)
    # CRD defaults only for scalars: object/list defaults would be stamped on every object
    if defaults and "default" in node and isinstance(node["default"], _SCALARS):
        out["default"] = node["default"]
    out.update({k: v for k, v in node.items() if k.startswith("x-kubernetes-")})
    return out


def model_schema(model: type[SpecModel], *, defaults: bool = True) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}), defaults=defaults)


def crd_for(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a plain dict ready for YAML."""
    spec = model_schema(kind.spec)
    status = model_schema(kind.status, defaults=False)
    root: Schema = {
        "type": "object",
        "description": spec.pop("description", f"{kind.kind} resource."),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"Always {API_VERSION}."},
            "kind": {"type": "string", "description": f"Always {kind.kind}."},
            "metadata": {"type": "object"},
            "spec": {**spec, "description": f"Desired state of the {kind.kind}."},
            "status": {
                **status,
                "description": status.get("description", "Observed state."),
            },
        },
    }
    if kind.root_invariants:
        root["x-kubernetes-validations"] = [r.to_schema() for r in kind.root_invariants]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "agentspec"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["agentspec-all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_crd() for c in kind.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD, for every kind (``agentspecs.agentspec.io.yaml`` ...)."""
    return {f"{k.crd_name}.yaml": crd_for(k) for k in KINDS.values()}
