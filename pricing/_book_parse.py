"""Reading a price book: YAML to validated `PriceVersion`s, refusing anything ambiguous with the key named.

Refused: floats (not exact money), negative prices, unknown keys and tiers, tier suffixes in model ids,
versions out of order or on the same instant, an empty book, and duplicate YAML keys (PyYAML would silently
keep the last of two `qwen3-8b:` entries, and the other price would vanish without a word).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType

import yaml

from pricing._exceptions import PriceBookError
from pricing.money import parse_money
from pricing.prices import ClassRule, Price, PriceVersion
from pricing.records import PRIORITY_CLASSES, TIERS

__all__ = ["load_yaml", "parse_versions"]

_BOOK_KEYS = ("currency", "versions")
_VERSION_KEYS = ("effective_from", "prices", "classes")
_CLASS_KEYS = ("multiplier",)
_MAX_MULTIPLIER = 100
_PRICE_KEYS = {
    "fast": ("input", "cached_input", "output", "reasoning", "request"),
    "deliberate": ("input", "cached_input", "output", "reasoning", "request", "depth_premium"),
}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Hashable, object]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceBookError(f"{path}: cannot read the price book: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise PriceBookError(f"{path}: not valid YAML: {exc}") from None


def _fail(key: str, problem: str) -> PriceBookError:
    return PriceBookError(f"{key}: {problem}")


def _mapping(value: object, key: str, what: str) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        raise _fail(key, f"expected {what}, got {value!r}")
    return value


def _known_keys(data: Mapping[object, object], allowed: tuple[str, ...], prefix: str, note: str = "") -> None:
    for key in data:
        if key not in allowed:
            raise _fail(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(allowed)}){note}")


def parse_versions(data: object) -> tuple[str, tuple[PriceVersion, ...]]:
    book = _mapping(data, "price book", "a mapping with currency and versions")
    _known_keys(book, _BOOK_KEYS, "")
    currency = book.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise _fail("currency", f"expected an ISO 4217 code such as USD, got {currency!r}")
    raw_versions = book.get("versions")
    if not isinstance(raw_versions, list):
        raise _fail("versions", f"expected a list of price versions, got {raw_versions!r}")
    if not raw_versions:
        raise _fail("versions", "empty book: at least one price version is needed")
    versions: list[PriceVersion] = []
    for index, raw in enumerate(raw_versions):
        version = _parse_version(raw, f"versions[{index}]")
        if versions and version.effective_from <= versions[-1].effective_from:
            previous = versions[-1]
            problem = (
                "duplicate date" if version.effective_from == previous.effective_from else "out of order"
            )
            raise _fail(
                f"versions[{index}].effective_from",
                f"{problem}: {version.label} is not after versions[{index - 1}] ({previous.label})",
            )
        versions.append(version)
    return currency, tuple(versions)


def _parse_version(raw: object, where: str) -> PriceVersion:
    version = _mapping(raw, where, "a mapping with effective_from and prices")
    _known_keys(version, _VERSION_KEYS, f"{where}.")
    if "effective_from" not in version:
        raise _fail(f"{where}.effective_from", "missing")
    label, effective_from = _parse_effective_from(version["effective_from"], f"{where}.effective_from")
    raw_prices = _mapping(version.get("prices"), f"{where}.prices", "a mapping of tier -> model -> prices")
    if not raw_prices:
        raise _fail(f"{where}.prices", "no prices")
    prices: dict[str, Mapping[str, Price]] = {}
    for tier, raw_models in raw_prices.items():
        if tier not in TIERS:
            raise _fail(f"{where}.prices.{tier}", f"unknown tier (tiers: {', '.join(TIERS)})")
        models = _mapping(raw_models, f"{where}.prices.{tier}", "a mapping of model -> prices")
        by_model: dict[str, Price] = {}
        for model, raw_price in models.items():
            key = f"{where}.prices.{tier}.{model}"
            if not isinstance(model, str) or not model:
                raise _fail(key, "a model id is a non-empty string")
            if ":" in model:
                raise _fail(key, "a model id carries no tier suffix: price it under its tier")
            by_model[model] = _parse_price(tier, raw_price, key)
        prices[str(tier)] = MappingProxyType(by_model)
    classes = _parse_classes(version.get("classes", {}), f"{where}.classes")
    return PriceVersion(label, effective_from, MappingProxyType(prices), MappingProxyType(classes))


def _parse_classes(raw: object, where: str) -> dict[str, ClassRule]:
    """`{premium: {multiplier: "1.2"}}`: standard is the book's prices, so only the others have a rule."""
    classes = _mapping(raw, where, "a mapping of priority class -> its rule")
    rules: dict[str, ClassRule] = {}
    for name, raw_rule in classes.items():
        key = f"{where}.{name}"
        if name not in PRIORITY_CLASSES:
            raise _fail(key, f"unknown priority class (classes: {', '.join(PRIORITY_CLASSES)})")
        if name == "standard":
            raise _fail(key, "the standard class pays the prices as they are: it takes no rule")
        rule = _mapping(raw_rule, key, "a mapping with multiplier")
        _known_keys(rule, _CLASS_KEYS, f"{key}.")
        if "multiplier" not in rule:
            raise _fail(f"{key}.multiplier", "missing")
        rules[str(name)] = ClassRule(_parse_multiplier(rule["multiplier"], f"{key}.multiplier"))
    return rules


def _parse_multiplier(value: object, key: str) -> int:
    """A decimal string ("1.2") or a whole number, at least 1, at most 6 places: in millionths."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        note = f' (write it as a string: "{value!r}")' if isinstance(value, float) else ""
        raise _fail(key, f'expected a decimal string such as "1.2", got {value!r}{note}')
    try:
        multiplier = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise _fail(key, f"not a decimal number: {value!r}") from None
    if not multiplier.is_finite() or not 1 <= multiplier <= _MAX_MULTIPLIER:
        raise _fail(key, f"a multiplier is at least 1 and at most {_MAX_MULTIPLIER}, got {value!r}")
    ppm = multiplier * 1_000_000
    if ppm != ppm.to_integral_value():
        raise _fail(key, f"more precise than 0.000001: {value!r}")
    return int(ppm)


def _parse_effective_from(value: object, key: str) -> tuple[str, datetime]:
    """A date (midnight UTC) or an RFC 3339 time with an offset; YAML may have decoded either already."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise _fail(key, f"not a date or an RFC 3339 time: {value!r}") from None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise _fail(
                key, f"time without a UTC offset: {value.isoformat()} (write e.g. 2026-03-01T00:00:00Z)"
            )
        moment = value.astimezone(UTC)
        label = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
        return label.replace("+00:00", "Z"), moment
    if isinstance(value, date):
        return value.isoformat(), datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise _fail(key, f"expected a date or an RFC 3339 time, got {value!r}")


def _parse_price(tier: str, raw: object, key: str) -> Price:
    entry = _mapping(raw, key, "a mapping of prices (input, output, ...)")
    note = " - only the deliberate tier has a depth premium" if tier == "fast" else ""
    _known_keys(entry, _PRICE_KEYS[tier], f"{key}.", note)
    for required in ("input", "output"):
        if required not in entry:
            raise _fail(f"{key}.{required}", "missing")
    amounts: dict[str, int] = {}
    for name, value in entry.items():
        try:
            amounts[str(name)] = parse_money(value)
        except ValueError as exc:
            raise _fail(f"{key}.{name}", str(exc)) from None
    return Price(
        input=amounts["input"],
        cached_input=amounts.get("cached_input", amounts["input"]),
        output=amounts["output"],
        reasoning=amounts.get("reasoning", amounts["output"]),
        request=amounts.get("request", 0),
        depth_premium=amounts.get("depth_premium", 0),
    )
