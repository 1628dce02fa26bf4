"""Waiting for the function app: the answer to a request, then (optionally) the wave's end.

Polls the ledger: the answer row intake records against the request id (a point read), then the
wave row. Returns as soon as a refusal or a final state is known; what the admin sees at the end
is one summary line, and the exit code says the same to a script.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from licshift.cli.exitcodes import ExitCode
from licshift.cli.output import Output, progress_bar, short_id
from licshift.cli.storage import Storage
from licshift.rules.answers import Answer, Verdict
from licshift.rules.waves import FINAL_STATUSES, Wave, WaveStatus

ANSWER_POLL_SECONDS = 0.5
WAVE_POLL_SECONDS = 1.0
QUIET_SECONDS = 3.0
"""Say that we are waiting only when the answer takes longer than this."""

ENDED = FINAL_STATUSES | {WaveStatus.HALTED}


def answer_exit(answer: Answer | None) -> ExitCode:
    if answer is None:
        return ExitCode.TIMEOUT
    if answer.verdict is Verdict.REJECTED:
        return ExitCode.REFUSED
    if answer.verdict is Verdict.FAILED:
        return ExitCode.STOPPED
    return ExitCode.OK


def wave_exit(wave: Wave | None) -> ExitCode:
    """What a wave's state means to a script (the README's exit code table)."""
    if wave is None or wave.status not in ENDED:
        return ExitCode.TIMEOUT
    if wave.status in (WaveStatus.HALTED, WaveStatus.CANCELLED):
        return ExitCode.STOPPED
    c = wave.counters
    if wave.status in (WaveStatus.COMPLETED, WaveStatus.PLANNED) and (c.blocked or c.failed or c.not_attempted):
        return ExitCode.BLOCKED
    return ExitCode.OK


def wave_summary(wave: Wave) -> str:
    """`completed: 27 removed, 8 blocked -> licshift report 3f2a1b2c`."""
    c = wave.counters
    if wave.dry_run:
        parts = [f"{c.to_remove} to remove", f"{c.blocked} blocked", f"{c.skipped} skipped"]
    else:
        parts = [f"{c.removed} removed", f"{c.blocked} blocked"]
        parts += [
            f"{n} {what}"
            for n, what in (
                (c.failed, "failed"),
                (c.restored, "restored"),
                (c.not_attempted, "not attempted"),
                (c.rolled_back, "rolled back"),
                (c.pending, "pending"),
            )
            if n
        ]
    why = f" ({wave.status_reason})" if wave.status in (WaveStatus.HALTED, WaveStatus.CANCELLED) else ""
    follow = "report" if wave.status in ENDED else "status"
    return f"{wave.status.value}: {', '.join(parts)}{why} -> licshift {follow} {short_id(wave.wave_id)}"


@dataclass(frozen=True)
class Waited:
    answer: Answer | None
    wave: Wave | None
    seconds: float


async def answer_for(storage: Storage, request_id: str, limit: float, output: Output) -> Answer | None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    said = False
    while True:
        found = await storage.ledger.get_answer(request_id)
        if found is not None:
            output.end_progress()
            return found
        waited = loop.time() - started
        if waited >= limit:
            output.end_progress()
            return None
        if waited >= QUIET_SECONDS and not said:
            output.note(f"waiting for the function app's answer (up to {limit:g} s) ...")
            said = True
        await asyncio.sleep(min(ANSWER_POLL_SECONDS, max(0.0, limit - waited)))


async def follow_wave(storage: Storage, wave_id: str, limit: float, output: Output, label: str = "") -> Wave | None:
    """Poll the wave until it ends (halted counts) or `limit` seconds pass; a progress bar on stderr."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    wave: Wave | None = None
    name = label or short_id(wave_id)
    while True:
        found = await storage.ledger.get_wave(wave_id)
        wave = found.value if found else wave
        if wave is not None:
            held = " (held: kill switch on)" if await _held(storage, wave) else ""
            output.progress(f"  {name} {progress_bar(wave)} blocked {wave.counters.blocked}{held}")
            if wave.status in ENDED:
                output.end_progress()
                return wave
        if loop.time() >= deadline:
            output.end_progress()
            return wave
        await asyncio.sleep(min(WAVE_POLL_SECONDS, max(0.0, deadline - loop.time())))


ACTIVE = frozenset({WaveStatus.WAITING, WaveStatus.SCANNING, WaveStatus.REMOVING, WaveStatus.VERIFYING})


async def _held(storage: Storage, wave: Wave) -> bool:
    if wave.status is not WaveStatus.REMOVING or wave.dry_run:
        return False
    return storage.settings.kill_switch or (await storage.ledger.get_control()).value.kill_switch


def timeout_summary(what: str, seconds: float, wave: Wave | None, wave_id: str) -> str:
    where = f"it is {wave.status.value} ({progress_bar(wave).strip()})" if wave else "no wave row yet"
    return (
        f"timed out after {seconds:g} s waiting for {what}: {where}; the command may still be carried out "
        f"-> licshift status {short_id(wave_id)}"
        if wave_id
        else f"timed out after {seconds:g} s waiting for {what}; is the function app (or `licshift dev up`) running?"
    )
