"""Simulator fidelity, licensing: group processing over time, seats, every error mode, nested groups,
and assignLicense's answers, through msgraph-sdk as production uses it. The clock is frozen and moved
with `sim.advance`, so every state change is observed at a known moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.groups.item.assign_license.assign_license_post_request_body import (
    AssignLicensePostRequestBody as GroupAssignBody,
)
from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
from msgraph.generated.models.assigned_license import AssignedLicense
from msgraph.generated.models.license_assignment_state import LicenseAssignmentState
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
    AssignLicensePostRequestBody,
)
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from graphsim import Simulator

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
EXO1 = "4b9405b0-7788-4568-add1-99614e613b69"
AUDIO = "0c266dff-15dd-4b49-8397-2bb16070ed52"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
TEAMS = "57ff2da0-773e-42df-b2af-ffb7a2317929"


def doc(
    users: Sequence[object],
    groups: Sequence[object],
    *,
    seats: dict[str, int] | None = None,
    default_location: str | None = "US",
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    seat_counts = {"ENTERPRISEPACK": 50, "EMS": 50, "EXCHANGESTANDARD": 10, "MCOMEETADV": 10, **(seats or {})}
    return {
        "name": "licensing-fidelity",
        "seed": 11,
        "tenant": {"default_usage_location": default_location},
        "processing": {"queued_seconds": 10, "in_progress_seconds": 20, "per_member_seconds": 0},
        "skus": [{"catalog": part, "seats": n} for part, n in seat_counts.items()],
        "rules": rules
        or {
            "mutually_exclusive": [["EXCHANGE_S_STANDARD", "EXCHANGE_S_ENTERPRISE"]],
            "dependencies": {"MCOMEETADV": ["MCOSTANDARD", "TEAMS1"]},
            "prohibited_locations": {"TEAMS1": ["KP"]},
        },
        "users": users,
        "groups": groups,
    }


STATES = RequestConfiguration(
    query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
        select=["id", "licenseAssignmentStates"]
    )
)
GROUP_STATE = RequestConfiguration(
    query_parameters=GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
        select=["id", "licenseProcessingState", "assignedLicenses"]
    )
)


async def states(client: GraphServiceClient, user_id: str) -> list[LicenseAssignmentState]:
    user = await client.users.by_user_id(user_id).get(STATES)
    assert user is not None
    states: list[LicenseAssignmentState] | None = user.license_assignment_states
    assert states is not None
    return states


async def inherited(client: GraphServiceClient, user_id: str, group_id: str) -> dict[str, tuple[str, str]]:
    """skuId -> (state, error) of the entries the user inherits from group_id."""
    return {
        str(s.sku_id): (s.state or "", s.error or "")
        for s in await states(client, user_id)
        if s.assigned_by_group == group_id
    }


async def processing(client: GraphServiceClient, group_id: str) -> str | None:
    group = await client.groups.by_group_id(group_id).get(GROUP_STATE)
    assert group is not None
    return group.license_processing_state.state if group.license_processing_state else None


async def consumed(client: GraphServiceClient, sku_id: str) -> int:
    skus = await client.subscribed_skus.get()
    assert skus is not None
    assert skus.value is not None
    return next(s.consumed_units for s in skus.value if str(s.sku_id) == sku_id) or 0


def lic(sku: str, *disabled: str) -> AssignedLicense:
    return AssignedLicense(sku_id=uuid.UUID(sku), disabled_plans=[uuid.UUID(p) for p in disabled])


async def assign_group(client: GraphServiceClient, group_id: str, *licenses: AssignedLicense) -> None:
    await client.groups.by_group_id(group_id).assign_license.post(
        GroupAssignBody(add_licenses=list(licenses), remove_licenses=[])
    )


async def remove_direct(client: GraphServiceClient, user_id: str, sku: str) -> None:
    await client.users.by_user_id(user_id).assign_license.post(
        AssignLicensePostRequestBody(add_licenses=[], remove_licenses=[uuid.UUID(sku)])
    )


# ------------------------------------------------------------------------- processing


async def test_group_assignment_is_processed_over_time_queued_in_progress_complete(sim_start: SimStarter) -> None:
    users = [{"key": f"u{i}", "direct": [{"sku": "ENTERPRISEPACK"}]} for i in range(4)]
    sim, client = await sim_start(
        doc(users, [{"key": "g", "name": "Licensing", "members": [f"u{i}" for i in range(4)]}]), frozen_clock=True
    )
    group = sim.scenario.id("g")
    assert await processing(client, group) is None  # never licensed: Graph answers null

    result = await client.groups.by_group_id(group).assign_license.post(
        GroupAssignBody(add_licenses=[lic(E3, SWAY)], remove_licenses=[])
    )
    assert result is not None
    assert result.id == group
    assert await processing(client, group) == "QueuedForProcessing"
    assert await inherited(client, sim.scenario.id("u0"), group) == {}

    sim.advance(10.5)  # queued 10 s: now running; members are processed one by one over 20 s
    assert await processing(client, group) == "ProcessingInProgress"
    assert await inherited(client, sim.scenario.id("u0"), group) == {}
    sim.advance(5)  # the first of 4 members is due at 10 + 20/4
    assert await inherited(client, sim.scenario.id("u0"), group) == {E3: ("Active", "None")}
    assert await inherited(client, sim.scenario.id("u3"), group) == {}
    assert await processing(client, group) == "ProcessingInProgress"

    sim.advance(15)
    assert await processing(client, group) == "ProcessingComplete"
    for i in range(4):
        entries = [s for s in await states(client, sim.scenario.id(f"u{i}")) if s.assigned_by_group == group]
        assert len(entries) == 1
        assert [str(p) for p in entries[0].disabled_plans or []] == [SWAY]
        assert entries[0].last_updated_date_time == sim.clock.datetime_at(10 + 20 * (i + 1) / 4)


async def test_membership_changes_queue_processing_and_apply_only_when_processed(sim_start: SimStarter) -> None:
    users = [{"key": "in"}, {"key": "newcomer"}]
    groups = [{"key": "g", "name": "G", "members": ["in"], "licenses": [{"sku": "ENTERPRISEPACK"}]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    group, member, newcomer = sim.scenario.id("g"), sim.scenario.id("in"), sim.scenario.id("newcomer")
    assert await processing(client, group) == "ProcessingComplete"

    sim.tenant.add_member(group, newcomer)
    assert await processing(client, group) == "QueuedForProcessing"
    assert await inherited(client, newcomer, group) == {}
    sim.tenant.remove_member(group, member)
    assert await inherited(client, member, group) == {E3: ("Active", "None")}  # until processed
    sim.advance(31)
    assert await processing(client, group) == "ProcessingComplete"
    assert await inherited(client, newcomer, group) == {E3: ("Active", "None")}
    assert await inherited(client, member, group) == {}
    assert [loss.cause.split(" ")[0] for loss in sim.oracle.losses] == ["scenario:remove_member"]


def disabled_by(entries: list[LicenseAssignmentState], group_id: str) -> list[str]:
    (entry,) = [s for s in entries if s.assigned_by_group == group_id]
    return sorted(str(p) for p in entry.disabled_plans or [])


async def test_changed_options_show_on_members_only_when_processing_reaches_them(sim_start: SimStarter) -> None:
    # The moment the union-safety rule guards: the group reads not complete, members still show the
    # old options (a read cannot see the coming loss), and each loses the plan when its turn comes.
    users = [{"key": f"u{i}"} for i in range(2)]
    groups = [{"key": "g", "name": "G", "members": ["u0", "u1"], "licenses": [{"sku": "ENTERPRISEPACK"}]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    group, u0, u1 = sim.scenario.id("g"), sim.scenario.id("u0"), sim.scenario.id("u1")

    sim.tenant.set_group_license(group, "ENTERPRISEPACK", ["SWAY"])
    assert await processing(client, group) == "QueuedForProcessing"
    assert disabled_by(await states(client, u0), group) == []
    sim.advance(20.5)  # queued 10 s, then 2 members over 20 s: u0 is done, u1 not yet
    assert await processing(client, group) == "ProcessingInProgress"
    assert disabled_by(await states(client, u0), group) == [SWAY]
    assert disabled_by(await states(client, u1), group) == []
    sim.advance(10)
    assert await processing(client, group) == "ProcessingComplete"
    assert disabled_by(await states(client, u1), group) == [SWAY]
    assert sorted((loss.user_id, loss.cause.split(" ")[0]) for loss in sim.oracle.losses) == sorted(
        [(u0, "scenario:set_group_license"), (u1, "scenario:set_group_license")]
    )


async def test_a_group_can_start_with_options_changed_and_members_lagging(sim_start: SimStarter) -> None:
    groups = [
        {
            "key": "g",
            "name": "G",
            "members": ["u"],
            "licenses": [{"sku": "ENTERPRISEPACK", "disabled_plans": ["SWAY"]}],
            "initial": "changed",
            "previous_licenses": [{"sku": "ENTERPRISEPACK"}],
        }
    ]
    sim, client = await sim_start(doc([{"key": "u"}], groups), frozen_clock=True)
    group, user = sim.scenario.id("g"), sim.scenario.id("u")
    assert await processing(client, group) == "QueuedForProcessing"
    assert disabled_by(await states(client, user), group) == []
    sim.advance(31)
    assert await processing(client, group) == "ProcessingComplete"
    assert disabled_by(await states(client, user), group) == [SWAY]


async def test_nested_group_members_get_nothing_through_the_parent(sim_start: SimStarter) -> None:
    users = [{"key": "direct-member"}, {"key": "nested-member"}]
    groups = [
        {"key": "inner", "name": "Inner", "members": ["nested-member"]},
        {"key": "outer", "name": "Outer", "members": ["direct-member", "inner"], "licenses": [{"sku": "EMS"}]},
    ]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    outer = sim.scenario.id("outer")
    assert await inherited(client, sim.scenario.id("direct-member"), outer) == {EMS: ("Active", "None")}
    assert await states(client, sim.scenario.id("nested-member")) == []
    await assign_group(client, outer, lic(EMS), lic(E3))
    sim.advance(31)
    assert await states(client, sim.scenario.id("nested-member")) == []
    assert await consumed(client, EMS) == 1


# ------------------------------------------------------------------------------- seats


async def test_same_sku_direct_and_inherited_takes_one_seat(sim_start: SimStarter) -> None:
    users = [{"key": "both", "direct": [{"sku": "ENTERPRISEPACK"}]}, {"key": "group-only"}]
    groups = [{"key": "g", "name": "G", "members": ["both", "group-only"]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    assert await consumed(client, E3) == 1
    await assign_group(client, sim.scenario.id("g"), lic(E3))
    sim.advance(31)
    assert await consumed(client, E3) == 2  # "both" still one seat; "group-only" took one
    await remove_direct(client, sim.scenario.id("both"), E3)
    assert await consumed(client, E3) == 2
    remaining = await states(client, sim.scenario.id("both"))
    assert [(str(s.sku_id), s.assigned_by_group) for s in remaining] == [(E3, sim.scenario.id("g"))]


async def test_count_violation_fails_every_product_of_the_group_for_that_user(sim_start: SimStarter) -> None:
    users = [{"key": f"u{i}", "direct": [{"sku": "ENTERPRISEPACK"}]} for i in range(3)]
    groups = [{"key": "g", "name": "G", "members": ["u0", "u1", "u2"]}]
    sim, client = await sim_start(doc(users, groups, seats={"EMS": 2}), frozen_clock=True)
    group = sim.scenario.id("g")
    await assign_group(client, group, lic(E3, SWAY), lic(EMS))
    sim.advance(31)
    assert await inherited(client, sim.scenario.id("u0"), group) == {E3: ("Active", "None"), EMS: ("Active", "None")}
    third = sim.scenario.id("u2")
    assert await inherited(client, third, group) == {E3: ("Error", "CountViolation"), EMS: ("Error", "CountViolation")}
    assert await consumed(client, EMS) == 2
    errors = await client.groups.by_group_id(group).members_with_license_errors.get()
    assert errors is not None
    assert [m.id for m in errors.value or []] == [third]

    # Free a seat (buy one), then force the user's processing: the error clears.
    sim.tenant.set_seats("EMS", 3)
    await client.users.by_user_id(third).reprocess_license_assignment.post()
    assert await inherited(client, third, group) == {E3: ("Active", "None"), EMS: ("Active", "None")}
    assert await consumed(client, EMS) == 3


async def test_mutually_exclusive_plans(sim_start: SimStarter) -> None:
    users = [{"key": "exo1", "direct": [{"sku": "EXCHANGESTANDARD"}]}, {"key": "plain"}]
    groups = [{"key": "g", "name": "G", "members": ["exo1", "plain"], "licenses": [{"sku": "ENTERPRISEPACK"}]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    group = sim.scenario.id("g")
    assert await inherited(client, sim.scenario.id("exo1"), group) == {E3: ("Error", "MutuallyExclusiveViolation")}
    assert await inherited(client, sim.scenario.id("plain"), group) == {E3: ("Active", "None")}
    assert await consumed(client, E3) == 1


async def test_usage_location_violations(sim_start: SimStarter) -> None:
    users = [{"key": "nowhere", "usage_location": None}, {"key": "kp", "usage_location": "KP"}, {"key": "us"}]
    groups = [{"key": "g", "name": "G", "members": ["nowhere", "kp", "us"], "licenses": [{"sku": "ENTERPRISEPACK"}]}]
    sim, client = await sim_start(doc(users, groups, default_location=None), frozen_clock=True)
    group = sim.scenario.id("g")
    prohibited = {E3: ("Error", "ProhibitedInUsageLocationViolation")}
    assert await inherited(client, sim.scenario.id("nowhere"), group) == prohibited
    assert await inherited(client, sim.scenario.id("kp"), group) == prohibited  # TEAMS1 is not allowed in KP
    assert await inherited(client, sim.scenario.id("us"), group) == {E3: ("Active", "None")}

    # A group assignment that leaves the prohibited plan out is fine in KP.
    await assign_group(client, group, lic(E3, TEAMS))
    sim.advance(31)
    assert await inherited(client, sim.scenario.id("kp"), group) == {E3: ("Active", "None")}
    # With a tenant default location, users without one are licensed by groups.
    sim2, client2 = await sim_start(doc(users, groups, default_location="US"), frozen_clock=True)
    assert await inherited(client2, sim2.scenario.id("nowhere"), sim2.scenario.id("g")) == {E3: ("Active", "None")}


async def test_dependency_violation(sim_start: SimStarter) -> None:
    users = [{"key": "has-e3", "direct": [{"sku": "ENTERPRISEPACK"}]}, {"key": "bare"}]
    groups = [{"key": "audio", "name": "Audio", "members": ["has-e3", "bare"], "licenses": [{"sku": "MCOMEETADV"}]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    group = sim.scenario.id("audio")
    assert await inherited(client, sim.scenario.id("has-e3"), group) == {AUDIO: ("Active", "None")}
    assert await inherited(client, sim.scenario.id("bare"), group) == {AUDIO: ("Error", "DependencyViolation")}
    # Removing the plan the add-on depends on is refused on the user.
    with pytest.raises(ODataError) as raised:
        await remove_direct(client, sim.scenario.id("has-e3"), E3)
    assert raised.value.response_status_code == 400
    assert (raised.value.error.message or "").startswith(
        "License assignment failed because service plan 3e26ee1f-8a5f-4d52-aee2-b81ce45c8f40 depends on"
    )


async def test_stuck_member_is_fixed_by_reprocessing(sim_start: SimStarter) -> None:
    users = [{"key": "stuck", "direct": [{"sku": "ENTERPRISEPACK"}]}]
    groups = [
        {"key": "g", "name": "G", "members": ["stuck"], "licenses": [{"sku": "ENTERPRISEPACK"}], "stuck": ["stuck"]}
    ]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    user, group = sim.scenario.id("stuck"), sim.scenario.id("g")
    assert await processing(client, group) == "ProcessingComplete"
    assert await inherited(client, user, group) == {}
    answer = await client.users.by_user_id(user).reprocess_license_assignment.post()
    assert answer is not None
    assert answer.id == user
    assert await inherited(client, user, group) == {E3: ("Active", "None")}


# ------------------------------------------------------------------------ assignLicense


async def test_remove_inherited_only_license_is_refused(sim_start: SimStarter) -> None:
    users = [{"key": "inherits"}]
    groups = [{"key": "g", "name": "G", "members": ["inherits"], "licenses": [{"sku": "ENTERPRISEPACK"}]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    with pytest.raises(ODataError) as raised:
        await remove_direct(client, sim.scenario.id("inherits"), E3)
    assert raised.value.response_status_code == 400
    assert raised.value.error.code == "Request_BadRequest"
    assert raised.value.error.message == (
        "User license is inherited from a group membership and it cannot be removed directly from the user."
    )


async def test_remove_license_not_assigned_is_refused(sim_start: SimStarter) -> None:
    sim, client = await sim_start(doc([{"key": "nobody"}], []), frozen_clock=True)
    with pytest.raises(ODataError) as raised:
        await remove_direct(client, sim.scenario.id("nobody"), E3)
    assert raised.value.response_status_code == 400
    assert raised.value.error.code == "Request_BadRequest"
    assert raised.value.error.message == "User does not have a corresponding license."


async def test_missing_add_licenses_is_refused_with_graphs_message(sim_start: SimStarter) -> None:
    sim, client = await sim_start(doc([{"key": "u", "direct": [{"sku": "ENTERPRISEPACK"}]}], []), frozen_clock=True)
    body = AssignLicensePostRequestBody(remove_licenses=[uuid.UUID(E3)])  # add_licenses None: omitted
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(sim.scenario.id("u")).assign_license.post(body)
    assert raised.value.response_status_code == 400
    assert raised.value.error.message == (
        "One or more parameters of the operation 'assignLicense' are missing from the request payload. "
        "The missing parameters are: addLicenses."
    )
    assert any(d.sku_id == E3 for d in sim.tenant.user("u").direct), "nothing changed"


async def test_remove_direct_while_inherited_keeps_the_inherited_one_and_answers_the_user(
    sim_start: SimStarter,
) -> None:
    users = [{"key": "u", "direct": [{"sku": "ENTERPRISEPACK"}]}]
    groups = [{"key": "g", "name": "G", "members": ["u"], "licenses": [{"sku": "ENTERPRISEPACK"}]}]
    sim, client = await sim_start(doc(users, groups), frozen_clock=True)
    answer = await client.users.by_user_id(sim.scenario.id("u")).assign_license.post(
        AssignLicensePostRequestBody(add_licenses=[], remove_licenses=[uuid.UUID(E3)])
    )
    assert answer is not None
    assert answer.id == sim.scenario.id("u")
    assert answer.user_principal_name
    left = await states(client, sim.scenario.id("u"))
    assert [(str(s.sku_id), s.assigned_by_group, s.state) for s in left] == [(E3, sim.scenario.id("g"), "Active")]
    assert sim.oracle.losses == []


async def test_add_errors_unknown_sku_no_location_no_seats(sim_start: SimStarter) -> None:
    users = [{"key": "u"}, {"key": "nowhere", "usage_location": None}, {"key": "taken", "direct": [{"sku": "EMS"}]}]
    sim, client = await sim_start(doc(users, [], seats={"EMS": 1}), frozen_clock=True)
    cases = [
        ("u", str(uuid.UUID(int=7)), f"License {uuid.UUID(int=7)} does not correspond to a valid company License."),
        ("nowhere", E3, "License assignment cannot be done for user with invalid usage location."),
        ("u", EMS, f"Subscription with SKU {EMS} does not have any available licenses."),
    ]
    for key, sku, message in cases:
        with pytest.raises(ODataError) as raised:
            await client.users.by_user_id(sim.scenario.id(key)).assign_license.post(
                AssignLicensePostRequestBody(add_licenses=[lic(sku)], remove_licenses=[])
            )
        assert raised.value.response_status_code == 400
        assert raised.value.error.code == "Request_BadRequest"
        assert raised.value.error.message == message
    # A conflicting plan is refused on direct assignment too.
    await client.users.by_user_id(sim.scenario.id("u")).assign_license.post(
        AssignLicensePostRequestBody(add_licenses=[lic(EXO1)], remove_licenses=[])
    )
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(sim.scenario.id("u")).assign_license.post(
            AssignLicensePostRequestBody(add_licenses=[lic(E3)], remove_licenses=[])
        )
    assert "mutually exclusive" in (raised.value.error.message or "")
    await client.users.by_user_id(sim.scenario.id("u")).assign_license.post(
        AssignLicensePostRequestBody(add_licenses=[lic(E3, "efb87545-963c-4e0d-99df-69c6916d9eb0")], remove_licenses=[])
    )


async def test_wire_level_refusals(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start(doc([{"key": "u", "direct": [{"sku": "ENTERPRISEPACK"}]}], []), frozen_clock=True)
    url = f"{sim.base_url}/users/{sim.scenario.id('u')}/assignLicense"
    good = b'{"addLicenses": [], "removeLicenses": ["%s"]}' % E3.encode()
    no_type = await sim_http.post(url, content=good)
    assert no_type.status_code == 415
    text = await sim_http.post(url, content=good, headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    broken = await sim_http.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert broken.json()["error"]["message"].startswith("Unable to read JSON request payload.")
    bad_guid = await sim_http.post(
        url, json={"addLicenses": [], "removeLicenses": ["6fd2c87f-nope"]}, headers={"Content-Type": "application/json"}
    )
    assert bad_guid.status_code == 400
    assert bad_guid.json()["error"]["code"] == "Request_BadRequest"
    both_missing = await sim_http.post(url, json={}, headers={"Content-Type": "application/json"})
    assert "addLicenses,removeLicenses" in both_missing.json()["error"]["message"]
    assert len(sim.tenant.user("u").direct) == 1, "no refused request changed anything"
    accepted = await sim_http.post(url, content=good, headers={"Content-Type": "application/json; charset=utf-8"})
    assert accepted.status_code == 200
    assert sim.tenant.user("u").direct == ()


async def test_group_assign_license_answers_202_with_location(
    sim_start: SimStarter, sim_http: httpx.AsyncClient
) -> None:
    sim, _ = await sim_start(doc([{"key": "u"}], [{"key": "g", "name": "G", "members": ["u"]}]), frozen_clock=True)
    group = sim.scenario.id("g")
    response = await sim_http.post(
        f"{sim.base_url}/groups/{group}/assignLicense",
        json={"addLicenses": [{"skuId": E3, "disabledPlans": []}], "removeLicenses": []},
    )
    assert response.status_code == 202
    assert response.headers["Location"].endswith(f"/v1.0/groups/{group}")
    assert response.json()["id"] == group
