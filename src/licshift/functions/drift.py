"""drift_watch: the drift timer (drift as current state, and follow-up waves with LICSHIFT_DRIFT_REMOVE;
see licshift.services.drift)."""

from __future__ import annotations

import azure.functions as func

from licshift.functions import runtime
from licshift.services import drift

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.timer_trigger(arg_name="timer", schedule="%LICSHIFT_DRIFT_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def drift_watch(timer: func.TimerRequest) -> None:
    await drift.drift_watch(runtime.current())
