"""A scan's plan rows written into one partition per wave (versions before shards) and into 16
shard partitions (this version), through the ledger as the scan writes them: `put_outcomes` of 100
rows at a time (the scheduler's SCAN_BATCH; `--batch` to try others), 80 % of them `planned` (each
with its index row), then `index_outcomes`, then what a tick and a remover read of the full wave.

  .venv/bin/python bench/ledger_partition_bench.py [--rows 30000] [--layouts 1,16] [--batch 100]

Each layout gets its own in-memory Azurite (Azurite slows as it holds more rows overall, so sharing
one would favour whichever goes first). Per layout: plan rows written per second over each 5,000
rows (the scan's pace as the wave grows), the time to start the counts, point reads per second
(get_outcome of random rows, as removers do), and a tick's reads (count_outcomes, 100 `planned`
rows by index after a cursor, a full walk of the statuses).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from licshift.adapters.ledger import Ledger
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.services.scheduler import SCAN_BATCH
from licshift_local.azurite import Azurite

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
WINDOW = 5_000
READS = 500
RESULTS = Path(__file__).parent / "results"


def plan_row(wave_id: str, n: int, now: datetime) -> Outcome:
    planned = n % 5 != 0
    return Outcome(
        wave_id=wave_id,
        user_id=str(uuid.UUID(int=(n * 2_654_435_761) % 2**64 + 2**100)),
        sku_id=E3,
        status=OutcomeStatus.PLANNED if planned else OutcomeStatus.BLOCKED,
        decision="remove" if planned else "block",
        reason="" if planned else "plans-would-be-lost",
        user_principal_name=f"user{n}@contoso.example",
        display_name=f"User {n}",
        actor="licshift",
        updated_at=now,
    )


async def one_layout(shards: int, rows: int, batch: int) -> dict[str, Any]:
    azurite = Azurite.start(in_memory=True)
    ledger = Ledger(azurite.connection_string, prefix=f"b{uuid.uuid4().hex[:10]}", outcome_shards=shards)
    try:
        await ledger.ensure_tables()
        wave_id, now = str(uuid.uuid4()), datetime.now(UTC)
        plan = [plan_row(wave_id, n, now) for n in range(rows)]
        windows: list[dict[str, Any]] = []
        started = last = time.perf_counter()
        for start in range(0, rows, batch):
            await ledger.put_outcomes(plan[start : start + batch])
            done = start + batch
            if done % WINDOW == 0:
                now_s = time.perf_counter()
                windows.append({"rows": done, "rows_per_s": round(WINDOW / (now_s - last))})
                print(shards, windows[-1], flush=True)
                last = now_s
        write_s = time.perf_counter() - started
        t0 = time.perf_counter()
        await ledger.index_outcomes(wave_id, Counter(o.status for o in plan))
        index_s = time.perf_counter() - t0

        picks = random.Random(8).sample(plan, min(READS, rows))
        t0 = time.perf_counter()
        for o in picks:
            assert await ledger.get_outcome(wave_id, o.user_id, o.sku_id) is not None
        reads_per_s = len(picks) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        counts = await ledger.count_outcomes(wave_id)
        count_s = time.perf_counter() - t0
        cursor = sorted(o.key for o in plan)[rows // 2]
        t0 = time.perf_counter()
        page = [o async for o in ledger.iter_work(wave_id, OutcomeStatus.PLANNED, after_key=cursor, limit=100)]
        work_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        walked = len([o async for o in ledger.iter_outcomes(wave_id, fields=("status",))])
        walk_s = time.perf_counter() - t0
        assert counts[OutcomeStatus.PLANNED] == sum(o.status is OutcomeStatus.PLANNED for o in plan)
        assert len(page) == 100
        assert walked == rows
        return {
            "shards": shards,
            "rows": rows,
            "write_s": round(write_s, 1),
            "rows_per_s_overall": round(rows / write_s),
            "rows_per_s_by_window": windows,
            "index_outcomes_s": round(index_s, 2),
            "point_reads_per_s": round(reads_per_s),
            "count_outcomes_s": round(count_s, 3),
            "iter_work_100_s": round(work_s, 3),
            "iter_outcomes_all_s": round(walk_s, 2),
        }
    finally:
        await ledger.aclose()
        azurite.stop()


def at(result: dict[str, Any], rows: int) -> int | None:
    return next((w["rows_per_s"] for w in result["rows_per_s_by_window"] if w["rows"] == rows), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--layouts", default="1,16", help="shard counts to compare (1 = one partition)")
    parser.add_argument("--batch", type=int, default=SCAN_BATCH, help="rows per put_outcomes (the scan's batch)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ledger_partition.json")
    args = parser.parse_args()
    if WINDOW % args.batch:
        parser.error(f"--batch must divide {WINDOW}")
    results = [asyncio.run(one_layout(int(s), args.rows, args.batch)) for s in args.layouts.split(",")]
    record = {
        "benchmark": "ledger_partition",
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scan_batch": args.batch,
        "layouts": results,
        "rows_per_s_in_window_ending_at": {
            str(r["shards"]): {str(n): at(r, n) for n in (WINDOW, 10_000, 30_000, 100_000) if at(r, n)} for r in results
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "layouts"}, indent=2))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "rows_per_s_by_window"}))


if __name__ == "__main__":
    main()
