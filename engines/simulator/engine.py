"""The simulated engine: everything one app instance owns, and the life of one request in it
(queue, prefill, decode steps, and the metrics it leaves behind)."""

from __future__ import annotations

import asyncio
import os
from itertools import count
from time import perf_counter

from engines.simulator.config import SimulatorConfig
from engines.simulator.faults import Fault, FaultInjector
from engines.simulator.latency import LatencyModel, Scheduler
from engines.simulator.metrics import ModelStats, SimulatorMetrics
from engines.simulator.plan import ChoicePlan, Planner
from engines.simulator.prefix_cache import PrefixCache
from engines.simulator.text import TextSource
from engines.simulator.tokenizer import Tokenizer

__all__ = ["Engine", "Job"]


class Engine:
    """The state of one simulated engine. Built per app; nothing is shared between apps."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.healthy = config.healthy  # settable at run time, to take a replica down in a test
        self.tokenizer = Tokenizer()
        self.planner = Planner(config, TextSource(config.seed))
        self.prefix_cache = PrefixCache(config.prefix_cache_blocks)
        self.latency = LatencyModel.from_config(config)
        self.scheduler = Scheduler(
            config.models, None if config.zero_latency else config.max_num_seqs, config.kv_cache_tokens
        )
        self.metrics = SimulatorMetrics(config.models, self.scheduler)
        self.faults = FaultInjector(config)
        self.in_flight = 0  # generation requests being served, queued ones included (vLLM's /load)
        self._ids = count()
        self._id_prefix = os.urandom(4).hex()

    def request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):08x}"

    def job(
        self,
        model: str,
        plans: list[ChoicePlan],
        prompt_tokens: int,
        cached_tokens: int,
        fault: Fault,
        *,
        n: int = 1,
        priority: int = 0,
    ) -> Job:
        return Job(self, model, plans, prompt_tokens, cached_tokens, fault, n, priority)


class Job:
    """One request from arrival to close. Drive it with `admit()`, then `next_step()` and `pause()`
    until `done`, and always `close()` it.

    Counted as vLLM 0.32 counts (vllm/v1/engine/output_processor.py, vllm/v1/metrics/stats.py): the prompt
    with the first token, once for each of the request's `n` sequences (vLLM prefills each one), generated
    tokens as they are emitted, and a choice in `vllm:request_success_total` and the end-to-end latency only
    when it finishes. A choice cut short by a client that left (a close before `done`) is counted nowhere
    else: vLLM has no abort counter (its `finished_reason="abort"` series stays 0 for a client's abort)."""

    __slots__ = (
        "_arrival",
        "_closed",
        "_engine",
        "_fault",
        "_kv_tokens",
        "_last_step_at",
        "_scheduled",
        "cached_tokens",
        "emitted",
        "instant",
        "model",
        "plans",
        "priority",
        "prompt_tokens",
        "sequences",
        "steps_done",
        "total_steps",
    )

    def __init__(
        self,
        engine: Engine,
        model: str,
        plans: list[ChoicePlan],
        prompt_tokens: int,
        cached_tokens: int,
        fault: Fault,
        sequences: int = 1,
        priority: int = 0,
    ) -> None:
        self.priority = priority  # vLLM's: a lower one leaves the waiting queue first
        self._arrival = perf_counter()
        self._closed = False
        self._engine = engine
        self._fault = fault
        self._kv_tokens = 0  # what this job holds in the KV cache
        self._last_step_at = 0.0
        self._scheduled = False
        self.model = model
        self.plans = plans
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.sequences = sequences  # the request's n: vLLM reads its prompt once for each
        self.emitted = [0] * len(plans)  # tokens sent so far, per choice
        self.steps_done = 0
        self.total_steps = max(len(plan.steps) for plan in plans)
        # Nothing in an instant job ever sleeps or queues, so it can run without a disconnect watcher.
        self.instant = engine.latency.is_zero and not fault.sleeps

    @property
    def done(self) -> bool:
        return self.steps_done >= self.total_steps

    async def admit(self) -> None:
        """Wait for a running slot, then for prefill (and an injected stall)."""
        await self._engine.scheduler.acquire(self.model, self.priority)
        self._on_scheduled()
        delay = self._engine.latency.prefill(self.prompt_tokens, self.cached_tokens) + self._fault.stall_s
        if delay > 0:
            await asyncio.sleep(delay)

    def try_admit_now(self) -> bool:
        """Admission without waiting, for an instant job; False when it would have to queue."""
        if not self._engine.scheduler.try_acquire(self.model):
            return False
        self._on_scheduled()
        return True

    def _on_scheduled(self) -> None:
        self._scheduled = True
        m = self._engine.metrics.models[self.model]
        m.queue_time.observe(perf_counter() - self._arrival)
        self._hold_kv(self.prompt_tokens)

    def _hold_kv(self, tokens: int) -> None:
        self._kv_tokens += tokens
        self._engine.scheduler.kv_tokens += tokens

    def next_step(self) -> list[tuple[ChoicePlan, int, int]]:
        """One engine iteration: (choice, first token index, token count) for each choice that emits."""
        t = self.steps_done
        out: list[tuple[ChoicePlan, int, int]] = []
        produced = 0
        for i, plan in enumerate(self.plans):
            if t < len(plan.steps):
                size = plan.steps[t]
                out.append((plan, self.emitted[i], size))
                self.emitted[i] += size
                produced += size
        self.steps_done = t + 1
        self._hold_kv(produced)
        now = perf_counter()
        m = self._engine.metrics.models[self.model]
        m.generation_tokens += produced
        if t == 0:
            self._prefilled(m)
            m.ttft.observe(now - self._arrival)
        else:
            m.itl.observe(now - self._last_step_at)
        self._last_step_at = now
        return out

    def pause(self) -> float:
        """Seconds until the next step may be emitted."""
        if self.done:
            return 0.0
        pause = self._engine.latency.itl_s
        if self.steps_done == 1:
            pause += self._fault.stall_mid_s
        return pause

    def finish_now(self) -> None:
        """Emit every step at once (an instant job); no inter-token latency to observe."""
        m = self._engine.metrics.models[self.model]
        for i, plan in enumerate(self.plans):
            m.generation_tokens += plan.tokens - self.emitted[i]
            self.emitted[i] = plan.tokens
        if self.steps_done == 0:
            self._prefilled(m)
        self.steps_done = self.total_steps
        m.ttft.observe(perf_counter() - self._arrival)

    def _prefilled(self, m: ModelStats) -> None:
        """The first token is out: vLLM counts the prompt now (not when the request is scheduled, so a request
        cut during its prefill counts none), once for each of its sequences."""
        m.prompt_tokens += self.prompt_tokens * self.sequences
        m.prefix_queries += self.prompt_tokens * self.sequences
        m.prefix_hits += self.cached_tokens

    def close(self) -> None:
        """Release the slot and record how each choice ended: finished ones by their finish reason (an
        aborted choice, cut short by a client that left, is not counted there, as in vLLM)."""
        if self._closed:
            return
        self._closed = True
        engine = self._engine
        m = engine.metrics.models[self.model]
        spec_k = engine.config.num_speculative_tokens
        finished = False
        for i, plan in enumerate(self.plans):
            choice_steps = min(self.steps_done, len(plan.steps))
            if spec_k and choice_steps > 1:
                # Every step after the first verifies one draft and emits 1 + its accepted tokens.
                m.spec_drafts += choice_steps - 1
                m.spec_draft_tokens += (choice_steps - 1) * spec_k
                m.spec_accepted += self.emitted[i] - choice_steps
            if choice_steps == len(plan.steps):
                m.success[plan.finish_reason] += 1
                finished = True
        if finished:
            m.e2e.observe(perf_counter() - self._arrival)
        if self._scheduled:
            self._hold_kv(-self._kv_tokens)
            engine.scheduler.release(self.model)
