"""A seeded random mix of requests through a real gateway, reconciled against the ledger row by row.

Engines that fail (errors before the first token, streams cut mid-way), clients that leave mid-stream,
requests the engine refuses, and retries that reuse one client `x-request-id`: whatever happened, every
request is exactly one ledger row, keyed by the gateway's id, and each cost a client was told is its row's
charge, to the micro. Runs on SQLite and on PostgreSQL (`database_url`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from gateway.accounting.usage_record import usage_record
from gateway.database import open_database
from pricing import LedgerRow, load_price_book, rate
from pricing.ledger import Ledger
from tests.chat import user
from tests.conftest import PRICE_BOOK, Recorder, gateway_settings, wait_ready
from tests.servers import serving

SEED = 20260115
REQUESTS = 84  # plan items; retries make a few more requests than that
LANES = 6  # clients sending at once
GATEWAY_ID = "x-tiergate-request-id"
WIDE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))

# the fast pool: quick, and failing often - an error before the first token, or a stream (or body) cut
# after three events. Its faults come from a seeded generator, one draw per request in arrival order.
FLAKY = profile(
    "fast",
    seed=SEED,
    ttft_base_s=0.002,
    itl_s=0.002,
    output_tokens_range=(8, 24),
    error_rate=0.2,
    die_after_chunks_rate=0.3,
    die_after_chunks=3,
)
# the deliberate pool: reliable, thinks first, and long unless max_tokens caps it, so that a client
# reading its first tokens can leave long before the end
SLOW = profile(
    "deliberate",
    seed=SEED,
    ttft_base_s=0.002,
    prefill_s_per_token=0.0,
    itl_s=0.005,
    output_tokens_range=(400, 400),
    reasoning_tokens_range=(6, 12),
)

MESSAGES = user("Tell me about ledgers.")
PROMPT = "Once upon a time"
FAST_MODELS = ("qwen3-8b", "llama-3.1-8b")  # bare ids: their default tier, fast
DELIBERATE_MODELS = ("qwen3-8b:deliberate", "qwen3-32b")


@dataclass(frozen=True)
class Shape:
    """What a request asked for."""

    label: str  # its kind in the plan
    model: str  # the public model id, without tier
    tier: str
    endpoint: str
    streamed: bool


@dataclass(frozen=True)
class Sent:
    """One request as its client saw it."""

    shape: Shape
    gateway_id: str
    echoed_id: str  # the response's x-request-id: the client's own id when it sent one
    status: int
    outcome: str  # what the client saw happen, in the ledger's words
    cost: int | None  # usage.cost_micros the client was told, if it was told
    generated: bool  # the client received generated text


def shape_of(label: str, model: str, endpoint: str, streamed: bool) -> Shape:
    name, _, tier = model.partition(":")
    return Shape(label, name, tier or ("deliberate" if name == "qwen3-32b" else "fast"), endpoint, streamed)


def cost_of(usage: Any) -> int:
    extra = usage.model_extra
    assert extra is not None and isinstance(extra["cost_micros"], int), usage
    cost: int = extra["cost_micros"]
    return cost


class Driver:
    def __init__(self, url: str, http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
        self.url = url
        self.http = http
        self.sdk = sdk
        self.sent: list[Sent] = []

    def keep(
        self, shape: Shape, headers: Mapping[str, str], status: int, outcome: str, cost: int | None,
        generated: bool, client_id: str | None = None,
    ) -> Sent:  # fmt: skip
        sent = Sent(shape, headers[GATEWAY_ID], headers["x-request-id"], status, outcome, cost, generated)
        assert sent.echoed_id == (client_id or sent.gateway_id)  # a client's own id is echoed, never used
        self.sent.append(sent)
        return sent

    def refused(self, shape: Shape, error: openai.APIStatusError, client_id: str | None = None) -> Sent:
        """The gateway answered an error status: the engine failed or refused before any token."""
        status = error.status_code
        outcome = "rejected" if status < 500 else "engine_failed"
        return self.keep(shape, error.response.headers, status, outcome, None, False, client_id)

    async def chat(
        self, label: str, model: str, *, stream: bool, usage: bool = False, client_id: str | None = None,
        max_tokens: int = 16,
    ) -> Sent:  # fmt: skip
        shape = shape_of(label, model, "chat", stream)
        common: dict[str, Any] = {
            "model": model,
            "messages": MESSAGES,
            "max_tokens": max_tokens,
            "extra_headers": {"x-request-id": client_id} if client_id else {},
        }
        if stream and usage:
            common["stream_options"] = {"include_usage": True}
        try:
            raw = await self.sdk.chat.completions.with_raw_response.create(stream=stream, **common)
        except openai.APIStatusError as exc:
            return self.refused(shape, exc, client_id)
        parsed = raw.parse()
        if not stream:
            assert isinstance(parsed, ChatCompletion) and parsed.usage is not None
            return self.keep(shape, raw.headers, 200, "ok", cost_of(parsed.usage), True, client_id)
        assert isinstance(parsed, openai.AsyncStream)
        outcome = "ok"
        cost: int | None = None
        generated = False
        async with parsed:
            try:
                async for chunk in parsed:
                    for choice in chunk.choices:
                        reasoning = (choice.delta.model_extra or {}).get("reasoning")
                        generated = generated or bool(choice.delta.content or reasoning)
                    if chunk.usage is not None:
                        cost = cost_of(chunk.usage)
            except openai.APIError:  # the error event of a stream the engine cut
                outcome = "engine_failed"
        assert (cost is not None) == (usage and outcome == "ok")
        return self.keep(shape, raw.headers, 200, outcome, cost, generated, client_id)

    async def completion(self, label: str, model: str, *, stream: bool) -> Sent:
        """The legacy completions endpoint, streamed with usage or not streamed."""
        shape = shape_of(label, model, "completions", stream)
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        try:
            raw = await self.sdk.completions.with_raw_response.create(
                model=model, prompt=PROMPT, max_tokens=16, stream=stream, **extra
            )
        except openai.APIStatusError as exc:
            return self.refused(shape, exc)
        parsed = raw.parse()
        if not stream:
            assert isinstance(parsed, Completion) and parsed.usage is not None
            return self.keep(shape, raw.headers, 200, "ok", cost_of(parsed.usage), True)
        assert isinstance(parsed, openai.AsyncStream)
        outcome = "ok"
        cost: int | None = None
        generated = False
        async with parsed:
            try:
                async for chunk in parsed:
                    generated = generated or any(choice.text for choice in chunk.choices)
                    if chunk.usage is not None:
                        cost = cost_of(chunk.usage)
            except openai.APIError:
                outcome = "engine_failed"
        assert (cost is not None) == (outcome == "ok")
        return self.keep(shape, raw.headers, 200, outcome, cost, generated)

    async def abandon(self, label: str, model: str) -> Sent:
        """A raw stream whose client leaves after the first generated text (the engine is far from done)."""
        body = {
            "model": model,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with self.http.stream("POST", self.url + "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {") and any(
                    choice["delta"].get("content") or choice["delta"].get("reasoning")
                    for choice in orjson.loads(line[6:]).get("choices", ())
                ):
                    break
            else:
                raise AssertionError("the stream ended before the client could leave it")
        # leaving the block closed the connection mid-body: the gateway sees its client go
        shape = shape_of(label, model, "chat", True)
        return self.keep(shape, response.headers, 200, "client_disconnected", None, True)

    async def run(self, rng: random.Random, index: int) -> None:
        """One plan item, chosen by `rng`."""
        roll = rng.random()
        fast, deliberate = rng.choice(FAST_MODELS), rng.choice(DELIBERATE_MODELS)
        if roll < 0.20:
            await self.chat("fast", fast, stream=False)
        elif roll < 0.42:
            await self.chat("fast stream", fast, stream=True, usage=rng.random() < 0.7)
        elif roll < 0.50:
            await self.chat("deliberate", deliberate, stream=False)
        elif roll < 0.60:
            await self.chat("deliberate stream", deliberate, stream=True, usage=rng.random() < 0.7)
        elif roll < 0.66:
            await self.completion("completion", fast, stream=rng.random() < 0.5)
        elif roll < 0.76:
            await self.abandon("abandoned", deliberate)
        elif roll < 0.80:  # the engine refuses it itself: context length exceeded
            await self.chat("refused", deliberate, stream=rng.random() < 0.5, max_tokens=10**6)
        elif roll < 0.92:  # a client retrying a failure under its own id: every try is a request
            client_id = f"retry-{SEED}-{index}"
            streamed = rng.random() < 0.5
            for _ in range(3):
                sent = await self.chat("retry", fast, stream=streamed, usage=True, client_id=client_id)
                if sent.outcome == "ok":
                    break
        else:  # a client resending a request that worked, under the same id (its answer was lost, say)
            client_id = f"resend-{SEED}-{index}"
            for _ in range(2):
                await self.chat("resend", deliberate, stream=False, client_id=client_id)


async def drive(url: str) -> list[Sent]:
    plan = random.Random(SEED)
    seeds = [plan.randrange(2**32) for _ in range(REQUESTS)]
    sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    async with sdk, httpx.AsyncClient(timeout=20) as http:
        driver = Driver(url, http, sdk)

        async def lane(first: int) -> None:
            for index in range(first, REQUESTS, LANES):
                await driver.run(random.Random(seeds[index]), index)

        await asyncio.gather(*(lane(first) for first in range(LANES)))
    return driver.sent


def prompt_tokens(engine: str) -> dict[str, int]:
    """The prompts' tokens by the engine's own tokenizer, per endpoint, as the gateway asks for them."""
    chat = {"model": "qwen3-8b", "messages": MESSAGES, "add_generation_prompt": True}
    text = {"model": "qwen3-8b", "prompt": PROMPT, "add_special_tokens": False}
    counts = {
        name: httpx.post(engine + "/tokenize", json=body)
        for name, body in (("chat", chat), ("completions", text))
    }
    return {name: int(response.json()["count"]) for name, response in counts.items()}


async def ledger_rows(database_url: str) -> tuple[list[LedgerRow], int]:
    database = await open_database(database_url)
    try:
        ledger = Ledger(database)
        return [row async for row in ledger.rows(None, *WIDE, batch=7)], await ledger.total(None, *WIDE)
    finally:
        await database.aclose()


def test_every_request_is_one_row_and_every_cost_told_is_its_charge(
    database_url: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    with serving(create_simulator_app(FLAKY)) as flaky, serving(create_simulator_app(SLOW)) as slow:
        settings = gateway_settings(
            [flaky],
            [slow],
            database={"url": database_url},
            ledger={"journal_dir": str(tmp_path / "journal")},
            # a failing replica stays in the pool: every failure here is the engine's, not the breaker's
            fast_pool={"breaker": {"eject_after_failures": 10_000, "cooldown_s": 5.0}},
        )
        with serving(create_app(settings, sinks=[recorder])) as url:
            wait_ready(url)
            sent = asyncio.run(drive(url))
            for request in sent:  # the gateway has metered every request, the abandoned ones included
                recorder.wait_for(request.gateway_id)
        # what each engine's own tokenizer makes of the prompts: how the gateway counts a cut request
        prompts = {replica: prompt_tokens(replica) for replica in (flaky, slow)}
        # the gateway has stopped: its writer drained the journal into the ledger on the way out
    rows, ledger_total = asyncio.run(ledger_rows(database_url))

    # exactly one row per request made: no more, no fewer
    row_ids = [row.record.request_id for row in rows]
    assert len(row_ids) == len(set(row_ids)), "a request id is in the ledger twice"
    sent_ids = [request.gateway_id for request in sent]
    assert len(sent_ids) == len(set(sent_ids)), "the gateway gave two requests one id"
    assert set(row_ids) == set(sent_ids), (
        f"rows without a request: {sorted(set(row_ids) - set(sent_ids))};"
        f" requests without a row: {sorted(set(sent_ids) - set(row_ids))}"
    )
    assert len(recorder.exchanges) == len(sent)  # the gateway saw no request the clients did not count

    book = load_price_book(PRICE_BOOK)
    by_id = {row.record.request_id: row for row in rows}
    exchanges = {exchange.request_id: exchange for exchange in recorder.exchanges}
    for request in sent:
        row, shape = by_id[request.gateway_id], request.shape
        record, charge = row.record, row.charge
        where = f"{shape.label} {request.gateway_id}"
        # the stored record is the one the gateway built from the request's exchange, to the microsecond
        exchange = exchanges[request.gateway_id]
        rebuilt = usage_record(exchange)
        if exchange.usage is None and request.generated:  # cut short: counted by the engine's tokenizer
            assert record.prompt_tokens == prompts[record.replica][record.endpoint], where
            counts = {name: getattr(record, name) for name in ("prompt_tokens", "completion_tokens")}
            rebuilt = replace(rebuilt, **counts, reasoning_tokens=record.reasoning_tokens)
        assert record == rebuilt, where
        assert record.outcome == request.outcome, where
        assert (record.model, record.tier, record.endpoint, record.streamed) == (
            shape.model, shape.tier, shape.endpoint, shape.streamed,
        ), where  # fmt: skip
        assert charge.request_id == record.request_id and charge.currency == "USD", where
        if request.cost is not None:
            assert charge.total == request.cost, f"{where}: told {request.cost}, billed {charge.total}"
        if request.outcome == "ok":  # the engine reported its usage: counted, not estimated
            assert not record.estimated and record.completion_tokens > 0, where
            assert charge == rate(record, book), where
        elif not request.generated:  # served nothing: no tokens, no lines, not even the request fee
            assert (record.prompt_tokens, record.completion_tokens, charge.lines, charge.total) == (
                0, 0, (), 0,
            ), where  # fmt: skip
        else:  # cut short after text reached the client: billed for an estimate of what was generated
            assert record.estimated and record.completion_tokens > 0, where
            assert charge == rate(record, book), where
        if shape.tier == "deliberate" and (request.outcome == "ok" or request.generated):
            assert charge.total >= 100, where  # the deliberate tier's request fee at least

    # the money: what clients were told adds up to what those rows hold, and the ledger's own sum agrees
    told = [request for request in sent if request.cost is not None]
    assert sum(request.cost or 0 for request in told) == sum(
        by_id[request.gateway_id].charge.total for request in told
    )
    assert ledger_total == sum(row.charge.total for row in rows)

    # the run covered what it is meant to: each kind of end, and client ids reused across requests
    outcomes = {(request.outcome, request.generated) for request in sent}
    expected = {
        ("ok", True),
        ("engine_failed", False),
        ("engine_failed", True),
        ("client_disconnected", True),
        ("rejected", False),
    }
    assert expected <= outcomes, f"the run missed {expected - outcomes}"
    echoed = [request.echoed_id for request in sent if request.echoed_id != request.gateway_id]
    assert len(echoed) > len(set(echoed)) > 0
    assert len(told) >= 10


# a fast engine that takes its time: a client can read its first text and leave long before the end
LONG = profile(
    "fast", seed=SEED, ttft_base_s=0.002, itl_s=0.01, output_tokens_range=(300, 300), num_speculative_tokens=0
)
TEXT = "Once upon a time, a gateway kept a ledger of every token it served. " * 10
# the shapes of prompt /v1/completions accepts (gateway/http/schemas.py)
PROMPTS: dict[str, str | list[str] | list[list[int]]] = {
    "text": TEXT,
    "list of texts": [TEXT],
    "token ids": [list(range(1, 120))],
}


async def ledger_row(database_url: str, request_id: str) -> LedgerRow | None:
    database = await open_database(database_url)
    try:
        return await Ledger(database).get(request_id)
    finally:
        await database.aclose()


@pytest.mark.parametrize(
    "shape",
    [
        "text",
        "list of texts",  # a batch: each text counted, summed
        "token ids",
    ],
)
def test_a_cut_completion_is_billed_for_its_whole_prompt(shape: str, tmp_path: Path) -> None:
    prompt = PROMPTS[shape]
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    with serving(create_simulator_app(LONG)) as engine:
        settings = gateway_settings(
            [engine],
            [engine],
            database={"url": database_url},
            ledger={"journal_dir": str(tmp_path / "journal")},
        )
        with serving(create_app(settings)) as url:
            wait_ready(url)
            body = {"model": "qwen3-8b", "prompt": prompt, "stream": True}
            with httpx.stream("POST", url + "/v1/completions", json=body) as response:
                assert response.status_code == 200
                gateway_id = response.headers[GATEWAY_ID]
                for line in response.iter_lines():
                    if line.startswith("data: {") and orjson.loads(line[6:])["choices"][0]["text"]:
                        break  # and leave, hundreds of tokens before the end
        # what the engine itself bills this prompt when it gets to finish
        whole = httpx.post(
            engine + "/v1/completions", json={"model": "qwen3-8b", "prompt": prompt, "max_tokens": 1}
        )
        prompt_tokens = whole.json()["usage"]["prompt_tokens"]
    row = asyncio.run(ledger_row(database_url, gateway_id))
    assert row is not None and row.record.outcome == "client_disconnected" and row.record.estimated
    assert prompt_tokens > 100
    assert row.record.prompt_tokens == prompt_tokens
