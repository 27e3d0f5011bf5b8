"""Fixtures for the simulator tests: in-process clients, one per app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from engines.simulator import SimulatorConfig, create_simulator_app

from .sim_support import Sim, SimFactory, fast


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    clients: list[httpx.AsyncClient] = []

    async def make(config: SimulatorConfig) -> Sim:
        app = create_simulator_app(config)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
        clients.append(client)
        return Sim(app, client)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def sim(sim_factory: SimFactory) -> Sim:
    """The fast profile without latency, in process."""
    return await sim_factory(fast())
