"""The end of each request: its one `Exchange`, its usage record, its price, its token reservation settled
and its ledger row journaled - everything the proxy needs to account for a request, once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from engines import EngineClient, EngineError, EnginePool, PooledStream, Usage
from gateway.accounting.bookkeeper import Bookkeeper
from gateway.accounting.exchange import Exchange, MeterSink, Outcome
from gateway.accounting.metrics import RequestMetrics
from gateway.accounting.request_log import log_request
from gateway.accounting.usage_record import COUNT_TIMEOUT_S, Counted, generated_chars, usage_record
from gateway.budgets import BudgetHold
from gateway.deliberation.audit import budget_shortfall
from gateway.http.disconnect import CLIENT_CLOSED, SHUT_DOWN, DisconnectWatch
from gateway.http.endpoints import Endpoint
from gateway.http.errors import from_engine_error
from gateway.inference.admission import Admitter
from gateway.inference.catalog import Offer
from gateway.keys import ApiKey
from gateway.limits import Admission
from pricing import (
    Cascade,
    Charge,
    Depth,
    LedgerRow,
    NotPriced,
    PriceBook,
    UsageRecord,
    cascade_stages,
    rate,
    usage_cost_fields,
)

if TYPE_CHECKING:
    from gateway.accounting.tracing import RequestTrace

__all__ = ["Accounts", "Admitted", "CascadeMark", "Meter"]

log = logging.getLogger("tiergate.metering")


@dataclass(frozen=True, slots=True)
class Admitted:
    """What admission decided for one request, in one value: who asked for what, under which limits and
    reservations, and since when. The meter is built from it; nothing about the request travels apart."""

    request_id: str
    endpoint: Endpoint
    offer: Offer
    key: ApiKey | None  # None when authentication is disabled
    limits: Admission | None  # the rate limits' decision; its token reservation is settled at the end
    hold: BudgetHold | None  # the budgets' reservation, settled to the real charge at the end
    streamed: bool
    body_size: int  # the basis of a prompt estimate when nothing counts it
    source: Any  # the messages or prompt, kept to count a request cut short exactly
    started_at: float  # Unix time: places the request in its budgets' windows
    arrived: float  # monotonic: the request's latencies count from here
    # a relayed request's `thinking_token_budget` times its choices: the most reasoning its client asked the
    # engine for, audited at its end (docs/deliberation.md#the-depth-audit); None when it asked none
    reasoning_budget: int | None = None


@dataclass(frozen=True, slots=True)
class CascadeMark:
    """What a cascade's fast stage decided, for its record (`record`) and its `usage.cascade`."""

    record: Cascade
    samples: int  # the fast samples drawn (one n=k call)
    signals: dict[str, object]  # what the confidence was scored from


@dataclass(frozen=True, slots=True)
class Accounts:
    """Where every request's end goes, the same for all of them: the sinks, the admitter (settlements),
    the price book, the bookkeeper (journal and ledger) and the metrics."""

    sinks: tuple[MeterSink, ...]
    admitter: Admitter
    book: PriceBook | None
    bookkeeper: Bookkeeper | None
    metrics: RequestMetrics | None


class Meter:
    """Builds the one `Exchange` of a request, hands it to the sinks, and settles the request's token
    reservation to what it really used and its budget reservation to what it really cost."""

    __slots__ = (
        "_accounts",
        "_charge",
        "_pool",
        "_recorded",
        "_sent",
        "cascade",
        "depth",
        "request",
        "trace",
    )

    def __init__(
        self, request: Admitted, accounts: Accounts, pool: EnginePool, trace: RequestTrace | None = None
    ) -> None:
        self.request = request
        self._accounts = accounts
        self._pool = pool
        self._charge: Charge | None = None
        self._recorded: tuple[tuple[object, ...], UsageRecord] | None = None  # (what it was made of, record)
        self.depth: Depth | None = None  # what a deliberation delivered, set before its exchange
        self.cascade: CascadeMark | None = None  # what a cascade's fast stage decided, likewise
        self._sent: float | None = None
        self.trace = trace  # the request's span (None: tracing is off), ended with its record

    async def fail(
        self,
        exc: BaseException,
        watch: DisconnectWatch,
        *,
        replica: str = "",
        usage: Usage | None = None,
        estimated: bool = False,
    ) -> Response:
        """The one ending of a request whose engine work did not complete (the answer not yet begun): its
        record, then what the client gets. A client that left gets nothing (a 499 in the logs and metrics); a
        shutdown re-raises once the record is durable (a 503 there: no answer was sent); an engine's failure
        is its translated error; a fault of ours is re-raised for the 500 handler, after its record."""
        if isinstance(exc, asyncio.CancelledError):
            disconnected = watch.absorb()  # undone, when the client's leaving caused it
        else:
            watch.stop()
            disconnected = False
        outcome = Outcome.of_failure(exc, disconnected=disconnected)
        error = from_engine_error(exc) if isinstance(exc, EngineError) else None
        if isinstance(exc, asyncio.CancelledError):  # nothing was sent: the client left, or a shutdown
            status = CLIENT_CLOSED if disconnected else SHUT_DOWN
        else:
            status = error.status if error is not None else 500
        if isinstance(exc, EngineError):
            replica = replica or exc.replica
        if self.trace is not None:  # the code the client is told (a fault of ours: a 500 internal_error)
            self.trace.code = error.code if error is not None else "internal_error" if status == 500 else None
        ending = self.done(self.exchange(outcome, status, replica, usage, estimated=estimated))
        await asyncio.shield(ending)  # a shutdown must not cut the record in half
        if outcome is Outcome.CLIENT_DISCONNECTED:
            return Response(status_code=CLIENT_CLOSED)  # nobody is listening
        if error is not None:
            raise error from None
        raise exc

    def sent(self) -> None:
        """The request's engine call goes out now: the gateway's own part of its latency ends here."""
        self._sent = time.monotonic()

    @property
    def prices(self) -> bool:
        return self._accounts.book is not None

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
        offer = self.request.offer
        return Exchange(
            request_id=self.request.request_id,
            endpoint=self.request.endpoint.name,
            key_id=self.request.key.id if self.request.key is not None else None,
            tenant=self.request.key.tenant_id if self.request.key is not None else None,
            model=offer.model,
            served_model=offer.engine_model,
            tier=offer.tier,
            pool=offer.pool,
            replica=replica,
            streamed=self.request.streamed,
            outcome=outcome,
            status=status,
            usage=usage,
            tally=stream.tally if stream is not None else None,
            reply=reply,
            body_size=self.request.body_size,
            started_at=self.request.started_at,
            first_token_s=first_event_at - self.request.arrived if first_event_at is not None else None,
            duration_s=time.monotonic() - self.request.arrived,
            estimated=estimated,
            delivered_tokens=delivered_tokens,
            priority_class=self.request.key.priority_class if self.request.key is not None else "standard",
        )

    async def done(self, exchange: Exchange) -> None:
        """The request's end, once: sinks told, its token reservation settled to the counts of its usage
        record (a request that generated nothing releases it), its ledger row durable."""
        accounts, request = self._accounts, self.request
        for sink in accounts.sinks:
            sink.record(exchange)
        reservation = request.limits.reservation if request.limits is not None else None
        if reservation is None and accounts.bookkeeper is None and accounts.metrics is None:
            if self.trace is not None:
                self.trace.end(exchange, self._record(exchange), None)
            return
        counted = await self._counted(exchange) if exchange.usage is None and accounts.bookkeeper else None
        record = self._record(exchange, counted)
        if request.reasoning_budget is not None and exchange.outcome is Outcome.OK:
            found = budget_shortfall(
                request.reasoning_budget, record.reasoning_tokens, exact=not record.estimated
            )
            if found:  # no premium hangs on it (nothing relayed carries one): the row and the counter say it
                record = replace(record, depth=replace(record.depth, shortfall=found))
        landing: list[Awaitable[None]] = []  # this request's settlements, sent but not yet applied
        if reservation is not None:
            used = record.prompt_tokens + record.completion_tokens
            limit = accounts.admitter.settle(reservation, used)
            if limit is not None:
                landing.append(limit)
        charge = None
        if accounts.bookkeeper is not None:
            charge = self._rated(record)
            if request.key is not None:  # its budgets: the real charge, and the reservation released
                amount = charge.total if charge else 0
                budget = accounts.admitter.spent(request.key, request.started_at, amount, request.hold)
                if budget is not None:
                    landing.append(budget)
        if accounts.metrics is not None:
            overhead = self._sent - request.arrived if self._sent is not None else None
            accounts.metrics.observe(exchange, record, charge, overhead)
        log_request(exchange, record, charge)
        if self.trace is not None:
            self.trace.end(exchange, record, charge)
        if charge is not None and accounts.bookkeeper is not None:
            await accounts.bookkeeper.record(LedgerRow(record, charge), sent=bool(landing))
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
        tally, engine, model = exchange.tally, replica.engine, self.request.offer.engine_model
        prompt = _count_prompt(engine, model, self.request.source, chat=self.request.endpoint.chat)
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
        record = self._record(exchange)
        charge = self._rated(record)
        fields = usage_cost_fields(charge) if charge is not None else {}
        if self.cascade is not None:
            fields.update(_cascade_usage(self.cascade, record, charge))
        return fields

    def _record(self, exchange: Exchange, counted: Counted | None = None) -> UsageRecord:
        """The exchange's usage record, made once (the answer's cost and the request's end both need it)."""
        made = (exchange, self.depth, self.cascade)
        if (
            counted is None
            and self._recorded is not None
            and all(a is b for a, b in zip(self._recorded[0], made, strict=True))
        ):
            return self._recorded[1]
        cascade = self.cascade.record if self.cascade is not None else None
        record = usage_record(exchange, depth=self.depth, counted=counted, cascade=cascade)
        if counted is None:
            self._recorded = (made, record)
        return record

    def _rated(self, record: UsageRecord) -> Charge | None:
        if self._accounts.book is None:
            return None
        if self._charge is None:
            try:
                charge = rate(record, self._accounts.book)
            except NotPriced:  # the book was checked at start: only a request from before its first version
                log.warning("no price in force for %s:%s", record.model, record.tier)
                return None
            if record.outcome != Outcome.OK and not (record.prompt_tokens or record.completion_tokens):
                # served nothing: a row that says so, and no charge, not even the per-request fee
                charge = replace(charge, lines=(), total=0)
            self._charge = charge
        return self._charge


def _cascade_usage(mark: CascadeMark, record: UsageRecord, charge: Charge | None) -> dict[str, object]:
    """A cascade's usage: both stages' tokens in the totals, and `cascade` says what each stage did."""
    cascade = mark.record
    fast_cost, deliberate_cost = cascade_stages(charge) if charge is not None else (None, None)
    fast: dict[str, object] = {
        "tier": "fast",
        "samples": mark.samples,
        "prompt_tokens": cascade.fast_prompt_tokens,
        "completion_tokens": cascade.fast_completion_tokens,
    }
    stages = [fast]
    if cascade.escalated:
        stages.append(
            {
                "tier": "deliberate",
                "prompt_tokens": record.prompt_tokens - cascade.fast_prompt_tokens,
                "completion_tokens": record.completion_tokens - cascade.fast_completion_tokens,
                "reasoning_tokens": record.reasoning_tokens,
            }
        )
    if charge is not None:
        fast["cost_micros"] = fast_cost
        if cascade.escalated:
            stages[1]["cost_micros"] = deliberate_cost
    return {
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens,
        "cascade": {
            "escalated": cascade.escalated,
            "confidence": cascade.confidence,
            "threshold": cascade.threshold,
            "signals": mark.signals,
            "stages": stages,
        },
    }


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
