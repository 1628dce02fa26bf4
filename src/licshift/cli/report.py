"""`licshift report`: one row per user of a wave, as CSV, JSON or HTML, to stdout or a file."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from licshift.cli import resolve
from licshift.cli.context import Context
from licshift.cli.exitcodes import ExitCode, UsageError
from licshift.cli.parsing import add_command
from licshift.cli.storage import open_storage
from licshift.rules.outcomes import OutcomeStatus
from licshift.services.report import ReportFormat, render


def register(sub: Any) -> None:
    cmd = add_command(
        sub,
        "report",
        help="one row per user of a wave, as CSV, JSON or HTML",
        examples=[
            "licshift report c9e5bf56 > wave.csv",
            "licshift report c9e5bf56 --format html --out plan.html",
            "licshift report c9e5bf56 --only blocked,failed > follow-up.csv",
            "licshift report c9e5bf56 --format json | jq '.rows[] | select(.status==\"blocked\")'",
        ],
    )
    cmd.add_argument("wave_id", help="wave id or any unique prefix of it")
    cmd.add_argument("--format", choices=[f.value for f in ReportFormat], default="csv")
    cmd.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    cmd.add_argument(
        "--only",
        type=statuses,
        default=None,
        metavar="STATUS[,STATUS]",
        help="only rows with these outcomes, e.g. blocked,failed (" + ", ".join(s.value for s in OutcomeStatus) + ")",
    )
    cmd.set_defaults(handler=report_command)


def statuses(text: str) -> frozenset[OutcomeStatus]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    known = {s.value: s for s in OutcomeStatus}
    wrong = [n for n in names if n not in known]
    if wrong or not names:
        raise argparse.ArgumentTypeError(
            f"unknown outcome {', '.join(wrong) or text!r}; choose from {', '.join(known)}"
        )
    return frozenset(known[n] for n in names)


def writable(path: Path) -> Path:
    """Refuse an --out the report could not be written to, before reading anything."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; name a file")
    if not folder.is_dir():
        raise UsageError(f"--out {path}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--out {path} is not writable; choose another path")
    return path


async def report_command(args: argparse.Namespace, ctx: Context) -> int:
    resolve.check_wave_ref(args.wave_id)
    out_path = writable(args.out) if args.out is not None else None
    async with open_storage(ctx.settings()) as storage:
        wave_id = await resolve.wave_id(storage, args.wave_id)
        found = await storage.ledger.get_wave(wave_id)
        if found is None:
            raise UsageError(f"no wave {wave_id} in the ledger; list waves with `licshift status`")
        wave = found.value
        outcomes = [o async for o in storage.ledger.iter_outcomes(wave_id, statuses=args.only)]
        # The wave's own events: its timeline, and the names its scan recorded (group, SKUs, plans).
        since = wave.created_at - timedelta(minutes=5)
        events = [e async for e in storage.ledger.iter_events(since) if e.wave_id == wave.wave_id]
    text = render(wave, outcomes, ReportFormat(args.format), events=events)
    if out_path is None:
        ctx.output.out.write(text)
        ctx.output.out.flush()
        return ExitCode.OK
    try:
        out_path.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {out_path}: {exc.strerror}; choose another path with --out") from None
    ctx.output.note(f"wrote {out_path} ({len(outcomes)} rows)")
    return ExitCode.OK
