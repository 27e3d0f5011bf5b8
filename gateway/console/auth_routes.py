"""Signing in and out of the console, its front door and its stylesheet. A tenant signs in with an API key,
an operator with an admin token, always in a POSTed form (never in a URL, so never in a log or a history);
the session cookie names who signed in, never the credential."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from gateway.console.page import Visit, visit
from gateway.database import DatabaseError
from gateway.keys import AuthError
from gateway.limits import LimiterUnavailable

__all__ = ["auth_router"]

VisitDep = Annotated[Visit, Depends(visit)]
auth_router = APIRouter(prefix="/console", include_in_schema=False)

_HOME = {"tenant": "/console/keys", "operator": "/console/operator"}


@auth_router.get("")
@auth_router.get("/")
async def home(v: VisitDep) -> Response:
    return v.redirect(_HOME.get(v.session.role, "/console/sign-in"))


@auth_router.get("/static/console.css")
async def stylesheet(v: VisitDep) -> Response:
    return Response(v.console.stylesheet, media_type="text/css", headers={"cache-control": "max-age=3600"})


@auth_router.get("/sign-in")
async def sign_in_page(v: VisitDep) -> Response:
    if v.session.role != "anonymous":
        return v.redirect(_HOME[v.session.role])
    return v.render("sign_in.html", title="Sign in", error=None)


@auth_router.post("/sign-in")
async def sign_in(v: VisitDep) -> Response:
    fields = await v.form()
    if fields is None:
        return v.forbidden()
    if (wait := await _too_many(v)) is not None:
        message = f"Too many sign-in attempts from your address: try again in {wait} seconds."
        response = v.render("sign_in.html", 429, title="Sign in", error=message)
        response.headers["retry-after"] = str(wait)
        return response
    credential = str(fields.get("credential", "")).strip()
    if credential.startswith("tg-"):
        authenticator = v.state.authenticator
        if authenticator is None:
            return v.render(
                "sign_in.html", 401, title="Sign in", error="API keys are not in use on this gateway."
            )
        try:
            key = await authenticator.authenticate(credential)
        except AuthError:
            key = None
        except DatabaseError:
            return v.render("sign_in.html", 503, title="Sign in", error="The key store is unavailable.")
        if key is not None:
            v.become(v.session.signed_in("tenant", v.console.ttl_s, tenant=key.tenant_id, key=key.id))
            return v.redirect(_HOME["tenant"])
    elif credential:
        admin = v.console.admin(credential)
        if admin is not None:
            v.become(v.session.signed_in("operator", v.console.ttl_s, admin=admin))
            return v.redirect(_HOME["operator"])
    return v.render("sign_in.html", 401, title="Sign in", error="That API key or admin token is not valid.")


async def _too_many(v: Visit) -> int | None:
    """Seconds to wait when this address has used up its sign-in attempts (a guessing bound; keys and admin
    tokens are long random strings anyway); None when it may try. The limiter unreachable: it may."""
    address = v.request.client.host if v.request.client is not None else "unknown"
    try:
        admitted = await v.state.limiter.admit(
            f"console-sign-in:{address}", "console", v.console.sign_in_quota, 0
        )
    except LimiterUnavailable:
        return None
    if admitted.allowed:
        return None
    return max(1, math.ceil(admitted.retry_after_s or 1))


@auth_router.post("/sign-out")
async def sign_out(v: VisitDep) -> Response:
    fields = await v.form()
    if fields is None:
        return v.forbidden()
    v.become(v.session.signed_in("anonymous", v.console.ttl_s))
    v.notices.append("You are signed out.")
    return v.render("sign_in.html", title="Sign in", error=None)
