"""How commands are declared: every command has a help line, examples and the exit codes in its
`--help`; argument types refuse nonsense (nan, inf, absurd sizes) with a message, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

from licshift.cli.exitcodes import EXIT_CODES_HELP

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"

MAX_WAIT_SECONDS = 7 * 24 * 3600.0
MAX_HOURS = 400 * 24.0


def add_command(
    sub: Any,
    name: str,
    *,
    help: str,
    examples: Sequence[str],
    description: str = "",
    exit_codes: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with examples (and the exit codes)."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    if exit_codes:
        epilog += "\n\n" + EXIT_CODES_HELP
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Accepted after the command too; SUPPRESS keeps a --debug given before the command.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document (keys in the README)")


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text!r}")
    return value


def bounded(what: str, low: float, high: float, *, low_open: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text, what)
        if value > high or value < low or (low_open and value == low):
            edge = "above" if low_open else "at least"
            raise argparse.ArgumentTypeError(f"{what} must be {edge} {low:g} and at most {high:g}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def whole(what: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = what
    return parse


seconds = bounded("seconds", 0, MAX_WAIT_SECONDS)
hours = bounded("hours", 0, MAX_HOURS)
