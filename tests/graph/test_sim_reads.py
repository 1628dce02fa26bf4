"""Simulator fidelity, reads: paging, $select, $top bounds, $filter, $count, casts, error bodies.
Driven through msgraph-sdk exactly as production builds it (see conftest.py), raw httpx where the
SDK hides what Graph sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph import GraphServiceClient
from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
from msgraph.generated.groups.item.members.graph_user.graph_user_request_builder import GraphUserRequestBuilder
from msgraph.generated.groups.item.members.members_request_builder import MembersRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core.tasks.page_iterator import PageIterator

from graphsim import Simulator

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"


def users_query(**kw: object) -> RequestConfiguration[UsersRequestBuilder.UsersRequestBuilderGetQueryParameters]:
    return RequestConfiguration(query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(**kw))


def member_users_query(
    **kw: object,
) -> RequestConfiguration[GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters]:
    return RequestConfiguration(
        query_parameters=GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(**kw)
    )


async def test_default_page_is_100_and_next_links_are_absolute_to_the_end(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=250)
    first = await client.users.get()
    assert first is not None
    assert first.value is not None
    assert len(first.value) == 100
    link = first.odata_next_link
    assert link is not None
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == sim.base_url.removesuffix("/v1.0")
    assert parts.path == "/v1.0/users"

    seen: list[str] = []

    def collect(user: object) -> bool:
        seen.append(user.id)  # type: ignore[attr-defined]
        return True

    iterator = PageIterator(first, client.request_adapter)
    await iterator.iterate(collect)
    assert len(seen) == 250
    assert len(set(seen)) == 250
    assert seen == [u.id for u in sim.scenario.users]


async def test_top_pages_and_keeps_select_in_next_links(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=25)
    group = sim.scenario.wave.group
    config = member_users_query(select=["id", "userPrincipalName", "licenseAssignmentStates"], top=10)
    page = await client.groups.by_group_id(group).members.graph_user.get(config)
    ids: list[str] = []
    pages = 0
    while page is not None:
        pages += 1
        assert page.value is not None
        for user in page.value:
            ids.append(user.id)
            assert user.license_assignment_states is not None
        if not page.odata_next_link:
            break
        assert "$select=id,userPrincipalName,licenseAssignmentStates" in page.odata_next_link
        assert "/members/microsoft.graph.user" in page.odata_next_link
        page = await client.groups.by_group_id(group).members.graph_user.with_url(page.odata_next_link).get()
    assert pages == 3
    assert sorted(ids) == sorted(u.id for u in sim.scenario.users)


@pytest.mark.parametrize("top", [0, 1000, -1])
async def test_top_outside_1_to_999_is_refused_like_graph(sim_start: SimStarter, top: int) -> None:
    _, client = await sim_start("seed-example", users=5)
    with pytest.raises(ODataError) as raised:
        await client.users.get(users_query(top=top))
    assert raised.value.response_status_code == 400
    assert raised.value.error.code == "Request_UnsupportedQuery"
    assert raised.value.error.message == (f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.")


async def test_top_999_is_accepted(sim_start: SimStarter) -> None:
    _, client = await sim_start("seed-example", users=5)
    page = await client.users.get(users_query(top=999))
    assert page is not None
    assert page.value is not None
    assert len(page.value) == 5
    assert page.odata_next_link is None


async def test_license_properties_come_only_on_select(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=3)
    user_id = sim.scenario.id("plain-001")
    plain = await client.users.by_user_id(user_id).get()
    assert plain is not None
    assert plain.user_principal_name == f"plain-001@{sim.scenario.domain}"
    assert plain.display_name
    assert plain.license_assignment_states is None
    assert plain.assigned_licenses is None
    assert plain.usage_location is None

    config = RequestConfiguration(
        query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "licenseAssignmentStates", "assignedLicenses", "usageLocation", "assignedPlans"]
        )
    )
    selected = await client.users.by_user_id(user_id).get(config)
    assert selected is not None
    assert selected.user_principal_name is None
    assert selected.usage_location == "US"
    states = selected.license_assignment_states
    assert states is not None
    wave = sim.scenario.wave.group
    by_source = {(str(s.sku_id), s.assigned_by_group) for s in states}
    assert by_source == {(E3, None), (E3, wave), (EMS, wave)}
    for state in states:
        assert state.state == "Active"
        assert state.error == "None"
        assert state.last_updated_date_time is not None
    # assignedLicenses does not tell sources apart: one entry per SKU.
    assert sorted(str(a.sku_id) for a in selected.assigned_licenses or []) == sorted([E3, EMS])
    assert selected.assigned_plans


async def test_group_license_properties_come_only_on_select(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=3)
    wave = sim.scenario.wave.group
    plain = await client.groups.by_group_id(wave).get()
    assert plain is not None
    assert plain.display_name == "Licensing wave: E3 + EMS"
    assert plain.security_enabled is True
    assert plain.license_processing_state is None
    assert plain.assigned_licenses is None

    config = RequestConfiguration(
        query_parameters=GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
            select=["id", "displayName", "assignedLicenses", "licenseProcessingState"]
        )
    )
    selected = await client.groups.by_group_id(wave).get(config)
    assert selected is not None
    assert selected.license_processing_state is not None
    assert selected.license_processing_state.state == "ProcessingComplete"
    assert {str(a.sku_id) for a in selected.assigned_licenses or []} == {E3, EMS}


async def test_processing_state_wire_shape_and_null_for_unlicensed_groups(
    sim_start: SimStarter, sim_http: httpx.AsyncClient
) -> None:
    sim, _ = await sim_start("adversarial", users=3)
    wave = sim.scenario.wave.group
    body = (await sim_http.get(f"{sim.base_url}/groups/{wave}?$select=licenseProcessingState")).json()
    assert body["licenseProcessingState"] == {"state": "ProcessingComplete"}
    nested = sim.scenario.id("nested")
    body = (await sim_http.get(f"{sim.base_url}/groups/{nested}?$select=licenseProcessingState")).json()
    assert body["licenseProcessingState"] is None
    slow = sim.scenario.id("slow")
    body = (await sim_http.get(f"{sim.base_url}/groups/{slow}?$select=id,licenseProcessingState")).json()
    assert body["licenseProcessingState"] == {"state": "QueuedForProcessing"}


async def test_unknown_select_property_is_refused(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=2)
    config = RequestConfiguration(
        query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", "shoeSize"])
    )
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(sim.scenario.users[0].id).get(config)
    assert raised.value.response_status_code == 400
    assert "shoeSize" in (raised.value.error.message or "")


async def test_unknown_user_and_group_answer_graphs_404_body(
    sim_start: SimStarter, sim_http: httpx.AsyncClient
) -> None:
    sim, client = await sim_start("seed-example", users=2)
    missing = str(uuid.uuid4())
    with pytest.raises(ODataError) as raised:
        await client.users.by_user_id(missing).get()
    assert raised.value.response_status_code == 404
    assert raised.value.error.code == "Request_ResourceNotFound"
    assert raised.value.error.message == (
        f"Resource '{missing}' does not exist or one of its queried reference-property objects are not present."
    )
    with pytest.raises(ODataError) as raised:
        await client.groups.by_group_id(missing).get()
    assert raised.value.response_status_code == 404

    response = await sim_http.get(f"{sim.base_url}/users/{missing}", headers={"client-request-id": "abc-123"})
    error = response.json()["error"]
    assert set(error) == {"code", "message", "innerError"}
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    assert error["innerError"]["client-request-id"] == "abc-123"
    assert error["innerError"]["request-id"] == response.headers["request-id"]


async def test_malformed_group_id_is_a_400(sim_start: SimStarter) -> None:
    _, client = await sim_start("seed-example", users=2)
    with pytest.raises(ODataError) as raised:
        await client.groups.by_group_id("not-a-guid").get()
    assert raised.value.response_status_code == 400
    assert raised.value.error.code == "Request_BadRequest"
    assert raised.value.error.message == "Invalid object identifier 'not-a-guid'."


async def test_users_are_found_by_upn_and_double_slashes_are_accepted(
    sim_start: SimStarter, sim_http: httpx.AsyncClient
) -> None:
    sim, client = await sim_start("seed-example", users=3)
    spec = sim.scenario.users[1]
    by_upn = await client.users.by_user_id(spec.upn.upper()).get()
    assert by_upn is not None
    assert by_upn.id == spec.id
    response = await sim_http.get(sim.base_url + "//users/" + spec.id + "?$select=id")
    assert response.status_code == 200
    assert response.json()["id"] == spec.id


async def test_members_cast_accepts_both_spellings_and_plain_members_include_groups(
    sim_start: SimStarter, sim_http: httpx.AsyncClient
) -> None:
    sim, client = await sim_start("adversarial", users=3)
    wave = sim.scenario.wave.group
    for cast in ("graph.user", "microsoft.graph.user"):
        body = (await sim_http.get(f"{sim.base_url}/groups/{wave}/members/{cast}?$select=id&$top=999")).json()
        ids = {item["id"] for item in body["value"]}
        assert sim.scenario.id("nested") not in ids
        assert sim.scenario.id("plain-001") in ids
    config = RequestConfiguration(
        query_parameters=MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(top=999)
    )
    members = await client.groups.by_group_id(wave).members.get(config)
    assert members is not None
    assert members.value is not None
    kinds = {m.id: m.odata_type for m in members.value}
    assert kinds[sim.scenario.id("nested")] == "#microsoft.graph.group"
    assert kinds[sim.scenario.id("plain-001")] == "#microsoft.graph.user"
    # Nested members are not members of the parent: they are not listed.
    assert sim.scenario.id("nested-1") not in kinds


async def test_members_with_license_errors(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=3)
    wave = sim.scenario.wave.group
    page = await client.groups.by_group_id(wave).members_with_license_errors.get()
    assert page is not None
    assert page.value is not None
    ids = {m.id for m in page.value}
    keys = ["mutex", "kp-location", "no-location", "count-1", "count-2"]
    assert ids == {sim.scenario.id(k) for k in keys}


async def test_filter_on_assigned_licenses_for_users_and_groups(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=3)
    users = await client.users.get(
        users_query(filter=f"assignedLicenses/any(a:a/skuId eq {EMS})", select=["id"], top=999)
    )
    assert users is not None
    assert users.value is not None
    with_ems = {u.id for u in users.value}
    assert sim.scenario.id("plain-001") in with_ems
    assert sim.scenario.id("count-1") not in with_ems  # its EMS entry is in error: not assigned
    assert sim.scenario.id("audio-ok") not in with_ems

    groups = await client.groups.get(
        RequestConfiguration(
            query_parameters=GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                filter=f"assignedLicenses/any(x:x/skuId eq {EMS})", select=["id", "displayName"]
            )
        )
    )
    assert groups is not None
    assert groups.value is not None
    assert [g.id for g in groups.value] == [sim.scenario.wave.group]


async def test_filter_id_in_list(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=10)
    wanted = [sim.scenario.users[2].id, sim.scenario.users[7].id]
    found = await client.users.get(users_query(filter="id in ('{}','{}')".format(*wanted), select=["id"]))
    assert found is not None
    assert found.value is not None
    assert sorted(u.id for u in found.value) == sorted(wanted)


@pytest.mark.parametrize(
    "clause",
    [
        "startswith(displayName,'a')",
        "assignedPlans/any(a:a/servicePlanId eq 57ff2da0-773e-42df-b2af-ffb7a2317929)",
        "jobTitle eq 'x' or id eq 'y'",
    ],
)
async def test_unsupported_filter_is_request_unsupported_query(sim_start: SimStarter, clause: str) -> None:
    _, client = await sim_start("seed-example", users=2)
    with pytest.raises(ODataError) as raised:
        await client.users.get(users_query(filter=clause))
    assert raised.value.response_status_code == 400
    assert raised.value.error.code == "Request_UnsupportedQuery"


async def test_filtering_members_needs_advanced_query(sim_start: SimStarter) -> None:
    sim, client = await sim_start("seed-example", users=5)
    group = sim.scenario.wave.group
    clause = f"id in ('{sim.scenario.users[0].id}')"
    with pytest.raises(ODataError) as raised:
        await client.groups.by_group_id(group).members.graph_user.get(member_users_query(filter=clause))
    assert raised.value.error.code == "Request_UnsupportedQuery"

    headers = HeadersCollection()
    headers.add("ConsistencyLevel", "eventual")
    config = RequestConfiguration(
        headers=headers,
        query_parameters=GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(filter=clause, count=True),
    )
    page = await client.groups.by_group_id(group).members.graph_user.get(config)
    assert page is not None
    assert page.value is not None
    assert [u.id for u in page.value] == [sim.scenario.users[0].id]
    assert page.odata_count == 1


async def test_count_needs_consistency_level(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=7)
    refused = await sim_http.get(f"{sim.base_url}/users/$count")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "$count is not currently supported."
    counted = await sim_http.get(f"{sim.base_url}/users/$count", headers={"ConsistencyLevel": "eventual"})
    assert counted.text == "7"
    ignored = (await sim_http.get(f"{sim.base_url}/users?$count=true&$top=2")).json()
    assert "@odata.count" not in ignored
    with_count = (
        await sim_http.get(f"{sim.base_url}/users?$count=true&$top=2", headers={"ConsistencyLevel": "eventual"})
    ).json()
    assert with_count["@odata.count"] == 7
    second = (await sim_http.get(with_count["@odata.nextLink"])).json()
    assert "@odata.count" not in second


async def test_subscribed_skus_count_one_seat_per_user_and_sku(sim_start: SimStarter) -> None:
    sim, client = await sim_start("adversarial", users=3)
    skus = await client.subscribed_skus.get()
    assert skus is not None
    assert skus.value is not None
    by_part = {s.sku_part_number: s for s in skus.value}
    e3 = by_part["ENTERPRISEPACK"]
    assert str(e3.sku_id) == E3
    assert e3.applies_to == "User"
    names = {p.service_plan_name for p in e3.service_plans or []}
    assert {
        "EXCHANGE_S_ENTERPRISE",
        "SHAREPOINTENTERPRISE",
        "OFFICESUBSCRIPTION",
        "MCOSTANDARD",
        "TEAMS1",
        "SWAY",
    } <= names
    # Everyone with E3 from any source(s), counted once: direct + inherited is one seat.
    holders = [u for u in sim.tenant.users.values() if E3 in sim.tenant.effective(u)]
    assert e3.consumed_units == len(holders)
    both = [
        u
        for u in holders
        if any(d.sku_id == E3 for d in u.direct) and any(e.sku_id == E3 and e.providing for e in u.inherited)
    ]
    assert len(both) > 3
    ems = by_part["EMS"]
    assert ems.prepaid_units is not None
    assert ems.consumed_units == ems.prepaid_units.enabled  # the seat shortage of the scenario


async def test_subscribed_skus_refuses_filters(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=2)
    response = await sim_http.get(f"{sim.base_url}/subscribedSkus?$filter=skuPartNumber eq 'ENTERPRISEPACK'")
    assert response.status_code == 400


async def test_expired_or_forged_skiptoken_is_refused(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=5)
    response = await sim_http.get(f"{sim.base_url}/users?$skiptoken=garbage")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "Directory_ExpiredPageToken"
