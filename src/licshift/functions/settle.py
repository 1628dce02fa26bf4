"""settle_check: the settle timer (S3 over the settle window; see licshift.services.settle)."""

from __future__ import annotations

import azure.functions as func

from licshift.functions import runtime
from licshift.services import settle

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.timer_trigger(arg_name="timer", schedule="%LICSHIFT_SETTLE_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def settle_check(timer: func.TimerRequest) -> None:
    await settle.settle_check(runtime.current())
