"""`licshift reprocess` without I/O: which license error codes --reason takes, and how one user's
result is named from the reads before and after the call."""

from __future__ import annotations

import pytest

from factories import E3, GROUP, user_id
from licshift.cli.exitcodes import UsageError
from licshift.cli.reprocess import error_codes
from licshift.ports.graph import UserLicenses
from licshift.rules.licenses import LicenseAssignmentState
from licshift.services.reprocess import CLEARED, NO_ERROR, STILL_IN_ERROR, UNCONFIRMED, _outcome, license_errors

EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"


def user(*errors: str | None) -> UserLicenses:
    direct = LicenseAssignmentState(E3, None)
    inherited = [
        LicenseAssignmentState(sku, GROUP, state="Error" if error else "Active", error=error)
        for sku, error in zip((E3, EMS), errors, strict=False)
    ]
    return UserLicenses(user_id(1), "ada@contoso.com", (direct, *inherited))


def test_reason_takes_graphs_error_codes_in_any_case() -> None:
    assert error_codes("countviolation") == {"CountViolation"}
    assert error_codes("CountViolation, dependencyviolation") == {"CountViolation", "DependencyViolation"}
    with pytest.raises(UsageError, match="CountViolation"):
        error_codes("Seats")
    with pytest.raises(UsageError):
        error_codes(" , ")


def test_license_errors_are_the_group_assignments_codes_once_each() -> None:
    assert license_errors(user("CountViolation", "CountViolation")) == ["CountViolation"]
    assert license_errors(user(None, None)) == []
    assert license_errors(None) == []


@pytest.mark.parametrize(
    ("before", "after", "outcome"),
    [
        (user("CountViolation"), user(None), CLEARED),
        (user("CountViolation"), user("CountViolation"), STILL_IN_ERROR),
        (user(None), user(None), NO_ERROR),
        (user(None), user("MutuallyExclusiveViolation"), STILL_IN_ERROR),
        (user("CountViolation"), None, UNCONFIRMED),
        (user(None), None, NO_ERROR),
    ],
)
def test_one_users_outcome_follows_the_reads_around_the_call(
    before: UserLicenses, after: UserLicenses | None, outcome: str
) -> None:
    assert _outcome(before, after) == outcome
