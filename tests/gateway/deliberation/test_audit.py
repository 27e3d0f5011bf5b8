"""The depth audit: requested depth against delivered reasoning, as a pure function, over every combination of
small cases (checked against the rules written out once more), and as a run reports it."""

from __future__ import annotations

import itertools

import pytest

from gateway.deliberation.audit import DeliveredDepth, RequestedDepth, budget_shortfall, shortfalls
from gateway.deliberation.plan import DepthPlan
from gateway.deliberation.run import Run, Sample
from gateway.inference.handler import _reasoning_budget
from gateway.settings import DeliberationSettings
from pricing import SHORTFALLS, Depth


def expected(requested: RequestedDepth, reasoning: tuple[int, ...], finished: tuple[bool, ...]) -> set[str]:
    """The documented rules (docs/deliberation.md#the-depth-audit), one sample at a time."""
    found: set[str] = set()
    for tokens, done in zip(reasoning, finished, strict=True):
        if tokens < requested.floor:
            found.add("floor_missed")
        if requested.engine_caps and requested.cap is not None and tokens > requested.cap:
            found.add("cap_ignored")
        if done and tokens == 0:
            found.add("effort_ignored")
    if len([done for done in finished if done]) < requested.samples:
        found.add("samples_short")
    return found


TOKENS = (0, 1, 99, 100, 101, 200, 201)  # around a floor of 100 and a cap of 200


def test_every_small_case_against_the_rules() -> None:
    checked = 0
    for floor, cap, engine_caps in itertools.product((0, 100), (None, 200), (False, True)):
        for count in (1, 2):
            for reasoning in itertools.product(TOKENS, repeat=count):
                for finished in itertools.product((False, True), repeat=count):
                    requested = RequestedDepth(floor, cap, engine_caps, count)
                    found = shortfalls(requested, DeliveredDepth(reasoning, finished))
                    assert set(found) == expected(requested, reasoning, finished), (requested, reasoning)
                    assert list(found) == [r for r in SHORTFALLS if r in found]  # the record's order
                    checked += 1
    assert checked == 8 * (7 * 2 + 49 * 4)


@pytest.mark.parametrize(
    ("requested", "reasoning", "finished", "found"),
    [
        # met: every sample at or above the floor, none above the cap, all ended
        (RequestedDepth(100, 200, True, 2), (100, 200), (True, True), ()),
        (RequestedDepth(100, 200, True, 1), (99,), (True,), ("floor_missed",)),
        (RequestedDepth(0, 200, True, 1), (201,), (True,), ("cap_ignored",)),
        # the gateway enforces its own cap (a delta's overshoot is its own tolerance): nothing for an engine
        (RequestedDepth(0, 200, False, 1), (201,), (True,), ()),
        (RequestedDepth(0, None, True, 1), (10_000,), (True,), ()),
        (RequestedDepth(0, 200, True, 1), (0,), (True,), ("effort_ignored",)),
        (RequestedDepth(100, 200, True, 1), (0,), (True,), ("floor_missed", "effort_ignored")),
        (RequestedDepth(0, 200, True, 3), (50, 60, 0), (True, True, False), ("samples_short",)),
        (RequestedDepth(0, None, False, 1), (), (), ("samples_short",)),
        (
            RequestedDepth(100, 200, True, 3),
            (0, 300, 0),
            (True, True, False),
            ("floor_missed", "cap_ignored", "effort_ignored", "samples_short"),
        ),
    ],
)
def test_each_reason_fires_exactly_when_documented(
    requested: RequestedDepth, reasoning: tuple[int, ...], finished: tuple[bool, ...], found: tuple[str, ...]
) -> None:
    assert shortfalls(requested, DeliveredDepth(reasoning, finished)) == found


def run_with(samples: list[Sample], *, engine_caps: bool = True, complete: bool = True) -> Run:
    plan = DepthPlan("medium", floor=100, cap=200, samples=len(samples), max_extensions=2)
    settings = DeliberationSettings(engine_caps_thinking=engine_caps)
    return Run(plan=plan, settings=settings, body={}, samples=samples, complete=complete)


def test_a_run_reports_its_audit_in_its_depth_and_to_the_client() -> None:
    run = run_with([Sample(0, reasoning_tokens=150, finish_reason="stop"), Sample(1, reasoning_tokens=250)])
    depth = run.depth()
    assert depth == Depth(samples=2, floor=100, floor_met=True, shortfall=("cap_ignored", "samples_short"))
    assert run.depth_fields()["shortfall"] == ["cap_ignored", "samples_short"]
    met = run_with([Sample(0, reasoning_tokens=150, finish_reason="stop")])
    assert met.depth().shortfall == () and met.depth_fields()["shortfall"] == []


def test_a_run_cut_short_is_not_audited() -> None:
    # its client left or its engine failed: billed by its floor as it stands, no engine blamed
    run = run_with([Sample(0, reasoning_tokens=20)], complete=False)
    assert run.depth() == Depth(samples=1, floor=100, floor_met=False)


@pytest.mark.parametrize(
    ("budget", "reasoning", "exact", "found"),
    [
        (100, 100, True, ()),
        (100, 101, True, ("budget_ignored",)),
        (0, 1, True, ("budget_ignored",)),
        (0, 0, True, ()),
        (100, 5000, False, ()),  # an estimated count is never held against the engine
    ],
)
def test_a_relayed_thinking_budget_is_ignored_only_past_it_by_the_engines_own_count(
    budget: int, reasoning: int, exact: bool, found: tuple[str, ...]
) -> None:
    assert budget_shortfall(budget, reasoning, exact=exact) == found


@pytest.mark.parametrize(
    ("data", "budget"),
    [
        ({}, None),
        ({"thinking_token_budget": 64}, 64),
        ({"thinking_token_budget": 64, "n": 3}, 192),
        ({"thinking_token_budget": 64, "n": "3"}, 64),  # the engine refuses it: nothing more is assumed
        ({"thinking_token_budget": True}, None),
        ({"thinking_token_budget": -1}, None),
        ({"thinking_token_budget": 6.5}, None),
    ],
)
def test_the_budget_audited_is_the_clients_times_its_choices(
    data: dict[str, object], budget: int | None
) -> None:
    assert _reasoning_budget(data) == budget
