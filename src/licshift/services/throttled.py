"""A Graph write or read answered 429, for any task on the removals queue.

Retry-After is a promise: the task goes back on the queue for exactly that long (never a hot retry,
never counted as a failure), and a `throttled` event tells the scheduler's rate control, which cuts
the pace for everything sharing the write budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from licshift.ports.graph import Throttled
from licshift.rules.messages import Task, encode_task
from licshift.services import telemetry
from licshift.services.runtime import Runtime


async def retry_after(
    rt: Runtime, task: Task, exc: Throttled, what: str, *, actor: str, data: Mapping[str, Any] | None = None
) -> None:
    """Send `task` again after Retry-After and record one `throttled` event saying `what` was throttled."""
    await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=max(0.0, exc.retry_after))
    event = telemetry.event_for(
        task,
        telemetry.THROTTLED,
        f"Graph throttled {what}; retrying in {exc.retry_after:g} s",
        actor=actor,
        data={"retry_after": exc.retry_after, **(data or {})},
    )
    await telemetry.emit(rt.ledger, event, rt.now())
