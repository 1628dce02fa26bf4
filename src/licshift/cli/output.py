"""One output contract for every command: tables for people, `--json` for scripts (stable keys,
documented in the README), one summary line at the end of every wait, progress on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from licshift.rules.waves import Wave

BAR_WIDTH = 30


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple):
        return sorted(value) if isinstance(value, frozenset | set) else list(value)
    return str(value)


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=_default)


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[str] = ()) -> str:
    """A plain text table: a header, then one line per row; columns named in `right` align right."""
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        parts = [cell.rjust(widths[i]) if columns[i] in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def short_id(wave_id: str) -> str:
    """The first 8 characters: enough to name a wave (any unique prefix is accepted back)."""
    return wave_id[:8]


def progress_bar(wave: Wave, width: int = BAR_WIDTH) -> str:
    """`[#####.....]   12/40    removing` for a wave; a plan shows what it would remove."""
    c = wave.counters
    done = c.removed + c.restored + c.failed + c.not_attempted
    if wave.dry_run or c.to_remove == 0:
        return f"{wave.status.value:<12} to remove {c.to_remove:>5}"
    filled = min(width, round(width * done / c.to_remove))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>5}/{c.to_remove:<5} {wave.status.value:<12}"


@dataclass
class Output:
    """Where a command writes: data to stdout (a table, or JSON with --json), progress and notes to
    stderr so that `--json` output stays one parseable document."""

    as_json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _line: str = ""

    def data(self, payload: Mapping[str, Any] | Sequence[Any], text: str) -> None:
        """The command's result: `payload` as JSON with --json, else `text`."""
        print(to_json(payload) if self.as_json else text, file=self.out, flush=True)

    def say(self, text: str) -> None:
        """A line for people (stdout without --json; stderr with it, so JSON stays clean)."""
        print(text, file=self.err if self.as_json else self.out, flush=True)

    def note(self, text: str) -> None:
        """Progress and hints: always stderr."""
        self.end_progress()
        print(text, file=self.err, flush=True)

    def progress(self, line: str) -> None:
        """A progress line on stderr, rewritten in place on a terminal."""
        if line == self._line:
            return
        if self.err.isatty():
            self.err.write("\r" + line + "\x1b[K")
        else:
            self.err.write(line + "\n")
        self.err.flush()
        self._line = line

    def end_progress(self) -> None:
        if self._line and self.err.isatty():
            self.err.write("\n")
            self.err.flush()
        self._line = ""


def confirm(question: str, *, yes: bool, stdin: TextIO | None = None, err: TextIO | None = None) -> None:
    """Go on with --yes, or after a 'y' typed at a terminal; refuse otherwise (exit 2)."""
    from licshift.cli.exitcodes import UsageError

    if yes:
        return
    source = stdin or sys.stdin
    if not source.isatty():
        raise UsageError(f"{question}: add --yes to confirm (no terminal to ask on)")
    prompt = err or sys.stderr
    print(f"{question}? [y/N] ", end="", file=prompt, flush=True)
    reply = source.readline().strip().lower()
    if reply not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was done")
