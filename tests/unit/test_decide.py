"""Worked examples of the decision rule, following Microsoft's procedure for moving users from direct
to group-based licensing (docs/graph.md §4.1, §4.3), on the real Office 365 E3 (ENTERPRISEPACK) SKU.

Every license state below is parsed from the JSON Graph returns (LicenseAssignmentState.from_graph),
so the examples also cover the payload quirks: `error` as null or "None", GUIDs in any case.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable
from typing import Any

import pytest

from licshift.rules import decide as decide_module
from licshift.rules.decide import (
    PROCESSING_COMPLETE,
    Block,
    BlockReason,
    Decision,
    Policy,
    Remove,
    Skip,
    SkipReason,
    decide,
    lost_plans,
)
from licshift.rules.licenses import BLANK_ERROR, LicenseAssignmentState, ServicePlan, Sku

E3_SKU_ID = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS_SKU_ID = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"  # Enterprise Mobility + Security E3, another SKU

EXCHANGE = "efb87545-963c-4e0d-99df-69c6916d9eb0"
SHAREPOINT = "5dbe027f-2339-4123-9542-606e4d348a72"
OFFICE_WEB = "e95bec33-7c88-4a70-8e19-b10bd9d0c014"
OFFICE_APPS = "43de0ff5-c92c-492b-9116-175376d08c38"
SKYPE = "0feaeb32-d00e-4d66-bd5a-43b5b83db82c"
TEAMS = "57ff2da0-773e-42df-b2af-ffb7a2317929"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
YAMMER = "7547a3fe-08ee-4ccb-b430-5077c5041653"
FORMS = "2789c901-c14e-48ab-a76a-be334d9d793a"
PLANNER = "b737dad2-2f6c-4c65-90e3-ca563267e8b9"

# A realistic subset of ENTERPRISEPACK's servicePlans as GET /subscribedSkus returns them.
E3_PAYLOAD: dict[str, Any] = {
    "skuId": E3_SKU_ID,
    "skuPartNumber": "ENTERPRISEPACK",
    "servicePlans": [
        {"servicePlanId": pid, "servicePlanName": name, "provisioningStatus": "Success", "appliesTo": "User"}
        for pid, name in (
            (EXCHANGE, "EXCHANGE_S_ENTERPRISE"),
            (SHAREPOINT, "SHAREPOINTENTERPRISE"),
            (OFFICE_WEB, "SHAREPOINTWAC"),
            (OFFICE_APPS, "OFFICESUBSCRIPTION"),
            (SKYPE, "MCOSTANDARD"),
            (TEAMS, "TEAMS1"),
            (SWAY, "SWAY"),
            (YAMMER, "YAMMER_ENTERPRISE"),
            (FORMS, "FORMS_PLAN_E3"),
            (PLANNER, "PROJECTWORKMANAGEMENT"),
        )
    ],
}
E3 = Sku.from_graph(E3_PAYLOAD)

WAVE_GROUP = "1132b215-826f-42a9-8cfe-1643d19d17fd"
OTHER_GROUP = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
THIRD_GROUP = "c0ffee00-1234-4abc-9def-0123456789ab"


def entry(
    group: str | None = None,
    disabled: Iterable[str] = (),
    state: str = "Active",
    error: str | None = "None",
    sku: str = E3_SKU_ID,
) -> dict[str, Any]:
    """One licenseAssignmentStates entry as Graph returns it (real payloads carry "None")."""
    return {
        "assignedByGroup": group,
        "disabledPlans": list(disabled),
        "error": error,
        "lastUpdatedDateTime": "2026-10-01T08:00:00Z",
        "skuId": sku,
        "state": state,
    }


def run(
    *entries: dict[str, Any],
    policy: Policy = Policy.NO_LOSS,
    selected: bool = True,
    processing: str = PROCESSING_COMPLETE,
) -> Decision:
    states = [LicenseAssignmentState.from_graph(e) for e in entries]
    return decide(states, E3, WAVE_GROUP, policy, selected=selected, group_processing_state=processing)


def test_e3_is_parsed_with_its_plan_names() -> None:
    assert E3.sku_id == E3_SKU_ID
    assert E3.part_number == "ENTERPRISEPACK"
    assert len(E3.plan_ids) == 10
    assert E3.plan_name(OFFICE_WEB) == "SHAREPOINTWAC"


# --- Microsoft's step 4: the same SKU both direct and inherited ---------------------------------


def test_same_sku_direct_and_from_wave_group_with_identical_plans_is_removed_with_its_snapshot() -> None:
    decision = run(entry(disabled=[SWAY, YAMMER]), entry(WAVE_GROUP, disabled=[SWAY, YAMMER]))
    assert decision == Remove(E3_SKU_ID, frozenset({SWAY, YAMMER}))


def test_full_direct_and_full_group_assignment_is_removed_with_an_empty_snapshot() -> None:
    assert run(entry(), entry(WAVE_GROUP)) == Remove(E3_SKU_ID, frozenset())


# --- Microsoft's step 5: no member in a license error state ---------------------------------------


@pytest.mark.parametrize(
    ("state", "error", "reason", "detail"),
    [
        ("Error", "CountViolation", BlockReason.INHERITED_ERROR, "CountViolation"),
        ("ActiveWithError", "MutuallyExclusiveViolation", BlockReason.INHERITED_ERROR, "MutuallyExclusiveViolation"),
        ("Active", "DependencyViolation", BlockReason.INHERITED_ERROR, "DependencyViolation"),
        ("ActiveWithError", "None", BlockReason.INHERITED_NOT_ACTIVE, "ActiveWithError"),
        ("Error", None, BlockReason.INHERITED_NOT_ACTIVE, "Error"),
        ("Disabled", "None", BlockReason.INHERITED_NOT_ACTIVE, "Disabled"),
    ],
)
def test_group_assignment_in_error_or_not_active_blocks_with_the_code_or_state(
    state: str, error: str | None, reason: BlockReason, detail: str
) -> None:
    decision = run(entry(), entry(WAVE_GROUP, state=state, error=error))
    assert decision == Block(reason, detail)


@pytest.mark.parametrize("no_error", [None, "None"])
def test_error_null_and_the_string_none_both_mean_no_error(no_error: str | None) -> None:
    parsed = LicenseAssignmentState.from_graph(entry(WAVE_GROUP, error=no_error))
    assert parsed.error is None
    assert parsed.is_healthy
    assert run(entry(error=no_error), entry(WAVE_GROUP, error=no_error)) == Remove(E3_SKU_ID, frozenset())


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_error_is_not_no_error(blank: str) -> None:
    # Graph documents null or "None" for "no error"; a blank value is neither, so S1 may not count on it.
    parsed = LicenseAssignmentState.from_graph(entry(WAVE_GROUP, error=blank))
    assert not parsed.is_healthy
    assert run(entry(), entry(WAVE_GROUP, error=blank)) == Block(BlockReason.INHERITED_ERROR, BLANK_ERROR)
    # Nor does a second group with a blank error count toward coverage.
    decision = run(entry(), entry(WAVE_GROUP, disabled=[TEAMS]), entry(OTHER_GROUP, error=blank))
    assert isinstance(decision, Block)
    assert decision.reason is BlockReason.PLANS_WOULD_BE_LOST


@pytest.mark.parametrize(
    ("state", "error", "reason", "detail"),
    [
        ("Error", "CountViolation", BlockReason.INHERITED_ERROR, "CountViolation"),
        ("Active", "", BlockReason.INHERITED_ERROR, BLANK_ERROR),
        ("Disabled", "None", BlockReason.INHERITED_NOT_ACTIVE, "Disabled"),
    ],
)
def test_two_entries_from_the_wave_group_that_disagree_block(
    state: str, error: str, reason: BlockReason, detail: str
) -> None:
    # One healthy and one unhealthy entry from the same group: the proof may not pick the healthy one.
    for order in ((0, 1), (1, 0)):
        group_entries = [entry(WAVE_GROUP), entry(WAVE_GROUP, state=state, error=error)]
        decision = run(entry(), *(group_entries[i] for i in order))
        assert decision == Block(reason, detail)


def test_two_healthy_entries_from_the_wave_group_still_remove() -> None:
    assert run(entry(), entry(WAVE_GROUP), entry(WAVE_GROUP, error=None)) == Remove(E3_SKU_ID, frozenset())


# --- Microsoft's service-plan check (docs/graph.md §4.1), done per source ------------------------------


def test_group_disabling_a_plan_the_direct_assignment_enables_blocks_naming_the_plan() -> None:
    # Microsoft's own example: "User has extra plans that may be lost ... Extra plans: SHAREPOINTWAC".
    decision = run(entry(), entry(WAVE_GROUP, disabled=[OFFICE_WEB]))
    assert decision == Block(
        BlockReason.PLANS_WOULD_BE_LOST, "SHAREPOINTWAC", (ServicePlan(OFFICE_WEB, "SHAREPOINTWAC"),)
    )


def test_several_lost_plans_are_all_named() -> None:
    decision = run(entry(disabled=[YAMMER]), entry(WAVE_GROUP, disabled=[SWAY, YAMMER, FORMS]))
    assert isinstance(decision, Block)
    assert decision.reason is BlockReason.PLANS_WOULD_BE_LOST
    assert {p.name for p in decision.plans} == {"SWAY", "FORMS_PLAN_E3"}
    assert "SWAY" in decision.detail
    assert "FORMS_PLAN_E3" in decision.detail
    assert "YAMMER_ENTERPRISE" not in decision.detail


def test_group_disabling_a_plan_the_direct_one_also_disables_is_removed() -> None:
    decision = run(entry(disabled=[YAMMER, SWAY]), entry(WAVE_GROUP, disabled=[YAMMER]))
    assert decision == Remove(E3_SKU_ID, frozenset({YAMMER, SWAY}))


def test_two_groups_that_together_cover_the_direct_plans_are_removed() -> None:
    decision = run(entry(), entry(WAVE_GROUP, disabled=[SWAY, TEAMS]), entry(OTHER_GROUP, disabled=[YAMMER]))
    assert decision == Remove(E3_SKU_ID, frozenset())


def test_two_groups_that_both_disable_the_same_enabled_plan_block() -> None:
    decision = run(entry(), entry(WAVE_GROUP, disabled=[SWAY, TEAMS]), entry(OTHER_GROUP, disabled=[SWAY]))
    assert decision == Block(BlockReason.PLANS_WOULD_BE_LOST, "SWAY", (ServicePlan(SWAY, "SWAY"),))


@pytest.mark.parametrize(("state", "error"), [("Error", "CountViolation"), ("ActiveWithError", "None")])
def test_a_second_group_in_error_does_not_count_toward_coverage(state: str, error: str) -> None:
    decision = run(entry(), entry(WAVE_GROUP, disabled=[TEAMS]), entry(OTHER_GROUP, state=state, error=error))
    assert decision == Block(BlockReason.PLANS_WOULD_BE_LOST, "TEAMS1", (ServicePlan(TEAMS, "TEAMS1"),))


@pytest.mark.parametrize(("state", "error"), [("ActiveWithError", "None"), ("Error", "CountViolation")])
def test_a_direct_assignment_counts_with_its_plans_whatever_its_state(state: str, error: str) -> None:
    # S1 measures against the direct assignment's disabledPlans alone: an ActiveWithError direct
    # assignment may still deliver SWAY, so removing it while the group disables SWAY is refused.
    decision = run(entry(state=state, error=error), entry(WAVE_GROUP, disabled=[SWAY]))
    assert decision == Block(BlockReason.PLANS_WOULD_BE_LOST, "SWAY", (ServicePlan(SWAY, "SWAY"),))


def test_a_healthy_second_group_does_count_toward_coverage() -> None:
    assert run(entry(), entry(WAVE_GROUP, disabled=[TEAMS]), entry(OTHER_GROUP)) == Remove(E3_SKU_ID, frozenset())


# --- Microsoft's steps (a) and (b): skip users without a direct license, require this group -------


def test_no_direct_assignment_is_skipped() -> None:
    assert run(entry(WAVE_GROUP)) == Skip(SkipReason.NO_DIRECT_ASSIGNMENT)
    assert run(entry(sku=EMS_SKU_ID), entry(WAVE_GROUP)) == Skip(SkipReason.NO_DIRECT_ASSIGNMENT)


def test_user_outside_the_selection_is_skipped_whatever_the_state() -> None:
    assert run(entry(), entry(WAVE_GROUP), selected=False) == Skip(SkipReason.NOT_SELECTED)
    assert run(entry(), selected=False) == Skip(SkipReason.NOT_SELECTED)


def test_sku_inherited_only_from_another_group_blocks_naming_that_group() -> None:
    decision = run(entry(), entry(OTHER_GROUP))
    assert isinstance(decision, Block)
    assert decision.reason is BlockReason.NOT_INHERITED_FROM_GROUP
    assert OTHER_GROUP in decision.detail


def test_sku_inherited_from_no_group_blocks() -> None:
    decision = run(entry(), entry(WAVE_GROUP, sku=EMS_SKU_ID))
    assert decision == Block(BlockReason.NOT_INHERITED_FROM_GROUP, "not inherited from any group")


@pytest.mark.parametrize("processing", ["ProcessingInProgress", "QueuedForProcessing"])
def test_group_processing_not_complete_blocks_with_the_state(processing: str) -> None:
    decision = run(entry(), entry(WAVE_GROUP), processing=processing)
    assert decision == Block(BlockReason.GROUP_PROCESSING_INCOMPLETE, processing)


# --- What does not matter ---------------------------------------------------------------------


def test_other_skus_in_the_states_are_ignored() -> None:
    decision = run(
        entry(sku=EMS_SKU_ID, state="Error", error="CountViolation"),
        entry(disabled=[SWAY]),
        entry(WAVE_GROUP, sku=EMS_SKU_ID, state="Disabled"),
        entry(WAVE_GROUP, disabled=[SWAY]),
        entry(OTHER_GROUP, sku=EMS_SKU_ID, disabled=[TEAMS]),
    )
    assert decision == Remove(E3_SKU_ID, frozenset({SWAY}))


def test_guid_case_does_not_matter() -> None:
    decision = run(
        entry(disabled=[SWAY.upper(), YAMMER], sku=E3_SKU_ID.upper()),
        entry(WAVE_GROUP.upper(), disabled=[SWAY, YAMMER.upper()]),
    )
    assert decision == Remove(E3_SKU_ID, frozenset({SWAY, YAMMER}))


def test_stale_plan_id_in_the_direct_snapshot_is_kept_for_the_restore() -> None:
    retired = "dead0000-0000-4000-8000-000000000001"
    assert run(entry(disabled=[retired]), entry(WAVE_GROUP)) == Remove(E3_SKU_ID, frozenset({retired}))


# --- Policy `identical` (docs/graph.md §4.3: "direct and group licenses enable exactly the same services") -------


def test_identical_blocks_when_the_group_enables_more_than_the_direct_assignment() -> None:
    states = (entry(disabled=[SWAY, YAMMER]), entry(WAVE_GROUP, disabled=[YAMMER]))
    assert run(*states) == Remove(E3_SKU_ID, frozenset({SWAY, YAMMER}))
    assert run(*states, policy=Policy.IDENTICAL) == Block(
        BlockReason.PLANS_DIFFER, "SWAY", (ServicePlan(SWAY, "SWAY"),)
    )


def test_identical_counts_plans_another_group_enables_too() -> None:
    states = (entry(disabled=[SWAY]), entry(WAVE_GROUP, disabled=[SWAY]), entry(OTHER_GROUP))
    decision = run(*states, policy=Policy.IDENTICAL)
    assert decision == Block(BlockReason.PLANS_DIFFER, "SWAY", (ServicePlan(SWAY, "SWAY"),))


def test_identical_removes_when_exactly_equal() -> None:
    states = (entry(disabled=[SWAY, YAMMER]), entry(WAVE_GROUP, disabled=[YAMMER, SWAY]))
    assert run(*states, policy=Policy.IDENTICAL) == Remove(E3_SKU_ID, frozenset({SWAY, YAMMER}))


def test_identical_given_as_a_plain_string_is_not_weakened_to_no_loss() -> None:
    states = [LicenseAssignmentState.from_graph(e) for e in (entry(disabled=[SWAY]), entry(WAVE_GROUP))]
    decision = decide(states, E3, WAVE_GROUP, "identical")  # type: ignore[arg-type]
    assert isinstance(decision, Block)
    assert decision.reason is BlockReason.PLANS_DIFFER


def test_lost_plans_is_what_was_enabled_before_and_not_after() -> None:
    assert lost_plans(frozenset({SWAY, TEAMS}), frozenset({TEAMS, FORMS})) == {SWAY}
    assert lost_plans(frozenset({SWAY}), frozenset({SWAY, TEAMS})) == frozenset()


# --- The reasons are a closed, documented set ---------------------------------------------------


def _member_docstrings(enum_name: str) -> dict[str, str]:
    """Member name -> the string literal right after its assignment in decide.py's source."""
    tree = ast.parse(inspect.getsource(decide_module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == enum_name)
    docs: dict[str, str] = {}
    for assign, following in zip(cls.body, cls.body[1:], strict=False):
        if isinstance(assign, ast.Assign) and isinstance(assign.targets[0], ast.Name):
            literal = following.value if isinstance(following, ast.Expr) else None
            doc = literal.value if isinstance(literal, ast.Constant) else None
            docs[assign.targets[0].id] = doc if isinstance(doc, str) else ""
    return docs


@pytest.mark.parametrize("enum_type", [BlockReason, SkipReason, Policy])
def test_every_reason_is_documented(enum_type: type[BlockReason] | type[SkipReason] | type[Policy]) -> None:
    docs = _member_docstrings(enum_type.__name__)
    assert set(docs) == {m.name for m in enum_type}
    for name, doc in docs.items():
        assert doc.strip(), f"{enum_type.__name__}.{name} has no docstring"
    assert len({m.value for m in enum_type}) == len(enum_type)


# --- S1 over the union: every relied-on group must have finished processing ------------------------


def union_run(*entries: dict[str, Any], states: dict[str, str]) -> Decision:
    parsed = [LicenseAssignmentState.from_graph(e) for e in entries]
    return decide(parsed, E3, WAVE_GROUP, group_states=states)


COMPLETE_ALL = {WAVE_GROUP: PROCESSING_COMPLETE, OTHER_GROUP: PROCESSING_COMPLETE}


def test_a_processing_group_that_supplies_a_plan_holds_the_user() -> None:
    # SWAY survives only through OTHER_GROUP, whose entry may still show options it no longer has.
    entries = (entry(), entry(WAVE_GROUP, disabled=[SWAY]), entry(OTHER_GROUP))
    held = union_run(*entries, states={**COMPLETE_ALL, OTHER_GROUP: "ProcessingInProgress"})
    assert held == Block(BlockReason.RELIED_ON_GROUP_PROCESSING, f"group {OTHER_GROUP} is ProcessingInProgress")
    assert union_run(*entries, states=COMPLETE_ALL) == Remove(E3_SKU_ID, frozenset())


def test_every_healthy_group_is_relied_on_even_one_that_adds_nothing() -> None:
    # Dropping a set from the intersection can only grow it: any counted group can turn a Remove unsafe.
    entries = (entry(), entry(WAVE_GROUP), entry(OTHER_GROUP, disabled=[SWAY]))
    held = union_run(*entries, states={**COMPLETE_ALL, OTHER_GROUP: "QueuedForProcessing"})
    assert isinstance(held, Block)
    assert held.reason is BlockReason.RELIED_ON_GROUP_PROCESSING


def test_the_wave_group_and_unknown_groups_hold_too_and_unhealthy_groups_do_not() -> None:
    entries = (entry(), entry(WAVE_GROUP), entry(OTHER_GROUP, error="CountViolation", state="Error"))
    assert union_run(*entries, states={WAVE_GROUP: PROCESSING_COMPLETE}) == Remove(E3_SKU_ID, frozenset())
    held = union_run(entry(), entry(WAVE_GROUP), entry(THIRD_GROUP), states={WAVE_GROUP: PROCESSING_COMPLETE})
    assert held == Block(BlockReason.RELIED_ON_GROUP_PROCESSING, f"group {THIRD_GROUP} is unknown")
    wave_held = union_run(entry(), entry(WAVE_GROUP), states={WAVE_GROUP: "ProcessingInProgress"})
    assert isinstance(wave_held, Block)
    assert wave_held.detail == f"group {WAVE_GROUP} is ProcessingInProgress"


def test_a_removal_records_the_groups_it_relied_on_with_their_options() -> None:
    decision = union_run(
        entry(disabled=[YAMMER]),
        entry(OTHER_GROUP, disabled=[TEAMS]),
        entry(WAVE_GROUP, disabled=[SWAY]),
        entry(THIRD_GROUP, state="Error", error="CountViolation"),
        states=COMPLETE_ALL,
    )
    assert isinstance(decision, Remove)
    assert [(g.group_id, g.disabled_plans) for g in decision.relied_on] == [
        (WAVE_GROUP, frozenset({SWAY})),
        (OTHER_GROUP, frozenset({TEAMS})),
    ]
