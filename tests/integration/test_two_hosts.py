"""One write budget per storage: two hosts on one Azurite storage (a `licshift host` process and the
test's own local host) migrate a wave together without exceeding the write ceiling, measured from
the simulator's request log. The tick lease lets one scheduler run the ticks; the other skips."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from licshift.adapters.ledger import Ledger
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift_local.stack import LocalStack, StackOptions

from .conftest import count, graph_losses, simulator, small_tenant, start

USERS = 40
CEILING = 4
WINDOW = 5.0


async def _holder(ledger: Ledger) -> str:
    with contextlib.suppress(ResourceNotFoundError):  # the other host creates the tables
        return (await ledger.get_lease()).value.holder
    return ""


def most_in_window(times: list[datetime], seconds: float) -> int:
    """The largest number of `times` inside any window of `seconds`."""
    times = sorted(times)
    best = first = 0
    for last, at in enumerate(times):
        while at - times[first] > timedelta(seconds=seconds):
            first += 1
        best = max(best, last - first + 1)
    return best


async def test_two_hosts_on_one_storage_never_exceed_the_write_ceiling(
    storage_connection_string: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="licshift.services.lease")
    options = StackOptions(
        namespace=f"it{uuid.uuid4().hex[:10]}", overrides={"LICSHIFT_WRITE_RATE_CEILING": str(CEILING)}
    )
    async with simulator(small_tenant(USERS)) as sim:
        ours = LocalStack(sim.base_url, storage_connection_string, options)
        other = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "licshift"),
            "host",
            env={**os.environ, **ours.env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            # The other host's scheduler ticks first and holds the lease; ours, started after, skips.
            async with Ledger.from_settings(ours.settings) as ledger:
                deadline = asyncio.get_running_loop().time() + 60
                while not (holder := await _holder(ledger)):
                    assert asyncio.get_running_loop().time() < deadline, "the other host never ticked"
                    await asyncio.sleep(0.2)
            async with ours:
                wave_id = await ours.enqueue(start(sim.scenario.id("all"), force=True))

                async def finished() -> bool:
                    wave = await ours.get_wave(wave_id)
                    return wave is not None and wave.status in (WaveStatus.COMPLETED, WaveStatus.HALTED)

                assert await ours.run_until(finished, 120)
                wave = await ours.get_wave(wave_id)
                rows = await ours.outcomes(wave_id)
                ours_removed = ours.host.stats["remove_direct_license"].deliveries
                still_holder = (await ours.rt.ledger.get_lease()).value.holder
                our_id = ours.rt.instance_id
        finally:
            other.terminate()
            await other.wait()

    assert wave is not None
    assert wave.status is WaveStatus.COMPLETED, wave.status_reason
    assert count(rows, OutcomeStatus.REMOVED) == USERS
    assert holder != our_id
    assert still_holder == holder, "the lease holder renewed it at every tick"
    skipped = [r for r in caplog.records if r.name == "licshift.services.lease" and "tick skipped" in r.getMessage()]
    assert skipped, "our scheduler skipped its ticks"
    assert ours_removed > 0, "our workers removed what the other host's scheduler enqueued"
    writes = [r.at for r in sim.counters.log if r.write and r.endpoint.endswith("assignLicense")]
    assert len(writes) == USERS
    peak = most_in_window(writes, WINDOW)
    # Visibility delays are whole seconds, so writes come in per-second bunches: allow one second's worth.
    assert peak <= CEILING * (WINDOW + 1), f"{peak} writes in {WINDOW:g} s with a ceiling of {CEILING}/s"
    assert graph_losses(sim) == []
