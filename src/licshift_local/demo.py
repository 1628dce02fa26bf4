"""`licshift demo`: Microsoft's migration procedure, end to end, on a simulated tenant.

The Graph tenant simulator stands in for Entra ID, Azurite for Azure Storage, and the local host runs
the very functions function_app.py declares. The demo plays the admin: it assigns the SKU to the
licensing group (Microsoft's step 3), then runs a dry run, a canary wave and the rest, and reports
what the simulator's oracle saw: any moment any user had fewer service plans than before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from licshift.cli.context import Context
from licshift.cli.output import progress_bar
from licshift.cli.parsing import add_command, whole
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import Wave, WaveStatus
from licshift.settings import STORAGE_CONNECTION
from licshift_local.azurite import Azurite
from licshift_local.stack import LocalStack, StackOptions

SETTLED = {WaveStatus.PLANNED, WaveStatus.COMPLETED, WaveStatus.HALTED, WaveStatus.CANCELLED, WaveStatus.PAUSED}
WAVE_TIMEOUT = 900.0


@dataclass
class Progress:
    """Progress lines on stderr for a person; silent for --json (stdout stays one JSON object)."""

    out: TextIO | None
    _last: str = ""
    _started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def wave(self, label: str, wave: Wave | None) -> None:
        if self.out is None or wave is None:
            return
        c = wave.counters
        line = (
            f"  {label:<8} {progress_bar(wave)} blocked {c.blocked:<4} skipped {c.skipped:<4} "
            f"throttled {c.throttled:<4}"
        )
        if line == self._last:
            return
        if self.out.isatty():
            self.out.write("\r" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()
        self._last = line

    def end_wave(self) -> None:
        if self.out is not None and self._last and self.out.isatty():
            self.out.write("\n")
            self.out.flush()
        self._last = ""


async def _run_wave(stack: LocalStack, command: dict[str, Any], label: str, progress: Progress) -> Wave:
    wave_id = await stack.enqueue(command)
    seen: list[Wave | None] = [None]

    async def settled() -> bool:
        seen[0] = await stack.get_wave(wave_id)
        progress.wave(label, seen[0])
        return seen[0] is not None and seen[0].status in SETTLED

    if not await stack.run_until(settled, timeout=WAVE_TIMEOUT):
        progress.end_wave()
        where = seen[0].status.value if seen[0] else "not accepted"
        raise RuntimeError(f"wave {label} did not settle within {WAVE_TIMEOUT:g} s (it is {where})")
    progress.end_wave()
    wave = seen[0]
    assert wave is not None
    return wave


def _final_per_user(waves: list[tuple[Wave, list[Outcome]]]) -> dict[tuple[str, str], Outcome]:
    """One outcome per user and SKU over the executed waves: a removal anywhere wins, otherwise the
    latest wave's word (a user skipped in wave 3 because wave 2 migrated them counts as removed)."""
    final: dict[tuple[str, str], Outcome] = {}
    for wave, rows in waves:
        if wave.dry_run:
            continue
        for row in rows:
            key = (row.user_id, row.sku_id)
            if key in final and final[key].status is OutcomeStatus.REMOVED:
                continue
            final[key] = row
    return final


def _delta(before: Any, after: Any) -> dict[str, int]:
    return {name: getattr(after, name) - getattr(before, name) for name in ("reads", "writes", "throttled")}


def summarise(
    waves: list[tuple[Wave, list[Outcome]]],
    *,
    losses: list[Any],
    graph_calls: dict[str, int],
    remaining_direct: int,
    members: int,
    elapsed: float,
    scenario: str,
) -> dict[str, Any]:
    final = _final_per_user(waves)
    statuses = Counter(o.status for o in final.values())
    blocked = Counter(o.reason for o in final.values() if o.status is OutcomeStatus.BLOCKED)
    skipped = Counter(o.reason for o in final.values() if o.status is OutcomeStatus.SKIPPED)
    by_cause = Counter(str(loss.cause).split(":")[0] for loss in losses)
    return {
        "scenario": scenario,
        "members": members,
        "removed": statuses[OutcomeStatus.REMOVED],
        "blocked": dict(sorted(blocked.items())),
        "skipped": dict(sorted(skipped.items())),
        "restored": sum(w.counters.restored for w, _ in waves),
        "failed": statuses[OutcomeStatus.FAILED],
        "remaining_direct": remaining_direct,
        "lost_licenses": len(losses),
        "lost_licenses_by_cause": dict(sorted(by_cause.items())),
        "graph": graph_calls,
        "waves": [
            {
                "id": w.wave_id,
                "kind": "dry-run" if w.dry_run else w.selection.kind.value,
                "status": w.status.value,
                "status_reason": w.status_reason,
                "counts": {
                    "selected": w.counters.selected,
                    "to_remove": w.counters.to_remove,
                    "removed": w.counters.removed,
                    "blocked": w.counters.blocked,
                    "skipped": w.counters.skipped,
                    "restored": w.counters.restored,
                    "failed": w.counters.failed,
                    "throttled": w.counters.throttled,
                },
            }
            for w, _ in waves
        ],
        "elapsed_s": round(elapsed, 1),
    }


def _print_summary(result: dict[str, Any], out: TextIO) -> None:
    print("", file=out)
    print(f"licshift demo: {result['scenario']}, {result['members']} group members", file=out)
    for w in result["waves"]:
        c = w["counts"]
        print(
            f"  wave {w['id'][:8]} {w['kind']:<8} {w['status']:<10} removed {c['removed']:>5}  "
            f"to remove {c['to_remove']:>5}  blocked {c['blocked']:>4}  skipped {c['skipped']:>4}",
            file=out,
        )
    print(f"  removed:          {result['removed']}", file=out)
    print(f"  blocked:          {result['blocked'] or 'none'}", file=out)
    print(f"  skipped:          {result['skipped'] or 'none'}", file=out)
    print(f"  restored:         {result['restored']}", file=out)
    print(f"  still direct:     {result['remaining_direct']}", file=out)
    g = result["graph"]
    print(f"  Graph:            {g['reads']} reads, {g['writes']} writes, {g['throttled']} throttled", file=out)
    verdict = "no user lost a license or a service plan" if result["lost_licenses"] == 0 else "LOSSES"
    print(f"  lost licenses:    {result['lost_licenses']} ({verdict}, per the simulator's oracle)", file=out)
    print(f"  elapsed:          {result['elapsed_s']} s", file=out)


async def demo_migration(scenario_name: str, users: int | None, canary: int, progress: Progress) -> dict[str, Any]:
    import httpx

    from graphsim import Simulator, load_scenario

    started = time.monotonic()
    scenario = load_scenario(scenario_name, users=users)
    wave_spec = scenario.wave
    azurite: Azurite | None = None
    connection = os.environ.get(STORAGE_CONNECTION, "").strip()
    if not connection:
        progress.say("starting Azurite on loopback ...")
        azurite = await asyncio.to_thread(Azurite.start)
        connection = azurite.connection_string
    sim = await Simulator.start(scenario, port=0)
    progress.say(f"simulated tenant '{scenario.name}' at {sim.base_url} ({len(sim.tenant.users)} users)")
    try:
        # Microsoft's step 3, done by the admin (not licshift: it never assigns licenses to groups).
        async with httpx.AsyncClient(timeout=30) as http:
            for sku_id, disabled in wave_spec.group_license:
                body = {"addLicenses": [{"skuId": sku_id, "disabledPlans": sorted(disabled)}], "removeLicenses": []}
                response = await http.post(f"{sim.base_url}/groups/{wave_spec.group}/assignLicense", json=body)
                response.raise_for_status()
                progress.say(f"assigned SKU {sku_id} to group {wave_spec.group} (HTTP {response.status_code})")
        # Count only what licshift does from here on (the admin's group assignment above is a write too).
        before = sim.counters.total()
        group = sim.tenant.group(wave_spec.group)
        members = sum(1 for _ in sim.tenant.user_members(group))
        namespace = f"demo{uuid.uuid4().hex[:8]}"
        done: list[tuple[Wave, list[Outcome]]] = []
        async with LocalStack(sim.base_url, connection, StackOptions(namespace=namespace)) as stack:

            def start(**fields: Any) -> dict[str, Any]:
                return {
                    "command": "start",
                    "group": wave_spec.group,
                    "skus": list(wave_spec.skus),
                    "selection": {"kind": "all"},
                    "requested_by": "demo@licshift.local",
                    **fields,
                }

            plan: list[tuple[str, dict[str, Any]]] = [
                ("dry run", start(dry_run=True)),
                ("canary", start(selection={"kind": "first", "count": canary})),
                ("rest", start()),
            ]
            progress.say("waiting for group license processing, then: dry run, canary, the rest")
            for label, command in plan:
                wave = await _run_wave(stack, command, label, progress)
                done.append((wave, await stack.outcomes(wave.wave_id)))
                if wave.status in {WaveStatus.HALTED, WaveStatus.CANCELLED, WaveStatus.PAUSED}:
                    progress.say(f"wave {label} {wave.status.value}: {wave.status_reason}; stopping here")
                    break
        remaining = sum(
            1
            for user in sim.tenant.user_members(group)
            for state in sim.tenant.license_states(user.id)
            if state.get("assignedByGroup") is None and state["skuId"] in wave_spec.skus
        )
        return summarise(
            done,
            losses=list(sim.oracle.losses),
            graph_calls=_delta(before, sim.counters.total()),
            remaining_direct=remaining,
            members=members,
            elapsed=time.monotonic() - started,
            scenario=scenario.name,
        )
    finally:
        await sim.stop()
        if azurite is not None:
            azurite.stop()


def register(sub: Any) -> None:
    demo = add_command(
        sub,
        "demo",
        help="migrate a simulated tenant end to end (simulator + Azurite), print the result",
        examples=["licshift demo", "licshift demo --users 5000 --json"],
    )
    demo.add_argument("--scenario", default="seed-example", help="built-in scenario name or a .json/.yaml file")
    demo.add_argument("--users", type=whole("--users", 1, 1_000_000), default=None, help="tenant size")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    demo.add_argument("--canary", type=whole("--canary", 1, 1000), default=10, help="users in the canary wave")
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace, ctx: Context) -> int:
    return run_demo(scenario=args.scenario, users=args.users, as_json=args.json, canary=args.canary)


def run_demo(*, scenario: str, users: int | None, as_json: bool, canary: int) -> int:
    from graphsim import ScenarioError
    from licshift_local.azurite import AzuriteError

    progress = Progress(None if as_json else sys.stderr)
    try:
        result = asyncio.run(demo_migration(scenario, users, canary, progress))
    except (ScenarioError, AzuriteError, OSError) as exc:
        print(f"licshift demo: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(result, sys.stdout)
    return 0 if result["lost_licenses"] == 0 and result["failed"] == 0 else 1
