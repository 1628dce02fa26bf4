"""GraphAdapter against the tenant simulator, over real HTTP on loopback, through msgraph-sdk.

Every test starts its own simulator (a small tenant built from the document below) and an adapter
whose httpx client logs each request it sends, so tests can check what went over the wire ($select,
$top, nextLinks, how many attempts) as well as what came back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from graphsim import FaultRule, Simulator, ThrottleLimits, parse
from licshift.adapters.graph import GraphAdapter
from licshift.ports.graph import (
    InheritedOnly,
    NotAssigned,
    NotFound,
    Throttled,
    TransientGraphError,
    UserLicenses,
)
from licshift.rules.licenses import DirectAssignment, InvalidId, direct_assignment
from licshift.settings import Settings

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
TEAMS = "57ff2da0-773e-42df-b2af-ffb7a2317929"
DOMAIN = "contoso.onmicrosoft.com"
CAROL_UPN = f"carol.king+ops@{DOMAIN}"
MISSING = "0badc0de-0000-4000-8000-000000000000"
USER_SELECT = "$select=id,userPrincipalName,displayName,licenseAssignmentStates"


def tenant_doc(*, bulk: int = 0) -> dict[str, Any]:
    """alice: direct E3 (SWAY off) + inherited from `lic`; bob: inherited only; carol: direct only,
    odd UPN; dave: nothing (and only in the nested group); erin: inherited in error (CountViolation)."""
    users: list[dict[str, Any]] = [
        {"key": "alice", "direct": [{"sku": "ENTERPRISEPACK", "disabled_plans": ["SWAY"]}]},
        {"key": "bob"},
        {"key": "carol", "upn": CAROL_UPN, "direct": [{"sku": "ENTERPRISEPACK"}]},
        {"key": "dave"},
        {"key": "erin"},
    ]
    lic_members = ["alice", "bob", "erin", "nested"]
    if bulk:
        users.append({"generate": {"count": bulk, "prefix": "bulk", "name": "bulk", "direct": [{"sku": E3}]}})
        lic_members = ["alice", "bob", "erin", "@population:bulk", "nested"]
    return {
        "name": "adapter-tests",
        "seed": 7,
        "tenant": {"domain": DOMAIN},
        "processing": {"queued_seconds": 1000, "in_progress_seconds": 1000, "per_member_seconds": 0},
        "skus": [{"catalog": "ENTERPRISEPACK", "seats": 5000}, {"catalog": "EMS", "seats": 10}],
        "users": users,
        "groups": [
            {"key": "nested", "name": "Nested", "members": ["dave"]},
            {
                "key": "lic",
                "name": "Licensing E3",
                "members": lic_members,
                "licenses": [{"sku": "ENTERPRISEPACK", "disabled_plans": ["TEAMS1"]}],
                "forced": [{"user": "erin", "sku": "ENTERPRISEPACK", "state": "Error", "error": "CountViolation"}],
            },
            {"key": "later", "name": "Queued", "members": ["carol"], "licenses": [{"sku": "EMS"}], "initial": "queued"},
        ],
    }


@dataclass
class Rig:
    sim: Simulator
    graph: GraphAdapter
    sent: list[httpx.Request] = field(default_factory=list)

    def id(self, key: str) -> str:
        return self.sim.scenario.id(key)

    @property
    def requests_seen_by_sim(self) -> int:
        return self.sim.counters.total().requests

    def attempts(self, endpoint: str) -> int:
        return self.sim.counters.endpoint(endpoint).requests


@asynccontextmanager
async def running(
    doc: dict[str, Any] | None = None,
    *,
    time_scale: float = 1.0,
    frozen_clock: bool = True,
    throttling: bool | ThrottleLimits = False,
    **adapter_options: Any,
) -> AsyncIterator[Rig]:
    sim = await Simulator.start(
        parse(doc or tenant_doc()), time_scale=time_scale, frozen_clock=frozen_clock, throttling=throttling
    )
    sent: list[httpx.Request] = []

    async def log(request: httpx.Request) -> None:
        sent.append(request)

    options = {"retry_delay": 0.0, **adapter_options}
    graph = GraphAdapter.create(
        sim.base_url, credential=None, http_client=httpx.AsyncClient(event_hooks={"request": [log]}), **options
    )
    try:
        yield Rig(sim, graph, sent)
    finally:
        await graph.aclose()
        await sim.stop()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running() as r:
        yield r


def direct(user: UserLicenses, sku: str = E3) -> DirectAssignment | None:
    return direct_assignment(user.states, sku)


# ------------------------------------------------------------------------------------ reads


async def test_group_license_info_reads_processing_state_and_licenses_with_select(rig: Rig) -> None:
    info = await rig.graph.group_license_info(rig.id("lic"))
    assert info.group_id == rig.id("lic")
    assert info.display_name == "Licensing E3"
    assert info.processing_state == "ProcessingComplete"
    assert info.assigns(E3)
    assert not info.assigns(EMS)
    (assigned,) = info.assigned_licenses
    assert assigned.disabled_plans == frozenset({TEAMS})
    queued = await rig.graph.group_license_info(rig.id("later").upper())
    assert queued.processing_state == "QueuedForProcessing"
    unlicensed = await rig.graph.group_license_info(rig.id("nested"))
    assert (unlicensed.processing_state, unlicensed.assigned_licenses) == (None, ())
    first = rig.sent[0].url
    assert first.path == f"/v1.0/groups/{rig.id('lic')}"
    assert first.params["$select"] == "id,displayName,licenseProcessingState,assignedLicenses"
    assert rig.graph.counters.as_dict() == {"reads": 3, "writes": 0, "throttled": 0}


async def test_user_licenses_by_id_separates_direct_and_inherited_sources(rig: Rig) -> None:
    alice = await rig.graph.user_licenses(rig.id("alice"))
    assert alice.user_id == rig.id("alice")
    assert alice.user_principal_name == f"alice@{DOMAIN}"
    assert alice.display_name, "the display name is read with the licenses (reports name people)"
    assert direct(alice) == DirectAssignment(E3, frozenset({SWAY}))
    (inherited,) = [s for s in alice.states if not s.is_direct]
    assert (inherited.assigned_by_group, inherited.disabled_plans) == (rig.id("lic"), frozenset({TEAMS}))
    assert inherited.is_healthy
    erin = await rig.graph.user_licenses(rig.id("erin"))
    (broken,) = erin.states
    assert (broken.state, broken.error) == ("Error", "CountViolation")
    assert all(r.url.params["$select"] == "id,userPrincipalName,displayName,licenseAssignmentStates" for r in rig.sent)
    assert all("//" not in r.url.path for r in rig.sent)


async def test_user_licenses_by_upn_finds_the_same_user(rig: Rig) -> None:
    carol = await rig.graph.user_licenses(CAROL_UPN)
    assert carol.user_id == rig.id("carol")
    assert carol.user_principal_name == CAROL_UPN
    assert direct(carol) == DirectAssignment(E3, frozenset())
    assert rig.sent[-1].url.raw_path.startswith(b"/v1.0/users/carol.king%2Bops%40contoso.onmicrosoft.com?")


async def test_group_members_pages_by_999_and_follows_next_links_verbatim() -> None:
    async with running(tenant_doc(bulk=2100)) as rig:
        members = rig.graph.group_members(rig.id("lic"))
        first = await anext(members)
        # One page at a time: the second page is not asked for before the first is consumed.
        assert len(rig.sent) == 1
        rest = [m async for m in members]
    users = [first, *rest]
    assert len(users) == 3 + 2100
    assert len({u.user_id for u in users}) == len(users)
    assert rig.id("dave") not in {u.user_id for u in users}  # a member of the nested group only
    assert all(u.states for u in users if u.user_id != rig.id("bob"))
    assert len(rig.sent) == 3
    opening = rig.sent[0].url
    assert opening.path == f"/v1.0/groups/{rig.id('lic')}/members/graph.user"
    assert opening.params["$top"] == "999"
    assert opening.params["$select"] == "id,userPrincipalName,displayName,licenseAssignmentStates"
    assert opening.params["$count"] == "true"
    # The cast is an advanced query: its header must go on every page (Graph does not carry it over).
    assert all(page.headers.get("ConsistencyLevel") == "eventual" for page in rig.sent)
    for page in rig.sent[1:]:
        # The nextLink, as the simulator wrote it: cast name, query and $skiptoken kept.
        assert page.url.path == f"/v1.0/groups/{rig.id('lic')}/members/microsoft.graph.user"
        assert page.url.params["$skiptoken"]
        assert page.url.params["$top"] == "999"
    assert rig.graph.counters.reads == 3
    assert rig.attempts("GET /groups/{id}/members/microsoft.graph.user") == 3


async def test_subscribed_skus_come_with_plan_names(rig: Rig) -> None:
    skus = {s.part_number: s for s in await rig.graph.subscribed_skus()}
    assert set(skus) == {"ENTERPRISEPACK", "EMS"}
    e3 = skus["ENTERPRISEPACK"]
    assert e3.sku_id == E3
    assert e3.plan_name(SWAY) == "SWAY"
    assert e3.plan_name(TEAMS) == "TEAMS1"
    assert rig.sent[0].url.params["$select"] == "skuId,skuPartNumber,servicePlans"


async def test_members_with_license_errors_lists_only_the_broken_member(rig: Rig) -> None:
    ids = [m async for m in rig.graph.members_with_license_errors(rig.id("lic"))]
    assert ids == [rig.id("erin")]
    assert rig.sent[0].url.path == f"/v1.0/groups/{rig.id('lic')}/membersWithLicenseErrors"


async def test_unknown_user_and_group_are_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound, match=MISSING) as user_error:
        await rig.graph.user_licenses(MISSING)
    assert user_error.value.code == "Request_ResourceNotFound"
    with pytest.raises(NotFound, match=MISSING):
        await rig.graph.group_license_info(MISSING)
    with pytest.raises(NotFound):
        [m async for m in rig.graph.group_members(MISSING)]


async def invoke(call: Any, graph: GraphAdapter) -> None:
    """Call an adapter method; await it if it is a coroutine (generators validate when called)."""
    result = call(graph)
    if asyncio.iscoroutine(result):
        await result


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.group_license_info("lic"),
        lambda g: g.group_license_info("00000000-0000-0000-0000-000000000000/members"),
        lambda g: g.user_licenses("o'brien@contoso.com"),
        lambda g: g.user_licenses("../groups"),
        lambda g: g.user_licenses("alice@contoso.onmicrosoft.com?$select=passwordProfile"),
        lambda g: g.remove_direct("alice", E3),
        lambda g: g.remove_direct(MISSING, "ENTERPRISEPACK"),
        lambda g: g.restore_direct(MISSING, DirectAssignment("ENTERPRISEPACK", frozenset())),
        lambda g: g.restore_direct(MISSING, DirectAssignment(E3, frozenset({"SWAY"}))),
        lambda g: g.group_members("lic' or 1 eq 1"),
        lambda g: g.members_with_license_errors("*"),
    ],
)
async def test_invalid_ids_are_rejected_before_any_request(rig: Rig, call: Any) -> None:
    with pytest.raises(InvalidId):
        await invoke(call, rig.graph)
    assert rig.sent == []
    assert rig.requests_seen_by_sim == 0
    assert rig.graph.counters.as_dict() == {"reads": 0, "writes": 0, "throttled": 0}


# ----------------------------------------------------------------------------------- writes


async def test_remove_direct_keeps_the_inherited_assignment(rig: Rig) -> None:
    alice = rig.id("alice")
    await rig.graph.remove_direct(alice, E3)
    after = await rig.graph.user_licenses(alice)
    assert direct(after) is None
    assert [s.assigned_by_group for s in after.states] == [rig.id("lic")]
    post = rig.sent[0]
    assert (post.method, post.url.path) == ("POST", f"/v1.0/users/{alice}/assignLicense")
    assert post.content == f'{{"addLicenses": [], "removeLicenses": ["{E3}"]}}'.encode()
    assert rig.graph.counters.as_dict() == {"reads": 1, "writes": 1, "throttled": 0}


async def test_remove_direct_maps_graphs_refusals(rig: Rig) -> None:
    with pytest.raises(InheritedOnly, match=rig.id("bob")) as inherited:
        await rig.graph.remove_direct(rig.id("bob"), E3)
    assert (inherited.value.status, inherited.value.code) == (400, "Request_BadRequest")
    with pytest.raises(NotAssigned, match=rig.id("dave")):
        await rig.graph.remove_direct(rig.id("dave"), E3)
    with pytest.raises(NotFound, match=MISSING):
        await rig.graph.remove_direct(MISSING, E3)
    # A refused write is not retried.
    assert rig.attempts("POST /users/{id}/assignLicense") == 3


async def test_restore_direct_puts_back_exactly_the_recorded_assignment(rig: Rig) -> None:
    alice = rig.id("alice")
    before = direct(await rig.graph.user_licenses(alice))
    assert before is not None
    await rig.graph.remove_direct(alice, E3)
    await rig.graph.restore_direct(alice, before)
    restored = await rig.graph.user_licenses(alice)
    assert direct(restored) == DirectAssignment(E3, frozenset({SWAY}))
    assert rig.sent[2].content == (
        f'{{"addLicenses": [{{"disabledPlans": ["{SWAY}"], "skuId": "{E3}"}}], "removeLicenses": []}}'.encode()
    )


# ------------------------------------------------------------------------------ throttling


async def test_write_quota_429_raises_throttled_without_a_hot_retry_and_clears_after_retry_after() -> None:
    # 2 writes per 150 sim seconds on a clock 50x faster: the third write must wait up to 3 real seconds.
    limits = ThrottleLimits(app_writes=2)
    async with running(time_scale=0.02, frozen_clock=False, throttling=limits) as rig:
        carol = rig.id("carol")
        await rig.graph.remove_direct(rig.id("alice"), E3)
        await rig.graph.remove_direct(carol, E3)
        with pytest.raises(Throttled, match=carol) as throttled:
            await rig.graph.restore_direct(carol, DirectAssignment(E3, frozenset()))
        assert throttled.value.status == 429
        assert 1.0 <= throttled.value.retry_after <= 3.0
        assert rig.graph.counters.throttled == 1
        assert rig.attempts("POST /users/{id}/assignLicense") == 3  # the 429 was not retried inside
        assert rig.sim.counters.endpoint("POST /users/{id}/assignLicense").throttled_quota == 1
        await asyncio.sleep(throttled.value.retry_after)
        await rig.graph.restore_direct(carol, DirectAssignment(E3, frozenset()))
        assert direct(await rig.graph.user_licenses(carol)) == DirectAssignment(E3, frozenset())
        assert rig.graph.counters.as_dict() == {"reads": 1, "writes": 4, "throttled": 1}


async def test_graphs_limit_percentage_header_is_kept_as_the_peak_usage_until_taken() -> None:
    # 5 writes per window: the 5th write uses 100 % of the quota, the 4th 80 % (not reported: Graph
    # sends x-ms-throttle-limit-percentage only above 80 %).
    limits = ThrottleLimits(app_writes=5)
    async with running(time_scale=1.0, frozen_clock=True, throttling=limits) as rig:
        alice, carol = rig.id("alice"), rig.id("carol")
        assert rig.graph.take_usage() == 0.0
        await rig.graph.remove_direct(alice, E3)
        await rig.graph.restore_direct(alice, DirectAssignment(E3, frozenset({SWAY})))
        await rig.graph.remove_direct(carol, E3)
        await rig.graph.restore_direct(carol, DirectAssignment(E3, frozenset()))
        assert rig.graph.take_usage() == 0.0
        await rig.graph.remove_direct(carol, E3)
        assert rig.graph.take_usage() == 1.0
        assert rig.graph.take_usage() == 0.0, "taken: the next report starts afresh"


async def test_read_429s_are_absorbed_by_the_sdks_retry_handler(rig: Rig) -> None:
    rig.sim.faults.add(FaultRule(kind="read", status=429, count=2, retry_after=1))
    user = await rig.graph.user_licenses(rig.id("alice"))
    assert user.user_id == rig.id("alice")
    assert rig.attempts("GET /users/{id}") == 3
    assert rig.graph.counters.as_dict() == {"reads": 1, "writes": 0, "throttled": 0}


async def test_a_429_storm_beyond_the_sdks_patience_surfaces_as_throttled(rig: Rig) -> None:
    rig.sim.faults.add(FaultRule.storm(retry_after=200, kind="read"))
    with pytest.raises(Throttled, match=rig.id("alice")) as throttled:
        await rig.graph.user_licenses(rig.id("alice"))
    assert throttled.value.retry_after == 200.0
    assert rig.attempts("GET /users/{id}") == 1  # Retry-After >= 180 s: the SDK gives up at once


async def test_a_429_whose_write_happened_then_reads_as_done(rig: Rig) -> None:
    alice = rig.id("alice")
    rig.sim.faults.add(FaultRule.write_then_429(retry_after=1, count=1))
    with pytest.raises(Throttled):
        await rig.graph.remove_direct(alice, E3)
    assert rig.attempts("POST /users/{id}/assignLicense") == 1
    # The worker re-reads before trying again: the removal is already there ...
    assert direct(await rig.graph.user_licenses(alice)) is None
    # ... and a blind retry would be refused: alice still inherits E3, so Graph says the license is
    # inherited (not "no corresponding license", which only a user without any E3 source gets).
    with pytest.raises(InheritedOnly):
        await rig.graph.remove_direct(alice, E3)


# -------------------------------------------------------------------------- transient faults


async def test_read_503s_and_504s_are_retried_by_the_sdk() -> None:
    async with running(max_read_retries=3) as rig:
        rig.sim.faults.add(FaultRule(kind="read", status=503, count=1, retry_after=None))
        rig.sim.faults.add(FaultRule(kind="read", status=504, count=1, retry_after=1))
        user = await rig.graph.user_licenses(rig.id("bob"))
        assert user.user_id == rig.id("bob")
        assert rig.attempts("GET /users/{id}") == 3
        assert rig.graph.counters.reads == 1


async def test_persistent_5xx_on_reads_becomes_transient_after_the_retries() -> None:
    async with running(max_read_retries=1) as rig:
        rig.sim.faults.add(FaultRule(kind="read", status=504, retry_after=None))
        with pytest.raises(TransientGraphError, match=rig.id("lic")) as transient:
            await rig.graph.group_license_info(rig.id("lic"))
        assert type(transient.value) is TransientGraphError
        assert (transient.value.status, transient.value.code) == (504, "gatewayTimeout")
        assert rig.attempts("GET /groups/{id}") == 2


async def test_persistent_503_with_retry_after_is_throttling_not_failure() -> None:
    async with running(max_read_retries=1) as rig:
        rig.sim.faults.add(FaultRule(kind="read", status=503, retry_after=1))
        with pytest.raises(Throttled) as throttled:
            await rig.graph.user_licenses(rig.id("bob"))
        assert (throttled.value.status, throttled.value.retry_after) == (503, 1.0)
        assert rig.graph.counters.throttled == 1


async def test_writes_are_not_retried_on_503(rig: Rig) -> None:
    rig.sim.faults.add(FaultRule(kind="write", status=503, count=1, retry_after=None))
    with pytest.raises(TransientGraphError):
        await rig.graph.remove_direct(rig.id("alice"), E3)
    assert rig.attempts("POST /users/{id}/assignLicense") == 1
    assert direct(await rig.graph.user_licenses(rig.id("alice"))) is not None
    await rig.graph.remove_direct(rig.id("alice"), E3)
    assert direct(await rig.graph.user_licenses(rig.id("alice"))) is None


async def test_a_dropped_connection_is_transient_and_the_next_call_works(rig: Rig) -> None:
    rig.sim.faults.add(FaultRule.dropped(kind="read", count=1))
    with pytest.raises(TransientGraphError, match="connection to Graph failed"):
        await rig.graph.user_licenses(rig.id("alice"))
    assert (await rig.graph.user_licenses(rig.id("alice"))).user_id == rig.id("alice")


async def test_a_write_dropped_after_it_was_applied_says_to_re_read(rig: Rig) -> None:
    alice = rig.id("alice")
    rig.sim.faults.add(FaultRule.dropped(kind="write", count=1, after_write=True))
    with pytest.raises(TransientGraphError, match="re-read"):
        await rig.graph.remove_direct(alice, E3)
    assert direct(await rig.graph.user_licenses(alice)) is None


# ----------------------------------------------------------------------------- construction


class RecordingCredential:
    """An AsyncTokenCredential that hands out a fixed token and records scopes and closing."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-for-tests", 4_102_444_800)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> RecordingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def test_a_credential_is_used_for_its_endpoint_and_closed_with_the_adapter() -> None:
    sim = await Simulator.start(parse(tenant_doc()), frozen_clock=True, throttling=False)
    sent: list[httpx.Request] = []

    async def log(request: httpx.Request) -> None:
        sent.append(request)

    credential = RecordingCredential()
    try:
        async with GraphAdapter.create(
            sim.base_url + "/", credential=credential, http_client=httpx.AsyncClient(event_hooks={"request": [log]})
        ) as graph:
            assert graph.base_url == sim.base_url
            await graph.user_licenses(sim.scenario.id("bob"))
    finally:
        await sim.stop()
    assert credential.closed
    assert credential.scopes == [("https://127.0.0.1/.default",)]
    assert sent[0].headers["Authorization"] == "Bearer token-for-tests"


async def test_from_settings_is_anonymous_on_loopback_and_uses_an_azure_identity_elsewhere(rig: Rig) -> None:
    async with GraphAdapter.from_settings(Settings(graph_endpoint=rig.sim.base_url)) as local:
        assert (await local.user_licenses(rig.id("bob"))).user_id == rig.id("bob")
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    azure = Settings(graph_endpoint="https://graph.microsoft.com/v1.0", managed_identity_client_id=MISSING)
    worker = GraphAdapter.from_settings(azure)
    cli = GraphAdapter.from_settings(azure, interactive=True)
    try:
        assert isinstance(worker.credential, ManagedIdentityCredential)
        assert isinstance(cli.credential, DefaultAzureCredential)
        assert worker.base_url == "https://graph.microsoft.com/v1.0"
    finally:
        await worker.aclose()
        await cli.aclose()
        await worker.aclose()  # closing twice is harmless


async def test_an_adapter_without_credential_refuses_a_real_graph_endpoint() -> None:
    with pytest.raises(ValueError, match="needs a credential"):
        GraphAdapter.create("https://graph.microsoft.com/v1.0", credential=None)
    with pytest.raises(ValueError, match="https"):
        GraphAdapter.create("http://graph.microsoft.com/v1.0", credential=RecordingCredential())


async def test_nested_groups_are_listed_by_id(rig: Rig) -> None:
    assert [g async for g in rig.graph.nested_groups(rig.id("lic"))] == [rig.id("nested")]
    assert rig.sent[0].url.path == f"/v1.0/groups/{rig.id('lic')}/members"


async def test_sku_holders_are_the_users_with_the_sku_from_any_source(rig: Rig) -> None:
    holders = {u.user_id: u async for u in rig.graph.sku_holders(E3)}
    # erin's license is in error from the group: not assigned, so not in assignedLicenses.
    assert set(holders) == {rig.id(k) for k in ("alice", "bob", "carol")}
    assert direct_assignment(holders[rig.id("carol")].states, E3) is not None
    assert holders[rig.id("carol")].user_principal_name == CAROL_UPN
    assert rig.sent[0].url.params["$filter"] == f"assignedLicenses/any(x:x/skuId eq {E3})"
    assert [u async for u in rig.graph.sku_holders(EMS)] == []


# ------------------------------------------------------------------------------ reprocessing


def seats_doc() -> dict[str, Any]:
    """ivan and judy hold E3 directly; "Bundle" adds EMS (one seat): whoever is processed second is in
    CountViolation on both of the group's SKUs (Entra fails the whole group assignment)."""
    return {
        "name": "reprocess-tests",
        "seed": 7,
        "tenant": {"domain": DOMAIN},
        "skus": [{"catalog": "ENTERPRISEPACK", "seats": 10}, {"catalog": "EMS", "seats": 1}],
        "users": [
            {"key": "ivan", "direct": [{"sku": "ENTERPRISEPACK"}]},
            {"key": "judy", "direct": [{"sku": "ENTERPRISEPACK"}]},
        ],
        "groups": [
            {
                "key": "bundle",
                "name": "Bundle",
                "members": ["ivan", "judy"],
                "licenses": [{"sku": "ENTERPRISEPACK"}, {"sku": "EMS"}],
            }
        ],
    }


def errors(user: UserLicenses) -> set[tuple[str, str | None]]:
    return {(s.sku_id, s.error) for s in user.states if s.assigned_by_group and s.error}


async def test_reprocess_clears_a_count_violation_once_a_seat_is_free() -> None:
    async with running(seats_doc()) as rig:
        users = [await rig.graph.user_licenses(rig.id(k)) for k in ("ivan", "judy")]
        blocked = [u for u in users if errors(u)]
        assert len(blocked) == 1, "one seat of EMS: one member is in error"
        victim = blocked[0].user_id
        assert errors(blocked[0]) == {(E3, "CountViolation"), (EMS, "CountViolation")}

        await rig.graph.reprocess_license_assignment(victim)  # no seat yet: the error stays
        assert errors(await rig.graph.user_licenses(victim)) == {(E3, "CountViolation"), (EMS, "CountViolation")}

        rig.sim.tenant.set_seats("EMS", 2)
        assert errors(await rig.graph.user_licenses(victim)), "freeing seats alone reprocesses nobody"
        await rig.graph.reprocess_license_assignment(victim)
        after = await rig.graph.user_licenses(victim)
        assert errors(after) == set()
        assert {(s.sku_id, s.state) for s in after.states if s.assigned_by_group} == {(E3, "Active"), (EMS, "Active")}
        assert direct(after) is not None, "reprocessing never touches the direct assignment"

        posts = [r for r in rig.sent if r.method == "POST"]
        assert [r.url.path for r in posts] == [f"/v1.0/users/{victim}/reprocessLicenseAssignment"] * 2
        assert all(r.content == b"" for r in posts)
        assert rig.sim.counters.endpoint("POST /users/{id}/reprocessLicenseAssignment").writes == 2
        assert rig.graph.counters.writes == 2


async def test_reprocess_maps_a_missing_user_and_refuses_a_bad_id_before_sending(rig: Rig) -> None:
    with pytest.raises(NotFound, match=MISSING):
        await rig.graph.reprocess_license_assignment(MISSING)
    with pytest.raises(InvalidId):
        await rig.graph.reprocess_license_assignment(f"{MISSING}/assignLicense")
    assert len(rig.sent) == 1


async def test_a_throttled_reprocess_is_not_retried_inside_the_adapter() -> None:
    async with running(
        seats_doc(), time_scale=0.02, frozen_clock=False, throttling=ThrottleLimits(app_writes=1)
    ) as rig:
        ivan = rig.id("ivan")
        await rig.graph.reprocess_license_assignment(ivan)
        with pytest.raises(Throttled) as throttled:
            await rig.graph.reprocess_license_assignment(ivan)
        assert throttled.value.retry_after >= 1.0
        assert rig.attempts("POST /users/{id}/reprocessLicenseAssignment") == 2
