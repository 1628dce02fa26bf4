"""Groups' license processing states and options, read from Graph through the port and cached per
process for a few seconds (the remover needs them for every removal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

from licshift.ports.graph import GroupLicenseInfo, LicenseGraph, NotFound
from licshift.rules.decide import PROCESSING_COMPLETE

GROUP_GONE = "GroupNotFound"
"""The processing state a deleted group reads as: not complete, so nothing relies on it."""


class GroupStates:
    """Groups' license info (licenseProcessingState, options), cached per process for a few seconds.

    The remover needs the processing state of every group a removal relies on (docs/safety.md, S1).
    Read per user, that would add a Graph read per group to every removal; cached for `ttl`, a wave
    costs one read per group every few seconds whatever its size. The price is a window of `ttl` in
    which a change of a group's options is not seen; verification and the settle check cover it.
    """

    def __init__(self, ttl: timedelta = timedelta(seconds=5)) -> None:
        self._ttl = ttl
        self._seen: dict[str, tuple[datetime, GroupLicenseInfo | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def info(
        self, graph: LicenseGraph, group_id: str, now: datetime, *, fresh: bool = False
    ) -> GroupLicenseInfo | None:
        """The group's license info, None if the group does not exist.

        `fresh` (the scheduler, once per tick) reads Graph whatever is cached and passes only bad
        news on to the cache: a group seen processing holds removals at once, but a Complete seen by
        someone else never extends how long the remover trusts its own, older reading."""
        lock = self._locks.setdefault(group_id, asyncio.Lock())
        async with lock:  # concurrent removals of one wave share one read
            seen = self._seen.get(group_id)
            if not fresh and seen is not None and timedelta(0) <= now - seen[0] <= self._ttl:
                return seen[1]
            try:
                found: GroupLicenseInfo | None = await graph.group_license_info(group_id)
            except NotFound:
                found = None
            if not fresh or found is None or found.processing_state != PROCESSING_COMPLETE:
                self._seen[group_id] = (now, found)
            return found

    async def states(
        self, graph: LicenseGraph, group_ids: Iterable[str], now: datetime, *, fresh: bool = False
    ) -> dict[str, str]:
        """group id -> licenseProcessingState ("" if Graph gives none, GROUP_GONE if deleted)."""
        group_ids = list(dict.fromkeys(group_ids))
        infos = await asyncio.gather(*(self.info(graph, g, now, fresh=fresh) for g in group_ids))
        return {
            g: GROUP_GONE if info is None else (info.processing_state or "")
            for g, info in zip(group_ids, infos, strict=True)
        }
