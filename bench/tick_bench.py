"""What one scheduler tick costs as the wave grows: a ledger seeded directly with a wave of 1,000,
10,000 and 100,000 outcome rows (Azurite in memory), the same work in each (800 removals still
planned, the rest already removed: the first tick enqueues them, the others find nothing to start),
ticks 60 s apart on an injected clock. The ledger is seeded as a scan leaves it (outcome rows, the
index rows of the planned ones, the counts row: docs/ledger.md).

  .venv/bin/python bench/tick_bench.py [--sizes 1000,10000,100000]

Each size is seeded by one process and ticked by a fresh one (so peak RSS is the ticks' alone); per
size: the wall and CPU time of a tick (the first, which enqueues, and the median), the Python heap
peak during a tick (tracemalloc) and the ticking process's peak RSS. Ratios against the smallest size are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import ServiceRequestError

from licshift.adapters.ledger import Ledger
from licshift.adapters.queues import StorageQueues
from licshift.ports.graph import GroupLicenseInfo
from licshift.rules.decide import PROCESSING_COMPLETE, Policy
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import Selection, SelectionKind, Wave, WaveCounters, WaveStatus
from licshift.services import scheduler
from licshift.services.runtime import Runtime
from licshift.settings import Settings
from licshift_local.azurite import Azurite

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
GROUP = "0f5c3a50-6b7a-4a0e-9c51-3f1b7d2a8e10"
PLANNED = 800
TICKS = 3
RESULTS = Path(__file__).parent / "results"


class ProcessedGroup:
    """The only Graph call a REMOVING tick makes: the group's processing state (always complete)."""

    async def group_license_info(self, group_id: str) -> GroupLicenseInfo:
        return GroupLicenseInfo(group_id, "All users", PROCESSING_COMPLETE, ())

    def take_usage(self) -> float:
        return 0.0


def user(n: int) -> str:
    return f"{n:08d}-0000-4000-8000-000000000000"


def outcome(wave_id: str, i: int, removed: int, now: datetime) -> Outcome:
    plans = frozenset(str(uuid.UUID(int=p)) for p in range(20))
    return Outcome(
        wave_id=wave_id,
        user_id=user(i),
        sku_id=E3,
        status=OutcomeStatus.REMOVED if i < removed else OutcomeStatus.PLANNED,
        decision="remove",
        user_principal_name=f"user{i}@contoso.example",
        before_plans=plans,
        after_plans=plans,
        attempts=1 if i < removed else 0,
        actor="remover",
        updated_at=now,
    )


async def seed(ledger: Ledger, size: int, now: datetime) -> Wave:
    """A wave as its scan leaves it (rows, index rows, counts), then all but PLANNED removed; written
    5,000 rows at a time so seeding's own memory stays small."""
    wave = Wave(
        wave_id=str(uuid.uuid4()),
        group_id=GROUP,
        sku_ids=(E3,),
        selection=Selection(SelectionKind.ALL),
        policy=Policy.NO_LOSS,
        dry_run=False,
        force=True,
        requested_by="bench",
        status=WaveStatus.REMOVING,
        created_at=now,
        updated_at=now,
    )
    removed = size - PLANNED
    for start in range(0, size, 5_000):
        chunk = [outcome(wave.wave_id, i, removed, now) for i in range(start, min(size, start + 5_000))]
        for attempt in range(5):
            try:
                await ledger.put_outcomes(chunk)  # upserts: a retry after a reset connection is harmless
                break
            except ServiceRequestError:
                if attempt == 4:
                    raise
                await asyncio.sleep(2.0)
    await ledger.index_outcomes(wave.wave_id, {OutcomeStatus.PLANNED: PLANNED, OutcomeStatus.REMOVED: removed})
    counters = WaveCounters(members=size, selected=size, to_remove=size, planned=PLANNED, removed=removed)
    wave = replace(wave, counters=counters, enqueue_cursor="")
    await ledger.create_wave(wave)
    return wave


def clients(connection: str, name: str) -> tuple[Ledger, StorageQueues]:
    ledger = Ledger(connection, prefix=name)
    queue = StorageQueues(connection, waves_queue=f"{name}-waves", removals_queue=f"{name}-removals")
    return ledger, queue


async def seed_size(connection: str, name: str, size: int) -> dict[str, Any]:
    """Seed in its own process: the tick's process then holds nothing but the tick."""
    ledger, queue = clients(connection, name)
    await ledger.ensure_tables()
    await queue.ensure_queues()
    seeded = time.monotonic()
    await seed(ledger, size, datetime.now(UTC))
    await ledger.aclose()
    await queue.aclose()
    return {"seed_s": round(time.monotonic() - seeded, 1)}


async def tick_size(connection: str, name: str, size: int) -> dict[str, Any]:
    ledger, queue = clients(connection, name)
    (wave,) = await ledger.list_waves()
    clock = [wave.created_at]
    settings = Settings(tick_seconds=60, removals_queue=f"{name}-removals", waves_queue=f"{name}-waves")
    rt = Runtime(settings, ProcessedGroup(), ledger, queue, clock=lambda: clock[0])  # type: ignore[arg-type]
    ticks = []
    for _ in range(TICKS):
        tracemalloc.start()
        wall, cpu = time.monotonic(), time.process_time()
        report = await scheduler.tick(rt)
        ticks.append(
            {
                "wall_s": round(time.monotonic() - wall, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
                "heap_peak_mb": round(tracemalloc.get_traced_memory()[1] / 2**20, 1),
                "enqueued": report.enqueued,
            }
        )
        tracemalloc.stop()
        clock[0] += timedelta(seconds=60)
    await ledger.delete_tables()
    for q in (queue.waves_queue, queue.removals_queue):
        await queue.delete_queue(q)
    await ledger.aclose()
    await queue.aclose()
    return {
        "rows": size,
        "ticks": ticks,
        "first_tick_cpu_s": ticks[0]["cpu_s"],
        "first_tick_wall_s": ticks[0]["wall_s"],
        "tick_wall_s_median": sorted(t["wall_s"] for t in ticks)[len(ticks) // 2],
        "tick_cpu_s_median": sorted(t["cpu_s"] for t in ticks)[len(ticks) // 2],
        "tick_heap_peak_mb_max": max(t["heap_peak_mb"] for t in ticks),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise ChildFailed(f"{' '.join(args[:2])} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class ChildFailed(Exception):
    pass


def one_size(connection: str, size: int, attempts: int = 3) -> dict[str, Any]:
    """Seed and tick one size in fresh tables; a loaded machine's Azurite sometimes resets a
    connection mid-seed: then again, in new tables (up to `attempts` times)."""
    for attempt in range(attempts):
        name = f"b{uuid.uuid4().hex[:10]}"
        try:
            seeded = run_child("--seed", str(size), "--name", name, "--connection", connection)
            return {**run_child("--tick", str(size), "--name", name, "--connection", connection), **seeded}
        except ChildFailed as exc:
            if attempt == attempts - 1:
                raise SystemExit(str(exc)) from None
            print(f"{size} rows: attempt {attempt + 1} failed, again in new tables", file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tick", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help=argparse.SUPPRESS)
    parser.add_argument("--connection", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        print(json.dumps(asyncio.run(seed_size(args.connection, args.name, args.seed))))
        return
    if args.tick:
        print(json.dumps(asyncio.run(tick_size(args.connection, args.name, args.tick))))
        return
    azurite = Azurite.start(in_memory=True)
    connection = azurite.connection_string
    try:
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            results.append(one_size(connection, size))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "ticks"}), flush=True)
    finally:
        azurite.stop()
    base = results[0]
    record = {
        "benchmark": "tick",
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "planned_per_wave": PLANNED,
        "sizes": results,
        "ratios_vs_smallest": {
            str(r["rows"]): {
                "first_tick_cpu": round(r["first_tick_cpu_s"] / base["first_tick_cpu_s"], 2),
                "tick_cpu": round(r["tick_cpu_s_median"] / base["tick_cpu_s_median"], 2),
                "tick_wall": round(r["tick_wall_s_median"] / base["tick_wall_s_median"], 2),
                "tick_heap_peak": round(r["tick_heap_peak_mb_max"] / base["tick_heap_peak_mb_max"], 2),
                "peak_rss": round(r["peak_rss_mb"] / base["peak_rss_mb"], 2),
            }
            for r in results
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tick.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["ratios_vs_smallest"], indent=2))


if __name__ == "__main__":
    main()
