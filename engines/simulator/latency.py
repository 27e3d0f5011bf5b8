"""Time as a GPU pool spends it: a scheduler that runs at most `max_num_seqs` requests and queues the
rest in arrival order, KV-cache occupancy, and how long prefill and each decode step take."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from engines.simulator.config import SimulatorConfig

__all__ = ["LatencyModel", "Scheduler"]


@dataclass(frozen=True, slots=True)
class LatencyModel:
    ttft_base_s: float = 0.0
    prefill_s_per_token: float = 0.0
    itl_s: float = 0.0

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> LatencyModel:
        if config.zero_latency:
            return cls()
        return cls(config.ttft_base_s, config.prefill_s_per_token, config.itl_s)

    @property
    def is_zero(self) -> bool:
        return self.ttft_base_s == 0 and self.prefill_s_per_token == 0 and self.itl_s == 0

    def prefill(self, prompt_tokens: int, cached_tokens: int) -> float:
        """Seconds to the first token once running; cached prefix blocks are not recomputed."""
        return self.ttft_base_s + self.prefill_s_per_token * (prompt_tokens - cached_tokens)


class Scheduler:
    """Running and waiting requests per model; `limit=None` (zero latency) never queues. The waiting leave in
    order of priority (vLLM's `priority`: lower first), then of arrival, as under vLLM's
    `--scheduling-policy priority` (with every priority 0, that is first come, first served)."""

    __slots__ = (
        "_arrivals",
        "_kv_capacity",
        "_limit",
        "_running_total",
        "_waiters",
        "kv_tokens",
        "running",
        "waiting",
    )

    def __init__(self, models: Iterable[str], limit: int | None, kv_capacity_tokens: int) -> None:
        self._limit = limit
        self._kv_capacity = kv_capacity_tokens
        self._running_total = 0
        self._waiters: list[tuple[int, int, str, asyncio.Future[None]]] = []  # a heap
        self._arrivals = itertools.count()
        self.running = dict.fromkeys(models, 0)
        self.waiting = dict.fromkeys(models, 0)
        self.kv_tokens = 0  # prompt + generated tokens of running requests

    @property
    def kv_usage(self) -> float:
        return min(self.kv_tokens / self._kv_capacity, 1.0)

    def try_acquire(self, model: str) -> bool:
        """Take a running slot now if one is free and nobody is queued ahead."""
        if self._limit is None or (self._running_total < self._limit and not self._waiters):
            self._running_total += 1
            self.running[model] += 1
            return True
        return False

    async def acquire(self, model: str, priority: int = 0) -> None:
        if self.try_acquire(model):
            return
        entry = (priority, next(self._arrivals), model, asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, entry)
        self.waiting[model] += 1
        try:
            await entry[3]
        except asyncio.CancelledError:
            if entry[3].done() and not entry[3].cancelled():
                self.release(model)  # the slot was handed over just as the waiter gave up
            else:
                if entry in self._waiters:  # release() may already have skipped it
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                self.waiting[model] -= 1
            raise

    def release(self, model: str) -> None:
        self.running[model] -= 1
        while self._waiters:
            _, _, next_model, future = heapq.heappop(self._waiters)
            if future.done():  # cancelled while waiting; its acquire() cleans up
                continue
            # Hand the slot straight to the next in line, so later arrivals cannot overtake it.
            self.waiting[next_model] -= 1
            self.running[next_model] += 1
            future.set_result(None)
            return
        self._running_total -= 1
