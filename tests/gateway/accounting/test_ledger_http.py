"""Every request ends as exactly one ledger row whose charge is the cost the client was told."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from gateway.database import open_database
from pricing.ledger import Ledger
from tests.chat import user
from tests.conftest import FAST, Recorder, gateway_settings, wait_ready
from tests.servers import serving

MESSAGES = user("Count to ten.")


async def ledger_rows(database_url: str, request_ids: list[str]) -> dict[str, Any]:
    database = await open_database(database_url)
    try:
        ledger = Ledger(database)
        return {request_id: await ledger.get(request_id) for request_id in request_ids}
    finally:
        await database.aclose()


def test_one_row_per_request_and_the_cost_the_client_saw(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    told: dict[str, int | None] = {}  # request id -> cost_micros the client received (None: no usage asked)
    outcomes: dict[str, str] = {}
    slow = profile(
        "fast", models=("qwen3-32b",), ttft_base_s=0.001, itl_s=0.05, output_tokens_range=(200, 200)
    )
    with serving(create_simulator_app(FAST)) as fast, serving(create_simulator_app(slow)) as slow_url:
        settings = gateway_settings(
            [fast],
            [slow_url],
            database={"url": database_url},
            ledger={"journal_dir": str(tmp_path / "journal")},
        )
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
