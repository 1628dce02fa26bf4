"""The HTML report at 1,000 and 100,000 users: file size, render time in Python, and in headless
Chromium the first contentful paint, the time until the user table is drawn, a sort and a search.

  .venv/bin/python bench/report_bench.py [--sizes 1000 100000] [--out bench/results/report.json]

The rows are synthetic but shaped like a real wave (UPNs, display names, reasons, plan differences,
a mix of removed, blocked, skipped, failed and restored); the page is the one `licshift report
--format html` writes. Times are medians of --runs page loads in a fresh browser each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from licshift.rules.decide import Policy
from licshift.rules.licenses import DirectAssignment
from licshift.rules.outcomes import Event, Outcome, OutcomeStatus
from licshift.rules.waves import Selection, Wave, WaveCounters, WaveStatus
from licshift.services.report import ReportFormat, render
from licshift.services.wavenames import Names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser.chromium import Chromium

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
PLANS = {
    f"{i:08x}-0000-4000-8000-000000000000": name
    for i, name in enumerate(
        [
            "EXCHANGE_S_ENTERPRISE",
            "TEAMS1",
            "SHAREPOINTENTERPRISE",
            "OFFICESUBSCRIPTION",
            "SWAY",
            "YAMMER_ENTERPRISE",
            "FORMS_PLAN_E3",
            "STREAM_O365_E3",
            "PROJECTWORKMANAGEMENT",
            "MCOSTANDARD",
            "INTUNE_O365",
            "BPOS_S_TODO_2",
        ]
    )
}
NAMES = Names(group="All users", skus={E3: "ENTERPRISEPACK"}, sku_plans={E3: frozenset(PLANS)}, plans=PLANS)
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FIRST = ["Ada", "Björn", "Chen", "Dana", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "José", "Kofi", "Lena"]
LAST = ["Lovelace", "Ångström", "Wei", "Scully", "Okafor", "Haddad", "Rossi", "Tanaka", "Costa", "García"]


def synthetic(n: int, seed: int = 1) -> tuple[Wave, list[Outcome], list[Event]]:
    rng = random.Random(seed)
    plan_ids = sorted(PLANS)
    rows = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        base = Outcome(
            wave_id="bench",
            user_id=f"{i:08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-8000-{rng.getrandbits(48):012x}",
            sku_id=E3,
            status=OutcomeStatus.REMOVED,
            decision="remove",
            user_principal_name=f"{first}.{last}{i}@contoso.onmicrosoft.com".lower(),
            display_name=f"{first} {last}",
            updated_at=START + timedelta(seconds=i * 0.1),
        )
        roll = rng.random()
        disabled = frozenset(rng.sample(plan_ids, 2))
        if roll < 0.85:
            # The group enables one of the two plans the direct license disabled: "+1 / -0".
            row = _with(
                base, snapshot=DirectAssignment(E3, disabled), after_plans=frozenset(plan_ids) - {min(disabled)}
            )
        elif roll < 0.90:
            row = _with(
                base,
                status=OutcomeStatus.BLOCKED,
                decision="block",
                reason="inherited-error",
                detail=rng.choice(["CountViolation", "MutuallyExclusiveViolation"]),
            )
        elif roll < 0.93:
            row = _with(
                base,
                status=OutcomeStatus.BLOCKED,
                decision="block",
                reason="plans-would-be-lost",
                detail=", ".join(sorted(PLANS[p] for p in rng.sample(plan_ids, 2))),
            )
        elif roll < 0.98:
            row = _with(base, status=OutcomeStatus.SKIPPED, decision="skip", reason="no-direct-assignment")
        elif roll < 0.995:
            row = _with(base, status=OutcomeStatus.FAILED, graph_error="400 Request_BadRequest: simulated")
        else:
            row = _with(
                base,
                status=OutcomeStatus.RESTORED,
                snapshot=DirectAssignment(E3, disabled),
                after_plans=frozenset(plan_ids[:6]),
                detail="lost SWAY; restored",
            )
        rows.append(row)
    wave = Wave(
        wave_id="bench",
        group_id="11111111-1111-1111-1111-111111111111",
        sku_ids=(E3,),
        selection=Selection(),
        policy=Policy.NO_LOSS,
        dry_run=False,
        force=True,
        requested_by="admin@contoso.com",
        status=WaveStatus.COMPLETED,
        created_at=START,
        updated_at=START + timedelta(hours=3),
        counters=WaveCounters(members=n, selected=n),
    )
    events = [Event("wave-accepted", "wave accepted", wave_id="bench", at=START)]
    return wave, rows, events


def _fields(o: Outcome) -> dict[str, object]:
    return {name: getattr(o, name) for name in o.__dataclass_fields__}


def _with(o: Outcome, **changes: object) -> Outcome:
    return Outcome(**{**_fields(o), **changes})  # type: ignore[arg-type]


async def measure_page(path: Path) -> dict[str, float]:
    async with Chromium.start() as page:
        started = time.perf_counter()
        await page.open(path.as_uri())
        wall = time.perf_counter() - started
        await page.wait_for("performance.getEntriesByName('first-contentful-paint').length > 0", timeout=20)
        timing = await page.eval(
            "({fcp: performance.getEntriesByName('first-contentful-paint')[0].startTime,"
            " table: performance.getEntriesByName('licshift-table-ready')[0].startTime})"
        )
        sort = await page.eval(
            "(() => { const t = performance.now(); document.querySelector('th[data-sort=user]').click();"
            " return performance.now() - t })()"
        )
        await page.eval(
            "(() => { const s = document.getElementById('search'); s.value = 'garcía'; performance.clearMeasures();"
            " s.dispatchEvent(new Event('input')); })()"
        )
        await page.wait_for("performance.getEntriesByName('licshift-refresh').length > 0")
        search = await page.eval("performance.getEntriesByName('licshift-refresh')[0].duration")
        heap = await page.eval("performance.memory ? performance.memory.usedJSHeapSize / 1048576 : 0")
    return {
        "first_paint_ms": timing["fcp"],
        "table_ready_ms": timing["table"],
        "open_wall_s": wall,
        "sort_ms": sort,
        "search_ms": search,
        "js_heap_mb": heap,
    }


async def bench(sizes: list[int], runs: int) -> dict[str, object]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            wave, rows, events = synthetic(n)
            started = time.perf_counter()
            text = render(wave, rows, ReportFormat.HTML, events=events, names=NAMES)
            render_s = time.perf_counter() - started
            path = Path(tmp) / f"report-{n}.html"
            path.write_text(text, encoding="utf-8")
            loads = [await measure_page(path) for _ in range(runs)]
            median = {k: round(statistics.median(m[k] for m in loads), 3) for k in loads[0]}
            results.append({"users": n, "bytes": len(text.encode()), "render_s": round(render_s, 3), **median})
            print(json.dumps(results[-1]))
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "runs": runs,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "report.json")
    args = parser.parse_args()
    result = asyncio.run(bench(args.sizes, args.runs))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
