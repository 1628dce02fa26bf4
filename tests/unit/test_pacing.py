"""Write pacing: the model of Graph's write window, the schedule, Graph's signals (properties)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from licshift.rules.pacing import (
    Pacing,
    PacingLimits,
    Quota,
    Reports,
    Throttle,
    add_writes,
    delay,
    from_json,
    observe,
    pressure_at,
    rate_at,
    recovered,
    release,
    restart,
    schedule,
    to_json,
    window_counts,
)

T0 = 1_800_000_000.0
GRAPH = Quota()
# A small quota keeps the properties fast while exercising the same arithmetic.
SMALL = Quota(writes=60, window=30.0, tenant_writes=100, tenant_window=60.0)


def limits_for(quota: Quota, share: float = 0.97, lookahead: float = 20.0, ceiling: float = 100.0) -> PacingLimits:
    return PacingLimits(quota=quota, share=share, floor=0.1, ceiling=ceiling, lookahead=lookahead)


def model_windows_over_cap(p: Pacing, seconds: list[int], width: int, cap: int) -> list[int]:
    """Seconds among `seconds` that lie in a window of the model holding more than `cap`."""
    if not seconds:
        return []
    low, high = seconds[0] - width, seconds[-1] + width
    prefix = list(itertools.accumulate((p.at(x) for x in range(low, high)), initial=0))
    return [
        s for s in seconds if max(prefix[a - low + width] - prefix[a - low] for a in range(s - width + 1, s + 1)) > cap
    ]


ticks = st.lists(
    st.tuples(
        st.floats(min_value=0.2, max_value=45.0),  # time since the previous tick: late, skipped, early
        st.integers(min_value=0, max_value=400),  # work available (slots wanted)
        st.integers(min_value=0, max_value=5),  # slots left unused and released
        st.lists(st.floats(min_value=-40.0, max_value=40.0), max_size=6),  # extra writes, relative to the tick
        # 429s since the previous tick: (seconds before the tick, Retry-After)
        st.lists(
            st.tuples(st.floats(min_value=0.0, max_value=45.0), st.floats(min_value=0.0, max_value=20.0)), max_size=4
        ),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ticks, st.floats(min_value=0.3, max_value=1.0))
def test_no_window_of_the_model_ever_exceeds_the_target_share(plan: list[Any], share: float) -> None:
    limits = limits_for(SMALL, share=share)
    p, now = Pacing(), T0
    slots: list[float] = []
    extras: list[float] = []
    for gap, wanted, unused, extra, throttled in plan:
        now += gap
        reported = tuple(now + e for e in extra)
        extras += reported
        throttles = tuple(Throttle(now - before, retry) for before, retry in throttled)
        p = observe(p, Reports(throttles=throttles, extra_writes=reported), now, limits)
        got, p = schedule(p, now, wanted, limits)
        assert all(now <= s < now + limits.lookahead for s in got)
        assert len(got) <= wanted
        give_back = got[len(got) - min(unused, len(got)) :]
        p = release(p, give_back)
        got = got[: len(got) - len(give_back)]
        # Every window a new slot landed in stays within the target, extras reported so far included.
        seconds = sorted({math.floor(s) for s in got})
        assert not model_windows_over_cap(p, seconds, 31, limits.cap)
        assert not model_windows_over_cap(p, seconds, 61, limits.tenant_cap)
        slots += got
    # The scheduler's own writes alone never pass the target in any sliding window, and never the quota.
    assert window_counts(slots, SMALL.window) <= limits.cap <= SMALL.writes
    assert window_counts(slots, SMALL.tenant_window) <= limits.tenant_cap


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=40.0), min_size=2, max_size=8))
def test_late_or_skipped_ticks_lose_nothing_and_long_ticks_never_double_up(gaps: list[float]) -> None:
    limits = limits_for(GRAPH, lookahead=120.0)
    p, now = Pacing(), T0
    slots: list[float] = []
    for gap in gaps:
        got, p = schedule(p, now, 10_000, limits)
        # A tick never schedules seconds an earlier tick already scheduled.
        assert not slots or not got or got[0] > slots[-1]
        slots += got
        now += gap * 3  # ticks up to 120 s apart: late ones, a skipped one
    spacing = 1.0 / limits.full_rate
    # A full window may hold the next slot back a second or two (whole-second accounting), never longer.
    assert all(b - a <= spacing + 2.0 for a, b in itertools.pairwise(slots)), "a hole in the schedule"
    assert window_counts(slots, GRAPH.window) <= limits.cap


def test_the_steady_pace_is_the_target_share_of_graphs_window() -> None:
    limits = PacingLimits(ceiling=20.0, lookahead=120.0)
    p, now, slots = Pacing(), T0, []
    for _ in range(30):
        got, p = schedule(p, now, 10_000, limits)
        slots += got
        now += 60.0
    done = [s for s in slots if s < now - 120]
    assert limits.cap - 20 <= window_counts(done, 150.0) <= limits.cap == 2910
    share = len([s for s in done if s >= T0 + 300]) / ((now - 120 - T0 - 300) * 20.0)
    # 2,910 writes in any 151 whole seconds (a 150 s window can touch 151): 0.964 of 20/s.
    assert 0.96 <= share <= 0.97


def test_delays_count_from_the_moment_each_message_is_sent() -> None:
    limits = PacingLimits(lookahead=120.0)
    slots, p = schedule(Pacing(), T0, 100, limits)
    # The first 50 are sent 3 s after the tick started: their delays shrink by those 3 s, so the
    # writes still land exactly on their slots, not 3 s later.
    assert [delay(s, T0 + 3.0) for s in slots[:50]] == [max(0.0, s - T0 - 3.0) for s in slots[:50]]
    more, _ = schedule(p, T0 + 60.0, 100, limits)
    assert more[0] > slots[-1]


def test_a_429_pauses_until_retry_after_and_lowers_the_pace_in_proportion() -> None:
    limits = PacingLimits(lookahead=120.0)
    slots, p = schedule(Pacing(seen_until=T0), T0, 1_000, limits)
    now = T0 + 60
    due = [s for s in slots if s < now]
    # Every fourth write refused, up to the last: Graph is still throttling.
    throttles = tuple(Throttle(at=s, retry_after=30.0) for s in due[::4])
    resume = throttles[-1].at + 30.0
    before = sum(p.counts)
    p = observe(p, Reports(throttles=throttles), now, limits)
    assert p.paused_until == resume
    assert math.isclose(p.pressure, 1 - len(throttles) / len(due), rel_tol=0.05)
    assert sum(p.counts) == before + len(throttles), "the re-sent writes count at their Retry-After"
    got, p = schedule(p, now, 10_000, limits)
    assert got
    assert got[0] >= resume
    assert got[-1] < now + limits.lookahead / 2, "one tick ahead while the cut holds"
    # Eased back to the full pace one window after the pause.
    assert rate_at(p, resume + 150, limits) == limits.full_rate
    assert rate_at(p, resume, limits) < limits.full_rate


def test_a_storm_of_429s_drops_to_the_floor_and_recovers_within_one_window() -> None:
    limits = PacingLimits(lookahead=120.0, floor=0.5)
    slots, p = schedule(Pacing(seen_until=T0), T0, 10_000, limits)
    now = T0 + 60
    storm = tuple(Throttle(at=s, retry_after=2.0) for s in slots if s < now)
    p = observe(p, Reports(throttles=storm), now, limits)
    assert rate_at(p, now + 2, limits) <= limits.full_rate * 0.1
    assert rate_at(p, p.pressure_at + 0.93 * 150, limits) >= 0.9 * GRAPH.rate


def test_reported_usage_above_the_target_leaves_the_excess_to_others() -> None:
    limits = PacingLimits(share=0.97)
    p = observe(Pacing(), Reports(usage=1.07), T0, limits)
    assert math.isclose(pressure_at(p, T0, limits), (0.97 - 0.10) / 0.97)
    calm = observe(Pacing(), Reports(usage=0.97), T0, limits)
    assert pressure_at(calm, T0, limits) == 1.0


def test_writes_reported_by_workers_take_room_in_the_window() -> None:
    limits = limits_for(SMALL, share=1.0, lookahead=30.0)
    p = observe(Pacing(), Reports(extra_writes=tuple(T0 + i * 0.1 for i in range(50))), T0, limits)
    got, _ = schedule(p, T0, 1_000, limits)
    assert len([s for s in got if s < T0 + 30]) == SMALL.writes - 50


def test_the_ceiling_caps_the_pace() -> None:
    limits = PacingLimits(ceiling=4.0, lookahead=60.0)
    got, _ = schedule(Pacing(), T0, 10_000, limits)
    assert len(got) == 240


def test_the_model_round_trips_through_its_stored_form() -> None:
    _, p = schedule(Pacing(), T0, 50, PacingLimits())
    p = add_writes(p, [T0 - 10.5])
    assert from_json(to_json(p)) == p
    assert from_json("{not json") is None
    lost = restart(T0, PacingLimits())
    assert schedule(lost, T0, 10, PacingLimits())[0] == []


def test_easing_after_a_429_counts_from_its_retry_after_not_from_the_tick_that_reads_it() -> None:
    limits = PacingLimits(lookahead=120.0, floor=0.5)
    slots, p = schedule(Pacing(seen_until=T0), T0, 10_000, limits)
    now = T0 + 60
    # Every write of the last 4 s before the tick refused, Retry-After 10 s: Graph takes writes again
    # at now + 6 at the latest.
    refused = tuple(Throttle(at=s, retry_after=10.0) for s in slots if now - 4 <= s < now)
    p = observe(p, Reports(throttles=refused), now, limits)
    assert p.paused_until == max(t.at for t in refused) + 10.0
    assert p.pressure_at == p.paused_until
    assert pressure_at(p, p.paused_until, limits) < 1.0


def test_429s_graph_has_since_got_over_cause_no_cut() -> None:
    limits = PacingLimits(lookahead=120.0)
    slots, p = schedule(Pacing(seen_until=T0), T0, 10_000, limits)
    now = T0 + 60
    # A storm in the first 20 s, Retry-After 10 s; the 25 s before the tick went through.
    storm = tuple(Throttle(at=s, retry_after=10.0) for s in slots if s < T0 + 20)
    assert recovered(add_writes(p, [t.at + t.retry_after for t in storm]), max(t.at for t in storm) + 10.0, now)
    p = observe(p, Reports(throttles=storm), now, limits)
    assert pressure_at(p, now, limits) == 1.0
    assert rate_at(p, now, limits) == limits.full_rate


def test_a_cut_is_lifted_at_the_first_tick_that_sees_graph_taking_writes_again() -> None:
    limits = PacingLimits(lookahead=120.0, floor=0.5)
    slots, p = schedule(Pacing(seen_until=T0), T0, 10_000, limits)
    now = T0 + 60
    storm = tuple(Throttle(at=s, retry_after=10.0) for s in slots if now - 10 <= s < now)
    p = observe(p, Reports(throttles=storm), now, limits)
    assert rate_at(p, now + 10, limits) <= 0.1 * limits.full_rate, "a storm still going on at the tick cuts"
    got, p = schedule(p, now, 10_000, limits)
    assert got == [], "one tick ahead while the cut holds: already scheduled"
    # The next tick: no 429 since, and the slots after the last one were taken.
    p = observe(p, Reports(), now + 60, limits)
    assert pressure_at(p, now + 60, limits) == 1.0
    assert p.last_throttle == 0.0
    got, p = schedule(p, now + 60, 10_000, limits)
    assert len(got) >= 0.99 * limits.full_rate * 60, "at full pace"
    assert got[-1] > now + 60 + 119, "two ticks ahead"
    # Without evidence (no write due since the last 429) the cut stays and eases.
    quiet = observe(Pacing(seen_until=now), Reports(throttles=(Throttle(now - 1, 10.0),)), now, limits)
    later = observe(quiet, Reports(), now + 60, limits)
    assert pressure_at(later, now + 60, limits) < 1.0


def test_a_model_stored_before_last_throttle_existed_still_loads() -> None:
    _, p = schedule(Pacing(), T0, 50, PacingLimits())
    old_form = to_json(p).replace(',"last_throttle":0.0', "")
    assert "last_throttle" not in old_form
    assert from_json(old_form) == p
