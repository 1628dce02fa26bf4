"""One write budget per storage: two hosts (two schedulers, two sets of workers) on one Azurite
storage migrate a wave together without ever exceeding the write ceiling, measured from the
simulator's request log; the tick lease lets one scheduler run the ticks, the other skips."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

import pytest

from licshift.localrun import LocalStack, StackOptions
from licshift.outcomes import OutcomeStatus
from licshift.waves import WaveStatus

from .conftest import count, graph_losses, simulator, small_tenant, start

USERS = 40
CEILING = 4
WINDOW = 5.0


def most_in_window(times: list[datetime], seconds: float) -> int:
    """The largest number of `times` inside any window of `seconds`."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] > timedelta(seconds=seconds):
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_two_hosts_on_one_storage_never_exceed_the_write_ceiling(
    storage_connection_string: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="licshift.lease")
    options = StackOptions(
        namespace=f"it{uuid.uuid4().hex[:10]}", overrides={"LICSHIFT_WRITE_RATE_CEILING": str(CEILING)}
    )
    async with simulator(small_tenant(USERS)) as sim:
        first = LocalStack(sim.base_url, storage_connection_string, options)
        second = LocalStack(sim.base_url, storage_connection_string, options)
        async with first, second:
            wave_id = await first.enqueue(start(sim.scenario.id("all"), force=True))

            async def finished() -> bool:
                wave = await first.get_wave(wave_id)
                return wave is not None and wave.status in (WaveStatus.COMPLETED, WaveStatus.HALTED)

            done = await asyncio.gather(first.run_until(finished, 120), second.run_until(finished, 120))
            wave = await first.get_wave(wave_id)
            rows = await first.outcomes(wave_id)
            removers = [s.host.stats["remove_direct_license"].deliveries for s in (first, second)]

    assert all(done)
    assert wave is not None
    assert wave.status is WaveStatus.COMPLETED, wave.status_reason
    assert count(rows, OutcomeStatus.REMOVED) == USERS
    assert all(n > 0 for n in removers), f"both hosts' workers removed licenses: {removers}"
    skipped = [r for r in caplog.records if r.name == "licshift.lease" and "tick skipped" in r.getMessage()]
    assert skipped, "the scheduler without the lease skipped its ticks"
    writes = [r.at for r in sim.counters.log if r.write and r.endpoint.endswith("assignLicense")]
    assert len(writes) == USERS
    peak = most_in_window(writes, WINDOW)
    # Visibility delays are whole seconds, so writes come in per-second bunches: allow one second's worth.
    assert peak <= CEILING * (WINDOW + 1), f"{peak} writes in {WINDOW:g} s with a ceiling of {CEILING}/s"
    assert graph_losses(sim) == []
