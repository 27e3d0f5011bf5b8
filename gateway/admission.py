"""What a request passes before it may reach an engine: its key, its permissions, its rate limits.

Order matters and is OpenAI's: no key -> 401 before anything is parsed; a key that may not use the tier or
model -> 403; over a limit -> 429 with the `x-ratelimit-*` headers. Token limits reserve an estimate here and
settle to the real count when the request ends (`settle`), releasing it when nothing was generated.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers

from gateway.catalog import Offer
from gateway.database import DatabaseError
from gateway.errors import GatewayError
from gateway.keys import ApiKey, Authenticator, AuthError
from gateway.limits import Admission, LimiterUnavailable, RateLimiter, Reservation
from gateway.schemas import InferenceRequest

__all__ = ["Admitter", "estimate_tokens"]

log = logging.getLogger("tiergate.admission")

_DEFAULT_OUTPUT_TOKENS = 4096  # when neither the request nor the model says how long an answer may be
_BYTES_PER_TOKEN = 4


def estimate_tokens(body_size: int, checked: InferenceRequest, max_model_len: int | None) -> int:
    """A cheap upper-ish estimate of a request's tokens: prompt from the body's size (about four bytes a
    token, JSON syntax included), plus the longest answer it may get, for every choice, clamped to the
    model's context. It is only a reservation: the real count replaces it at the end."""
    prompt = body_size // _BYTES_PER_TOKEN
    output = getattr(checked, "max_completion_tokens", None) or checked.max_tokens
    if output is None:
        output = max_model_len - prompt if max_model_len is not None else _DEFAULT_OUTPUT_TOKENS
    per_choice = prompt + max(output, 0)
    if max_model_len is not None:
        per_choice = min(per_choice, max_model_len)
    return max(1, per_choice * (checked.n or 1))


class Admitter:
    def __init__(self, authenticator: Authenticator | None, limiter: RateLimiter) -> None:
        self._authenticator = authenticator
        self._limiter = limiter

    @property
    def enabled(self) -> bool:
        return self._authenticator is not None

    async def authenticate(self, headers: Headers) -> ApiKey | None:
        """The request's key, or None when authentication is disabled."""
        if self._authenticator is None:
            return None
        presented = _presented_key(headers)
        try:
            return await self._authenticator.authenticate(presented)
        except AuthError as exc:
            raise GatewayError(401, _AUTH_MESSAGES[exc.reason], code="invalid_api_key") from None
        except DatabaseError:  # an outage is not a wrong key: 503, which clients retry
            log.exception("the key store cannot be reached")
            raise GatewayError(
                503,
                "API keys cannot be checked right now; retry shortly.",
                code="key_store_unavailable",
                headers={"retry-after": "1"},
            ) from None

    @staticmethod
    def permit(key: ApiKey, offer: Offer) -> None:
        tier = offer.tier.value
        if tier not in key.tiers:
            allowed = ", ".join(sorted(key.tiers))
            raise GatewayError(
                403,
                f"This API key may not use the {tier} tier (allowed: {allowed}).",
                code="tier_not_allowed",
            )
        if key.models is not None and offer.model not in key.models:
            raise GatewayError(
                403, f"This API key may not use the model `{offer.model}`.", code="model_not_allowed"
            )

    async def admit(self, key: ApiKey, offer: Offer, tokens: int) -> Admission | None:
        quota = key.quotas.get(offer.tier.value)
        if quota is None or quota.unlimited:
            return None
        try:
            admission = await self._limiter.admit(key.id, offer.tier.value, quota, tokens)
        except LimiterUnavailable:
            raise GatewayError(
                503,
                "Rate limits cannot be checked right now; retry shortly.",
                code="limiter_unavailable",
                headers={"retry-after": "1"},
            ) from None
        if not admission.allowed:
            headers = {name.decode(): value.decode() for name, value in admission.headers()}
            raise GatewayError(
                429,
                f"Rate limit reached for this API key in the {offer.tier.value} tier; retry after "
                f"{admission.retry_after_s or 0:.2f}s.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        return admission

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Settle a token reservation to what was really used (0 releases it); never waits."""
        self._limiter.settle(reservation, used_tokens)


_AUTH_MESSAGES = {
    "missing": "You didn't provide an API key. Send it as 'Authorization: Bearer tg-...'.",
    "malformed": "The API key is malformed. tiergate keys look like tg-<id>-<secret>.",
    "unknown": "Incorrect API key provided.",
    "revoked": "This API key has been revoked.",
    "expired": "This API key has expired.",
}


def _presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else ""
    return headers.get("api-key")  # Azure-style clients
