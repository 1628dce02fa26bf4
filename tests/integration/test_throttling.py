"""Graph throttling: workers re-schedule throttled removals with Retry-After (no hot retry, not a
failure), report it, the scheduler lowers its rate, and every removal still happens exactly once."""

from __future__ import annotations

from graphsim.faults import FaultRule
from graphsim.throttle import ThrottleLimits
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift.services.telemetry import THROTTLED

from .conftest import OpenStack, assert_all_final, completed, count, graph_losses, simulator, small_tenant, start

USERS = 30
# 12 writes per 150 sim seconds = per 1.5 real seconds: far below licshift's ceiling of 20/s.
TIGHT = ThrottleLimits(ru_per_window=50_000, app_writes=12, app_write_window_seconds=150.0)


async def test_a_compressed_write_quota_slows_the_wave_down_but_everything_is_removed(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(USERS), throttling=TIGHT) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        rates: list[float] = []

        async def done() -> bool:
            rates.append((await stack.rt.ledger.get_control()).value.write_rate)
            wave = await stack.get_wave(wave_id)
            return wave is not None and wave.status in (WaveStatus.COMPLETED, WaveStatus.HALTED)

        assert await stack.run_until(done, 90)
        wave = await stack.get_wave(wave_id)
        rows = await stack.outcomes(wave_id)
        throttle_events = await stack.events([THROTTLED])

    assert wave is not None
    assert wave.status is WaveStatus.COMPLETED, wave.status_reason
    assert sim.counters.throttled > 0, "the quota was hit"
    assert throttle_events, "workers reported the throttling"
    assert wave.counters.throttled > 0
    assert min(r for r in rates if r > 0) < 20, "the scheduler lowered its rate"
    assert count(rows, OutcomeStatus.REMOVED) == USERS
    assert count(rows, OutcomeStatus.FAILED) == 0, "throttling is never a failure"
    assert_all_final(rows)
    assert sim.counters.writes == USERS, "a throttled write is not applied; each removal applied once"
    assert graph_losses(sim) == []


async def test_a_429_whose_write_was_applied_still_ends_removed(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(5)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[1].id
        sim.faults.add(FaultRule.write_then_429(retry_after=1, count=1, path_contains=victim))
        wave_id = await stack.enqueue(start(group, force=True))
        wave = await completed(stack, wave_id)
        rows = {r.user_id: r for r in await stack.outcomes(wave_id)}

    assert wave.status is WaveStatus.COMPLETED
    assert rows[victim].status is OutcomeStatus.REMOVED, (rows[victim].status, rows[victim].reason)
    assert rows[victim].attempts == 1
    assert all(r.status is OutcomeStatus.REMOVED for r in rows.values())
    assert graph_losses(sim) == []
