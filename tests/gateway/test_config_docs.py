"""docs/configuration.md stays true to the settings model: every key a config file may set is documented."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from gateway.settings import Settings

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"
PLACEHOLDERS = {"pools": "NAME", "models": "ID", "tiers": "TIER", "efforts": "LEVEL"}


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The settings models an annotation holds, through Optional, dict values and lists."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin in (dict, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models_in(arg)


def keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = list(_models_in(field.annotation))
        if not nested:
            yield path
            continue
        below = f"{path}.{PLACEHOLDERS[name]}." if typing.get_origin(field.annotation) is dict else f"{path}."
        for sub in nested:
            yield from keys(sub, below)


def test_every_settings_key_is_in_the_configuration_docs() -> None:
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    documented = {name for row in rows for name in re.findall(r"`([^`]+)`", row)}
    text = " ".join(documented)
    missing = []
    for key in keys(Settings):
        leaf = key.rsplit(".", 1)[-1]
        # a row may name the key whole, or list its sub-keys after a shared prefix
        if key not in documented and not re.search(rf"(^|[.` ,{{]){re.escape(leaf)}($|[.` ,}}=])", text):
            missing.append(key)
    assert not missing, f"settings keys missing from docs/configuration.md: {missing}"
