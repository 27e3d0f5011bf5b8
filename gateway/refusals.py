"""Why the gateway will not serve a request, in its own words: the domain's refusals (an unknown model, a key
over its limit, a bound below the depth promised...), raised where the decision is taken. Only the HTTP edge
turns one into an OpenAI error envelope with a status (`gateway.http.errors`); the CLI prints it.

    Refusal          kind: what sort of no, code: the OpenAI `code`, param, message, headers
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Refusal", "RefusalKind"]

RefusalKind = Literal[
    "invalid",  # the request is wrong (a value, a combination): 400
    "unauthenticated",  # no valid credentials: 401
    "forbidden",  # the credentials may not do this: 403
    "not_found",  # no such thing (for this caller): 404
    "rate_limited",  # a rate limit: wait and retry, 429
    "over_quota",  # a budget: retrying cannot help, 429 insufficient_quota
    "unavailable",  # a store cannot be reached: retry shortly, 503
]


class Refusal(Exception):
    """A request the gateway refuses, and why."""

    def __init__(
        self,
        kind: RefusalKind,
        message: str,
        *,
        code: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: RefusalKind = kind
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
