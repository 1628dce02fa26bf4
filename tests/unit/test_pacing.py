"""Write pacing: the tick budget, the spread of visibility delays, and AIMD rate adaptation."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from licshift.pacing import DECREASE_FACTOR, RateLimits, clamp, next_rate, spread, tick_budget

rates = st.floats(min_value=0.01, max_value=20, allow_nan=False)
ticks = st.floats(min_value=1, max_value=3600, allow_nan=False)


@st.composite
def limits(draw: st.DrawFn) -> RateLimits:
    floor = draw(st.floats(min_value=0.01, max_value=20))
    ceiling = draw(st.floats(min_value=floor, max_value=20))
    step = draw(st.floats(min_value=0.01, max_value=20))
    return RateLimits(floor, ceiling, step, draw(ticks))


@given(rates, ticks, st.integers(min_value=0, max_value=10_000))
def test_budget_never_exceeds_rate_times_interval(rate: float, tick: float, used: int) -> None:
    budget = tick_budget(rate, tick, already_used=used)
    assert 0 <= budget <= rate * tick + 1e-6


@given(rates, ticks)
def test_budget_uses_the_whole_window_when_nothing_was_spent(rate: float, tick: float) -> None:
    assert tick_budget(rate, tick) >= int(rate * tick) - 1


def test_restores_done_by_workers_consume_budget() -> None:
    assert tick_budget(10, 60) == 600
    assert tick_budget(10, 60, already_used=15) == 585
    assert tick_budget(1, 5, already_used=9) == 0


@given(limits(), st.floats(min_value=0, max_value=100), st.integers(min_value=0, max_value=50))
def test_rate_stays_within_floor_and_ceiling(lim: RateLimits, rate: float, throttled: int) -> None:
    new = next_rate(rate, throttled, lim)
    assert lim.effective_floor - 1e-9 <= new <= lim.ceiling + 1e-9


@given(limits(), rates)
def test_throttling_never_raises_the_rate_and_a_clean_tick_never_lowers_it(lim: RateLimits, rate: float) -> None:
    current = clamp(rate, lim)
    assert next_rate(current, 1, lim) <= current
    assert next_rate(current, 0, lim) >= current


def test_multiplicative_decrease_and_additive_increase() -> None:
    lim = RateLimits(floor=0.5, ceiling=10, step=1, tick_seconds=60)
    assert next_rate(8, throttled=3, limits=lim) == 8 * DECREASE_FACTOR
    assert next_rate(0.6, throttled=1, limits=lim) == 0.5
    assert next_rate(4, throttled=0, limits=lim) == 5
    assert next_rate(9.5, throttled=0, limits=lim) == 10
    # Never set yet: start at the ceiling.
    assert next_rate(0, throttled=0, limits=lim) == 10


def test_floor_is_raised_so_a_short_tick_still_makes_progress() -> None:
    lim = RateLimits(floor=0.1, ceiling=10, step=1, tick_seconds=1)
    assert lim.effective_floor == 1
    assert tick_budget(next_rate(1, 5, lim), 1) == 1


@given(st.integers(min_value=0, max_value=5000), ticks)
def test_delays_are_within_the_tick_and_non_decreasing(count: int, tick: float) -> None:
    delays = spread(count, tick)
    assert len(delays) == count
    assert all(0 <= d < tick for d in delays)
    assert all(a <= b for a, b in itertools.pairwise(delays))


def test_delays_are_evenly_spread() -> None:
    assert spread(4, 60) == [0, 15, 30, 45]
    assert spread(0, 60) == []
