"""A wave waits for the group's license processing (Microsoft's step 4) and halts with an alert when
processing takes longer than LICSHIFT_PROCESSING_TIMEOUT_MINUTES."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from licshift.rules.outcomes import Severity
from licshift.rules.waves import WaveStatus
from licshift.services import scheduler
from licshift.services.telemetry import PROCESSING_TIMEOUT

from .conftest import OpenStack, simulator, start


async def test_a_group_still_processing_keeps_the_wave_waiting_then_halts_it(open_stack: OpenStack) -> None:
    async with simulator("adversarial") as sim, open_stack(sim) as stack:
        slow = next(w for w in sim.scenario.waves if w.group != sim.scenario.wave.group)
        assert sim.tenant.group_processing_state(slow.group) != "ProcessingComplete"
        wave_id = await stack.enqueue(start(slow.group, skus=slow.skus, force=True))
        await stack.wait_for_wave(wave_id, {"waiting"}, 10)
        await stack.idle(2)
        waiting = await stack.get_wave(wave_id)
        assert waiting is not None
        assert waiting.status is WaveStatus.WAITING, "no scan before processing completes"
        assert await stack.outcomes(wave_id) == []

        # Five hours later (the default timeout is four): one tick with a clock that says so.
        later = stack.rt.now() + timedelta(hours=5)
        await scheduler.tick(replace(stack.rt, clock=lambda: later))
        halted = await stack.get_wave(wave_id)
        alerts = await stack.events([PROCESSING_TIMEOUT], since_minutes=24 * 60)

    assert halted is not None
    assert halted.status is WaveStatus.HALTED
    assert "LICSHIFT_PROCESSING_TIMEOUT_MINUTES" in halted.status_reason
    assert [a.severity for a in alerts] == [Severity.ALERT]
    assert sim.counters.writes == 0
