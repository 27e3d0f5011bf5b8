"""The gateway's OpenAPI document: what FastAPI generates for its typed routes, made honest (no 422: the app
answers a validation error with a 400; the statuses, bodies and credentials of `route_docs`), and the
hand-written entries of the routes FastAPI cannot see (the inference fast path, the Responses API)."""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.http.openapi.inference import INFERENCE_PATHS, INFERENCE_SCHEMAS
from gateway.http.openapi.items import ITEM_SCHEMAS
from gateway.http.openapi.page import PAGE_POLICY, docs_page
from gateway.http.openapi.responses import RESPONSES_PATHS, RESPONSES_SCHEMAS
from gateway.http.openapi.route_docs import ROUTE_DOCS, ROUTE_SCHEMAS, RouteDoc
from gateway.http.openapi.schema import Json, ref
from gateway.http.openapi.statuses import ERROR_SCHEMAS, error_responses
from gateway.http.openapi.usage import USAGE_SCHEMAS

__all__ = ["DOCS_PATH", "HANDWRITTEN_PATHS", "UNDOCUMENTED", "DocumentedApp", "openapi_document"]

DOCS_PATH = "/docs"
HANDWRITTEN_PATHS: Mapping[str, Json] = {**INFERENCE_PATHS, **RESPONSES_PATHS}
# Served, deliberately not in the document: Prometheus' scrape target is the operators' (docs/metrics.md), not
# the API's; the document and its page describe the API, they are no part of it.
UNDOCUMENTED: Mapping[str, str] = {
    "/metrics": "Prometheus text for the operators' scraper (docs/metrics.md), not a client API",
    "/openapi.json": "this document",
    DOCS_PATH: "the page of this document",
    "/console": "the web console's pages, and those under it (docs/console.md): for people, not an API",
}
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

DESCRIPTION = """\
An OpenAI-compatible gateway with a fast tier and a deliberate tier, each request billed exactly once.
Use it with OpenAI's SDKs (`base_url=http://HOST/v1`). A model's tier is its suffix (`qwen3-8b:fast`,
`qwen3-8b:deliberate`, `qwen3-8b:auto`), the `x-tiergate-tier` header, or `reasoning_effort`; with a price
book every answer's `usage` carries its `cost`.

Every failure is an OpenAI error envelope `{"error": {"message", "type", "param", "code"}}` with a string
`code` (docs/errors.md); a validation failure is a 400, never a 422. Any route may also answer 408
`request_timeout` (headers or body too slow) or 400 `invalid_http_request` from the HTTP server itself, 405
for a method the path does not take, and 404 `not_found` for a path that is not here.
"""
TAGS: list[dict[str, str]] = [
    {"name": "inference", "description": "Chat and text completions on both tiers (docs/tiers.md)."},
    {"name": "responses", "description": "OpenAI's Responses API on both tiers, stored responses."},
    {"name": "models", "description": "Each model once per tier, and `model:auto`."},
    {"name": "usage", "description": "A tenant's own requests and totals (with a price book)."},
    {
        "name": "admin",
        "description": "Tenants, keys, budgets, billing; admin tokens only (docs/keys-and-limits.md).",
    },
    {
        "name": "probes",
        "description": "Liveness and readiness, for load balancers and Kubernetes; no credentials.",
    },
]
SECURITY_SCHEMES: Mapping[str, Json] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer tg-...`, a tenant's API key (`tiergate keys create`). Needed"
        " where `auth.mode` is `keys`; without keys (local use) every route answers without one.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <admin token>`, one of `auth.admin_tokens` (never an API"
        " key).",
    },
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The whole document for `app`'s routes (each call builds a new one)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=DESCRIPTION,
        routes=app.routes,
        tags=TAGS,
        servers=app.servers or None,
    )
    paths: dict[str, Json] = document.setdefault("paths", {})
    for path, item in paths.items():
        for method, operation in item.items():
            _make_honest(operation, ROUTE_DOCS.get((method.upper(), path)))
    for path, item in HANDWRITTEN_PATHS.items():
        paths.setdefault(path, {}).update(deepcopy(dict(item)))  # replaces what FastAPI would generate
    components: Json = document.setdefault("components", {})
    schemas: Json = components.setdefault("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    for shared in (
        ERROR_SCHEMAS,
        USAGE_SCHEMAS,
        INFERENCE_SCHEMAS,
        ITEM_SCHEMAS,
        RESPONSES_SCHEMAS,
        ROUTE_SCHEMAS,
    ):
        schemas.update(deepcopy(dict(shared)))
    components["securitySchemes"] = deepcopy(dict(SECURITY_SCHEMES))
    document["security"] = [{"apiKey": []}]
    return document


def _make_honest(operation: Json, doc: RouteDoc | None) -> None:
    """A FastAPI operation with the statuses, body and credentials its route really has."""
    responses: Json = operation["responses"]
    responses.pop("422", None)  # never answered: the app's handler makes a validation error a 400
    if doc is None:  # a route nobody documented yet (the test names it): at least no 422, and the 500
        responses.update({"500": error_responses({})["500"]})
        return
    ok: Json = responses.pop("200", None) or {"description": "Successful Response"}
    content: Json = {}
    if doc.body is not None:
        content["application/json"] = {"schema": ref(doc.body)}
    content.update(deepcopy(dict(doc.ok_media)))
    ok["content"] = content
    if doc.ok == 201:
        ok["description"] = "Created"
    documented = {str(doc.ok): ok}
    for status, text in doc.same_body.items():
        documented[str(status)] = {"description": text, "content": deepcopy(content)}
    documented.update(error_responses(doc.errors))
    responses.clear()
    responses.update(sorted(documented.items()))
    operation["tags"] = [doc.tag]
    if doc.security == "adminToken":
        operation["security"] = [{"adminToken": []}]
    elif doc.security == "none":
        operation["security"] = []


class DocumentedApp(FastAPI):
    """FastAPI whose `/openapi.json` is `openapi_document` (built once, at the first request for it) and whose
    `/docs` is a page of it: self-contained HTML, no script, no asset from elsewhere (`page.py`)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(docs_url=None, redoc_url=None, **settings)
        self._page: tuple[str, str] | None = None  # (the document's URL, the page)
        self.add_route(DOCS_PATH, self._docs, methods=["GET"], include_in_schema=False)

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = openapi_document(self)
        return self.openapi_schema

    async def _docs(self, request: Request) -> Response:
        url = request.scope.get("root_path", "").rstrip("/") + (self.openapi_url or "")
        if self._page is None or self._page[0] != url:
            self._page = (url, docs_page(self.openapi(), url))
        return HTMLResponse(self._page[1], headers={"content-security-policy": PAGE_POLICY})
