"""remove_direct_license: the removals queue trigger (removals, restores, rollback restores)."""

from __future__ import annotations

import azure.functions as func

from licshift.functions import runtime
from licshift.services import quota, remover
from licshift.settings import STORAGE_CONNECTION

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.queue_trigger(arg_name="msg", queue_name="%LICSHIFT_REMOVALS_QUEUE%", connection=STORAGE_CONNECTION)
async def remove_direct_license(msg: func.QueueMessage) -> None:
    rt = runtime.current()
    try:
        await remover.handle_task_body(rt, msg.get_body())
    finally:
        # Graph's usage header, seen on this task's answers, goes to the scheduler's pacing.
        await quota.usage_reporter.report(rt)
