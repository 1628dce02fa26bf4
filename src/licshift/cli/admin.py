"""The admin commands: plan, wave start/pause/resume/cancel/rollback, kill-switch, status, report, drift.

They talk to the same storage as the function app: commands go on the waves queue (validated here
first, so a typo is reported at once instead of as a rejected-request event), state is read from the
ledger. Nothing here calls Graph: intake and the scheduler do, with the app's identity.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from licshift.ledger import Ledger
from licshift.messages import (
    Command,
    KillSwitch,
    StartWave,
    WavesMessage,
    encode_waves_message,
    parse_waves_message,
)
from licshift.outcomes import DriftState, Event, Outcome
from licshift.report import ReportFormat, render
from licshift.settings import Settings
from licshift.waves import FINAL_STATUSES, Selection, Wave, WaveStatus
from licshift.workqueue import WorkQueue

SETTLED = FINAL_STATUSES | {WaveStatus.HALTED, WaveStatus.PAUSED}
"""Statuses `--wait` stops at: nothing more happens without an admin."""


def default_requester() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Storage:
    ledger: Ledger
    queue: WorkQueue
    settings: Settings


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """Ledger and queue for the admin: a connection string, or the signed-in identity (az login)."""
    credential = None
    if settings.storage.uses_identity:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    ledger = Ledger.from_settings(settings, credential)
    queue = WorkQueue.from_settings(settings, credential)
    try:
        yield Storage(ledger, queue, settings)
    finally:
        await ledger.aclose()
        await queue.aclose()
        if credential is not None:
            await credential.close()


def start_message(
    *,
    group: str,
    skus: Sequence[str],
    selection: dict[str, object],
    dry_run: bool,
    force: bool,
    policy: str | None,
    requested_by: str,
    max_wave_users: int,
    wave_id: str | None = None,
) -> StartWave:
    """Build and validate a start command exactly as wave_intake will parse it."""
    payload = {
        "command": Command.START.value,
        "wave_id": wave_id or str(uuid.uuid4()),
        "group": group,
        "skus": list(skus),
        "selection": selection,
        "dry_run": dry_run,
        "force": force,
        "policy": policy,
        "requested_by": requested_by,
    }
    message = parse_waves_message(json.dumps(payload), max_wave_users=max_wave_users)
    assert isinstance(message, StartWave)
    return message


def wave_message(command: str, wave_id: str, requested_by: str, max_wave_users: int) -> WavesMessage:
    payload = {"command": command, "wave_id": wave_id, "requested_by": requested_by}
    return parse_waves_message(json.dumps(payload), max_wave_users=max_wave_users)


def kill_message(on: bool, requested_by: str, max_wave_users: int) -> KillSwitch:
    payload = {"command": Command.KILL_SWITCH.value, "on": on, "requested_by": requested_by}
    message = parse_waves_message(json.dumps(payload), max_wave_users=max_wave_users)
    assert isinstance(message, KillSwitch)
    return message


async def send(storage: Storage, message: WavesMessage) -> None:
    # No queue creation here: the deployment (and locally the host) creates the queues, and an operator
    # holds only Storage Queue Data Message Sender on the waves queue, which cannot create queues.
    await storage.queue.send(storage.settings.waves_queue, encode_waves_message(message))


async def wait_for(
    storage: Storage,
    wave_id: str,
    wait_seconds: float,
    out: TextIO,
    poll: float = 2.0,
    until: frozenset[WaveStatus] = SETTLED,
) -> Wave | None:
    """Poll the ledger until the wave settles; print status changes as they happen."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    last = ""
    while True:
        found = await storage.ledger.get_wave(wave_id)
        if found is not None:
            wave = found.value
            line = f"{wave.status.value} {progress_line(wave)}"
            if line != last:
                print(f"  {wave_id[:8]} {line}", file=out, flush=True)
                last = line
            if wave.status in until:
                return wave
        if asyncio.get_running_loop().time() > deadline:
            return found.value if found else None
        await asyncio.sleep(poll)


def progress_line(wave: Wave) -> str:
    c = wave.counters
    return (
        f"selected={c.selected} to_remove={c.to_remove} removed={c.removed} blocked={c.blocked} "
        f"skipped={c.skipped} restored={c.restored} failed={c.failed} throttled={c.throttled}"
    )


async def collect_outcomes(storage: Storage, wave_id: str) -> list[Outcome]:
    return [o async for o in storage.ledger.iter_outcomes(wave_id)]


def wave_table(waves: Sequence[Wave]) -> str:
    lines = [f"{'wave':36}  {'status':12}  {'dry':3}  {'selection':9}  {'removed':>7}  {'blocked':>7}  created"]
    for w in sorted(waves, key=lambda w: w.created_at):
        lines.append(
            f"{w.wave_id:36}  {w.status.value:12}  {'yes' if w.dry_run else 'no':3}  {w.selection.kind.value:9}  "
            f"{w.counters.removed:>7}  {w.counters.blocked:>7}  {w.created_at:%Y-%m-%d %H:%M}"
        )
    return "\n".join(lines)


def plan_table(outcomes: Sequence[Outcome]) -> str:
    lines = [f"{'user':40}  {'sku':36}  {'decision':8}  {'reason':28}  detail"]
    for o in outcomes:
        who = o.user_principal_name or o.user_id
        lines.append(f"{who[:40]:40}  {o.sku_id:36}  {o.decision:8}  {o.reason[:28]:28}  {o.detail[:80]}")
    return "\n".join(lines)


async def recent_events(storage: Storage, wave_id: str | None, hours: float = 24 * 7) -> list[Event]:
    since = datetime.now(UTC) - timedelta(hours=hours)
    events = [e async for e in storage.ledger.iter_events(since)]
    return [e for e in events if wave_id is None or e.wave_id == wave_id]


def event_line(event: Event) -> str:
    at = f"{event.at:%Y-%m-%d %H:%M:%S}" if event.at else ""
    return f"{at}  {event.severity.value:7}  {event.kind:18}  {event.message}"


async def status(storage: Storage, wave_id: str | None, out: TextIO) -> int:
    if wave_id is None:
        waves = await storage.ledger.list_waves()
        control = (await storage.ledger.get_control()).value
        print(f"kill switch: {'ON' if control.kill_switch or storage.settings.kill_switch else 'off'}", file=out)
        if control.write_rate:
            print(f"write rate: {control.write_rate:.2f}/s", file=out)
        print(wave_table(waves) if waves else "no waves yet", file=out)
        return 0
    found = await storage.ledger.get_wave(wave_id)
    if found is None:
        print(f"no wave {wave_id} in the ledger (is the id right, and was the command accepted?)", file=sys.stderr)
        for event in (await recent_events(storage, wave_id))[:5]:
            print(event_line(event), file=sys.stderr)
        return 1
    wave = found.value
    print(f"wave {wave.wave_id}: {wave.status.value} {wave.status_reason}".rstrip(), file=out)
    print(f"  group {wave.group_id}  skus {', '.join(wave.sku_ids)}  policy {wave.policy.value}", file=out)
    print(f"  {progress_line(wave)}", file=out)
    for event in (await recent_events(storage, wave_id))[:20]:
        print("  " + event_line(event), file=out)
    return 0


async def report(storage: Storage, wave_id: str, fmt: ReportFormat, out: TextIO) -> int:
    found = await storage.ledger.get_wave(wave_id)
    if found is None:
        print(f"no wave {wave_id} in the ledger", file=sys.stderr)
        return 1
    wave = found.value
    # The wave's own events: its timeline, and the names its scan recorded (group, SKUs, plans).
    since = wave.created_at - timedelta(minutes=5)
    events = [e async for e in storage.ledger.iter_events(since) if e.wave_id == wave.wave_id]
    out.write(render(wave, await collect_outcomes(storage, wave_id), fmt, events=events))
    return 0


DRIFT_FOUND = 4
"""Exit code of `drift --fail-on-drift` when drift is open (the command-line contract's 4)."""


def drift_summary(states: Sequence[DriftState]) -> list[dict[str, object]]:
    """Open drift counted by group and SKU (users), largest first."""
    counts: dict[tuple[str, str, str, str], set[str]] = {}
    for s in states:
        counts.setdefault((s.group_id, s.group_name, s.sku_id, s.sku_name), set()).add(s.user_id)
    return [
        {"group_id": g, "group": gn, "sku_id": k, "sku": kn, "users": len(u)}
        for (g, gn, k, kn), u in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0][1], kv[0][3]))
    ]


def drift_json(s: DriftState) -> dict[str, object]:
    return {
        "user_id": s.user_id,
        "user_principal_name": s.user_principal_name,
        "sku_id": s.sku_id,
        "sku": s.sku_name,
        "group_id": s.group_id,
        "group": s.group_name,
        "removed_by_wave": s.wave_id,
        "first_seen": s.first_seen.isoformat(),
        "last_seen": s.last_seen.isoformat(),
        "cleared_at": s.cleared_at.isoformat() if s.cleared_at else None,
        "cleared_reason": s.cleared_reason,
    }


def drift_table(states: Sequence[DriftState]) -> str:
    lines = [f"{'user':40}  {'sku':20}  {'group':24}  {'wave':8}  {'first seen':16}  {'last seen':16}  cleared"]
    for s in states:
        cleared = f"{s.cleared_at:%Y-%m-%d %H:%M} {s.cleared_reason}" if s.cleared_at else ""
        lines.append(
            f"{(s.user_principal_name or s.user_id)[:40]:40}  {(s.sku_name or s.sku_id)[:20]:20}  "
            f"{(s.group_name or s.group_id)[:24]:24}  {s.wave_id[:8]:8}  {s.first_seen:%Y-%m-%d %H:%M}  "
            f"{s.last_seen:%Y-%m-%d %H:%M}  {cleared}".rstrip()
        )
    return "\n".join(lines)


async def drift(
    storage: Storage, out: TextIO, *, show_all: bool = False, as_json: bool = False, fail_on_drift: bool = False
) -> int:
    """The drift state drift_watch keeps: open rows (and cleared ones with --all), summed by group and SKU."""
    states = sorted(
        [s async for s in storage.ledger.iter_drift()],
        key=lambda s: (s.group_name, s.sku_name, s.user_principal_name or s.user_id),
    )
    open_ = [s for s in states if s.open]
    shown = states if show_all else open_
    summary = drift_summary(open_)
    if as_json:
        payload = {"open": len(open_), "cleared": len(states) - len(open_), "summary": summary}
        json.dump({**payload, "drift": [drift_json(s) for s in shown]}, out, indent=2)
        out.write("\n")
    elif not open_:
        print("no open drift: every direct license licshift removed is still gone", file=out)
        if show_all and shown:
            print(drift_table(shown), file=out)
    else:
        users = len({s.user_id for s in open_})
        print(f"{len(open_)} direct license(s) came back after migration ({users} user(s)):", file=out)
        for row in summary:
            print(
                f"  {row['group'] or row['group_id']} / {row['sku'] or row['sku_id']}: {row['users']} user(s)", file=out
            )
        print(drift_table(shown), file=out)
        print(
            "next: fix the legacy script that re-adds them, then start a new wave on the group "
            "(licshift wave start --group <group> --sku <sku> --all): it migrates them again with every check",
            file=out,
        )
    return DRIFT_FOUND if fail_on_drift and open_ else 0


def selection_from_args(
    all_: bool, first: int | None, percent: float | None, users: Sequence[str]
) -> dict[str, object]:
    chosen = sum([all_, first is not None, percent is not None, bool(users)])
    if chosen > 1:
        raise ValueError("choose one of --all, --first N, --percent P, --users")
    if first is not None:
        return {"kind": "first", "count": first}
    if percent is not None:
        return {"kind": "percent", "percent": percent}
    if users:
        return {"kind": "users", "users": list(users)}
    return {"kind": "all"}


def describe_selection(selection: Selection) -> str:
    return selection.kind.value + (
        f" {selection.count}"
        if selection.count
        else f" {selection.percent:g}%"
        if selection.percent
        else f" ({len(selection.users)} users)"
        if selection.users
        else ""
    )
