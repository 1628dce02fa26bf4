"""Graph reads per migrated user when every user inherits the SKU from two groups (the wave's and a
second one), against one group: the price of checking every relied-on group's processing state
(docs/safety.md, S1). Runs one wave through the local stack (simulator + in-memory Azurite) and
counts the simulator's requests per endpoint.

  .venv/bin/python bench/union_reads_bench.py [--users 500] [--out bench/results/union_reads.json]

Group reads do not grow with users but with time: the scheduler reads each relied-on group once per
tick, the remover once per group every few seconds (its cache). The local stack ticks every second,
so its group reads per user are an upper bound of what a deployment with 60 s ticks pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphsim.scenario import parse
from graphsim.server import Simulator
from licshift_local.azurite import Azurite
from licshift_local.stack import LocalStack, StackOptions

E3 = "ENTERPRISEPACK"


def tenant(users: int, groups: int) -> dict[str, Any]:
    return {
        "name": f"union-reads-{groups}",
        "skus": [{"catalog": E3, "seats": users + 10}],
        "users": [{"generate": {"count": users, "prefix": "user", "name": "pop", "direct": [{"sku": E3}]}}],
        "groups": [
            {"key": f"g{i}", "name": f"Group {i}", "members": ["@all"], "licenses": [{"sku": E3}]}
            for i in range(groups)
        ],
    }


async def one_wave(users: int, groups: int) -> dict[str, Any]:
    sim = await Simulator.start(parse(tenant(users, groups)), time_scale=0.01, throttling=False)
    azurite = Azurite.start(in_memory=True)
    started = time.monotonic()
    try:
        options = StackOptions(namespace=f"b{uuid.uuid4().hex[:10]}")
        async with LocalStack(sim.base_url, azurite.connection_string, options) as stack:
            command = {
                "command": "start",
                "group": sim.scenario.id("g0"),
                "skus": [E3],
                "selection": {"kind": "all"},
                "requested_by": "bench",
                "force": True,
            }
            wave = await stack.wait_for_wave(await stack.enqueue(command), {"completed", "halted"}, 900)
        counters = json.loads(json.dumps(sim.counters.to_json()))
    finally:
        azurite.stop()
        await sim.stop()
    endpoints = counters["endpoints"]
    reads = counters["total"]["reads"]
    group_reads = endpoints.get("GET /groups/{id}", {}).get("reads", 0)
    return {
        "groups_per_user": groups,
        "status": wave.status.value,
        "removed": wave.counters.removed,
        "wall_s": round(time.monotonic() - started, 1),
        "reads": reads,
        "user_reads": endpoints.get("GET /users/{id}", {}).get("reads", 0),
        "group_reads": group_reads,
        "reads_per_user": round(reads / users, 3),
        "group_reads_per_user": round(group_reads / users, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "union_reads.json")
    args = parser.parse_args()
    runs = [asyncio.run(one_wave(args.users, groups)) for groups in (1, 2)]
    record = {
        "benchmark": "union-reads",
        "users": args.users,
        "machine": {"python": platform.python_version(), "cpus": len(__import__("os").sched_getaffinity(0))},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
