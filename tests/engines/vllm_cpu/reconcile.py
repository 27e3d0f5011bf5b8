"""Billing reconciled against the engine's own counters: what the ledger holds for some requests, and what
vLLM counted for them in `vllm:prompt_tokens_total` and `vllm:generation_tokens_total`, to the token.

`reconciled` takes the engine's counters before the requests and after them (once the engine is idle and its
counters have settled), reads each request's ledger row, and says how far apart they are. vLLM 0.32 counts a
prompt with the first token it generates, once per sequence (a request with `n` reads it `n` times), and every
token it generated, an aborted request's up to the abort (see docs/deliberation.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pricing import LedgerRow
from tests.engines.vllm_cpu.engines import VLLM
from tests.gateway.deliberation.test_http import ledger_row
from tests.prometheus import metric

SETTLE_S = (
    60.0  # a generous deadline for the engine to go idle and a row to be written: an event, not a timing
)


def counters(engine: VLLM) -> tuple[int, int]:
    """vLLM's prompt and generation tokens so far (summed over its label sets)."""
    text = engine.metrics()
    return int(metric(text, "vllm:prompt_tokens_total")), int(metric(text, "vllm:generation_tokens_total"))


def settled(engine: VLLM) -> tuple[int, int]:
    """The engine's counters once it runs and waits for nothing and two reads a moment apart agree."""
    deadline = time.monotonic() + SETTLE_S
    last: tuple[int, int] | None = None
    while True:
        text = engine.metrics()
        busy = metric(text, "vllm:num_requests_running") + metric(text, "vllm:num_requests_waiting")
        now = int(metric(text, "vllm:prompt_tokens_total")), int(metric(text, "vllm:generation_tokens_total"))
        if not busy and now == last:
            return now
        assert time.monotonic() < deadline, f"the engine did not settle within {SETTLE_S} s"
        last = now
        time.sleep(0.3)


@dataclass
class Reconciliation:
    """One path's requests (their gateway ids), what the ledger billed them and what the engine counted."""

    path: str
    engine: VLLM
    database_url: str
    request_ids: list[str] = field(default_factory=list)
    rows: list[LedgerRow] = field(default_factory=list)
    billed: tuple[int, int] = (0, 0)
    counted: tuple[int, int] = (0, 0)

    @property
    def apart(self) -> tuple[int, int]:
        """Prompt and completion tokens billed beyond what the engine counted (negative: fewer)."""
        return self.billed[0] - self.counted[0], self.billed[1] - self.counted[1]

    def __str__(self) -> str:
        (prompt, completion), (read, wrote) = self.billed, self.counted
        apart = f"{self.apart[0]:+d} / {self.apart[1]:+d}"
        return f"{self.path}: billed {prompt} + {completion}, vLLM counted {read} + {wrote}: {apart} apart"


@contextmanager
def reconciled(path: str, engine: VLLM, database_url: str) -> Iterator[Reconciliation]:
    """Collect the gateway ids of the requests made in the block in `.request_ids`; at its end, the engine's
    counters and the ledger's rows are read, and every row is checked: reasoning within completion tokens."""
    before = settled(engine)
    done = Reconciliation(path, engine, database_url)
    yield done
    done.rows = [ledger_row(database_url, request_id, SETTLE_S) for request_id in done.request_ids]
    after = settled(engine)
    done.counted = after[0] - before[0], after[1] - before[1]
    done.billed = (
        sum(row.record.prompt_tokens for row in done.rows),
        sum(row.record.completion_tokens for row in done.rows),
    )
    print(done)
    for row in done.rows:
        assert row.record.reasoning_tokens <= row.record.completion_tokens, row.record
