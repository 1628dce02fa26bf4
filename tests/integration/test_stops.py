"""S5: a paused, cancelled or kill-switched wave performs no further removal; paused and
kill-switched waves continue where they stopped, a cancelled one closes its remaining rows."""

from __future__ import annotations

from graphsim.server import Simulator
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift_local.stack import LocalStack

from .conftest import OpenStack, assert_all_final, completed, count, graph_losses, simulator, small_tenant, start

SLOW = {"LICSHIFT_WRITE_RATE_CEILING": "4", "LICSHIFT_WRITE_RATE_FLOOR": "1"}
"""Four removals a second: slow enough to stop a wave halfway."""
USERS = 12


async def some_removed(stack: LocalStack, wave_id: str) -> None:
    async def started() -> bool:
        return count(await stack.outcomes(wave_id), OutcomeStatus.REMOVED) >= 2

    assert await stack.run_until(started, 30)


async def quiet_writes(stack: LocalStack, sim: Simulator, seconds: float = 1.5) -> int:
    """Let in-flight removals finish (their delays end within a tick), then prove no write happens."""
    await stack.idle(1.2)
    writes = sim.counters.writes
    await stack.idle(seconds)
    assert sim.counters.writes == writes, "a removal happened while the wave was stopped"
    return int(writes)


async def test_pause_stops_removals_and_resume_finishes_the_wave(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(USERS)) as sim, open_stack(sim, overrides=SLOW) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        await some_removed(stack, wave_id)
        await stack.enqueue({"command": "pause", "wave_id": wave_id})
        await stack.wait_for_wave(wave_id, {"paused"}, 10)
        writes = await quiet_writes(stack, sim)
        assert writes < USERS
        await stack.enqueue({"command": "resume", "wave_id": wave_id})
        wave = await completed(stack, wave_id)
        rows = await stack.outcomes(wave_id)

    assert wave.status is WaveStatus.COMPLETED
    assert count(rows, OutcomeStatus.REMOVED) == USERS
    assert sim.counters.writes == USERS
    assert graph_losses(sim) == []


async def test_cancel_stops_removals_and_closes_the_rest(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(USERS)) as sim, open_stack(sim, overrides=SLOW) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        await some_removed(stack, wave_id)
        await stack.enqueue({"command": "cancel", "wave_id": wave_id})
        await stack.wait_for_wave(wave_id, {"cancelled"}, 10)

        async def closed() -> bool:
            return all(
                r.status not in (OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED, OutcomeStatus.REMOVING)
                for r in await stack.outcomes(wave_id)
            )

        assert await stack.run_until(closed, 20)
        writes = await quiet_writes(stack, sim)
        rows = await stack.outcomes(wave_id)

    assert_all_final(rows)
    removed, not_attempted = count(rows, OutcomeStatus.REMOVED), count(rows, OutcomeStatus.NOT_ATTEMPTED)
    assert removed + not_attempted == USERS
    assert not_attempted > 0
    assert writes == removed
    assert graph_losses(sim) == []


async def test_the_kill_switch_stops_every_wave_until_lifted(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(USERS)) as sim, open_stack(sim, overrides=SLOW) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        await some_removed(stack, wave_id)
        await stack.enqueue({"command": "kill-switch", "on": True})
        assert await stack.run_until(lambda: _kill_switch(stack, True), 10)
        writes = await quiet_writes(stack, sim)
        assert writes < USERS
        held = await stack.get_wave(wave_id)
        assert held is not None
        assert held.status is WaveStatus.REMOVING
        await stack.enqueue({"command": "kill-switch", "on": False})
        wave = await completed(stack, wave_id)
        rows = await stack.outcomes(wave_id)

    assert wave.status is WaveStatus.COMPLETED
    assert count(rows, OutcomeStatus.REMOVED) == USERS
    assert sim.counters.writes == USERS


async def _kill_switch(stack: LocalStack, on: bool) -> bool:
    control = await stack.rt.ledger.get_control()
    return control.value.kill_switch is on
