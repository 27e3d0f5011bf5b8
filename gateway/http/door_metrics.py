"""The door's and the event loop's metrics, read when Prometheus scrapes (nothing on the hot path)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from engines.loop_lag import LoopLag
from engines.turns import Turns
from gateway.http.door import Door
from gateway.http.tier_queues import TierQueues

__all__ = ["DoorCollector"]


class DoorCollector(Collector):
    """This worker's door (in flight, its limit, refusals by reason), its loop's lag, its streams' turns."""

    def __init__(
        self,
        door: Door,
        lag: LoopLag,
        queues: TierQueues | None = None,
        turns: Turns | None = None,
    ) -> None:
        self._door = door
        self._lag = lag
        self._queues = queues
        self._turns = turns

    def collect(self) -> Iterator[Any]:
        door, lag = self._door, self._lag
        yield GaugeMetricFamily(
            "tiergate_event_loop_lag_seconds",
            "How late this worker's event loop runs what it scheduled (recent peak, or the tick now overdue)",
            value=lag.current(),
        )
        yield GaugeMetricFamily(
            "tiergate_event_loop_lag_max_seconds",
            "The largest event-loop lag this worker has seen since it started",
            value=lag.peak_s,
        )
        yield GaugeMetricFamily(
            "tiergate_event_loop_utilization",
            "The share of the wall clock this worker's event loop spends working (moving average, 0 to 1)",
            value=lag.utilization,
        )
        yield SummaryMetricFamily(
            "tiergate_gateway_wait_seconds",
            "How long requests waited in this worker from their arrival to their engine call, their tier's"
            " queue aside (counted at the loop's ticks)",
            count_value=lag.waits,
            sum_value=lag.waited_s,
        )
        if self._turns is not None:
            yield CounterMetricFamily(
                "tiergate_stream_turn_waits",
                "Times an engine stream waited for the event loop's next turn, the streams' share spent",
                value=self._turns.deferred,
            )
        yield GaugeMetricFamily(
            "tiergate_door_requests_in_flight",
            "Inference requests this worker admitted and serves now",
            value=door.in_flight,
        )
        yield GaugeMetricFamily(
            "tiergate_door_limit", "This worker's concurrency limit now (adaptive or fixed)", value=door.limit
        )
        yield GaugeMetricFamily(
            "tiergate_door_saturated",
            "1 while the door refuses new requests (and /readyz answers 503)",
            value=1.0 if door.saturated else 0.0,
        )
        refusals = CounterMetricFamily(
            "tiergate_door_refusals",
            "Inference requests refused at the door with 503 gateway_overloaded, by reason",
            labels=["reason"],
        )
        for reason, count in door.refused.items():
            refusals.add_metric([reason], count)
        yield refusals
        if self._queues is not None:
            yield from _queue_metrics(self._queues)


def _queue_metrics(queues: TierQueues) -> Iterator[Any]:
    length = GaugeMetricFamily(
        "tiergate_tier_queue_length", "Requests waiting for a slot of their tier", labels=["tier"]
    )
    in_flight = GaugeMetricFamily(
        "tiergate_tier_requests_in_flight", "Requests holding a slot of their tier", labels=["tier"]
    )
    wait = SummaryMetricFamily(
        "tiergate_tier_queue_wait_seconds",
        "How long requests that waited for a slot of their tier waited (those shed are not counted)",
        labels=["tier"],
    )
    shed = CounterMetricFamily(
        "tiergate_tier_queue_shed",
        "Requests shed with 503 gateway_overloaded: their tier's queue full, or their wait past its deadline",
        labels=["tier"],
    )
    for tier, queued in queues.queued().items():
        length.add_metric([tier], queued.length)
        in_flight.add_metric([tier], queued.in_flight)
        wait.add_metric([tier], queued.waited, queued.waited_s)
        shed.add_metric([tier], queued.shed)
    yield from (length, in_flight, wait, shed)
