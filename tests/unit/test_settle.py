"""The settle check's pure core: which migrated users to read again, and when (S3 over time)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from licshift.ports.graph import AssignedLicense, GroupLicenseInfo
from licshift.rules.licenses import GroupOptions
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.services.settle import changed_groups, due, refreshed

SKU = "6fd2c87f-b296-42f0-b197-1e91e994b900"
OTHER_SKU = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
WAVE = "1132b215-826f-42a9-8cfe-1643d19d17fd"
EXTRA = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def info(group: str, disabled: frozenset[str] = frozenset(), state: str = "ProcessingComplete") -> GroupLicenseInfo:
    return GroupLicenseInfo(group, f"group {group[:4]}", state, (AssignedLicense(SKU, disabled),))


def row(user: str, removed_hours_ago: float, *, status: OutcomeStatus = OutcomeStatus.REMOVED) -> Outcome:
    return Outcome(
        wave_id="w1",
        user_id=user,
        sku_id=SKU,
        status=status,
        decision="remove",
        relied_on=(GroupOptions(WAVE, frozenset({SWAY})), GroupOptions(EXTRA, frozenset())),
        removed_at=NOW - timedelta(hours=removed_hours_ago),
    )


UNCHANGED = {WAVE: info(WAVE, frozenset({SWAY})), EXTRA: info(EXTRA)}


def test_nothing_is_read_while_the_relied_on_groups_keep_their_options() -> None:
    assert due([row("a", 1), row("b", 2)], UNCHANGED, NOW, WINDOW) == ([], 0)


def test_a_changed_group_makes_its_users_due_oldest_removal_first() -> None:
    infos = {**UNCHANGED, EXTRA: info(EXTRA, frozenset({SWAY}))}
    ready, waiting = due([row("new", 1), row("old", 5)], infos, NOW, WINDOW)
    assert [d.row.user_id for d in ready] == ["old", "new"]
    assert all(d.changed == (EXTRA,) for d in ready)
    assert waiting == 0


def test_users_wait_while_a_relied_on_group_still_processes() -> None:
    # Their entries may still show the old options: a read now could not see the loss.
    infos = {**UNCHANGED, EXTRA: info(EXTRA, frozenset({SWAY}), state="ProcessingInProgress")}
    assert due([row("a", 1)], infos, NOW, WINDOW) == ([], 1)


def test_a_group_that_stopped_assigning_the_sku_or_is_gone_counts_as_changed() -> None:
    stopped = GroupLicenseInfo(EXTRA, "extra", "ProcessingComplete", (AssignedLicense(OTHER_SKU, frozenset()),))
    assert changed_groups(row("a", 1), {**UNCHANGED, EXTRA: stopped}) == (EXTRA,)
    assert changed_groups(row("a", 1), {**UNCHANGED, EXTRA: None}) == (EXTRA,)
    ready, _ = due([row("a", 1)], {**UNCHANGED, EXTRA: None}, NOW, WINDOW)
    assert [d.row.user_id for d in ready] == ["a"]


def test_only_removed_rows_inside_the_window_are_watched() -> None:
    infos = {**UNCHANGED, EXTRA: info(EXTRA, frozenset({SWAY}))}
    rows = [row("late", 25), row("rolled", 1, status=OutcomeStatus.ROLLED_BACK), row("in", 23)]
    assert [d.row.user_id for d in due(rows, infos, NOW, WINDOW)[0]] == ["in"]


def test_refreshed_options_make_the_same_change_read_once() -> None:
    infos = {**UNCHANGED, EXTRA: info(EXTRA, frozenset({SWAY}))}
    checked = row("a", 1)
    updated = replace(checked, relied_on=refreshed(checked, infos))
    assert due([updated], infos, NOW, WINDOW) == ([], 0)
    assert refreshed(checked, {**infos, EXTRA: None}) == (GroupOptions(WAVE, frozenset({SWAY})),)
