"""Handlers of the two poison queues the host fills after maxDequeueCount failed deliveries: they
reconcile what they can, record the failure and raise an alert; they never raise themselves."""

from __future__ import annotations

import azure.functions as func

from licshift.functions import runtime
from licshift.services import intake, remover
from licshift.settings import STORAGE_CONNECTION

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations


@bp.queue_trigger(arg_name="msg", queue_name="%LICSHIFT_WAVES_QUEUE%-poison", connection=STORAGE_CONNECTION)
async def waves_poison(msg: func.QueueMessage) -> None:
    await intake.handle_poison_body(runtime.current(), msg.get_body(), msg.dequeue_count or 0)


@bp.queue_trigger(arg_name="msg", queue_name="%LICSHIFT_REMOVALS_QUEUE%-poison", connection=STORAGE_CONNECTION)
async def removals_poison(msg: func.QueueMessage) -> None:
    await remover.handle_poison_body(runtime.current(), msg.get_body(), msg.dequeue_count or 0)
