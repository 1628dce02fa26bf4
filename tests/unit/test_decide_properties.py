"""The decision rule against safety contract S1, checked by hypothesis against an independent model.

The model below works on the raw Graph payloads (dicts, ids in any case) and knows nothing of
licshift.rules.licenses or licshift.rules.decide beyond the public decide() call and its result types: it lower-
cases ids itself, treats `error` null and "None" alike (and anything else, a blank included, as an
error), requires every entry from the wave's group to be healthy, and computes a user's effective plans of the
SKU as the union, over sources that are Active and error-free, of (the SKU's plans - disabledPlans).

Universes are small: one SKU with 1-8 plans, up to four groups (one may be the wave's group, which
occasionally appears twice), 0-2 direct entries, sometimes an unrelated SKU assigned the same ways.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from licshift.rules.decide import (
    PROCESSING_COMPLETE,
    Block,
    BlockReason,
    Decision,
    Policy,
    Remove,
    Skip,
    SkipReason,
    decide,
)
from licshift.rules.licenses import LicenseAssignmentState, ServicePlan, Sku

SKU_ID = "6fd2c87f-b296-42f0-b197-1e91e994b900"
OTHER_SKU_ID = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
WAVE_GROUP = "1132b215-826f-42a9-8cfe-1643d19d17fd"
OTHER_GROUPS = (
    "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
    "5a5a5a5a-0000-4000-8000-00000000b0b0",
    "c0ffee00-1234-4abc-9def-0123456789ab",
)
PLAN_POOL = tuple(f"{i:08x}-aaaa-4bbb-8ccc-{i:012x}" for i in range(1, 9))
# Ids that were once plans of the SKU and are no longer (Graph keeps them in old disabledPlans).
STALE_PLANS = ("dead0000-0000-4000-8000-000000000001", "dead0000-0000-4000-8000-000000000002")

STATES = ("Active", "ActiveWithError", "Disabled", "Error")
ERRORS = (None, "None", "", "  ", "CountViolation", "MutuallyExclusiveViolation", "DependencyViolation", "Other")
PROCESSING = (PROCESSING_COMPLETE, PROCESSING_COMPLETE, "ProcessingInProgress", "QueuedForProcessing")

EXAMPLES = settings(max_examples=2000, deadline=None)


@dataclass(frozen=True)
class Universe:
    sku: Sku
    payloads: tuple[Mapping[str, Any], ...]
    selected: bool
    processing: str

    @property
    def states(self) -> tuple[LicenseAssignmentState, ...]:
        return tuple(LicenseAssignmentState.from_graph(p) for p in self.payloads)

    def decide(self, policy: Policy, states: Sequence[LicenseAssignmentState] | None = None) -> Decision:
        return decide(
            self.states if states is None else states,
            self.sku,
            WAVE_GROUP,
            policy,
            selected=self.selected,
            group_processing_state=self.processing,
        )


# ---------------------------------------------------------------------------------------------
# The independent model


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


def _healthy(p: Mapping[str, Any]) -> bool:
    return p["state"] == "Active" and p["error"] in (None, "None")


def _error_text(p: Mapping[str, Any]) -> str:
    """How a block names an entry's error: the code, or a marker for a blank one."""
    return str(p["error"]).strip() or "(blank error)"


def _enabled(u: Universe, p: Mapping[str, Any]) -> frozenset[str]:
    plans = frozenset(sp.plan_id for sp in u.sku.plans)
    return plans - {d.lower() for d in p["disabledPlans"]}


def _of_sku(u: Universe) -> list[Mapping[str, Any]]:
    return [p for p in u.payloads if p["skuId"].lower() == u.sku.sku_id]


def _directs(u: Universe) -> list[Mapping[str, Any]]:
    return [p for p in _of_sku(u) if p["assignedByGroup"] is None]


def _inherited(u: Universe) -> list[Mapping[str, Any]]:
    return [p for p in _of_sku(u) if p["assignedByGroup"] is not None]


def _wave_entries(u: Universe) -> list[Mapping[str, Any]]:
    return [p for p in _inherited(u) if _lower(p["assignedByGroup"]) == WAVE_GROUP]


def effective_before(u: Universe) -> frozenset[str]:
    return frozenset().union(*(_enabled(u, p) for p in _of_sku(u) if _healthy(p)))


def effective_after(u: Universe) -> frozenset[str]:
    """The same states with the direct entries gone: what removing the direct assignment leaves."""
    return frozenset().union(*(_enabled(u, p) for p in _inherited(u) if _healthy(p)))


def sku_effective_after(u: Universe) -> bool:
    return any(_healthy(p) for p in _inherited(u))


def direct_enabled(u: Universe) -> frozenset[str]:
    """Plans the direct entries enable, whatever their state.

    S1 measures the loss against the direct assignment's disabledPlans alone, not its state: a
    direct assignment in ActiveWithError may still deliver its services, so they must survive too.
    """
    return frozenset().union(*(_enabled(u, p) for p in _directs(u)))


def model_lost(u: Universe) -> frozenset[str]:
    return direct_enabled(u) - effective_after(u)


def ready(u: Universe) -> bool:
    """Selected, processing complete, a direct entry, and assignments from the wave's group that are
    all healthy (entries that disagree prove nothing)."""
    return (
        u.selected
        and u.processing == PROCESSING_COMPLETE
        and bool(_directs(u))
        and bool(_wave_entries(u))
        and all(_healthy(p) for p in _wave_entries(u))
    )


# ---------------------------------------------------------------------------------------------
# Generation

# With disabledPlans drawn from the SKU's own plans, S1's set formula ((G1 ∩ ... ∩ Gn) ⊆ D) and the
# model's plan-by-plan union agree exactly, so "no loss in the model => Remove" (property b) is the
# right property. Stale ids outside the SKU make S1 block where the model sees no loss (a safe false
# block); they are generated only for the safety-only property at the end.


def _subset(items: Sequence[str | None], mask: int) -> list[str | None]:
    return [item for i, item in enumerate(items) if mask >> i & 1]


# Strategies are built once, and each entry costs two draws (a bit mask of disabled plans plus the
# id case, and a (state, error) pair): generation, not decide(), dominates the run time.
_MASKS = {n: st.integers(0, (1 << (n + 1)) - 1) for n in range(1, len(PLAN_POOL) + len(STALE_PLANS) + 1)}
_STATE_ERROR = st.sampled_from([(state, error) for state in STATES for error in ERRORS])
_HEALTHY = st.sampled_from((("Active", None), ("Active", "None")))
_PLAN_COUNT = st.integers(1, len(PLAN_POOL))
_DIRECTS = st.sampled_from((1, 1, 1, 0, 2))
_DIRECTS_READY = st.sampled_from((1, 1, 1, 2))
_GROUPS = st.integers(0, 15)
_ONE_IN_FOUR = st.integers(0, 3)
_ONE_IN_TEN = st.integers(0, 9)
_OTHER_SOURCES = st.integers(1, 31)
_SELECTED = st.sampled_from((True, True, True, False))
_PROCESSING = st.sampled_from(PROCESSING)
_ORDERS = {n: st.permutations(range(n)) for n in range(16)}


def _payload(
    draw: st.DrawFn, sku_id: str, group: str | None, plan_ids: Sequence[str], healthy: bool = False
) -> dict[str, Any]:
    mask = draw(_MASKS[len(plan_ids)])
    disabled = [d for d in _subset(plan_ids, mask) if d]
    case = str.upper if mask >> len(plan_ids) & 1 else str.lower
    state, error = draw(_HEALTHY if healthy else _STATE_ERROR)
    return {
        "skuId": case(sku_id),
        "assignedByGroup": case(group) if group else None,
        "disabledPlans": [case(d) for d in disabled],
        "state": state,
        "error": error,
    }


@st.composite
def universes(draw: st.DrawFn, force_ready: bool = False, stale: bool = False) -> Universe:
    plan_ids = PLAN_POOL[: draw(_PLAN_COUNT)]
    sku = Sku(SKU_ID, "TESTPACK", tuple(ServicePlan(pid, f"PLAN_{i}") for i, pid in enumerate(plan_ids)))
    disablable = plan_ids + (STALE_PLANS if stale else ())

    n_direct = draw(_DIRECTS_READY if force_ready else _DIRECTS)
    payloads = [_payload(draw, SKU_ID, None, disablable) for _ in range(n_direct)]

    groups = _subset((WAVE_GROUP, *OTHER_GROUPS), draw(_GROUPS) | (1 if force_ready else 0))
    for group in groups:
        payloads.append(_payload(draw, SKU_ID, group, disablable, healthy=force_ready and group == WAVE_GROUP))
    if WAVE_GROUP in groups and draw(_ONE_IN_TEN) == 0:
        # Graph lists one entry per source; a second one for the wave's group tests robustness.
        payloads.append(_payload(draw, SKU_ID, WAVE_GROUP, disablable, healthy=force_ready))

    if draw(_ONE_IN_FOUR) == 0:
        for group in _subset((None, WAVE_GROUP, *OTHER_GROUPS), draw(_OTHER_SOURCES)):
            payloads.append(_payload(draw, OTHER_SKU_ID, group, PLAN_POOL[:3]))

    order = draw(_ORDERS[len(payloads)])
    selected = True if force_ready else draw(_SELECTED)
    processing = PROCESSING_COMPLETE if force_ready else draw(_PROCESSING)
    return Universe(sku, tuple(payloads[i] for i in order), selected, processing)


def any_universe() -> st.SearchStrategy[Universe]:
    """Half the examples get through to the plan comparison; the rest exercise the early exits."""
    return st.one_of(universes(), universes(force_ready=True))


def _show(u: Universe, decision: Decision) -> None:
    note(f"selected={u.selected} processing={u.processing}")
    for p in u.payloads:
        note(repr(p))
    note(f"before={sorted(effective_before(u))} after={sorted(effective_after(u))} lost={sorted(model_lost(u))}")
    note(f"decision={decision!r}")


# ---------------------------------------------------------------------------------------------
# Properties


@EXAMPLES
@given(any_universe(), st.sampled_from(Policy))
def test_a_remove_never_loses_a_plan(u: Universe, policy: Policy) -> None:
    decision = u.decide(policy)
    _show(u, decision)
    event(type(decision).__name__)
    if isinstance(decision, Remove):
        # S1's preconditions: selected, processing done, and a healthy assignment from the wave's group.
        assert ready(u)
        after = effective_after(u)
        assert after >= effective_before(u)
        assert after >= direct_enabled(u)
        assert sku_effective_after(u)
        # The snapshot a restore puts back: the direct assignment as Graph showed it; were there ever
        # two direct entries, only plans disabled in both (restoring enables at least what they did).
        disabled_sets = [frozenset(d.lower() for d in p["disabledPlans"]) for p in _directs(u)]
        assert decision.disabled_plans == frozenset.intersection(*disabled_sets)
        assert decision.sku_id == SKU_ID


@EXAMPLES
@given(universes(force_ready=True))
def test_b_no_loss_removes_whenever_nothing_would_be_lost(u: Universe) -> None:
    assert ready(u)
    decision = u.decide(Policy.NO_LOSS)
    _show(u, decision)
    lost = model_lost(u)
    event("nothing lost" if not lost else "would lose")
    if not lost:
        assert isinstance(decision, Remove)
    else:
        assert isinstance(decision, Block)
        assert decision.reason is BlockReason.PLANS_WOULD_BE_LOST


@EXAMPLES
@given(any_universe())
def test_c_identical_removes_only_on_exactly_the_same_plans(u: Universe) -> None:
    identical = u.decide(Policy.IDENTICAL)
    no_loss = u.decide(Policy.NO_LOSS)
    _show(u, identical)
    same_plans = effective_after(u) == direct_enabled(u)
    event(f"identical={type(identical).__name__} same_plans={same_plans}")
    if isinstance(identical, Remove):
        assert same_plans
        assert no_loss == identical
    if isinstance(no_loss, Remove) and same_plans:
        assert identical == no_loss
    if isinstance(no_loss, Remove) and not same_plans:
        assert isinstance(identical, Block)
        assert identical.reason is BlockReason.PLANS_DIFFER
        assert {p.plan_id for p in identical.plans} == effective_after(u) - direct_enabled(u)
    if not isinstance(no_loss, Remove):
        assert identical == no_loss


@EXAMPLES
@given(any_universe(), st.sampled_from(Policy), st.randoms(use_true_random=False))
def test_d_deterministic_and_order_insensitive(u: Universe, policy: Policy, rnd: random.Random) -> None:
    first = u.decide(policy)
    _show(u, first)
    assert u.decide(policy) == first
    shuffled = list(u.states)
    rnd.shuffle(shuffled)
    assert u.decide(policy, shuffled) == first
    assert u.decide(policy, list(reversed(u.states))) == first


@EXAMPLES
@given(any_universe(), st.sampled_from(Policy))
def test_e_blocks_carry_a_known_reason_and_exact_plans(u: Universe, policy: Policy) -> None:
    decision = u.decide(policy)
    _show(u, decision)
    if isinstance(decision, Skip):
        assert decision.reason in set(SkipReason)
        expected = SkipReason.NOT_SELECTED if not u.selected else SkipReason.NO_DIRECT_ASSIGNMENT
        assert decision.reason is expected
        assert not u.selected or not _directs(u)
        return
    assert u.selected
    assert _directs(u)
    if isinstance(decision, Remove):
        return
    assert decision.reason in set(BlockReason)
    assert isinstance(decision.detail, str)
    assert decision.detail.strip()
    event(decision.reason.value)
    if decision.reason is BlockReason.PLANS_WOULD_BE_LOST:
        lost = model_lost(u)
        assert {p.plan_id for p in decision.plans} == lost
        for plan in decision.plans:
            assert plan.name == u.sku.plan_name(plan.plan_id)
            assert plan.name in decision.detail
    elif decision.reason is BlockReason.GROUP_PROCESSING_INCOMPLETE:
        assert u.processing != PROCESSING_COMPLETE
        assert u.processing in decision.detail
    elif decision.reason is BlockReason.NOT_INHERITED_FROM_GROUP:
        assert not _wave_entries(u)
        for p in _inherited(u):
            assert str(p["assignedByGroup"]).lower() in decision.detail
    elif decision.reason is BlockReason.INHERITED_ERROR:
        unhealthy = [p for p in _wave_entries(u) if not _healthy(p)]
        errors = {_error_text(p) for p in unhealthy if p["error"] not in (None, "None")}
        assert decision.detail == ", ".join(sorted(errors))
        assert unhealthy
    elif decision.reason is BlockReason.INHERITED_NOT_ACTIVE:
        unhealthy = [p for p in _wave_entries(u) if not _healthy(p)]
        assert decision.detail == ", ".join(sorted({p["state"] for p in unhealthy}))
        assert all(p["error"] in (None, "None") for p in unhealthy)
        assert unhealthy
    else:
        assert decision.reason is BlockReason.PLANS_DIFFER
        assert policy is Policy.IDENTICAL


@EXAMPLES
@given(universes(stale=True), st.sampled_from(Policy))
def test_stale_plan_ids_never_make_a_removal_unsafe(u: Universe, policy: Policy) -> None:
    """With ids outside the SKU in disabledPlans, (b) may fail (a safe false block); safety may not."""
    decision = u.decide(policy)
    _show(u, decision)
    if isinstance(decision, Remove):
        assert effective_after(u) >= effective_before(u) | direct_enabled(u)
        assert sku_effective_after(u)
    if isinstance(decision, Block) and decision.reason is BlockReason.PLANS_WOULD_BE_LOST:
        assert {p.plan_id for p in decision.plans} >= model_lost(u)


@EXAMPLES
@given(
    any_universe(),
    st.sampled_from(Policy),
    st.fixed_dictionaries({g: _PROCESSING for g in (WAVE_GROUP, *OTHER_GROUPS)}),
)
def test_g_union_removes_only_when_every_healthy_group_finished_processing(
    u: Universe, policy: Policy, group_states: dict[str, str]
) -> None:
    """S1 over the union: with the groups' processing states given, a Remove means every group with
    a healthy entry (and the wave's group) is complete; otherwise the decision is the same as without."""
    decision = decide(
        u.states, u.sku, WAVE_GROUP, policy, selected=u.selected, group_processing_state=u.processing,
        group_states=group_states,
    )  # fmt: skip
    plain = u.decide(policy)
    relied = {WAVE_GROUP} | {_lower(p["assignedByGroup"]) for p in _inherited(u) if _healthy(p)}
    all_complete = all(group_states.get(g or "") == PROCESSING_COMPLETE for g in relied)
    event(f"{type(decision).__name__} all_complete={all_complete}")
    if isinstance(decision, Remove):
        assert all_complete
        assert plain == decision
    if isinstance(decision, Block) and decision.reason is BlockReason.RELIED_ON_GROUP_PROCESSING:
        assert not all_complete
        assert isinstance(plain, Remove | Block)
    elif all_complete or not isinstance(plain, Remove):
        assert decision == plain
