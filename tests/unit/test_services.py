"""The services' pure parts, without I/O: the scan's plan rows, the remover's stop rules, the tick's
write budget and which waves it visits, intake's SKU resolution and duplicate detection."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from factories import E3, GROUP, T0, user_id, wave
from licshift.ports.graph import UserLicenses
from licshift.rules.answers import Verdict
from licshift.rules.decide import Block, BlockReason, Remove, Skip, SkipReason
from licshift.rules.licenses import DirectAssignment, LicenseAssignmentState, ServicePlan, Sku
from licshift.rules.messages import StartWave
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import Selection, SelectionKind, WaveCounters, WaveStatus
from licshift.services.intake import Rejection, _duplicate_start, _resolve_skus
from licshift.services.remover import _stop
from licshift.services.scheduler import STALE_MINIMUM, Budget, _needs_work, _Scan, outcome_for, stale_after

EXO, SPO, TEAMS = (f"{n:08d}-1111-4111-8111-111111111111" for n in (1, 2, 3))
E3_SKU = Sku(
    E3,
    "ENTERPRISEPACK",
    (ServicePlan(EXO, "EXCHANGE_S_ENTERPRISE"), ServicePlan(SPO, "SHAREPOINTENTERPRISE"), ServicePlan(TEAMS, "TEAMS1")),
)
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"


def member(*states: LicenseAssignmentState) -> UserLicenses:
    return UserLicenses(user_id(7), "ada@contoso.com", states, display_name="Ada Lovelace")


# --- the scan's plan rows ------------------------------------------------------------------------


def test_a_remove_decision_plans_the_row_with_its_snapshot_and_the_plans_the_user_has() -> None:
    user = member(
        LicenseAssignmentState(E3, None, frozenset({TEAMS})),
        LicenseAssignmentState(E3, GROUP, frozenset({TEAMS})),
    )
    w = wave(WaveStatus.SCANNING)
    row = outcome_for(w, user, E3_SKU, Remove(E3, frozenset({TEAMS})), T0)
    assert (row.wave_id, row.user_id, row.sku_id) == (w.wave_id, user.user_id, E3)
    assert row.status is OutcomeStatus.PLANNED
    assert row.decision == "remove"
    assert row.snapshot == DirectAssignment(E3, frozenset({TEAMS}))
    assert row.before_plans == frozenset({EXO, SPO})
    assert row.user_principal_name == "ada@contoso.com"
    assert row.updated_at == T0


def test_skip_and_block_decisions_record_their_reason_and_no_snapshot() -> None:
    user = member(LicenseAssignmentState(E3, GROUP))
    skipped = outcome_for(wave(), user, E3_SKU, Skip(SkipReason.NO_DIRECT_ASSIGNMENT), T0)
    assert (skipped.status, skipped.decision, skipped.reason) == (
        OutcomeStatus.SKIPPED,
        "skip",
        SkipReason.NO_DIRECT_ASSIGNMENT.value,
    )
    blocked = outcome_for(wave(), user, E3_SKU, Block(BlockReason.INHERITED_ERROR, "CountViolation"), T0)
    assert (blocked.status, blocked.decision, blocked.reason, blocked.detail) == (
        OutcomeStatus.BLOCKED,
        "block",
        BlockReason.INHERITED_ERROR.value,
        "CountViolation",
    )
    assert skipped.snapshot is None
    assert blocked.snapshot is None


# --- the remover's stop rules (S5) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kill_switch", "goes_to"),
    [
        (WaveStatus.REMOVING, False, None),
        (WaveStatus.REMOVING, True, OutcomeStatus.PLANNED),
        (WaveStatus.PAUSED, False, OutcomeStatus.PLANNED),
        (WaveStatus.VERIFYING, False, OutcomeStatus.PLANNED),
        (WaveStatus.HALTED, False, OutcomeStatus.NOT_ATTEMPTED),
        (WaveStatus.HALTED, True, OutcomeStatus.NOT_ATTEMPTED),
        (WaveStatus.CANCELLED, False, OutcomeStatus.NOT_ATTEMPTED),
        (WaveStatus.COMPLETED, False, OutcomeStatus.NOT_ATTEMPTED),
        (WaveStatus.ROLLING_BACK, False, OutcomeStatus.NOT_ATTEMPTED),
    ],
)
def test_a_removal_goes_ahead_only_in_a_removing_wave_without_kill_switch(
    status: WaveStatus, kill_switch: bool, goes_to: OutcomeStatus | None
) -> None:
    stop = _stop(wave(status), kill_switch)
    assert (stop.status if stop else None) is goes_to
    if stop is not None:
        assert stop.detail


def test_a_removal_of_a_wave_that_is_gone_is_not_attempted() -> None:
    stop = _stop(None, kill_switch=False)
    assert stop is not None
    assert stop.status is OutcomeStatus.NOT_ATTEMPTED


# --- the tick ------------------------------------------------------------------------------------


def test_the_budget_hands_out_each_slot_once_in_order() -> None:
    budget = Budget([0.0, 1.0, 2.0, 3.0])
    assert budget.take(3) == [0.0, 1.0, 2.0]
    assert budget.take(-1) == []
    assert budget.take(5) == [3.0]
    assert budget.left == 0
    assert budget.take(1) == []


def test_stale_rows_wait_ten_ticks_but_never_less_than_the_minimum() -> None:
    assert stale_after(60) == timedelta(minutes=10)
    assert stale_after(1) == STALE_MINIMUM


@pytest.mark.parametrize(
    ("status", "counters", "visited"),
    [
        (WaveStatus.WAITING, WaveCounters(), True),
        (WaveStatus.REMOVING, WaveCounters(), True),
        (WaveStatus.PLANNED, WaveCounters(), False),
        (WaveStatus.COMPLETED, WaveCounters(), False),
        (WaveStatus.ROLLED_BACK, WaveCounters(), False),
        (WaveStatus.PAUSED, WaveCounters(), False),
        (WaveStatus.PAUSED, WaveCounters(enqueued=1), True),
        (WaveStatus.HALTED, WaveCounters(), False),
        (WaveStatus.HALTED, WaveCounters(planned=2), True),
        (WaveStatus.CANCELLED, WaveCounters(enqueued=1), True),
    ],
)
def test_the_tick_visits_active_waves_and_stopped_ones_with_rows_to_close(
    status: WaveStatus, counters: WaveCounters, visited: bool
) -> None:
    assert _needs_work(wave(status, counters=counters)) is visited


# --- intake --------------------------------------------------------------------------------------


def test_skus_resolve_by_id_or_part_number_in_any_case_once_each() -> None:
    ems = Sku(EMS, "EMS")
    assert _resolve_skus((E3, "ems", "EnterprisePack"), (E3_SKU, ems)) == (E3_SKU, ems)


def test_an_unsubscribed_sku_is_refused_naming_what_is_subscribed() -> None:
    with pytest.raises(Rejection, match=r"SPE_E5 are not subscribed .*subscribed: ENTERPRISEPACK"):
        _resolve_skus(("SPE_E5",), (E3_SKU,))


def test_the_same_start_again_is_a_duplicate_and_a_different_one_with_its_id_is_refused() -> None:
    existing = wave(selection=Selection(SelectionKind.FIRST, count=5))
    same = StartWave(
        wave_id=existing.wave_id,
        group_id=GROUP,
        skus=("ENTERPRISEPACK",),
        selection=existing.selection,
        dry_run=False,
        force=False,
        policy=None,
        requested_by="bob",
    )
    assert _duplicate_start(existing, same).verdict is Verdict.DUPLICATE
    with pytest.raises(Rejection, match="already used by a different wave"):
        _duplicate_start(existing, replace(same, dry_run=True))


# --- the scan's plan -----------------------------------------------------------------------------


def test_the_scan_counts_rows_per_license_and_users_once_per_outcome() -> None:
    ems = Sku(EMS, "EMS")
    scan = _Scan(wave(WaveStatus.SCANNING, sku_ids=(E3, EMS)), {E3: E3_SKU, EMS: ems}, T0)
    both = member(
        LicenseAssignmentState(E3, None),
        LicenseAssignmentState(E3, GROUP),
        LicenseAssignmentState(EMS, None),
        LicenseAssignmentState(EMS, GROUP),
    )
    scan.selected = 3
    scan.add(both)
    scan.add(member(LicenseAssignmentState(E3, GROUP)))
    scan.add_missing(user_id(9))
    assert [(r.sku_id, r.status) for r in scan.batch[:2]] == [(E3, OutcomeStatus.PLANNED), (EMS, OutcomeStatus.PLANNED)]
    assert scan.rows == {OutcomeStatus.PLANNED: 2, OutcomeStatus.BLOCKED: 0, OutcomeStatus.SKIPPED: 4}
    assert scan.user_counts() == {"to_remove": 1, "blocked": 0, "skipped": 2, "selected": 3}
    missing = scan.batch[-1]
    assert (missing.user_id, missing.reason, missing.status) == (user_id(9), "user-not-found", OutcomeStatus.SKIPPED)
    counters = scan.counters()
    assert (counters.selected, counters.to_remove, counters.planned, counters.skipped) == (3, 2, 2, 4)
