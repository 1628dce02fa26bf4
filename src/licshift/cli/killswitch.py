"""`licshift kill-switch on|off`: the emergency stop, written by the CLI itself.

It must work when the function app does not (that may be why it is pulled), so it does not go
through the waves queue: the CLI writes the control row with the admin's storage access, reads it
back to confirm, and records the change as an event row beside it in the Control table (who, when,
from where): the operator role set may write that table, not the Events table.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from licshift.cli.context import Context
from licshift.cli.exitcodes import EnvironmentProblem, ExitCode
from licshift.cli.output import confirm
from licshift.cli.parsing import add_command, add_json
from licshift.cli.storage import Storage, open_storage
from licshift.cli.waves import default_requester
from licshift.ports.store import ConcurrencyConflict
from licshift.rules.outcomes import Event, Severity
from licshift.services import telemetry

SAVE_ATTEMPTS = 5


def register(sub: Any) -> None:
    cmd = add_command(
        sub,
        "kill-switch",
        help="stop (on) or allow (off) every removal at once; works while the function app is down",
        examples=["licshift kill-switch on --yes", "licshift kill-switch off", "licshift kill-switch on --yes --json"],
    )
    cmd.add_argument("state", choices=["on", "off"])
    cmd.add_argument("--requested-by", default=None, help="recorded in the ledger (default user@host)")
    cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation (on)")
    add_json(cmd)
    cmd.set_defaults(handler=kill_switch_command)


async def set_kill_switch(storage: Storage, on: bool, who: str) -> tuple[bool, datetime]:
    """Write the switch and read it back; returns (changed, when)."""
    ledger = storage.ledger
    for _ in range(SAVE_ATTEMPTS):
        current = await ledger.get_control()
        now = datetime.now(UTC)
        if current.value.kill_switch == on:
            return False, now
        try:
            await ledger.save_control(
                replace(current.value, kill_switch=on, updated_by=who, updated_at=now), current.etag or None
            )
        except ConcurrencyConflict:
            continue  # the scheduler saved its write rate meanwhile: read again
        if (await ledger.get_control()).value.kill_switch != on:
            raise EnvironmentProblem("the kill switch was written but reads back unchanged; run the command again")
        state = "on: every removal stops" if on else "off: removals may continue"
        await ledger.record_switch_change(
            Event(
                kind=telemetry.KILL_SWITCH,
                message=f"kill switch {state} (by {who}, set from the CLI)",
                severity=Severity.WARNING if on else Severity.INFO,
                actor=who,
                data={"on": on, "via": "cli"},
                at=now,
            )
        )
        return True, now
    raise EnvironmentProblem("the control row kept changing while writing the kill switch; run the command again")


async def kill_switch_command(args: argparse.Namespace, ctx: Context) -> int:
    on = args.state == "on"
    who = args.requested_by or default_requester()
    settings = ctx.settings()
    if on:
        confirm("turn the kill switch on and stop every removal", yes=args.yes)
    async with open_storage(settings) as storage:
        changed, at = await set_kill_switch(storage, on, who)
    state = "on" if on else "off"
    if changed:
        text = f"kill switch {state} (confirmed in the ledger at {at:%H:%M:%S} UTC)"
    else:
        text = f"kill switch is already {state}"
    if not on and settings.kill_switch:
        text += "; LICSHIFT_KILL_SWITCH=true is set too and still stops every removal"
    ctx.output.data({"kill_switch": on, "changed": changed, "by": who, "at": at.isoformat()}, text)
    return ExitCode.OK
