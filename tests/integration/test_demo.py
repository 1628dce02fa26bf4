"""`licshift demo --json`: the main job, as the README's first command runs it (smaller tenant)."""

from __future__ import annotations

import json

import pytest

from licshift.cli.main import run


def test_demo_migrates_every_safe_user_and_loses_nothing(
    storage_connection_string: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LicshiftStorage", storage_connection_string)  # reuse the session's Azurite
    assert run(["demo", "--users", "40", "--canary", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["members"] == 40
    assert result["removed"] == 40
    assert result["remaining_direct"] == 0
    assert result["lost_licenses"] == 0
    assert result["restored"] == 0
    assert result["blocked"] == {}
    assert result["graph"]["writes"] == 40, "one write per removal, nothing wasted"
    kinds = [(w["kind"], w["status"]) for w in result["waves"]]
    assert kinds == [("dry-run", "planned"), ("first", "completed"), ("all", "completed")]
    assert result["waves"][0]["counts"]["to_remove"] == 40
    assert result["elapsed_s"] > 0
