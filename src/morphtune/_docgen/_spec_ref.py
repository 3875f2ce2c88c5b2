"""``docs/reference/spec.md`` from the JSON Schema of :class:`morphtune.spec.SweepSpec`.

Every model of the schema becomes one section (in the order a reader meets them from the
top level), every field one table row: its full path, type, default and the rules the
schema states. Two facts the schema cannot carry are read from the code beside it: the
registry a name field is checked against (``morphtune.spec._registered``) and which
sampler or scheduler each optional knob applies to (``SAMPLER_KNOBS``,
``SCHEDULER_KNOBS``).
"""

from __future__ import annotations

import json
import typing
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import AfterValidator, BaseModel
from pydantic_core import to_jsonable_python

from morphtune._docgen._markdown import docstring_markdown, slugify, table

__all__ = ["SCHEMA_COMMAND", "field_sections", "registry_kinds", "render_spec_reference"]

SCHEMA_COMMAND = "morphtune spec schema"
Schema = Mapping[str, Any]

#: The heading of ``methods.md`` that catalogues the names each registry kind accepts.
KIND_HEADINGS = {
    "dataset": "Datasets",
    "model": "Model families",
    "growth": "Growth operators",
    "sparsity": "Sparsity",
    "structure": "Sparsity structures",
    "distribution": "Layer distributions",
    "proxy": "Training-free proxies",
}


@dataclass
class _Section:
    name: str
    paths: list[str] = field(default_factory=list)


def _ref_name(node: Schema) -> str:
    return str(node["$ref"]).rsplit("/", 1)[-1]


def _refs(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(model name, path)`` of every model ``node`` refers to; lists add ``[]`` to the
    path and maps ``.<key>``."""
    if not isinstance(node, Mapping):
        return
    if "$ref" in node:
        yield _ref_name(node), path
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            yield from _refs(branch, path)
    if isinstance(node.get("items"), Mapping):
        yield from _refs(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _refs(node["additionalProperties"], f"{path}.<key>")


def _sections(schema: Schema) -> list[_Section]:
    """The schema's models breadth-first from the root, each with the paths it sits at."""
    root = str(schema.get("title", "SweepSpec"))
    found: dict[str, _Section] = {root: _Section(root, [""])}
    queue = deque([root])
    while queue:
        name = queue.popleft()
        model = _model_schema(schema, name)
        for prop, node in model.get("properties", {}).items():
            for child_path in (f"{p}.{prop}".lstrip(".") for p in found[name].paths[:1]):
                for ref, at in _refs(node, child_path):
                    if ref not in found:
                        found[ref] = _Section(ref)
                        queue.append(ref)
                    if at not in found[ref].paths:
                        found[ref].paths.append(at)
    return list(found.values())


def _model_schema(schema: Schema, name: str) -> Schema:
    if name == schema.get("title"):
        return schema
    try:
        return typing.cast(Schema, schema["$defs"][name])
    except KeyError:
        raise ValueError(f"the spec schema has no model {name!r} in $defs") from None


def field_sections(schema: Schema) -> dict[str, str]:
    """Every field path of the schema (``search.sampler.name``, ``growth.plan[].width``)
    and the model (section of ``spec.md``) that defines it."""
    paths = {}
    for section in _sections(schema):
        model = _model_schema(schema, section.name)
        for at in section.paths:
            for prop in model.get("properties", {}):
                paths[f"{at}.{prop}".lstrip(".")] = section.name
    return paths


# ------------------------------------------------------------------- types and rules


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _code(value: Any) -> str:
    if isinstance(value, str) and value and "`" not in value:
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def _branches(node: Schema) -> list[Schema]:
    for key in ("anyOf", "oneOf"):
        if key in node:
            return [b for b in node[key] if isinstance(b, Mapping)]
    return [node]


def _type_text(node: Schema, nested: bool = False) -> str:
    """The type in words; a union inside a list or map is parenthesised."""
    if "$ref" in node:
        name = _ref_name(node)
        return f"[{name}](#{slugify(name)})"
    if "anyOf" in node or "oneOf" in node:
        parts = [_type_text(branch, nested=True) for branch in _branches(node)]
        text = " or ".join(parts)
        by = node.get("discriminator", {}).get("propertyName")
        if by:
            text += f" (by `{by}`)"
        return f"({text})" if nested and len(parts) > 1 else text
    if "const" in node:
        return _code(node["const"])
    kind = node.get("type")
    if kind == "array":
        items = node.get("items")
        return f"list of {_type_text(items, True)}" if isinstance(items, Mapping) else "list"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, Mapping):
            return f"map of string to {_type_text(values, True)}"
        return "object"
    names = {"string": "string", "integer": "int", "number": "number", "boolean": "bool"}
    if kind in names:
        return names[kind]
    if kind == "null":
        return "null"
    return "string" if "enum" in node else "any"


def _bounds(node: Schema) -> list[str]:
    rules = []
    if "enum" in node:
        rules.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    for key, symbol in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in node:
            rules.append(f"{symbol} {_number(node[key])}")
    if "minLength" in node:
        rules.append(f"at least {node['minLength']} character(s)")
    if "maxLength" in node:
        rules.append(f"at most {node['maxLength']} characters")
    if "pattern" in node:
        rules.append(f"matches `{node['pattern']}`")
    if "minItems" in node and "maxItems" in node:
        rules.append(f"{node['minItems']} to {node['maxItems']} items")
    elif "minItems" in node:
        rules.append(f"at least {node['minItems']} item(s)")
    elif "maxItems" in node:
        rules.append(f"at most {node['maxItems']} items")
    return rules


def _rules(node: Schema) -> list[str]:
    rules: list[str] = []
    for branch in _branches(node):
        rules.extend(_bounds(branch))
        items = branch.get("items")
        if isinstance(items, Mapping) and "$ref" not in items:
            rules.extend(f"each item {rule}" for rule in _bounds(items))
        values = branch.get("additionalProperties")
        if isinstance(values, Mapping) and "$ref" not in values and "oneOf" not in values:
            rules.extend(f"each value {rule}" for rule in _bounds(values))
        keys = branch.get("propertyNames")
        if isinstance(keys, Mapping):
            rules.extend(f"keys: {rule}" for rule in _bounds(keys))
    return rules


# ------------------------------------------------------------- facts from the code


def _registry_kind_of(annotation: Any) -> str | None:
    """The registry kind of an ``Annotated[str, _registered_name(kind)]`` anywhere inside
    ``annotation`` (``X | None`` included), else None."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, AfterValidator):
            function = meta.func
            names = getattr(getattr(function, "__code__", None), "co_freevars", ())
            if "kind" in names and function.__closure__ is not None:
                return str(function.__closure__[names.index("kind")].cell_contents)
    for argument in typing.get_args(annotation):
        kind = _registry_kind_of(argument)
        if kind is not None:
            return kind
    return None


def _spec_models() -> dict[str, type[BaseModel]]:
    import morphtune.spec as spec_module

    models = {}
    for name in dir(spec_module):
        value = getattr(spec_module, name)
        if isinstance(value, type) and issubclass(value, BaseModel):
            models[value.__name__] = value
    return models


def registry_kinds() -> dict[tuple[str, str], str]:
    """``(model name, field) -> registry kind`` for each field checked against a registry."""
    kinds = {}
    for name, model in _spec_models().items():
        for field_name, info in model.model_fields.items():
            kind = _registry_kind_of(info.annotation)
            if kind is None:
                for meta in info.metadata:
                    kind = kind or _registry_kind_of(typing.Annotated[str, meta])
            if kind is not None:
                kinds[(name, field_name)] = kind
    return kinds


def _knob_tables() -> dict[str, Mapping[str, tuple[str, ...]]]:
    from morphtune.spec import SAMPLER_KNOBS, SCHEDULER_KNOBS

    return {"SamplerSpec": SAMPLER_KNOBS, "SchedulerSpec": SCHEDULER_KNOBS}


def _registered_names(kind: str) -> list[str]:
    from morphtune.spec import _registered

    return _registered(kind)


# --------------------------------------------------------------------- rendering


def _default_text(
    prop: str, node: Schema, required: set[str], model: type[BaseModel] | None
) -> str:
    if prop in required:
        return "required"
    if "default" in node:
        return _code(node["default"])
    info = model.model_fields.get(prop) if model is not None else None
    if info is not None and info.default_factory is not None:
        # The schema omits factory defaults; the model knows them.
        value = info.get_default(call_default_factory=True, validated_data={})
        if isinstance(value, BaseModel):
            return "its fields' defaults"
        return _code(to_jsonable_python(value))
    return "none"


def _field_rows(schema: Schema, section: _Section) -> tuple[list[list[str]], bool]:
    model = _model_schema(schema, section.name)
    required = set(model.get("required", []))
    kinds = registry_kinds()
    pydantic_model = _spec_models().get(section.name)
    knobs = _knob_tables().get(section.name, {})
    prefix = section.paths[0]
    rows = []
    described = False
    for prop, node in model.get("properties", {}).items():
        rules = _rules(node)
        kind = kinds.get((section.name, prop))
        if kind is not None:
            if kind not in KIND_HEADINGS:
                raise ValueError(f"no methods.md heading for registry kind {kind!r}")
            names = ", ".join(f"`{n}`" for n in _registered_names(kind))
            anchor = slugify(KIND_HEADINGS[kind])
            rules.append(f"a registered name: {names} ([catalogue](methods.md#{anchor}))")
        if prop in knobs:
            rules.append("only for " + ", ".join(f"`{n}`" for n in knobs[prop]))
        note = " ".join(docstring_markdown(node.get("description")))
        described = described or bool(note)
        path = f"{prefix}.{prop}".lstrip(".")
        rows.append(
            [
                f"`{path}`",
                _type_text(node),
                _default_text(prop, node, required, pydantic_model),
                "; ".join(rules),
                note,
            ]
        )
    return rows, described


def render_spec_reference(schema: Schema) -> str:
    """The whole ``docs/reference/spec.md``."""
    lines = [
        "# Sweep spec reference",
        "",
        "<!-- Generated by `python -m morphtune._docgen` from the JSON Schema of",
        f"     morphtune.spec.SweepSpec (`{SCHEMA_COMMAND}`). Do not edit by hand. -->",
        "",
        "Every field of a sweep spec, generated from the spec's JSON Schema (print it with",
        f"`{SCHEMA_COMMAND}`). What the fields mean, the checks that span several fields and",
        "worked examples are in the guide, [../spec.md](../spec.md); the methods that name",
        "fields accept are in the [method catalogue](methods.md).",
        "",
        "Conventions: paths are dotted from the top of the YAML file; `[]` is any item of a",
        "list and `<key>` any key of a map. No section accepts keys it does not list: an",
        "unknown key is an error, never dropped. A field whose default is `null` is unset",
        "(the code then takes the default the guide names).",
        "",
    ]
    for section in _sections(schema):
        model = _model_schema(schema, section.name)
        lines += [f"## {section.name}", ""]
        at = ", ".join(f"`{p}`" if p else "the top level" for p in section.paths)
        lines += [f"At {at}.", ""]
        for paragraph in docstring_markdown(model.get("description")):
            lines += [paragraph, ""]
        rows, described = _field_rows(schema, section)
        headers = ["field", "type", "default", "rules"] + (["notes"] if described else [])
        lines += table(headers, [row if described else row[:4] for row in rows])
        lines.append("")
    return "\n".join(lines)
