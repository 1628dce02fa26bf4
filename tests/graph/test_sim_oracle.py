"""Simulator fidelity, the oracle and the legacy actor: a removal that leaves a user without a plan
is caught and attributed to the Graph request; safe removals are not flagged; losses the scenario
causes are told apart; the legacy automation re-adds direct licenses (drift).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from msgraph import GraphServiceClient
from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
    AssignLicensePostRequestBody,
)

from graphsim import GRAPH, LEGACY, SCENARIO, Simulator

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
TEAMS = "57ff2da0-773e-42df-b2af-ffb7a2317929"
REMOVE_E3 = AssignLicensePostRequestBody(add_licenses=[], remove_licenses=[uuid.UUID(E3)])


def tenant() -> dict[str, Any]:
    """full: direct E3 with every plan; trimmed: direct E3 without SWAY; covered: direct E3 with
    every plan, in both groups (one disables SWAY, the other TEAMS1); broken: direct E3, its group
    assignment is in error."""
    e3 = "ENTERPRISEPACK"
    return {
        "name": "oracle",
        "seed": 5,
        "processing": {"queued_seconds": 5, "in_progress_seconds": 5},
        "skus": [{"catalog": e3, "seats": 20}],
        "users": [
            {"key": "full", "direct": [{"sku": e3}]},
            {"key": "trimmed", "direct": [{"sku": e3, "disabled_plans": ["SWAY"]}]},
            {"key": "covered", "direct": [{"sku": e3}]},
            {"key": "broken", "direct": [{"sku": e3}]},
        ],
        "groups": [
            {
                "key": "no-sway",
                "name": "E3 without Sway",
                "members": ["full", "trimmed", "covered", "broken"],
                "licenses": [{"sku": e3, "disabled_plans": ["SWAY"]}],
                "forced": [{"user": "broken", "state": "Error", "error": "CountViolation"}],
            },
            {
                "key": "no-teams",
                "name": "E3 without Teams",
                "members": ["covered"],
                "licenses": [{"sku": e3, "disabled_plans": ["TEAMS1"]}],
            },
        ],
        "legacy": {"sku": e3, "every_seconds": 60, "targets": {"users": ["full", "trimmed"]}},
    }


async def test_removal_losing_a_plan_is_caught_and_attributed_to_the_request(sim_start: SimStarter) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    user = sim.scenario.id("full")
    sim.advance(7)
    await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    losses = sim.oracle.losses
    assert len(losses) == 1
    loss = losses[0]
    assert (loss.user_id, loss.sku_id, loss.plans_lost, loss.sku_lost) == (user, E3, (SWAY,), False)
    assert loss.plan_names == ("SWAY",)
    assert loss.cause.startswith(GRAPH + "users.assignLicense " + user)
    assert loss.source == "graph"
    assert loss.at == 7.0
    assert sim.oracle.losses(cause_prefix=GRAPH) == [loss]
    assert sim.oracle.losses(cause_prefix=SCENARIO) == []
    timeline = sim.oracle.timeline(user)
    assert [(p.at, p.cause.split(" ")[0]) for p in timeline] == [(0.0, "initial"), (7.0, "graph:users.assignLicense")]
    assert SWAY in timeline[0].plans[E3]
    assert SWAY not in timeline[1].plans[E3]


async def test_safe_removals_are_not_flagged(sim_start: SimStarter) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    for key in ("trimmed", "covered"):
        await client.users.by_user_id(sim.scenario.id(key)).assign_license.post(REMOVE_E3)
        assert [p.cause for p in sim.oracle.timeline(sim.scenario.id(key))] == ["initial"], "nothing changed"
    assert sim.oracle.losses == []
    assert sim.oracle.summary()["losses"] == 0


async def test_an_inherited_entry_in_error_gives_nothing(sim_start: SimStarter) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    user = sim.scenario.id("broken")
    await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    (loss,) = sim.oracle.losses
    assert loss.sku_lost is True
    assert E3 not in sim.tenant.effective(sim.tenant.user(user))


async def test_losses_the_scenario_causes_are_told_apart(sim_start: SimStarter) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    user = sim.scenario.id("trimmed")
    await client.users.by_user_id(user).assign_license.post(REMOVE_E3)  # safe: the group covers it
    sim.tenant.remove_member("no-sway", "trimmed")  # the scenario takes the user out of the group
    assert sim.oracle.losses == [], "group processing has not reached the user yet"
    sim.advance(11)
    (loss,) = sim.oracle.losses
    assert loss.sku_lost is True
    assert loss.cause.startswith(SCENARIO + "remove_member")
    assert loss.at == 10.0
    assert sim.oracle.losses(cause_prefix=GRAPH) == []


async def test_a_broken_group_assignment_made_by_a_test_is_a_scenario_cause(sim_start: SimStarter) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    user = sim.scenario.id("trimmed")
    await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    sim.tenant.break_group_license("no-sway", users=["trimmed"], error="CountViolation")
    (loss,) = sim.oracle.losses
    assert loss.source == "scenario"
    assert loss.cause.startswith("scenario:break_group_license")
    sim.tenant.fix_group_license("no-sway", users=["trimmed"])
    assert E3 in sim.tenant.effective(sim.tenant.user(user))


async def test_oracle_over_the_admin_path(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    user = sim.scenario.id("full")
    await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    report = (await sim_http.get(f"{sim.admin_url}/oracle")).json()
    assert report["summary"]["losses"] == 1
    assert report["summary"]["lossesBySource"] == {"graph": 1}
    assert report["losses"][0]["userId"] == user
    assert report["losses"][0]["plansLost"] == [SWAY]
    assert (await sim_http.get(f"{sim.admin_url}/oracle?cause_prefix=scenario:")).json()["losses"] == []
    line = (await sim_http.get(f"{sim.admin_url}/oracle/timeline/{user}")).json()["timeline"]
    assert len(line) == 2


async def test_legacy_actor_re_adds_direct_licenses(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, client = await sim_start(tenant(), frozen_clock=True)
    full, trimmed, covered = (sim.scenario.id(k) for k in ("full", "trimmed", "covered"))
    for user in (trimmed, covered):
        await client.users.by_user_id(user).assign_license.post(REMOVE_E3)
    state = (await sim_http.post(f"{sim.admin_url}/legacy", json={"enabled": True})).json()
    assert state["enabled"] is True
    sim.advance(59)
    assert sim.tenant.user(trimmed).direct == ()
    sim.advance(1)
    readded = [d for d in sim.tenant.user(trimmed).direct if d.sku_id == E3]
    assert len(readded) == 1
    assert readded[0].disabled == frozenset(), "the script's own options, not the old ones"
    assert sim.tenant.user(covered).direct == (), "not a target of the script"
    assert len(sim.tenant.user(full).direct) == 1, "it only adds where a direct license is missing"
    assert sim.tenant.legacy_stats.added == 1
    assert sim.throttle.stats.external_writes == 1  # its writes use the tenant's write quota
    assert sim.counters.writes == 2, "the legacy script is not a request to this Graph"
    timeline = sim.oracle.timeline(trimmed)
    assert timeline[-1].cause.startswith(LEGACY)
    # Switched off: nothing more happens.
    sim.set_legacy(False)
    await client.users.by_user_id(trimmed).assign_license.post(REMOVE_E3)
    sim.advance(600)
    assert sim.tenant.user(trimmed).direct == ()
