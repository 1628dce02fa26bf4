"""tick: the scheduler's timer (timer triggers run as a singleton across instances)."""

from __future__ import annotations

import azure.functions as func

from licshift.functions import runtime
from licshift.services import scheduler

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.timer_trigger(arg_name="timer", schedule="%LICSHIFT_TICK_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def tick(timer: func.TimerRequest) -> None:
    await scheduler.tick(runtime.current(), past_due=timer.past_due)
