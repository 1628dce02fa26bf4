"""How much of Graph's write quota a wave holds: a wave of N users through the real pipeline (the
local Functions host on Azurite, in memory) against the Graph simulator enforcing Graph's real quotas
(3,000 writes per 150 s per app and tenant, 18,000 per 5 min per tenant) at time scale 1, with the
production tick (60 s).

  .venv/bin/python bench/quota_bench.py                       # make bench-quota: 10,000 users
  .venv/bin/python bench/quota_bench.py --users 6000 --storm 200:30 --name recovery

`--storm START:SECONDS` answers every write with 429 (Retry-After 10 s) from START seconds after the
first removal, for SECONDS: the recovery run. The simulator runs in its own process (so the host's
peak RSS is licshift's alone) and logs every write it admits or refuses by the quota; from that log:

- share of the quota over the removal phase (first to last write), and in steady state (from one
  window after the first write to one tick before the last);
- the busiest sliding 150 s window (Graph refuses the 3,001st);
- writes answered 429 by the quota, per write attempt;
- reads per user and writes per removal (licshift's adapter counters);
- the host's peak RSS and each tick's wall time;
- for a storm: seconds from its end until the writes of a moving 30 s are back at >= 0.9 of the
  quota's pace, first and for good (staying there for the next 150 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from licshift.rules.pacing import window_counts
from licshift.services import scheduler
from licshift_local.azurite import Azurite
from licshift_local.stack import LocalStack, StackOptions

QUOTA, WINDOW = 3000, 150.0
RESULTS = Path(__file__).parent / "results"


# --- the simulator, in its own process ----------------------------------------------------------


def _serve(users: int, log_path: str, ready: Any, stop: Any) -> None:
    asyncio.run(_serve_async(users, log_path, ready, stop))


async def _serve_async(users: int, log_path: str, ready: Any, stop: Any) -> None:
    from graphsim import Simulator, ThrottleLimits, load_scenario
    from graphsim.throttle import Rejection

    sim = await Simulator.start(load_scenario("large", users=users), port=0, throttling=ThrottleLimits())
    admitted: list[float] = []
    refused: list[float] = []
    admit = sim.throttle.admit

    def logged(app: str, ru: int, write: bool, now: float) -> Any:
        result = admit(app, ru, write, now)
        if write:
            (refused if isinstance(result, Rejection) else admitted).append(time.time())
        return result

    sim.throttle.admit = logged  # type: ignore[method-assign]
    ready.put(sim.base_url)
    await asyncio.to_thread(stop.wait)
    text = json.dumps({"admitted": admitted, "refused": refused})
    await asyncio.to_thread(Path(log_path).write_text, text)
    await sim.stop()


# --- measuring ------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def recovery_seconds(times: list[float], storm_end: float, *, sustained: float = 0.0) -> float | None:
    """Seconds from the storm's end until the writes of a moving 30 s are at >= 0.9 of the quota's
    pace, and (with `sustained`) stay there for that many seconds (or until the wave's end)."""
    span, target = 30.0, 0.9 * QUOTA / WINDOW * 30.0
    last = max(times, default=storm_end) - span
    ordered = sorted(times)

    def ok(t: float) -> bool:
        return sum(1 for x in ordered if t <= x < t + span) >= target

    t = storm_end
    while t <= last:
        if ok(t) and all(ok(u) for u in _steps(t, min(t + sustained, last), 5.0)):
            return round(t + span - storm_end, 1)
        t += 1.0
    return None


def _steps(start: float, end: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((end - start) / step) + 1)]


async def run(users: int, tick: int, storm: tuple[float, float] | None) -> dict[str, Any]:
    azurite = await asyncio.to_thread(Azurite.start, in_memory=True)
    connection, where = azurite.connection_string, Path(tempfile.mkdtemp(prefix="licshift-bench-"))
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    log_path = str(where / "writes.json")
    sim_proc = ctx.Process(target=_serve, args=(users, log_path, ready, stop), daemon=True)
    sim_proc.start()
    ticks: list[dict[str, float]] = []
    original_tick = scheduler.tick

    async def timed_tick(rt: Any, *, past_due: bool = False) -> Any:
        wall, cpu = time.monotonic(), time.process_time()
        report = await original_tick(rt, past_due=past_due)
        ticks.append(
            {
                "at": time.time(),
                "wall_s": round(time.monotonic() - wall, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
                "enqueued": report.enqueued,
                "rate": round(report.rate, 2),
            }
        )
        return report

    scheduler.tick = timed_tick
    try:
        base_url = await asyncio.to_thread(ready.get, True, 120)
        async with httpx.AsyncClient() as http:
            scenario = (await http.get(base_url.replace("/v1.0", "/_sim/scenario"))).json()
        group, skus = scenario["waves"][0]["group"], scenario["waves"][0]["skus"]
        options = StackOptions(tick_seconds=tick, namespace=f"q{uuid.uuid4().hex[:8]}")
        started = time.time()
        async with LocalStack(base_url, connection, options) as stack:
            wave_id = await stack.enqueue(
                {
                    "command": "start",
                    "group": group,
                    "skus": skus,
                    "selection": {"kind": "all"},
                    "requested_by": "bench@licshift.local",
                    "force": True,
                }
            )
            storm_window: tuple[float, float] | None = None
            first_removal: list[float] = []
            storm_cleared: list[bool] = []

            async def finished() -> bool:
                nonlocal storm_window
                wave = await stack.get_wave(wave_id)
                if wave is not None and wave.counters.enqueued + wave.counters.removed > 0 and not first_removal:
                    first_removal.append(time.time())
                if storm and first_removal and storm_window is None and time.time() >= first_removal[0] + storm[0]:
                    rule = {"kind": "write", "status": 429, "retry_after": 10, "name": "bench-storm"}
                    async with httpx.AsyncClient() as http:
                        await http.post(base_url.replace("/v1.0", "/_sim/faults"), json={"add": [rule]})
                    storm_window = (time.time(), time.time() + storm[1])
                if storm_window and time.time() >= storm_window[1] and not storm_cleared:
                    storm_cleared.append(True)
                    async with httpx.AsyncClient() as http:
                        await http.post(base_url.replace("/v1.0", "/_sim/faults"), json={"clear": True})
                return wave is not None and wave.status.value in ("completed", "halted", "cancelled")

            await stack.run_until(finished, timeout=24 * 3600)
            wave = await stack.get_wave(wave_id)
            adapter = stack.graph_counters
            async with httpx.AsyncClient() as http:
                sim_counters = (await http.get(base_url.replace("/v1.0", "/_sim/counters"))).json()
        elapsed = time.time() - started
    finally:
        scheduler.tick = original_tick
        stop.set()
        sim_proc.join(60)
        azurite.stop()
    log = json.loads(await asyncio.to_thread(Path(log_path).read_text))
    shutil.rmtree(where, ignore_errors=True)
    return summarise(users, tick, storm_window, wave, adapter, sim_counters, log, ticks, elapsed)


def summarise(
    users: int,
    tick: int,
    storm_window: tuple[float, float] | None,
    wave: Any,
    adapter: dict[str, int],
    sim_counters: Any,
    log: dict[str, Any],
    ticks: list[dict[str, float]],
    elapsed: float,
) -> dict[str, Any]:
    writes: list[float] = sorted(log["admitted"])
    refused = len(log["refused"])
    first, last = writes[0], writes[-1]
    phase = last - first
    steady = [t for t in writes if first + WINDOW <= t <= last - tick]
    steady_span = (last - tick) - (first + WINDOW)
    removed = wave.counters.removed if wave else 0
    busy_ticks = [t for t in ticks if t["enqueued"] > 0]
    record: dict[str, Any] = {
        "users": users,
        "tick_seconds": tick,
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wave_status": wave.status.value if wave else None,
        "removed": removed,
        "elapsed_s": round(elapsed, 1),
        "removal_phase_s": round(phase, 1),
        "share_of_quota_removal_phase": round(len(writes) / (phase * QUOTA / WINDOW), 3) if phase else None,
        "share_of_quota_steady_state": round(len(steady) / (steady_span * QUOTA / WINDOW), 3)
        if steady_span > 0
        else None,
        "busiest_150s_window": window_counts(writes, WINDOW),
        "writes_admitted": len(writes),
        "writes_refused_by_quota": refused,
        "share_of_writes_429": round(refused / (len(writes) + refused), 4) if writes else None,
        "reads_per_user": round(adapter["reads"] / users, 3),
        "writes_per_removal": round(adapter["writes"] / removed, 3) if removed else None,
        "adapter": adapter,
        "host_peak_rss_mb": rss_mb(),
        "ticks": len(ticks),
        "tick_wall_s_max": max((t["wall_s"] for t in ticks), default=None),
        "tick_wall_s_median_busy": median([t["wall_s"] for t in busy_ticks]),
        "tick_cpu_s_max": max((t["cpu_s"] for t in ticks), default=None),
        "tick_log": ticks,
        "sim_counters": sim_counters,
    }
    if storm_window is not None:
        record["storm"] = {
            "started_after_first_removal_s": round(storm_window[0] - first, 1),
            "seconds": round(storm_window[1] - storm_window[0], 1),
            "back_to_0.9_of_quota_s": recovery_seconds(writes, storm_window[1]),
            "back_to_0.9_of_quota_for_150s_s": recovery_seconds(writes, storm_window[1], sustained=WINDOW),
        }
    return record


async def run_pacing_only(users: int, tick: int, storm: tuple[float, float] | None) -> dict[str, Any]:
    """The pacing alone, without the host: licshift's pacing model (pacing.py, as the tick uses it)
    schedules the removals, and one coroutine per slot sends it through licshift's Graph adapter at
    its moment; a 429 is re-sent at its Retry-After and reported to the next tick, Graph's usage
    header too. For machines too busy to run the whole pipeline at 20 writes/s."""
    from licshift.adapters.graph import GraphAdapter
    from licshift.ports.graph import Throttled
    from licshift.rules.pacing import Pacing, PacingLimits, Reports, Throttle, observe, schedule
    from licshift.rules.pacing import rate_at as pacing_rate

    where = Path(tempfile.mkdtemp(prefix="licshift-bench-"))
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    log_path = str(where / "writes.json")
    sim_proc = ctx.Process(target=_serve, args=(users, log_path, ready, stop), daemon=True)
    sim_proc.start()
    limits = PacingLimits(lookahead=2 * tick)
    throttles: list[Throttle] = []
    storm_window: tuple[float, float] | None = None
    ticks: list[dict[str, float]] = []
    try:
        base_url = await asyncio.to_thread(ready.get, True, 120)
        async with httpx.AsyncClient() as http:
            scenario = (await http.get(base_url.replace("/v1.0", "/_sim/scenario"))).json()
        group, sku = scenario["waves"][0]["group"], scenario["waves"][0]["skus"][0]
        graph = GraphAdapter.create(base_url, credential=None)
        todo = [u.user_id async for u in graph.group_members(group)]
        started = time.time()
        model, pending = Pacing(seen_until=started), len(todo)
        done: list[float] = []

        async def write(user_id: str, at: float) -> None:
            nonlocal pending
            await asyncio.sleep(max(0.0, at - time.time()))
            try:
                await graph.remove_direct(user_id, sku)
            except Throttled as exc:
                throttles.append(Throttle(time.time(), exc.retry_after))
                await write(user_id, time.time() + exc.retry_after)
                return
            done.append(time.time())

        async def inject_storm(at: float, seconds: float) -> None:
            nonlocal storm_window
            await asyncio.sleep(max(0.0, at - time.time()))
            rule = {"kind": "write", "status": 429, "retry_after": 10, "name": "bench-storm"}
            async with httpx.AsyncClient() as http:
                await http.post(base_url.replace("/v1.0", "/_sim/faults"), json={"add": [rule]})
                storm_window = (time.time(), time.time() + seconds)
                await asyncio.sleep(seconds)
                await http.post(base_url.replace("/v1.0", "/_sim/faults"), json={"clear": True})

        def rate_at(p: Pacing, t: float) -> float:
            return round(pacing_rate(p, t, limits), 2)

        storm_task: asyncio.Task[None] | None = None
        tasks: list[asyncio.Task[None]] = []
        while len(done) < len(todo):
            now = time.time()
            reports = Reports(tuple(throttles), (), graph.take_usage())
            throttles.clear()
            model = observe(model, reports, now, limits)
            slots, model = schedule(model, now, pending, limits)
            for slot in slots:
                tasks.append(asyncio.create_task(write(todo[len(todo) - pending], slot)))
                pending -= 1
            ticks.append({"at": now, "enqueued": len(slots), "wall_s": 0.0, "cpu_s": 0.0, "rate": rate_at(model, now)})
            if storm and storm_task is None and done:
                storm_task = asyncio.create_task(inject_storm(done[0] + storm[0], storm[1]))
            await asyncio.sleep(max(0.0, now + tick - time.time()))
        await asyncio.gather(*tasks)
        adapter = graph.counters.as_dict()
        await graph.aclose()
        elapsed = time.time() - started
    finally:
        stop.set()
        sim_proc.join(60)
    log = json.loads(await asyncio.to_thread(Path(log_path).read_text))
    shutil.rmtree(where, ignore_errors=True)

    class Done:
        status = type("S", (), {"value": "pacing-only"})()
        counters = type("C", (), {"removed": len(todo)})()

    adapter["reads"] = 0  # only the writes are this mode's business
    return summarise(users, tick, storm_window, Done(), adapter, {}, log, ticks, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--tick", type=int, default=60)
    parser.add_argument("--storm", default="", help="START:SECONDS after the first removal")
    parser.add_argument("--name", default="quota")
    parser.add_argument("--pacing-only", action="store_true", help="the pacing and Graph only, no host")
    args = parser.parse_args()
    storm = tuple(float(x) for x in args.storm.split(":")) if args.storm else None
    runner = run_pacing_only if args.pacing_only else run
    record = asyncio.run(runner(args.users, args.tick, storm))  # type: ignore[arg-type]
    record = {"benchmark": args.name, **record}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    shown = {k: v for k, v in record.items() if k not in ("tick_log", "sim_counters")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
