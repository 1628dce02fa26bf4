"""Throughput of the decision rule and of parsing Graph's licenseAssignmentStates, pure CPU.

  .venv/bin/python bench/decide_bench.py [--users 100000] [--out bench/results/decide.json]

A scan of a 100,000-member group calls both once per member; this shows they are not what a scan
waits for (Graph paging is).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from licshift.rules.decide import Policy, decide
from licshift.rules.licenses import LicenseAssignmentState, ServicePlan, Sku

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"


def payloads(users: int, group: str, other: str, plans: list[str]) -> list[list[dict[str, object]]]:
    rng = random.Random(7)
    out = []
    for _ in range(users):
        states: list[dict[str, object]] = [
            {"skuId": E3, "assignedByGroup": None, "disabledPlans": rng.sample(plans, rng.randint(0, 2)),
             "state": "Active", "error": "None"},
            {"skuId": E3, "assignedByGroup": group, "disabledPlans": rng.sample(plans, rng.randint(0, 2)),
             "state": rng.choice(["Active"] * 9 + ["Error"]), "error": rng.choice(["None"] * 9 + ["CountViolation"])},
        ]  # fmt: skip
        if rng.random() < 0.3:
            states.append(
                {"skuId": E3, "assignedByGroup": other, "disabledPlans": [], "state": "Active", "error": None}
            )
        out.append(states)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decide.json")
    args = parser.parse_args()
    plans = [str(uuid.UUID(int=i + 1)) for i in range(12)]
    sku = Sku(E3, "ENTERPRISEPACK", tuple(ServicePlan(p, f"PLAN{i}") for i, p in enumerate(plans)))
    group, other = str(uuid.uuid4()), str(uuid.uuid4())
    raw = payloads(args.users, group, other, plans)

    t0 = time.perf_counter()
    parsed = [tuple(LicenseAssignmentState.from_graph(s) for s in user) for user in raw]
    t1 = time.perf_counter()
    kinds: dict[str, int] = {}
    for states in parsed:
        kind = type(decide(states, sku, group, Policy.NO_LOSS)).__name__
        kinds[kind] = kinds.get(kind, 0) + 1
    t2 = time.perf_counter()
    record = {
        "benchmark": "decide",
        "users": args.users,
        "machine": {"python": platform.python_version()},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parse_s": round(t1 - t0, 3),
        "parse_users_per_s": round(args.users / (t1 - t0)),
        "decide_s": round(t2 - t1, 3),
        "decide_users_per_s": round(args.users / (t2 - t1)),
        "decisions": kinds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
