"""The whole pipeline on one machine: `licshift demo`'s migration (dry run, canary, the rest) of the
seed-example tenant, timed, with Graph calls counted by the simulator and the process's peak RSS.

  .venv/bin/python bench/pipeline_bench.py [--users 1000] [--out bench/results/pipeline.json]

The write rate is bounded by design (LICSHIFT_WRITE_RATE_CEILING, 20/s in the local stack, Graph's
per-app quota), so the interesting ratios are achieved writes/s against that ceiling, and Graph reads
per removed user (the fresh read and the post-check are the price of S1 and S3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

from licshift_local.demo import Progress, demo_migration


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pipeline.json")
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(demo_migration("seed-example", args.users, 10, Progress(None)))
    wall = time.monotonic() - started
    removal_waves = [w for w in result["waves"] if w["kind"] != "dry-run"]
    removed = result["removed"]
    record = {
        "benchmark": "pipeline",
        "scenario": "seed-example",
        "users": args.users,
        "machine": {"python": platform.python_version(), "cpus": len(__import__("os").sched_getaffinity(0))},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": round(wall, 1),
        "removed": removed,
        "lost_licenses": result["lost_licenses"],
        "graph": result["graph"],
        "graph_reads_per_removal": round(result["graph"]["reads"] / removed, 2) if removed else None,
        "writes_per_removal": round(result["graph"]["writes"] / removed, 3) if removed else None,
        "removals_per_s_overall": round(removed / wall, 2),
        "waves": len(removal_waves) + 1,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
