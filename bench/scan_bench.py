"""A scan of the 100,000-member group through licshift's own Graph adapter, as the scheduler does it:
pages of 999 with $select, parse, decide for every member. Memory must stay flat (one page at a time).

  .venv/bin/python bench/scan_bench.py [--users 100000] [--out bench/results/scan.json]

The simulator runs in its own thread with throttling off, so this measures licshift's side (msgraph-sdk
request builders, native response handler, parsing, decide) plus loopback HTTP; at Graph's real RU
budget (8,000 RU per 10 s, 3 RU per member page) paging is never the bottleneck either.
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

from graphsim import SimulatorThread, load_scenario
from licshift.adapters.graph import GraphAdapter
from licshift.rules.decide import decide


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def scan(base_url: str, group: str, sku_id: str) -> dict[str, object]:
    async with GraphAdapter.create(base_url, credential=None) as graph:
        sku = next(s for s in await graph.subscribed_skus() if s.sku_id == sku_id)
        rss_before = rss_mb()
        samples: list[float] = []
        started = time.perf_counter()
        members = 0
        removes = 0
        async for user in graph.group_members(group):
            members += 1
            if type(decide(user.states, sku, group)).__name__ == "Remove":
                removes += 1
            if members % 10_000 == 0:
                samples.append(round(rss_mb(), 1))
        seconds = time.perf_counter() - started
        return {
            "members": members,
            "remove_decisions": removes,
            "seconds": round(seconds, 2),
            "members_per_s": round(members / seconds),
            "graph_reads": graph.counters.reads,
            "rss_mb_before_scan": round(rss_before, 1),
            "rss_mb_every_10k_members": samples,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scan.json")
    args = parser.parse_args()
    scenario = load_scenario("large", users=args.users)
    with SimulatorThread(scenario, throttling=False) as sim:
        group, sku_id = scenario.wave.group, scenario.wave.skus[0]
        # Wait for the group's processing (seconds in this scenario) so every member shows E3 inherited.
        while sim.call(lambda tenant: tenant.group_processing_state(group)) != "ProcessingComplete":
            time.sleep(0.5)
        result = asyncio.run(scan(sim.base_url, group, sku_id))
    record = {
        "benchmark": "scan",
        "scenario": "large",
        "users": args.users,
        "machine": {"python": platform.python_version()},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **result,
        "peak_rss_mb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "note": "the simulator shares this process (its own thread); its tenant is most of the RSS",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
