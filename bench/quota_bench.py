"""How much of Graph's write quota a wave holds: a wave of N users through the real pipeline (the
local Functions host on Azurite, in memory) against the Graph simulator enforcing Graph's real quotas
(3,000 writes per 150 s per app and tenant, 18,000 per 5 min per tenant) at time scale 1, with the
production tick (60 s).

  .venv/bin/python bench/quota_bench.py                       # make bench-quota: 10,000 users
  .venv/bin/python bench/quota_bench.py --users 6000 --storm 200:30 --name recovery
  .venv/bin/python bench/quota_bench.py --users 100000 --time-scale 0.1 --name wave-100k

`--storm START:SECONDS` answers every write with 429 (Retry-After 10 s) from START seconds after the
first removal, for SECONDS: the recovery run.

`--time-scale 0.1` runs the simulator's clock 10x faster (Graph's windows: 3,000 writes per 15 real
seconds) and, in this bench only, licshift's model of the quota, its ceiling, its floor and the tick
to match: a 100,000-user wave in real minutes. `--stop-after S` ends the run S simulator seconds
after the first removal, for waves longer than the machine has time for. Seconds in the record are
real; shares of the quota are of the (scaled) quota. The simulator runs in its own process (so the host's
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
import bisect
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.pacing import PacingLimits, Quota, window_counts
from licshift.services import quota, scheduler
from licshift_local.azurite import Azurite
from licshift_local.stack import LocalStack, StackOptions

QUOTA, WINDOW = 3000, 150.0
RESULTS = Path(__file__).parent / "results"
REMOVED = OutcomeStatus.REMOVED


# --- the simulator, in its own process ----------------------------------------------------------


def _serve(users: int, log_path: str, ready: Any, stop: Any, time_scale: float = 1.0) -> None:
    asyncio.run(_serve_async(users, log_path, ready, stop, time_scale))


async def _serve_async(users: int, log_path: str, ready: Any, stop: Any, time_scale: float) -> None:
    from graphsim import Simulator, ThrottleLimits, load_scenario
    from graphsim.throttle import Rejection

    scenario = load_scenario("large", users=users)
    sim = await Simulator.start(scenario, port=0, time_scale=time_scale, throttling=ThrottleLimits())
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


def recovery_seconds(
    times: list[float], storm_end: float, *, sustained: float = 0.0, scale: float = 1.0
) -> float | None:
    """Seconds from the storm's end until the writes of a moving 30 s are at >= 0.9 of the quota's
    pace, and (with `sustained`) stay there for that many seconds (or until the wave's end).
    Seconds of the simulator's clock: real seconds / `scale`."""
    span, target = 30.0 * scale, 0.9 * QUOTA / WINDOW * 30.0
    ordered = sorted(times)
    last = (ordered[-1] if ordered else storm_end) - span

    def ok(t: float) -> bool:
        return bisect.bisect_left(ordered, t + span) - bisect.bisect_left(ordered, t) >= target

    t = storm_end
    while t <= last:
        if ok(t) and all(ok(u) for u in _steps(t, min(t + sustained * scale, last), 5.0 * scale)):
            return round((t + span - storm_end) / scale, 1)
        t += scale
    return None


def _steps(start: float, end: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((end - start) / step) + 1)]


@dataclass(frozen=True)
class Options:
    users: int = 10_000
    tick: int = 60
    """The scheduler's tick in the simulator's seconds (production: 60)."""
    storm: tuple[float, float] | None = None
    """(start after the first removal, duration), simulator seconds."""
    time_scale: float = 1.0
    """Real seconds per simulator second: 0.1 runs Graph's clock, its windows and the tick 10x faster."""
    stop_after: float | None = None
    """Stop this many simulator seconds after the first removal (a wave too long for the machine)."""
    budget: float = 24 * 3600
    """Stop after this many real seconds, wherever the wave is."""

    @property
    def window(self) -> float:
        """Graph's 150 s write window, in real seconds."""
        return WINDOW * self.time_scale

    @property
    def real_tick(self) -> int:
        real = self.tick * self.time_scale
        if real < 1 or abs(real - round(real)) > 1e-9:
            raise SystemExit(f"--tick x --time-scale must be a whole number of seconds >= 1, got {real:g}")
        return round(real)


def scaled_limits(scale: float) -> Any:
    """licshift's model of Graph's quota on the simulator's compressed clock: the same writes per
    window, the windows, the ceiling and the floor scaled like Graph's (the bench's mode only)."""
    original = quota.limits

    def limits(settings: Any) -> PacingLimits:
        lim = original(settings)
        q = lim.quota
        scaled = Quota(q.writes, q.window * scale, q.tenant_writes, q.tenant_window * scale)
        return replace(lim, quota=scaled, ceiling=lim.ceiling / scale, floor=lim.floor / scale)

    return limits


@dataclass
class Progress:
    """What the bench watches while the host runs: phases of the wave, the storm's injection."""

    first_seen: dict[str, float] = field(default_factory=dict)
    """Wave status -> when the bench first saw it."""
    first_removal: float | None = None
    storm_window: tuple[float, float] | None = None
    storm_cleared: bool = False
    stopped_early: bool = False
    plan_rows: list[tuple[float, int]] = field(default_factory=list)
    """(when, rows) of each batch of outcome rows the scan wrote."""


async def run(opts: Options) -> dict[str, Any]:
    azurite = await asyncio.to_thread(Azurite.start, in_memory=True)
    connection, where = azurite.connection_string, Path(tempfile.mkdtemp(prefix="licshift-bench-"))
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    log_path = str(where / "writes.json")
    args = (opts.users, log_path, ready, stop, opts.time_scale)
    sim_proc = ctx.Process(target=_serve, args=args, daemon=True)
    sim_proc.start()
    ticks: list[dict[str, float]] = []
    original_tick, original_limits = scheduler.tick, quota.limits

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
    if opts.time_scale != 1.0:
        quota.limits = scaled_limits(opts.time_scale)
    progress = Progress()
    try:
        base_url = await asyncio.to_thread(ready.get, True, 300)
        async with httpx.AsyncClient() as http:
            scenario = (await http.get(base_url.replace("/v1.0", "/_sim/scenario"))).json()
        group, skus = scenario["waves"][0]["group"], scenario["waves"][0]["skus"]
        options = StackOptions(tick_seconds=opts.real_tick, namespace=f"q{uuid.uuid4().hex[:8]}")
        started = time.time()
        async with LocalStack(base_url, connection, options) as stack:
            _count_plan_rows(stack.rt.ledger, progress)
            command = {"command": "start", "group": group, "skus": skus, "selection": {"kind": "all"}}
            wave_id = await stack.enqueue({**command, "requested_by": "bench@licshift.local", "force": True})

            async def finished() -> bool:
                wave = await stack.get_wave(wave_id)
                return await _watch(opts, progress, base_url, wave, stack.graph_counters["writes"])

            # Checked once a second: the check reads the wave row, which the host's storage also serves.
            if not await stack.host.run_until(finished, timeout=opts.budget, check_every=1.0):
                progress.stopped_early = True
            wave = await stack.get_wave(wave_id)
            adapter = stack.graph_counters
            # Counted from the rows: the wave's counters lag by up to a tick (a run stopped early).
            done = [o async for o in stack.rt.ledger.iter_outcomes(wave_id, statuses=[REMOVED], fields=["status"])]
            async with httpx.AsyncClient() as http:
                sim_counters = (await http.get(base_url.replace("/v1.0", "/_sim/counters"))).json()
        elapsed = time.time() - started
    finally:
        scheduler.tick, quota.limits = original_tick, original_limits
        stop.set()
        sim_proc.join(60)
        azurite.stop()
    log = json.loads(await asyncio.to_thread(Path(log_path).read_text))
    shutil.rmtree(where, ignore_errors=True)
    record = summarise(opts, progress.storm_window, wave, len(done), adapter, sim_counters, log, ticks, elapsed)
    return {**record, **_phases(opts, progress, wave)}


async def _watch(opts: Options, progress: Progress, base_url: str, wave: Any, writes: int) -> bool:
    """Called every second while the host runs: note the wave's phases and its first Graph write,
    start and clear the storm, and say whether the run is over (the wave finished, or --stop-after
    passed)."""
    now = time.time()
    if wave is not None:
        progress.first_seen.setdefault(wave.status.value, now)
    if progress.first_removal is None and writes > 0:
        progress.first_removal = now
    began, storm, scale = progress.first_removal, opts.storm, opts.time_scale
    if storm and began is not None and progress.storm_window is None and now >= began + storm[0] * scale:
        rule = {"kind": "write", "status": 429, "retry_after": 10, "name": "bench-storm"}
        await _faults(base_url, {"add": [rule]})
        progress.storm_window = (now, now + storm[1] * scale)
    if progress.storm_window and now >= progress.storm_window[1] and not progress.storm_cleared:
        progress.storm_cleared = True
        await _faults(base_url, {"clear": True})
    if opts.stop_after is not None and began is not None and now >= began + opts.stop_after * scale:
        progress.stopped_early = True
        return True
    return wave is not None and wave.status.value in ("completed", "halted", "cancelled")


def _count_plan_rows(ledger: Any, progress: Progress) -> None:
    """Note when each batch of the scan's rows is written: does the scan slow as the wave grows?"""
    put = ledger.put_outcomes

    async def counted(rows: Any) -> Any:
        result = await put(rows)
        progress.plan_rows.append((time.time(), len(rows)))
        return result

    ledger.put_outcomes = counted


def _scan_rates(plan_rows: list[tuple[float, int]], chunk: int) -> list[float]:
    """Rows written per second, per `chunk` rows of the plan in order."""
    rates: list[float] = []
    start, count = (plan_rows[0][0] if plan_rows else 0.0), 0
    for at, rows in plan_rows:
        count += rows
        if count >= chunk:
            rates.append(round(count / max(at - start, 1e-6), 1))
            start, count = at, 0
    return rates


async def _faults(base_url: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as http:
        await http.post(base_url.replace("/v1.0", "/_sim/faults"), json=body)


def _phases(opts: Options, progress: Progress, wave: Any) -> dict[str, Any]:
    """The scan's rate and the run's shape, from when the bench first saw each wave status."""
    seen = progress.first_seen
    scan_start = seen.get("scanning")
    scan_end = seen.get("removing") or seen.get("verifying")
    members = wave.counters.members if wave else 0
    scan_s = round(scan_end - scan_start, 1) if scan_start and scan_end else None
    return {
        "time_scale": opts.time_scale,
        "stopped_early": progress.stopped_early,
        "status_first_seen_s": {k: round(v - min(seen.values()), 1) for k, v in seen.items()} if seen else {},
        "scan_s": scan_s,
        "scan_members_per_s": round(members / scan_s, 1) if scan_s else None,
        "plan_rows_written": sum(rows for _, rows in progress.plan_rows),
        "plan_rows_per_s_by_chunk": _scan_rates(progress.plan_rows, max(1000, opts.users // 10)),
    }


def summarise(
    opts: Options,
    storm_window: tuple[float, float] | None,
    wave: Any,
    removed: int,
    adapter: dict[str, int],
    sim_counters: Any,
    log: dict[str, Any],
    ticks: list[dict[str, float]],
    elapsed: float,
) -> dict[str, Any]:
    """The record: times are real seconds; shares of the quota are of Graph's quota on the
    simulator's clock (3,000 writes per 150 s x time scale)."""
    window, tick, users = opts.window, opts.real_tick, opts.users
    pace = QUOTA / window
    writes: list[float] = sorted(log["admitted"])
    refused = len(log["refused"])
    first, last = (writes[0], writes[-1]) if writes else (0.0, 0.0)
    phase = last - first
    steady = [t for t in writes if first + window <= t <= last - tick]
    steady_span = (last - tick) - (first + window)
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
        "removals_per_s": round(len(writes) / phase, 2) if phase else None,
        "share_of_quota_removal_phase": round(len(writes) / (phase * pace), 3) if phase else None,
        "share_of_quota_steady_state": round(len(steady) / (steady_span * pace), 3) if steady_span > 0 else None,
        "busiest_quota_window": window_counts(writes, window),
        "quota_window_real_s": window,
        "writes_admitted": len(writes),
        "writes_refused_by_quota": refused,
        "share_of_writes_429": round(refused / (len(writes) + refused), 4) if writes else None,
        # A run stopped early read the users it removed (and some in flight): per removal, then.
        "reads_per_user": round(adapter["reads"] / (removed if removed < users else users), 3) if removed else None,
        "writes_per_removal": round(adapter["writes"] / removed, 3) if removed else None,
        "adapter": adapter,
        "host_peak_rss_mb": rss_mb(),
        # The host's CPU (this process: the Functions host, the tick and the workers), per removal.
        "host_cpu_s": round(time.process_time(), 1),
        "host_cpu_ms_per_removal": round(1000 * time.process_time() / removed, 1) if removed else None,
        "ticks": len(ticks),
        "tick_wall_s_max": max((t["wall_s"] for t in ticks), default=None),
        "tick_wall_s_median_busy": median([t["wall_s"] for t in busy_ticks]),
        "tick_cpu_s_max": max((t["cpu_s"] for t in ticks), default=None),
        "tick_log": ticks,
        "sim_counters": sim_counters,
    }
    if storm_window is not None:
        scale = opts.time_scale
        record["storm"] = {
            "started_after_first_removal_s": round(storm_window[0] - first, 1),
            "seconds": round(storm_window[1] - storm_window[0], 1),
            "back_to_0.9_of_quota_s": recovery_seconds(writes, storm_window[1], scale=scale),
            "back_to_0.9_of_quota_for_150s_s": recovery_seconds(writes, storm_window[1], sustained=WINDOW, scale=scale),
        }
    return record


async def run_pacing_only(opts: Options) -> dict[str, Any]:
    """The pacing alone, without the host: licshift's pacing model (pacing.py, as the tick uses it)
    schedules the removals, and one coroutine per slot sends it through licshift's Graph adapter at
    its moment; a 429 is re-sent at its Retry-After and reported to the next tick, Graph's usage
    header too. For machines too busy to run the whole pipeline at 20 writes/s."""
    from licshift.adapters.graph import GraphAdapter
    from licshift.ports.graph import Throttled
    from licshift.rules.pacing import Pacing, Reports, Throttle, observe, schedule
    from licshift.rules.pacing import rate_at as pacing_rate

    users, tick, storm = opts.users, opts.tick, opts.storm
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

    adapter["reads"] = 0  # only the writes are this mode's business
    return summarise(opts, storm_window, Done(), len(todo), adapter, {}, log, ticks, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--tick", type=int, default=60, help="the scheduler's tick, simulator seconds")
    parser.add_argument("--storm", default="", help="START:SECONDS after the first removal")
    parser.add_argument("--time-scale", type=float, default=1.0, help="real seconds per simulator second")
    parser.add_argument("--stop-after", type=float, default=None, help="seconds after the first removal")
    parser.add_argument("--budget", type=float, default=24 * 3600, help="real seconds for the whole run")
    parser.add_argument("--name", default="quota")
    parser.add_argument("--pacing-only", action="store_true", help="the pacing and Graph only, no host")
    args = parser.parse_args()
    storm = (float(args.storm.split(":")[0]), float(args.storm.split(":")[1])) if args.storm else None
    opts = Options(args.users, args.tick, storm, args.time_scale, args.stop_after, args.budget)
    if args.pacing_only and (opts.time_scale != 1.0 or opts.stop_after is not None):
        raise SystemExit("--pacing-only runs at time scale 1 to the end")
    opts.real_tick  # noqa: B018 - refuse a tick the local host cannot play before starting anything
    record = asyncio.run(run_pacing_only(opts) if args.pacing_only else run(opts))
    record = {"benchmark": args.name, **record}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    shown = {k: v for k, v in record.items() if k not in ("tick_log", "sim_counters")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
