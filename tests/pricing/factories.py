"""Plain builders for pricing tests: a price book and usage records with sensible defaults."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pricing import Depth, LedgerRow, PriceBook, UsageRecord, rate

JAN = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)  # in force: the 2026-01-01 version
JUL = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)  # in force: the 2026-06-01T00:00:00Z version


def book_data() -> dict[str, Any]:
    """A fresh decoded price book (tests mutate their copy to make it invalid)."""
    return {
        "currency": "USD",
        "versions": [
            {
                "effective_from": date(2026, 1, 1),
                "prices": {
                    "fast": {
                        "qwen3-8b": {
                            "input": "0.05",
                            "cached_input": "0.01",
                            "output": "0.20",
                            "request": "0",
                        },
                        "tiny-1b": {"input": "0.000001", "output": "0.000003"},
                    },
                    "deliberate": {
                        "qwen3-8b": {
                            "input": "0.10",
                            "cached_input": "0.02",
                            "output": "0.60",
                            "reasoning": "0.60",
                            "request": "0.0001",
                            "depth_premium": "0.0005",
                        },
                        "qwen3-32b": {
                            "input": "0.30",
                            "output": "1.20",
                            "reasoning": "1.50",
                            "request": "0.0002",
                            "depth_premium": "0.001",
                        },
                    },
                },
            },
            {
                "effective_from": "2026-06-01T00:00:00Z",
                "prices": {
                    "fast": {
                        "qwen3-8b": {"input": "0.04", "output": "0.16"},
                        "tiny-1b": {"input": "0.000001", "output": "0.000003"},
                    },
                    "deliberate": {
                        "qwen3-8b": {
                            "input": 1,
                            "output": "2",
                            "request": "0.0001",
                            "depth_premium": "0.0004",
                        },
                        "qwen3-32b": {"input": "0.30", "output": "1.20", "depth_premium": "0.001"},
                    },
                },
            },
        ],
    }


OFFERS = {"qwen3-8b": ("fast", "deliberate"), "qwen3-32b": ("deliberate",), "tiny-1b": ("fast",)}


def make_book() -> PriceBook:
    return PriceBook.from_mapping(book_data())


_counter = iter(range(10**9))


def make_record(**overrides: Any) -> UsageRecord:
    """A fast qwen3-8b request in January; any field can be overridden, `depth` by a Depth."""
    started = overrides.pop("started_at", JAN)
    fields: dict[str, Any] = {
        "request_id": f"req_{next(_counter):06d}",
        "tenant": "acme",
        "key_id": "k1",
        "tier": "fast",
        "model": "qwen3-8b",
        "served_model": "Qwen/Qwen3-8B",
        "replica": "http://127.0.0.1:8101",
        "endpoint": "chat",
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "reasoning_tokens": 0,
        "estimated": False,
        "depth": Depth(),
        "outcome": "ok",
        "streamed": False,
        "started_at": started,
        "first_token_at": started + timedelta(milliseconds=120),
        "ended_at": started + timedelta(seconds=2),
    }
    fields.update(overrides)
    return UsageRecord(**fields)


def make_row(book: PriceBook | None = None, **overrides: Any) -> LedgerRow:
    record = make_record(**overrides)
    return LedgerRow(record, rate(record, book or make_book()))


def replace(record: UsageRecord, **changes: Any) -> UsageRecord:
    return dataclasses.replace(record, **changes)
