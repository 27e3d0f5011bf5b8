"""The usage record: plain values, one per request, built once by the gateway's metering at the request's end.

It is what the journal and the ledger store (`to_json`/`from_json`: orjson bytes, keys in field order, times
in UTC with microseconds, so one record always serializes to the same bytes) and what `rate` prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson

from pricing import _decode as d
from pricing.charges import Charge

__all__ = [
    "ENDPOINTS",
    "OUTCOMES",
    "PRIORITY_CLASSES",
    "RECORD_FORMAT",
    "RECORD_TIERS",
    "SHORTFALLS",
    "TIERS",
    "Cascade",
    "Depth",
    "LedgerRow",
    "UsageRecord",
]

TIERS = ("fast", "deliberate")  # the tiers priced in a book; also the order of tiers on an invoice
# a record's tier: `cascade` is priced by its stages, at the fast and deliberate prices (see rating)
RECORD_TIERS = (*TIERS, "cascade")
# a tenant's priority class: `premium` is served ahead and priced by the book's class rule (see rating)
PRIORITY_CLASSES = ("standard", "premium")
ENDPOINTS = ("chat", "completions", "responses")
OUTCOMES = ("ok", "client_disconnected", "engine_failed", "rejected", "aborted")
RECORD_FORMAT = 1  # the "v" of a serialized record; bump it when the fields change
# why a request's engines delivered less depth than was asked of them (docs/deliberation.md#the-depth-audit),
# in the order a record lists them
SHORTFALLS = ("floor_missed", "cap_ignored", "budget_ignored", "effort_ignored", "samples_short")

_DEPTH_KEYS = ("samples", "extensions", "floor", "floor_met", "agreement")
_CASCADE_KEYS = (
    "escalated", "confidence", "threshold",
    "fast_prompt_tokens", "fast_cached_tokens", "fast_completion_tokens",
)  # fmt: skip
_RECORD_KEYS = (
    "v", "request_id", "tenant", "key_id", "tier", "model", "served_model", "replica", "endpoint",
    "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "estimated", "depth",
    "outcome", "streamed", "started_at", "first_token_at", "ended_at",
)  # fmt: skip


def _count(owner: str, name: str, value: object, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Depth:
    """The deliberate tier's reasoning depth; the defaults describe a request that made no depth promise."""

    samples: int = 1
    extensions: int = 0
    floor: int | None = None  # the promised minimum reasoning tokens, if any
    floor_met: bool | None = None  # None: no promise was made
    agreement: float | None = None  # self-consistency agreement ratio, if sampled
    # the depth audit's findings (SHORTFALLS, in their order); any of them forfeits the depth premium
    shortfall: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _count("depth", "samples", self.samples, 1)
        _count("depth", "extensions", self.extensions)
        if self.floor is not None:
            _count("depth", "floor", self.floor)
        # the premium hangs on floor_met: a verdict without a promise (or the reverse) is a metering bug
        if (self.floor is None) != (self.floor_met is None):
            raise ValueError(
                f"depth: floor {self.floor!r} and floor_met {self.floor_met!r} must be set together"
            )
        if self.floor_met is not None and not isinstance(self.floor_met, bool):
            raise ValueError(f"depth.floor_met must be a boolean or None, got {self.floor_met!r}")
        if self.agreement is not None and (
            isinstance(self.agreement, bool)
            or not isinstance(self.agreement, int | float)
            or not 0.0 <= self.agreement <= 1.0
        ):
            raise ValueError(f"depth.agreement must be a ratio in [0, 1], got {self.agreement!r}")
        if self.agreement is not None:
            # 1 and 1.0 serialize differently: keep one spelling so a record's bytes survive a round trip
            object.__setattr__(self, "agreement", float(self.agreement))
        if self.shortfall:
            self._check_shortfall()

    def _check_shortfall(self) -> None:
        shortfall = self.shortfall
        if not isinstance(shortfall, tuple) or list(shortfall) != [r for r in SHORTFALLS if r in shortfall]:
            raise ValueError(
                f"depth.shortfall must be distinct reasons of {SHORTFALLS} in order, got {shortfall!r}"
            )
        # a relayed request promises no depth: only the thinking budget its client asked for is audited
        if self.floor is None and shortfall != ("budget_ignored",):
            raise ValueError(f"depth.shortfall {shortfall!r} without a depth promise (no floor)")
        if "floor_missed" in shortfall and self.floor_met is not False:
            raise ValueError(f"depth.shortfall {shortfall!r} with floor_met {self.floor_met!r}")

    def to_dict(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "samples": self.samples,
            "extensions": self.extensions,
            "floor": self.floor,
            "floor_met": self.floor_met,
            "agreement": self.agreement,
        }
        if self.shortfall:  # only then: a record without one serializes to the bytes it always did
            fields["shortfall"] = list(self.shortfall)
        return fields

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Depth:
        shortfall = data.get("shortfall", [])
        d.require_keys(data, (*_DEPTH_KEYS, "shortfall") if "shortfall" in data else _DEPTH_KEYS, "depth")
        if not isinstance(shortfall, list) or (not shortfall and "shortfall" in data):
            raise ValueError(f"shortfall: expected a non-empty list, got {shortfall!r}")
        return cls(
            samples=d.get_int(data, "samples"),
            extensions=d.get_int(data, "extensions"),
            floor=d.get_opt_int(data, "floor"),
            floor_met=d.get_opt_bool(data, "floor_met"),
            agreement=d.get_opt_float(data, "agreement"),
            shortfall=tuple(str(reason) for reason in shortfall),
        )


@dataclass(frozen=True, slots=True)
class Cascade:
    """What the cascade tier did: its fast stage's counts (a subset of the record's), its confidence in the
    fast answer against the model's threshold, and whether the request went on to the deliberate tier (whose
    counts are then the record's less the fast stage's)."""

    escalated: bool
    confidence: float | None  # None: the fast stage ended before it could be scored
    threshold: float
    fast_prompt_tokens: int
    fast_cached_tokens: int
    fast_completion_tokens: int

    def __post_init__(self) -> None:
        if not isinstance(self.escalated, bool):
            raise ValueError(f"cascade.escalated must be a boolean, got {self.escalated!r}")
        for name in ("confidence", "threshold"):
            value = getattr(self, name)
            if value is None and name == "confidence":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"cascade.{name} must be a ratio in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))  # one spelling, for byte-stable records
        for name in ("fast_prompt_tokens", "fast_cached_tokens", "fast_completion_tokens"):
            _count("cascade", name, getattr(self, name))

    def to_dict(self) -> dict[str, object]:
        return {
            "escalated": self.escalated,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "fast_prompt_tokens": self.fast_prompt_tokens,
            "fast_cached_tokens": self.fast_cached_tokens,
            "fast_completion_tokens": self.fast_completion_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Cascade:
        d.require_keys(data, _CASCADE_KEYS, "cascade")
        threshold = d.get_opt_float(data, "threshold")
        if threshold is None:
            raise ValueError("cascade.threshold: expected a number")
        return cls(
            escalated=d.get_bool(data, "escalated"),
            confidence=d.get_opt_float(data, "confidence"),
            threshold=threshold,
            fast_prompt_tokens=d.get_int(data, "fast_prompt_tokens"),
            fast_cached_tokens=d.get_int(data, "fast_cached_tokens"),
            fast_completion_tokens=d.get_int(data, "fast_completion_tokens"),
        )


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    tenant: str | None
    key_id: str | None
    tier: str  # "fast" | "deliberate" | "cascade"
    model: str  # the public model id, e.g. "qwen3-8b"
    served_model: str  # the engine's name for it
    replica: str
    endpoint: str  # "chat" | "completions" | "responses"
    prompt_tokens: int
    cached_tokens: int  # a subset of prompt_tokens
    completion_tokens: int
    reasoning_tokens: int  # a subset of completion_tokens: never added on top of it
    estimated: bool  # counts estimated because the engine's usage never arrived
    depth: Depth
    outcome: str  # "ok" | "client_disconnected" | "engine_failed" | "rejected" | "aborted"
    streamed: bool
    started_at: datetime  # timezone-aware (UTC); selects the price version
    first_token_at: datetime | None
    ended_at: datetime
    cascade: Cascade | None = None  # the cascade tier's stages; None for every other tier
    priority_class: str = "standard"  # its tenant's (PRIORITY_CLASSES)

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError(f"request_id must be a non-empty string, got {self.request_id!r}")
        where = f"record {self.request_id}"
        for name, allowed in (
            ("tier", RECORD_TIERS),
            ("endpoint", ENDPOINTS),
            ("outcome", OUTCOMES),
            ("priority_class", PRIORITY_CLASSES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{where}: {name} {getattr(self, name)!r} is not one of {allowed}")
        prompt, cached, completion, reasoning = (
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
        )
        # `type() is int` refuses bool and floats: the fast check, on every request
        if not (
            type(prompt) is int
            and type(cached) is int
            and type(completion) is int
            and type(reasoning) is int
            and min(prompt, cached, completion, reasoning) >= 0
        ):
            for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"):
                _count(where, name, getattr(self, name))
        # the subsets are what keeps rating from counting a token twice (REFERENCE: reasoning billed twice)
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError(
                f"{where}: cached_tokens {self.cached_tokens} > prompt_tokens {self.prompt_tokens}"
            )
        if self.reasoning_tokens > self.completion_tokens:
            raise ValueError(
                f"{where}: reasoning_tokens {self.reasoning_tokens}"
                f" > completion_tokens {self.completion_tokens}"
            )
        if not isinstance(self.depth, Depth):
            raise ValueError(f"{where}: depth must be a Depth, got {self.depth!r}")
        for name in ("started_at", "first_token_at", "ended_at"):
            moment = getattr(self, name)
            if moment is None and name == "first_token_at":
                continue
            if not isinstance(moment, datetime) or moment.utcoffset() is None:
                raise ValueError(f"{where}: {name} must be a timezone-aware datetime, got {moment!r}")
        if self.cascade is not None and (
            self.tier != "cascade"
            or self.cascade.fast_prompt_tokens > self.prompt_tokens
            or self.cascade.fast_cached_tokens > min(self.cached_tokens, self.cascade.fast_prompt_tokens)
            or self.cascade.fast_completion_tokens > self.completion_tokens
        ):
            raise ValueError(f"{where}: cascade {self.cascade!r} is not a stage of this {self.tier} record")
        # No ordering check between the times: a wall clock may step back mid-request, and refusing the
        # record would lose a bill over a clock.

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "v": RECORD_FORMAT,
            "request_id": self.request_id,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "tier": self.tier,
            "model": self.model,
            "served_model": self.served_model,
            "replica": self.replica,
            "endpoint": self.endpoint,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated": self.estimated,
            "depth": self.depth.to_dict(),
            "outcome": self.outcome,
            "streamed": self.streamed,
            "started_at": d.format_utc(self.started_at),
            "first_token_at": None if self.first_token_at is None else d.format_utc(self.first_token_at),
            "ended_at": d.format_utc(self.ended_at),
        }
        if self.cascade is not None:  # absent otherwise: every other record keeps its bytes
            data["cascade"] = self.cascade.to_dict()
        if self.priority_class != "standard":  # likewise: a standard record keeps its bytes
            data["priority_class"] = self.priority_class
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> UsageRecord:
        cascade = data.get("cascade")
        if cascade is not None and not isinstance(cascade, dict):
            raise ValueError(f"cascade: expected an object, got {cascade!r}")
        keys = _RECORD_KEYS + tuple(name for name in ("cascade", "priority_class") if name in data)
        d.require_keys(data, keys, "usage record")
        if data["v"] != RECORD_FORMAT:
            raise ValueError(
                f"v: unknown usage record format {data['v']!r} (this version reads {RECORD_FORMAT})"
            )
        depth = data["depth"]
        if not isinstance(depth, dict):
            raise ValueError(f"depth: expected an object, got {depth!r}")
        return cls(
            request_id=d.get_str(data, "request_id"),
            tenant=d.get_opt_str(data, "tenant"),
            key_id=d.get_opt_str(data, "key_id"),
            tier=d.get_str(data, "tier"),
            model=d.get_str(data, "model"),
            served_model=d.get_str(data, "served_model"),
            replica=d.get_str(data, "replica"),
            endpoint=d.get_str(data, "endpoint"),
            prompt_tokens=d.get_int(data, "prompt_tokens"),
            cached_tokens=d.get_int(data, "cached_tokens"),
            completion_tokens=d.get_int(data, "completion_tokens"),
            reasoning_tokens=d.get_int(data, "reasoning_tokens"),
            estimated=d.get_bool(data, "estimated"),
            depth=Depth.from_dict(depth),
            outcome=d.get_str(data, "outcome"),
            streamed=d.get_bool(data, "streamed"),
            started_at=d.get_time(data, "started_at"),
            first_token_at=d.get_opt_time(data, "first_token_at"),
            ended_at=d.get_time(data, "ended_at"),
            cascade=Cascade.from_dict(cascade) if cascade is not None else None,
            priority_class=d.get_str(data, "priority_class") if "priority_class" in data else "standard",
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> UsageRecord:
        decoded = orjson.loads(data)
        if not isinstance(decoded, dict):
            raise ValueError("a usage record is a JSON object")
        return cls.from_dict(decoded)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A record and what it was charged: the unit invoices and exports are built from."""

    record: UsageRecord
    charge: Charge

    def __post_init__(self) -> None:
        if self.record.request_id != self.charge.request_id:
            raise ValueError(
                f"charge {self.charge.request_id!r} is not for record {self.record.request_id!r}"
            )
