"""The web console at /console: server-rendered pages (Jinja2, plain HTML forms, no script) for tenants,
signed in with an API key, and operators, signed in with an admin token (docs/console.md)."""

from fastapi import APIRouter

from gateway.console.auth_routes import auth_router
from gateway.console.console import Console
from gateway.console.operator_routes import operator_router
from gateway.console.playground import playground_router
from gateway.console.tenant_routes import tenant_router

__all__ = ["Console", "console_router"]

console_router = APIRouter()
for _router in (auth_router, tenant_router, operator_router, playground_router):
    console_router.include_router(_router)
