"""What a request costs: charge lines and their total, in integer micros (see `pricing.money`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import orjson

from pricing._decode import get_int, get_str, require_keys
from pricing.money import Micros

__all__ = ["FEE_KINDS", "KINDS", "TOKEN_KINDS", "Charge", "ChargeKind", "ChargeLine"]

ChargeKind = Literal[
    "input", "cached_input", "output", "reasoning", "request", "depth_premium", "class_surcharge"
]
KINDS: tuple[ChargeKind, ...] = get_args(ChargeKind)  # also the order of lines in a charge and an invoice
TOKEN_KINDS: tuple[ChargeKind, ...] = ("input", "cached_input", "output", "reasoning")  # price per 1M tokens
# price per request; a class surcharge is its request's whole charge times the class's multiplier less 1
FEE_KINDS: tuple[ChargeKind, ...] = ("request", "depth_premium", "class_surcharge")

_LINE_KEYS = ("kind", "quantity", "unit_price", "amount")
_CHARGE_KEYS = ("request_id", "currency", "price_version", "rated_tier", "lines", "total")


@dataclass(frozen=True, slots=True)
class ChargeLine:
    kind: ChargeKind
    quantity: int  # tokens for token lines, requests (1) for fees
    unit_price: Micros  # per 1M tokens for token lines, per request for fees
    amount: Micros

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown charge kind {self.kind!r}")
        quantity, unit_price, amount = self.quantity, self.unit_price, self.amount
        # `type() is int` refuses bool (and floats): the fast check, on every line of every request
        if (
            type(quantity) is int
            and type(unit_price) is int
            and type(amount) is int
            and quantity >= 0
            and unit_price >= 0
            and amount >= 0
        ):
            return
        for name, value in (("quantity", quantity), ("unit_price", unit_price), ("amount", amount)):
            if type(value) is not int or value < 0:
                raise ValueError(f"{self.kind} line: {name} must be a non-negative integer, got {value!r}")

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "amount": self.amount,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ChargeLine:
        require_keys(data, _LINE_KEYS, "charge line")
        kind = get_str(data, "kind")
        if kind not in KINDS:
            raise ValueError(f"kind: unknown charge kind {kind!r}")
        return cls(kind, get_int(data, "quantity"), get_int(data, "unit_price"), get_int(data, "amount"))


@dataclass(frozen=True, slots=True)
class Charge:
    request_id: str
    currency: str
    price_version: str  # the effective_from of the price version used, as the book names it
    rated_tier: (
        str  # the tier whose prices applied: "fast" for a deliberate request whose depth floor was missed,
        # "cascade" for an escalated cascade (its fast stage's lines, then its deliberate stage's)
    )
    lines: tuple[ChargeLine, ...]
    total: Micros

    def __post_init__(self) -> None:
        if not isinstance(self.lines, tuple):
            raise ValueError("lines must be a tuple")
        if self.total != sum(line.amount for line in self.lines):
            raise ValueError(f"{self.request_id}: total {self.total} is not the sum of its lines")
        kinds = [line.kind for line in self.lines]
        # an escalated cascade's two stages (the fast one ends with its request line) each have their lines
        cut = kinds.index("request") + 1 if self.rated_tier == "cascade" and "request" in kinds else 0
        for stage in (kinds[:cut], kinds[cut:]):
            if len(set(stage)) != len(stage):
                raise ValueError(f"{self.request_id}: a charge kind appears twice in {kinds}")

    def amount_of(self, kind: ChargeKind) -> Micros:
        return sum(line.amount for line in self.lines if line.kind == kind)

    def to_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "currency": self.currency,
            "price_version": self.price_version,
            "rated_tier": self.rated_tier,
            "lines": [line.to_dict() for line in self.lines],
            "total": self.total,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Charge:
        require_keys(data, _CHARGE_KEYS, "charge")
        lines = data["lines"]
        if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
            raise ValueError(f"lines: expected a list of objects, got {lines!r}")
        return cls(
            request_id=get_str(data, "request_id"),
            currency=get_str(data, "currency"),
            price_version=get_str(data, "price_version"),
            rated_tier=get_str(data, "rated_tier"),
            lines=tuple(ChargeLine.from_dict(line) for line in lines),
            total=get_int(data, "total"),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Charge:
        decoded = orjson.loads(data)
        if not isinstance(decoded, dict):
            raise ValueError("a charge is a JSON object")
        return cls.from_dict(decoded)
