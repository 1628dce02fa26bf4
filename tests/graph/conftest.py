"""Fixtures for the simulator fidelity tests (tests/graph/test_sim_*.py). All are named `sim_*`.

`sim_start(...)` starts a simulator on a free loopback port and returns it with a msgraph-sdk client
built exactly as production builds one (docs/graph.md §5): an httpx client from
GraphClientFactory.create_with_default_middleware (so the RetryHandler is there), a
GraphRequestAdapter with AnonymousAuthenticationProvider, and `request_adapter.base_url` set to the
simulator. Everything started is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
import pytest
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

from graphsim import Scenario, Simulator, ThrottleLimits, load_scenario, parse

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]


def sim_graph_client(base_url: str) -> tuple[GraphServiceClient, httpx.AsyncClient]:
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(base_url=base_url))
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider(), client=http)
    client = GraphServiceClient(request_adapter=adapter)
    client.request_adapter.base_url = base_url
    return client, http


@pytest.fixture
async def sim_start() -> AsyncIterator[SimStarter]:
    started: list[tuple[Simulator, httpx.AsyncClient]] = []

    async def start(
        scenario: str | Scenario | Mapping[str, Any] = "seed-example",
        *,
        users: int | None = 20,
        seed: int = 1,
        time_scale: float = 1.0,
        frozen_clock: bool = False,
        throttling: bool | ThrottleLimits | None = None,
    ) -> tuple[Simulator, GraphServiceClient]:
        if isinstance(scenario, str):
            scenario = load_scenario(scenario, users=users, seed=seed)
        elif not isinstance(scenario, Scenario):
            scenario = parse(dict(scenario))
        sim = await Simulator.start(scenario, time_scale=time_scale, frozen_clock=frozen_clock, throttling=throttling)
        client, http = sim_graph_client(sim.base_url)
        started.append((sim, http))
        return sim, client

    yield start
    for sim, http in started:
        await http.aclose()
        await sim.stop()


@pytest.fixture
async def sim_http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client, for what the SDK hides (raw bodies, headers, malformed requests)."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
