"""A JSON value that fits a JSON schema, drawn deterministically from a seeded generator: what a model
under vLLM's guided decoding writes for tool arguments and `json_schema` responses.

Honoured: `type` (one or a list), `enum`, `const`, `properties` / `required` (required always present,
optional ones in about half the draws), `items` / `prefixItems` / `minItems` / `maxItems` /
`uniqueItems`, `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum` / `multipleOf`,
`minLength` / `maxLength`, the string formats `date`, `date-time`, `time`, `email`, `uri`, `uuid`,
`anyOf` / `oneOf` (one branch), `allOf` (merged), and `$ref` into the schema's `$defs` / `definitions`.
Not honoured: `pattern`, `not`, `if` / `then`, `dependentRequired`. Nesting deeper than _DEEP keeps only
what is required, so a recursive schema ends; one that requires itself (no finite value fits) is cut
off with null at _LIMIT.
"""

from __future__ import annotations

import math
import random
from typing import Any

from engines.simulator.text import WORDS

__all__ = ["small_object", "value_for"]

_DEEP = 6
_LIMIT = 24
_TYPES = ("string", "integer", "number", "boolean")


def value_for(schema: Any, rng: random.Random) -> Any:
    """A value valid against `schema` (a JSON schema; `True` or `{}` allows anything)."""
    return _Draw(schema if isinstance(schema, dict) else {}, rng).value(schema, 0)


def small_object(rng: random.Random) -> dict[str, Any]:
    """What `json_object` gets: one to three word-named properties of simple types."""
    draw = _Draw({}, rng)
    keys = dict.fromkeys(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    return {key: draw.value({"type": rng.choice(_TYPES)}, 1) for key in keys}


class _Draw:
    __slots__ = ("_rng", "_root")

    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if depth > _LIMIT:
            return None
        if not isinstance(schema, dict):
            return self._words(1, 2)  # `true` or a malformed subschema: anything goes, a string does
        schema = self._resolved(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self._rng.choice(schema[key]), depth + 1)
        if schema.get("allOf"):
            return self.value(self._merged(schema), depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = self._rng.choice(kind) if kind else None
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return getattr(self, f"_{kind}", self._string)(schema, depth)

    def _resolved(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(ref := schema.get("$ref"), str) and seen < 32:
            seen += 1
            target: Any = self._root
            for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else ():
                key = part.replace("~1", "/").replace("~0", "~")
                target = target.get(key, {}) if isinstance(target, dict) else {}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) else rest
        return schema

    def _merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self._resolved(part) if isinstance(part, dict) else {}
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or (depth < _DEEP and self._rng.random() < 0.5):
                out[name] = self.value(sub, depth + 1)
        for name in required - out.keys():  # required but not described: anything
            out[name] = self._words(1, 2)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        low = max(int(schema.get("minItems", 0)), len(prefix) if depth < _DEEP else 0)
        high = int(schema.get("maxItems", low + 3))
        count = low if depth >= _DEEP else self._rng.randint(low, max(low, min(high, low + 3)))
        items = schema.get("items", {})
        out: list[Any] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            value = self.value(sub, depth + 1)
            if schema.get("uniqueItems"):
                for _ in range(32):  # tries; an enum may simply have too few values
                    if value not in out:
                        break
                    value = self.value(sub, depth + 1)
                if value in out and len(out) >= low:
                    break
            out.append(value)
        return out

    def _string(self, schema: dict[str, Any], depth: int) -> str:
        rng = self._rng
        fmt = schema.get("format")
        if fmt == "date":
            text = f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        elif fmt == "date-time":
            text = f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            text += f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        elif fmt == "time":
            text = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        elif fmt == "email":
            text = f"{rng.choice(WORDS)}@example.com"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{rng.choice(WORDS)}"
        elif fmt == "uuid":
            digits = f"{rng.getrandbits(128):032x}"
            text = f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"
        else:
            text = self._words(1, 3)
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(text) < low:
            text += " " + self._words(low // 3 + 1, low // 3 + 1)
        if high is not None:
            text = text[: int(high)]
        return text

    def _words(self, low: int, high: int) -> str:
        return " ".join(self._rng.choice(WORDS) for _ in range(self._rng.randint(low, high)))

    def _integer(self, schema: dict[str, Any], depth: int) -> int:
        bounds = self._bounds(schema, integral=True)
        low, high = math.ceil(bounds[0]), math.floor(bounds[1])
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = -(-low // step), high // step
            if first <= last:
                return self._rng.randint(first, last) * step
        return self._rng.randint(low, max(low, high))

    def _number(self, schema: dict[str, Any], depth: int) -> float | int:
        if isinstance(schema.get("multipleOf"), int):
            return self._integer(schema, depth)
        low, high = self._bounds(schema, integral=False)
        hundredths = self._rng.randint(int(low * 100) + 1, max(int(low * 100) + 1, int(high * 100) - 1))
        return min(max(hundredths / 100, low), high)

    def _bounds(self, schema: dict[str, Any], integral: bool) -> tuple[float, float]:
        """The allowed range (both ends included), 0 to 100 where the schema leaves it open."""
        nudge = 1 if integral else 0.01
        low, high = _number_or_none(schema.get("minimum")), _number_or_none(schema.get("maximum"))
        floor, ceiling = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if floor is True and low is not None:  # draft 4: a flag on minimum
            low += nudge
        elif (floor := _number_or_none(floor)) is not None:
            low = max(low if low is not None else -1e18, floor + nudge)
        if ceiling is True and high is not None:
            high -= nudge
        elif (ceiling := _number_or_none(ceiling)) is not None:
            high = min(high if high is not None else 1e18, ceiling - nudge)
        if low is None:
            return (0, 100) if high is None else (min(0, high - 100), high)
        if high is None:
            return low, max(100, low + 100)
        return low, high

    def _boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self._rng.random() < 0.5

    def _null(self, schema: dict[str, Any], depth: int) -> None:
        return None


def _number_or_none(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None
