"""Simulator fidelity, injected faults: 503/504 with and without Retry-After, 429 storms the SDK does
not retry, "a 429 whose write nevertheless happened", dropped connections, latency, determinism by
seed, and switching faults at run time (Python and the admin path).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
    AssignLicensePostRequestBody,
)

from graphsim import FaultRule, Simulator
from graphsim.faults import Faults

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
REMOVE_E3 = AssignLicensePostRequestBody(add_licenses=[], remove_licenses=[uuid.UUID(E3)])
ASSIGN = "POST /users/{id}/assignLicense"


async def test_write_then_429_the_sdk_retries_and_graph_says_not_assigned(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=3)  # direct E3 only, no group license
    user = sim.scenario.users[0].id
    sim.faults.add(FaultRule.write_then_429(retry_after=1))
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    assert raised.value.response_status_code == 400
    assert raised.value.error.message == "User does not have a corresponding license."
    assert sim.tenant.user(user).direct == (), "the first attempt was applied"
    counts = sim.counters.endpoint(ASSIGN)
    assert (counts.requests, counts.throttled, counts.faults) == (2, 1, 1)
    assert [loss.sku_id for loss in sim.oracle.losses(cause_prefix="graph:")] == [E3]


async def test_write_then_429_with_an_inherited_license_answers_inherited_on_retry(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=2)
    user = sim.scenario.id("plain-001")
    sim.faults.add(FaultRule.write_then_429(retry_after=1))
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    assert raised.value.error.message == (
        "User license is inherited from a group membership and it cannot be removed directly from the user."
    )
    assert not any(d.sku_id == E3 for d in sim.tenant.user(user).direct)
    assert sim.oracle.losses == []


async def test_503_with_retry_after_is_retried_by_the_sdk(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=2)
    sim.faults.add(FaultRule.error(503, kind="read", count=1, retry_after=1))
    user = await client.users.by_user_id(sim.scenario.users[0].id).get()
    assert user is not None
    counts = sim.counters.endpoint("GET /users/{id}")
    assert (counts.requests, counts.faults, counts.reads) == (2, 1, 1)
    assert counts.errors == {503: 1}


async def test_504_until_retries_run_out_raises(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=2)
    sim.faults.add(FaultRule.error(504, kind="read", retry_after=1))
    sim.faults.add(FaultRule.error(504, kind="write", retry_after=1))  # a write rule must not touch reads
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(sim.scenario.users[0].id).get()
    assert raised.value.response_status_code == 504
    assert raised.value.error.code == "gatewayTimeout"
    assert sim.counters.endpoint("GET /users/{id}").requests == 4  # 1 + 3 retries (RetryHandler default)
    assert sim.faults.rules[1].count is None


async def test_dropped_connection_before_and_after_the_write(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=3)
    first, second = sim.scenario.users[0].id, sim.scenario.users[1].id
    sim.faults.add(FaultRule.dropped(kind="write", count=1))
    with pytest.raises(httpx.TransportError):
        await client.users.by_user_id(first).assign_license.post(REMOVE_E3)
    assert sim.tenant.user(first).direct != (), "dropped before the write: nothing happened"
    sim.faults.add(FaultRule.dropped(kind="write", count=1, after_write=True))
    with pytest.raises(httpx.TransportError):
        await client.users.by_user_id(second).assign_license.post(REMOVE_E3)
    assert sim.tenant.user(second).direct == (), "dropped after the write: it happened"


async def test_latency(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=2)
    sim.faults.add(FaultRule.latency(0.3, kind="read", count=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await sim_http.get(f"{sim.base_url}/subscribedSkus")).status_code == 200
    slow = loop.time() - started
    started = loop.time()
    assert (await sim_http.get(f"{sim.base_url}/subscribedSkus")).status_code == 200
    assert slow >= 0.3 > loop.time() - started


def fire_pattern(seed: int) -> list[bool]:
    faults = Faults([FaultRule(kind="read", status=503, rate=0.3)], seed=seed)
    return [faults.plan("read", "/users").rule is not None for _ in range(200)]


def test_faults_are_deterministic_with_a_seed() -> None:
    assert fire_pattern(5) == fire_pattern(5)
    assert fire_pattern(5) != fire_pattern(6)
    assert 30 < sum(fire_pattern(5)) < 90


async def test_rates_over_http_repeat_with_the_same_seed(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    runs = []
    for _ in range(2):
        sim, _ = await sim_start("seed-example", users=2, throttling=False)
        sim.faults.set([FaultRule(kind="read", status=503, rate=0.4, retry_after=None)], seed=42)
        statuses = [(await sim_http.get(f"{sim.base_url}/users?$top=1")).status_code for _ in range(30)]
        runs.append(statuses)
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


async def test_faults_switch_at_run_time_from_the_admin_path(
    sim_start: SimStarter, sim_http: httpx.AsyncClient
) -> None:
    sim, _ = await sim_start("seed-example", users=2)
    admin = sim.admin_url
    rule = {"kind": "read", "status": 503, "retry_after": 1}
    state = (await sim_http.post(f"{admin}/faults", json={"add": [rule]})).json()
    assert state["rules"][0]["status"] == 503
    assert (await sim_http.get(f"{sim.base_url}/users")).status_code == 503
    await sim_http.post(f"{admin}/faults", json={"enabled": False})
    assert (await sim_http.get(f"{sim.base_url}/users")).status_code == 200
    await sim_http.post(f"{admin}/faults", json={"enabled": True})
    assert (await sim_http.get(f"{sim.base_url}/users")).status_code == 503
    await sim_http.post(f"{admin}/faults", json={"clear": True})
    assert (await sim_http.get(f"{sim.base_url}/users")).status_code == 200
    refused = await sim_http.post(f"{admin}/faults", json={"add": [{"kind": "sometimes"}]})
    assert refused.status_code == 400
    assert "fault kind" in refused.json()["error"]
    assert (await sim_http.get(f"{admin}/faults")).json()["fired"] == {"status-503": 2}


async def test_injected_error_body_and_headers(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=2)
    sim.faults.add(FaultRule.storm(retry_after=200, count=1))
    response = await sim_http.get(f"{sim.base_url}/users", headers={"client-request-id": "c-1"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "200"
    error = response.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert error["innerError"]["client-request-id"] == "c-1"
    assert sim.counters.throttled == 1
