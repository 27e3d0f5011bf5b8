"""`/openapi.json` describes every route the gateway serves, with the statuses it really answers (never a
422), its credentials, the hand-written inference and Responses entries; `/docs` is a page of it that loads
nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway import create_app
from gateway.http.openapi import HANDWRITTEN_PATHS, ROUTE_DOCS, UNDOCUMENTED
from gateway.http.openapi.responses import RESPONSES_PATHS
from tests.conftest import gateway_settings
from tests.servers import serving

ADMIN = "admin-token-openapi-0123456789"
METHODS = {"get", "post", "put", "patch", "delete"}
INFERENCE = {"200", "400", "401", "403", "404", "413", "429", "500", "502", "503", "504"}
STORED = {"200", "401", "404", "500", "503"}


@pytest.fixture(scope="module")
def served(fast_engine: str, deliberate_engine: str) -> Iterator[tuple[FastAPI, str]]:
    settings = gateway_settings(
        [fast_engine], [deliberate_engine], auth={"mode": "keys", "admin_tokens": [ADMIN]}
    )
    app = create_app(settings)
    with serving(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def document(served: tuple[FastAPI, str]) -> dict[str, Any]:
    response = httpx.get(served[1] + "/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def openapi_path(path: str) -> str:
    """A route's path as OpenAPI writes it (`{model_id:path}` -> `{model_id}`)."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def served_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves: its own and its included routers' (FastAPI keeps those
    behind a wrapper in `app.routes`; `iter_route_contexts` walks them as `get_openapi` does)."""
    operations = set()
    for route in iter_route_contexts(app.routes):
        assert isinstance(route.original_route, Route), (
            route
        )  # a Mount or a WebSocket would need a look of its own
        assert route.path is not None
        path = openapi_path(route.path)
        operations |= {(method.lower(), path) for method in route.methods or () if method.lower() in METHODS}
    return operations


def documented_operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any error, the $refs resolved


def test_every_served_route_is_documented_unless_deliberately_left_out(
    served: tuple[FastAPI, str], document: dict[str, Any]
) -> None:
    app = served[0]
    served_ops = served_operations(app)
    documented = documented_operations(document)
    missing = sorted(
        op
        for op in served_ops
        if op[1] not in UNDOCUMENTED and not op[1].startswith("/console/") and op not in documented
    )
    assert missing == []
    served_paths = {path for _, path in served_ops}
    assert set(UNDOCUMENTED) <= served_paths  # no stale exclusion
    assert not set(UNDOCUMENTED) & set(document["paths"])
    # the other way: what is documented is served - but for the Responses API's routes, whose entries are
    # written here while the routes are being built (they are checked above as soon as they are served)
    unserved = {path for _, path in documented if path not in served_paths}
    assert unserved <= set(RESPONSES_PATHS)


def test_every_fastapi_route_has_its_statuses_written_down(served: tuple[FastAPI, str]) -> None:
    typed = {
        (method, openapi_path(route.path or ""))
        for route in iter_route_contexts(served[0].routes)
        if isinstance(route.original_route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }
    handwritten = {(method.upper(), path) for path, item in HANDWRITTEN_PATHS.items() for method in item}
    assert sorted(typed - handwritten - set(ROUTE_DOCS)) == []
    assert sorted(set(ROUTE_DOCS) - typed) == []  # no entry for a route that is gone


def test_no_422_anywhere_and_every_error_is_an_openai_envelope(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for (method, path), operation in documented_operations(document).items():
        statuses = set(operation["responses"])
        assert "422" not in statuses, (method, path)
        assert "500" in statuses, (method, path)
        for status, response in operation["responses"].items():
            if int(status) >= 400 and (path, status) != ("/readyz", "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    error = schemas["ErrorResponse"]["properties"]["error"]
    assert set(error["required"]) == {"message", "type", "param", "code"}


def test_credentials(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["apiKey"]["description"],
    }
    assert schemes["adminToken"]["type"] == "http" and schemes["adminToken"]["scheme"] == "bearer"
    assert document["security"] == [{"apiKey": []}]  # the default: every client route takes an API key
    for (_, path), operation in documented_operations(document).items():
        if path.startswith("/admin/"):
            assert operation["security"] == [{"adminToken": []}], path
        elif path in ("/healthz", "/readyz"):
            assert operation["security"] == [], path
        else:
            assert "security" not in operation, path
            assert "401" in operation["responses"], path


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/v1/chat/completions", INFERENCE),
        ("post", "/v1/completions", INFERENCE),
        ("post", "/v1/responses", INFERENCE),
        ("get", "/v1/responses/{response_id}", STORED),
        ("delete", "/v1/responses/{response_id}", STORED),
        ("get", "/v1/responses/{response_id}/input_items", STORED | {"400"}),
        ("get", "/v1/models", {"200", "401", "500", "503"}),
        ("post", "/admin/tenants", {"201", "400", "401", "403", "409", "500", "503"}),
        ("get", "/readyz", {"200", "500", "503"}),
    ],
)
def test_statuses(document: dict[str, Any], method: str, path: str, statuses: set[str]) -> None:
    assert set(document["paths"][path][method]["responses"]) == statuses


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses"])
def test_inference_entries(document: dict[str, Any], path: str) -> None:
    operation = document["paths"][path]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert {"x-tiergate-tier", "x-tiergate-depth"} <= headers
    assert operation["requestBody"]["required"] is True
    ok = operation["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "text/event-stream"}
    stream = ok["content"]["text/event-stream"]["schema"]["description"]
    if path == "/v1/responses":  # typed events, numbered, no [DONE] (as OpenAI)
        assert "sequence_number" in stream and "response.completed" in stream and "No `[DONE]`" in stream
    else:
        assert "then `data: [DONE]`" in stream
    assert "x-tiergate-tier" in ok["headers"]
    assert "retry-after" in operation["responses"]["429"]["headers"]
    body = document["components"]["schemas"][
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert "model" in body["required"]
    assert ":deliberate" in body["properties"]["model"]["description"]


def test_the_gateway_fields_are_in_the_shapes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for usage in ("Usage", "ResponseUsage"):
        assert {"cost", "cost_micros", "cost_details", "reasoning_depth"} <= set(schemas[usage]["properties"])
    assert {"floor", "floor_met", "samples", "extensions", "agreement"} <= set(
        schemas["ReasoningDepth"]["properties"]
    )
    effort = schemas["ChatCompletionRequest"]["properties"]["reasoning_effort"]["anyOf"][0]
    assert effort["enum"] == ["none", "minimal", "low", "medium", "high", "xhigh"]
    responses_request = schemas["ResponseCreateRequest"]["properties"]
    for field in ("input", "instructions", "max_output_tokens", "reasoning", "tools", "text", "store"):
        assert field in responses_request, field
    assert "previous_response_id" in responses_request
    events = schemas["ResponseStreamEvent"]["properties"]["type"]["enum"]
    assert {"response.created", "response.output_text.delta", "response.completed", "error"} <= set(events)
    output_items = {item["$ref"].rsplit("/", 1)[1] for item in schemas["ResponseOutputItem"]["anyOf"]}
    assert output_items == {"OutputMessage", "ReasoningItem", "FunctionCall"}


@pytest.mark.parametrize(
    ("method", "template", "url", "kwargs", "status"),
    [
        ("post", "/v1/chat/completions", "/v1/chat/completions", {"json": {"model": "qwen3-8b"}}, 401),
        ("get", "/v1/models", "/v1/models", {}, 401),
        ("get", "/v1/usage", "/v1/usage", {}, 401),
        ("post", "/admin/tenants", "/admin/tenants", {"json": {}, "admin": True}, 400),
        ("post", "/admin/tenants", "/admin/tenants", {"json": {"id": "Not Valid!"}, "admin": True}, 400),
        (
            "put",
            "/admin/tenants/{tenant_id}/budgets/{period}",
            "/admin/tenants/t/budgets/weekly",
            {"json": {"limit": "1"}, "admin": True},
            400,
        ),
        ("get", "/admin/billing/export", "/admin/billing/export?format=xml", {"admin": True}, 400),
        ("get", "/admin/keys/{key_id}", "/admin/keys/nope", {"admin": True}, 404),
        ("get", "/admin/tenants", "/admin/tenants", {}, 401),
        ("get", "/admin/tenants", "/admin/tenants", {"headers": {"authorization": "Bearer tg-x-y"}}, 403),
    ],
)
def test_what_the_routes_answer_is_documented(
    served: tuple[FastAPI, str],
    document: dict[str, Any],
    method: str,
    template: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    """The statuses are the app's own: a body FastAPI refuses is a 400, documented as such (not a 422)."""
    if kwargs.pop("admin", False):
        kwargs["headers"] = {"authorization": f"Bearer {ADMIN}"}
    response = httpx.request(method, served[1] + url, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert str(status) in document["paths"][template][method]["responses"]


def test_docs_page(served: tuple[FastAPI, str], document: dict[str, Any]) -> None:
    response = httpx.get(served[1] + "/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert '<a href="/openapi.json">' in page
    assert "<script" not in page and "src=" not in page and "@import" not in page  # loads nothing
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page, path
    assert "max_tokens_below_depth_floor" in page and "adminToken" in page
