"""JSON shapes of users, groups and subscribedSkus as Graph v1.0 returns them.

Without $select Graph returns a default property set; licenseAssignmentStates, assignedLicenses,
assignedPlans, usageLocation, licenseProcessingState (wire shape {"state": ...}) and friends come
only when selected (docs/graph.md §1). hasMembersWithLicenseErrors is filterable but never returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphsim.licensing import ACTIVE, DirectLicense, InheritedLicense
from graphsim.tenant import Group, Tenant, User

USER_TYPE = "microsoft.graph.user"
GROUP_TYPE = "microsoft.graph.group"

USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
USER_EXTRA = (
    "accountEnabled",
    "assignedLicenses",
    "assignedPlans",
    "licenseAssignmentStates",
    "usageLocation",
    "department",
    "companyName",
    "country",
    "city",
    "createdDateTime",
    "employeeId",
    "mailNickname",
    "userType",
    "onPremisesSyncEnabled",
    "proxyAddresses",
    "otherMails",
)
USER_SELECTABLE = {name.lower(): name for name in USER_DEFAULT + USER_EXTRA}
USER_FILTERABLE = frozenset(
    {
        "id",
        "userPrincipalName",
        "displayName",
        "mail",
        "department",
        "usageLocation",
        "accountEnabled",
        "assignedLicenses",
    }
)

GROUP_DEFAULT = (
    "id",
    "deletedDateTime",
    "classification",
    "createdDateTime",
    "creationOptions",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "securityIdentifier",
    "theme",
    "visibility",
    "onPremisesProvisioningErrors",
    "serviceProvisioningErrors",
)
GROUP_EXTRA = ("assignedLicenses", "licenseProcessingState", "hasMembersWithLicenseErrors")
GROUP_SELECTABLE = {name.lower(): name for name in GROUP_DEFAULT + GROUP_EXTRA}
GROUP_FILTERABLE = frozenset(
    {"id", "displayName", "mailNickname", "securityEnabled", "hasMembersWithLicenseErrors", "assignedLicenses"}
)


class Renderer:
    """Builds Graph JSON objects; caches the rendering of shared assignment entries (100k users
    with the same few entries render them once)."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._entries: dict[object, dict[str, Any]] = {}
        self._user_props: dict[str, Callable[[User], Any]] = {
            "businessPhones": lambda u: [],
            "displayName": lambda u: u.display_name,
            "givenName": lambda u: u.given_name,
            "jobTitle": lambda u: u.job_title,
            "mail": lambda u: u.mail,
            "mobilePhone": lambda u: None,
            "officeLocation": lambda u: None,
            "preferredLanguage": lambda u: None,
            "surname": lambda u: u.surname,
            "userPrincipalName": lambda u: u.upn,
            "id": lambda u: u.id,
            "accountEnabled": lambda u: u.account_enabled,
            "assignedLicenses": self._assigned_licenses,
            "assignedPlans": self._assigned_plans,
            "licenseAssignmentStates": self.license_states,
            "usageLocation": lambda u: u.usage_location,
            "department": lambda u: u.department,
            "companyName": lambda u: None,
            "country": lambda u: None,
            "city": lambda u: None,
            "createdDateTime": lambda u: self.tenant.clock.iso(0.0),
            "employeeId": lambda u: None,
            "mailNickname": lambda u: u.upn.split("@", 1)[0],
            "userType": lambda u: "Member",
            "onPremisesSyncEnabled": lambda u: None,
            "proxyAddresses": lambda u: [f"SMTP:{u.mail}"] if u.mail else [],
            "otherMails": lambda u: [],
        }

    # ------------------------------------------------------------------------------ users
    def user(self, user: User, select: tuple[str, ...] | None, *, odata_type: bool = False) -> dict[str, Any]:
        props = self._user_props
        out: dict[str, Any] = {"@odata.type": "#" + USER_TYPE} if odata_type else {}
        for name in select or USER_DEFAULT:
            out[name] = props[name](user)
        if select and "id" not in out:
            out["id"] = user.id
        return out

    def license_states(self, user: User) -> list[dict[str, Any]]:
        cache = self._entries
        if len(cache) > 500_000:
            cache.clear()
        out = []
        entries: tuple[DirectLicense | InheritedLicense, ...] = (*user.direct, *user.inherited)
        for entry in entries:
            rendered = cache.get(entry)
            if rendered is None:
                rendered = cache[entry] = self._entry(entry)
            out.append(rendered)
        return out

    def _entry(self, entry: DirectLicense | InheritedLicense) -> dict[str, Any]:
        iso = self.tenant.clock.iso(entry.updated_at)
        if isinstance(entry, DirectLicense):
            return {
                "assignedByGroup": None,
                "disabledPlans": sorted(entry.disabled),
                "error": "None",
                "lastUpdatedDateTime": iso,
                "skuId": entry.sku_id,
                "state": ACTIVE,
            }
        return {
            "assignedByGroup": entry.group_id,
            "disabledPlans": sorted(entry.disabled),
            "error": entry.error or "None",
            "lastUpdatedDateTime": iso,
            "skuId": entry.sku_id,
            "state": entry.state,
        }

    def _assigned_licenses(self, user: User) -> list[dict[str, Any]]:
        eff = self.tenant.effective(user)
        out = []
        for sku_id, enabled in eff.items():
            sku = self.tenant.skus[sku_id]
            out.append({"disabledPlans": sorted(sku.plan_ids - enabled), "skuId": sku_id})
        return out

    def _assigned_plans(self, user: User) -> list[dict[str, Any]]:
        eff = self.tenant.effective(user)
        seen: set[str] = set()
        out = []
        when = self.tenant.clock.iso(0.0)
        for sku_id, enabled in eff.items():
            for plan in self.tenant.skus[sku_id].plans:
                if plan.plan_id in enabled and plan.plan_id not in seen:
                    seen.add(plan.plan_id)
                    out.append(
                        {
                            "assignedDateTime": when,
                            "capabilityStatus": "Enabled",
                            "service": plan.service,
                            "servicePlanId": plan.plan_id,
                        }
                    )
        return out

    # ----------------------------------------------------------------------------- groups
    def group(self, group: Group, select: tuple[str, ...] | None, *, odata_type: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.type": "#" + GROUP_TYPE} if odata_type else {}
        for name in select or GROUP_DEFAULT:
            if name == "hasMembersWithLicenseErrors":
                continue  # filterable only; Graph never returns it
            out[name] = self._group_prop(group, name)
        if select and "id" not in out:
            out["id"] = group.id
        return out

    def _group_prop(self, group: Group, name: str) -> Any:
        tenant = self.tenant
        if name == "id":
            return group.id
        if name == "displayName":
            return group.display_name
        if name == "description":
            return group.description
        if name == "mailNickname":
            return group.mail_nickname
        if name == "securityEnabled":
            return group.security_enabled
        if name == "mailEnabled":
            return group.mail_enabled
        if name == "mail":
            return f"{group.mail_nickname}@{tenant.domain}" if group.mail_enabled else None
        if name == "createdDateTime":
            return tenant.clock.iso(0.0)
        if name == "securityIdentifier":
            return "S-1-12-1-" + "-".join(str(int(group.id.replace("-", "")[i : i + 8], 16)) for i in (0, 8, 16, 24))
        if name in (
            "groupTypes",
            "proxyAddresses",
            "resourceBehaviorOptions",
            "resourceProvisioningOptions",
            "creationOptions",
            "onPremisesProvisioningErrors",
            "serviceProvisioningErrors",
        ):
            return []
        if name == "isAssignableToRole":
            return False
        if name == "assignedLicenses":
            return [{"disabledPlans": sorted(d), "skuId": s} for s, d in group.licenses.items()]
        if name == "licenseProcessingState":
            state = tenant.processing_state(group)
            return None if state is None else {"state": state}
        return None

    # ------------------------------------------------------------------------------- skus
    def subscribed_skus(self) -> list[dict[str, Any]]:
        tenant = self.tenant
        out = []
        for sku in tenant.skus.values():
            out.append(
                {
                    "accountName": tenant.domain.split(".", 1)[0],
                    "accountId": tenant.tenant_id,
                    "appliesTo": sku.applies_to,
                    "capabilityStatus": sku.capability_status,
                    "consumedUnits": tenant.consumed.get(sku.sku_id, 0),
                    "id": f"{tenant.tenant_id}_{sku.sku_id}",
                    "skuId": sku.sku_id,
                    "skuPartNumber": sku.part_number,
                    "subscriptionIds": [],
                    "prepaidUnits": {
                        "enabled": tenant.seats.get(sku.sku_id, 0),
                        "suspended": 0,
                        "warning": 0,
                        "lockedOut": 0,
                    },
                    "servicePlans": [
                        {
                            "servicePlanId": p.plan_id,
                            "servicePlanName": p.name,
                            "provisioningStatus": "Success",
                            "appliesTo": p.applies_to,
                        }
                        for p in sku.plans
                    ],
                }
            )
        return out
