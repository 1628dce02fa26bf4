"""`licshift plan` and `licshift wave start|pause|resume|cancel|rollback`: commands for the function
app, sent on the waves queue with a request id, each waiting for its answer (accepted, or refused
and why) and, for plans and `wave start --wait`, for the wave's end.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from licshift.cli import resolve
from licshift.cli.context import Context
from licshift.cli.directory import Names, names_for, open_directory
from licshift.cli.exitcodes import CliError, ExitCode, UsageError
from licshift.cli.output import Output, confirm, short_id, table
from licshift.cli.parsing import add_command, add_json, bounded, seconds, whole
from licshift.cli.shapes import outcome_json, wave_json
from licshift.cli.storage import Storage, open_storage
from licshift.cli.waiting import answer_exit, answer_for, follow_wave, timeout_summary, wave_exit, wave_summary
from licshift.rules.answers import Answer, Verdict
from licshift.rules.licenses import is_guid
from licshift.rules.messages import (
    Command,
    MalformedMessage,
    StartWave,
    WavesMessage,
    encode_waves_message,
    parse_waves_message,
)
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.settings import Settings

ANSWER_TIMEOUT = 60.0
PLAN_WAIT = 900.0
WAVE_WAIT = 3600.0
MAX_USERS_FILE_BYTES = 50 * 1024 * 1024


def default_requester() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


# --- the command line ----------------------------------------------------------------------------


def register(sub: Any) -> None:
    _register_plan(sub)
    wave = add_command(
        sub,
        "wave",
        help="start and steer waves",
        examples=[
            'licshift wave start --group "All users" --sku ENTERPRISEPACK --first 10 --wait',
            "licshift wave pause c9e5bf56",
            "licshift wave rollback c9e5bf56 --yes",
        ],
    )
    actions = wave.add_subparsers(dest="wave_command", required=True, metavar="ACTION")
    _register_start(actions)
    _register_steering(actions)


def _register_plan(sub: Any) -> None:
    plan = add_command(
        sub,
        "plan",
        help="dry run: record and print what a wave would do; writes nothing to Graph",
        examples=[
            'licshift plan --group "All users" --sku ENTERPRISEPACK',
            "licshift plan --group 6fd2c87f-b296-42f0-b197-1e91e994b900 --sku SPE_E3 --first 10 --json",
        ],
    )
    _wave_options(plan)
    plan.add_argument(
        "--wait", type=seconds, default=PLAN_WAIT, help=f"seconds to wait for the plan (default {PLAN_WAIT:g})"
    )
    _answer_options(plan)
    plan.set_defaults(handler=plan_command)


def _register_start(actions: Any) -> None:
    start = add_command(
        actions,
        "start",
        help="start a wave (waits for the function app to accept it; --wait follows it to the end)",
        examples=[
            'licshift wave start --group "All users" --sku ENTERPRISEPACK --first 10 --wait',
            "licshift wave start --group 6fd2c87f-b296-42f0-b197-1e91e994b900 --sku ENTERPRISEPACK --percent 25",
            "licshift wave start --group Sales --sku SPE_E3 --users ada@contoso.com,bob@contoso.com --json",
        ],
    )
    _wave_options(start)
    start.add_argument("--dry-run", action="store_true", help="record the plan only (same as `licshift plan`)")
    start.add_argument("--force", action="store_true", help="skip the canary gate (not recommended)")
    _follow_option(start, "the wave")
    _answer_options(start)
    start.set_defaults(handler=start_command)


def _register_steering(actions: Any) -> None:
    for action, text, sure in (
        ("pause", "stop removing until resumed", False),
        ("resume", "continue a paused wave (a halted wave is not resumed: start a new one)", False),
        ("cancel", "stop for good; remaining users are not touched", True),
        ("rollback", "put back every direct assignment the wave removed", True),
    ):
        cmd = add_command(
            actions,
            action,
            help=text,
            examples=[
                f"licshift wave {action} c9e5bf56" + (" --yes" if sure else ""),
                f"licshift wave {action} c9e5bf56 --json",
            ],
        )
        cmd.add_argument("wave_id", help="wave id or any unique prefix of it (as `licshift status` prints)")
        cmd.add_argument("--requested-by", default=None, help="recorded in the ledger (default user@host)")
        if sure:
            cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        _answer_options(cmd)
        cmd.set_defaults(handler=wave_command)
    _register_retry(actions)


RETRYABLE = {"blocked": OutcomeStatus.BLOCKED, "failed": OutcomeStatus.FAILED}


def _register_retry(actions: Any) -> None:
    retry = add_command(
        actions,
        "retry",
        help="start a new wave of exactly the blocked and/or failed users of a wave (same group and SKUs)",
        examples=[
            "licshift wave retry c9e5bf56 --blocked --wait",
            "licshift wave retry c9e5bf56 --failed --json",
        ],
    )
    retry.add_argument("wave_id", help="wave id or any unique prefix of it (as `licshift status` prints)")
    retry.add_argument("--blocked", action="store_true", help="the users the rule blocked")
    retry.add_argument("--failed", action="store_true", help="the users whose removal failed")
    retry.add_argument("--force", action="store_true", help="skip the canary gate (not recommended)")
    retry.add_argument("--requested-by", default=None, help="recorded in the ledger (default user@host)")
    _follow_option(retry, "the new wave")
    _answer_options(retry)
    retry.set_defaults(handler=retry_command)


async def retry_command(args: argparse.Namespace, ctx: Context) -> int:
    """The new wave goes through intake like any other: validated, checked against Graph and the
    canary gate; every user is decided again on a fresh read."""
    chosen = [RETRYABLE[name] for name in RETRYABLE if getattr(args, name)]
    if not chosen:
        raise UsageError("say which users to retry: --blocked, --failed, or both")
    resolve.check_wave_ref(args.wave_id)
    async with open_storage(ctx.settings()) as storage:
        wave_id = await resolve.wave_id(storage, args.wave_id)
        found = await storage.ledger.get_wave(wave_id)
        if found is None:
            raise UsageError(f"no wave {wave_id} in the ledger; list waves with `licshift status`")
        users = sorted({o.user_id async for o in storage.ledger.iter_outcomes(wave_id, statuses=chosen)})
    what = " or ".join(s.value for s in chosen)
    if not users:
        result = {"command": "retry", "request_id": None, "wave_id": None}
        summary = f"wave {short_id(wave_id)} has no {what} user: nothing to retry"
        return _finish(ctx.output, result, None, ExitCode.OK, summary)
    wave = found.value
    ctx.output.note(f"retrying {len(users)} {what} user(s) of wave {short_id(wave_id)}")
    start = argparse.Namespace(
        **vars(args),
        group=wave.group_id,
        sku=list(wave.sku_ids),
        users=",".join(users),
        all=False,
        first=None,
        percent=None,
        policy=wave.policy.value,
        wave_id_new=None,
        dry_run=False,
    )
    start.wave_id = None  # the new wave's id (args.wave_id named the wave retried)
    return await _start(start, ctx, dry_run=False, follow=args.wait)


def _follow_option(cmd: argparse.ArgumentParser, what: str) -> None:
    cmd.add_argument(
        "--wait",
        type=seconds,
        nargs="?",
        const=WAVE_WAIT,
        default=None,
        metavar="SECONDS",
        help=f"follow {what} until it ends (default {WAVE_WAIT:g} s when given without a number)",
    )


def _wave_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--group", required=True, help="licensing group: its id, or its exact display name")
    cmd.add_argument(
        "--sku", action="append", required=True, help="skuPartNumber (ENTERPRISEPACK) or skuId; repeat for several"
    )
    sel = cmd.add_mutually_exclusive_group()
    sel.add_argument("--all", action="store_true", help="every member of the group (default)")
    sel.add_argument("--first", type=whole("--first", 1, 1_000_000), help="the first N members (a canary)")
    sel.add_argument("--percent", type=bounded("--percent", 0, 100), help="a stable share of the members")
    sel.add_argument("--users", help="comma-separated object ids or UPNs, or @file with one per line")
    cmd.add_argument("--policy", choices=["no-loss", "identical"], default=None)
    cmd.add_argument("--requested-by", default=None, help="recorded in the ledger (default user@host)")
    cmd.add_argument("--wave-id", default=None, help="choose the wave id (GUID); default: a new one")


def _answer_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--timeout",
        type=seconds,
        default=ANSWER_TIMEOUT,
        help=f"seconds to wait for the function app's answer (default {ANSWER_TIMEOUT:g})",
    )
    cmd.add_argument("--no-wait", action="store_true", help="return once the command is queued")
    add_json(cmd)


# --- building the message ------------------------------------------------------------------------


def users_arg(raw: str | None) -> list[str]:
    if not raw:
        return []
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            if path.stat().st_size > MAX_USERS_FILE_BYTES:
                raise UsageError(f"the user list {path} is larger than {MAX_USERS_FILE_BYTES // 2**20} MiB")
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"the user list {path} is not UTF-8 text") from None
        except OSError as exc:
            raise UsageError(f"cannot read the user list {path}: {exc.strerror}") from None
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [part.strip() for part in raw.split(",") if part.strip()]


def selection(args: argparse.Namespace, users: Sequence[str]) -> dict[str, object]:
    if args.first is not None:
        return {"kind": "first", "count": args.first}
    if args.percent is not None:
        return {"kind": "percent", "percent": args.percent}
    if args.users is not None:
        if not users:
            raise UsageError("--users names no user; give object ids or UPNs, comma-separated, or @file")
        return {"kind": "users", "users": list(users)}
    return {"kind": "all"}


def validated(payload: dict[str, Any], settings: Settings) -> WavesMessage:
    """The message exactly as wave_intake will parse it: a typo fails here, before anything is sent."""
    try:
        return parse_waves_message(json.dumps(payload), max_wave_users=settings.max_wave_users)
    except MalformedMessage as exc:
        raise UsageError(str(exc)) from None


async def start_message(args: argparse.Namespace, ctx: Context, *, dry_run: bool) -> StartWave:
    settings = ctx.settings()
    if args.wave_id is not None and not is_guid(args.wave_id):
        raise UsageError(f"--wave-id must be a GUID like 6fd2c87f-b296-42f0-b197-1e91e994b900, got {args.wave_id!r}")
    refs = users_arg(args.users)
    group = args.group.strip()
    chosen = selection(args, refs)
    if not is_guid(group) or any(not is_guid(r) for r in refs):
        async with open_directory(settings) as directory:
            group = await directory.resolve_group(group)
            if refs:
                chosen = {"kind": "users", "users": await directory.resolve_users(refs)}
    payload = {
        "command": Command.START.value,
        "wave_id": args.wave_id or str(uuid.uuid4()),
        "group": group,
        "skus": list(args.sku),
        "selection": chosen,
        "dry_run": dry_run,
        "force": bool(getattr(args, "force", False)),
        "policy": args.policy,
        "requested_by": args.requested_by or default_requester(),
        "request_id": str(uuid.uuid4()),
    }
    message = validated(payload, settings)
    assert isinstance(message, StartWave)
    return message


async def send(storage: Storage, message: WavesMessage) -> None:
    # No queue creation here: the deployment (and locally the host) creates the queues, and an operator
    # holds only Storage Queue Data Message Sender on the waves queue, which cannot create queues.
    await storage.queue.send(storage.settings.waves_queue, encode_waves_message(message))


# --- the commands ----------------------------------------------------------------------------------


async def plan_command(args: argparse.Namespace, ctx: Context) -> int:
    return await _start(args, ctx, dry_run=True, follow=args.wait)


async def _readiness_notes(message: StartWave, ctx: Context) -> None:
    """`licshift check`'s summary on top of the plan (stderr: --json stays the plan); best effort, as
    the plan itself does not need the admin's Graph access."""
    from licshift.cli import check

    settings = ctx.settings()
    try:
        async with open_directory(settings) as directory:
            for sku in message.skus:
                found = await check.gather(directory, message.group_id, sku, message.policy or settings.policy)
                ctx.output.note(check.text(found, details=False))
    except CliError as exc:  # intake gives the authoritative answer (a refusal exits 3)
        ctx.output.note(f"readiness not checked: {exc}")


async def start_command(args: argparse.Namespace, ctx: Context) -> int:
    return await _start(args, ctx, dry_run=args.dry_run, follow=args.wait)


async def _start(args: argparse.Namespace, ctx: Context, *, dry_run: bool, follow: float | None) -> int:
    out = ctx.output
    message = await start_message(args, ctx, dry_run=dry_run)
    if args.command == "plan":
        await _readiness_notes(message, ctx)
    kind = "dry run" if dry_run else "wave"
    result: dict[str, Any] = {
        "command": "plan" if args.command == "plan" else "start",
        "request_id": message.request_id,
        "wave_id": message.wave_id,
    }
    if dry_run:
        result["outcomes"] = []
    async with open_storage(ctx.settings()) as storage:
        await send(storage, message)
        out.note(f"{kind} {short_id(message.wave_id)} queued ({message.selection.describe()})")
        if args.no_wait:
            return _finish(out, result, None, ExitCode.OK, f"queued -> licshift status {short_id(message.wave_id)}")
        answer = await answer_for(storage, message.request_id, min(args.timeout, follow or args.timeout), out)
        code = answer_exit(answer)
        if code is not ExitCode.OK or follow is None:
            return _finish(out, result, answer, code, _answer_line(answer, args.timeout, message.wave_id))
        if answer is not None:
            out.note(f"{answer.verdict}: {answer.message}")
        wave = await follow_wave(storage, message.wave_id, follow, out)
        code = wave_exit(wave)
        names = await names_for(storage.settings, [wave.group_id] if wave else [])
        if wave is not None:
            result["wave"] = wave_json(wave, names)
        outcomes: list[Outcome] = []
        if dry_run and wave is not None and code is not ExitCode.TIMEOUT:
            outcomes = [o async for o in storage.ledger.iter_outcomes(message.wave_id)]
            result["outcomes"] = [outcome_json(o, names) for o in outcomes]
            if not out.as_json:
                print(plan_table(outcomes, names), file=out.out)
        if code is ExitCode.TIMEOUT:
            summary = timeout_summary("the wave to end", follow, wave, message.wave_id)
        else:
            assert wave is not None
            summary = wave_summary(wave)
        return _finish(out, result, answer, code, summary)


def _answer_line(answer: Answer | None, timeout: float, wave_id: str) -> str:
    if answer is None:
        return timeout_summary("the function app's answer", timeout, None, "")
    follow = wave_id and answer.verdict is not Verdict.REJECTED
    return f"{answer.verdict}: {answer.message}" + (f" -> licshift status {short_id(wave_id)}" if follow else "")


def _finish(out: Output, result: dict[str, Any], answer: Answer | None, code: ExitCode, summary: str) -> int:
    result.setdefault("wave", None)
    return finish(out, result, answer, code, summary)


def finish(out: Output, result: dict[str, Any], answer: Answer | None, code: ExitCode, summary: str) -> int:
    """A queued command's last word: `result` with the answer, the summary and the exit code as JSON,
    or the summary line for people (stdout when it went well or blocked, else stderr)."""
    result.update(
        verdict=answer.verdict.value if answer else None,
        message=answer.message if answer else "",
        summary=summary,
        exit_code=int(code),
    )
    if out.as_json:
        out.data(result, "")
        if code is not ExitCode.OK:
            out.note(summary)
    elif code in (ExitCode.OK, ExitCode.BLOCKED):
        print(summary, file=out.out, flush=True)
    else:
        out.note(f"licshift: {summary}")
    return int(code)


async def wave_command(args: argparse.Namespace, ctx: Context) -> int:
    resolve.check_wave_ref(args.wave_id)
    action = args.wave_command
    settings = ctx.settings()
    async with open_storage(settings) as storage:
        wave_id = await resolve.wave_id(storage, args.wave_id)
        if getattr(args, "yes", None) is not None:
            confirm(f"{action} wave {short_id(wave_id)}", yes=args.yes)
        payload = {
            "command": action,
            "wave_id": wave_id,
            "requested_by": args.requested_by or default_requester(),
            "request_id": str(uuid.uuid4()),
        }
        message = validated(payload, settings)
        await send(storage, message)
        result: dict[str, Any] = {"command": action, "request_id": message.request_id, "wave_id": wave_id}
        if args.no_wait:
            return _finish(
                ctx.output, result, None, ExitCode.OK, f"{action} queued -> licshift status {short_id(wave_id)}"
            )
        answer = await answer_for(storage, message.request_id, args.timeout, ctx.output)
        return _finish(ctx.output, result, answer, answer_exit(answer), _answer_line(answer, args.timeout, wave_id))


def plan_table(outcomes: Sequence[Outcome], names: Names) -> str:
    rows = [
        [o.user_principal_name or o.user_id, names.sku(o.sku_id), o.decision, o.status.value, o.reason, o.detail[:80]]
        for o in outcomes
    ]
    return table(["user", "sku", "decision", "status", "reason", "detail"], rows)
