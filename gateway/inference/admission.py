"""What a request passes before it may reach an engine: its key, its permissions, its rate limits, its
budgets.

Order matters and is OpenAI's: no key -> 401 before anything is parsed; a key that may not use the tier or
model -> 403; over a limit -> 429 `rate_limit_exceeded` with the `x-ratelimit-*` headers; over a budget ->
429 `insufficient_quota` (with `x-should-retry: false`: the SDKs' retries cannot help). Token limits reserve
an estimate here and settle to the real count when the request ends (`settle`), releasing it when nothing
was generated; budgets reserve the request's worst-case cost and settle to its real charge (`spent`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.datastructures import Headers

from gateway.accounting.metrics import RequestMetrics
from gateway.accounting.usage_record import prompt_estimate
from gateway.budgets import BudgetHold, BudgetKeeper, BudgetRefusal, BudgetUnavailable, Spend
from gateway.database import DatabaseError, DatabaseUnavailable
from gateway.http.schemas import InferenceRequest
from gateway.inference.catalog import Offer
from gateway.keys import ApiKey, Authenticator, AuthError
from gateway.limits import Admission, LimiterUnavailable, Quota, RateLimiter, Reservation
from gateway.refusals import Refusal
from pricing import MAX_MICROS, NotPriced, PriceBook, format_micros, worst_case

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "Admitter",
    "TokenEstimate",
    "check_output_limit",
    "estimate_tokens",
    "pinned_output",
]

log = logging.getLogger("tiergate.admission")

# when neither the request nor the model's configured context says how long an answer may be: reserved,
# and sent to the engine as the request's bound (an engine's own default is its whole context)
DEFAULT_OUTPUT_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """A request's tokens before it runs: its prompt (estimated), the most it may generate per choice, and
    its number of choices."""

    prompt: int
    output: int
    n: int

    @property
    def total(self) -> int:
        """What the request reserves of a tokens-per-minute limit."""
        return max(1, (self.prompt + self.output) * self.n)


def estimate_tokens(body_size: int, checked: InferenceRequest, offer: Offer) -> TokenEstimate:
    """A cheap upper-ish estimate of a request's tokens: prompt from the body's size (about four bytes a
    token, JSON syntax included), plus the longest answer the engine will write for each choice, clamped to
    the model's context. That bound is the field the engine honours on this endpoint (`output_limit`), else
    the API's default there (`default_output`), else the model's `max_output_tokens`, else its context, else
    `DEFAULT_OUTPUT_TOKENS`; the proxy sends a default it relied on (`pinned_output`). It is only a
    reservation: the real count replaces it at the end."""
    prompt = prompt_estimate(body_size)
    max_model_len = offer.max_model_len
    output = checked.output_limit or checked.default_output or offer.max_output_tokens
    if output is None:
        output = max_model_len - prompt if max_model_len is not None else DEFAULT_OUTPUT_TOKENS
    output = max(output, 0)
    if max_model_len is not None:
        prompt = min(prompt, max_model_len)
        output = min(output, max_model_len - prompt)
    return TokenEstimate(prompt, output, checked.choices)


def pinned_output(checked: InferenceRequest, offer: Offer) -> tuple[str, int] | None:
    """The output bound the gateway sends for the engine to honour what was reserved, when the request set
    none: the endpoint's default, else the model's `max_output_tokens`, else `DEFAULT_OUTPUT_TOKENS` when the
    model's context is not configured (an engine's own default is its whole context, which the gateway does
    not know)."""
    if checked.output_limit is not None:
        return None
    default = checked.default_output or offer.max_output_tokens
    if default is not None:
        return checked.output_field, default
    if offer.max_model_len is None:
        return checked.output_field, DEFAULT_OUTPUT_TOKENS
    return None


def check_output_limit(checked: InferenceRequest, offer: Offer) -> None:
    """A bound above the model's `max_output_tokens` is a 400, as OpenAI answers it."""
    asked, most = checked.output_limit, offer.max_output_tokens
    if asked is not None and most is not None and asked > most:
        field = checked.output_param
        raise Refusal(
            "invalid",
            f"{field} is too large: {asked}. The model `{offer.model}` supports at most {most} completion"
            " tokens.",
            code="invalid_value",
            param=field,
        )


class Admitter:
    def __init__(
        self,
        authenticator: Authenticator | None,
        limiter: RateLimiter,
        budgets: BudgetKeeper | None = None,
        book: PriceBook | None = None,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._authenticator = authenticator
        self._limiter = limiter
        # budgets are money: without a price book there is nothing to count them in
        self._budgets = budgets if book is not None else None
        self._book = book
        # both over the network: asked side by side (admit_and_reserve)
        self._remote = limiter.remote and self._budgets is not None and self._budgets.remote

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
            raise Refusal("unauthenticated", _AUTH_MESSAGES[exc.reason], code="invalid_api_key") from None
        except DatabaseUnavailable:  # an outage (logged once by the database) is not a wrong key: 503
            raise _unavailable("API keys", "key_store_unavailable") from None
        except DatabaseError:
            log.exception("the key store failed")
            raise _unavailable("API keys", "key_store_unavailable") from None

    @staticmethod
    def permit(key: ApiKey, offer: Offer) -> None:
        tier = offer.tier.value
        if tier not in key.tiers:
            allowed = ", ".join(sorted(key.tiers))
            raise Refusal(
                "forbidden",
                f"This API key may not use the {tier} tier (allowed: {allowed}).",
                code="tier_not_allowed",
            )
        if key.models is not None and offer.model not in key.models:
            raise Refusal(
                "forbidden", f"This API key may not use the model `{offer.model}`.", code="model_not_allowed"
            )

    async def admit(self, key: ApiKey, offer: Offer, tokens: int) -> Admission | None:
        quota = _limits(key, offer)
        if quota is None:
            return None
        if quota.tpm is not None and tokens > quota.tpm:  # no wait would let it in: say so, never clamp
            if self._metrics is not None:
                self._metrics.refused("rate_limit", offer.tier.value)
            raise Refusal(
                "rate_limited",
                f"This request may use up to {tokens} tokens (its prompt estimate and the most it may"
                f" generate), more than this API key's whole limit of {quota.tpm} tokens per minute in the"
                f" {offer.tier.value} tier, by {tokens - quota.tpm}: lower max_tokens (or reasoning_effort),"
                " or ask for a higher limit.",
                code="rate_limit_exceeded",
                headers={"x-should-retry": "false"},
            )
        try:
            admission = await self._limiter.admit(key.id, offer.tier.value, quota, tokens)
        except LimiterUnavailable:  # RedisLink has logged the outage (once per 10 s)
            raise _unavailable("Rate limits", "limiter_unavailable") from None
        if not admission.allowed:
            if self._metrics is not None:
                self._metrics.refused("rate_limit", offer.tier.value)
            headers = {name.decode(): value.decode() for name, value in admission.headers()}
            raise Refusal(
                "rate_limited",
                f"Rate limit reached for this API key in the {offer.tier.value} tier; retry after "
                f"{admission.retry_after_s or 0:.2f}s.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        return admission

    async def admit_and_reserve(
        self, key: ApiKey, offer: Offer, estimate: TokenEstimate, at: float
    ) -> tuple[Admission | None, BudgetHold | None]:
        """The rate limits' admission and the budgets' reservation. A refusal by either gives back what the
        other granted (landed before the refusal is answered) before it is raised, and one by the limits
        wins, as OpenAI orders them. Both in Redis, they run side by side: their two scripts leave at once,
        one round trip's wait instead of two: fewer turns of a busy loop to wait through."""
        amount = self._worst_case(key, offer, estimate, at)
        if amount is not None and self._remote and _limits(key, offer) is not None:
            return await self._side_by_side(key, offer, estimate.total, amount, at)
        admission = await self.admit(key, offer, estimate.total)
        try:
            hold = None if amount is None else self._held(await self._verdict(key, amount, at), offer)
        except BaseException as exc:
            await self._give_back_tokens(admission, exc)
            raise
        return admission, hold

    async def _side_by_side(
        self, key: ApiKey, offer: Offer, tokens: int, amount: int, at: float
    ) -> tuple[Admission | None, BudgetHold | None]:
        reserving = asyncio.ensure_future(self._verdict(key, amount, at))
        try:
            admission = await self.admit(key, offer, tokens)
        except BaseException as exc:
            if isinstance(exc, Exception):  # refused: the hold released before the refusal is answered
                await asyncio.wait([reserving])
                released = self._release(key, at, reserving)
                if released is not None:
                    await released
            else:  # cancelled: released as soon as the reservation's answer comes, awaited by nobody
                reserving.add_done_callback(lambda done: self._release(key, at, done))
            raise
        try:
            hold = self._held(await reserving, offer)
        except BaseException as exc:
            await self._give_back_tokens(admission, exc)
            raise
        return admission, hold

    async def _give_back_tokens(self, admission: Admission | None, exc: BaseException) -> None:
        """The tokens an admission reserved, released when the request goes no further."""
        if admission is not None and admission.reservation is not None:
            refund = self.settle(admission.reservation, 0)
            if refund is not None and isinstance(exc, Exception):  # (not when being cancelled)
                await refund

    def _release(
        self, key: ApiKey, at: float, done: asyncio.Future[BudgetHold | BudgetRefusal]
    ) -> Awaitable[None] | None:
        """The hold a finished reservation got, released (what to await for it to have landed); nothing
        when it got none: refused, or failed (the budgets' own failure holds nothing)."""
        if done.cancelled() or done.exception() is not None:
            return None
        verdict = done.result()
        return self.spent(key, at, 0, verdict) if isinstance(verdict, BudgetHold) else None

    def settle(self, reservation: Reservation, used_tokens: int) -> Awaitable[None] | None:
        """Settle a token reservation to what was really used (0 releases it); what to await for it to
        have landed (None: it has)."""
        return self._limiter.settle(reservation, used_tokens)

    def _worst_case(self, key: ApiKey, offer: Offer, estimate: TokenEstimate, at: float) -> int | None:
        """What the request reserves of its budgets: its worst-case cost; None when it has none to reserve
        (no budget, no price book, or before the book's first version: rating will not charge it either)."""
        if not key.budgets or self._budgets is None or self._book is None:
            return None
        try:
            amount = worst_case(
                self._book,
                offer.tier.value,
                offer.model,
                datetime.fromtimestamp(at, UTC),
                estimate.prompt,
                estimate.output,
                estimate.n,
                key.priority_class,
            )
        except NotPriced:
            return None
        # no budget is above MAX_MICROS, so a larger worst case is refused as surely at MAX_MICROS + 1, which
        # every store (Redis' Lua doubles, SQL integers) keeps exactly
        return min(amount, MAX_MICROS + 1)

    async def _verdict(self, key: ApiKey, amount: int, at: float) -> BudgetHold | BudgetRefusal:
        """The budgets' answer to a reservation of `amount` in every budget of the key and its tenant."""
        assert self._budgets is not None  # (_worst_case said there is an amount to reserve)
        try:
            return await self._budgets.reserve(key.tenant_id, key.budgets, amount, at)
        except BudgetUnavailable:  # RedisLink has logged the outage (once per 10 s)
            raise _unavailable("Budgets", "budget_unavailable") from None
        except DatabaseUnavailable:  # the ledger, read to seed a budget's counter (the outage is logged)
            raise _unavailable("Budgets", "budget_unavailable") from None
        except DatabaseError:
            log.exception("budgets cannot be checked")
            raise _unavailable("Budgets", "budget_unavailable") from None

    def _held(self, verdict: BudgetHold | BudgetRefusal, offer: Offer) -> BudgetHold:
        """The hold, or the refusal raised (and counted)."""
        if isinstance(verdict, BudgetRefusal):
            if self._metrics is not None:
                self._metrics.refused("budget", offer.tier.value)
            assert self._book is not None
            raise _over_budget(verdict, self._book.currency)
        return verdict

    def spent(
        self, key: ApiKey, started_at: float, amount: int, hold: BudgetHold | None
    ) -> Awaitable[None] | None:
        """A request's real charge (0 if it failed) to its budgets, its reservation released; what to await
        for it to have landed (None: it has)."""
        if self._budgets is None:
            return None
        return self._budgets.settle(Spend(key.tenant_id, key.id, started_at, amount, hold))


def _over_budget(refusal: BudgetRefusal, currency: str) -> Refusal:
    budget, window = refusal.budget, refusal.window
    owner = "this API key's" if budget.scope == "key" else "your organization's"
    resets = f", until {window.end.isoformat()}" if window.end is not None else ""
    return Refusal(
        "over_quota",
        f"You exceeded {owner} {budget.period} budget: this request could cost up to"
        f" {format_micros(refusal.amount)} {currency} (its prompt and max_tokens at the highest applicable"
        f" price), and {format_micros(refusal.remaining)} of {format_micros(budget.limit)} {currency} is"
        f" left{resets}. Lower max_tokens, or ask for a higher budget.",
        code="insufficient_quota",
        headers={"x-should-retry": "false"},
    )


_AUTH_MESSAGES = {
    "missing": "You didn't provide an API key. Send it as 'Authorization: Bearer tg-...'.",
    "malformed": "The API key is malformed. tiergate keys look like tg-<id>-<secret>.",
    "unknown": "Incorrect API key provided.",
    "revoked": "This API key has been revoked.",
    "expired": "This API key has expired.",
}


def _limits(key: ApiKey, offer: Offer) -> Quota | None:
    """The key's limits in the offer's tier; None when they ask nothing of the limiter."""
    quota = key.quotas.get(offer.tier.value)
    return None if quota is None or quota.unlimited else quota


def _presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else ""
    return headers.get("api-key")  # Azure-style clients


def _unavailable(what: str, code: str) -> Refusal:
    """503 for a check whose store cannot be reached: clients retry it, unlike a refusal."""
    return Refusal(
        "unavailable",
        f"{what} cannot be checked right now; retry shortly.",
        code=code,
        headers={"retry-after": "1"},
    )
