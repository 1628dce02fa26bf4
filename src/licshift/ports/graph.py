"""The narrow interface the core uses to reach Microsoft Graph, and the errors it can raise.

Pure: importing this module never imports msgraph (cold start). `licshift.adapters.graph.GraphAdapter` is the
production implementation over msgraph-sdk; tests run it against the tenant simulator over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from licshift.rules.licenses import DirectAssignment, LicenseAssignmentState, Sku


@dataclass(frozen=True, slots=True)
class AssignedLicense:
    sku_id: str
    disabled_plans: frozenset[str]


@dataclass(frozen=True, slots=True)
class GroupLicenseInfo:
    group_id: str
    display_name: str
    processing_state: str | None
    """licenseProcessingState.state: QueuedForProcessing, ProcessingInProgress, ProcessingComplete."""
    assigned_licenses: tuple[AssignedLicense, ...]

    def assigns(self, sku_id: str) -> bool:
        return any(a.sku_id == sku_id for a in self.assigned_licenses)


@dataclass(frozen=True, slots=True)
class SkuSubscription:
    """A subscribed SKU with its seats (what `licshift skus` shows the admin)."""

    sku: Sku
    enabled: int
    consumed: int
    capability_status: str

    @property
    def available(self) -> int:
        return self.enabled - self.consumed


@dataclass(frozen=True, slots=True)
class UserLicenses:
    user_id: str
    user_principal_name: str
    states: tuple[LicenseAssignmentState, ...]
    display_name: str = ""


class GraphError(Exception):
    """Base of every Graph failure the adapter maps. `status` is the HTTP status, `code` Graph's."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Throttled(GraphError):
    """429 (or 503 with Retry-After) that the SDK's retries did not absorb. Not a failure: retry later."""

    def __init__(self, message: str, *, retry_after: float, status: int = 429, code: str = "") -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class InheritedOnly(GraphError):
    """400: 'User license is inherited from a group membership and it cannot be removed directly'."""


class NotAssigned(GraphError):
    """400: 'User does not have a corresponding license.' After a retried POST this can mean success."""


class NotFound(GraphError):
    """404 Request_ResourceNotFound: the user or group does not exist (or was deleted)."""


class TransientGraphError(GraphError):
    """5xx or a dropped connection after the SDK's retries: safe to try again later."""


class GraphRequestError(GraphError):
    """Any other 4xx: a request Graph refuses; retrying will not help."""


class LicenseGraph(Protocol):
    """What licshift needs from Graph. Every id passed in is a validated lower-case GUID."""

    async def group_license_info(self, group_id: str) -> GroupLicenseInfo: ...

    def group_members(self, group_id: str) -> AsyncIterator[UserLicenses]:
        """Direct user members with their licenseAssignmentStates, pages of 999, constant memory."""
        ...

    async def user_licenses(self, user_id: str) -> UserLicenses: ...

    async def remove_direct(self, user_id: str, sku_id: str) -> None:
        """assignLicense with addLicenses=[] and removeLicenses=[sku_id]."""
        ...

    async def restore_direct(self, user_id: str, assignment: DirectAssignment) -> None:
        """assignLicense adding back exactly a recorded direct assignment (S2)."""
        ...

    async def reprocess_license_assignment(self, user_id: str) -> None:
        """reprocessLicenseAssignment: Entra evaluates every group-based assignment of the user again
        (clears a CountViolation once seats are free). Never changes a direct assignment."""
        ...

    async def subscribed_skus(self) -> tuple[Sku, ...]: ...

    def members_with_license_errors(self, group_id: str) -> AsyncIterator[str]:
        """Ids of the group's members with license errors from this group."""
        ...

    def take_usage(self) -> float:
        """The highest share of a Graph quota reported in use since the last call (Graph's
        x-ms-throttle-limit-percentage, sent above 0.8 of a limit); 0.0 if none was."""
        ...

    async def aclose(self) -> None: ...
