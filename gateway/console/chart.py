"""Spend per day and tier as a stacked bar chart, laid out here and drawn as SVG by the template: no script,
it scales to any width (viewBox), and each bar has a <title> and the page a table of the same figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.console.ledger_views import DailySpend
from pricing import format_micros

__all__ = ["Bar", "SpendChart", "spend_chart"]

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 240, 72, 24, 12
TIER_COLOURS = {"fast": "#2f6fb5", "deliberate": "#c2571a"}


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class SpendChart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]  # (y, label) of the vertical axis
    labels: tuple[tuple[float, str], ...]  # (x, day of month) under the bars, every few days
    legend: tuple[tuple[str, str], ...]  # (tier, colour)
    baseline: float
    left: int


def spend_chart(days: list[DailySpend], start: datetime, end: datetime, tiers: list[str]) -> SpendChart:
    count = max(1, (end - start).days)
    slot = (WIDTH - LEFT) / count
    plot = HEIGHT - BOTTOM - TOP
    top = max((day.total for day in days), default=0) or 1
    by_day = {day.day: day for day in days}
    bars = []
    labels = []
    for index in range(count):
        date = start + timedelta(days=index)
        x = LEFT + index * slot
        if index % 5 == 0 or index == count - 1:
            labels.append((x + slot / 2, str(date.day)))
        spent = by_day.get(date.strftime("%Y-%m-%d"))
        if spent is None:
            continue
        y = float(HEIGHT - BOTTOM)
        for tier in tiers:
            amount = spent.by_tier.get(tier, 0)
            if not amount:
                continue
            height = plot * amount / top
            y -= height
            title = f"{date:%Y-%m-%d} {tier}: {format_micros(amount)}"
            bars.append(Bar(x + slot * 0.15, y, slot * 0.7, height, TIER_COLOURS.get(tier, "#777"), title))
    ticks = tuple((HEIGHT - BOTTOM - plot * share, format_micros(int(top * share))) for share in (0, 0.5, 1))
    return SpendChart(
        WIDTH,
        HEIGHT,
        tuple(bars),
        tuple((y, label) for y, label in ticks),
        tuple(labels),
        tuple((tier, TIER_COLOURS.get(tier, "#777")) for tier in tiers),
        float(HEIGHT - BOTTOM),
        LEFT,
    )
