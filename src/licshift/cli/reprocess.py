"""`licshift reprocess`: reprocessLicenseAssignment for the users of a wave blocked by a license
error (`--reason CountViolation`), or for named users, through the function app: the command goes on
the waves queue, intake paces the calls with the removals' write budget, each user's result lands in
the ledger; the CLI waits for the answer, then for every user's result.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from licshift.cli import resolve
from licshift.cli.context import Context
from licshift.cli.directory import open_directory
from licshift.cli.exitcodes import ExitCode, UsageError
from licshift.cli.output import Output, short_id, table
from licshift.cli.parsing import add_command, seconds
from licshift.cli.storage import Storage, open_storage
from licshift.cli.waiting import answer_exit, answer_for, timeout_summary
from licshift.cli.waves import _answer_options, default_requester, finish, send, users_arg, validated
from licshift.rules.answers import Answer
from licshift.rules.decide import BlockReason
from licshift.rules.fixes import ERROR_FIXES
from licshift.rules.licenses import is_guid
from licshift.rules.messages import MAX_REPROCESS_USERS, Command, Reprocess
from licshift.rules.outcomes import Event, OutcomeStatus
from licshift.services import telemetry
from licshift.services.reprocess import GOOD_OUTCOMES

RESULTS_WAIT = 900.0
POLL_SECONDS = 1.0
ERROR_CODES = (*ERROR_FIXES, "Other")


def register(sub: Any) -> None:
    cmd = add_command(
        sub,
        "reprocess",
        help="reprocess the group licenses of users in a license error (e.g. CountViolation after freeing seats)",
        description=(
            "Ask Entra ID to evaluate the users' group-based licenses again (Graph reprocessLicenseAssignment), "
            "through the function app, paced with removals; each user's result is recorded in the ledger. "
            "Needs LICSHIFT_REPROCESS_ENABLED=true and the Graph permission User.ReadWrite.All on the app."
        ),
        examples=[
            "licshift reprocess --wave c9e5bf56 --reason CountViolation",
            "licshift reprocess --users ada@contoso.com,bob@contoso.com --json",
            "licshift reprocess --wave c9e5bf56 --users @still-blocked.txt --no-wait",
        ],
    )
    cmd.add_argument("--wave", default=None, help="wave id or unique prefix: its blocked users (with --reason)")
    cmd.add_argument(
        "--reason",
        default=None,
        help=f"the license error the wave's blocked users show: {', '.join(ERROR_CODES)} (comma-separated)",
    )
    cmd.add_argument("--users", default=None, help="comma-separated object ids or UPNs, or @file with one per line")
    cmd.add_argument("--requested-by", default=None, help="recorded in the ledger (default user@host)")
    cmd.add_argument(
        "--wait",
        type=seconds,
        default=RESULTS_WAIT,
        metavar="SECONDS",
        help=f"seconds to wait for every user's result (default {RESULTS_WAIT:g})",
    )
    _answer_options(cmd)
    cmd.set_defaults(handler=reprocess_command)


def error_codes(raw: str) -> frozenset[str]:
    """--reason as Graph's error codes, matched case-insensitively."""
    known = {code.lower(): code for code in ERROR_CODES}
    codes = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [c for c in codes if c.lower() not in known]
    if unknown or not codes:
        raise UsageError(f"--reason {', '.join(unknown) or raw!r}: use a license error code: {', '.join(ERROR_CODES)}")
    return frozenset(known[c.lower()] for c in codes)


async def _blocked_by(storage: Storage, wave_id: str, codes: frozenset[str]) -> list[str]:
    """The wave's users blocked because their assignment from the group is in one of `codes`."""
    users: dict[str, None] = {}
    async for row in storage.ledger.iter_outcomes(wave_id, statuses=[OutcomeStatus.BLOCKED]):
        if row.reason == BlockReason.INHERITED_ERROR and codes & set(row.detail.split(", ")):
            users[row.user_id] = None
    return list(users)


async def _chosen(args: argparse.Namespace, ctx: Context, storage: Storage) -> tuple[str, list[str], str]:
    """(wave id or "", user ids, reason) as the arguments name them."""
    if args.reason is not None and args.wave is None:
        raise UsageError("--reason picks users of a wave: add --wave")
    if args.wave is None and args.users is None:
        raise UsageError("say which users: --wave W --reason CountViolation, or --users")
    if args.wave is not None and args.reason is None and args.users is None:
        raise UsageError("--wave needs --reason (e.g. CountViolation) or --users")
    codes = error_codes(args.reason) if args.reason is not None else frozenset()
    wave_id = ""
    if args.wave is not None:
        resolve.check_wave_ref(args.wave)
        wave_id = await resolve.wave_id(storage, args.wave)
    refs = users_arg(args.users)
    if args.users is not None and not refs:
        raise UsageError("--users names no user; give object ids or UPNs, comma-separated, or @file")
    users: list[str] = []
    if codes:
        users += await _blocked_by(storage, wave_id, codes)
    if refs:
        if all(is_guid(r) for r in refs):
            users += [r.lower() for r in refs]
        else:
            async with open_directory(ctx.settings()) as directory:
                users += await directory.resolve_users(refs)
    return wave_id, list(dict.fromkeys(users)), ",".join(sorted(codes))


def _messages(
    args: argparse.Namespace, ctx: Context, wave_id: str, users: Sequence[str], reason: str
) -> list[Reprocess]:
    settings = ctx.settings()
    out: list[Reprocess] = []
    for start in range(0, len(users), MAX_REPROCESS_USERS):
        payload = {
            "command": Command.REPROCESS.value,
            "wave_id": wave_id or None,
            "users": list(users[start : start + MAX_REPROCESS_USERS]),
            "reason": reason if "," not in reason else "",
            "requested_by": args.requested_by or default_requester(),
            "request_id": str(uuid.uuid4()),
        }
        message = validated(payload, settings)
        assert isinstance(message, Reprocess)
        out.append(message)
    return out


async def reprocess_command(args: argparse.Namespace, ctx: Context) -> int:
    out = ctx.output
    async with open_storage(ctx.settings()) as storage:
        wave_id, users, reason = await _chosen(args, ctx, storage)
        result: dict[str, Any] = {"command": "reprocess", "wave_id": wave_id or None, "reason": reason or None}
        if not users:
            which = f"blocked by {reason} in wave {short_id(wave_id)}" if reason else "named"
            return _finish(out, result, [], None, ExitCode.OK, f"no user {which}: nothing to reprocess")
        messages = _messages(args, ctx, wave_id, users, reason)
        started = datetime.now(UTC)
        for message in messages:
            await send(storage, message)
        out.note(f"reprocess of {len(users)} user(s) queued ({len(messages)} command(s))")
        result["request_ids"] = [m.request_id for m in messages]
        if args.no_wait:
            return _finish(out, result, [], None, ExitCode.OK, "queued -> licshift report / status for the results")
        answers = [await answer_for(storage, m.request_id, args.timeout, out) for m in messages]
        worst = next((a for a in answers if answer_exit(a) is not ExitCode.OK), answers[0])
        code = answer_exit(worst)
        if code is not ExitCode.OK:
            summary = timeout_summary("the function app's answer", args.timeout, None, "")
            return _finish(out, result, [], worst, code, f"{worst.verdict}: {worst.message}" if worst else summary)
        assert worst is not None
        out.note(f"{worst.verdict}: {worst.message}")
        ids = {m.request_id for m in messages}
        events = await _results(storage, ids, len(users), started, args.wait, out)
    return _report(out, result, worst, events, len(users), args.wait)


async def _results(
    storage: Storage, request_ids: set[str], expected: int, since: datetime, limit: float, out: Output
) -> dict[str, Event]:
    """Each user's latest `reprocessed` event of these requests, until all are in or `limit` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    found: dict[str, Event] = {}
    while True:
        async for event in storage.ledger.iter_events(since - timedelta(minutes=1), kinds=[telemetry.REPROCESSED]):
            if event.data.get("request_id") in request_ids:
                seen = found.get(event.user_id)
                if seen is None or (event.at and seen.at and event.at > seen.at):
                    found[event.user_id] = event
        out.progress(f"  reprocessed {len(found)} of {expected} user(s)")
        if len(found) >= expected or loop.time() >= deadline:
            out.end_progress()
            return found
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - loop.time())))


def _user_json(event: Event) -> dict[str, Any]:
    return {
        "user_id": event.user_id,
        "user_principal_name": event.data.get("user_principal_name") or None,
        "outcome": event.data.get("outcome"),
        "errors_before": event.data.get("errors_before", []),
        "errors_after": event.data.get("errors_after", []),
        "message": event.message,
        "at": event.at,
    }


def _report(
    out: Output, result: dict[str, Any], answer: Answer, events: dict[str, Event], expected: int, limit: float
) -> int:
    rows = sorted((_user_json(e) for e in events.values()), key=lambda r: r["user_principal_name"] or r["user_id"])
    counts = Counter(str(r["outcome"]) for r in rows)
    said = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    if len(rows) < expected:
        code = ExitCode.TIMEOUT
        summary = (
            f"timed out after {limit:g} s: {len(rows)} of {expected} user(s) reprocessed ({said or 'none yet'}); "
            "the rest may still follow (paced with removals) -> licshift status"
        )
    else:
        code = ExitCode.OK if all(r["outcome"] in GOOD_OUTCOMES for r in rows) else ExitCode.BLOCKED
        summary = f"reprocessed {expected} user(s): {said}"
    if not out.as_json and rows:
        shown = [
            [
                r["user_principal_name"] or r["user_id"],
                r["outcome"],
                ", ".join(r["errors_before"]) or "-",
                ", ".join(r["errors_after"]) or "-",
            ]
            for r in rows
        ]
        print(table(["user", "outcome", "errors before", "errors after"], shown), file=out.out)
    result["counts"] = dict(counts)
    return _finish(out, result, rows, answer, code, summary)


def _finish(
    out: Output,
    result: dict[str, Any],
    users: list[dict[str, Any]],
    answer: Answer | None,
    code: ExitCode,
    summary: str,
) -> int:
    result.setdefault("request_ids", [])
    result.setdefault("counts", {})
    result["users"] = users
    return finish(out, result, answer, code, summary)
