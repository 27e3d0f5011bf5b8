"""The operator's pages: tenants and the top spenders of the month; pools and replicas as this worker sees
them (health, load, speculative decoding's acceptance); the quality probes' last results per model and tier.
Probe results are this process's gauges: with several workers, the one that runs the probes has them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from gateway.admin.statements import period_bounds
from gateway.console.ledger_views import top_tenants
from gateway.console.page import Visit, visit
from pricing import format_micros

__all__ = ["operator_router"]

VisitDep = Annotated[Visit, Depends(visit)]
operator_router = APIRouter(prefix="/console/operator", include_in_schema=False)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    url: str
    health: str  # healthy, unhealthy, ejected, unknown
    outstanding: int
    running: float | None
    waiting: float | None
    kv_usage: float | None


@dataclass(frozen=True, slots=True)
class PoolView:
    name: str
    serves: list[str]  # model:tier ids
    replicas: list[ReplicaView]
    acceptance: float | None


@dataclass(frozen=True, slots=True)
class ProbeView:
    model: str
    tier: str
    accuracy: float | None
    cost_per_correct: float | None  # currency units, as the gauge has it (display only: never billed)
    reasoning_tokens: float | None


@operator_router.get("")
async def overview(v: VisitDep) -> Response:
    if (refused := v.refuse("operator")) is not None:
        return refused
    tenants = await v.state.keys.list_tenants() if v.state.keys is not None else []
    start, end = period_bounds(None)
    top = (
        await top_tenants(v.state.database, start, end)
        if v.state.database is not None and v.state.bookkeeper
        else []
    )
    return v.render(
        "operator.html",
        title="Tenants",
        tenants=tenants,
        top=top,
        period=f"{start:%Y-%m}",
        money=format_micros,
    )


@operator_router.get("/pools")
async def pools(v: VisitDep) -> Response:
    if (refused := v.refuse("operator")) is not None:
        return refused
    views = []
    for name, pool in v.state.pools.items():
        now = pool.now()
        replicas = []
        for replica in pool.replicas:
            stats = pool.fresh_stats(replica, now)
            if replica.ejected_until > now:
                health = "ejected"
            else:
                health = {True: "healthy", False: "unhealthy", None: "unknown"}[replica.healthy]
            replicas.append(
                ReplicaView(
                    replica.url,
                    health,
                    replica.outstanding,
                    stats.running if stats else None,
                    stats.waiting if stats else None,
                    stats.kv_usage if stats else None,
                )
            )
        serves = [offer.public_id for offer in v.state.catalog.offers if offer.pool == name]
        views.append(PoolView(name, serves, replicas, pool.spec_decode_acceptance()))
    return v.render("pools.html", title="Pools and probes", pools=views, probes=_probes(v))


def _probes(v: Visit) -> list[ProbeView]:
    found: dict[tuple[str, str], dict[str, float]] = {}
    wanted = {
        "tiergate_probe_accuracy": "accuracy",
        "tiergate_probe_cost_per_correct_answer": "cost_per_correct",
        "tiergate_probe_mean_reasoning_tokens": "reasoning_tokens",
    }
    for metric in v.state.registry.collect():
        for sample in metric.samples:
            if sample.name in wanted and not math.isnan(sample.value):
                labels = (sample.labels["model"], sample.labels["tier"])
                found.setdefault(labels, {})[wanted[sample.name]] = sample.value
    return [
        ProbeView(
            model,
            tier,
            values.get("accuracy"),
            values.get("cost_per_correct"),
            values.get("reasoning_tokens"),
        )
        for (model, tier), values in sorted(found.items())
    ]
