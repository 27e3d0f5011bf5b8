"""The models offered: each in its tiers and pools, the deliberate tier's depth promise, the auto tier's
weights and the map from reasoning_effort to a tier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gateway.settings.base import _Section
from gateway.tiers import ReasoningEffort, Tier

__all__ = [
    "AutoTierSettings",
    "CascadeSettings",
    "DeliberationSettings",
    "EffortLevel",
    "ModelSettings",
    "TierOffer",
    "TierSettings",
]


class EffortLevel(_Section):
    """What the deliberate tier promises at one `reasoning_effort` level."""

    floor: int = Field(0, ge=0, description="reasoning tokens every sample reaches (budget forcing)")
    cap: int | None = Field(None, gt=0, description="reasoning tokens no sample goes beyond")
    samples: int = Field(1, ge=1, le=16, description="self-consistency: samples voted on")
    max_extensions: int = Field(3, ge=0, le=16, description="continuations per sample to reach the floor")
    # adaptive self-consistency: `samples` is the most drawn; they come in waves of `wave` per choice, and the
    # vote stops once the chance that the samples left could change its winner is below 1 - stop_confidence
    # (gateway/deliberation/adaptive.py); false: every sample is drawn at once (fixed voting)
    adaptive: bool = Field(False, description="draw samples in waves and stop once the vote is settled")
    wave: int = Field(2, ge=1, le=16, description="adaptive: samples drawn per wave, per choice")
    stop_confidence: float = Field(
        0.95, gt=0, le=1, description="adaptive: stop when the winner stays the winner with this probability"
    )

    @model_validator(mode="after")
    def _floor_under_cap(self) -> EffortLevel:
        if self.cap is not None and self.floor > self.cap:
            raise ValueError(f"floor {self.floor} is above cap {self.cap}")
        return self


def _default_efforts() -> dict[ReasoningEffort, EffortLevel]:
    return {
        ReasoningEffort.LOW: EffortLevel(floor=256, cap=1024, samples=1, max_extensions=3),
        ReasoningEffort.MEDIUM: EffortLevel(floor=512, cap=2048, samples=1, max_extensions=4),
        ReasoningEffort.HIGH: EffortLevel(floor=1024, cap=4096, samples=5, max_extensions=6),
    }


class DeliberationSettings(_Section):
    """How the gateway makes a deliberate-tier model think (see docs/deliberation.md)."""

    # native: the engine's reasoning parser returns `reasoning`; prompted: a plain model is told to think
    # between the delimiters, and the gateway splits its text itself
    reasoning: Literal["native", "prompted"] = "native"
    think_open: str = Field("<think>", min_length=1)
    think_close: str = Field("</think>", min_length=1)
    cue: str = Field("Wait", min_length=1, description="appended to the reasoning to make it go on")
    engine_caps_thinking: bool = Field(True, description="the engine takes `thinking_token_budget`")
    # prompted only: the model's turn starts as `think_open` and a newline, continued by the engine
    # (`continue_final_message`), so the model is inside its reasoning from its first token
    prefill_thinking: bool = True
    default_effort: ReasoningEffort = ReasoningEffort.MEDIUM
    efforts: dict[ReasoningEffort, EffortLevel] = Field(default_factory=_default_efforts, min_length=1)
    keepalive_s: float = Field(5.0, gt=0, description="SSE comments while samples run")
    # a request without max_completion_tokens (or max_tokens) may generate, per sample, the level's cap plus
    # this much (all calls together); with one, that bound, of which min_answer_tokens stays for the answer
    answer_tokens: int = Field(2048, ge=1, description="room for the answer after a capped reasoning")
    min_answer_tokens: int = Field(64, ge=1, description="a bound below floor + this cannot meet the floor")


class TierOffer(_Section):
    pool: str
    engine_model: str | None = Field(None, description="the name the engine serves it under; default: the id")
    deliberation: DeliberationSettings | None = None  # deliberate tier only: the depth promise


class CascadeSettings(_Section):
    """The cascade tier of a model (docs/tiers.md, "The cascade tier"): its fast tier answers first, with
    logprobs; at or above `threshold` confidence that answer is delivered, below it the deliberate tier
    answers. A plain per-model setting, so that a calibrated thresholds file can set it."""

    # 0.5: where the simulator's skill model delivers fast answers 93% right (docs/deliberation.md)
    threshold: float = Field(
        0.5, ge=0, le=1, description="deliver the fast answer at this confidence or above"
    )
    samples: int = Field(
        3, ge=1, le=16, description="fast samples drawn in one n=k call, for their agreement"
    )
    keepalive_s: float = Field(5.0, gt=0, description="SSE comments while the fast stage decides")


class ModelSettings(_Section):
    default_tier: Tier | None = None  # default: the only tier, or fast
    tiers: dict[Tier, TierOffer] = Field(min_length=1)
    max_model_len: int | None = Field(None, gt=0)
    # the most one choice (one sample of a deliberation) may generate: a request asking more is a 400, one
    # asking nothing is sent this bound (as OpenAI's models have a maximum output below their context)
    max_output_tokens: int | None = Field(None, gt=0)
    owned_by: str = "tiergate"
    # the cascade tier over this model's fast and deliberate tiers; None: not offered
    cascade: CascadeSettings | None = None

    @model_validator(mode="after")
    def _default_is_offered(self) -> ModelSettings:
        if Tier.CASCADE in self.tiers or self.default_tier is Tier.CASCADE:
            raise ValueError("the cascade tier has no pool of its own: configure it as `cascade: {...}`")
        if self.cascade is not None and not {Tier.FAST, Tier.DELIBERATE} <= set(self.tiers):
            raise ValueError("cascade: the model needs both a fast and a deliberate tier")
        if self.cascade is not None and self.tiers[Tier.DELIBERATE].deliberation is None:
            # an escalation is a deliberation: its depth promise, its billing (`deliberation: {}`: defaults)
            raise ValueError("cascade: the deliberate tier needs a `deliberation` block to escalate to")
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier.value!r} is not one of this model's tiers")
        for tier, offer in self.tiers.items():
            if offer.deliberation is not None and tier is not Tier.DELIBERATE:
                raise ValueError(f"tiers.{tier.value}.deliberation: only the deliberate tier deliberates")
        return self

    @property
    def resolved_default_tier(self) -> Tier:
        if self.default_tier is not None:
            return self.default_tier
        return Tier.FAST if Tier.FAST in self.tiers else next(iter(self.tiers))


def _default_effort_map() -> dict[ReasoningEffort, Tier]:
    low = (ReasoningEffort.NONE, ReasoningEffort.MINIMAL, ReasoningEffort.LOW)
    return {effort: Tier.FAST if effort in low else Tier.DELIBERATE for effort in ReasoningEffort}


class AutoTierSettings(_Section):
    """The weights of the `auto` tier's difficulty score (gateway/deliberation/difficulty.py)."""

    length_per_1k_chars: float = 0.15
    math: float = 0.35
    code: float = 0.3
    multi_step: float = 0.25
    threshold: float = 0.5
    effort_high: float = 1.0
    effort_low: float = -1.0


class TierSettings(_Section):
    # `reasoning_effort` of a request picks a tier when neither the model suffix nor the header did
    reasoning_effort: dict[ReasoningEffort, Tier] = Field(default_factory=_default_effort_map)
    auto: AutoTierSettings = AutoTierSettings()  # `model:auto` and `x-tiergate-tier: auto`
