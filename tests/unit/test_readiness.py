"""Readiness of a group and SKU: what blocks, counted by the rule's reasons, with one next step."""

from __future__ import annotations

from factories import E3, GROUP, user_id
from licshift.ports.graph import AssignedLicense, GroupLicenseInfo, UserLicenses
from licshift.rules.decide import PROCESSING_COMPLETE
from licshift.rules.licenses import LicenseAssignmentState, ServicePlan, Sku
from licshift.services.readiness import assess

EXO, TEAMS, SWAY = (f"{n}{n}{n}{n}{n}{n}{n}{n}-0000-4000-8000-000000000000" for n in "123")
SKU = Sku(
    E3,
    "ENTERPRISEPACK",
    (ServicePlan(EXO, "EXCHANGE_S_ENTERPRISE"), ServicePlan(TEAMS, "TEAMS1"), ServicePlan(SWAY, "SWAY")),
)
OTHER = "99999999-0000-4000-8000-000000000000"


def group(state: str = PROCESSING_COMPLETE, disabled: frozenset[str] = frozenset()) -> GroupLicenseInfo:
    return GroupLicenseInfo(GROUP, "All users", state, (AssignedLicense(E3, disabled),))


def user(n: int, *states: LicenseAssignmentState) -> UserLicenses:
    return UserLicenses(user_id(n), f"user{n}@contoso.com", states)


DIRECT = LicenseAssignmentState(E3, None)


def from_group(disabled: frozenset[str] = frozenset(), error: str | None = None) -> LicenseAssignmentState:
    return LicenseAssignmentState(E3, GROUP, disabled, "Active" if error is None else "Error", error)


def test_a_group_whose_members_all_migrate_is_ready_with_the_plan_command_next() -> None:
    found = assess(group(), SKU, [user(1, DIRECT, from_group()), user(2, DIRECT, from_group())], seats=(10, 2))
    assert found.ready
    assert found.by_reason == {"remove": 2}
    assert found.seats_needed == 0
    assert found.next_step().startswith("ready: record a plan with `licshift plan --group")


def test_processing_comes_first() -> None:
    found = assess(group("ProcessingInProgress"), SKU, [user(1, DIRECT, from_group())])
    assert not found.ready
    assert found.by_reason == {"group-processing-incomplete": 1}
    assert "finishes license processing (now ProcessingInProgress)" in found.next_step()


def test_seat_shortage_counts_members_who_hold_no_working_license() -> None:
    members = [user(1, DIRECT, from_group()), user(2, from_group(error="CountViolation")), user(3)]
    found = assess(group(), SKU, members, seats=(3, 2))
    assert found.seats_needed == 2, "user 2 (in error) and user 3 (nothing yet) each take a seat"
    assert found.seat_shortage == 1
    assert found.errors == {"CountViolation": ["user2@contoso.com"]}
    assert found.next_step().startswith("add 1 seat(s) of ENTERPRISEPACK")


def test_license_errors_name_the_fix() -> None:
    members = [user(1, DIRECT, from_group(error="MutuallyExclusiveViolation")), user(2, DIRECT, from_group())]
    found = assess(group(), SKU, members, seats=(10, 2))
    assert found.by_reason == {"inherited-error": 1, "remove": 1}
    assert found.next_step().startswith("1 member(s) in MutuallyExclusiveViolation: Another license")


def test_a_plan_the_group_disables_says_how_many_users_enabling_it_unblocks() -> None:
    sway_off = from_group(frozenset({SWAY}))
    members = [
        user(1, DIRECT, sway_off),
        user(2, DIRECT, sway_off),
        user(3, DIRECT, from_group(frozenset({SWAY, TEAMS}))),
        user(4, LicenseAssignmentState(E3, None, frozenset({SWAY})), sway_off),
    ]
    found = assess(group(disabled=frozenset({SWAY})), SKU, members, seats=(10, 4))
    assert found.plan_unlocks == [("SWAY", 2)], "user 3 needs two plans; user 4 never used Sway"
    assert found.blocked == 3
    assert found.next_step() == "enable SWAY on All users and 2 more user(s) can be migrated"


def test_direct_holders_outside_the_group_and_nested_members_are_listed() -> None:
    members = [user(1, DIRECT, from_group())]
    outside = [user(1, DIRECT, from_group()), user(7, DIRECT), user(8, LicenseAssignmentState(OTHER, None))]
    found = assess(group(), SKU, members, direct_holders=outside, nested_only=[user(9, DIRECT)])
    assert found.outside_direct == ["user7@contoso.com"], "members and other SKUs are not left behind"
    assert found.nested_only == ["user9@contoso.com"]
    assert found.ready, "users outside the group do not block a wave on it"
