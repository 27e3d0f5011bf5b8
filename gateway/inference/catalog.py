"""The models the gateway offers, once per tier, and tier resolution in one place."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.deliberation.difficulty import Difficulty, score
from gateway.refusals import Refusal
from gateway.settings import AutoTierSettings, CascadeSettings, DeliberationSettings, ModelSettings
from gateway.tiers import ReasoningEffort, Tier

__all__ = ["AUTO", "CascadeRoute", "Catalog", "Offer"]

_TIERS = {tier.value: tier for tier in Tier}
AUTO = "auto"  # `model:auto`, `x-tiergate-tier: auto`: the tier chosen by the request's difficulty


@dataclass(frozen=True, slots=True)
class CascadeRoute:
    """Where a cascade goes when its fast answer is not confident enough, and its settings."""

    deliberate: Offer
    settings: CascadeSettings


@dataclass(frozen=True, slots=True)
class Offer:
    """One model in one tier: where it runs and under which names."""

    model: str  # the public id, e.g. "qwen3-8b"
    tier: Tier
    pool: str
    engine_model: str
    max_model_len: int | None
    owned_by: str
    deliberation: DeliberationSettings | None = None  # the deliberate tier's depth promise, if configured
    max_output_tokens: int | None = None  # the most one choice may generate (None: up to the context)
    # the cascade tier: this offer is the model's fast tier (its pool, its engine name), and this the rest
    cascade: CascadeRoute | None = None

    @property
    def public_id(self) -> str:
        return f"{self.model}:{self.tier.value}"


class Catalog:
    def __init__(
        self,
        models: Mapping[str, ModelSettings],
        effort_tiers: Mapping[ReasoningEffort, Tier],
        auto: AutoTierSettings | None = None,
    ) -> None:
        self._weights = auto or AutoTierSettings()
        self._created = int(time.time())
        self._offers: dict[str, dict[Tier, Offer]] = {}
        self._defaults: dict[str, Tier] = {}
        for model_id, model in models.items():
            self._defaults[model_id] = model.resolved_default_tier
            self._offers[model_id] = {
                tier: Offer(
                    model_id,
                    tier,
                    offer.pool,
                    offer.engine_model or model_id,
                    model.max_model_len,
                    model.owned_by,
                    offer.deliberation,
                    model.max_output_tokens,
                )
                for tier, offer in model.tiers.items()
            }
            if model.cascade is not None:  # over the fast tier's pool, escalating to the deliberate tier
                offers = self._offers[model_id]
                fast, deliberate = offers[Tier.FAST], offers[Tier.DELIBERATE]
                route = CascadeRoute(deliberate, model.cascade)
                offers[Tier.CASCADE] = replace(fast, tier=Tier.CASCADE, cascade=route)
        self._effort_tiers = {effort.value: tier for effort, tier in effort_tiers.items()}
        # a card for every id a request may name: `model:tier`, `model:auto` and the bare `model`
        tiered = [self._card(offer) for offers in self._offers.values() for offer in offers.values()]
        autos = [self._alias_card(model_id, f"{model_id}:{AUTO}") for model_id in self._offers]
        bares = [self._alias_card(model_id, model_id) for model_id in self._offers]
        self._by_id = {card["id"]: card for card in (*tiered, *autos, *bares)}
        # listed: each tier, and auto where it has a choice (a model offered in several tiers)
        self._cards = [*tiered, *(card for card in autos if len(card["tiers"]) > 1)]
        self._cards_json = orjson.dumps({"object": "list", "data": self._cards})

    def resolve(
        self,
        requested: str,
        header_tier: str | None,
        reasoning_effort: str | None,
        prompt: Any = None,
        allowed: frozenset[str] | None = None,
    ) -> tuple[Offer, Difficulty | None]:
        """Pick the offer for a request. Precedence: the model's `:tier` suffix, the `x-tiergate-tier`
        header, `reasoning_effort` through the configured map, the model's default. The tier `auto` (as
        suffix or header) takes the tier the request's difficulty score picks, among the model's tiers that
        `allowed` permits; the Difficulty is returned with it (None for any other tier)."""
        offers = self._offers.get(requested)
        if offers is not None:
            model_id = requested
            if header_tier is not None:
                name = header_tier.strip().lower()
                if name == AUTO:
                    return self._auto(offers, prompt, reasoning_effort, allowed)
                tier = _TIERS.get(name)
                if tier is None:
                    raise _invalid_tier(header_tier, None)
                offer = offers.get(tier)
                if offer is None:
                    raise Refusal(
                        "invalid",
                        f"The model `{model_id}` is not offered in the {tier.value} tier"
                        f" (offered: {', '.join(t.value for t in offers)}).",
                        code="tier_not_offered",
                    )
                return offer, None
            if reasoning_effort is not None:
                wanted = self._effort_tiers.get(reasoning_effort)
                if wanted is not None and wanted in offers:
                    return offers[wanted], None
            return offers[self._defaults[model_id]], None
        model_id, sep, suffix = requested.rpartition(":")
        offers = self._offers.get(model_id) if sep else None
        if offers is None:
            raise Refusal(
                "not_found",
                f"The model `{requested}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        if suffix == AUTO:
            return self._auto(offers, prompt, reasoning_effort, allowed)
        tier = _TIERS.get(suffix)
        if tier is None:
            raise _invalid_tier(suffix, "model")
        offer = offers.get(tier)
        if offer is None:
            raise Refusal(
                "not_found",
                f"The model `{requested}` does not exist: `{model_id}` is offered in"
                f" {', '.join(t.value for t in offers)} only.",
                code="model_not_found",
                param="model",
            )
        return offer, None

    def _auto(
        self,
        offers: dict[Tier, Offer],
        prompt: Any,
        reasoning_effort: str | None,
        allowed: frozenset[str] | None,
    ) -> tuple[Offer, Difficulty]:
        difficulty = score(prompt if isinstance(prompt, str | list) else "", reasoning_effort, self._weights)
        # auto chooses between fast and deliberate; the cascade is a choice of its own
        tiers = [tier for tier in offers if tier is not Tier.CASCADE]
        usable = [tier for tier in tiers if allowed is None or tier.value in allowed] or tiers
        wanted = Tier(difficulty.tier)
        tier = wanted if wanted in usable else usable[0]
        return offers[tier], difficulty

    def models_json(self) -> bytes:
        return self._cards_json

    @property
    def cards(self) -> list[dict[str, Any]]:
        """The listed cards: one per model and tier, and `model:auto` for the models in several tiers."""
        return self._cards

    def card(self, model_id: str) -> dict[str, Any] | None:
        """The card of any id `resolve` accepts: `model:tier`, `model:auto`, the bare `model`."""
        return self._by_id.get(model_id)

    @property
    def offers(self) -> list[Offer]:
        return [offer for offers in self._offers.values() for offer in offers.values()]

    def _card(self, offer: Offer) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": offer.public_id,
            "object": "model",
            "created": self._created,
            "owned_by": offer.owned_by,
            "root": offer.model,
            "tier": offer.tier.value,
            "default_tier": self._defaults[offer.model] is offer.tier,
        }
        if offer.max_model_len is not None:
            card["max_model_len"] = offer.max_model_len
        if offer.max_output_tokens is not None:
            card["max_output_tokens"] = offer.max_output_tokens
        return card

    def _alias_card(self, model_id: str, card_id: str) -> dict[str, Any]:
        """The card of `model:auto` (tier `auto`) or of the bare model id (the default tier's card under
        that id); `tiers` lists the tiers the id may lead to."""
        offers = self._offers[model_id]
        default = self._defaults[model_id]
        card = self._card(offers[default])
        card["id"] = card_id
        card["tiers"] = [tier.value for tier in offers]
        if card_id != model_id:
            card["tier"], card["default_tier"] = AUTO, False
            card["tiers"] = [tier.value for tier in offers if tier is not Tier.CASCADE]
        return card


def _invalid_tier(value: str, param: str | None) -> Refusal:
    return Refusal(
        "invalid",
        f"Unknown tier `{value}`; tiers are {', '.join(t.value for t in Tier)}, or {AUTO}.",
        code="invalid_tier",
        param=param,
    )
