"""Failure injection: per request with the `x-sim-fault` header, or at random by config rates.

Header grammar (items separated by `,` or `;`, spaces ignored, keys case-insensitive):

    status=<400..599>     answer this error status at once (429 and 503 carry `retry-after`)
    retry-after=<int s>   the `retry-after` value for that error (default: config.retry_after_s)
    die-after=<int n>     send n chunks (SSE events; for a non-streaming request, n is ignored and
                          the headers plus part of the body are sent), then drop the connection
    stall=<float s>       sleep s seconds before the first token
    stall-mid=<float s>   sleep s seconds after the first token was sent
    logprob-mean=<float>  not a fault: the mean logprob of the chosen tokens (config.logprob_mean), in
                          [-50, 0), so one request can come back confident or unsure

Example: `x-sim-fault: die-after=3; stall-mid=0.5`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from engines.simulator.config import SimulatorConfig

__all__ = ["FAULT_HEADER", "NO_FAULT", "Fault", "FaultInjector", "parse_fault"]

FAULT_HEADER = b"x-sim-fault"


@dataclass(frozen=True, slots=True)
class Fault:
    status: int | None = None
    retry_after_s: int | None = None
    die_after: int | None = None
    stall_s: float = 0.0
    stall_mid_s: float = 0.0
    logprob_mean: float | None = None

    @property
    def sleeps(self) -> bool:
        return self.stall_s > 0 or self.stall_mid_s > 0


NO_FAULT = Fault()


_INT_FIELDS = MappingProxyType({"status": "status", "retry-after": "retry_after_s", "die-after": "die_after"})
_SECONDS_FIELDS = MappingProxyType({"stall": "stall_s", "stall-mid": "stall_mid_s"})


def parse_fault(value: str) -> Fault:
    """Parse an `x-sim-fault` header value; ValueError says which item is wrong."""
    fields: dict[str, Any] = {}
    for item in value.replace(";", ",").split(","):
        if not item.strip():
            continue
        key, _, raw = (part.strip() for part in item.partition("="))
        key = key.lower()
        try:
            if key in _INT_FIELDS:
                number = int(raw)
                if number < 0 or (key == "status" and not 400 <= number <= 599):
                    raise ValueError("out of range")
                fields[_INT_FIELDS[key]] = number
            elif key == "logprob-mean":
                mean = float(raw)
                if not -50.0 <= mean < 0.0:
                    raise ValueError("out of range")
                fields["logprob_mean"] = mean
            elif key in _SECONDS_FIELDS:
                seconds = float(raw)
                if not 0 <= seconds < 3600:
                    raise ValueError("out of range")
                fields[_SECONDS_FIELDS[key]] = seconds
            else:
                raise ValueError("unknown key")
        except ValueError as exc:
            raise ValueError(f"invalid x-sim-fault item {item.strip()!r}: {exc}") from None
    return Fault(**fields)


class FaultInjector:
    """Decides each request's fault: the header's, plus the config's random ones it leaves unset."""

    __slots__ = ("_config", "_random", "_rng")

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed ^ 0xFA17)  # seeded, so a run's faults are reproducible
        self._random = (
            config.error_rate > 0
            or config.die_after_chunks_rate > 0
            or (config.stall_seconds > 0 and config.stall_rate > 0)
        )

    def decide(self, header: str | None) -> Fault:
        fault = parse_fault(header) if header else NO_FAULT
        if not self._random:
            return fault
        c, rng = self._config, self._rng
        if fault.status is None and rng.random() < c.error_rate:
            fault = replace(fault, status=c.error_status)
        if fault.die_after is None and rng.random() < c.die_after_chunks_rate:
            fault = replace(fault, die_after=c.die_after_chunks)
        if not fault.stall_s and c.stall_seconds > 0 and rng.random() < c.stall_rate:
            fault = replace(fault, stall_s=c.stall_seconds)
        return fault

    def retry_after(self, fault: Fault) -> int | None:
        """The `retry-after` seconds for an injected error; only 429 and 503 carry one."""
        if fault.status not in (429, 503):
            return None
        return self._config.retry_after_s if fault.retry_after_s is None else fault.retry_after_s
