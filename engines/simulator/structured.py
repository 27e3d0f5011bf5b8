"""Structured output: the content a choice writes under `response_format` (json_object, json_schema) or
vLLM's `structured_outputs` (json, json_object, choice), as guided decoding would make it write."""

from __future__ import annotations

import json
import random
from typing import Any

from engines.simulator.constrained import Written
from engines.simulator.errors import SimulatorError
from engines.simulator.protocol import ChatRequest
from engines.simulator.schema_values import small_object, value_for

__all__ = ["JsonWriter", "structured_writer"]


class JsonWriter:
    """A JSON document that fits `schema` (None: any small object, as for json_object); or, with
    `choices`, one of those strings verbatim."""

    __slots__ = ("_choices", "_schema")

    def __init__(self, schema: dict[str, Any] | None, choices: list[str] | None = None) -> None:
        self._schema = schema
        self._choices = choices

    def write(self, seed: int) -> Written:
        rng = random.Random(seed)
        if self._choices:
            return Written(rng.choice(self._choices))
        value = small_object(rng) if self._schema is None else value_for(self._schema, rng)
        return Written(json.dumps(value, ensure_ascii=False))


def structured_writer(request: ChatRequest) -> JsonWriter | None:
    """vLLM's precedence: response_format overrides structured_outputs; "text" leaves it alone."""
    rf = request.response_format
    if rf is not None and rf.type == "json_object":
        return JsonWriter(None)
    if rf is not None and rf.type == "json_schema" and rf.json_schema is not None:
        # Without a "schema", vLLM constrains nothing.
        schema = rf.json_schema.schema_
        return JsonWriter(schema) if schema is not None else None
    so = request.structured_outputs
    if so is None:
        return None
    if so.json_ is not None:
        try:
            schema = json.loads(so.json_) if isinstance(so.json_, str) else so.json_
        except ValueError:
            raise SimulatorError(
                400, "structured_outputs.json is not valid JSON.", param="structured_outputs"
            ) from None
        return JsonWriter(schema if isinstance(schema, dict) else None)
    if so.json_object:
        return JsonWriter(None)
    if so.choice:
        return JsonWriter(None, so.choice)
    return None
