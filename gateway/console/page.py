"""One visit to a console page: who is signed in (checked against the key store on every request, so a
revoked key or a removed admin token ends its sessions at once), the page rendered with the headers every
console answer carries, forms read with their CSRF token checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.console.console import Console
from gateway.console.services import ConsoleServices, console_services
from gateway.console.session import COOKIE, Role, Session
from gateway.http.errors import GatewayError
from gateway.keys import ApiKey

__all__ = ["MAX_FORM_BYTES", "Visit", "visit"]

MAX_FORM_BYTES = 64 * 1024
# nothing from elsewhere: no scripts at all, styles from this origin, forms post only here, never framed
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@dataclass
class Visit:
    request: Request
    state: ConsoleServices
    console: Console
    session: Session
    fresh: bool  # the cookie is to be (re)set on the answer
    key: ApiKey | None = None  # a tenant's sign-in key, as the key store has it now
    notices: list[str] = field(default_factory=list)

    @property
    def tenant(self) -> str:
        assert self.session.tenant is not None, "a tenant page checks the role first"
        return self.session.tenant

    @property
    def csrf(self) -> str:
        return self.console.signer.csrf(self.session)

    def become(self, session: Session) -> None:
        self.session, self.fresh = session, True

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        page = self.console.templates.get_template(template).render(
            session=self.session, csrf=self.csrf, path=self.request.url.path, notices=self.notices, **context
        )
        return self._finish(HTMLResponse(page, status))

    def redirect(self, path: str) -> Response:
        return self._finish(RedirectResponse(path, 303))  # POST-redirect-GET

    def finish(self, response: Response) -> Response:
        return self._finish(response)

    def _finish(self, response: Response) -> Response:
        response.headers.update(_SECURITY_HEADERS)
        if self.fresh:
            response.set_cookie(
                COOKIE,
                self.console.signer.dump(self.session),
                max_age=int(self.console.ttl_s),
                path="/console",
                httponly=True,
                samesite="strict",
                # https as the server saw it: uvicorn takes X-Forwarded-Proto from its trusted proxies
                secure=self.request.url.scheme == "https",
            )
        return response

    def refuse(self, role: Role) -> Response | None:
        """None when the visitor may see a page for `role`; else where to send them."""
        if self.session.role == role:
            return None
        if self.session.role == "anonymous":
            return self.redirect("/console/sign-in")
        return self.render("error.html", 403, title="Not for you", message=f"This page is for the {role}s.")

    async def form(self) -> FormData | None:
        """The posted form's fields; None (the caller answers 403) when its CSRF token is missing or wrong."""
        body = bytearray()
        async for chunk in self.request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise GatewayError(413, "The form is too large.", code="request_too_large")
        pairs: list[tuple[str, str | UploadFile]] = list(
            parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        )
        fields = FormData(pairs)
        csrf = fields.get("csrf")
        if not isinstance(csrf, str) or not self.console.signer.csrf_ok(self.session, csrf):
            return None
        return fields

    def forbidden(self) -> Response:
        return self.render(
            "error.html",
            403,
            title="Form expired",
            message="This form's security token is missing or out of date. Reload the page and try again.",
        )


async def visit(request: Request) -> Visit:
    """The visit's state and session (a FastAPI dependency); 404 when the console is off."""
    state = console_services(request)
    console = state.console
    if console is None:
        raise GatewayError(404, "The console is not enabled on this gateway.", code="console_disabled")
    session = console.signer.load(request.cookies.get(COOKIE))
    if session is None:
        return Visit(request, state, console, Session.anonymous(console.ttl_s), fresh=True)
    found = Visit(request, state, console, session, fresh=False)
    if session.role == "tenant":
        key = await state.keys.get_key(session.key) if state.keys is not None and session.key else None
        usable = key is not None and not key.revoked and key.tenant_id == session.tenant
        if key is None or not usable or (key.expires_at is not None and key.expires_at <= datetime.now(UTC)):
            found.become(Session.anonymous(console.ttl_s))
        else:
            found.key = key
    elif session.role == "operator" and not console.admin_current(session.admin):
        found.become(Session.anonymous(console.ttl_s))
    return found
