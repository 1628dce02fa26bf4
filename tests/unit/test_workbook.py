"""The workbook (infra/app/workbook.json) checked against what the code logs: every customDimensions
attribute and licshift_data field a query reads is one licshift writes, every wave-scoped query
honours the Wave and Group parameters, and user counts never count a retried row twice.
(tests/unit/test_infra.py checks the event kinds and how the Bicep deploys the workbook.)"""

from __future__ import annotations

import json
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from licshift.rules.decide import BlockReason
from licshift.rules.outcomes import Event, Outcome, OutcomeStatus
from licshift.services import telemetry

ROOT = Path(__file__).resolve().parents[2]
WORKBOOK = ROOT / "infra" / "app" / "workbook.json"
WAVE_SCOPED = {"tiles", "progress", "removals", "blocks", "blocked-users", "drift", "restores"}
_ATTRIBUTE = re.compile(r"customDimensions\.(licshift_[a-z_]+)")
_DATA_PATH = re.compile(r"\bd2?\.([a-z_]+(?:\.[a-z_]+)*)")


@cache
def workbook() -> dict[str, Any]:
    return dict(json.loads(WORKBOOK.read_text()))


def queries() -> dict[str, str]:
    found = {item["name"]: item["content"]["query"] for item in workbook()["items"] if item["type"] == 3}
    for item in workbook()["items"]:
        if item["type"] == 9:
            found.update({f"param:{p['name']}": p["query"] for p in item["content"]["parameters"] if "query" in p})
    return found


def parameters() -> dict[str, dict[str, Any]]:
    (item,) = [i for i in workbook()["items"] if i["type"] == 9]
    return {p["name"]: p for p in item["content"]["parameters"]}


def logged_attributes(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The licshift_* attributes the code attaches to log records: from real records of every shape
    (an event about one user, an outcome with every field), plus those set with extra={...} literally."""
    caplog.set_level(logging.DEBUG, logger="licshift")
    event = Event(kind=telemetry.DRIFT, message="m", wave_id="w", user_id="u", sku_id="s", data={"k": 1})
    logging.getLogger("licshift").info("m", extra=telemetry._attributes(event))
    telemetry.outcome_recorded(
        Outcome(
            wave_id="w",
            user_id="u",
            sku_id="s",
            status=OutcomeStatus.BLOCKED,
            decision="block",
            reason=BlockReason.INHERITED_ERROR,
            detail="CountViolation",
            user_principal_name="a@contoso.com",
            graph_error="e",
        )
    )
    seen = {k for r in caplog.records for k in vars(r) if k.startswith("licshift_")}
    for path in (ROOT / "src" / "licshift").rglob("*.py"):
        seen |= set(re.findall(r'"(licshift_[a-z_]+)":', path.read_text()))
    return seen


def test_every_attribute_a_query_reads_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    logged = logged_attributes(caplog)
    for name, query in queries().items():
        read = set(_ATTRIBUTE.findall(query))
        assert read <= logged, f"{name} reads attributes nobody logs: {read - logged}"


def test_every_data_field_a_query_reads_is_written_by_the_code() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "licshift").rglob("*.py"))
    written = set(re.findall(r'"([a-z_]+)":', source))
    for name, query in queries().items():
        for path in _DATA_PATH.findall(query):
            missing = [key for key in path.split(".") if key not in written]
            assert not missing, f"{name} reads licshift_data field {path}; no code writes {missing}"


def test_wave_and_group_parameters_scope_every_wave_query() -> None:
    params = parameters()
    assert {"TimeRange", "Group", "Wave"} <= set(params)
    for name in ("Group", "Wave"):
        assert params[name]["multiSelect"] is True
        assert params[name]["typeSettings"]["selectAllValue"] == "*"
    assert "{Group}" in params["Wave"]["query"], "the wave list follows the chosen groups"
    found = queries()
    assert set(found) >= WAVE_SCOPED
    for name in WAVE_SCOPED:
        assert '"*" in ({Group}) or group_id in ({Group})' in found[name], name
        assert '"*" in ({Wave}) or wave_id in ({Wave})' in found[name], name


def test_user_counts_take_one_latest_row_per_user_and_sku() -> None:
    # An outcome is logged again when a delivery is retried or a row changes (blocked at the scan,
    # then removed by a later wave): counting log lines would count users twice.
    for name, query in queries().items():
        if '== "outcome"' not in query:
            continue
        assert re.search(r"by (wave_id, )?user_id, sku_id", query), f"{name} counts outcome lines, not users"


def test_progress_grid_has_the_columns_an_admin_asked_for() -> None:
    progress = queries()["progress"]
    for column in ("progress", "blocked", "failed", "restored", "per_minute", "group"):
        assert re.search(rf"\b{column}\b", progress), column
    tiles = queries()["tiles"]
    for label in ("To remove", "Removed", "Blocked", "Failed", "Restored", "Drift (open)"):
        assert f'"{label}"' in tiles


def test_drift_shows_current_state_from_drift_and_cleared_events() -> None:
    drift = queries()["drift"]
    assert f'"{telemetry.DRIFT}", "{telemetry.DRIFT_CLEARED}"' in drift
    assert "arg_max(timestamp" in drift
    assert f'where kind == "{telemetry.DRIFT}"' in drift


@pytest.mark.parametrize("name", sorted(queries()))
def test_query_is_balanced_and_binds_what_it_uses(name: str) -> None:
    query = queries()[name]
    for opening, closing in ("()", "[]", "{}"):
        assert query.count(opening) == query.count(closing), f"{name}: unbalanced {opening}{closing}"
    bound = re.findall(r"\blet (\w+) =", query)
    assert len(bound) == len(set(bound)), f"{name} binds a name twice"
    for let in bound:
        after = query.split(f"let {let} =", 1)[1].split(";", 1)[1]
        assert re.search(rf"\b{let}\b", after), f"{name}: {let} is bound and never used"
