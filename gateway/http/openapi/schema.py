"""Small constructors for the JSON Schema (OpenAPI 3.1) the hand-written spec is written in: the spec reads as
data, each call returns a new dict (nothing shared is ever mutated)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "Json",
    "array",
    "boolean",
    "enum",
    "integer",
    "nullable",
    "number",
    "obj",
    "one_of",
    "open_object",
    "ref",
    "string",
]

Json = dict[str, Any]  # a JSON object of the OpenAPI document


def _described(schema: Json, description: str | None) -> Json:
    if description:
        schema["description"] = description
    return schema


def ref(name: str, description: str | None = None) -> Json:
    """A component schema; with a description, wrapped so that the description is kept beside the $ref."""
    target = {"$ref": f"#/components/schemas/{name}"}
    return {"allOf": [target], "description": description} if description else target


def string(description: str | None = None, **keywords: Any) -> Json:
    return _described({"type": "string", **keywords}, description)


def integer(description: str | None = None, **keywords: Any) -> Json:
    return _described({"type": "integer", **keywords}, description)


def number(description: str | None = None, **keywords: Any) -> Json:
    return _described({"type": "number", **keywords}, description)


def boolean(description: str | None = None, **keywords: Any) -> Json:
    return _described({"type": "boolean", **keywords}, description)


def enum(values: Sequence[str], description: str | None = None) -> Json:
    return _described({"type": "string", "enum": list(values)}, description)


def array(items: Json, description: str | None = None, **keywords: Any) -> Json:
    return _described({"type": "array", "items": items, **keywords}, description)


def nullable(schema: Json) -> Json:
    """`schema` or JSON null (OpenAPI 3.1 has no `nullable`)."""
    inner = {name: value for name, value in schema.items() if name != "description"}
    return _described({"anyOf": [inner, {"type": "null"}]}, schema.get("description"))


def one_of(*schemas: Json, description: str | None = None) -> Json:
    return _described({"anyOf": list(schemas)}, description)


def obj(
    properties: Mapping[str, Json],
    *,
    required: Sequence[str] = (),
    description: str | None = None,
    extra: bool = False,
) -> Json:
    """An object with these properties; `extra`: other fields are allowed (and passed on as they are)."""
    schema: Json = {"type": "object", "properties": dict(properties), "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return _described(schema, description)


def open_object(description: str | None = None) -> Json:
    """Any JSON object (a JSON Schema, metadata, an engine's own fields)."""
    return _described({"type": "object", "additionalProperties": True}, description)
