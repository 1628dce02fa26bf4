"""remove_direct_license: the removals queue trigger (removals, restores, rollback restores)."""

from __future__ import annotations

import azure.functions as func

from licshift import removal, runtime
from licshift.settings import STORAGE_CONNECTION

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.queue_trigger(arg_name="msg", queue_name="%LICSHIFT_REMOVALS_QUEUE%", connection=STORAGE_CONNECTION)
async def remove_direct_license(msg: func.QueueMessage) -> None:
    await removal.handle_task_message(runtime.current(), msg.get_body().decode("utf-8", errors="replace"))
