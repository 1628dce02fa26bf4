"""`licshift status`: every wave, or one wave with its timeline; `--watch` follows it with a bar."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from licshift.cli import resolve
from licshift.cli.context import Context
from licshift.cli.directory import Names, names_for
from licshift.cli.exitcodes import ExitCode
from licshift.cli.output import Output, progress_bar, short_id, table
from licshift.cli.parsing import add_command, add_json, seconds
from licshift.cli.shapes import event_json, wave_json
from licshift.cli.storage import Storage, open_storage
from licshift.cli.waiting import ENDED, follow_wave, timeout_summary, wave_exit, wave_summary
from licshift.rules.outcomes import Control, Event
from licshift.rules.waves import Wave, WaveStatus
from licshift.services import telemetry

TIMELINE_EVENTS = 30
KILL_SWITCH_LOOKBACK = timedelta(days=400)
WATCH_LIMIT = 7 * 24 * 3600.0


def register(sub: Any) -> None:
    cmd = add_command(
        sub,
        "status",
        help="all waves, or one wave with its timeline (any unique prefix of a wave id works)",
        examples=[
            "licshift status",
            "licshift status c9e5bf56",
            "licshift status c9e5bf56 --watch",
            "licshift status --json",
        ],
    )
    cmd.add_argument("wave_id", nargs="?", help="wave id or any unique prefix of it")
    cmd.add_argument("--watch", action="store_true", help="follow the wave with a progress bar until it ends")
    cmd.add_argument("--timeout", type=seconds, default=WATCH_LIMIT, help="stop watching after this many seconds")
    add_json(cmd)
    cmd.set_defaults(handler=status_command)


def held(wave: Wave, control: Control, settings_switch: bool) -> bool:
    """Removals of this wave are held by the kill switch right now."""
    return (control.kill_switch or settings_switch) and not wave.dry_run and wave.status is WaveStatus.REMOVING


def kill_switch_json(control: Control, settings_switch: bool) -> dict[str, Any]:
    return {
        "on": control.kill_switch or settings_switch,
        "row": control.kill_switch,
        "setting": settings_switch,
        "updated_by": control.updated_by,
        "updated_at": control.updated_at.isoformat() if control.updated_at else None,
    }


def kill_switch_line(control: Control, settings_switch: bool) -> str:
    if settings_switch:
        return "kill switch: ON (LICSHIFT_KILL_SWITCH=true)"
    if control.kill_switch:
        return f"kill switch: ON (set by {control.updated_by or 'unknown'}); `licshift kill-switch off` lifts it"
    return "kill switch: off"


async def status_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.wave_id is not None:
        resolve.check_wave_ref(args.wave_id)
    async with open_storage(ctx.settings()) as storage:
        if args.wave_id is None:
            return await _all(storage, ctx.output)
        wave_id = await resolve.wave_id(storage, args.wave_id)
        if args.watch:
            return await _watch(storage, wave_id, args.timeout, ctx.output)
        return await _one(storage, wave_id, ctx.output)


async def _all(storage: Storage, out: Output) -> int:
    waves = await storage.ledger.list_waves()
    control = (await storage.ledger.get_control()).value
    switch = storage.settings.kill_switch
    names = await names_for(storage.settings, {w.group_id for w in waves}) if waves else Names()
    payload = {
        "kill_switch": kill_switch_json(control, switch),
        "write_rate": control.write_rate,
        "waves": [wave_json(w, names, held_by_kill_switch=held(w, control, switch)) for w in waves],
    }
    rows = [
        [
            short_id(w.wave_id),
            w.status.value + (" (held: kill switch)" if held(w, control, switch) else ""),
            "plan" if w.dry_run else "wave",
            names.group(w.group_id) or w.group_id,
            ",".join(names.sku(s) for s in w.sku_ids),
            w.selection.describe(),
            w.counters.removed,
            w.counters.blocked,
            f"{w.created_at:%Y-%m-%d %H:%M}",
        ]
        for w in waves
    ]
    lines = [kill_switch_line(control, switch)]
    if control.write_rate:
        lines.append(f"write rate: {control.write_rate:.2f}/s")
    lines.append(
        table(
            ["wave", "status", "kind", "group", "skus", "selection", "removed", "blocked", "created (UTC)"],
            rows,
            right=["removed", "blocked"],
        )
        if waves
        else "no waves yet: start with `licshift plan --group <name or id> --sku <part number>`"
    )
    _names_note(out, names)
    out.data(payload, "\n".join(lines))
    return ExitCode.OK


async def timeline(storage: Storage, wave: Wave, holding: Control | None = None) -> list[Event]:
    """The wave's events and the kill switch's changes while the wave was under way, newest first; when
    the switch holds the wave now (`holding`), the change that turned it on, however long ago."""
    found: list[Event] = []
    async for event in storage.ledger.iter_events(wave.created_at - timedelta(minutes=1)):
        if event.wave_id == wave.wave_id or (event.kind == telemetry.KILL_SWITCH and _during(event, wave)):
            found.append(event)
            if len(found) >= TIMELINE_EVENTS:
                break
    switches = [e async for e in storage.ledger.iter_switch_changes()]
    found += [e for e in switches if _during(e, wave)]
    if holding is not None and not any(e.kind == telemetry.KILL_SWITCH for e in found):
        # Turned on before the wave started: the newest "on", from the CLI's log or from intake's events.
        earlier = [e for e in switches if e.data.get("on") is True]
        if not earlier:
            since = wave.created_at - KILL_SWITCH_LOOKBACK
            earlier = [
                e async for e in storage.ledger.iter_events(since, {telemetry.KILL_SWITCH}) if e.data.get("on") is True
            ][:1]
        found += earlier[:1]
    return sorted(found, key=lambda e: e.at or wave.created_at, reverse=True)


def _during(event: Event, wave: Wave) -> bool:
    if event.at is None:
        return False
    ended = wave.updated_at if wave.status in ENDED else datetime.now(UTC)
    return wave.created_at <= event.at <= ended


async def _one(storage: Storage, wave_id: str, out: Output) -> int:
    found = await storage.ledger.get_wave(wave_id)
    if found is None:
        from licshift.cli.exitcodes import UsageError

        raise UsageError(f"no wave {wave_id} in the ledger; list waves with `licshift status`")
    wave = found.value
    control = (await storage.ledger.get_control()).value
    switch = storage.settings.kill_switch
    names = await names_for(storage.settings, [wave.group_id])
    is_held = held(wave, control, switch)
    events = await timeline(storage, wave, control if is_held else None)
    payload = {
        "wave": wave_json(wave, names, held_by_kill_switch=is_held),
        "kill_switch": kill_switch_json(control, switch),
        "events": [event_json(e, names) for e in events],
    }
    group = names.group(wave.group_id)
    lines = [
        f"wave {wave.wave_id}: {wave.status.value}" + (f" - {wave.status_reason}" if wave.status_reason else ""),
    ]
    if is_held:
        lines.append(f"  HELD: {kill_switch_line(control, switch)}")
    lines += [
        f"  group {group + ' (' + wave.group_id + ')' if group else wave.group_id}",
        f"  skus {', '.join(names.sku(s) for s in wave.sku_ids)}  selection {wave.selection.describe()}  "
        f"policy {wave.policy.value}{'  dry run' if wave.dry_run else ''}",
        f"  {progress_bar(wave)}",
        "  " + counters_line(wave),
        f"  requested by {wave.requested_by or 'unknown'} at {wave.created_at:%Y-%m-%d %H:%M:%S} UTC",
        "",
        "timeline (newest first):" if events else "no events recorded for this wave",
    ]
    lines += [f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.severity.value:7}  {e.kind:18}  {e.message}" for e in events if e.at]
    _names_note(out, names)
    out.data(payload, "\n".join(lines))
    return ExitCode.OK


def counters_line(wave: Wave) -> str:
    c = wave.counters
    return (
        f"members {c.members}  selected {c.selected}  to remove {c.to_remove}  removed {c.removed}  "
        f"blocked {c.blocked}  skipped {c.skipped}  failed {c.failed}  restored {c.restored}  "
        f"throttled {c.throttled}  rolled back {c.rolled_back}"
    )


async def _watch(storage: Storage, wave_id: str, limit: float, out: Output) -> int:
    """Follow the wave with a progress bar, then show it as `status WAVE` does (same --json)."""
    wave = await follow_wave(storage, wave_id, limit, out)
    code = wave_exit(wave)
    await _one(storage, wave_id, out)
    if code is ExitCode.TIMEOUT:
        out.note(f"licshift: {timeout_summary('the wave to end', limit, wave, wave_id)}")
    elif wave is not None:
        out.note(wave_summary(wave))
    return int(code)


def _names_note(out: Output, names: Names) -> None:
    if names.problem:
        out.note(f"(showing ids only: {names.problem})")
