"""`licshift check --group G --sku K`: what stands in the way of a wave, before any wave (read-only).

It reads Graph with the admin's own credential, like `groups` and `skus` (group, members, nested
groups, the SKU's holders and seats), decides every member with the wave's rule, and writes nothing
anywhere. Exit 0 when a wave would migrate every member holding the SKU directly, 4 when something
blocks (the next-step line says what to do first).
"""

from __future__ import annotations

import argparse
from typing import Any

from licshift.cli.context import Context
from licshift.cli.directory import UNREACHABLE, Directory, _pick_sku, graph_problem, open_directory
from licshift.cli.exitcodes import EnvironmentProblem, ExitCode, UsageError
from licshift.cli.output import table
from licshift.cli.parsing import add_command, add_json
from licshift.ports.graph import UserLicenses
from licshift.rules.decide import Policy
from licshift.rules.fixes import ERROR_FIXES
from licshift.services.readiness import FIRST_NAMES, Readiness, assess


def register(sub: Any) -> None:
    cmd = add_command(
        sub,
        "check",
        help="readiness of a group and SKU for a wave: seats, license errors, plans, who would be left behind",
        examples=[
            'licshift check --group "All users" --sku ENTERPRISEPACK',
            "licshift check --group 0f5c3a50 --sku ENTERPRISEPACK --details",
            "licshift check --group \"All users\" --sku ENTERPRISEPACK --json | jq '.next_step'",
        ],
    )
    cmd.add_argument("--group", required=True, help="the wave's group: id or exact display name")
    cmd.add_argument("--sku", required=True, help="part number (ENTERPRISEPACK) or skuId")
    cmd.add_argument("--policy", choices=[p.value for p in Policy], default=None, help="default: LICSHIFT_POLICY")
    cmd.add_argument("--details", action="store_true", help="one line per member (with --json: a users list)")
    add_json(cmd)
    cmd.set_defaults(handler=check_command)


async def check_command(args: argparse.Namespace, ctx: Context) -> int:
    settings = ctx.settings()
    policy = Policy(args.policy) if args.policy else settings.policy
    async with open_directory(settings) as directory:
        found = await gather(directory, args.group, args.sku, policy)
    ctx.output.data(payload(found, details=args.details), text(found, details=args.details))
    return ExitCode.OK if found.ready else ExitCode.BLOCKED


async def gather(directory: Directory, group_ref: str, sku_ref: str, policy: Policy) -> Readiness:
    group_id = await directory.resolve_group(group_ref)
    subscription = _pick_sku(await directory.subscriptions(), sku_ref)
    sku = subscription.sku
    info = await directory.group(group_id)
    if info is None:
        raise UsageError(f"no group {group_id}; list licensed groups with `licshift groups`")
    if not info.assigns(sku.sku_id):
        raise UsageError(
            f"{info.display_name or group_id} does not assign {sku.part_number}: assign it to the group first "
            "(Microsoft's step 3), wait for processing, then check again"
        )
    graph = directory.graph
    try:
        members = [m async for m in graph.group_members(group_id)]
        nested = await nested_members(directory, group_id)
        holders = [u async for u in graph.sku_holders(sku.sku_id)]
    except UNREACHABLE as exc:
        raise EnvironmentProblem(graph_problem(exc, directory.settings)) from None
    return assess(
        info,
        sku,
        members,
        seats=(subscription.enabled, subscription.consumed),
        nested_only=nested,
        direct_holders=holders,
        policy=policy,
    )


async def nested_members(directory: Directory, group_id: str) -> list[UserLicenses]:
    """User members of the groups nested in the group, at any depth (each group read once)."""
    graph = directory.graph
    seen = {group_id}
    pending = [g async for g in graph.nested_groups(group_id)]
    users: list[UserLicenses] = []
    while pending:
        nested = pending.pop()
        if nested in seen:
            continue
        seen.add(nested)
        users += [m async for m in graph.group_members(nested)]
        pending += [g async for g in graph.nested_groups(nested)]
    return users


def payload(r: Readiness, *, details: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "group_id": r.group_id,
        "group": r.group_name,
        "sku_id": r.sku_id,
        "sku": r.sku_name,
        "processing_state": r.processing_state,
        "ready": r.ready,
        "members": r.members,
        "seats": {
            "enabled": r.seats_enabled,
            "consumed": r.seats_consumed,
            "needed": r.seats_needed,
            "short": r.seat_shortage,
        },
        "by_reason": dict(sorted(r.by_reason.items())),
        "license_errors": [
            {"error": code, "users": users, "fix": ERROR_FIXES.get(code, "")} for code, users in r.errors.items()
        ],
        "nested_only": r.nested_only,
        "outside_direct": r.outside_direct,
        "plan_unlocks": [{"plan": plan, "users": users} for plan, users in r.plan_unlocks],
        "next_step": r.next_step(),
    }
    if details:
        doc["users"] = [
            {
                "user": u.user_principal_name,
                "user_id": u.user_id,
                "decision": u.decision,
                "reason": u.reason,
                "detail": u.detail,
            }
            for u in r.users
        ]
    return doc


def _first(names: list[str]) -> str:
    more = f", and {len(names) - FIRST_NAMES} more" if len(names) > FIRST_NAMES else ""
    return ", ".join(names[:FIRST_NAMES]) + more


def text(r: Readiness, *, details: bool) -> str:
    group, sku = r.group_name or r.group_id, r.sku_name or r.sku_id
    lines = [f"{group} ({r.group_id}) / {sku}: license processing {r.processing_state or 'unknown'}"]
    if r.seats_enabled is not None and r.seats_consumed is not None:
        short = f"; {r.seat_shortage} SHORT" if r.seat_shortage else ""
        lines.append(
            f"seats: {r.seats_enabled} enabled, {r.seats_consumed} consumed, "
            f"{r.seats_enabled - r.seats_consumed} available; {r.seats_needed} needed by members without it{short}"
        )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.by_reason.items(), key=lambda kv: -kv[1]))
    lines.append(f"members: {r.members}; the rule decides now: {reasons or 'nothing to decide'}")
    for code, users in r.errors.items():
        lines.append(f"license error {code}: {len(users)} member(s) ({_first(users)}): {ERROR_FIXES.get(code, '')}")
    if r.nested_only:
        lines.append(
            f"only in a nested group: {len(r.nested_only)} user(s) ({_first(r.nested_only)}): group licensing does "
            f"not reach them; make them direct members of {group}"
        )
    if r.outside_direct:
        lines.append(
            f"hold {sku} directly but are not members: {len(r.outside_direct)} ({_first(r.outside_direct)}): "
            f"a wave on {group} leaves them on direct licensing"
        )
    for plan, unlocked in r.plan_unlocks:
        lines.append(f"enable {plan} on {group} and {unlocked} more user(s) can be migrated")
    if details and r.users:
        lines.append(
            table(
                ["user", "decision", "reason", "detail"],
                [[u.user_principal_name, u.decision, u.reason, u.detail] for u in r.users],
            )
        )
    lines.append(("READY" if r.ready else "NOT READY") + f" - next step: {r.next_step()}")
    return "\n".join(lines)
