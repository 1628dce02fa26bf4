"""Which drift LICSHIFT_DRIFT_REMOVE removes again (pure): the guard rails, the cap, the hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from factories import E3, GROUP, T0, user_id, wave
from licshift.rules.decide import Policy
from licshift.rules.driftremoval import DriftRemovalPlan, plan_drift_removal
from licshift.rules.outcomes import DriftState
from licshift.rules.waves import FINAL_STATUSES, Wave, WaveStatus

EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
OTHER_GROUP = "7d3e6c1a-2b4f-4e8a-9c5d-1a2b3c4d5e6f"
DONE = wave(WaveStatus.COMPLETED, wave_id="w1")


def drifted(n: int, **changes: Any) -> DriftState:
    """User n's E3 came back in GROUP after wave w1 removed it; seen at T0 + n minutes."""
    at = T0 + timedelta(minutes=n)
    base = DriftState(user_id=user_id(n), sku_id=E3, group_id=GROUP, wave_id="w1", first_seen=at, last_seen=at)
    return replace(base, **changes)


def plan(
    drift: list[DriftState],
    waves: list[Wave],
    *,
    kill_switch: bool = False,
    max_users: int = 500,
    max_repeats: int = 3,
) -> DriftRemovalPlan:
    return plan_drift_removal(drift, waves, kill_switch=kill_switch, max_users=max_users, max_repeats=max_repeats)


def test_open_drift_after_a_completed_wave_becomes_one_wave_of_exactly_those_users() -> None:
    rows = [drifted(1), drifted(2), drifted(3, cleared_at=T0)]
    result = plan(rows, [DONE, wave(WaveStatus.PLANNED, dry_run=True, created_at=T0 + timedelta(hours=1))])
    assert len(result.starts) == 1
    start = result.starts[0]
    assert (start.group_id, start.sku_id) == (GROUP, E3)
    assert start.users == {user_id(1), user_id(2)}, "cleared drift is not removed again; a dry run is no wave"
    assert start.policy is Policy.NO_LOSS
    assert result.held == ()
    assert result.waiting == ()


def test_the_follow_up_keeps_the_policy_of_the_latest_wave() -> None:
    strict = wave(WaveStatus.COMPLETED, policy=Policy.IDENTICAL, created_at=T0 + timedelta(hours=1))
    assert plan([drifted(1)], [DONE, strict]).starts[0].policy is Policy.IDENTICAL


def test_kill_switch_starts_nothing() -> None:
    result = plan([drifted(1)], [DONE], kill_switch=True)
    assert result.starts == ()
    assert [w.reason for w in result.waiting] == ["the kill switch is on"]


@pytest.mark.parametrize("status", [WaveStatus.HALTED, WaveStatus.ROLLING_BACK])
def test_a_halted_wave_or_a_rollback_anywhere_on_the_group_blocks_it(status: WaveStatus) -> None:
    # Even on another SKU, and older than the completed wave: someone has to look at the group first.
    stuck = wave(status, sku_ids=(EMS,), created_at=T0 - timedelta(days=1))
    result = plan([drifted(1)], [DONE, stuck])
    assert result.starts == ()
    assert str(status) in result.waiting[0].reason


@pytest.mark.parametrize("status", [s for s in WaveStatus if s not in FINAL_STATUSES and s not in {WaveStatus.HALTED}])
def test_no_follow_up_while_a_wave_on_the_group_and_sku_is_under_way(status: WaveStatus) -> None:
    busy = wave(status, created_at=T0 - timedelta(hours=1))
    result = plan([drifted(1)], [DONE, busy])
    assert result.starts == ()


def test_a_wave_under_way_on_another_sku_does_not_block() -> None:
    other = wave(WaveStatus.REMOVING, sku_ids=(EMS,), created_at=T0 + timedelta(hours=1))
    assert len(plan([drifted(1)], [DONE, other]).starts) == 1


@pytest.mark.parametrize("status", [WaveStatus.CANCELLED, WaveStatus.ROLLED_BACK])
def test_the_latest_wave_must_have_completed(status: WaveStatus) -> None:
    later = wave(status, created_at=T0 + timedelta(hours=1))
    result = plan([drifted(1)], [DONE, later])
    assert result.starts == ()
    assert f"is {status}, not completed" in result.waiting[0].reason


def test_drift_of_a_group_without_waves_waits() -> None:
    result = plan([drifted(1, group_id=OTHER_GROUP)], [DONE])
    assert result.starts == ()
    assert result.waiting[0].group_id == OTHER_GROUP


def test_one_wave_per_group_and_sku() -> None:
    both = wave(WaveStatus.COMPLETED, sku_ids=(E3, EMS))
    rows = [drifted(1), drifted(2, sku_id=EMS), drifted(3)]
    starts = plan(rows, [both]).starts
    assert sorted((s.sku_id, sorted(s.users)) for s in starts) == sorted(
        [(E3, [user_id(1), user_id(3)]), (EMS, [user_id(2)])]
    )


def test_the_cap_takes_the_oldest_drift_first_and_the_rest_waits() -> None:
    rows = [drifted(n) for n in (5, 1, 4, 2, 3)]
    result = plan(rows, [DONE], max_users=3)
    assert result.starts[0].users == {user_id(1), user_id(2), user_id(3)}
    assert [(w.users, "cap" in w.reason) for w in result.waiting] == [(2, True)]


def test_a_license_that_came_back_after_every_follow_up_is_held_not_removed_again() -> None:
    rows = [drifted(1, auto_removals=3), drifted(2, auto_removals=2), drifted(3, auto_removals=9, held="held")]
    result = plan(rows, [DONE], max_repeats=3)
    assert [s.user_id for s in result.held] == [user_id(1)], "held once; an already held row is not re-alerted"
    assert result.starts[0].users == {user_id(2)}


def test_held_rows_are_held_even_when_nothing_may_start() -> None:
    result = plan([drifted(1, auto_removals=3)], [DONE], kill_switch=True, max_repeats=3)
    assert [s.user_id for s in result.held] == [user_id(1)]
    assert result.starts == ()


statuses = st.sampled_from(list(WaveStatus))


@given(
    st.lists(st.tuples(statuses, st.booleans(), st.integers(0, 5)), max_size=6, unique_by=lambda t: t[2]),
    st.lists(st.tuples(st.integers(1, 40), st.integers(0, 4), st.booleans()), max_size=30, unique_by=lambda t: t[0]),
    st.integers(1, 20),
    st.booleans(),
)
def test_what_starts_always_respects_the_guard_rails(
    wave_specs: list[tuple[WaveStatus, bool, int]],
    drift_specs: list[tuple[int, int, bool]],
    cap: int,
    kill: bool,
) -> None:
    waves = [wave(status, dry_run=dry, created_at=T0 + timedelta(hours=h)) for status, dry, h in wave_specs]
    rows = [drifted(n, auto_removals=times, cleared_at=T0 if cleared else None) for n, times, cleared in drift_specs]
    result = plan(rows, waves, kill_switch=kill, max_users=cap, max_repeats=3)
    started = [u for s in result.starts for u in s.users]
    assert len(started) == len(set(started)) <= cap
    if not result.starts:
        return
    assert not kill
    real = [w for w in waves if not w.dry_run]
    assert not any(w.status in {WaveStatus.HALTED, WaveStatus.ROLLING_BACK} for w in real)
    assert all(w.status in FINAL_STATUSES for w in real)
    assert max(real, key=lambda w: w.created_at).status is WaveStatus.COMPLETED
    chosen = {r.user_id: r for r in rows if r.user_id in started}
    assert all(r.open and r.auto_removals < 3 and not r.held for r in chosen.values())
