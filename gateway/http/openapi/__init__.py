"""The gateway's OpenAPI document (`/openapi.json`) and its page (`/docs`): FastAPI's description of its typed
routes made honest, and hand-written entries for the routes it cannot see."""

from gateway.http.openapi.document import (
    DOCS_PATH,
    HANDWRITTEN_PATHS,
    UNDOCUMENTED,
    DocumentedApp,
    openapi_document,
)
from gateway.http.openapi.route_docs import ROUTE_DOCS, RouteDoc

__all__ = [
    "DOCS_PATH",
    "HANDWRITTEN_PATHS",
    "ROUTE_DOCS",
    "UNDOCUMENTED",
    "DocumentedApp",
    "RouteDoc",
    "openapi_document",
]
