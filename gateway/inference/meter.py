"""The end of each request: its one `Exchange`, its usage record, its price, its token reservation settled
and its ledger row journaled - everything the proxy needs to account for a request, once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from engines import EngineClient, EnginePool, PooledStream, Usage
from gateway.accounting.bookkeeper import Bookkeeper
from gateway.accounting.exchange import Exchange, MeterSink, Outcome
from gateway.accounting.metrics import RequestMetrics
from gateway.accounting.request_log import log_request
from gateway.accounting.usage_record import COUNT_TIMEOUT_S, Counted, generated_chars, usage_record
from gateway.budgets import BudgetHold
from gateway.http.endpoints import CHAT, Endpoint
from gateway.inference.admission import Admitter
from gateway.inference.catalog import Offer
from gateway.keys import ApiKey
from gateway.limits import Admission
from pricing import Charge, Depth, LedgerRow, NotPriced, PriceBook, UsageRecord, rate, usage_cost_fields

__all__ = ["Meter"]

log = logging.getLogger("tiergate.metering")


class Meter:
    """Builds the one `Exchange` of a request, hands it to the sinks, and settles the request's token
    reservation to what it really used and its budget reservation to what it really cost."""

    __slots__ = (
        "_admission",
        "_admitter",
        "_body_size",
        "_book",
        "_bookkeeper",
        "_charge",
        "_clock",
        "_endpoint",
        "_hold",
        "_key",
        "_metrics",
        "_offer",
        "_pool",
        "_request_id",
        "_sent",
        "_sinks",
        "_source",
        "_started",
        "_streamed",
        "depth",
    )

    def __init__(
        self,
        sinks: tuple[MeterSink, ...],
        admitter: Admitter,
        book: PriceBook | None,
        bookkeeper: Bookkeeper | None,
        request_id: str,
        endpoint: Endpoint,
        offer: Offer,
        streamed: bool,
        key: ApiKey | None,
        admission: Admission | None,
        hold: BudgetHold | None,
        started_at: float,
        arrived: float,
        metrics: RequestMetrics | None,
        body_size: int,
        pool: EnginePool,
        source: Any,
    ) -> None:
        self._pool = pool
        self._source = source  # the request's messages or prompt, kept to count a cut request exactly
        self._sinks = sinks
        self._admitter = admitter
        self._book = book
        self._bookkeeper = bookkeeper
        self._charge: Charge | None = None
        self._request_id = request_id
        self._endpoint = endpoint
        self._offer = offer
        self._streamed = streamed
        self._key = key
        self._admission = admission
        self._hold = hold
        self._body_size = body_size
        self._started = started_at  # Unix time; the same moment places it in its budgets' windows
        self.depth: Depth | None = None  # what a deliberation delivered, set before its exchange
        self._clock = arrived  # monotonic: when the request arrived (latencies count from there)
        self._metrics = metrics
        self._sent: float | None = None

    def sent(self) -> None:
        """The request's engine call goes out now: the gateway's own part of its latency ends here."""
        self._sent = time.monotonic()

    @property
    def prices(self) -> bool:
        return self._book is not None

    def exchange(
        self,
        outcome: Outcome,
        status: int,
        replica: str = "",
        usage: Usage | None = None,
        stream: PooledStream | None = None,
        first_event_at: float | None = None,
        reply: dict[str, Any] | None = None,
        estimated: bool = False,
        delivered_tokens: int | None = None,
    ) -> Exchange:
        offer = self._offer
        return Exchange(
            request_id=self._request_id,
            endpoint=self._endpoint.name,
            key_id=self._key.id if self._key is not None else None,
            tenant=self._key.tenant_id if self._key is not None else None,
            model=offer.model,
            served_model=offer.engine_model,
            tier=offer.tier,
            pool=offer.pool,
            replica=replica,
            streamed=self._streamed,
            outcome=outcome,
            status=status,
            usage=usage,
            tally=stream.tally if stream is not None else None,
            reply=reply,
            body_size=self._body_size,
            started_at=self._started,
            first_token_s=first_event_at - self._clock if first_event_at is not None else None,
            duration_s=time.monotonic() - self._clock,
            estimated=estimated,
            delivered_tokens=delivered_tokens,
        )

    async def done(self, exchange: Exchange) -> None:
        """The request's end, once: sinks told, its token reservation settled to the counts of its usage
        record (a request that generated nothing releases it), its ledger row durable."""
        for sink in self._sinks:
            sink.record(exchange)
        reservation = self._admission.reservation if self._admission is not None else None
        if reservation is None and self._bookkeeper is None and self._metrics is None:
            return
        counted = await self._counted(exchange) if exchange.usage is None and self._bookkeeper else None
        record = usage_record(exchange, depth=self.depth, counted=counted)
        landing: list[Awaitable[None]] = []  # this request's settlements, sent but not yet applied
        if reservation is not None:
            limit = self._admitter.settle(reservation, record.prompt_tokens + record.completion_tokens)
            if limit is not None:
                landing.append(limit)
        charge = None
        if self._bookkeeper is not None:
            charge = self._rated(record)
            if self._key is not None:  # its budgets: the real charge, and the reservation released
                budget = self._admitter.spent(
                    self._key, self._started, charge.total if charge else 0, self._hold
                )
                if budget is not None:
                    landing.append(budget)
        if self._metrics is not None:
            overhead = self._sent - self._clock if self._sent is not None else None
            self._metrics.observe(exchange, record, charge, overhead)
        log_request(exchange, record, charge)
        if charge is not None and self._bookkeeper is not None:
            await self._bookkeeper.record(LedgerRow(record, charge))
        # before the response ends: the client's next request finds this one's refund (never a 429 for
        # a request sent after this one's answer); at most one bounded Redis call, in a batch
        for settled in landing:
            await settled

    async def _counted(self, exchange: Exchange) -> Counted | None:
        """A cut request's exact counts, from the engine's own tokenizer; None if it does not answer soon."""
        replica = self._pool.replica(exchange.replica)
        content_chars, reasoning_chars = generated_chars(exchange)
        if replica is None or not (content_chars or reasoning_chars) or exchange.tally is None:
            return None
        tally, engine, model = exchange.tally, replica.engine, self._offer.engine_model
        prompt = _count_prompt(engine, model, self._source, chat=self._endpoint is CHAT)
        content = "".join(tally.text(index) for index in tally.content)
        reasoning = "".join(tally.reasoning_text(index) for index in tally.reasoning)
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_S):
                counts = await asyncio.gather(
                    prompt,
                    engine.count_tokens(model, prompt=content),
                    engine.count_tokens(model, prompt=reasoning),
                )
        except TimeoutError:
            return None
        if any(count is None for count in counts):
            return None
        prompt_count, content_count, reasoning_count = (int(count or 0) for count in counts)
        return Counted(prompt_count, content_count if content else 0, reasoning_count if reasoning else 0)

    def cost_fields(self, exchange: Exchange) -> dict[str, object]:
        """`usage.cost` and friends for the client (OpenRouter's shape), rated once per request."""
        charge = self._rated(usage_record(exchange, depth=self.depth))
        return usage_cost_fields(charge) if charge is not None else {}

    def _rated(self, record: UsageRecord) -> Charge | None:
        if self._book is None:
            return None
        if self._charge is None:
            try:
                charge = rate(record, self._book)
            except NotPriced:  # the book was checked at start: only a request from before its first version
                log.warning("no price in force for %s:%s", record.model, record.tier)
                return None
            if record.outcome != Outcome.OK and not (record.prompt_tokens or record.completion_tokens):
                # served nothing: a row that says so, and no charge, not even the per-request fee
                charge = replace(charge, lines=(), total=0)
            self._charge = charge
        return self._charge


async def _count_prompt(engine: EngineClient, model: str, source: Any, *, chat: bool) -> int | None:
    """A request's prompt tokens by the engine's tokenizer: chat messages with their template, a text, a
    list of texts (a batch: summed), or token ids (counted as they are)."""
    if chat:
        return await engine.count_tokens(model, messages=source) if isinstance(source, list) else None
    if isinstance(source, str):
        return await engine.count_tokens(model, prompt=source)
    if isinstance(source, list) and all(isinstance(item, int) for item in source):
        return len(source)
    if isinstance(source, list) and all(isinstance(item, list) for item in source):
        return sum(len(item) for item in source)
    if isinstance(source, list) and all(isinstance(item, str) for item in source):
        counts = await asyncio.gather(*(engine.count_tokens(model, prompt=item) for item in source))
        return None if any(count is None for count in counts) else sum(count or 0 for count in counts)
    return None
