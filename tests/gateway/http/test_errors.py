"""Bad input of every kind gets an OpenAI error envelope with the right status; never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2  # what Starlette's TestClient answers with
import openai
import pytest
from starlette.testclient import TestClient

from engines.simulator import profile
from gateway import create_app
from tests.chat import MESSAGES
from tests.conftest import Gateway, StartEngine, StartGateway, gateway_settings, unused_url, wait_ready
from tests.servers import serving


@pytest.fixture(scope="module")
def client(fast_engine: str, deliberate_engine: str) -> Iterator[TestClient]:
    """A gateway in this process, reached without a socket (httpx through Starlette's test transport): the
    error envelopes need no server, only the app and its engines."""
    app = create_app(gateway_settings([fast_engine], [deliberate_engine]))
    with TestClient(app, base_url="http://gateway") as in_process:
        yield in_process


def assert_envelope(
    response: httpx.Response | httpx2.Response, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code and error["param"] == param
    assert "Traceback" not in response.text
    return dict(error)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b'{"model": "qwen3-8b", "messages": [', None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'"just a string"', None, "invalid_json"),
        (b"\xff\xfe not utf-8", None, "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, None, "invalid_json"),  # nesting deeper than the parser allows
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "missing_required_parameter"),
        (b'{"model": "qwen3-8b"}', "messages", "missing_required_parameter"),
        (b'{"model": 7, "messages": []}', "model", "invalid_type"),
        (b'{"model": "qwen3-8b", "messages": "hello"}', "messages", "invalid_type"),
        (b'{"model": "qwen3-8b", "messages": []}', "messages", "invalid_value"),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
            "invalid_value",
        ),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": 5}]}',
            "messages[0].content",
            "invalid_type",
        ),
        (b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "stream": "yes"}', "stream", "invalid_type"),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "max_tokens": 0}',
            "max_tokens",
            "invalid_value",
        ),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "max_tokens": 2.5}',
            "max_tokens",
            "invalid_type",
        ),
        (b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "n": 0}', "n", "invalid_value"),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "temperature": 9}',
            "temperature",
            "invalid_value",
        ),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "reasoning_effort": "max"}',
            "reasoning_effort",
            "invalid_value",
        ),
        (
            b'{"model": "qwen3-8b", "messages": [{"role": "user"}], "stream_options": {"include_usage": 1}}',
            "stream_options.include_usage",
            "invalid_type",
        ),
    ],
)
def test_malformed_requests_are_400_naming_the_parameter(
    client: TestClient, body: bytes, param: str | None, code: str
) -> None:
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_envelope(response, 400, code, param)


def test_completions_need_a_prompt(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "qwen3-8b"})
    assert_envelope(response, 400, "missing_required_parameter", "prompt")


@pytest.mark.parametrize(
    ("model", "headers", "status", "code", "param"),
    [
        ("gpt-17", {}, 404, "model_not_found", "model"),
        (
            "llama-3.1-8b:deliberate",
            {},
            404,
            "model_not_found",
            "model",
        ),  # a tier the model is not offered in
        ("qwen3-8b:turbo", {}, 400, "invalid_tier", "model"),
        ("qwen3-8b", {"x-tiergate-tier": "premium"}, 400, "invalid_tier", None),
        ("llama-3.1-8b", {"x-tiergate-tier": "deliberate"}, 400, "tier_not_offered", None),
    ],
)
def test_unknown_models_and_tiers(
    client: TestClient, model: str, headers: dict[str, str], status: int, code: str, param: str | None
) -> None:
    body = {"model": model, "messages": MESSAGES}
    assert_envelope(client.post("/v1/chat/completions", json=body, headers=headers), status, code, param)


def test_sdk_raises_its_typed_exceptions(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="qwen3-8b", messages="hello")  # type: ignore[arg-type]
    assert bad.value.param == "messages" and bad.value.code == "invalid_type"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as large:
        client.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "x" * 5_000_000}]
        )
    assert large.value.status_code == 413 and large.value.code == "request_too_large"


def test_body_size_limit_with_and_without_content_length(
    start_gateway: StartGateway, fast_engine: str
) -> None:
    gateway = start_gateway([fast_engine], [fast_engine], server={"max_body_bytes": 1000})
    big = b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "' + b"x" * 2000 + b'"}]}'
    assert_envelope(httpx.post(gateway.v1 + "/chat/completions", content=big), 413, "request_too_large")

    def chunked() -> Any:  # no content-length: the limit must hold while reading
        yield big[:500]
        yield big[500:]

    assert_envelope(httpx.post(gateway.v1 + "/chat/completions", content=chunked()), 413, "request_too_large")
    small = httpx.post(
        gateway.v1 + "/chat/completions", json={"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 2}
    )
    assert small.status_code == 200


def test_routes_and_methods(client: TestClient) -> None:
    assert_envelope(client.get("/v2/anything"), 404, "not_found")
    assert_envelope(client.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_engine_rejection_is_translated(client: TestClient) -> None:
    # the simulated engine's max_model_len is 32768: vLLM answers 400 with a numeric code
    body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 40000}
    error = assert_envelope(client.post("/v1/chat/completions", json=body), 400, "context_length_exceeded")
    assert "context length" in error["message"]
    assert error["type"] == "invalid_request_error"


def test_no_healthy_replica_is_503_with_retry_after(start_gateway: StartGateway) -> None:
    gateway = start_gateway([unused_url()], [unused_url()], ready=False)
    body = {"model": "qwen3-8b", "messages": MESSAGES}
    # before the first health check the replica is tried: the connection is refused (502)
    statuses = [httpx.post(gateway.v1 + "/chat/completions", json=body).status_code for _ in range(3)]
    assert set(statuses) <= {502, 503}
    time.sleep(0.3)  # health checks run every 0.2 s and mark it down: now nothing is tried
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    with pytest.raises(openai.InternalServerError) as failure:
        client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    assert failure.value.status_code == 503 and failure.value.code == "no_healthy_replica"
    assert int(failure.value.response.headers["retry-after"]) >= 1
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["pools"]["fast"]["ready"] is False


def test_overloaded_engine_is_503_and_stalled_engine_504(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    overloaded = start_engine(profile("fast", zero_latency=True, error_rate=1.0, error_status=503))
    stalled = start_engine(profile("deliberate", zero_latency=True, stall_seconds=3.0))
    gateway = start_gateway(
        [overloaded], [stalled], deliberate_pool={"timeouts": {"first_token_s": 0.3, "total_s": 0.5}}
    )
    busy = httpx.post(gateway.v1 + "/chat/completions", json={"model": "qwen3-8b", "messages": MESSAGES})
    error = assert_envelope(busy, 503, "engine_overloaded")
    assert error["type"] == "server_error" and int(busy.headers["retry-after"]) >= 1
    assert int(busy.headers["retry-after-ms"]) >= 0
    for stream in (False, True):
        body = {"model": "qwen3-32b", "messages": MESSAGES, "stream": stream}
        assert_envelope(
            httpx.post(gateway.v1 + "/chat/completions", json=body, timeout=10), 504, "engine_timeout"
        )


@pytest.mark.parametrize(
    ("status", "code"), [(400, "invalid_request"), (422, "invalid_request"), (413, "request_too_large")]
)
def test_every_engine_refusal_has_a_string_code(
    start_engine: StartEngine, start_gateway: StartGateway, status: int, code: str
) -> None:
    """vLLM says `"code": 400`; the client is told a documented string (docs/errors.md), never null."""
    refusing = start_engine(profile("fast", zero_latency=True, error_rate=1.0, error_status=status))
    gateway = start_gateway([refusing], [refusing])
    for stream in (False, True):
        body = {"model": "qwen3-8b", "messages": MESSAGES, "stream": stream}
        assert_envelope(
            httpx.post(gateway.v1 + "/chat/completions", json=body), 413 if status == 413 else 400, code
        )


class _Broken(httpx.AsyncBaseTransport):
    """An engine transport with a fault of the gateway's own: every call raises what nobody expects."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/health"):
            return httpx.Response(200)
        raise RuntimeError("a bug")


def test_a_500_says_connection_close(fast_engine: str) -> None:
    """After an unexpected error uvicorn closes the connection: the 500 says so, so that no client sends its
    next request into a closed socket (and a retry cannot run a request twice)."""
    settings = gateway_settings([fast_engine], [fast_engine])
    with serving(create_app(settings, transport=_Broken())) as url:
        wait_ready(url)
        with httpx.Client() as client:
            body = {"model": "qwen3-8b", "messages": MESSAGES}
            failed = client.post(url + "/v1/chat/completions", json=body)
            error = assert_envelope(failed, 500, "internal_error")
            assert "a bug" not in error["message"]
            assert failed.headers["connection"] == "close"
            assert failed.headers["x-request-id"] == failed.headers["x-tiergate-request-id"]  # ours, as ever
            assert client.get(url + "/healthz").status_code == 200  # on a new connection
