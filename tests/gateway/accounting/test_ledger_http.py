"""Every request ends as exactly one ledger row whose charge is the cost the client was told."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import pricing.journal
from engines.simulator import SimulatorConfig, create_simulator_app, profile
from gateway import Settings, create_app
from gateway.database import open_database
from pricing.ledger import Ledger
from tests.chat import user
from tests.conftest import FAST, Recorder, gateway_settings, wait_ready
from tests.gateway.accounting.test_metrics import samples, value
from tests.servers import serving

MESSAGES = user("Count to ten.")


async def ledger_rows(database_url: str, request_ids: list[str]) -> dict[str, Any]:
    database = await open_database(database_url)
    try:
        ledger = Ledger(database)
        return {request_id: await ledger.get(request_id) for request_id in request_ids}
    finally:
        await database.aclose()


def slow_engine(*, itl_s: float, tokens: int) -> SimulatorConfig:
    """The deliberate pool's engine: `qwen3-32b`, `tokens` tokens a reply, one every `itl_s`."""
    return profile(
        "fast", models=("qwen3-32b",), ttft_base_s=0.001, itl_s=itl_s, output_tokens_range=(tokens, tokens)
    )


def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def ledger_settings(tmp_path: Path, fast: str, deliberate: str) -> Settings:
    """A gateway in front of the two engines, its ledger at `ledger_url(tmp_path)`."""
    return gateway_settings(
        [fast],
        [deliberate],
        database={"url": ledger_url(tmp_path)},
        ledger={"journal_dir": str(tmp_path / "journal")},
    )


def test_one_row_per_request_and_the_cost_the_client_saw(tmp_path: Path) -> None:
    database_url = ledger_url(tmp_path)
    told: dict[str, int | None] = {}  # request id -> cost_micros the client received (None: no usage asked)
    outcomes: dict[str, str] = {}
    slow = slow_engine(itl_s=0.05, tokens=200)
    with serving(create_simulator_app(FAST)) as fast, serving(create_simulator_app(slow)) as slow_url:
        settings = ledger_settings(tmp_path, fast, slow_url)
        with serving(create_app(settings, sinks=[Recorder()])) as url:
            wait_ready(url)
            client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
            for _ in range(3):
                raw = client.chat.completions.with_raw_response.create(model="qwen3-8b", messages=MESSAGES)
                usage = raw.parse().usage
                assert usage is not None and usage.model_extra is not None
                told[raw.headers["x-request-id"]] = usage.model_extra["cost_micros"]
                outcomes[raw.headers["x-request-id"]] = "ok"
                stream = client.chat.completions.with_raw_response.create(
                    model="qwen3-8b", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                )
                chunks = list(stream.parse())
                final = chunks[-1].usage
                assert final is not None and final.model_extra is not None
                told[stream.headers["x-request-id"]] = final.model_extra["cost_micros"]
                outcomes[stream.headers["x-request-id"]] = "ok"
            # a client that leaves mid-stream (the deliberate pool is the slow engine here)
            body = {"model": "qwen3-32b", "messages": MESSAGES, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
                gone = response.headers["x-request-id"]
                for line in response.iter_lines():
                    if line.startswith("data: ") and '"content"' in line:
                        break
            told[gone] = None
            outcomes[gone] = "client_disconnected"
            counted = httpx.post(slow_url + "/tokenize", json={"model": "qwen3-32b", "messages": MESSAGES})
            prompt_tokens_by_engine = counted.json()["count"]
        # the gateway has stopped: its writer drained the journal into the ledger on the way out
    rows = asyncio.run(ledger_rows(database_url, list(told)))
    for request_id, cost in told.items():
        row = rows[request_id]
        assert row is not None, f"no ledger row for {request_id}"
        assert row.record.outcome == outcomes[request_id]
        if cost is not None:
            assert row.charge.total == cost  # exactly what the client was told
            assert not row.record.estimated
    cut = rows[gone]
    assert cut.record.estimated and cut.record.completion_tokens > 0 and cut.charge.total > 0
    # counted by the engine's own tokenizer, not guessed from sizes: its /tokenize says the same
    assert cut.record.prompt_tokens == prompt_tokens_by_engine


def test_a_lone_requests_row_is_synced_on_the_loop_and_overlapping_ones_on_the_journals_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row durable before its answer, wherever it was written; every row in the ledger once."""
    monkeypatch.setattr(pricing.journal, "INLINE_WRITE_S", 3600.0)  # any disk is quick enough here
    database_url = ledger_url(tmp_path)
    slow = slow_engine(itl_s=0.02, tokens=100)
    ids: list[str] = []
    with serving(create_simulator_app(FAST)) as fast, serving(create_simulator_app(slow)) as slow_url:
        settings = ledger_settings(tmp_path, fast, slow_url)
        with serving(create_app(settings)) as url:
            wait_ready(url)
            client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)

            def answer() -> None:
                raw = client.chat.completions.with_raw_response.create(model="qwen3-8b", messages=MESSAGES)
                ids.append(raw.headers["x-request-id"])

            for _ in range(3):  # alone: the first via the thread (the disk not yet timed), then the loop
                answer()
            alone = samples(url)
            body = {"model": "qwen3-32b", "messages": MESSAGES, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as stream:
                ids.append(stream.headers["x-request-id"])
                lines = stream.iter_lines()
                next(line for line in lines if '"content"' in line)
                for _ in range(3):  # beside the stream: not alone
                    answer()
                overlapping = samples(url)
                assert sum(1 for line in lines if line == "data: [DONE]") == 1
            ended = samples(url)  # the stream ended alone: on the loop

    def commits(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> tuple[float, float]:
        name = "tiergate_journal_commits_total"
        return value(found, name, thread="journal"), value(found, name, thread="loop")

    assert commits(alone) == (1, 2)
    assert commits(overlapping) == (4, 2)
    assert commits(ended) == (4, 3)
    rows = asyncio.run(ledger_rows(database_url, ids))
    assert len(rows) == 7 and all(row is not None and row.charge.total > 0 for row in rows.values())
