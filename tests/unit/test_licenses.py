"""The pure license types: GUID checking (S7), Graph payload parsing, direct and effective plans."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licshift.rules.licenses import (
    BLANK_ERROR,
    DirectAssignment,
    InvalidId,
    LicenseAssignmentState,
    ServicePlan,
    Sku,
    direct_assignment,
    effective_plans,
    guid,
    has_effective_sku,
    is_guid,
    normalise_error,
    states_for,
)

E3_SKU_ID = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS_SKU_ID = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
EXCHANGE = "efb87545-963c-4e0d-99df-69c6916d9eb0"
OFFICE_WEB = "e95bec33-7c88-4a70-8e19-b10bd9d0c014"
TEAMS = "57ff2da0-773e-42df-b2af-ffb7a2317929"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
GROUP = "1132b215-826f-42a9-8cfe-1643d19d17fd"
OTHER_GROUP = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"

E3 = Sku(
    E3_SKU_ID,
    "ENTERPRISEPACK",
    (
        ServicePlan(EXCHANGE, "EXCHANGE_S_ENTERPRISE"),
        ServicePlan(OFFICE_WEB, "SHAREPOINTWAC"),
        ServicePlan(TEAMS, "TEAMS1"),
        ServicePlan(SWAY, "SWAY"),
    ),
)


def canonical(text: str) -> str | None:
    """The oracle for guid(): the lower-case 8-4-4-4-12 form iff `text` is exactly that in some case."""
    try:
        parsed = uuid.UUID(text)
    except (ValueError, TypeError):
        return None
    return str(parsed) if text.lower() == str(parsed) else None


@st.composite
def any_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


guid_texts = st.uuids().map(str).flatmap(any_case)

INJECTIONS = [
    "x' or 1 eq 1",
    f"{E3_SKU_ID}' or 1 eq 1",
    f"{E3_SKU_ID}') or (skuId eq '",
    "../",
    f"../{E3_SKU_ID}",
    f"{E3_SKU_ID}/../../users",
    f"{E3_SKU_ID}\n",
    f"{E3_SKU_ID}\r\n",
    f" {E3_SKU_ID}",
    f"{E3_SKU_ID} ",
    f"{E3_SKU_ID}\x00",
    f"{{{E3_SKU_ID}}}",
    f"urn:uuid:{E3_SKU_ID}",
    E3_SKU_ID.replace("-", ""),
    E3_SKU_ID.replace("-", "_"),
    "%36fd2c87f-b296-42f0-b197-1e91e994b900",
    "\uff16fd2c87f-b296-42f0-b197-1e91e994b900",  # fullwidth digit six
    "\u0666fd2c87f-b296-42f0-b197-1e91e994b900",  # Arabic-Indic digit six
    "6fd2c87f-b296-42f0-b197-1e91e994b90g",
    "",
    "null",
    "None",
]


@st.composite
def near_guids(draw: st.DrawFn) -> str:
    """A GUID text with something added, cut or replaced: what a crafted id would look like."""
    text = draw(guid_texts)
    edit = draw(st.sampled_from(("prefix", "suffix", "replace", "cut")))
    noise = draw(st.text(min_size=1, max_size=12))
    at = draw(st.integers(0, len(text) - 1))
    if edit == "prefix":
        return noise + text
    if edit == "suffix":
        return text + noise
    if edit == "replace":
        return text[:at] + noise + text[at + 1 :]
    return text[:at] + text[at + 1 :]


# --- guid() ------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(guid_texts)
def test_guid_accepts_any_uuid_text_in_any_case_and_lowercases_it(text: str) -> None:
    assert is_guid(text)
    assert guid(text) == str(uuid.UUID(text))
    assert guid(guid(text)) == guid(text)


@given(st.uuids())
def test_guid_accepts_uuid_objects(value: uuid.UUID) -> None:
    assert guid(value) == str(value)


@settings(max_examples=1000)
@given(st.one_of(st.text(), near_guids(), st.sampled_from(INJECTIONS)))
def test_guid_accepts_exactly_the_canonical_form_and_rejects_everything_else(text: str) -> None:
    expected = canonical(text)
    assert is_guid(text) == (expected is not None)
    if expected is None:
        with pytest.raises(InvalidId):
            guid(text)
    else:
        assert guid(text) == expected


@pytest.mark.parametrize("text", INJECTIONS)
def test_guid_rejects_injection_attempts(text: str) -> None:
    with pytest.raises(InvalidId):
        guid(text, "skuId")


@pytest.mark.parametrize("value", [None, 42, b"6fd2c87f-b296-42f0-b197-1e91e994b900", ["x"], 1.5])
def test_guid_rejects_non_text(value: object) -> None:
    assert not is_guid(value)
    with pytest.raises(InvalidId):
        guid(value)


def test_invalid_id_message_names_what_was_expected_and_shows_an_example() -> None:
    with pytest.raises(InvalidId) as caught:
        guid("x' or 1 eq 1", "groupId")
    message = str(caught.value)
    assert message.startswith("groupId must be a GUID like ")
    assert is_guid(message.split()[6].rstrip(","))
    assert message.endswith(repr("x' or 1 eq 1"))
    assert isinstance(caught.value, ValueError)


def test_invalid_id_message_is_bounded_for_huge_input() -> None:
    with pytest.raises(InvalidId) as caught:
        guid("a" * 10_000, "userId")
    assert len(str(caught.value)) < 200
    assert str(caught.value).endswith("...")


# --- Graph payloads ----------------------------------------------------------------------------

payload_ids = st.one_of(guid_texts, st.uuids())


@st.composite
def graph_states(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "skuId": draw(payload_ids),
        "assignedByGroup": draw(st.one_of(st.none(), payload_ids)),
        "disabledPlans": draw(st.lists(payload_ids, max_size=5)),
        "state": draw(st.sampled_from(("Active", "ActiveWithError", "Disabled", "Error"))),
        "error": draw(
            st.sampled_from((None, "None", "none", "", "CountViolation", " MutuallyExclusiveViolation ", "Other"))
        ),
        "lastUpdatedDateTime": "2026-10-01T08:00:00Z",
    }


@settings(max_examples=300)
@given(graph_states())
def test_from_graph_round_trips_through_to_graph(payload: dict[str, Any]) -> None:
    parsed = LicenseAssignmentState.from_graph(payload)
    assert LicenseAssignmentState.from_graph(parsed.to_graph()) == parsed
    assert parsed.sku_id == str(payload["skuId"]).lower()
    assert parsed.disabled_plans == {str(p).lower() for p in payload["disabledPlans"]}
    assert parsed.is_direct == (payload["assignedByGroup"] is None)
    out = parsed.to_graph()
    assert out["error"] == (parsed.error or "None")
    assert out["disabledPlans"] == sorted(out["disabledPlans"])


def test_from_graph_normalises_a_real_payload() -> None:
    parsed = LicenseAssignmentState.from_graph(
        {
            "assignedByGroup": GROUP.upper(),
            "disabledPlans": [SWAY.upper(), TEAMS],
            "error": "CountViolation",
            "lastUpdatedDateTime": "2026-10-01T08:00:00Z",
            "skuId": uuid.UUID(E3_SKU_ID),  # msgraph-sdk deserialises skuId as uuid.UUID
            "state": "Error",
        }
    )
    assert parsed == LicenseAssignmentState(E3_SKU_ID, GROUP, frozenset({SWAY, TEAMS}), "Error", "CountViolation")
    assert not parsed.is_healthy


@pytest.mark.parametrize(
    "bad",
    [
        {"skuId": "x' or 1 eq 1", "assignedByGroup": None},
        {"skuId": E3_SKU_ID, "assignedByGroup": "../groups"},
        {"skuId": E3_SKU_ID, "assignedByGroup": None, "disabledPlans": ["SWAY"]},
    ],
)
def test_from_graph_rejects_non_guid_ids(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidId):
        LicenseAssignmentState.from_graph(bad)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("None", None),
        ("none", None),
        ("", BLANK_ERROR),
        ("  ", BLANK_ERROR),
        (" CountViolation ", "CountViolation"),
    ],
)
def test_normalise_error(raw: str | None, expected: str | None) -> None:
    assert normalise_error(raw) == expected


def test_sku_from_graph_keeps_only_user_plans() -> None:
    sku = Sku.from_graph(
        {
            "skuId": E3_SKU_ID.upper(),
            "skuPartNumber": "ENTERPRISEPACK",
            "servicePlans": [
                {"servicePlanId": EXCHANGE.upper(), "servicePlanName": "EXCHANGE_S_ENTERPRISE", "appliesTo": "User"},
                {"servicePlanId": SWAY, "servicePlanName": "SWAY"},  # appliesTo absent: a user plan
                {
                    "servicePlanId": "113feb6c-3fe4-4440-bddc-54d774bf0318",
                    "servicePlanName": "EXCHANGE_S_FOUNDATION",
                    "appliesTo": "Company",
                },
            ],
        }
    )
    assert sku.sku_id == E3_SKU_ID
    assert sku.part_number == "ENTERPRISEPACK"
    assert sku.plans == (ServicePlan(EXCHANGE, "EXCHANGE_S_ENTERPRISE"), ServicePlan(SWAY, "SWAY"))
    assert sku.plan_ids == {EXCHANGE, SWAY}


def test_sku_names_plans_and_keeps_unknown_ids_by_id() -> None:
    retired = "dead0000-0000-4000-8000-000000000001"
    assert E3.plan_name(SWAY) == "SWAY"
    assert E3.plan_name(retired) == retired
    # Ordered by id, so the same plans always read the same in a ledger row.
    assert E3.describe([TEAMS, retired, SWAY, TEAMS]) == (
        ServicePlan(TEAMS, "TEAMS1"),
        ServicePlan(SWAY, "SWAY"),
        ServicePlan(retired, retired),
    )


@given(st.frozensets(payload_ids.map(lambda v: str(v).lower()), max_size=5), st.sampled_from((E3_SKU_ID, EMS_SKU_ID)))
def test_direct_assignment_snapshot_round_trips(disabled: frozenset[str], sku_id: str) -> None:
    snapshot = DirectAssignment(sku_id, disabled)
    assert DirectAssignment.from_json(snapshot.to_json()) == snapshot


# --- direct_assignment / effective_plans --------------------------------------------------------


def state(
    group: str | None = None, disabled: frozenset[str] = frozenset(), status: str = "Active", error: str | None = None
) -> LicenseAssignmentState:
    return LicenseAssignmentState(E3_SKU_ID, group, disabled, status, error)


def test_direct_assignment_is_none_without_a_direct_entry() -> None:
    assert direct_assignment([state(GROUP)], E3_SKU_ID) is None
    assert direct_assignment([], E3_SKU_ID) is None
    other = LicenseAssignmentState(EMS_SKU_ID, None)
    assert direct_assignment([other, state(GROUP)], E3_SKU_ID) is None


def test_direct_assignment_carries_its_disabled_plans() -> None:
    states = [
        state(GROUP, frozenset({TEAMS})),
        state(None, frozenset({SWAY})),
        LicenseAssignmentState(EMS_SKU_ID, None),
    ]
    assert direct_assignment(states, E3_SKU_ID) == DirectAssignment(E3_SKU_ID, frozenset({SWAY}))


def test_two_direct_entries_count_as_one_enabling_the_union() -> None:
    states = [state(None, frozenset({SWAY, TEAMS})), state(None, frozenset({TEAMS, OFFICE_WEB}))]
    assert direct_assignment(states, E3_SKU_ID) == DirectAssignment(E3_SKU_ID, frozenset({TEAMS}))


def test_effective_plans_are_the_union_over_healthy_sources_of_the_sku() -> None:
    states = [
        state(None, frozenset({SWAY, TEAMS})),
        state(GROUP, frozenset({TEAMS, OFFICE_WEB, EXCHANGE})),
        state(OTHER_GROUP, frozenset(), "Error", "CountViolation"),
        LicenseAssignmentState(EMS_SKU_ID, None),
    ]
    # TEAMS is disabled by both healthy sources; the group in error would enable it but does not count.
    assert effective_plans(states, E3) == {EXCHANGE, OFFICE_WEB, SWAY}
    assert has_effective_sku(states, E3_SKU_ID)
    assert states_for(states, EMS_SKU_ID) == (LicenseAssignmentState(EMS_SKU_ID, None),)


@pytest.mark.parametrize(
    ("status", "error"), [("Active", "CountViolation"), ("ActiveWithError", None), ("Disabled", None)]
)
def test_unhealthy_sources_contribute_nothing(status: str, error: str | None) -> None:
    states = [state(GROUP, frozenset(), status, error)]
    assert effective_plans(states, E3) == frozenset()
    assert not has_effective_sku(states, E3_SKU_ID)


def test_a_source_disabling_everything_still_counts_as_the_sku_being_assigned() -> None:
    states = [state(GROUP, E3.plan_ids)]
    assert effective_plans(states, E3) == frozenset()
    assert has_effective_sku(states, E3_SKU_ID)
