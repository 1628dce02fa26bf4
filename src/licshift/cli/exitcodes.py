"""What `licshift` exits with, and the errors that carry an exit code to the one top-level handler.

Scripts rely on these numbers; the README's command table and every `--help` show them.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    """Success; a wave or plan completed clean."""
    ENVIRONMENT = 1
    """Storage or Graph unreachable, a setting wrong, a permission missing: fix the environment."""
    USAGE = 2
    """Bad arguments (argparse and validation): fix the command line."""
    REFUSED = 3
    """The function app refused the command; the refusal text says why."""
    BLOCKED = 4
    """Completed, but with blocked (or failed) users; `drift --fail-on-drift` found drift."""
    STOPPED = 5
    """The wave halted, failed or was cancelled."""
    TIMEOUT = 6
    """No answer or final state within the wait; the command may still be carried out."""


EXIT_CODES_HELP = """exit codes:
  0  success; completed clean
  1  environment: storage or Graph unreachable, a setting wrong, a permission missing
  2  bad usage
  3  refused by the function app (the reason is printed)
  4  completed with blocked or failed users; drift found (drift --fail-on-drift)
  5  halted, failed or cancelled
  6  timed out waiting (the command may still be carried out)"""


class CliError(Exception):
    """A one-line message for the admin (what happened and what to do) and the exit code."""

    code: ExitCode = ExitCode.ENVIRONMENT

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CliError):
    """The command line is wrong: exit 2."""

    code = ExitCode.USAGE


class EnvironmentProblem(CliError):
    """Storage, Graph or a setting is not usable: exit 1."""

    code = ExitCode.ENVIRONMENT
