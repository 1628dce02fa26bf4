"""The `licshift` command. Each subcommand imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from licshift.licenses import InvalidId
from licshift.messages import MalformedMessage, StartWave, WavesMessage
from licshift.report import ReportFormat
from licshift.settings import Settings, SettingsError


class UsageError(Exception):
    """Wrong arguments: printed with the fix, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="licshift",
        description="Move Entra ID users from direct licenses to group-based licensing, safely, in waves.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="migrate a simulated tenant end to end (simulator + Azurite), print the result")
    demo.add_argument("--scenario", default="seed-example", help="built-in scenario name or a .json/.yaml file")
    demo.add_argument("--users", type=int, default=None, help="tenant size for built-in scenarios")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    demo.add_argument("--canary", type=int, default=10, help="users in the canary wave (default 10)")

    sim = sub.add_parser("sim", help="the Graph tenant simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIMCOMMAND")
    serve = sim_sub.add_parser("serve", help="serve a scenario on loopback until interrupted")
    serve.add_argument("--scenario", default="seed-example")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--users", type=int, default=None)
    serve.add_argument("--time-scale", type=float, default=1.0, help="compress throttling windows and delays")

    host = sub.add_parser("host", help="run function_app.py's functions locally against the configured storage/Graph")
    host.add_argument(
        "--timer-interval", type=float, default=None, help="fire timers every N seconds (default: their schedules)"
    )

    def wave_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--group", required=True, help="licensing group id (GUID)")
        cmd.add_argument("--sku", action="append", required=True, help="skuId or skuPartNumber; repeat for several")
        sel = cmd.add_mutually_exclusive_group()
        sel.add_argument("--all", action="store_true", help="every member of the group (default)")
        sel.add_argument("--first", type=int, help="the first N members (a canary)")
        sel.add_argument("--percent", type=float, help="a stable share of the members")
        sel.add_argument("--users", help="comma-separated user ids, or @file with one id per line")
        cmd.add_argument("--policy", choices=["no-loss", "identical"], default=None)
        cmd.add_argument("--requested-by", default=None, help="recorded in the ledger (default user@host)")
        cmd.add_argument("--wave-id", default=None, help="choose the wave id (GUID); default: a new one")

    plan = sub.add_parser("plan", help="dry run: record and print what a wave would do; writes nothing to Graph")
    wave_options(plan)
    plan.add_argument("--wait", type=float, default=900, help="seconds to wait for the plan (default 900)")

    wave = sub.add_parser("wave", help="start and steer waves")
    wave_sub = wave.add_subparsers(dest="wave_command", required=True, metavar="ACTION")
    start = wave_sub.add_parser("start", help="start a wave")
    wave_options(start)
    start.add_argument("--dry-run", action="store_true")
    start.add_argument("--force", action="store_true", help="skip the canary gate (not recommended)")
    start.add_argument("--wait", type=float, default=0, help="wait up to N seconds for the wave to settle")
    for action, text in (
        ("pause", "stop removing until resumed"),
        ("resume", "continue a paused or halted wave"),
        ("cancel", "stop for good; remaining users are not touched"),
        ("rollback", "put back every direct assignment the wave removed"),
    ):
        cmd = wave_sub.add_parser(action, help=text)
        cmd.add_argument("wave_id")
        cmd.add_argument("--requested-by", default=None)

    kill = sub.add_parser("kill-switch", help="stop (on) or allow (off) every removal, at once")
    kill.add_argument("state", choices=["on", "off"])
    kill.add_argument("--requested-by", default=None)

    status = sub.add_parser("status", help="all waves, or one wave with its recent events")
    status.add_argument("wave_id", nargs="?")

    report = sub.add_parser("report", help="one row per user of a wave, as CSV, JSON or HTML")
    report.add_argument("wave_id")
    report.add_argument("--format", choices=[f.value for f in ReportFormat], default="csv")
    report.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")

    drift = sub.add_parser(
        "drift",
        help="direct licenses that came back after migration: current state, by group and SKU",
        epilog="example: licshift drift --json | jq '.summary'",
    )
    drift.add_argument("--all", action="store_true", help="also list drift that was cleared since")
    drift.add_argument("--json", action="store_true", help="print JSON (keys: open, cleared, summary, drift)")
    drift.add_argument("--fail-on-drift", action="store_true", help="exit 4 when any drift is open")
    return p


def _users_arg(raw: str | None) -> list[str]:
    if not raw:
        return []
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the user list {path}: {exc.strerror}") from None
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [part.strip() for part in raw.split(",") if part.strip()]


def _is_start(args: argparse.Namespace) -> bool:
    return bool(args.command == "plan" or (args.command == "wave" and args.wave_command == "start"))


def _command_message(args: argparse.Namespace, settings: Settings) -> WavesMessage | None:
    """The waves-queue message this invocation sends, validated exactly as wave_intake will parse it,
    before any storage is touched: a typo fails at once with the fix, and nothing is queued."""
    from licshift.cli import admin

    who = getattr(args, "requested_by", None) or admin.default_requester()
    if _is_start(args):
        try:
            selection = admin.selection_from_args(args.all, args.first, args.percent, _users_arg(args.users))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return admin.start_message(
            group=args.group,
            skus=args.sku,
            selection=selection,
            dry_run=args.command == "plan" or args.dry_run,
            force=getattr(args, "force", False),
            policy=args.policy,
            requested_by=who,
            max_wave_users=settings.max_wave_users,
            wave_id=args.wave_id,
        )
    if args.command == "wave":
        return admin.wave_message(args.wave_command, args.wave_id, who, settings.max_wave_users)
    if args.command == "kill-switch":
        return admin.kill_message(args.state == "on", who, settings.max_wave_users)
    return None


async def _admin(args: argparse.Namespace, settings: Settings) -> int:
    from licshift.cli import admin

    out = sys.stdout
    message = _command_message(args, settings)
    async with admin.open_storage(settings) as storage:
        if isinstance(message, StartWave):
            await admin.send(storage, message)
            kind = "dry run" if message.dry_run else "wave"
            print(f"{kind} {message.wave_id} queued ({admin.describe_selection(message.selection)})", file=out)
            if args.wait <= 0:
                print(f"follow it with: licshift status {message.wave_id}", file=out)
                return 0
            wave = await admin.wait_for(storage, message.wave_id, args.wait, out)
            if wave is None:
                print(
                    "the wave did not appear in the ledger: is the function app (or `licshift host`) running? "
                    f"`licshift status {message.wave_id}` shows a rejection if intake refused it",
                    file=sys.stderr,
                )
                return 1
            if args.command == "plan":
                print(admin.plan_table(await admin.collect_outcomes(storage, message.wave_id)), file=out)
            return 0
        if message is not None:
            await admin.send(storage, message)
            what = (
                f"{args.wave_command} queued for wave {args.wave_id}"
                if args.command == "wave"
                else (f"kill switch {args.state} queued")
            )
            print(what, file=out)
            return 0
        if args.command == "status":
            return await admin.status(storage, args.wave_id, out)
        if args.command == "report":
            fmt = ReportFormat(args.format)
            if args.out is None:
                return await admin.report(storage, args.wave_id, fmt, out)
            with args.out.open("w", encoding="utf-8", newline="") as handle:
                code = await admin.report(storage, args.wave_id, fmt, handle)
            print(f"wrote {args.out}", file=out)
            return code
        if args.command == "drift":
            return await admin.drift(
                storage, out, show_all=args.all, as_json=args.json, fail_on_drift=args.fail_on_drift
            )
    raise UsageError(f"unknown command {args.command}")


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from licshift.cli.demo import run_demo

            return run_demo(scenario=args.scenario, users=args.users, as_json=args.json, canary=args.canary)
        if args.command == "sim":
            from licshift.cli.simserve import serve

            return serve(args.scenario, port=args.port, users=args.users, time_scale=args.time_scale)
        settings = Settings.from_env()
        if args.command == "host":
            from licshift.cli.hostrun import run_host

            return run_host(settings, timer_interval=args.timer_interval)
        return asyncio.run(_admin(args, settings))
    except (SettingsError, MalformedMessage, InvalidId, UsageError) as exc:
        print(f"licshift: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from azure.core.exceptions import AzureError

        if isinstance(exc, AzureError):
            # Storage unreachable or refused: say which setting points where, not a traceback.
            print(
                f"licshift: storage call failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "check LicshiftStorage (or the __queueServiceUri/__tableServiceUri settings) and your access",
                file=sys.stderr,
            )
            return 1
        raise


def main() -> None:
    sys.exit(run())
