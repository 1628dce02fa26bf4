"""S5: a paused, cancelled or kill-switched wave performs no further removal; paused and
kill-switched waves continue where they stopped, a cancelled one closes its remaining rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from graphsim.server import Simulator
from licshift.ports.graph import LicenseGraph
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift_local.stack import LocalStack

from .conftest import OpenStack, assert_all_final, completed, count, graph_losses, simulator, small_tenant, start

SLOW = {"LICSHIFT_WRITE_RATE_CEILING": "4", "LICSHIFT_WRITE_RATE_FLOOR": "1"}
"""Four removals a second: slow enough to stop a wave halfway."""
USERS = 30
"""Enough that a wave is still removing when the stop takes effect (within LICSHIFT_STATE_CACHE_SECONDS)."""
IN_FLIGHT = 0.5
"""Seconds from a removal's last check to its Graph write starting (the one removal in flight)."""


async def some_removed(stack: LocalStack, wave_id: str) -> None:
    async def started() -> bool:
        return count(await stack.outcomes(wave_id), OutcomeStatus.REMOVED) >= 2

    assert await stack.run_until(started, 30)


async def quiet_writes(stack: LocalStack, sim: Simulator, seconds: float = 1.5) -> int:
    """Let in-flight removals finish (their delays end within a tick) and the remover's shared read of
    the wave and kill switch expire (LICSHIFT_STATE_CACHE_SECONDS), then prove no write happens."""
    await stack.idle(1.2 + stack.settings.state_cache_seconds)
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


async def test_the_control_tables_kill_switch_stops_removals_within_the_documented_bound(open_stack: OpenStack) -> None:
    """The remover shares its reads of the control row for LICSHIFT_STATE_CACHE_SECONDS: no Graph write
    starts later than that after the switch is saved, but for the removal already past its last check."""
    writes: list[float] = []

    def timed(graph: LicenseGraph) -> LicenseGraph:
        return BeforeRemove(graph, lambda: writes.append(time.monotonic()))

    # Ticks that schedule 10 s ahead (two 5 s windows): most removals are on the queue when the switch
    # is saved, so it is the remover's own check that has to stop them, not the next tick.
    ahead = {**SLOW, "LICSHIFT_TICK_SECONDS": "5"}
    async with simulator(small_tenant(40)) as sim, open_stack(sim, overrides=ahead, graph_wrapper=timed) as stack:
        wave_id = await stack.enqueue(start(sim.scenario.id("all"), force=True))
        await some_removed(stack, wave_id)
        control = await stack.rt.ledger.get_control()
        await stack.rt.ledger.save_control(replace(control.value, kill_switch=True), control.etag)
        switched = time.monotonic()
        await stack.idle(stack.settings.state_cache_seconds + 2.0)
        removed = count(await stack.outcomes(wave_id), OutcomeStatus.REMOVED)

    bound = stack.settings.state_cache_seconds
    assert bound == 2.0, "the documented default"
    late = [round(at - switched, 2) for at in writes if at > switched + bound + IN_FLIGHT]
    assert late == [], f"writes started this many seconds after the kill switch: {late}"
    assert removed < 40, "the wave went on removing"


class BeforeRemove:
    """A LicenseGraph that calls `hook()` as each remove_direct starts."""

    def __init__(self, inner: LicenseGraph, hook: Callable[[], None]) -> None:
        self._inner = inner
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def remove_direct(self, user_id: str, sku_id: str) -> None:
        self._hook()
        await self._inner.remove_direct(user_id, sku_id)
