"""The scheduler's hold on the write quota, against Azurite: slots reserved before sending, the unused
given back, workers' reports folded in, and a racing scheduler left without slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from licshift.adapters.ledger import Ledger
from licshift.ports.graph import LicenseGraph
from licshift.ports.store import WorkQueue
from licshift.rules import pacing
from licshift.rules.outcomes import Event
from licshift.services import quota, telemetry
from licshift.services.runtime import Runtime
from licshift.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LOOKBACK = timedelta(minutes=10)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class UsageGraph:
    """Only what the usage reporter reads of the Graph port."""

    def __init__(self) -> None:
        self.usage = 0.0

    def take_usage(self) -> float:
        usage, self.usage = self.usage, 0.0
        return usage


def runtime(ledger: Ledger, clock: Clock, graph: Any = None, **settings: Any) -> Runtime:
    return Runtime(
        settings=Settings(tick_seconds=60, **settings),
        graph=cast(LicenseGraph, graph or UsageGraph()),
        ledger=ledger,
        queue=cast(WorkQueue, None),
        clock=clock,
    )


async def stored(ledger: Ledger) -> pacing.Pacing:
    model = pacing.from_json((await ledger.get_pacing()).value)
    assert model is not None
    return model


async def test_slots_are_saved_before_sending_and_the_unused_given_back(ledger: Ledger) -> None:
    clock = Clock()
    rt = runtime(ledger, clock)
    held = await quota.reserve(rt, T0, wanted=quota.UNLIMITED, lookback=LOOKBACK)
    # Two ticks ahead at 0.97 of 20/s.
    assert 2300 <= len(held.slots) <= 2330
    assert sum((await stored(ledger)).counts) == len(held.slots)
    await quota.settle(rt, held, 100, T0 + timedelta(seconds=5))
    kept = await stored(ledger)
    assert sum(kept.counts) == 100
    clock.now = T0 + timedelta(seconds=3)  # before the first slot given back (at about 5.2 s)
    again = await quota.reserve(rt, clock.now, wanted=quota.UNLIMITED, lookback=LOOKBACK)
    assert again.slots[0] == held.slots[100], "the schedule resumes at the first slot given back"


async def test_a_racing_scheduler_starts_over_from_what_the_other_saved(ledger: Ledger) -> None:
    rt = runtime(ledger, Clock())
    mine = await quota.reserve(rt, T0, wanted=10, lookback=LOOKBACK)
    read = await ledger.get_pacing()
    original = ledger.get_pacing
    stale = [read]

    async def first_stale() -> Any:
        # The first read is from before another scheduler's save; later reads are current.
        return stale.pop() if stale else await original()

    await ledger.save_pacing(read.value, read.etag, T0)  # another tick saved meanwhile
    ledger.get_pacing = first_stale  # type: ignore[method-assign]
    try:
        theirs = await quota.reserve(rt, T0 + timedelta(seconds=1), wanted=10, lookback=LOOKBACK)
    finally:
        ledger.get_pacing = original  # type: ignore[method-assign]
    assert len(theirs.slots) == 10
    assert theirs.slots[0] > mine.slots[-1], "slots of both fit one model"
    assert sum((await stored(ledger)).counts) == 20


async def test_workers_reports_pause_and_slow_the_schedule(ledger: Ledger) -> None:
    clock = Clock()
    rt = runtime(ledger, clock)
    first = await quota.reserve(rt, T0, wanted=quota.UNLIMITED, lookback=LOOKBACK)
    await quota.settle(rt, first, len(first.slots), T0)
    for i in range(300):
        await telemetry.emit(
            ledger,
            Event(kind=telemetry.THROTTLED, message="429", wave_id="w1", data={"retry_after": 20.0}),
            T0 + timedelta(seconds=50, milliseconds=i),
        )
    clock.now = T0 + timedelta(seconds=60)
    held = await quota.reserve(rt, clock.now, wanted=quota.UNLIMITED, lookback=LOOKBACK)
    assert held.throttled_by_wave == {"w1": 300}
    assert held.model.paused_until >= (T0 + timedelta(seconds=70)).timestamp()
    assert held.rate < quota.limits(rt.settings).full_rate
    assert all(s >= held.model.paused_until for s in held.slots[:1])


async def test_graphs_usage_header_reaches_the_scheduler_as_an_event(ledger: Ledger) -> None:
    clock = Clock()
    graph = UsageGraph()
    rt = runtime(ledger, clock, graph)
    reporter = quota.UsageReporter()
    graph.usage = 1.12
    await reporter.report(rt)
    graph.usage = 1.3
    clock.now = T0 + timedelta(seconds=1)
    await reporter.report(rt)  # within 10 s of the last report: kept as the peak for the next one
    events = [e async for e in ledger.iter_events(T0 - timedelta(minutes=1), kinds=[telemetry.QUOTA_USAGE])]
    assert [e.data["usage"] for e in events] == [1.12]
    held = await quota.reserve(rt, T0 + timedelta(seconds=2), wanted=quota.UNLIMITED, lookback=LOOKBACK)
    assert held.rate < quota.limits(rt.settings).full_rate
