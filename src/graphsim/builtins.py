"""The built-in scenarios, as scenario documents (the same schema as files; `python -m graphsim dump
NAME` prints one as JSON to start a file from).

- seed-example: Microsoft's migration example. N users (default 1,000) with Office 365 E3
  (ENTERPRISEPACK) assigned directly by a legacy script, an "All users" group with NO license yet
  (the demo assigns E3 to it: wave.group_license), seats for everyone plus 5 %.
- adversarial: every outcome of licshift's decision rule by construction (wave.expected), several
  groups with different disabled plans, two groups that together cover a direct assignment, a nested
  group, seat shortage (CountViolation), MutuallyExclusiveViolation, ProhibitedInUsageLocationViolation,
  DependencyViolation, members removed from the wave group mid-migration (timed events), a group
  still processing (second wave), users with no direct assignment, users inheriting only from
  another group. N = number of plain "remove" users (default 40).
- large: 100,000 users (N), generated compactly, with the group already carrying E3 (processed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphsim.catalog import EMS, ENTERPRISEPACK, EXCHANGESTANDARD, MCOMEETADV

E3 = ENTERPRISEPACK.part_number
DEPARTMENTS = ["Sales", "Engineering", "Finance", "Marketing", "Support"]
QUICK = {"queued_seconds": 2, "in_progress_seconds": 3, "per_member_seconds": 0.002}


def seed_example(users: int | None = None, seed: int = 1) -> dict[str, Any]:
    n = 1000 if users is None else _positive(users)
    return {
        "name": "seed-example",
        "description": (
            f"Microsoft's direct-to-group migration example: {n} users with Office 365 E3 (ENTERPRISEPACK) "
            "assigned directly by a legacy script; the 'All users' group has no license yet."
        ),
        "seed": seed,
        "tenant": {"domain": "contoso.onmicrosoft.com", "default_usage_location": "US"},
        "processing": QUICK,
        "skus": [{"catalog": E3, "seats": n + max(10, n // 20)}],
        "users": [
            {
                "generate": {
                    "count": n,
                    "prefix": "user",
                    "name": "staff",
                    "department": DEPARTMENTS,
                    "usage_location": "US",
                    "direct": [{"sku": E3}],
                }
            }
        ],
        "groups": [{"key": "all-users", "name": "All users", "members": ["@all"]}],
        "legacy": {"enabled": False, "sku": E3, "every_seconds": 60, "targets": {"all": True}},
        "waves": [
            {
                "name": "E3 to All users",
                "group": "all-users",
                "skus": [E3],
                "group_license": [{"sku": E3, "disabled_plans": []}],
                "expected": {"*": "remove"},
            }
        ],
    }


def large(users: int | None = None, seed: int = 1) -> dict[str, Any]:
    n = 100_000 if users is None else _positive(users)
    doc = seed_example(n, seed)
    doc["name"] = "large"
    doc["description"] = (
        f"{n} users with Office 365 E3 assigned directly; the 'All users' group already assigns E3 and "
        "its processing is complete, so every member shows E3 direct and inherited."
    )
    doc["processing"] = {"queued_seconds": 2, "in_progress_seconds": 3, "per_member_seconds": 0.0005}
    doc["groups"][0]["licenses"] = [{"sku": E3, "disabled_plans": []}]
    return doc


def adversarial(users: int | None = None, seed: int = 1) -> dict[str, Any]:
    n = 40 if users is None else _positive(users)
    people: list[dict[str, Any]] = []
    wave_members: list[str] = []
    expected: dict[str, str] = {}

    def person(
        key: str,
        *,
        direct: list[dict[str, Any]] | None = None,
        location: str | None = "US",
        outcome: str | None = None,
        in_wave: bool = True,
    ) -> str:
        people.append({"key": key, "usage_location": location, "department": "Licensed", "direct": direct or []})
        if in_wave:
            wave_members.append(key)
        if outcome is not None:
            expected[key] = outcome
        return key

    def e3(*disabled: str) -> list[dict[str, Any]]:
        return [{"sku": E3, "disabled_plans": list(disabled)}]

    bulk = [person(f"plain-{i + 1:03d}", direct=e3("SWAY"), outcome="remove") for i in range(n)]
    person("more-disabled", direct=e3("SWAY", "YAMMER_ENTERPRISE"), outcome="remove")
    person("loses-sway", direct=e3(), outcome="plans-would-be-lost")
    person("two-groups", direct=e3(), outcome="remove")
    person("no-direct", outcome="no-direct-assignment")
    person("not-selected", direct=e3("SWAY"), outcome="not-selected")
    person(
        "mutex",
        direct=[{"sku": EXCHANGESTANDARD.part_number}, *e3("SWAY", "EXCHANGE_S_ENTERPRISE")],
        outcome="inherited-error",
    )
    person("kp-location", direct=e3("SWAY", "TEAMS1"), location="KP", outcome="inherited-error")
    person("no-location", location=None, outcome="no-direct-assignment")
    person("stuck-other", direct=e3("SWAY"), outcome="not-inherited-from-group")
    person("stuck-none", direct=e3("SWAY"), outcome="not-inherited-from-group")
    person("disabled-state", direct=e3("SWAY"), outcome="inherited-not-active")
    # Third wave: SWAY only through "reshuffle", whose options were just changed to disable it: held.
    person("union-held", direct=e3(), in_wave=False)
    leavers = [person(f"leaver-{i}", direct=e3("SWAY")) for i in (1, 2)]
    counted = [person(f"count-{i}", direct=e3("SWAY"), outcome="inherited-error") for i in (1, 2)]
    nested = [person(f"nested-{i}", direct=e3("SWAY"), in_wave=False) for i in (1, 2)]
    person("audio-ok", direct=e3(), in_wave=False)
    person("audio-missing", in_wave=False)
    slow = [
        person("slow-1", direct=e3(), in_wave=False),
        person("slow-2", direct=e3(), in_wave=False),
        person("slow-3", in_wave=False),
    ]

    # Members of the wave group whose EMS assignment succeeds take an EMS seat; the two "count-*"
    # users, processed last, find none left: CountViolation on EMS fails E3 from the same group too.
    not_consuming = {"mutex", "kp-location", "no-location", "stuck-other", "stuck-none", "disabled-state", *counted}
    ems_seats = sum(1 for key in wave_members if key not in not_consuming)
    selection = [key for key in wave_members if key != "not-selected"]
    return {
        "name": "adversarial",
        "description": "Every outcome of licshift's decision rule, by construction (see graphsim/builtins.py).",
        "seed": seed,
        "tenant": {"domain": "fabrikam.onmicrosoft.com", "default_usage_location": None},
        "processing": QUICK,
        "skus": [
            {"catalog": E3, "seats": len(people) + 10},
            {"catalog": EMS.part_number, "seats": ems_seats},
            {"catalog": EXCHANGESTANDARD.part_number, "seats": 5},
            {"catalog": MCOMEETADV.part_number, "seats": 5},
        ],
        "rules": {
            # Exchange Online Plan 1 and Plan 2 on one user (RES "conflicting service plans").
            "mutually_exclusive": [["EXCHANGE_S_STANDARD", "EXCHANGE_S_ENTERPRISE"]],
            # Audio Conferencing needs Skype for Business Online or Teams.
            "dependencies": {"MCOMEETADV": ["MCOSTANDARD", "TEAMS1"]},
            # Illustrative only: Microsoft's per-country availability list is not modelled.
            "prohibited_locations": {"TEAMS1": ["KP"]},
        },
        "users": people,
        "groups": [
            {"key": "nested", "name": "Nested team (member of the wave group)", "members": nested},
            {
                "key": "teamsless",
                "name": "E3 without Teams",
                "members": ["two-groups"],
                "licenses": [{"sku": E3, "disabled_plans": ["TEAMS1"]}],
            },
            {
                "key": "other-e3",
                "name": "Other E3 group",
                "members": ["stuck-other"],
                "licenses": [{"sku": E3, "disabled_plans": []}],
            },
            {
                "key": "wave",
                "name": "Licensing wave: E3 + EMS",
                "members": [*wave_members, "nested"],
                "licenses": [
                    {"sku": E3, "disabled_plans": ["SWAY"]},
                    {"sku": EMS.part_number, "disabled_plans": []},
                ],
                "stuck": ["stuck-other", "stuck-none"],
                "forced": [{"user": "disabled-state", "state": "Disabled", "error": None}],
            },
            {
                "key": "union",
                "name": "Licensing wave: E3 without Sway",
                "members": ["union-held"],
                "licenses": [{"sku": E3, "disabled_plans": ["SWAY"]}],
            },
            {
                "key": "reshuffle",
                "name": "E3 options being changed",
                "members": ["union-held"],
                "licenses": [{"sku": E3, "disabled_plans": ["SWAY"]}],
                "initial": "changed",
                "previous_licenses": [{"sku": E3, "disabled_plans": []}],
                "processing": {"queued_seconds": 86_400, "in_progress_seconds": 3_600},
            },
            {
                "key": "audio",
                "name": "Audio Conferencing add-on",
                "members": ["audio-ok", "audio-missing"],
                "licenses": [{"sku": MCOMEETADV.part_number}],
            },
            {
                "key": "slow",
                "name": "Licensing wave: still processing",
                "members": slow,
                "licenses": [{"sku": E3, "disabled_plans": []}],
                "initial": "queued",
                "processing": {"queued_seconds": 86_400, "in_progress_seconds": 3_600},
            },
        ],
        "events": [
            {"at": 45 + 15 * i, "action": "remove_member", "group": "wave", "member": key}
            for i, key in enumerate(leavers)
        ],
        "legacy": {
            "enabled": False,
            "sku": E3,
            "disabled_plans": ["SWAY"],
            "every_seconds": 60,
            "targets": {"users": bulk[: max(1, n // 4)]},
        },
        "waves": [
            {
                "name": "main",
                "group": "wave",
                "skus": [E3],
                "selection": {"kind": "users", "users": selection},
                "expected": expected,
                "expected_identical": {"more-disabled": "plans-differ"},
                "timing_dependent": {key: ["remove", "not-inherited-from-group"] for key in leavers},
            },
            {
                "name": "still-processing",
                "group": "slow",
                "skus": [E3],
                "expected": {
                    "slow-1": "group-processing-incomplete",
                    "slow-2": "group-processing-incomplete",
                    "slow-3": "no-direct-assignment",
                },
            },
            {
                "name": "relied-on-reprocessing",
                "group": "union",
                "skus": [E3],
                "expected": {"union-held": "relied-on-group-processing"},
            },
        ],
    }


def _positive(users: int) -> int:
    if users < 1:
        raise ValueError(f"--users must be at least 1, got {users}")
    return users


BUILTINS: dict[str, Callable[..., dict[str, Any]]] = {
    "seed-example": seed_example,
    "adversarial": adversarial,
    "large": large,
}
