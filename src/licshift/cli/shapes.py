"""The JSON shapes `--json` prints for waves, outcomes and events: stable keys, documented in the
README's command table. Add keys; never rename or remove one (scripts depend on them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from licshift.cli.directory import Names
from licshift.rules.messages import selection_json
from licshift.rules.outcomes import Event, Outcome
from licshift.rules.waves import Wave


def _time(value: object) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


def wave_json(wave: Wave, names: Names, *, held_by_kill_switch: bool = False) -> dict[str, Any]:
    return {
        "wave_id": wave.wave_id,
        "status": wave.status.value,
        "status_reason": wave.status_reason,
        "held_by_kill_switch": held_by_kill_switch,
        "dry_run": wave.dry_run,
        "group_id": wave.group_id,
        "group_name": names.group(wave.group_id),
        "sku_ids": list(wave.sku_ids),
        "skus": [names.sku(s) for s in wave.sku_ids],
        "selection": selection_json(wave.selection),
        "policy": wave.policy.value,
        "force": wave.force,
        "requested_by": wave.requested_by,
        "created_at": _time(wave.created_at),
        "updated_at": _time(wave.updated_at),
        "counters": dataclasses.asdict(wave.counters),
    }


def outcome_json(outcome: Outcome, names: Names) -> dict[str, Any]:
    return {
        "user_id": outcome.user_id,
        "user_principal_name": outcome.user_principal_name,
        "sku_id": outcome.sku_id,
        "sku": names.sku(outcome.sku_id),
        "status": outcome.status.value,
        "decision": outcome.decision,
        "reason": outcome.reason,
        "detail": outcome.detail,
    }


def event_json(event: Event, names: Names) -> dict[str, Any]:
    return {
        "at": _time(event.at),
        "kind": event.kind,
        "severity": event.severity.value,
        "message": event.message,
        "wave_id": event.wave_id,
        "user_id": event.user_id,
        "sku_id": event.sku_id,
        "sku": names.sku(event.sku_id) if event.sku_id else "",
        "actor": event.actor,
    }
