"""The Graph adapter: the only module that talks to Microsoft Graph (msgraph-sdk, async).

Every call goes through msgraph-sdk's request builders and its middleware (retry, redirect,
telemetry), but with the native response handler: Graph's JSON is parsed straight into licshift's
small types, so the SDK's typed models (1-2 s and ~30 MB on first use, see bench/coldstart.py) are
never loaded. msgraph, httpx and azure-identity are imported only when an adapter is created, so
importing this module (every function's cold start does) stays cheap.

With the native handler the SDK no longer raises for 4xx/5xx: `error_from_response` maps Graph's
answers to the typed errors of `licshift.ports.graph`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import urlsplit

from licshift.ports.graph import (
    AssignedLicense,
    GraphError,
    GraphRequestError,
    GroupLicenseInfo,
    InheritedOnly,
    NotAssigned,
    NotFound,
    SkuSubscription,
    Throttled,
    TransientGraphError,
    UserLicenses,
)
from licshift.rules.licenses import DirectAssignment, InvalidId, LicenseAssignmentState, Sku, guid, is_guid

if TYPE_CHECKING:
    from types import TracebackType

    import httpx
    from azure.core.credentials_async import AsyncTokenCredential
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
        AssignLicensePostRequestBody,
    )
    from msgraph.graph_service_client import GraphServiceClient

    from licshift.settings import Settings

USER_FIELDS = ("id", "userPrincipalName", "displayName", "licenseAssignmentStates")
GROUP_FIELDS = ("id", "displayName", "licenseProcessingState", "assignedLicenses")
SKU_FIELDS = ("skuId", "skuPartNumber", "servicePlans")
SEAT_FIELDS = (*SKU_FIELDS, "prepaidUnits", "consumedUnits", "capabilityStatus")
PAGE_SIZE = 999
"""Graph's maximum page size for group members; fewer round trips and RUs per member."""

DEFAULT_RETRY_AFTER = 10.0
"""Seconds to wait after a 429 that carries no (readable) Retry-After header."""
MIN_RETRY_AFTER = 1.0
"""Throttled requests still count against the quota, so never suggest an immediate retry."""

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# The application permissions infra/ grants (main.bicep graphAppRoles); named in every 403 hint.
GRAPH_PERMISSIONS = (
    "LicenseAssignment.ReadWrite.All, LicenseAssignment.Read.All, User.Read.All and GroupMember.Read.All"
)

_USER_ODATA_TYPE = "#microsoft.graph.user"
_GROUP_ODATA_TYPE = "#microsoft.graph.group"

# What a user principal name may look like when it is put into a URL path. Deliberately stricter
# than Entra ID (no quotes, slashes, spaces, '?', '#', '%', '$', '&', control characters): anything
# else could change the path or the OData meaning of the request. Guests (…#EXT#@…) go by object id.
_UPN = re.compile(
    r"[A-Za-z0-9._+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_UPN_MAX = 113  # Entra ID's limit for userPrincipalName


def user_key(value: object) -> str:
    """A user reference safe to put in a Graph URL: a lower-case object id, or a strictly shaped UPN.

    Raises InvalidId (a ValueError) with a message that says what to pass instead.
    """
    if is_guid(value):
        return guid(value, "user id")
    if isinstance(value, str) and len(value) <= _UPN_MAX and _UPN.fullmatch(value):
        return value
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise InvalidId(
        f"user must be an object id (GUID) or a user principal name like ada@contoso.com, got {shown}; "
        "for guests (#EXT#) and names with quotes, spaces or other special characters use the object id"
    )


def check_endpoint(endpoint: str, *, anonymous: bool) -> str:
    """The Graph base URL without a trailing slash; https, or http on loopback only.

    A trailing slash would make the SDK build `/v1.0//users/...` (httpx keeps the slash).
    """
    cleaned = endpoint.strip().rstrip("/")
    parts = urlsplit(cleaned)
    host = parts.hostname or ""
    loopback = host in LOOPBACK_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"Graph endpoint {endpoint!r}: use https (plain http only for localhost/127.0.0.1)")
    if anonymous and not loopback:
        raise ValueError(
            f"Graph endpoint {endpoint!r} needs a credential; only a loopback endpoint (the simulator) "
            "may be called without one"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"Graph endpoint {endpoint!r} must not carry a query or fragment")
    return cleaned


def retry_after_seconds(value: str | None, *, now: dt.datetime | None = None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), at least MIN_RETRY_AFTER.

    Absent or unreadable: DEFAULT_RETRY_AFTER (Graph says to back off; guessing short hurts more).
    """
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or inf from a hostile header
        return DEFAULT_RETRY_AFTER
    return max(MIN_RETRY_AFTER, seconds)


def _graph_error_body(body: bytes) -> tuple[str, str]:
    """(code, message) from Graph's `{"error": {"code", "message"}}`, or ("", a short text excerpt)."""
    try:
        payload = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        return str(error.get("code") or ""), str(error.get("message") or "")
    text = body[:200].decode("utf-8", "replace").strip()
    return "", text


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, *, what: str) -> GraphError:
    """Map a failed Graph answer (after the SDK's retries) to licshift's typed errors.

    `what` names the operation and its ids for the admin's log, e.g. "remove SKU … from user …".
    503 with a Retry-After header is Graph saying "come back then" (maintenance, overload): treated
    like 429, so the scheduler slows down instead of counting a failure. Any other 5xx is transient.
    """
    code, message = _graph_error_body(body)
    said = f"Graph answered {status}{' ' + code if code else ''}" + (f": {message}" if message else "")
    lowered = message.lower()
    retry_after = headers.get("retry-after")
    if status == 429 or (status == 503 and retry_after is not None):
        wait = retry_after_seconds(retry_after)
        return Throttled(
            f"{what}: throttled by Graph, retry in {wait:.0f} s ({said})", retry_after=wait, status=status, code=code
        )
    if status >= 500:
        return TransientGraphError(
            f"{what}: Graph is unavailable after retries ({said}); it will be tried again later",
            status=status,
            code=code,
        )
    if status == 400 and "inherited from a group membership" in lowered:
        return InheritedOnly(
            f"{what}: the license is only inherited from a group, there is no direct assignment to remove ({said})",
            status=status,
            code=code,
        )
    if status == 400 and "does not have a corresponding license" in lowered:
        return NotAssigned(
            f"{what}: the user has no direct assignment of this SKU (already removed?) ({said})",
            status=status,
            code=code,
        )
    if status == 404:
        return NotFound(
            f"{what}: not found in the tenant ({said}); check the id, the object may have been deleted",
            status=status,
            code=code,
        )
    if status == 401:
        hint = "Graph refused the credential; check the managed identity (or `az login` for the CLI)"
        return GraphRequestError(f"{what}: {hint} ({said})", status=status, code=code)
    if status == 403:
        hint = f"the identity lacks a Graph permission; grant {GRAPH_PERMISSIONS} with admin consent"
        return GraphRequestError(f"{what}: {hint} ({said})", status=status, code=code)
    return GraphRequestError(f"{what}: Graph refused the request ({said})", status=status, code=code)


@dataclass(slots=True)
class GraphCounters:
    """Logical Graph calls (a page is one read; the SDK's internal retries are not counted)."""

    reads: int = 0
    writes: int = 0
    throttled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Collection(Protocol):
    """A msgraph collection request builder: GET a page, or GET a nextLink verbatim."""

    async def get(self, request_configuration: Any = None) -> Any: ...

    def with_url(self, raw_url: str) -> Any: ...


def _unexpected(what: str, detail: str) -> GraphRequestError:
    return GraphRequestError(f"{what}: unexpected answer from Graph: {detail}", code="UnexpectedResponse")


def _user_licenses(item: Mapping[str, Any], what: str) -> UserLicenses:
    if "licenseAssignmentStates" not in item:
        # Graph omits it when $select is ignored, and returns only id + @odata.type for members the
        # app may not read: reading that as "no licenses" would hide a permission problem.
        raise _unexpected(
            what,
            f"user {item.get('id')!r} came back without licenseAssignmentStates; "
            f"check that the identity has {GRAPH_PERMISSIONS}",
        )
    try:
        return UserLicenses(
            user_id=guid(item.get("id"), "user id"),
            user_principal_name=str(item.get("userPrincipalName") or ""),
            display_name=str(item.get("displayName") or ""),
            states=tuple(LicenseAssignmentState.from_graph(s) for s in item["licenseAssignmentStates"] or ()),
        )
    except (InvalidId, KeyError, TypeError, AttributeError) as exc:
        raise _unexpected(what, f"malformed user {item.get('id')!r}: {exc}") from None


def _group_info(payload: Mapping[str, Any], what: str) -> GroupLicenseInfo:
    if "assignedLicenses" not in payload:
        raise _unexpected(what, "group came back without assignedLicenses ($select ignored?)")
    state = payload.get("licenseProcessingState")
    # Documented as a string; the wire shape is {"state": "..."}. Accept both.
    if isinstance(state, Mapping):
        state = state.get("state")
    try:
        assigned = tuple(
            AssignedLicense(
                sku_id=guid(a["skuId"], "skuId"),
                disabled_plans=frozenset(guid(p, "disabledPlans") for p in a.get("disabledPlans") or ()),
            )
            for a in payload["assignedLicenses"] or ()
        )
        return GroupLicenseInfo(
            group_id=guid(payload.get("id"), "group id"),
            display_name=str(payload.get("displayName") or ""),
            processing_state=str(state) if state else None,
            assigned_licenses=assigned,
        )
    except (InvalidId, KeyError, TypeError, AttributeError) as exc:
        raise _unexpected(what, f"malformed group: {exc}") from None


class GraphAdapter:
    """licshift's LicenseGraph over msgraph-sdk. Build with `create` or `from_settings`; `aclose` it.

    Reads keep the SDK's RetryHandler (429/503/504, honours Retry-After, up to 3 retries, gives up at
    once when Retry-After >= 180 s). Writes (assignLicense) are never retried inside the adapter; the
    comment above `_native` says why.
    """

    def __init__(
        self,
        client: GraphServiceClient,
        http: httpx.AsyncClient,
        credential: AsyncTokenCredential | None,
        endpoint: str,
    ) -> None:
        self._client = client
        self._http = http
        self._credential = credential
        self._closed = False
        self.endpoint = endpoint
        self.counters = GraphCounters()
        self._usage = 0.0

    @classmethod
    def create(
        cls,
        endpoint: str,
        *,
        credential: AsyncTokenCredential | None,
        max_read_retries: int = 3,
        retry_delay: float = 3.0,
        timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> GraphAdapter:
        """An adapter for `endpoint` (e.g. https://graph.microsoft.com/v1.0 or the simulator's URL).

        `credential` None = anonymous, allowed only for loopback. The adapter owns the credential and
        closes it in `aclose`. `max_read_retries`/`retry_delay` tune the SDK's RetryHandler for reads
        (retry_delay is its base delay, added to the exponential backoff when there is no Retry-After).
        `http_client` replaces the default httpx client (proxies, event hooks); the SDK's middleware is
        added to it, `timeout` is then ignored, and the adapter closes it too.
        """
        base_url = check_endpoint(endpoint, anonymous=credential is None)
        import httpx
        from kiota_abstractions.authentication import AnonymousAuthenticationProvider, AuthenticationProvider
        from kiota_http.middleware.options import RetryHandlerOption
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_service_client import GraphServiceClient
        from msgraph_core import GraphClientFactory

        auth: AuthenticationProvider
        if credential is None:
            auth = AnonymousAuthenticationProvider()
        else:
            from kiota_authentication_azure.azure_identity_authentication_provider import (
                AzureIdentityAuthenticationProvider,
            )

            host = urlsplit(base_url).hostname or ""
            # Tokens go to this host only; the scope follows the endpoint (national clouds).
            auth = AzureIdentityAuthenticationProvider(
                credential, scopes=[f"https://{host}/.default"], allowed_hosts=[host]
            )
        retry = RetryHandlerOption(delay=retry_delay, max_retries=max_read_retries)
        if http_client is None:
            http_client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        # Without the factory a custom httpx client would have no middleware at all (no RetryHandler).
        http = GraphClientFactory.create_with_default_middleware(
            client=http_client, options={RetryHandlerOption.get_key(): retry}
        )
        request_adapter = GraphRequestAdapter(auth, client=http)
        request_adapter.base_url = base_url
        return cls(GraphServiceClient(request_adapter=request_adapter), http, credential, base_url)

    @classmethod
    def from_settings(cls, settings: Settings, *, interactive: bool = False) -> GraphAdapter:
        """Loopback endpoint: no credential. Otherwise the Function App's managed identity
        (AZURE_CLIENT_ID picks a user-assigned one) or, for the admin CLI (`interactive`),
        DefaultAzureCredential (az login, environment, ...)."""
        # Validate first, so that a bad endpoint never leaves a credential behind unclosed.
        check_endpoint(settings.graph_endpoint, anonymous=settings.graph_is_loopback)
        credential: AsyncTokenCredential | None
        if settings.graph_is_loopback:
            credential = None
        elif interactive:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
        else:
            from azure.identity.aio import ManagedIdentityCredential

            credential = ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
        return cls.create(settings.graph_endpoint, credential=credential)

    @property
    def credential(self) -> AsyncTokenCredential | None:
        """The credential the adapter owns (None on loopback)."""
        return self._credential

    @property
    def base_url(self) -> str:
        """The request adapter's base URL (no trailing slash)."""
        return str(self._client.request_adapter.base_url)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._http.aclose()
        finally:
            if self._credential is not None:
                await self._credential.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- reads -------------------------------------------------------------------------------

    async def group_license_info(self, group_id: str) -> GroupLicenseInfo:
        gid = guid(group_id, "group id")
        what = f"read licenses of group {gid}"
        builder = self._client.groups.by_group_id(gid)
        query = builder.GroupItemRequestBuilderGetQueryParameters(select=list(GROUP_FIELDS))
        payload = await self._read(what, builder.get(_native(query)))
        return _group_info(payload, what)

    def group_members(self, group_id: str) -> AsyncIterator[UserLicenses]:
        """Direct user members (the cast skips nested groups, devices, contacts), one page in memory."""
        gid = guid(group_id, "group id")
        return self._members(gid)

    async def _members(self, gid: str) -> AsyncIterator[UserLicenses]:
        what = f"list members of group {gid}"
        builder = self._client.groups.by_group_id(gid).members.graph_user
        # Graph documents the OData cast on /members as an advanced query: ConsistencyLevel: eventual and
        # $count=true. The index behind it may lag a just-added member by a little; such a member is
        # simply not in this scan, which only delays them to a later wave.
        query = builder.GraphUserRequestBuilderGetQueryParameters(select=list(USER_FIELDS), top=PAGE_SIZE, count=True)
        async for item in self._pages(what, builder, query, ADVANCED_QUERY):
            odata_type = item.get("@odata.type")
            if odata_type is not None and odata_type != _USER_ODATA_TYPE:
                continue
            yield _user_licenses(item, what)

    async def user_licenses(self, user_id: str) -> UserLicenses:
        """By object id or UPN (see `user_key`)."""
        key = user_key(user_id)
        what = f"read licenses of user {key}"
        builder = self._client.users.by_user_id(key)
        query = builder.UserItemRequestBuilderGetQueryParameters(select=list(USER_FIELDS))
        payload = await self._read(what, builder.get(_native(query)))
        return _user_licenses(payload, what)

    async def subscribed_skus(self) -> tuple[Sku, ...]:
        what = "read the tenant's subscribed SKUs"
        builder = self._client.subscribed_skus
        query = builder.SubscribedSkusRequestBuilderGetQueryParameters(select=list(SKU_FIELDS))
        skus: list[Sku] = []
        async for item in self._pages(what, builder, query):
            try:
                skus.append(Sku.from_graph(item))
            except (InvalidId, KeyError, TypeError, AttributeError) as exc:
                raise _unexpected(what, f"malformed subscribedSku {item.get('skuId')!r}: {exc}") from None
        return tuple(skus)

    def members_with_license_errors(self, group_id: str) -> AsyncIterator[str]:
        gid = guid(group_id, "group id")
        return self._members_with_errors(gid)

    async def _members_with_errors(self, gid: str) -> AsyncIterator[str]:
        what = f"list members with license errors of group {gid}"
        builder = self._client.groups.by_group_id(gid).members_with_license_errors
        query = builder.MembersWithLicenseErrorsRequestBuilderGetQueryParameters(select=["id"])
        async for item in self._pages(what, builder, query):
            try:
                yield guid(item.get("id"), "member id")
            except InvalidId as exc:
                raise _unexpected(what, str(exc)) from None

    def nested_groups(self, group_id: str) -> AsyncIterator[str]:
        """Ids of the groups that are members of the group: group-based licensing does not reach
        their members (the readiness check names them)."""
        gid = guid(group_id, "group id")
        return self._nested_groups(gid)

    async def _nested_groups(self, gid: str) -> AsyncIterator[str]:
        what = f"list the nested groups of group {gid}"
        builder = self._client.groups.by_group_id(gid).members
        query = builder.MembersRequestBuilderGetQueryParameters(select=["id"], top=PAGE_SIZE)
        async for item in self._pages(what, builder, query):
            if item.get("@odata.type") == _GROUP_ODATA_TYPE:
                try:
                    yield guid(item.get("id"), "nested group id")
                except InvalidId as exc:
                    raise _unexpected(what, str(exc)) from None

    def sku_holders(self, sku_id: str) -> AsyncIterator[UserLicenses]:
        """Users holding the SKU from any source, with their licenseAssignmentStates (read-only)."""
        sku = guid(sku_id, "skuId")
        return self._sku_holders(sku)

    async def _sku_holders(self, sku: str) -> AsyncIterator[UserLicenses]:
        what = f"list the users holding SKU {sku}"
        builder = self._client.users
        query = builder.UsersRequestBuilderGetQueryParameters(
            filter=f"assignedLicenses/any(x:x/skuId eq {sku})", select=list(USER_FIELDS), top=PAGE_SIZE
        )
        async for item in self._pages(what, builder, query):
            yield _user_licenses(item, what)

    # -- reads for the admin CLI (names and inventory; the function app never calls these) ----

    async def sku_subscriptions(self) -> tuple[SkuSubscription, ...]:
        what = "read the tenant's subscribed SKUs and seats"
        builder = self._client.subscribed_skus
        query = builder.SubscribedSkusRequestBuilderGetQueryParameters(select=list(SEAT_FIELDS))
        found: list[SkuSubscription] = []
        async for item in self._pages(what, builder, query):
            try:
                prepaid = item.get("prepaidUnits") or {}
                found.append(
                    SkuSubscription(
                        sku=Sku.from_graph(item),
                        enabled=int(prepaid.get("enabled") or 0),
                        consumed=int(item.get("consumedUnits") or 0),
                        capability_status=str(item.get("capabilityStatus") or ""),
                    )
                )
            except (InvalidId, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _unexpected(what, f"malformed subscribedSku {item.get('skuId')!r}: {exc}") from None
        return tuple(found)

    async def groups_named(self, display_name: str) -> tuple[GroupLicenseInfo, ...]:
        """Groups whose displayName is exactly `display_name` (Graph compares case-insensitively)."""
        quoted = display_name.replace("'", "''")
        return await self._groups(f"list groups named {display_name!r}", f"displayName eq '{quoted}'")

    async def groups_assigning(self, sku_id: str) -> tuple[GroupLicenseInfo, ...]:
        """Groups that assign the SKU (group-based licensing)."""
        sku = guid(sku_id, "skuId")
        return await self._groups(f"list groups assigning {sku}", f"assignedLicenses/any(x:x/skuId eq {sku})")

    async def _groups(self, what: str, odata_filter: str) -> tuple[GroupLicenseInfo, ...]:
        builder = self._client.groups
        query = builder.GroupsRequestBuilderGetQueryParameters(select=list(GROUP_FIELDS), filter=odata_filter)
        return tuple([_group_info(item, what) async for item in self._pages(what, builder, query)])

    async def user_member_count(self, group_id: str) -> int:
        """Direct user members of a group: `@odata.count` of a one-item page (an advanced query)."""
        gid = guid(group_id, "group id")
        what = f"count members of group {gid}"
        builder = self._client.groups.by_group_id(gid).members.graph_user
        query = builder.GraphUserRequestBuilderGetQueryParameters(select=["id"], top=1, count=True)
        page = await self._read(what, builder.get(_native(query, headers=ADVANCED_QUERY)))
        count = page.get("@odata.count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise _unexpected(what, "no @odata.count on the first page")
        return count

    # -- writes ------------------------------------------------------------------------------

    async def remove_direct(self, user_id: str, sku_id: str) -> None:
        """assignLicense {addLicenses: [], removeLicenses: [sku]}: Graph rejects a body without addLicenses."""
        uid = guid(user_id, "user id")
        sku = guid(sku_id, "skuId")
        import uuid

        from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
            AssignLicensePostRequestBody,
        )

        body = AssignLicensePostRequestBody(add_licenses=[], remove_licenses=[uuid.UUID(sku)])
        await self._write(f"remove direct SKU {sku} from user {uid}", uid, body)

    async def restore_direct(self, user_id: str, assignment: DirectAssignment) -> None:
        """assignLicense adding back exactly the recorded assignment (skuId + disabledPlans)."""
        uid = guid(user_id, "user id")
        sku = guid(assignment.sku_id, "skuId")
        disabled = sorted(guid(p, "disabledPlans") for p in assignment.disabled_plans)
        import uuid

        from msgraph.generated.models.assigned_license import AssignedLicense as GraphAssignedLicense
        from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
            AssignLicensePostRequestBody,
        )

        add = GraphAssignedLicense(sku_id=uuid.UUID(sku), disabled_plans=[uuid.UUID(p) for p in disabled])
        body = AssignLicensePostRequestBody(add_licenses=[add], remove_licenses=[])
        await self._write(f"restore direct SKU {sku} to user {uid}", uid, body)

    async def reprocess_license_assignment(self, user_id: str) -> None:
        """POST /users/{id}/reprocessLicenseAssignment (no body; 200 with the user, not read)."""
        uid = guid(user_id, "user id")
        self.counters.writes += 1
        builder = self._client.users.by_user_id(uid).reprocess_license_assignment
        what = f"reprocess license assignments of user {uid}"
        await self._send(what, builder.post(_native(None, write=True)), write=True)

    # -- plumbing ----------------------------------------------------------------------------

    async def _write(self, what: str, uid: str, body: AssignLicensePostRequestBody) -> None:
        self.counters.writes += 1
        builder = self._client.users.by_user_id(uid).assign_license
        await self._send(what, builder.post(body, _native(None, write=True)), write=True)

    async def _read(self, what: str, call: Awaitable[object]) -> Mapping[str, Any]:
        self.counters.reads += 1
        return await self._send(what, call, write=False)

    async def _pages(
        self, what: str, builder: _Collection, query: object, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Items of a collection, following @odata.nextLink verbatim; only one page is held at a time.
        `headers` go on every page: Graph does not carry them over to next-page requests itself."""
        page = await self._read(what, builder.get(_native(query, headers=headers)))
        while True:
            for item in _page_items(page, what):
                yield item
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            self._check_next_link(str(next_link), what)
            # The nextLink carries the query ($select, $top, $skiptoken): no query parameters again.
            page = await self._read(what, builder.with_url(str(next_link)).get(_native(None, headers=headers)))

    def take_usage(self) -> float:
        usage, self._usage = self._usage, 0.0
        return usage

    def _note_usage(self, header: str | None) -> None:
        if not header:
            return
        try:
            self._usage = max(self._usage, float(header))
        except ValueError:
            return

    def _check_next_link(self, link: str, what: str) -> None:
        # Never follow a link off the Graph endpoint: with a credential it would carry a token there.
        ours, theirs = urlsplit(self.endpoint), urlsplit(link)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise _unexpected(what, f"@odata.nextLink {link[:120]!r} leaves {ours.scheme}://{ours.netloc}")

    async def _send(self, what: str, call: Awaitable[object], *, write: bool) -> Mapping[str, Any]:
        import httpx

        try:
            response = await call
        except httpx.TransportError as exc:
            maybe = " (the write may or may not have been applied: re-read before acting)" if write else ""
            raise TransientGraphError(
                f"{what}: connection to Graph failed ({type(exc).__name__}: {exc or 'no detail'}){maybe}; "
                "it will be tried again later"
            ) from exc
        if not isinstance(response, httpx.Response):
            raise _unexpected(what, f"the SDK returned {type(response).__name__}, not a response")
        self._note_usage(response.headers.get("x-ms-throttle-limit-percentage"))
        if response.status_code >= 400:
            error = error_from_response(response.status_code, response.headers, response.content, what=what)
            if isinstance(error, Throttled):
                self.counters.throttled += 1
            raise error
        if not response.content:
            return {}
        try:
            payload = response.json()
        except ValueError:
            raise _unexpected(what, f"{response.status_code} with a body that is not JSON") from None
        if not isinstance(payload, dict):
            raise _unexpected(what, f"a JSON {type(payload).__name__} instead of an object")
        return payload


def _page_items(page: Mapping[str, Any], what: str) -> Iterator[Mapping[str, Any]]:
    value = page.get("value")
    if not isinstance(value, list):
        raise _unexpected(what, "a collection page without a 'value' list")
    for item in value:
        if not isinstance(item, dict):
            raise _unexpected(what, f"a collection item that is a {type(item).__name__}")
        yield item


# Writes are not retried by the SDK (should_retry=False), for three reasons:
# - 429: the worker must not hot-retry. Throttled goes back to the worker, which re-schedules the
#   message with Retry-After and reports it, so the one scheduler lowers the write rate (docs/graph.md §2).
# - 503/504 and dropped connections: a hot retry of assignLicense would act on a read that is
#   seconds old, while S1 wants a fresh read right before every removal. The worker's next attempt
#   re-reads and decides again, so the same outcome is reached without a blind replay.
# - A replayed removal whose first attempt succeeded is refused: InheritedOnly when the user still
#   inherits the SKU (licshift's normal case), NotAssigned when no source is left. The remover copes
#   (it re-reads), but not replaying avoids the ambiguity. A replayed restore would be harmless.


ADVANCED_QUERY = {"ConsistencyLevel": "eventual"}


def _native(
    query: object | None, *, write: bool = False, headers: Mapping[str, str] | None = None
) -> RequestConfiguration[Any]:
    """Request configuration that returns the raw httpx.Response (no typed-model deserialization)."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_abstractions.native_response_handler import NativeResponseHandler
    from kiota_abstractions.request_option import RequestOption
    from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption

    options: list[RequestOption] = [ResponseHandlerOption(NativeResponseHandler())]
    if write:
        options.append(RetryHandlerOption(delay=0.0, max_retries=0, should_retry=False))
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query, options=options)
    for name, value in (headers or {}).items():
        config.headers.add(name, value)
    return config
