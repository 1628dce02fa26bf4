"""`licshift drift`: direct licenses that came back after a wave removed them, as the current state
drift_watch keeps (one row per user and SKU, cleared by a later wave or a rollback), summed by group
and SKU. This command reads that state; it does not scan the tenant."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from licshift.cli.context import Context
from licshift.cli.exitcodes import ExitCode
from licshift.cli.output import short_id, table
from licshift.cli.parsing import add_command, add_json
from licshift.cli.storage import open_storage
from licshift.rules.outcomes import DriftState


def register(sub: Any) -> None:
    cmd = add_command(
        sub,
        "drift",
        help="direct licenses that came back after migration: current state, by group and SKU",
        examples=["licshift drift", "licshift drift --fail-on-drift", "licshift drift --json | jq '.summary'"],
    )
    cmd.add_argument("--all", action="store_true", help="also list drift that was cleared since")
    cmd.add_argument("--fail-on-drift", action="store_true", help="exit 4 when any drift is open (for monitoring)")
    add_json(cmd)
    cmd.set_defaults(handler=drift_command)


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
        "follow_up_wave": s.auto_wave_id or None,
        "follow_ups": s.auto_removals,
        "held": s.held,
    }


def drift_table(states: Sequence[DriftState]) -> str:
    rows = [
        [
            s.user_principal_name or s.user_id,
            s.sku_name or s.sku_id,
            s.group_name or s.group_id,
            short_id(s.wave_id),
            f"{s.first_seen:%Y-%m-%d %H:%M}",
            f"{s.last_seen:%Y-%m-%d %H:%M}",
            _follow_up(s),
            f"{s.cleared_at:%Y-%m-%d %H:%M} {s.cleared_reason}" if s.cleared_at else "",
        ]
        for s in states
    ]
    return table(["user", "sku", "group", "wave", "first seen", "last seen", "removed again", "cleared"], rows)


def _follow_up(s: DriftState) -> str:
    """LICSHIFT_DRIFT_REMOVE's part: the latest follow-up wave and how many there were, or held."""
    if s.held:
        return f"held after {s.auto_removals}"
    return f"{short_id(s.auto_wave_id)} ({s.auto_removals}x)" if s.auto_wave_id else ""


def drift_text(states: Sequence[DriftState], open_: Sequence[DriftState], summary: list[dict[str, object]]) -> str:
    if not open_:
        lines = ["no open drift: every direct license licshift removed is still gone"]
        return "\n".join(lines + ([drift_table(states)] if states else []))
    users = len({s.user_id for s in open_})
    lines = [f"{len(open_)} direct license(s) came back after migration ({users} user(s)):"]
    lines += [f"  {r['group'] or r['group_id']} / {r['sku'] or r['sku_id']}: {r['users']} user(s)" for r in summary]
    lines.append(drift_table(states))
    held = sum(1 for s in open_ if s.held)
    if held:
        lines.append(
            f"{held} held: they came back after every follow-up wave (LICSHIFT_DRIFT_REMOVE_MAX_REPEATS), "
            "so licshift no longer removes them on its own"
        )
    lines.append(
        "next: fix the legacy script that re-adds them, then start a new wave on the group "
        "(licshift wave start --group <group> --sku <sku> --all): it migrates them again with every check"
    )
    return "\n".join(lines)


async def drift_command(args: argparse.Namespace, ctx: Context) -> int:
    async with open_storage(ctx.settings()) as storage:
        states = [s async for s in storage.ledger.iter_drift()]
    states.sort(key=lambda s: (s.group_name, s.sku_name, s.user_principal_name or s.user_id))
    open_ = [s for s in states if s.open]
    shown = states if args.all else open_
    summary = drift_summary(open_)
    payload = {
        "open": len(open_),
        "cleared": len(states) - len(open_),
        "summary": summary,
        "drift": [drift_json(s) for s in shown],
    }
    ctx.output.data(payload, drift_text(shown, open_, summary))
    return ExitCode.BLOCKED if args.fail_on_drift and open_ else ExitCode.OK
