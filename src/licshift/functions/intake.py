"""wave_intake: the waves queue trigger. Parses the binding, hands the text to licshift.services.intake."""

from __future__ import annotations

import azure.functions as func

from licshift.functions import runtime
from licshift.services import intake
from licshift.settings import STORAGE_CONNECTION

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.queue_trigger(arg_name="msg", queue_name="%LICSHIFT_WAVES_QUEUE%", connection=STORAGE_CONNECTION)
async def wave_intake(msg: func.QueueMessage) -> None:
    await intake.handle_wave_body(runtime.current(), msg.get_body())
