"""The CLI's contract without storage: exit codes for wave states, summaries, request ids on the
waves queue, settings from local.settings.json, argument types that refuse nonsense."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from licshift.cli.context import Context, local_settings, readme_defaults, settings_env
from licshift.cli.exitcodes import EnvironmentProblem, ExitCode
from licshift.cli.main import parser, run
from licshift.cli.waiting import answer_exit, wave_exit, wave_summary
from licshift.rules.answers import Answer, Verdict, request_id_in
from licshift.rules.decide import Policy
from licshift.rules.messages import (
    Command,
    KillSwitch,
    MalformedMessage,
    StartWave,
    WaveCommand,
    encode_waves_message,
    parse_waves_message,
)
from licshift.rules.waves import Selection, Wave, WaveCounters, WaveStatus

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
WAVE_ID = "3f2a1b2c-0000-4000-8000-000000000001"
GROUP = "6fd2c87f-b296-42f0-b197-1e91e994b900"
REQUEST = "9a9a9a9a-0000-4000-8000-000000000002"


def wave(status: WaveStatus, *, dry_run: bool = False, **counts: int) -> Wave:
    return Wave(
        wave_id=WAVE_ID,
        group_id=GROUP,
        sku_ids=("c7df2760-2c81-4ef7-b578-5b5392b571df",),
        selection=Selection(),
        policy=Policy.NO_LOSS,
        dry_run=dry_run,
        force=False,
        requested_by="ops",
        status=status,
        created_at=NOW,
        updated_at=NOW,
        counters=WaveCounters(**counts),
        status_reason="2 removals failed" if status is WaveStatus.HALTED else "",
    )


@pytest.mark.parametrize(
    ("state", "counts", "dry_run", "code"),
    [
        (WaveStatus.COMPLETED, {"removed": 27}, False, ExitCode.OK),
        (WaveStatus.COMPLETED, {"removed": 27, "blocked": 8}, False, ExitCode.BLOCKED),
        (WaveStatus.COMPLETED, {"removed": 27, "failed": 1}, False, ExitCode.BLOCKED),
        (WaveStatus.PLANNED, {"to_remove": 27}, True, ExitCode.OK),
        (WaveStatus.PLANNED, {"to_remove": 27, "blocked": 1}, True, ExitCode.BLOCKED),
        (WaveStatus.HALTED, {"removed": 3, "failed": 5}, False, ExitCode.STOPPED),
        (WaveStatus.CANCELLED, {"removed": 3}, False, ExitCode.STOPPED),
        (WaveStatus.ROLLED_BACK, {"rolled_back": 3}, False, ExitCode.OK),
        (WaveStatus.REMOVING, {"removed": 3}, False, ExitCode.TIMEOUT),
        (WaveStatus.PAUSED, {"removed": 3}, False, ExitCode.TIMEOUT),
    ],
)
def test_wave_states_map_to_exit_codes(
    state: WaveStatus, counts: dict[str, int], dry_run: bool, code: ExitCode
) -> None:
    assert wave_exit(wave(state, dry_run=dry_run, **counts)) is code


def test_no_wave_is_a_timeout_and_answers_map_to_codes() -> None:
    assert wave_exit(None) is ExitCode.TIMEOUT
    assert answer_exit(None) is ExitCode.TIMEOUT
    assert answer_exit(Answer(REQUEST, Verdict.REJECTED, "no")) is ExitCode.REFUSED
    assert answer_exit(Answer(REQUEST, Verdict.FAILED, "poison")) is ExitCode.STOPPED
    assert answer_exit(Answer(REQUEST, Verdict.DUPLICATE, "again")) is ExitCode.OK
    assert answer_exit(Answer(REQUEST, Verdict.ACCEPTED, "yes")) is ExitCode.OK


def test_summary_line_names_counts_and_the_next_command() -> None:
    line = wave_summary(wave(WaveStatus.COMPLETED, removed=27, blocked=8))
    assert line == "completed: 27 removed, 8 blocked -> licshift report 3f2a1b2c"
    halted = wave_summary(wave(WaveStatus.HALTED, removed=3, failed=5))
    assert halted.startswith("halted: 3 removed, 0 blocked, 5 failed (2 removals failed)")
    plan = wave_summary(wave(WaveStatus.PLANNED, dry_run=True, to_remove=12, skipped=2))
    assert plan == "planned: 12 to remove, 0 blocked, 2 skipped -> licshift report 3f2a1b2c"


def test_commands_carry_a_request_id_through_encode_and_parse() -> None:
    start = StartWave(WAVE_ID, GROUP, ("ENTERPRISEPACK",), Selection(), False, False, None, "ops", REQUEST)
    for message in (start, WaveCommand(Command.PAUSE, WAVE_ID, "ops", REQUEST), KillSwitch(True, "ops", REQUEST)):
        text = encode_waves_message(message)
        assert json.loads(text)["request_id"] == REQUEST
        assert parse_waves_message(text, max_wave_users=10) == message
        assert request_id_in(text) == REQUEST
    plain = replace(start, request_id="")
    assert "request_id" not in json.loads(encode_waves_message(plain))


def test_a_request_id_must_be_a_guid() -> None:
    body = {"command": "pause", "wave_id": WAVE_ID, "request_id": "x' or 1"}
    with pytest.raises(MalformedMessage, match="request_id must be a GUID"):
        parse_waves_message(json.dumps(body), max_wave_users=10)


@given(st.text(max_size=200))
def test_request_id_in_never_raises(text: str) -> None:
    found = request_id_in(text)
    assert found == "" or len(found) == 36


def test_request_id_in_reads_refused_messages_leniently() -> None:
    assert request_id_in(json.dumps({"command": "nonsense", "request_id": REQUEST.upper()})) == REQUEST
    assert request_id_in(json.dumps({"request_id": 5})) == ""
    assert request_id_in("[1, 2]") == ""


def test_settings_come_from_defaults_then_local_settings_then_the_environment(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"LicshiftStorage": "UseDevelopmentStorage=true", "LICSHIFT_WAVES_QUEUE": "from-file"},
            }
        )
    )
    env = settings_env({"LICSHIFT_WAVES_QUEUE": "from-env"}, tmp_path)
    assert env["LicshiftStorage"] == "UseDevelopmentStorage=true"
    assert env["LICSHIFT_WAVES_QUEUE"] == "from-env", "the environment wins, as with Core Tools"
    assert env["LICSHIFT_TICK_SCHEDULE"] == readme_defaults()["LICSHIFT_TICK_SCHEDULE"] == "0 * * * * *"
    assert Context(environ={}, folder=tmp_path).settings().waves_queue == "from-file"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not valid JSON"),
        ('{"IsEncrypted": true, "Values": {}}', "encrypted"),
        ('{"Values": []}', "must be an object"),
    ],
)
def test_a_broken_local_settings_file_is_an_environment_error(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "local.settings.json").write_text(content)
    with pytest.raises(EnvironmentProblem, match=says):
        local_settings(tmp_path)


def test_every_help_page_has_an_example_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    pages = [["--help"]]
    top = parser()
    for name, sub in top._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        pages.append([name, "--help"])
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        for action in nested:
            pages += [[name, child, "--help"] for child in action.choices]
    assert len(pages) > 15
    for argv in pages:
        assert run(argv) == 0
        text = capsys.readouterr().out
        assert "examples:\n  licshift" in text, f"no example in `licshift {' '.join(argv)}`"
        assert "exit codes:" in text, f"no exit codes in `licshift {' '.join(argv)}`"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("licshift ")
