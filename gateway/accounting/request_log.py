"""One structured log line per inference request, on the `tiergate.requests` logger at INFO: a JSON object
with the request's identity, tier, tokens, cost, depth, latency and outcome - never its prompt or output."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.accounting.exchange import Exchange
from pricing import Charge, UsageRecord

__all__ = ["log_request"]

log = logging.getLogger("tiergate.requests")


def log_request(exchange: Exchange, record: UsageRecord, charge: Charge | None) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    line: dict[str, Any] = {
        "event": "request",
        "request_id": record.request_id,
        "tenant": record.tenant,
        "key_id": record.key_id,  # the key's public id: never the secret
        "endpoint": record.endpoint,
        "model": record.model,
        "tier": record.tier,
        "replica": record.replica or None,
        "streamed": record.streamed,
        "status": exchange.status,
        "outcome": record.outcome,
        "prompt_tokens": record.prompt_tokens,
        "cached_tokens": record.cached_tokens,
        "completion_tokens": record.completion_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "estimated": record.estimated,
        "ttft_ms": round(exchange.first_token_s * 1000, 1) if exchange.first_token_s is not None else None,
        "duration_ms": round(exchange.duration_s * 1000, 1),
    }
    if charge is not None:
        line["cost_micros"] = charge.total
        line["currency"] = charge.currency
        line["rated_tier"] = charge.rated_tier
    if record.depth.floor is not None:
        line["depth"] = record.depth.to_dict()
    log.info("%s", orjson.dumps(line).decode())
