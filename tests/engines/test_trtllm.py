"""The TensorRT-LLM adapter against a fake `trtllm-serve` that answers with bodies written from its source and
docs (tests/engines/fixtures/trtllm), not a live engine; and a gateway with a `trtllm` pool in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engines import (
    EngineFailed,
    EngineHTTP,
    EngineRejected,
    OpenAICompatEngine,
    StreamTally,
    Timeouts,
    TrtllmEngine,
)
from engines.engine_stats import EngineStats
from engines.openai_compat import translate_error
from engines.trtllm import parse_iteration_stats, parse_prometheus_text
from tests.conftest import StartGateway
from tests.servers import serving

FIXTURES = Path(__file__).parent / "fixtures" / "trtllm"
CHAT = b'{"model": "Qwen3-8B", "messages": [{"role": "user", "content": "2 + 2?"}]}'
TOO_LONG = b'{"model": "Qwen3-8B", "messages": [{"role": "user", "content": "TOO LONG"}]}'


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class FakeTrtllm:
    """trtllm-serve's routes, answering from the fixtures. `healthy` and `prometheus` switch its state."""

    def __init__(self) -> None:
        self.healthy = True
        self.prometheus = True  # started with return_perf_metrics: true
        self.iterations = orjson.loads(fixture("metrics.json"))
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models),
                Route("/health", self.health),
                Route("/version", self.version),
                Route("/metrics", self.metrics),
                Route("/prometheus/metrics", self.prometheus_metrics),
            ]
        )

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if "continue_final_message" in body:  # its request models forbid fields they do not know
            return Response(fixture("error_validation.json"), 400, media_type="application/json")
        if "TOO LONG" in str(body.get("messages")):
            return Response(fixture("error_too_long.json"), 400, media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(self._events(), media_type="text/event-stream")
        return Response(fixture("chat_completion.json"), media_type="application/json")

    @staticmethod
    async def _events() -> AsyncIterator[bytes]:
        data = fixture("chat_stream.sse")
        cut = data.index(b"reasoning_content") + 5  # one event split across two writes
        yield data[:cut]
        yield data[cut:]

    async def completions(self, request: Request) -> Response:
        return Response(fixture("completion.json"), media_type="application/json")

    async def models(self, request: Request) -> Response:
        card = {"id": "Qwen3-8B", "object": "model", "created": 1767225600, "owned_by": "tensorrt_llm"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        if self.healthy:
            return Response(status_code=200)
        return Response("LLM is unavailable. Please check the server logs for more details.", 503)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": "1.2.0"})

    async def metrics(self, request: Request) -> Response:
        served, self.iterations = self.iterations, []  # dequeued on read
        return JSONResponse(served)

    async def prometheus_metrics(self, request: Request) -> Response:
        if not self.prometheus:
            return Response("Not Found", 404)
        return Response(fixture("prometheus.txt"), media_type="text/plain; version=0.0.4")


@pytest.fixture
def fake() -> Iterator[tuple[FakeTrtllm, str]]:
    server = FakeTrtllm()
    with serving(server.app) as url:
        yield server, url


@pytest.fixture
async def http() -> AsyncIterator[EngineHTTP]:
    http = EngineHTTP.create()
    yield http
    await http.aclose()


TIMEOUTS = Timeouts(connect_s=2, first_token_s=5, idle_s=5, total_s=5)


@pytest.fixture
def engine(fake: tuple[FakeTrtllm, str], http: EngineHTTP) -> TrtllmEngine:
    return TrtllmEngine(fake[1], http, TIMEOUTS)


async def test_chat_completion_with_reasoning_content(engine: TrtllmEngine) -> None:
    reply = await engine.complete("/v1/chat/completions", CHAT, request_id="r1")
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.cached_tokens) == (
        14,
        26,
        0,
    )
    assert reply.usage.reasoning_tokens is None  # trtllm-serve does not report it: the gateway counts
    tally = StreamTally()
    tally.observe_reply(reply.payload)
    assert tally.text() == "2 + 2 = 4." and tally.reasoning_text() == "The user asks for 2 + 2. That is 4."


async def test_completions_route(engine: TrtllmEngine) -> None:
    reply = await engine.complete(
        "/v1/completions", b'{"prompt": "The capital of France is"}', request_id="r"
    )
    assert reply.payload["choices"][0]["text"] == " Paris."
    assert reply.usage is not None and reply.usage.total_tokens == 8


async def test_stream_with_reasoning_content_and_usage(engine: TrtllmEngine) -> None:
    stream = await engine.stream("/v1/chat/completions", CHAT[:-1] + b', "stream": true}', request_id="r1")
    try:
        events = [event async for event in stream]
    finally:
        await stream.aclose()
    assert len(events) == 6  # the role chunk (whose line ends in a space), 4 deltas, the usage chunk
    assert events[0][1]["choices"][0]["delta"] == {"role": "assistant"}
    assert events[-1][1]["choices"] == []
    assert stream.usage is not None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (14, 12)
    assert stream.tally.reasoning_text() == "The user asks for 2 + 2."
    assert stream.tally.text() == "2 + 2 = 4."
    assert stream.tally.reasoning_deltas == 2 and stream.tally.content_deltas == 2  # "" is no delta
    assert stream.tally.finish_reasons == {0: "stop"}


async def test_a_prompt_too_long_is_named_as_openai_does(
    engine: TrtllmEngine, fake: tuple[FakeTrtllm, str], http: EngineHTTP
) -> None:
    for call in (engine.complete, engine.stream):
        with pytest.raises(EngineRejected) as rejected:
            await call("/v1/chat/completions", TOO_LONG, request_id="r1")
        error = rejected.value
        assert (error.status, error.code, error.error_type) == (
            400,
            "context_length_exceeded",
            "invalid_request_error",
        )
        assert "should not exceed max_num_tokens (32768)" in error.message
        assert not error.retryable
    # the wording is read where every engine's errors are (openai_compat.translate_error): a trtllm-serve
    # behind a pool of `engine: openai` is understood as well
    with pytest.raises(EngineRejected) as plain:
        await OpenAICompatEngine(fake[1], http, TIMEOUTS).complete(
            "/v1/chat/completions", TOO_LONG, request_id="r"
        )
    assert plain.value.code == "context_length_exceeded"


async def test_a_validation_error_keeps_its_message(engine: TrtllmEngine) -> None:
    with pytest.raises(EngineRejected) as rejected:
        await engine.complete("/v1/chat/completions", b'{"continue_final_message": true}', request_id="r1")
    assert rejected.value.status == 400 and rejected.value.code == "invalid_request"
    assert "Extra inputs are not permitted" in rejected.value.message


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, fixture("error_too_long.json"), EngineRejected, "context_length_exceeded"),
        (
            400,
            b'{"object": "error", "message": "The sum of prompt length (4000) and query length (0) max_tokens'
            b' (2048) should not exceed max_seq_len (4096)", "type": "BadRequestError", "param": null,'
            b' "code": 400}',
            EngineRejected,
            "context_length_exceeded",
        ),
        (
            400,
            b'{"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}',
            EngineRejected,
            "invalid_request",
        ),
        (
            501,
            b'{"object": "error", "message": "no", "type": "NotImplementedError", "code": 501}',
            EngineFailed,
            None,
        ),
    ],
)
def test_translate_error_reads_trtllm_errors(
    status: int, body: bytes, kind: type[Exception], code: str | None
) -> None:
    error = translate_error(status, body, httpx.Headers(), "http://replica")
    assert type(error) is kind and error.replica == "http://replica"
    assert getattr(error, "code", None) == code


async def test_health(engine: TrtllmEngine, fake: tuple[FakeTrtllm, str]) -> None:
    assert await engine.health() is True
    fake[0].healthy = False
    assert await engine.health() is False


async def test_no_tokenizer_route(engine: TrtllmEngine) -> None:
    assert await engine.count_tokens("Qwen3-8B", messages=[{"role": "user", "content": "hi"}]) is None
    assert await engine.count_tokens("Qwen3-8B", prompt="hi") is None


async def test_metrics_text_is_prometheus_not_the_iteration_queue(
    engine: TrtllmEngine, fake: tuple[FakeTrtllm, str]
) -> None:
    text = await engine.metrics_text()
    assert text is not None
    assert parse_prometheus_text(text, 7.0) == EngineStats(
        running=4, waiting=2, kv_usage=0.5, spec_draft_tokens=2400, spec_accepted_tokens=1300, scraped_at=7.0
    )
    assert fake[0].iterations  # the dequeued-on-read JSON was left alone
    fake[0].prometheus = False  # started without return_perf_metrics
    assert await engine.metrics_text() is None


def test_iteration_stats() -> None:
    iterations = orjson.loads(fixture("metrics.json"))
    # the latest iteration's gauges (whatever the order), the spec-decode tokens of all of them
    expected = EngineStats(running=4, waiting=2, kv_usage=0.5, spec_draft_tokens=24, spec_accepted_tokens=12)
    assert parse_iteration_stats(iterations) == expected
    assert parse_iteration_stats(list(reversed(iterations))) == expected
    as_strings = [orjson.dumps(it).decode() for it in iterations]  # some releases send each as a JSON string
    assert parse_iteration_stats(as_strings) == expected
    assert parse_iteration_stats([]) is None  # nothing ran since the last read
    no_spec = [{"iter": 1, "numActiveRequests": 0, "numQueuedRequests": 0}]
    assert parse_iteration_stats(no_spec) == EngineStats(running=0, waiting=0)
    with pytest.raises(ValueError):
        parse_iteration_stats({"iter": 1})


async def test_iteration_stats_are_dequeued_on_read(fake: tuple[FakeTrtllm, str]) -> None:
    async with httpx.AsyncClient(base_url=fake[1]) as client:
        first = (await client.get("/metrics")).json()
        second = (await client.get("/metrics")).json()
    assert parse_iteration_stats(first) is not None and parse_iteration_stats(second) is None


def test_prometheus_text() -> None:
    two_models = (
        "# TYPE trtllm_num_requests_running gauge\n"
        'trtllm_num_requests_running{model_name="a"} 1\n'
        'trtllm_num_requests_running{model_name="b"} 2\n'
        "# TYPE trtllm_kv_cache_utilization gauge\n"
        'trtllm_kv_cache_utilization{model_name="a"} 0.25\n'
        'trtllm_kv_cache_utilization{model_name="b"} 0.75\n'
        "# TYPE trtllm_spec_decode_drafted_tokens_total counter\n"
        "trtllm_spec_decode_drafted_tokens_total 10\n"
    )
    assert parse_prometheus_text(two_models) == EngineStats(running=3, kv_usage=0.75, spec_draft_tokens=10)
    assert parse_prometheus_text("") == EngineStats()
    cut_short = "trtllm_num_requests_waiting 3\ntrtllm_num_requests_running{ 1\n"
    assert parse_prometheus_text(cut_short) == EngineStats(waiting=3)


def test_a_trtllm_pool_behind_the_gateway(fake: tuple[FakeTrtllm, str], start_gateway: StartGateway) -> None:
    url = fake[1]
    gateway = start_gateway(
        [url], [url], fast_pool={"engine": "trtllm"}, deliberate_pool={"engine": "trtllm"}
    )
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    messages: Any = [{"role": "user", "content": "2 + 2?"}]
    completion = client.chat.completions.create(model="qwen3-8b:fast", messages=messages)
    assert completion.choices[0].message.content == "2 + 2 = 4."
    # the relay passes the engine's reasoning through under its own name
    extra = completion.choices[0].message.model_extra
    assert extra is not None and extra["reasoning_content"] == "The user asks for 2 + 2. That is 4."
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 26)
    stream = client.chat.completions.create(
        model="qwen3-8b:fast", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "2 + 2 = 4."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model="qwen3-8b:fast", messages=[{"role": "user", "content": "TOO LONG"}]
        )
    assert too_long.value.code == "context_length_exceeded"
