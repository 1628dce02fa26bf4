"""The CLI's read-only view of the tenant: names for GUIDs, `licshift groups` and `licshift skus`.

The CLI reads Graph itself, with the admin's own sign-in (DefaultAzureCredential: `az login`) at
LICSHIFT_GRAPH_ENDPOINT, through the same Graph adapter the function app uses, and never writes to
it (every change still goes through the waves queue and the function app's identity). On the local
stack the endpoint is the simulator on loopback and no credential is used. The README says why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from licshift.cli.exitcodes import EnvironmentProblem, UsageError
from licshift.ports.graph import GraphError, GroupLicenseInfo, NotFound, SkuSubscription, UserLicenses
from licshift.rules.licenses import InvalidId, guid, is_guid
from licshift.settings import Settings

if TYPE_CHECKING:
    from licshift.adapters.graph import GraphAdapter

LOOKUP_CONCURRENCY = 8

# Microsoft's published product names for common part numbers ("Product names and service plan
# identifiers for licensing"); Graph itself returns only the part number.
PRODUCT_NAMES = {
    "ENTERPRISEPACK": "Office 365 E3",
    "ENTERPRISEPREMIUM": "Office 365 E5",
    "STANDARDPACK": "Office 365 E1",
    "SPE_E3": "Microsoft 365 E3",
    "SPE_E5": "Microsoft 365 E5",
    "SPE_F1": "Microsoft 365 F3",
    "SPB": "Microsoft 365 Business Premium",
    "O365_BUSINESS_PREMIUM": "Microsoft 365 Business Standard",
    "O365_BUSINESS_ESSENTIALS": "Microsoft 365 Business Basic",
    "EMS": "Enterprise Mobility + Security E3",
    "EMSPREMIUM": "Enterprise Mobility + Security E5",
    "EXCHANGESTANDARD": "Exchange Online (Plan 1)",
    "EXCHANGEENTERPRISE": "Exchange Online (Plan 2)",
    "MCOMEETADV": "Microsoft 365 Audio Conferencing",
    "MCOEV": "Microsoft Teams Phone Standard",
    "POWER_BI_PRO": "Power BI Pro",
    "FLOW_FREE": "Microsoft Power Automate Free",
    "AAD_PREMIUM": "Microsoft Entra ID P1",
    "AAD_PREMIUM_P2": "Microsoft Entra ID P2",
}

UNREACHABLE = (GraphError, ValueError, OSError)


def graph_problem(exc: BaseException, settings: Settings) -> str:
    """One line on why Graph could not be read, with what to do."""
    text = str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__
    if settings.graph_is_loopback:
        hint = f"is the simulator (or the stand-in at {settings.graph_endpoint}) running?"
    else:
        hint = "sign in with `az login` as an account that can read groups, users and subscribed SKUs"
    return f"cannot read Graph at {settings.graph_endpoint} ({text}); {hint}"


@dataclass
class Directory:
    """Lazily read, cached per command: SKUs (with plan names and seats), group names."""

    graph: GraphAdapter
    settings: Settings
    _skus: tuple[SkuSubscription, ...] | None = None
    _groups: dict[str, GroupLicenseInfo] = field(default_factory=dict)

    async def subscriptions(self) -> tuple[SkuSubscription, ...]:
        if self._skus is None:
            self._skus = await self._call(self.graph.sku_subscriptions())
        return self._skus

    async def group(self, group_id: str) -> GroupLicenseInfo | None:
        if group_id not in self._groups:
            try:
                self._groups[group_id] = await self._call(self.graph.group_license_info(group_id))
            except EnvironmentProblem:
                raise
            except UsageError:
                return None
        return self._groups[group_id]

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except NotFound as exc:
            raise UsageError(str(exc)) from None
        except UNREACHABLE as exc:
            raise EnvironmentProblem(graph_problem(exc, self.settings)) from None
        except Exception as exc:
            from azure.core.exceptions import AzureError

            if isinstance(exc, AzureError):  # no sign-in, token refused
                raise EnvironmentProblem(graph_problem(exc, self.settings)) from None
            raise

    async def resolve_group(self, ref: str) -> str:
        """A group id, or the id of the one group with exactly this display name."""
        if is_guid(ref):
            return guid(ref)
        name = ref.strip()
        if not name:
            raise UsageError("--group is empty: give the group's id or its exact display name")
        found = await self._call(self.graph.groups_named(name))
        exact = [g for g in found if g.display_name == name] or list(found)
        if not exact:
            raise UsageError(f"no group is named {name!r}; list licensed groups with `licshift groups`")
        if len(exact) > 1:
            listed = "; ".join(f"{g.group_id} {g.display_name}" for g in exact[:10])
            raise UsageError(f"{len(exact)} groups are named {name!r} ({listed}); pass the id with --group")
        group: GroupLicenseInfo = exact[0]
        self._groups[group.group_id] = group
        return group.group_id

    async def resolve_users(self, refs: Sequence[str]) -> list[str]:
        """Object ids as given; UPNs looked up (each must exist)."""
        from licshift.adapters.graph import user_key

        ids: list[str] = []
        names: list[str] = []
        for ref in refs:
            try:
                key = user_key(ref.strip())
            except InvalidId as exc:
                raise UsageError(f"--users: {exc}") from None
            (ids if is_guid(key) else names).append(key)
        limit = asyncio.Semaphore(LOOKUP_CONCURRENCY)

        async def lookup(upn: str) -> str:
            async with limit:
                try:
                    found: UserLicenses = await self._call(self.graph.user_licenses(upn))
                    return found.user_id
                except UsageError:
                    raise UsageError(f"--users: no user {upn} in the tenant; check the spelling") from None

        return ids + list(await asyncio.gather(*(lookup(n) for n in names)))

    async def names(self, group_ids: Iterable[str] = ()) -> Names:
        """Names for output; an empty Names (ids only) when Graph cannot be read."""
        try:
            skus = await self.subscriptions()
            groups = {gid: g.display_name for gid in set(group_ids) if (g := await self.group(gid)) is not None}
        except EnvironmentProblem as exc:
            return Names(problem=str(exc))
        return Names.of(skus, groups)


@dataclass(frozen=True)
class Names:
    """Display names next to GUIDs: SKU part numbers, plan names, group names."""

    skus: dict[str, str] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    problem: str = ""

    @staticmethod
    def of(skus: Iterable[SkuSubscription], groups: dict[str, str]) -> Names:
        sku_names = {s.sku.sku_id: s.sku.part_number for s in skus}
        plans = {p.plan_id: p.name for s in skus for p in s.sku.plans}
        return Names(sku_names, plans, groups)

    def sku(self, sku_id: str) -> str:
        return self.skus.get(sku_id, sku_id)

    def group(self, group_id: str) -> str:
        return self.groups.get(group_id, "")

    def plan(self, plan_id: str) -> str:
        return self.plans.get(plan_id, plan_id)


@contextlib.asynccontextmanager
async def open_directory(settings: Settings) -> AsyncIterator[Directory]:
    from licshift.adapters.graph import GraphAdapter

    try:
        adapter = GraphAdapter.from_settings(settings, interactive=True)
    except ValueError as exc:
        raise EnvironmentProblem(graph_problem(exc, settings)) from None
    try:
        yield Directory(adapter, settings)
    finally:
        await adapter.aclose()


async def names_for(settings: Settings, group_ids: Iterable[str] = ()) -> Names:
    """Best-effort names for output, never failing the command (ids are shown without them)."""
    try:
        async with open_directory(settings) as directory:
            return await directory.names(group_ids)
    except EnvironmentProblem as exc:
        return Names(problem=str(exc))


# --- licshift groups / licshift skus ---------------------------------------------------------------


def register(sub: Any) -> None:
    from licshift.cli.parsing import add_command, add_json

    groups = add_command(
        sub,
        "groups",
        help="groups that assign licenses: SKUs, processing state, members, members with license errors",
        examples=["licshift groups", "licshift groups --sku ENTERPRISEPACK", "licshift groups --json"],
    )
    groups.add_argument("--sku", default=None, help="only groups assigning this SKU (part number or skuId)")
    add_json(groups)
    groups.set_defaults(handler=groups_command)
    skus = add_command(
        sub,
        "skus",
        help="the tenant's subscribed SKUs: part number, product, skuId, seats, service plans by name",
        examples=["licshift skus", "licshift skus --json | jq '.skus[] | {part_number, available}'"],
    )
    add_json(skus)
    skus.set_defaults(handler=skus_command)


def _pick_sku(subs: Sequence[SkuSubscription], ref: str) -> SkuSubscription:
    for s in subs:
        if s.sku.sku_id == ref.strip().lower() or s.sku.part_number.lower() == ref.strip().lower():
            return s
    known = ", ".join(sorted(s.sku.part_number or s.sku.sku_id for s in subs)) or "none"
    raise UsageError(f"--sku {ref!r} is not subscribed in this tenant (subscribed: {known}); see `licshift skus`")


@dataclass(frozen=True)
class LicensedGroup:
    group: GroupLicenseInfo
    members: int
    members_with_errors: int


async def licensed_groups(directory: Directory, sku_ref: str | None) -> list[LicensedGroup]:
    subs = await directory.subscriptions()
    wanted = [_pick_sku(subs, sku_ref)] if sku_ref else list(subs)
    found: dict[str, GroupLicenseInfo] = {}
    for s in wanted:
        for g in await directory._call(directory.graph.groups_assigning(s.sku.sku_id)):
            found[g.group_id] = g
    limit = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def detail(g: GroupLicenseInfo) -> LicensedGroup:
        async with limit:
            members: int = await directory._call(directory.graph.user_member_count(g.group_id))
            errors = [m async for m in directory.graph.members_with_license_errors(g.group_id)]
            return LicensedGroup(g, members, len(errors))

    try:
        listed = await asyncio.gather(*(detail(g) for g in found.values()))
    except UNREACHABLE as exc:
        raise EnvironmentProblem(graph_problem(exc, directory.settings)) from None
    return sorted(listed, key=lambda lg: (lg.group.display_name.lower(), lg.group.group_id))


async def groups_command(args: Any, ctx: Any) -> int:
    async with open_directory(ctx.settings()) as directory:
        listed = await licensed_groups(directory, args.sku)
        names = Names.of(await directory.subscriptions(), {})
    payload = {
        "groups": [
            {
                "group_id": lg.group.group_id,
                "display_name": lg.group.display_name,
                "sku_ids": [a.sku_id for a in lg.group.assigned_licenses],
                "skus": [names.sku(a.sku_id) for a in lg.group.assigned_licenses],
                "processing_state": lg.group.processing_state,
                "members": lg.members,
                "members_with_license_errors": lg.members_with_errors,
            }
            for lg in listed
        ]
    }
    from licshift.cli.output import table

    rows = [
        [
            lg.group.display_name,
            lg.group.group_id,
            ",".join(names.sku(a.sku_id) for a in lg.group.assigned_licenses),
            lg.group.processing_state or "unknown",
            lg.members,
            lg.members_with_errors,
        ]
        for lg in listed
    ]
    text = (
        table(["group", "id", "skus", "processing", "members", "errors"], rows, right=["members", "errors"])
        if rows
        else "no group assigns a license yet: assign the SKU to a group first (Microsoft's step 3)"
    )
    ctx.output.data(payload, text)
    return 0


async def skus_command(args: Any, ctx: Any) -> int:
    async with open_directory(ctx.settings()) as directory:
        subs = await directory.subscriptions()
    payload = {
        "skus": [
            {
                "sku_id": s.sku.sku_id,
                "part_number": s.sku.part_number,
                "product_name": PRODUCT_NAMES.get(s.sku.part_number, ""),
                "capability_status": s.capability_status,
                "enabled": s.enabled,
                "consumed": s.consumed,
                "available": s.available,
                "service_plans": [{"id": p.plan_id, "name": p.name} for p in s.sku.plans],
            }
            for s in subs
        ]
    }
    from licshift.cli.output import table

    rows = [
        [
            s.sku.part_number,
            PRODUCT_NAMES.get(s.sku.part_number, ""),
            s.sku.sku_id,
            s.enabled,
            s.consumed,
            s.available,
            len(s.sku.plans),
        ]
        for s in subs
    ]
    lines = [
        table(
            ["sku", "product", "skuId", "enabled", "consumed", "available", "plans"],
            rows,
            right=["enabled", "consumed", "available", "plans"],
        )
    ]
    for s in subs:
        lines.append(f"{s.sku.part_number} plans: {', '.join(p.name or p.plan_id for p in s.sku.plans)}")
    ctx.output.data(payload, "\n".join(lines) if subs else "the tenant subscribes to no SKU")
    return 0
