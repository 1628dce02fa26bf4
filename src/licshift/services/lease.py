"""The tick lease: one scheduler tick at a time per storage account, so one write budget per storage.

Timer triggers run as a singleton within one function app, but nothing stops a second app (a staging
slot, a `licshift host` left running on a laptop, a second deployment) from pointing at the same
storage: each would run its own scheduler over the same waves, at its own rhythm. A tick therefore
starts by taking the lease, one row in the control table written with its ETag: holder and expiry.
The holder renews it at each of its ticks; a scheduler that finds it held by someone else and not
expired skips its tick. So while one scheduler is alive, it alone runs ticks; when it dies (or the
platform moves the timer to another instance), another takes over once the lease expires, after
`LEASE_TICKS` ticks or `LEASE_MINIMUM`, whichever is longer. A tick that outlives its lease is not
stopped: every write of a tick is conditional on an ETag (scheduler.py), so an overlap is extra work,
never a second budget (quota.py reserves write slots in one shared model).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from licshift.ports.store import ConcurrencyConflict
from licshift.rules.outcomes import TickLease
from licshift.services.runtime import Runtime

log = logging.getLogger("licshift.services.lease")

LEASE_MINIMUM = timedelta(minutes=1)
LEASE_TICKS = 3


def lease_length(tick_seconds: float) -> timedelta:
    return max(LEASE_MINIMUM, timedelta(seconds=LEASE_TICKS * tick_seconds))


def may_take(current: TickLease, holder: str, now: datetime) -> bool:
    """Free, expired, or already ours (our next tick renews it)."""
    return not current.holder or current.holder == holder or current.expires_at is None or current.expires_at <= now


async def acquire(rt: Runtime, now: datetime) -> str | None:
    """Take the tick lease for `rt`; its ETag, or None when another scheduler holds it."""
    loaded = await rt.ledger.get_lease()
    if not may_take(loaded.value, rt.instance_id, now):
        log.info(
            "tick skipped: scheduler %s holds the tick lease until %s",
            loaded.value.holder,
            loaded.value.expires_at,
            extra={"licshift_kind": "tick"},
        )
        return None
    taken = TickLease(rt.instance_id, now + lease_length(rt.settings.tick_seconds))
    try:
        return await rt.ledger.save_lease(taken, loaded.etag or None)
    except ConcurrencyConflict:
        log.info("tick skipped: another scheduler took the tick lease first", extra={"licshift_kind": "tick"})
        return None
