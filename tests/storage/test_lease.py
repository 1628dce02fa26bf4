"""The tick lease against Azurite: one scheduler tick at a time per storage account; a second
scheduler skips, a dead holder's lease expires, racing takers get one winner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import cast

from licshift.adapters.ledger import Ledger
from licshift.ports.graph import LicenseGraph
from licshift.ports.store import WorkQueue
from licshift.services import lease, scheduler
from licshift.services.runtime import Runtime
from licshift.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def runtime(ledger: Ledger, now: datetime = T0) -> Runtime:
    return Runtime(
        settings=Settings(tick_seconds=60),
        graph=cast(LicenseGraph, None),
        ledger=ledger,
        queue=cast(WorkQueue, None),
        clock=lambda: now,
    )


async def test_a_second_scheduler_skips_while_the_first_holds_the_lease(ledger: Ledger) -> None:
    first, second = runtime(ledger), runtime(ledger)
    held = await lease.acquire(first, T0)
    assert held is not None
    assert await lease.acquire(second, T0 + timedelta(seconds=30)) is None
    stored = (await ledger.get_lease()).value
    assert stored.holder == first.instance_id
    assert stored.expires_at == T0 + lease.lease_length(60)
    # The holder's next tick renews it; the second scheduler keeps skipping.
    assert await lease.acquire(first, T0 + timedelta(seconds=60)) is not None
    assert await lease.acquire(second, T0 + lease.lease_length(60) + timedelta(seconds=1)) is None
    renewed = (await ledger.get_lease()).value
    assert renewed.expires_at == T0 + timedelta(seconds=60) + lease.lease_length(60)


async def test_a_dead_holders_lease_expires(ledger: Ledger) -> None:
    first, second = runtime(ledger), runtime(ledger)
    assert await lease.acquire(first, T0) is not None  # and never renewed: the host died
    expiry = T0 + lease.lease_length(60)
    assert await lease.acquire(second, expiry - timedelta(seconds=1)) is None
    assert await lease.acquire(second, expiry) is not None
    assert (await ledger.get_lease()).value.holder == second.instance_id


async def test_racing_schedulers_get_one_winner(ledger: Ledger) -> None:
    runtimes = [runtime(ledger) for _ in range(6)]
    results = await asyncio.gather(*(lease.acquire(rt, T0) for rt in runtimes))
    winners = [rt for rt, etag in zip(runtimes, results, strict=True) if etag is not None]
    assert len(winners) == 1
    assert (await ledger.get_lease()).value.holder == winners[0].instance_id


async def test_the_tick_skips_without_the_lease(ledger: Ledger) -> None:
    first, second = runtime(ledger), runtime(ledger)
    assert await lease.acquire(first, T0) is not None
    report = await scheduler.tick(second)
    assert report.skipped
    assert (report.budget, report.enqueued, report.waves) == (0, 0, {})
    assert (await ledger.get_pacing()).value == "", "a skipped tick reserves no write slot"
