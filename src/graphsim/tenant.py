"""The tenant model and its group-based licensing engine.

State: subscribed SKUs with seats, users (direct assignments, inherited entries), groups (members,
license assignments, a processing queue). Time is lazy and deterministic: everything that happens on
its own (group processing of each member, timed scenario events, legacy actor ticks) sits in one
time-ordered queue and is carried out, at its own sim time, whenever anyone looks (`settle`), so the
outcome never depends on when requests arrive or how fast the machine is.

Group processing (Entra's behaviour, docs/graph.md §3): any change to a licensed group (its licenses,
a membership) queues a job. The group reads QueuedForProcessing until the job starts, then
ProcessingInProgress while members are processed one after another, then ProcessingComplete.
Until its turn comes, a member keeps what it had (no inherited entry, or the old one). Each member
is evaluated against the rules: usage location (the user's, else the tenant default), mutually
exclusive plans, plan dependencies, seats (CountViolation; the same SKU from several sources takes
one seat). If one product of a group fails for a user, none of that group's products are assigned to
that user: every entry of the group shows state Error and the error code. Members that are groups
(nested groups) get nothing through the parent.

Every mutation names its cause (see oracle.py) and goes through `_change_user`, which keeps seat
counts and feeds the oracle.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from graphsim import errors
from graphsim.clock import SimClock
from graphsim.guids import is_guid
from graphsim.legacy import LegacySpec, LegacyStats
from graphsim.licensing import (
    ACTIVE,
    ACTIVE_WITH_ERROR,
    COMPLETE,
    COUNT_VIOLATION,
    DEPENDENCY_VIOLATION,
    ERROR,
    IN_PROGRESS,
    MUTUALLY_EXCLUSIVE_VIOLATION,
    OTHER,
    PROHIBITED_IN_USAGE_LOCATION_VIOLATION,
    QUEUED,
    STATES,
    DirectLicense,
    Effective,
    InheritedLicense,
    Rules,
    SkuInfo,
    all_plans,
    broken_dependency,
    consumed_skus,
    effective,
    find_violation,
)
from graphsim.members import OrderedIds
from graphsim.oracle import Oracle


@dataclass(frozen=True, slots=True)
class ProcessingTiming:
    """How long group license processing takes after a change, in sim seconds: the job waits
    `queued_seconds`, then runs `in_progress_seconds + per_member_seconds * members`, members being
    processed evenly over that time."""

    queued_seconds: float = 2.0
    in_progress_seconds: float = 3.0
    per_member_seconds: float = 0.0

    def duration(self, members: int) -> float:
        return self.in_progress_seconds + self.per_member_seconds * members


class User:
    __slots__ = (
        "account_enabled",
        "department",
        "direct",
        "display_name",
        "given_name",
        "groups",
        "id",
        "inherited",
        "job_title",
        "mail",
        "surname",
        "upn",
        "usage_location",
    )

    def __init__(
        self,
        user_id: str,
        upn: str,
        display_name: str,
        *,
        given_name: str | None = None,
        surname: str | None = None,
        mail: str | None = None,
        department: str | None = None,
        job_title: str | None = None,
        usage_location: str | None = None,
        account_enabled: bool = True,
    ) -> None:
        self.id = user_id
        self.upn = upn
        self.display_name = display_name
        self.given_name = given_name
        self.surname = surname
        self.mail = mail
        self.department = department
        self.job_title = job_title
        self.usage_location = usage_location
        self.account_enabled = account_enabled
        self.direct: tuple[DirectLicense, ...] = ()
        self.inherited: tuple[InheritedLicense, ...] = ()
        self.groups: tuple[str, ...] = ()


class Job:
    """One group processing job: all members (`members is None`) or some, each with its cause."""

    __slots__ = ("all_cause", "causes", "duration", "members", "order", "pos", "start_at", "started")

    def __init__(self, members: dict[str, str] | None, all_cause: str, start_at: float, duration: float) -> None:
        self.members = members
        self.causes: dict[str, str] = {}
        self.all_cause = all_cause
        self.start_at = start_at
        self.duration = duration
        self.order: list[str] = []
        self.pos = 0
        self.started = False

    def cause_for(self, user_id: str) -> str:
        if self.members is not None:
            return self.members.get(user_id, self.all_cause)
        return self.causes.get(user_id, self.all_cause)


class Group:
    __slots__ = (
        "description",
        "display_name",
        "ever_licensed",
        "forced",
        "id",
        "jobs",
        "licenses",
        "mail_enabled",
        "mail_nickname",
        "members",
        "scheduled",
        "security_enabled",
        "stuck",
        "timing",
    )

    def __init__(
        self,
        group_id: str,
        display_name: str,
        *,
        description: str | None = None,
        mail_nickname: str | None = None,
        security_enabled: bool = True,
        mail_enabled: bool = False,
        timing: ProcessingTiming | None = None,
    ) -> None:
        self.id = group_id
        self.display_name = display_name
        self.description = description
        self.mail_nickname = mail_nickname or "".join(c for c in display_name if c.isalnum()) or "group"
        self.security_enabled = security_enabled
        self.mail_enabled = mail_enabled
        self.timing = timing
        self.licenses: dict[str, frozenset[str]] = {}
        self.members = OrderedIds()
        self.jobs: deque[Job] = deque()
        self.scheduled = False
        self.ever_licensed = False
        self.stuck: set[str] = set()
        """Members whose processing never happens until reprocessLicenseAssignment (Entra's "stuck"
        users that RES tells admins to force-reprocess)."""
        self.forced: dict[str, tuple[str | None, str, str | None]] = {}
        """user id or "*" -> (sku or None for all, state, error): a test-made broken assignment."""


_EVENT, _GROUP, _LEGACY = 0, 1, 2


class Tenant:
    def __init__(
        self,
        clock: SimClock,
        *,
        tenant_id: str,
        domain: str,
        default_usage_location: str | None,
        rules: Rules,
        timing: ProcessingTiming,
    ) -> None:
        self.clock = clock
        self.tenant_id = tenant_id
        self.domain = domain
        self.default_usage_location = default_usage_location
        self.rules = rules
        self.timing = timing
        self.skus: dict[str, SkuInfo] = {}
        self.seats: dict[str, int] = {}
        self.consumed: dict[str, int] = {}
        self.users: dict[str, User] = {}
        self.user_order = OrderedIds()
        self._upn: dict[str, str] = {}
        self.groups: dict[str, Group] = {}
        self.group_order = OrderedIds()
        self.keys: dict[str, str] = {}
        """Scenario keys (short names) -> object ids, so tests can say "alice" instead of a GUID."""
        self.oracle = Oracle(clock.iso, self._plan_name, self._effective_of)
        self.legacy: LegacySpec | None = None
        self.legacy_enabled = False
        self.legacy_stats = LegacyStats()
        self._legacy_generation = 0
        self.on_legacy_write: Callable[[], None] | None = None
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._at: float | None = None
        self._settling = False
        self._intern: dict[object, object] = {}
        self.events_applied = 0
        self.event_failures: list[str] = []

    # ----------------------------------------------------------------------------------- time
    def now(self) -> float:
        return self._at if self._at is not None else self.clock.now()

    def _push(self, at: float, kind: int, key: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, key))

    def settle(self) -> None:
        """Carry out everything due up to now, in time order (see the module docstring)."""
        if self._settling:
            return  # a timed event calls the public mutators, which settle first: already doing so
        now = self.clock.now()
        heap = self._heap
        self._settling = True
        try:
            while heap and heap[0][0] <= now:
                at, _, kind, key = heapq.heappop(heap)
                limit = min(now, heap[0][0]) if heap else now
                self._at = at
                if kind == _GROUP:
                    self._group_step(self.groups[key], limit)
                elif kind == _EVENT:
                    self._run_event(key)
                elif kind == _LEGACY and key == self._legacy_generation:
                    self._legacy_tick(now)
        finally:
            self._at = None
            self._settling = False

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------------- resolution
    def user(self, ref: str) -> User:
        """A user by id, scenario key or userPrincipalName (KeyError with a clear message if none)."""
        found = self.find_user(ref)
        if found is None:
            raise KeyError(f"no user {ref!r} in this tenant (give an object id, a scenario key or a UPN)")
        return found

    def find_user(self, ref: str) -> User | None:
        ref = self.keys.get(ref, ref)
        found = self.users.get(ref.lower())
        if found is None:
            uid = self._upn.get(ref.lower())
            found = self.users.get(uid) if uid else None
        return found

    def graph_user(self, ref: str) -> User | None:
        """A user the way Graph finds one in /users/{id|userPrincipalName}."""
        found = self.users.get(ref.lower())
        if found is None:
            uid = self._upn.get(ref.lower())
            found = self.users.get(uid) if uid else None
        return found

    def group(self, ref: str) -> Group:
        ref = self.keys.get(ref, ref)
        found = self.groups.get(ref.lower())
        if found is None:
            raise KeyError(f"no group {ref!r} in this tenant (give an object id or a scenario key)")
        return found

    def sku_id(self, ref: str) -> str:
        ref = self.keys.get(ref, ref)
        if ref.lower() in self.skus:
            return ref.lower()
        for sku in self.skus.values():
            if sku.part_number.lower() == ref.lower():
                return sku.sku_id
        raise KeyError(f"no subscribed SKU {ref!r} (give a skuId or a skuPartNumber)")

    def plan_ids(self, refs: Iterable[str], sku_id: str | None = None) -> frozenset[str]:
        """Plan ids from ids or servicePlanNames (looked up in `sku_id`, else in every SKU)."""
        out: set[str] = set()
        for ref in refs:
            if is_guid(ref):
                out.add(ref.lower())
                continue
            skus = [self.skus[sku_id]] if sku_id else list(self.skus.values())
            match = [p.plan_id for s in skus for p in s.plans if p.name.lower() == ref.lower()]
            if not match:
                raise KeyError(f"no service plan named {ref!r}" + (f" in SKU {sku_id}" if sku_id else ""))
            out.add(match[0])
        return frozenset(out)

    def _plan_name(self, sku_id: str, plan_id: str) -> str:
        sku = self.skus.get(sku_id)
        return sku.plan_name(plan_id) if sku else plan_id

    # ------------------------------------------------------------------------------ loading
    def intern(self, value: Any) -> Any:
        """Share identical immutable values between users (100,000 users, a handful of shapes)."""
        return self._intern.setdefault(value, value)

    def add_sku(self, sku: SkuInfo, seats: int) -> None:
        self.skus[sku.sku_id] = sku
        self.seats[sku.sku_id] = seats
        self.consumed.setdefault(sku.sku_id, 0)

    def add_user(self, user: User) -> User:
        if user.id in self.users:
            raise ValueError(f"duplicate user id {user.id}")
        if user.upn.lower() in self._upn:
            raise ValueError(f"duplicate userPrincipalName {user.upn}")
        self.users[user.id] = user
        self.user_order.add(user.id)
        self._upn[user.upn.lower()] = user.id
        return user

    def add_group(self, group: Group) -> Group:
        if group.id in self.groups or group.id in self.users:
            raise ValueError(f"duplicate object id {group.id}")
        self.groups[group.id] = group
        self.group_order.add(group.id)
        return group

    def load_member(self, group_id: str, member_id: str) -> None:
        group = self.groups[group_id]
        if member_id == group_id:
            raise ValueError(f"group {group.display_name} cannot be a member of itself")
        if member_id not in self.users and member_id not in self.groups:
            raise ValueError(f"member {member_id} of {group.display_name} is neither a user nor a group")
        if group.members.add(member_id) and member_id in self.users:
            user = self.users[member_id]
            user.groups = self.intern((*user.groups, group_id))

    def load_direct(self, user_id: str, sku_id: str, disabled: frozenset[str]) -> None:
        """A direct assignment as the scenario states it (not validated: tenants can be over-assigned)."""
        user = self.users[user_id]
        entry = self.intern(DirectLicense(sku_id, disabled, 0.0))
        if not user.direct and not user.inherited:
            user.direct = self.intern((entry,))
            self.consumed[sku_id] = self.consumed.get(sku_id, 0) + 1
            return
        rest = tuple(d for d in user.direct if d.sku_id != sku_id)
        self._set(user, direct=self.intern((*rest, entry)))

    def load_group_license(self, group_id: str, sku_id: str, disabled: frozenset[str]) -> None:
        group = self.groups[group_id]
        group.licenses[sku_id] = disabled
        group.ever_licensed = True

    def finish_load(
        self, pending: Iterable[str] = (), changed: Mapping[str, Mapping[str, frozenset[str]]] | None = None
    ) -> None:
        """Give every member of every licensed group its inherited entries, as if processing had
        long finished, except groups in `pending`, which start with a job queued now. A group in
        `changed` (group id -> its previous licenses) had its options changed just now: members show
        the entries of the previous licenses until the job queued now reaches them."""
        pending_ids = set(pending)
        self._at = 0.0
        try:
            self._finish_load(pending_ids, dict(changed or {}))
        finally:
            self._at = None

    def _finish_load(self, pending_ids: set[str], changed: dict[str, Mapping[str, frozenset[str]]]) -> None:
        for group in (self.groups[g] for g in self.group_order):
            if not group.licenses and group.id not in changed:
                continue
            if group.id in pending_ids:
                self._enqueue(group, None, "scenario:initial processing")
                continue
            current = group.licenses
            if group.id in changed:
                group.licenses = dict(changed[group.id])
                group.ever_licensed = True
            self._load_entries(group)
            if group.id in changed:
                group.licenses = current
                self._enqueue(group, None, "scenario:initial change of license options")

    def _load_entries(self, group: Group) -> None:
        for member in list(group.members):
            user = self.users.get(member)
            if user is not None and member not in group.stuck:
                new = self._evaluate(group, user)
                if new is not None:
                    others = tuple(e for e in user.inherited if e.group_id != group.id)
                    self._set(user, inherited=self.intern(others + tuple(self.intern(e) for e in new)))

    def schedule_event(self, at: float, action: Mapping[str, Any]) -> None:
        self._push(at, _EVENT, dict(action))

    # ------------------------------------------------------------------------------ queries
    def processing_state(self, group: Group) -> str | None:
        """licenseProcessingState.state, or None for a group that never had licenses (Graph: null)."""
        if not group.ever_licensed:
            return None
        if not group.jobs:
            return COMPLETE
        return IN_PROGRESS if self.now() >= group.jobs[0].start_at else QUEUED

    def effective(self, user: User) -> Effective:
        return effective(user.direct, user.inherited, self.skus)

    def _effective_of(self, user_id: str) -> Effective:
        user = self.users.get(user_id)
        return self.effective(user) if user else {}

    def has_license_error(self, group: Group, user: User) -> bool:
        return any(e.group_id == group.id and e.error is not None for e in user.inherited)

    def user_members(self, group: Group) -> Iterator[User]:
        for member in group.members:
            user = self.users.get(member)
            if user is not None:
                yield user

    def license_states(self, user_ref: str) -> list[dict[str, Any]]:
        """licenseAssignmentStates as Graph returns them (for tests that look without HTTP)."""
        self.settle()
        user = self.user(user_ref)
        out: list[dict[str, Any]] = [
            {
                "skuId": d.sku_id,
                "assignedByGroup": None,
                "disabledPlans": sorted(d.disabled),
                "state": ACTIVE,
                "error": "None",
                "lastUpdatedDateTime": self.clock.iso(d.updated_at),
            }
            for d in user.direct
        ]
        out.extend(
            {
                "skuId": e.sku_id,
                "assignedByGroup": e.group_id,
                "disabledPlans": sorted(e.disabled),
                "state": e.state,
                "error": e.error or "None",
                "lastUpdatedDateTime": self.clock.iso(e.updated_at),
            }
            for e in user.inherited
        )
        return out

    def group_processing_state(self, group_ref: str) -> str | None:
        self.settle()
        return self.processing_state(self.group(group_ref))

    # ----------------------------------------------------------------------- the one writer
    def _set(
        self,
        user: User,
        *,
        direct: tuple[DirectLicense, ...] | None = None,
        inherited: tuple[InheritedLicense, ...] | None = None,
        cause: str | None = None,
    ) -> None:
        """Every change of a user's assignments: keeps seat counts; with a cause, feeds the oracle."""
        before_held = consumed_skus(user.direct, user.inherited)
        before = self.effective(user) if cause is not None else None
        if direct is not None:
            user.direct = direct
        if inherited is not None:
            user.inherited = inherited
        after_held = consumed_skus(user.direct, user.inherited)
        if before_held != after_held:
            for sku in before_held - after_held:
                self.consumed[sku] = self.consumed.get(sku, 0) - 1
            for sku in after_held - before_held:
                self.consumed[sku] = self.consumed.get(sku, 0) + 1
        if before is not None and cause is not None:
            after = self.effective(user)
            if after != before:
                self.oracle.observe(self.now(), user.id, before, after, cause)

    # ------------------------------------------------------------------- group processing
    def _enqueue(self, group: Group, member: str | None, cause: str) -> None:
        """Queue processing of `member` (None: all members) after a change to a licensed group."""
        timing = group.timing or self.timing
        last = group.jobs[-1] if group.jobs else None
        if last is not None and not last.started:
            if member is None:
                if last.members is not None:
                    last.causes.update(last.members)
                last.members = None
                last.all_cause = cause
            elif last.members is not None:
                last.members[member] = cause
            else:
                last.causes[member] = cause
            size = len(group.members) if last.members is None else len(last.members)
            last.duration = timing.duration(size)
            return
        start = self.now() + timing.queued_seconds
        if last is not None:
            start = max(start, last.start_at + last.duration)
        size = len(group.members) if member is None else 1
        job = Job(None if member is None else {member: cause}, cause, start, timing.duration(size))
        group.jobs.append(job)
        if not group.scheduled:
            group.scheduled = True
            self._push(group.jobs[0].start_at, _GROUP, group.id)

    def _group_step(self, group: Group, limit: float) -> None:
        group.scheduled = False
        if not group.jobs:
            return
        job = group.jobs[0]
        if not job.started:
            job.started = True
            job.order = list(job.members) if job.members is not None else list(group.members)
        count = len(job.order)
        while job.pos < count:
            at = job.start_at + job.duration * (job.pos + 1) / count
            if at > limit:
                self._reschedule(group, at)
                return
            self._at = at
            member = job.order[job.pos]
            job.pos += 1
            self._process_member(group, member, job.cause_for(member))
        end = job.start_at + job.duration
        if end > limit:
            self._reschedule(group, end)
            return
        group.jobs.popleft()
        if group.jobs:
            nxt = group.jobs[0]
            nxt.start_at = max(nxt.start_at, end)
            self._reschedule(group, nxt.start_at)

    def _reschedule(self, group: Group, at: float) -> None:
        group.scheduled = True
        self._push(at, _GROUP, group.id)

    def _process_member(self, group: Group, member: str, cause: str) -> None:
        user = self.users.get(member)
        if user is None or member in group.stuck:
            return
        new = self._evaluate(group, user)
        if new is None:
            return
        others = tuple(e for e in user.inherited if e.group_id != group.id)
        merged = others + new
        if merged != user.inherited:
            self._set(user, inherited=merged, cause=cause)

    def _evaluate(self, group: Group, user: User) -> tuple[InheritedLicense, ...] | None:
        """The entries `group` gives `user` now (see the module docstring for the rules)."""
        at = self.now()
        old = {e.sku_id: e for e in user.inherited if e.group_id == group.id}
        others = tuple(e for e in user.inherited if e.group_id != group.id)
        if not group.licenses or user.id not in group.members:
            if any(e.providing for e in old.values()):
                before = all_plans(self.effective(user))
                after = all_plans(effective(user.direct, others, self.skus))
                if broken_dependency(before, after, self.rules) is not None:
                    # Entra keeps the license the other product depends on, flagged (RES).
                    return tuple(
                        e
                        if e.error == DEPENDENCY_VIOLATION
                        else replace(e, state=ACTIVE_WITH_ERROR, error=DEPENDENCY_VIOLATION, updated_at=at)
                        for e in old.values()
                        if e.providing
                    )
            return ()
        code: str | None = None
        location = user.usage_location or self.default_usage_location
        if location is None:
            code = PROHIBITED_IN_USAGE_LOCATION_VIOLATION
        else:
            new_plans: set[str] = set()
            for sku_id, disabled in group.licenses.items():
                new_plans |= self.skus[sku_id].enabled(disabled)
            other_plans = all_plans(effective(user.direct, others, self.skus))
            violation = find_violation(frozenset(new_plans), other_plans, location, self.rules)
            if violation is not None:
                code = violation.code
        if code is None:
            held = consumed_skus(user.direct, user.inherited)
            for sku_id in group.licenses:
                if sku_id not in held and self.consumed.get(sku_id, 0) >= self.seats.get(sku_id, 0):
                    code = COUNT_VIOLATION
                    break
        forced = group.forced.get(user.id) or group.forced.get("*")
        out: list[InheritedLicense] = []
        for sku_id, disabled in group.licenses.items():
            state, error = (ERROR, code) if code else (ACTIVE, None)
            if forced is not None:
                forced_sku, forced_state, forced_error = forced
                if forced_state == ERROR:
                    state, error = ERROR, forced_error or OTHER
                elif forced_sku is None or forced_sku == sku_id:
                    state, error = forced_state, forced_error
            entry = InheritedLicense(sku_id, group.id, disabled, state, error, at)
            previous = old.get(sku_id)
            out.append(previous if previous is not None and previous.same_outcome(entry) else entry)
        return tuple(out)

    # ------------------------------------------------------------------ direct assignments
    def _direct_change(self, user: User, add: list[tuple[str, frozenset[str]]], remove: list[str], cause: str) -> None:
        """assignLicense on a user, all or nothing, with Graph's answers (raises GraphFailure)."""
        for sku_id in [s for s, _ in add] + remove:
            if sku_id not in self.skus:
                raise errors.not_a_company_license(sku_id)
        added = {s for s, _ in add}
        if len(added) != len(add) or len(set(remove)) != len(remove) or added & set(remove):
            raise errors.bad_request("A license may appear only once in addLicenses and removeLicenses together.")
        direct = {d.sku_id: d for d in user.direct}
        for sku_id in remove:
            if sku_id in direct:
                continue
            if any(e.sku_id == sku_id for e in user.inherited):
                raise errors.GraphFailure(400, errors.BAD_REQUEST, errors.INHERITED_ONLY)
            raise errors.GraphFailure(400, errors.BAD_REQUEST, errors.NOT_ASSIGNED)
        at = self.now()
        new_direct = {s: d for s, d in direct.items() if s not in remove}
        for sku_id, disabled in add:
            new_direct[sku_id] = DirectLicense(sku_id, disabled, at)
        if add:
            if not user.usage_location:
                raise errors.GraphFailure(400, errors.BAD_REQUEST, errors.INVALID_USAGE_LOCATION)
            held = consumed_skus(user.direct, user.inherited)
            for sku_id, _ in add:
                if sku_id not in held and self.consumed.get(sku_id, 0) >= self.seats.get(sku_id, 0):
                    raise errors.no_available_licenses(sku_id)
            rest = effective([d for s, d in new_direct.items() if s not in added], user.inherited, self.skus)
            new_plans: set[str] = set()
            for sku_id, disabled in add:
                new_plans |= self.skus[sku_id].enabled(disabled)
            violation = find_violation(frozenset(new_plans), all_plans(rest), user.usage_location.upper(), self.rules)
            if violation is not None:
                if violation.code == MUTUALLY_EXCLUSIVE_VIOLATION:
                    raise errors.mutually_exclusive(violation.plan, violation.others[0])
                if violation.code == DEPENDENCY_VIOLATION:
                    raise errors.depends_on(violation.plan, list(violation.others))
                raise errors.prohibited_location(violation.plan, violation.location or "")
        before = all_plans(self.effective(user))
        after = all_plans(effective(new_direct.values(), user.inherited, self.skus))
        broken = broken_dependency(before, after, self.rules)
        if broken is not None:
            raise errors.depends_on(broken.plan, list(broken.others))
        self._set(user, direct=tuple(new_direct.values()), cause=cause)

    # --------------------------------------------------------------------- Graph operations
    def graph_assign_user(
        self, user: User, add: list[tuple[str, frozenset[str]]], remove: list[str], cause: str
    ) -> None:
        self._direct_change(user, add, remove, cause)

    def graph_assign_group(
        self, group: Group, add: list[tuple[str, frozenset[str]]], remove: list[str], cause: str
    ) -> None:
        for sku_id in [s for s, _ in add] + remove:
            if sku_id not in self.skus:
                raise errors.not_a_company_license(sku_id)
        if not group.security_enabled:
            raise errors.bad_request(
                f"Group {group.id} is not security enabled; licenses can be assigned only to security groups."
            )
        for sku_id in remove:
            if sku_id not in group.licenses:
                raise errors.bad_request("Group does not have a corresponding license.")
        self._set_group_licenses(group, add, remove, cause)

    def _set_group_licenses(
        self, group: Group, add: list[tuple[str, frozenset[str]]], remove: list[str], cause: str
    ) -> None:
        before = dict(group.licenses)
        for sku_id in remove:
            group.licenses.pop(sku_id, None)
        for sku_id, disabled in add:
            group.licenses[sku_id] = disabled
        # Any assignLicense call on a licensed group queues processing, changed or not.
        group.ever_licensed = group.ever_licensed or bool(group.licenses) or bool(before)
        if group.ever_licensed:
            self._enqueue(group, None, cause)

    def reprocess(self, user: User, cause: str) -> None:
        """reprocessLicenseAssignment: evaluate every group assignment of the user now."""
        involved = list(user.groups) + [e.group_id for e in user.inherited if e.group_id not in user.groups]
        for group_id in dict.fromkeys(involved):
            group = self.groups.get(group_id)
            if group is None:
                continue
            group.stuck.discard(user.id)
            self._process_member(group, user.id, cause)

    # ------------------------------------------------------- scenario / test mutations
    def add_member(self, group_ref: str, member_ref: str, *, cause: str = "scenario:add_member") -> None:
        self.settle()
        group = self.group(group_ref)
        member = self._member_id(member_ref)
        if not group.members.add(member):
            return
        user = self.users.get(member)
        if user is not None:
            user.groups = (*user.groups, group.id)
            if group.ever_licensed:
                self._enqueue(group, member, f"{cause} {group.id} {member}")

    def remove_member(self, group_ref: str, member_ref: str, *, cause: str = "scenario:remove_member") -> None:
        self.settle()
        group = self.group(group_ref)
        member = self._member_id(member_ref)
        if not group.members.remove(member):
            raise KeyError(f"{member_ref!r} is not a member of {group.display_name}")
        user = self.users.get(member)
        if user is not None:
            user.groups = tuple(g for g in user.groups if g != group.id)
            if group.ever_licensed:
                self._enqueue(group, member, f"{cause} {group.id} {member}")

    def _member_id(self, ref: str) -> str:
        user = self.find_user(ref)
        if user is not None:
            return user.id
        return self.group(ref).id

    def set_group_license(
        self,
        group_ref: str,
        sku_ref: str,
        disabled_plans: Iterable[str] = (),
        *,
        cause: str = "scenario:set_group_license",
    ) -> None:
        self.settle()
        group = self.group(group_ref)
        sku_id = self.sku_id(sku_ref)
        self._set_group_licenses(group, [(sku_id, self.plan_ids(disabled_plans, sku_id))], [], f"{cause} {group.id}")

    def remove_group_license(
        self, group_ref: str, sku_ref: str, *, cause: str = "scenario:remove_group_license"
    ) -> None:
        self.settle()
        group = self.group(group_ref)
        self._set_group_licenses(group, [], [self.sku_id(sku_ref)], f"{cause} {group.id}")

    def break_group_license(
        self,
        group_ref: str,
        sku_ref: str | None = None,
        users: Iterable[str] | None = None,
        *,
        error: str | None = None,
        state: str = ERROR,
        cause: str = "scenario:break_group_license",
    ) -> None:
        """Make the group's assignment fail (state Error + `error`, default "Other") or take another
        `state` (e.g. "Disabled", error None) for `users` (default: every member), at once. A failure in one
        product of a group fails all its products for that user. Undo with `fix_group_license`."""
        self.settle()
        if state not in STATES:
            raise ValueError(f"state must be one of {sorted(STATES)}, got {state!r}")
        group = self.group(group_ref)
        sku_id = self.sku_id(sku_ref) if sku_ref else None
        targets = [self.user(u).id for u in users] if users is not None else ["*"]
        for target in targets:
            group.forced[target] = (sku_id, state, error)
        members = targets if users is not None else [u.id for u in self.user_members(group)]
        for member in members:
            self._process_member(group, member, f"{cause} {group.id}")

    def fix_group_license(
        self, group_ref: str, users: Iterable[str] | None = None, *, cause: str = "scenario:fix_group_license"
    ) -> None:
        self.settle()
        group = self.group(group_ref)
        if users is None:
            group.forced.clear()
            members = [u.id for u in self.user_members(group)]
        else:
            members = [self.user(u).id for u in users]
            for member in members:
                group.forced.pop(member, None)
        for member in members:
            self._process_member(group, member, f"{cause} {group.id}")

    def stick_member(self, group_ref: str, user_ref: str) -> None:
        """Processing of this member by this group stops happening until the user is reprocessed."""
        self.settle()
        self.group(group_ref).stuck.add(self.user(user_ref).id)

    def assign_direct(
        self,
        user_ref: str,
        sku_ref: str,
        disabled_plans: Iterable[str] = (),
        *,
        cause: str = "scenario:assign_direct",
    ) -> None:
        self.settle()
        sku_id = self.sku_id(sku_ref)
        user = self.user(user_ref)
        self._direct_change(user, [(sku_id, self.plan_ids(disabled_plans, sku_id))], [], f"{cause} {user.id}")

    def remove_direct(self, user_ref: str, sku_ref: str, *, cause: str = "scenario:remove_direct") -> None:
        self.settle()
        user = self.user(user_ref)
        self._direct_change(user, [], [self.sku_id(sku_ref)], f"{cause} {user.id}")

    def set_usage_location(self, user_ref: str, location: str | None) -> None:
        self.settle()
        self.user(user_ref).usage_location = location.upper() if location else None

    def set_seats(self, sku_ref: str, seats: int) -> None:
        self.settle()
        if seats < 0:
            raise ValueError("seats must be >= 0")
        self.seats[self.sku_id(sku_ref)] = seats

    def reprocess_user(self, user_ref: str, *, cause: str = "scenario:reprocess_user") -> None:
        self.settle()
        user = self.user(user_ref)
        self.reprocess(user, f"{cause} {user.id}")

    # ---------------------------------------------------------------------- legacy actor
    def set_legacy(self, spec: LegacySpec | None = None, *, enabled: bool | None = None) -> None:
        """Install/replace the legacy actor (`spec`) and/or switch it on or off."""
        self.settle()
        if spec is not None:
            self.legacy = spec
            if enabled is None:
                enabled = spec.enabled
        if self.legacy is None:
            if enabled:
                raise ValueError("this scenario has no legacy actor; give a LegacySpec")
            return
        if enabled is not None:
            self.legacy_enabled = enabled
        self._legacy_generation += 1
        if self.legacy_enabled:
            self._push(self.now() + self.legacy.every_seconds, _LEGACY, self._legacy_generation)

    def _legacy_targets(self, spec: LegacySpec) -> Iterator[User]:
        targets = spec.targets
        if targets.everyone:
            yield from (self.users[u] for u in self.user_order)
            return
        for uid in self.user_order:
            user = self.users[uid]
            if (
                (user.department in targets.departments)
                or uid in targets.users
                or (targets.groups and not targets.groups.isdisjoint(user.groups))
            ):
                yield user

    def _legacy_tick(self, now: float) -> None:
        spec = self.legacy
        if spec is None or not self.legacy_enabled:
            return
        assert self._at is not None
        due = self._at
        nxt = due + spec.every_seconds
        self._push(nxt, _LEGACY, self._legacy_generation)
        if nxt <= now and self._heap and self._heap[0][0] >= nxt and self._heap[0][2] == _LEGACY:
            return  # the next tick is also due with nothing in between: it would do the same work
        self.legacy_stats.ticks += 1
        for user in self._legacy_targets(spec):
            if any(d.sku_id == spec.sku_id for d in user.direct):
                continue
            try:
                self._direct_change(user, [(spec.sku_id, spec.disabled_plans)], [], f"legacy:assign {user.id}")
            except errors.GraphFailure as failure:
                self.legacy_stats.failed += 1
                self.legacy_stats.last_error = failure.message
                continue
            self.legacy_stats.added += 1
            if self.on_legacy_write is not None:
                self.on_legacy_write()

    # ------------------------------------------------------------------- scenario actions
    ACTIONS = (
        "add_member",
        "remove_member",
        "set_group_license",
        "remove_group_license",
        "break_group_license",
        "fix_group_license",
        "stick_member",
        "assign_direct",
        "remove_direct",
        "set_usage_location",
        "set_seats",
        "reprocess_user",
        "set_legacy",
    )

    def _run_event(self, action: Mapping[str, Any]) -> None:
        try:
            self.apply(action, prefix="scenario:event:")
        except (KeyError, ValueError, errors.GraphFailure) as failure:
            # A timed event that no longer fits the tenant (a test already removed the member) is
            # recorded, not fatal: the request that happened to settle time must still be answered.
            self.event_failures.append(f"{action.get('action')}: {failure}")
        else:
            self.events_applied += 1

    def apply(self, action: Mapping[str, Any], *, prefix: str = "scenario:") -> None:
        """Carry out one scenario action (timed events, POST /_sim/events); see README.md."""
        name = str(action.get("action", ""))
        if name not in self.ACTIONS:
            raise ValueError(f"unknown action {name!r}; expected one of {', '.join(self.ACTIONS)}")
        cause = prefix + name

        def arg(key: str) -> Any:
            if key not in action:
                raise ValueError(f"action {name} needs {key!r}")
            return action[key]

        if name == "add_member":
            self.add_member(arg("group"), arg("member") if "member" in action else arg("user"), cause=cause)
        elif name == "remove_member":
            self.remove_member(arg("group"), arg("member") if "member" in action else arg("user"), cause=cause)
        elif name == "set_group_license":
            self.set_group_license(arg("group"), arg("sku"), action.get("disabled_plans") or (), cause=cause)
        elif name == "remove_group_license":
            self.remove_group_license(arg("group"), arg("sku"), cause=cause)
        elif name == "break_group_license":
            self.break_group_license(
                arg("group"),
                action.get("sku"),
                action.get("users"),
                error=action.get("error"),
                state=action.get("state", ERROR),
                cause=cause,
            )
        elif name == "fix_group_license":
            self.fix_group_license(arg("group"), action.get("users"), cause=cause)
        elif name == "stick_member":
            self.stick_member(arg("group"), arg("user"))
        elif name == "assign_direct":
            self.assign_direct(arg("user"), arg("sku"), action.get("disabled_plans") or (), cause=cause)
        elif name == "remove_direct":
            self.remove_direct(arg("user"), arg("sku"), cause=cause)
        elif name == "set_usage_location":
            self.set_usage_location(arg("user"), action.get("usage_location"))
        elif name == "set_seats":
            self.set_seats(arg("sku"), int(arg("seats")))
        elif name == "reprocess_user":
            self.reprocess_user(arg("user"), cause=cause)
        elif name == "set_legacy":
            self.set_legacy(enabled=bool(arg("enabled")))
