"""Waves (pure): selection, the lifecycle as a transition function, the canary gate, tallies."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from factories import E3, GROUP, T0, wave
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import (
    FINAL_STATUSES,
    REMOVALS_ALLOWED,
    Refused,
    Selection,
    SelectionKind,
    Wave,
    WaveCounters,
    WaveEvent,
    WaveStatus,
    apply,
    canary_gate,
    is_selected,
    next_status,
    percent_bucket,
    qualifying_canary,
    selection_exhausted,
    tally,
)


def select(selection: Selection, users: list[str]) -> list[str]:
    chosen: list[str] = []
    for user in users:
        if is_selected(selection, GROUP, user, len(chosen)):
            chosen.append(user)
        if selection_exhausted(selection, len(chosen)):
            break
    return chosen


users = st.lists(st.uuids().map(str), unique=True, max_size=200)


@given(users, st.integers(min_value=1, max_value=250))
def test_first_n_takes_the_first_members_in_order(members: list[str], n: int) -> None:
    assert select(Selection(SelectionKind.FIRST, count=n), members) == members[:n]


@given(users, st.floats(min_value=0.1, max_value=100), st.floats(min_value=0.1, max_value=100))
def test_percent_is_stable_and_a_larger_share_is_a_superset(members: list[str], p: float, q: float) -> None:
    low, high = sorted((p, q))
    small = set(select(Selection(SelectionKind.PERCENT, percent=low), members))
    large = set(select(Selection(SelectionKind.PERCENT, percent=high), members))
    assert small <= large
    assert small == set(select(Selection(SelectionKind.PERCENT, percent=low), list(reversed(members))))


def test_percent_selects_about_the_share_asked_for() -> None:
    members = [str(uuid.UUID(int=i)) for i in range(4000)]
    chosen = select(Selection(SelectionKind.PERCENT, percent=25), members)
    assert 850 < len(chosen) < 1150
    assert all(0 <= percent_bucket(GROUP, u) < 100 for u in members[:50])


@given(users, st.data())
def test_explicit_users_select_exactly_the_listed_members(members: list[str], data: st.DataObject) -> None:
    listed = frozenset(data.draw(st.lists(st.sampled_from(members), unique=True)) if members else [])
    chosen = select(Selection(SelectionKind.USERS, users=listed), members)
    assert set(chosen) == listed


def test_all_selects_everyone() -> None:
    members = [str(uuid.uuid4()) for _ in range(10)]
    assert select(Selection(), members) == members


# --- lifecycle -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "event", "dry_run", "expected"),
    [
        (WaveStatus.WAITING, WaveEvent.PROCESSING_COMPLETE, False, WaveStatus.SCANNING),
        (WaveStatus.WAITING, WaveEvent.PROCESSING_TIMEOUT, False, WaveStatus.HALTED),
        (WaveStatus.SCANNING, WaveEvent.SCANNED, False, WaveStatus.REMOVING),
        (WaveStatus.SCANNING, WaveEvent.SCANNED, True, WaveStatus.PLANNED),
        (WaveStatus.SCANNING, WaveEvent.PROCESSING_INCOMPLETE, False, WaveStatus.WAITING),
        (WaveStatus.REMOVING, WaveEvent.REMOVALS_DONE, False, WaveStatus.VERIFYING),
        (WaveStatus.REMOVING, WaveEvent.FAILURE_THRESHOLD, False, WaveStatus.HALTED),
        (WaveStatus.REMOVING, WaveEvent.LOSS_DETECTED, False, WaveStatus.HALTED),
        (WaveStatus.VERIFYING, WaveEvent.VERIFIED, False, WaveStatus.COMPLETED),
        (WaveStatus.VERIFYING, WaveEvent.LOSS_DETECTED, False, WaveStatus.HALTED),
        (WaveStatus.REMOVING, WaveEvent.PAUSE, False, WaveStatus.PAUSED),
        (WaveStatus.REMOVING, WaveEvent.CANCEL, False, WaveStatus.CANCELLED),
        (WaveStatus.COMPLETED, WaveEvent.ROLLBACK, False, WaveStatus.ROLLING_BACK),
        (WaveStatus.HALTED, WaveEvent.ROLLBACK, False, WaveStatus.ROLLING_BACK),
        (WaveStatus.ROLLING_BACK, WaveEvent.ROLLBACK_DONE, False, WaveStatus.ROLLED_BACK),
        (WaveStatus.PAUSED, WaveEvent.LOSS_DETECTED, False, WaveStatus.HALTED),
    ],
)
def test_transitions(status: WaveStatus, event: WaveEvent, dry_run: bool, expected: WaveStatus) -> None:
    assert next_status(wave(status, dry_run=dry_run), event) is expected


@pytest.mark.parametrize(
    ("status", "event", "says"),
    [
        (WaveStatus.HALTED, WaveEvent.RESUME, "start a new wave"),
        (WaveStatus.PLANNED, WaveEvent.ROLLBACK, "dry run"),
        (WaveStatus.WAITING, WaveEvent.ROLLBACK, "cancel it instead"),
        (WaveStatus.COMPLETED, WaveEvent.CANCEL, "roll it back"),
        (WaveStatus.COMPLETED, WaveEvent.PAUSE, "can be paused"),
        (WaveStatus.COMPLETED, WaveEvent.SCANNED, "not scanning"),
        (WaveStatus.WAITING, WaveEvent.VERIFIED, "does not apply"),
    ],
)
def test_refusals_say_why(status: WaveStatus, event: WaveEvent, says: str) -> None:
    refused = next_status(wave(status), event)
    assert isinstance(refused, Refused)
    assert says in refused.reason


@given(st.sampled_from(WaveStatus), st.sampled_from(WaveEvent), st.booleans())
def test_only_the_scheduler_ever_enters_removing_and_final_waves_only_roll_back(
    status: WaveStatus, event: WaveEvent, dry_run: bool
) -> None:
    result = next_status(wave(status, dry_run=dry_run), event)
    if isinstance(result, Refused) or result is status:
        return
    if result in REMOVALS_ALLOWED:
        assert (status, event) in {(WaveStatus.SCANNING, WaveEvent.SCANNED), (WaveStatus.PAUSED, WaveEvent.RESUME)}
        assert not dry_run
    if status in FINAL_STATUSES:
        assert result is WaveStatus.ROLLING_BACK


@given(st.sampled_from([WaveEvent.PAUSE, WaveEvent.RESUME, WaveEvent.CANCEL, WaveEvent.ROLLBACK]))
def test_admin_commands_are_idempotent(event: WaveEvent) -> None:
    w = wave(WaveStatus.REMOVING, counters=WaveCounters(members=10, selected=5))
    once = apply(w, event, T0)
    assert not isinstance(once, Refused)
    assert apply(once, event, T0 + timedelta(seconds=1)) is once


def test_resume_returns_to_where_the_wave_was_paused_with_the_cursor_reset() -> None:
    removing = wave(WaveStatus.REMOVING, enqueue_cursor="u_s", counters=WaveCounters(members=3, selected=3))
    paused = apply(removing, WaveEvent.PAUSE, T0)
    assert isinstance(paused, Wave)
    assert paused.status is WaveStatus.PAUSED
    assert paused.resume_to == "removing"
    resumed = apply(paused, WaveEvent.RESUME, T0 + timedelta(minutes=1))
    assert isinstance(resumed, Wave)
    assert resumed.status is WaveStatus.REMOVING
    assert resumed.enqueue_cursor == ""
    assert resumed.status_since == T0 + timedelta(minutes=1)


def test_a_wave_paused_before_its_scan_waits_again_when_resumed_without_a_recorded_status() -> None:
    paused = wave(WaveStatus.PAUSED)
    assert next_status(paused, WaveEvent.RESUME) is WaveStatus.WAITING
    scanned = wave(WaveStatus.PAUSED, counters=WaveCounters(members=4, selected=2))
    assert next_status(scanned, WaveEvent.RESUME) is WaveStatus.REMOVING


def test_entered_at_falls_back_to_the_last_save() -> None:
    assert wave(updated_at=T0 + timedelta(hours=1)).entered_at() == T0 + timedelta(hours=1)
    assert wave(status_since=T0 + timedelta(hours=2)).entered_at() == T0 + timedelta(hours=2)


# --- canary gate ---------------------------------------------------------------------------------


def clean_canary(**changes: object) -> Wave:
    counters = WaveCounters(selected=5, to_remove=5, removed=5)
    return replace(wave(WaveStatus.COMPLETED, counters=counters), **changes)  # type: ignore[arg-type]


def gate(selection: Selection, prior: list[Wave], *, dry_run: bool = False, force: bool = False) -> str | None:
    return canary_gate(selection, GROUP, (E3,), dry_run=dry_run, force=force, prior=prior, canary_max_users=25)


def test_small_waves_dry_runs_and_forced_waves_pass_the_gate() -> None:
    assert gate(Selection(SelectionKind.FIRST, count=25), []) is None
    assert gate(Selection(), [], dry_run=True) is None
    assert gate(Selection(), [], force=True) is None


def test_a_large_wave_needs_a_clean_completed_canary_on_the_same_group_and_skus() -> None:
    refusal = gate(Selection(), [])
    assert refusal is not None
    assert "run a canary first" in refusal
    assert gate(Selection(SelectionKind.FIRST, count=26), []) is not None
    assert gate(Selection(), [clean_canary()]) is None
    assert gate(Selection(SelectionKind.PERCENT, percent=50), [clean_canary()]) is None


@pytest.mark.parametrize(
    "spoiled",
    [
        {"status": WaveStatus.HALTED},
        {"dry_run": True},
        {"group_id": "00000000-0000-4000-8000-000000000000"},
        {"sku_ids": ("00000000-0000-4000-8000-000000000001",)},
        {"counters": WaveCounters(selected=5, removed=5, restored=1)},
        {"counters": WaveCounters(selected=5, removed=4, failed=1)},
        {"counters": WaveCounters(selected=5, removed=0, skipped=5)},
        {"counters": WaveCounters(selected=26, to_remove=26, removed=26)},
        {"counters": WaveCounters(selected=0, removed=5)},
    ],
)
def test_a_canary_that_proves_nothing_does_not_open_the_gate(spoiled: dict[str, object]) -> None:
    canary = clean_canary(**spoiled)
    assert qualifying_canary([canary], GROUP, (E3,), 25) is None
    assert gate(Selection(), [canary]) is not None


def test_only_a_wave_of_at_most_canary_max_users_selected_users_is_a_canary() -> None:
    # A clean forced wave of any size proves the procedure no more than a canary, and must not open
    # the gate for every later wave: the limit is the same setting that defines a canary.
    at_limit = clean_canary(counters=WaveCounters(selected=25, to_remove=25, removed=25))
    too_big = clean_canary(force=True, counters=WaveCounters(selected=1000, to_remove=1000, removed=1000))
    assert qualifying_canary([at_limit], GROUP, (E3,), 25) is at_limit
    assert qualifying_canary([too_big], GROUP, (E3,), 25) is None
    assert qualifying_canary([too_big], GROUP, (E3,), 1000) is too_big
    assert gate(Selection(), [too_big]) is not None
    assert qualifying_canary([too_big, at_limit], GROUP, (E3,), 25) is at_limit


# --- tally ---------------------------------------------------------------------------------------


def test_tally_counts_rows_by_status_and_keeps_scan_figures() -> None:
    statuses = [OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED, OutcomeStatus.REMOVING, OutcomeStatus.REMOVED]
    statuses += [OutcomeStatus.REMOVED, OutcomeStatus.FAILED, OutcomeStatus.BLOCKED, OutcomeStatus.NOT_ATTEMPTED]
    rows = [Outcome("w", str(i), E3, status, "remove") for i, status in enumerate(statuses)]
    counters = tally(rows, WaveCounters(members=100, selected=8, to_remove=6, throttled=2))
    assert (counters.members, counters.selected, counters.to_remove, counters.throttled) == (100, 8, 6, 2)
    assert (counters.planned, counters.enqueued, counters.removed) == (1, 2, 2)
    assert (counters.failed, counters.blocked, counters.not_attempted) == (1, 1, 1)
    assert counters.pending == 3
