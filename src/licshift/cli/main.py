"""The `licshift` command: one parser assembled from one module per command area, one top-level
handler that turns every failure into a one-line message and an exit code (`--debug` shows the
traceback), and quiet broken pipes (`licshift status | head`).

To add a command: a module in licshift/cli/ with `register(sub)` that declares it with
`parsing.add_command` (help, examples, exit codes) and `set_defaults(handler=...)`; list it in AREAS.
A handler takes (args, Context) and returns an exit code, or a coroutine that does.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType
from typing import NoReturn

from licshift.cli import check, directory, drift, killswitch, report, reprocess, status, waves
from licshift.cli.context import Context
from licshift.cli.exitcodes import EXIT_CODES_HELP, CliError, ExitCode
from licshift_local import demo, dev, sim

AREAS: tuple[ModuleType, ...] = (directory, check, waves, reprocess, status, report, drift, killswitch, dev, sim, demo)

EXAMPLES = """examples:
  licshift dev up                                        # the local stack: Azurite, simulator, host
  licshift groups                                        # licensed groups, by name
  licshift plan --group "All users" --sku ENTERPRISEPACK # dry run, waits for the plan
  licshift wave start --group "All users" --sku ENTERPRISEPACK --first 10 --wait
  licshift status c9e5bf56 --watch
  licshift kill-switch on --yes"""


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors go through the one handler."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)", ExitCode.USAGE)


def version() -> str:
    try:
        return metadata.version("licshift")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="licshift",
        description="Move Entra ID users from direct licenses to group-based licensing, safely, in waves.",
        epilog=EXAMPLES + "\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"licshift {version()}")
    p.add_argument("--debug", action="store_true", help="show tracebacks (for bug reports)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for area in AREAS:
        area.register(sub)
    return p


def _describe(exc: BaseException) -> CliError:
    """Failures that are not the admin's typo, as what to do."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    first = (str(exc).splitlines() or [type(exc).__name__])[0][:240]
    if isinstance(exc, ClientAuthenticationError):
        return CliError(f"sign-in failed ({first}); run `az login`, or set LicshiftStorage to a connection string")
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        return CliError(
            f"storage refused access ({first}); you need Storage Queue Data Contributor and Storage Table Data "
            "Contributor on the storage account"
        )
    if isinstance(exc, ResourceNotFoundError) and ("table" in first.lower() or "queue" in first.lower()):
        return CliError(
            f"{first.rstrip('.')}: has the function app (or `licshift dev up`) run against this storage account "
            "yet? Check LicshiftStorage, LICSHIFT_TABLE_PREFIX and LICSHIFT_WAVES_QUEUE"
        )
    if isinstance(exc, AzureError):
        return CliError(
            f"storage call failed ({type(exc).__name__}: {first}); check LicshiftStorage (or the "
            "LicshiftStorage__queueServiceUri/__tableServiceUri settings), that storage is running, and your access"
        )
    from licshift.adapters.entities import LedgerCorrupt

    if isinstance(exc, LedgerCorrupt):
        return CliError(f"{first}; the ledger row was changed by hand or by another licshift version")
    if isinstance(exc, OSError):
        return CliError(f"{first}; check the file or network resource it names")
    return CliError(f"unexpected error ({type(exc).__name__}: {first}); run again with --debug and report it")


def _dispatch(args: argparse.Namespace, ctx: Context) -> int:
    result = args.handler(args, ctx)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return int(result)


def run(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.getLogger().addHandler(logging.NullHandler())  # no stray log lines; --debug shows warnings
    if debug:
        logging.basicConfig(level=logging.WARNING)
    try:
        args = parser().parse_args(argv)
        context = ctx or Context()
        context.debug = debug
        context.output.as_json = bool(getattr(args, "json", False))
        return _dispatch(args, context)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else ExitCode.OK
    except KeyboardInterrupt:
        print("licshift: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return ExitCode.OK
    except Exception as exc:
        error = exc if isinstance(exc, CliError) else _describe(exc)
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"licshift: {error}", file=sys.stderr)
        return int(error.code)


def _quiet_stdout() -> None:
    """The reader went away (`| head`): drop what is left instead of a second error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main() -> None:
    code = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(code)
