"""The Responses API through the real OpenAI Python SDK, on both tiers, with the README's key: create,
stream, retrieve, input items, previous_response_id, a function-call round trip, structured output; every
request billed once, as endpoint `responses`, with its depth and cost in `usage`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from gateway import Outcome
from tests.conftest import Gateway, StartGateway
from tests.gateway.deliberation.test_admission import README_LIMITS, engine
from tests.gateway.deliberation.test_http import ledger_row
from tests.gateway.keys.test_http import keyed_gateway, new_key

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


class Person(BaseModel):
    name: str
    age: int


@dataclass
class Customer:
    gateway: Gateway
    sdk: openai.OpenAI
    database_url: str

    def ledger(self, request_id: str) -> Any:
        """The request's ledger row, once the journal has drained into the database (its usage record)."""
        row = ledger_row(self.database_url, request_id)
        self.gateway.recorder.wait_for(request_id)  # and recorded exactly once
        return SimpleNamespace(**asdict(row.record), charge_micros=row.charge.total)


@pytest.fixture
def customer(start_gateway: StartGateway, tmp_path: Path) -> Iterator[Customer]:
    """The README's key on a gateway whose qwen3-8b deliberates with the default levels (a reasoning model
    whose high-effort samples need no extension) and answers fast from the same simulated engine."""
    database_url = f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    with engine(reasoning_tokens_range=(1100, 1200), structured_variation_rate=0.25) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, database_url, deliberation={})
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        client = openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0)
        yield Customer(gateway, client, database_url)
        client.close()


def usage_extra(response: Any) -> dict[str, Any]:
    assert response.usage is not None and response.usage.model_extra is not None
    fields: dict[str, Any] = response.usage.model_extra
    return fields


def request_id(response: Any) -> str:
    return str(response.id).removeprefix("resp_")


def test_fast_create_retrieve_and_input_items(customer: Customer) -> None:
    sdk = customer.sdk
    raw = sdk.responses.with_raw_response.create(
        model="qwen3-8b:fast",
        input="Name three prime numbers.",
        max_output_tokens=1500,
        metadata={"run": "1"},
    )
    response = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "fast" and raw.headers["x-ratelimit-limit-requests"] == "600"
    assert response.object == "response" and response.status == "completed"
    assert response.model == "qwen3-8b:fast" and response.metadata == {"run": "1"}
    assert response.output_text and response.output[-1].type == "message"
    usage = response.usage
    assert usage is not None and 0 < usage.output_tokens <= 1500
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    cost = usage_extra(response)
    assert cost["cost_micros"] == sum(cost["cost_details"]["amounts_micros"].values()) > 0
    row = customer.ledger(request_id(response))
    assert row.endpoint == "responses" and row.tier == "fast" and row.outcome == "ok"
    assert (row.prompt_tokens, row.completion_tokens) == (usage.input_tokens, usage.output_tokens)
    assert row.charge_micros == cost["cost_micros"]

    # by the response's id, as by any reply's: the ledger's view of it, and the metrics' endpoint label
    key = {"authorization": f"Bearer {sdk.api_key}"}
    generation = httpx.get(customer.gateway.v1 + "/generation", params={"id": response.id}, headers=key)
    assert generation.status_code == 200, generation.text
    assert generation.json()["data"]["endpoint"] == "responses"
    assert generation.json()["data"]["cost_micros"] == cost["cost_micros"]
    metrics = httpx.get(customer.gateway.url + "/metrics").text
    assert 'endpoint="responses"' in metrics

    again = sdk.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()
    items = sdk.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    first = items.data[0]
    assert first.type == "message" and first.content[0].type == "input_text"
    assert first.content[0].text == "Name three prime numbers."


def test_fast_stream_parses_every_event_and_ends_as_retrieved(customer: Customer) -> None:
    sdk = customer.sdk
    with sdk.responses.stream(model="qwen3-8b:fast", input="Count to five.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text != ""
    assert final.usage is not None and final.usage.output_tokens > 0
    assert sdk.responses.retrieve(final.id).output_text == final.output_text  # stored before the end
    row = customer.ledger(request_id(final))
    assert row.endpoint == "responses" and row.streamed and row.completion_tokens == final.usage.output_tokens


def test_deliberate_depth_and_cost_in_usage_and_ledger(customer: Customer) -> None:
    sdk = customer.sdk
    response = sdk.responses.create(
        model="qwen3-8b:deliberate",
        input="What is 17 * 23?",
        reasoning={"effort": "high", "summary": "auto"},
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content and reasoning.content[0].text
    assert reasoning.summary and reasoning.summary[0].text.rstrip("…") in reasoning.content[0].text
    usage = response.usage
    assert usage is not None and usage.output_tokens_details.reasoning_tokens >= 1024
    depth = usage_extra(response)["reasoning_depth"]
    assert depth["floor_met"] is True and depth["samples"] == 5
    assert usage_extra(response)["cost_details"]["rated_tier"] == "deliberate"
    row = customer.ledger(request_id(response))
    assert row.endpoint == "responses" and row.tier == "deliberate"
    assert row.reasoning_tokens == usage.output_tokens_details.reasoning_tokens <= row.completion_tokens
    assert row.charge_micros == usage_extra(response)["cost_micros"]


def test_deliberate_stream_with_several_samples(customer: Customer) -> None:
    sdk = customer.sdk
    with sdk.responses.stream(
        model="qwen3-8b", input="What is 6 * 7?", reasoning={"effort": "high"}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"] and final.output_text
    assert usage_extra(final)["reasoning_depth"]["samples"] == 5
    done = [event for event in events if event.type == "response.reasoning_text.done"]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert done[0].text == reasoning.content[0].text  # the vote's winner, when another than the one streamed
    assert customer.ledger(request_id(final)).endpoint == "responses"


@pytest.mark.parametrize("model", ["qwen3-8b:fast", "qwen3-8b:deliberate"])
def test_function_call_round_trip(customer: Customer, model: str) -> None:
    sdk = customer.sdk
    first = sdk.responses.create(
        model=model,
        input="Should I take an umbrella in Paris? Use get_weather.",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        reasoning={"effort": "low"},
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    assert set(json.loads(calls[0].arguments)) == {"city", "unit"}
    second = sdk.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"rain": true}'}],
        tools=[WEATHER],
        reasoning={"effort": "low"},
    )
    assert second.previous_response_id == first.id and second.status == "completed"
    assert second.output_text or any(item.type == "function_call" for item in second.output)
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the stored conversation was sent too


@pytest.mark.parametrize("model", ["qwen3-8b:fast", "qwen3-8b:deliberate"])
def test_structured_output(customer: Customer, model: str) -> None:
    parsed = customer.sdk.responses.parse(
        model=model, input="Make up a person.", text_format=Person, reasoning={"effort": "low"}
    )
    person = parsed.output_parsed
    assert isinstance(person, Person) and person.age >= 0


def test_previous_response_of_another_tenant_or_unstored_is_not_found(customer: Customer) -> None:
    sdk = customer.sdk
    mine = sdk.responses.create(model="qwen3-8b:fast", input="Remember the number 7.")
    other_key = new_key(customer.gateway, tenant="globex")
    with openai.OpenAI(base_url=customer.gateway.v1, api_key=other_key["secret"], max_retries=0) as other:
        for call in (
            lambda: other.responses.retrieve(mine.id),
            lambda: other.responses.create(model="qwen3-8b:fast", input="?", previous_response_id=mine.id),
            lambda: other.responses.delete(mine.id),
        ):
            with pytest.raises(openai.NotFoundError) as caught:
                call()
            assert caught.value.code == "response_not_found"
    unstored = sdk.responses.create(model="qwen3-8b:fast", input="Forget this.", store=False)
    assert unstored.model_dump()["store"] is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.retrieve(mine.id)
    assert caught.value.code == "response_not_found"


def test_an_engine_that_dies_mid_stream_fails_the_response(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    with engine(zero_latency=False, itl_s=0.001, die_after_chunks_rate=1.0, die_after_chunks=4) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path)
        key = new_key(gateway, limits={"fast": README_LIMITS})
        with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk:
            stream = sdk.responses.create(model="qwen3-8b:fast", input="Tell me a story.", stream=True)
            events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None and failed.response.error.code
    exchange = gateway.recorder.wait_for(request_id(failed.response))
    assert exchange.outcome is Outcome.ENGINE_FAILED and exchange.endpoint == "responses"


BAD: list[tuple[dict[str, Any], int, str, str]] = [
    ({"input": [{"type": "telepathy"}]}, 400, "invalid_value", "input[0].type"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, 400, "unsupported_parameter", "tools[0].type"),
    ({"input": "hi", "background": True}, 400, "unsupported_parameter", "background"),
    ({"input": "hi", "include": ["reasoning.encrypted_content"]}, 400, "unsupported_parameter", "include[0]"),
    ({"input": "hi", "max_output_tokens": "many"}, 400, "invalid_type", "max_output_tokens"),
    ({"input": "hi", "reasoning": {"effort": "extreme"}}, 400, "invalid_value", "reasoning.effort"),
    ({"input": "hi", "previous_response_id": "resp_nope"}, 404, "response_not_found", "previous_response_id"),
    ({"input": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_value", "input[0].role"),
    ({"input": []}, 400, "invalid_value", "input"),
    ({}, 400, "missing_required_parameter", "input"),
    (
        {
            "model": "qwen3-8b:deliberate",
            "input": "hi",
            "max_output_tokens": 100,
            "reasoning": {"effort": "low"},
        },
        400,
        "max_tokens_below_depth_floor",
        "max_output_tokens",
    ),
    ({"model": "no-such-model", "input": "hi"}, 404, "model_not_found", "model"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD)
def test_bad_input_is_an_openai_error_naming_the_parameter(
    customer: Customer, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    reply = httpx.post(
        customer.gateway.v1 + "/responses",
        json={"model": "qwen3-8b:fast", **body},
        headers={"authorization": f"Bearer {customer.sdk.api_key}"},
    )
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == (code, param) and error["message"]


def test_a_store_that_fails_loses_no_answer(customer: Customer) -> None:
    sdk = customer.sdk
    sdk.responses.create(model="qwen3-8b:fast", input="First.")  # the table exists: now it goes away
    path = customer.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE stored_responses")
    whole = sdk.responses.create(model="qwen3-8b:fast", input="Second.")
    assert whole.output_text and whole.model_dump()["store"] is False
    with sdk.responses.stream(model="qwen3-8b:fast", input="Third.") as stream:
        final = stream.get_final_response()
    assert final.output_text and final.model_dump()["store"] is False
    for response in (whole, final):  # answered and billed all the same
        assert customer.ledger(request_id(response)).outcome == "ok"


def test_a_response_stopped_by_its_bound_is_incomplete_where_it_was_cut(customer: Customer) -> None:
    response = customer.sdk.responses.create(
        model="qwen3-8b:fast", input="Count to ten.", max_output_tokens=16
    )
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output and response.output[-1].model_dump()["status"] == "incomplete"  # cut short
    assert response.usage is not None and response.usage.output_tokens == 16


def test_what_a_prompted_deliberation_cannot_honour_is_named_as_the_client_named_it(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    person = {"type": "json_schema", "name": "person", "schema": Person.model_json_schema()}
    with engine() as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, deliberation={"reasoning": "prompted"})
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk:
            for fields, param in (
                ({"text": {"format": person}}, "text.format"),
                ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
            ):
                with pytest.raises(openai.BadRequestError) as refused:
                    sdk.responses.create(
                        model="qwen3-8b:deliberate", input="Hi", reasoning={"effort": "low"}, **fields
                    )
                assert (refused.value.code, refused.value.param) == ("unsupported_parameter", param)
                assert f"'{param}'" in refused.value.message
