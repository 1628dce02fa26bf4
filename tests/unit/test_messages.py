"""Queue message formats (S7): strict parsing with clear messages, never a crash, exact round trips."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from licshift.rules.decide import Policy
from licshift.rules.messages import (
    MAX_REPROCESS_USERS,
    MAX_SKUS,
    Command,
    KillSwitch,
    MalformedMessage,
    Reprocess,
    StartWave,
    Task,
    TaskKind,
    WaveCommand,
    encode_task,
    encode_waves_message,
    parse_task,
    parse_waves_message,
    queue_text,
    stored_text,
)
from licshift.rules.waves import Selection, SelectionKind

GROUP = "0f5c3a50-6b7a-4a0e-9c51-3f1b7d2a8e10"
WAVE = "6a1f0b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
USER = "11111111-2222-4333-8444-555555555555"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
MAX_USERS = 1000


def start(**overrides: Any) -> str:
    body: dict[str, Any] = {
        "command": "start",
        "wave_id": WAVE,
        "group": GROUP,
        "skus": ["ENTERPRISEPACK"],
        "selection": {"kind": "first", "count": 5},
        "requested_by": "alice@contoso.com",
    }
    body.update(overrides)
    return json.dumps(body)


def parse(text: str) -> Any:
    return parse_waves_message(text, max_wave_users=MAX_USERS)


def test_a_start_command_parses_with_defaults() -> None:
    message = parse(start())
    assert message == StartWave(
        wave_id=WAVE,
        group_id=GROUP,
        skus=("ENTERPRISEPACK",),
        selection=Selection(SelectionKind.FIRST, count=5),
        dry_run=False,
        force=False,
        policy=None,
        requested_by="alice@contoso.com",
    )


def test_ids_are_normalised_to_lower_case_and_skus_deduplicated() -> None:
    message = parse(start(group=GROUP.upper(), skus=[E3.upper(), E3, "SPE_E3"]))
    assert isinstance(message, StartWave)
    assert message.group_id == GROUP
    assert message.skus == (E3, "SPE_E3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"command": "explode"}', "is not one of start"),
        (start(group="all-users"), "group must be a GUID"),
        (start(group=GROUP + "\n"), "group must be a GUID"),
        (start(group=f"{GROUP}' or 1 eq 1"), "group must be a GUID"),
        (start(skus=["ENTERPRISEPACK') or (true"]), "neither a skuId GUID nor a skuPartNumber"),
        (start(skus=["$filter=x"]), "neither a skuId GUID nor a skuPartNumber"),
        (start(skus=[]), "non-empty list"),
        (start(skus=[f"SKU{i}" for i in range(MAX_SKUS + 1)]), "split the wave"),
        (start(selection={"kind": "first", "count": MAX_USERS + 1}), "from 1 to 1000"),
        (start(selection={"kind": "first", "count": 0}), "from 1 to 1000"),
        (start(selection={"kind": "first", "count": True}), "whole number"),
        (start(selection={"kind": "percent", "percent": 0}), "above 0 and at most 100"),
        (start(selection={"kind": "percent", "percent": 100.5}), "above 0 and at most 100"),
        (start(selection={"kind": "users", "users": []}), "users is empty"),
        (start(selection={"kind": "users", "users": ["bob"]}), "selection user id must be a GUID"),
        (start(selection={"kind": "users", "users": [USER] * (MAX_USERS + 1)}), "more than 1000"),
        (start(selection={"kind": "all", "count": 3}), "unknown field"),
        (start(dry_run="yes"), "dry_run must be true or false"),
        (start(policy="yolo"), "not no-loss or identical"),
        (start(extra=1), "unknown field(s) 'extra'"),
        (start(requested_by="a\x00b"), "printable"),
        (json.dumps({"command": "pause", "wave_id": "1"}), "wave_id must be a GUID"),
        (json.dumps({"command": "kill-switch", "on": "true"}), "on must be true or false"),
        ("[" * 60_000, "nests JSON too deeply"),
        ("x" * 70_000, "at most 65536"),
    ],
)
def test_bad_input_is_rejected_with_a_message_saying_what_to_fix(text: str, expected: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse(text)
    assert expected in str(caught.value)


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_waves_parser(text: str) -> None:
    with contextlib.suppress(MalformedMessage):
        parse(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["command", "wave_id", "group", "skus", "selection", "dry_run", "on", "task", "user_id"]),
        json_values,
    )
)
def test_arbitrary_json_objects_never_crash_either_parser(payload: dict[str, Any]) -> None:
    text = json.dumps(payload)
    for parser in (parse, parse_task):
        with contextlib.suppress(MalformedMessage):
            parser(text)


guids = st.uuids().map(str)
part_numbers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,20}", fullmatch=True)
selections = st.one_of(
    st.just(Selection()),
    st.integers(min_value=1, max_value=MAX_USERS).map(lambda n: Selection(SelectionKind.FIRST, count=n)),
    st.floats(min_value=0.001, max_value=100).map(lambda p: Selection(SelectionKind.PERCENT, percent=p)),
    st.frozensets(guids, min_size=1, max_size=20).map(lambda u: Selection(SelectionKind.USERS, users=u)),
)
requesters = st.text(alphabet=st.characters(min_codepoint=32, exclude_categories=["Cs", "Cc"]), max_size=40).map(
    str.strip
)
starts = st.builds(
    StartWave,
    wave_id=guids,
    group_id=guids,
    skus=st.lists(guids | part_numbers, min_size=1, max_size=MAX_SKUS, unique=True).map(tuple),
    selection=selections,
    dry_run=st.booleans(),
    force=st.booleans(),
    policy=st.none() | st.sampled_from(Policy),
    requested_by=requesters,
)
wave_commands = st.builds(
    WaveCommand,
    command=st.sampled_from([Command.PAUSE, Command.RESUME, Command.CANCEL, Command.ROLLBACK]),
    wave_id=guids,
    requested_by=requesters,
)
kill_switches = st.builds(KillSwitch, on=st.booleans(), requested_by=requesters)
reprocesses = st.builds(
    Reprocess,
    wave_id=st.just("") | guids,
    users=st.lists(guids, min_size=1, max_size=30, unique=True).map(tuple),
    reason=st.sampled_from(["", "CountViolation", "MutuallyExclusiveViolation"]),
    requested_by=requesters,
    request_id=st.just("") | guids,
    batch_id=st.just("") | guids,
)


@given(starts | wave_commands | kill_switches | reprocesses)
def test_waves_messages_round_trip(message: StartWave | WaveCommand | KillSwitch | Reprocess) -> None:
    assert parse(encode_waves_message(message)) == message


ASSIGNMENT_TASKS = [k for k in TaskKind if k is not TaskKind.REPROCESS]


@given(st.builds(Task, kind=st.sampled_from(ASSIGNMENT_TASKS), wave_id=guids, user_id=guids, sku_id=guids))
def test_tasks_round_trip(task: Task) -> None:
    assert parse_task(encode_task(task)) == task


@given(st.builds(Task, kind=st.just(TaskKind.REPROCESS), wave_id=st.just("") | guids, user_id=guids,
                 sku_id=st.just(""), request_id=guids))  # fmt: skip
def test_reprocess_tasks_round_trip(task: Task) -> None:
    assert parse_task(encode_task(task)) == task


def test_a_reprocess_task_names_its_request_and_no_sku() -> None:
    base = {"task": "reprocess", "wave_id": WAVE, "user_id": USER}
    with pytest.raises(MalformedMessage, match="'request_id' is required"):
        parse_task(json.dumps(base))
    with pytest.raises(MalformedMessage, match="unknown field"):
        parse_task(json.dumps(base | {"request_id": GROUP, "sku_id": E3}))
    with pytest.raises(MalformedMessage, match="user_id must be a GUID"):
        parse_task(json.dumps(base | {"request_id": GROUP, "user_id": f"{USER}/assignLicense"}))


def test_reprocess_commands_are_bounded_and_checked() -> None:
    base = {"command": "reprocess", "wave_id": WAVE, "users": [USER], "reason": "CountViolation"}
    assert parse(json.dumps(base)) == Reprocess(WAVE, (USER,), "CountViolation", "")
    too_many = [f"{n:08x}-2222-4333-8444-555555555555" for n in range(MAX_REPROCESS_USERS + 1)]
    with pytest.raises(MalformedMessage, match="send several commands"):
        parse(json.dumps(base | {"users": too_many}))
    assert len(json.dumps(base | {"users": too_many[:-1]})) < 64 * 1024, "a full command fits a queue message"
    with pytest.raises(MalformedMessage, match="non-empty list"):
        parse(json.dumps(base | {"users": []}))
    with pytest.raises(MalformedMessage, match="license error code"):
        parse(json.dumps(base | {"reason": "Count Violation'; drop"}))
    with pytest.raises(MalformedMessage, match="user id must be a GUID"):
        parse(json.dumps(base | {"users": ["ada@contoso.com"]}))


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_task_parser(text: str) -> None:
    with contextlib.suppress(MalformedMessage):
        parse_task(text)


def test_task_with_injection_in_an_id_is_rejected() -> None:
    text = json.dumps({"task": "remove", "wave_id": WAVE, "user_id": f"{USER}/assignLicense", "sku_id": E3})
    with pytest.raises(MalformedMessage, match="user_id must be a GUID"):
        parse_task(text)


# --- the stored bytes the host hands over --------------------------------------------------------


@given(st.text(max_size=300))
def test_queue_text_reads_what_licshift_writes(text: str) -> None:
    stored = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii").encode("ascii")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(MalformedMessage, match="not UTF-8"):
            queue_text(stored)
        return
    assert queue_text(stored) == text


@given(st.binary(max_size=500))
def test_queue_text_refuses_anything_else_with_a_reason_and_never_crashes(stored: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        queue_text(stored)
    assert isinstance(stored_text(stored), str)


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (b'{"command": "start"}', "not base64"),
        (b"bm90IGpzb24gew==\n", "not base64"),
        (b"//4=", "not UTF-8"),
        (b"%" * 70_000, "at most"),
    ],
)
def test_queue_text_says_which_layer_is_wrong(stored: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        queue_text(stored)
