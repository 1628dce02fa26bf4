"""Scenarios: the built-ins as the brief describes them, files (JSON/YAML) with clear errors, timed
events, determinism; and the adversarial scenario's `expected` checked against licshift's decision
rule on what the simulator serves over HTTP (so the tags are right by construction AND by reading).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
from msgraph.generated.groups.item.members.graph_user.graph_user_request_builder import GraphUserRequestBuilder

from graphsim import OUTCOMES, Scenario, ScenarioError, Simulator, load_scenario, parse
from graphsim.builtins import adversarial
from licshift.rules.decide import Block, BlockReason, Policy, Remove, Skip, SkipReason, decide
from licshift.rules.licenses import LicenseAssignmentState, ServicePlan, Sku, normalise_error

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"


def test_seed_example_is_microsofts_example() -> None:
    scenario = load_scenario("seed-example")
    assert len(scenario.users) == 1000
    ((e3, seats),) = scenario.skus
    assert (e3.sku_id, e3.part_number) == (E3, "ENTERPRISEPACK")
    names = {p.name for p in e3.plans}
    assert {
        "EXCHANGE_S_ENTERPRISE",
        "SHAREPOINTENTERPRISE",
        "OFFICESUBSCRIPTION",
        "MCOSTANDARD",
        "TEAMS1",
        "SWAY",
    } <= names
    assert seats >= 1000
    assert all(u.direct == ((E3, frozenset()),) for u in scenario.users)
    (group,) = scenario.groups
    assert group.name == "All users"
    assert group.licenses == ()
    assert len(group.members) == 1000
    wave = scenario.wave
    assert wave.group == group.id
    assert wave.skus == (E3,)
    assert wave.group_license == ((E3, frozenset()),)
    assert set(wave.expected.values()) == {"remove"}
    assert len(wave.expected) == 1000


def test_users_override_and_seed_determinism() -> None:
    small = load_scenario("seed-example", users=200, seed=1)
    assert len(small.users) == 200
    again = load_scenario("seed-example", users=200, seed=1)
    other = load_scenario("seed-example", users=200, seed=2)
    assert [u.id for u in small.users] == [u.id for u in again.users]
    assert small.tenant_id == again.tenant_id
    assert [u.id for u in small.users] != [u.id for u in other.users]
    with pytest.raises(ValueError, match="at least 1"):
        load_scenario("seed-example", users=0)


def test_large_is_generated_compactly() -> None:
    from graphsim.builtins import large

    doc = large(users=3000)
    assert len(doc["users"]) == 1
    assert doc["users"][0]["generate"]["count"] == 3000
    assert len(json.dumps(doc)) < 5000
    scenario = load_scenario("large", users=3000)
    assert len(scenario.users) == 3000
    assert scenario.groups[0].licenses == ((E3, frozenset()),)
    assert scenario.name == "large"


async def test_large_members_show_direct_and_inherited(sim_start: SimStarter) -> None:
    sim, _ = await sim_start("large", users=1500, frozen_clock=True)
    group = sim.scenario.wave.group
    assert sim.tenant.group_processing_state(group) == "ProcessingComplete"
    users = list(sim.tenant.users.values())
    assert all(
        [(s["skuId"], s["assignedByGroup"]) for s in sim.tenant.license_states(u.id)] == [(E3, None), (E3, group)]
        for u in users[:50]
    )
    assert sim.tenant.consumed[E3] == 1500
    # Identical assignment sets are shared between users (memory).
    assert users[0].inherited is users[1].inherited
    assert users[0].direct is users[1].direct


def test_outcomes_are_licshifts_decision_values() -> None:
    assert {"remove"} | {r.value for r in SkipReason} | {r.value for r in BlockReason} == OUTCOMES


def test_adversarial_tags_every_outcome() -> None:
    scenario = load_scenario("adversarial")
    main, slow, union = scenario.waves
    tagged = set(main.expected.values()) | set(main.expected_identical.values()) | set(slow.expected.values())
    tagged |= set(union.expected.values())
    assert tagged == OUTCOMES
    wave_users = {
        m
        for m in next(g for g in scenario.groups if g.id == main.group).members
        if any(u.id == m for u in scenario.users)
    }
    assert set(main.expected) | set(main.timing_dependent) == wave_users
    assert scenario.expected is main.expected
    assert main.selection.kind == "users"
    assert scenario.id("not-selected") not in main.selection.users


def to_states(user: Any) -> list[LicenseAssignmentState]:
    return [
        LicenseAssignmentState(
            sku_id=str(s.sku_id).lower(),
            assigned_by_group=s.assigned_by_group.lower() if s.assigned_by_group else None,
            disabled_plans=frozenset(str(p).lower() for p in s.disabled_plans or []),
            state=s.state or "",
            error=normalise_error(s.error),
        )
        for s in user.license_assignment_states or []
    ]


def outcome(decision: Remove | Skip | Block) -> str:
    return "remove" if isinstance(decision, Remove) else decision.reason.value


async def decide_wave(
    client: GraphServiceClient, scenario: Scenario, index: int, sku: Sku, policy: Policy
) -> dict[str, str]:
    wave = scenario.waves[index]
    group = await client.groups.by_group_id(wave.group).get(
        RequestConfiguration(
            query_parameters=GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
                select=["id", "licenseProcessingState"]
            )
        )
    )
    assert group is not None
    assert group.license_processing_state is not None
    processing_state = group.license_processing_state.state or ""
    # What the remover passes: the processing state of every group (the relied-on ones among them).
    groups = await client.groups.get(
        RequestConfiguration(
            query_parameters=GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                select=["id", "licenseProcessingState"], top=999
            )
        )
    )
    assert groups is not None
    group_states = {
        str(g.id): g.license_processing_state.state or "" for g in groups.value or [] if g.license_processing_state
    }
    config = RequestConfiguration(
        query_parameters=GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(
            select=["id", "userPrincipalName", "licenseAssignmentStates"], top=999
        )
    )
    page = await client.groups.by_group_id(wave.group).members.graph_user.get(config)
    out: dict[str, str] = {}
    while page is not None:
        for user in page.value or []:
            selected = wave.selection.kind == "all" or user.id in wave.selection.users
            decision = decide(
                to_states(user),
                sku,
                wave.group,
                policy,
                selected=selected,
                group_processing_state=processing_state,
                group_states=group_states,
            )
            out[user.id] = outcome(decision)
        if not page.odata_next_link:
            break
        page = await client.groups.by_group_id(wave.group).members.graph_user.with_url(page.odata_next_link).get()
    return out


async def test_adversarial_expected_matches_licshifts_decision_on_what_is_served(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=6, frozen_clock=True)
    scenario = sim.scenario
    skus = await client.subscribed_skus.get()
    assert skus is not None
    e3 = next(s for s in skus.value or [] if str(s.sku_id) == E3)
    sku = Sku(
        E3,
        "ENTERPRISEPACK",
        tuple(ServicePlan(str(p.service_plan_id), p.service_plan_name or "") for p in e3.service_plans or []),
    )
    for policy, attr in ((Policy.NO_LOSS, "expected"), (Policy.IDENTICAL, "expected_identical")):
        for index, wave in enumerate(scenario.waves):
            decided = await decide_wave(client, scenario, index, sku, policy)
            expected = getattr(wave, attr)
            assert {u: decided[u] for u in expected} == dict(expected), (wave.name, policy)
            for user, allowed in wave.timing_dependent.items():
                assert decided[user] in allowed
    # After the timed removals (45 s and 60 s) and their processing, the leavers are gone from the group.
    sim.advance(120)
    after = await decide_wave(client, scenario, 0, sku, Policy.NO_LOSS)
    assert not set(scenario.waves[0].timing_dependent) & set(after)
    # Leaving the group costs them EMS (only that group gave it): a loss the scenario caused.
    leavers = set(scenario.waves[0].timing_dependent)
    assert {(loss.user_id, loss.sku_id, loss.source) for loss in sim.oracle.losses} == {
        (user, "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "scenario") for user in leavers
    }
    assert sim.tenant.events_applied == 2


def test_scenario_files_json_and_yaml(tmp_path: Path) -> None:
    doc = {
        "name": "from-file",
        "skus": [{"catalog": "ENTERPRISEPACK", "seats": 3}],
        "users": [{"key": "ann", "direct": [{"sku": "ENTERPRISEPACK", "disabled_plans": ["SWAY"]}]}],
        "groups": [{"key": "g", "name": "G", "members": ["ann"], "licenses": [{"sku": E3}]}],
        "events": [{"at": 5, "action": "remove_member", "group": "g", "member": "ann"}],
        "waves": [{"group": "g", "skus": ["ENTERPRISEPACK"], "expected": {"*": "remove"}}],
    }
    as_json = tmp_path / "tenant.json"
    as_json.write_text(json.dumps(doc))
    as_yaml = tmp_path / "tenant.yaml"
    as_yaml.write_text(yaml.safe_dump(doc))
    a, b = load_scenario(as_json), load_scenario(str(as_yaml))
    assert [u.id for u in a.users] == [u.id for u in b.users]
    assert a.expected == {a.id("ann"): "remove"}
    assert a.users[0].direct == ((E3, frozenset({"a23b959c-7ce8-4e57-9140-b90eb88a9e97"})),)
    with pytest.raises(ScenarioError, match="built-in scenarios only"):
        load_scenario(as_json, users=10)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"colour": "blue"}, "unknown field"),
        ({"skus": []}, "at least one SKU"),
        ({"users": [{"key": "x", "direct": [{"sku": "NOPE"}]}]}, "no SKU 'NOPE'"),
        (
            {"users": [{"key": "x", "direct": [{"sku": "ENTERPRISEPACK", "disabled_plans": ["FAXING"]}]}]},
            "no service plan 'FAXING'",
        ),
        ({"users": [{"key": "x", "id": "123"}]}, "must be a GUID"),
        ({"groups": [{"name": "G", "members": ["ghost"]}]}, "no user or group 'ghost'"),
        ({"events": [{"at": 1, "action": "explode"}]}, "unknown action"),
        ({"waves": [{"group": "nope", "skus": [E3]}]}, "no group 'nope'"),
        (
            {
                "groups": [{"key": "g", "name": "G"}],
                "waves": [{"group": "g", "skus": [E3], "expected": {"*": "maybe"}}],
            },
            "unknown outcome 'maybe'",
        ),
    ],
)
def test_bad_documents_are_refused_with_a_clear_message(patch: dict[str, Any], message: str) -> None:
    doc = {"name": "bad", "skus": [{"catalog": "ENTERPRISEPACK", "seats": 1}], **patch}
    with pytest.raises(ScenarioError, match=message):
        parse(doc)


def test_unknown_scenario_name_lists_the_built_ins() -> None:
    with pytest.raises(ScenarioError, match="adversarial, large, seed-example"):
        load_scenario("no-such-scenario")


async def test_timed_events_happen_at_their_time_with_a_scenario_cause(sim_start: SimStarter) -> None:
    doc = {
        "name": "timed",
        "processing": {"queued_seconds": 1, "in_progress_seconds": 1},
        "skus": [{"catalog": "ENTERPRISEPACK", "seats": 3}],
        "users": [{"key": "ann"}],
        "groups": [{"key": "g", "name": "G", "members": ["ann"], "licenses": [{"sku": E3}]}],
        "events": [{"at": 5, "action": "remove_member", "group": "g", "member": "ann"}],
    }
    sim, _ = await sim_start(doc, frozen_clock=True)
    sim.advance(4.9)
    assert sim.tenant.group_processing_state("g") == "ProcessingComplete"
    sim.advance(0.2)
    assert sim.tenant.group_processing_state("g") == "QueuedForProcessing"
    sim.advance(5)
    (loss,) = sim.oracle.losses
    assert loss.cause.startswith("scenario:event:remove_member")
    assert loss.at == 7.0


def test_adversarial_scales_with_users() -> None:
    doc = adversarial(users=100)
    assert sum(1 for u in doc["users"] if u["key"].startswith("plain-")) == 100
    scenario = parse(doc)
    ems = next(seats for sku, seats in scenario.skus if sku.part_number == "EMS")
    assert ems == 100 + 7  # every wave member whose EMS assignment succeeds
