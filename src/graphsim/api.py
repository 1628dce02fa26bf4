"""The Graph v1.0 subset, independent of the HTTP framework: a request in, Graph's answer out.

Throttling is applied here (each inner request of a $batch is evaluated on its own, as Graph does);
transport-level faults (latency, dropped connections, injected statuses) are the HTTP layer's.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from graphsim import errors, odata
from graphsim.clock import SimClock
from graphsim.counters import Counters
from graphsim.guids import is_guid
from graphsim.odata import AnyLicense, Filter, In, Query
from graphsim.oracle import GRAPH
from graphsim.resources import (
    GROUP_FILTERABLE,
    GROUP_SELECTABLE,
    GROUP_TYPE,
    USER_FILTERABLE,
    USER_SELECTABLE,
    USER_TYPE,
    Renderer,
)
from graphsim.tenant import Group, Tenant, User
from graphsim.throttle import DEFAULT_APP, Admission, Throttle, limit_percentage, request_cost

JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
MAX_BATCH = 20


class CaseInsensitive(dict[str, str]):
    """Header mapping for inner $batch requests (aiohttp's own headers are already case-insensitive)."""

    def __init__(self, items: Mapping[str, str]) -> None:
        super().__init__({k.lower(): str(v) for k, v in items.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(slots=True)
class ApiRequest:
    method: str
    path: str
    """Path after /v1.0, e.g. "/users/abc" (double slashes already collapsed)."""
    params: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes
    origin: str
    """scheme://host:port the client used, for absolute nextLinks."""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(slots=True)
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]
    endpoint: str
    kind: str
    """"read" or "write"."""
    executed: bool = False
    """The request reached the tenant (not throttled, not refused before)."""
    quota: bool = False
    """Throttled by a quota."""


Handler = Callable[["GraphApi", ApiRequest, tuple[str, ...]], tuple[int, Any, dict[str, str]]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str
    base_ru: int
    handler: Handler


def normalize_path(path: str) -> str:
    """Collapse the double slash msgraph-sdk produces (/v1.0//users/x) as Graph accepts it."""
    path = re.sub(r"/{2,}", "/", path)
    return path.rstrip("/") or "/"


def error_body(code: str, message: str, request_id: str, client_request_id: str, date: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": date, "request-id": request_id, "client-request-id": client_request_id},
        }
    }


def app_id(headers: Mapping[str, str]) -> str:
    """The calling app: appid/azp claim of a bearer token if one is sent (never verified), else one
    default app (msgraph-sdk on loopback sends no credential)."""
    auth = headers.get("Authorization") or ""
    if auth.lower().startswith("bearer "):
        parts = auth[7:].strip().split(".")
        if len(parts) >= 2:
            try:
                payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
                claim = payload.get("appid") or payload.get("azp")
                if isinstance(claim, str) and claim:
                    return claim
            except (ValueError, TypeError):
                pass
    return DEFAULT_APP


class GraphApi:
    def __init__(self, tenant: Tenant, throttle: Throttle, counters: Counters, clock: SimClock) -> None:
        self.tenant = tenant
        self.throttle = throttle
        self.counters = counters
        self.clock = clock
        self.render = Renderer(tenant)

    # -------------------------------------------------------------------------- dispatch
    def route(self, method: str, path: str) -> tuple[Route | None, tuple[str, ...], str]:
        """(route, captured ids, endpoint label); route None when nothing matches (label then says why)."""
        other_method = False
        for route in ROUTES:
            match = route.pattern.match(path)
            if match:
                if route.method == method:
                    return route, match.groups(), route.endpoint
                other_method = True
        if other_method:
            return None, (), f"{method} (method not allowed)"
        return None, (), f"{method} (unknown path)"

    def endpoint_of(self, method: str, path: str) -> str:
        return self.route(method, normalize_path(path))[2]

    def handle(self, request: ApiRequest) -> ApiResponse:
        path = normalize_path(request.path)
        method = request.method.upper()
        route, ids, endpoint = self.route(method, path)
        kind = "read" if method == "GET" else "write"
        client_request_id = request.headers.get("client-request-id") or request.request_id
        base_headers = {"request-id": request.request_id, "client-request-id": client_request_id}
        try:
            if route is None:
                if endpoint.endswith("(method not allowed)"):
                    raise errors.GraphFailure(
                        405, errors.BAD_REQUEST, "Specified HTTP method is not allowed for the request target."
                    )
                segment = path.strip("/").split("/")[-1] if path.strip("/") else path
                raise errors.GraphFailure(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
            write = method != "GET"
            admission: Admission | None = None
            if route.base_ru:
                names = {k.lower().lstrip("$").removeprefix("%24") for k, _ in request.params}
                top = next((v for k, v in request.params if k.lower().lstrip("$").removeprefix("%24") == "top"), None)
                cost = request_cost(
                    route.base_ru,
                    select="select" in names,
                    expand="expand" in names,
                    top=int(top) if top is not None and top.strip().isdigit() else None,
                )
                decision = self.throttle.admit(app_id(request.headers), cost, write, self.clock.now())
                base_headers["x-ms-resource-unit"] = str(cost)
                if not isinstance(decision, Admission):
                    retry_after = self.clock.retry_after(decision.wait_seconds)
                    headers = {
                        **base_headers,
                        "Retry-After": str(retry_after),
                        "x-ms-throttle-scope": decision.scope,
                        "x-ms-throttle-information": decision.information,
                    }
                    body = error_body(
                        "TooManyRequests",
                        "Please retry again later.",
                        request.request_id,
                        client_request_id,
                        self._date(),
                    )
                    return ApiResponse(429, body, headers, endpoint, kind, executed=False, quota=True)
                admission = decision
            status, body, headers = route.handler(self, request, ids)
            headers = {**base_headers, **headers}
            if admission is not None:
                percentage = limit_percentage(admission.usage)
                if percentage is not None:
                    headers["x-ms-throttle-limit-percentage"] = percentage
            return ApiResponse(status, body, headers, endpoint, kind, executed=True)
        except errors.GraphFailure as failure:
            body = error_body(failure.code, failure.message, request.request_id, client_request_id, self._date())
            executed = route is not None and failure.status not in (415,)
            return ApiResponse(
                failure.status, body, {**base_headers, **failure.headers}, endpoint, kind, executed=executed
            )

    def _date(self) -> str:
        return self.clock.iso(self.clock.now()).rstrip("Z")

    # --------------------------------------------------------------------------- helpers
    def _user(self, ref: str) -> User:
        user = self.tenant.graph_user(ref)
        if user is None:
            raise errors.not_found(ref)
        return user

    def _group(self, ref: str) -> Group:
        if not is_guid(ref):
            raise errors.invalid_object_id(ref)
        group = self.tenant.groups.get(ref.lower())
        if group is None:
            raise errors.not_found(ref)
        return group

    def _next_link(self, request: ApiRequest, path: str, query: Query, position: int, fingerprint: str) -> str:
        params = [(k, v) for k, v in query.params]
        params.append(("$skiptoken", odata.make_token(position, fingerprint)))
        encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe=',()/:$')}" for k, v in params)
        return f"{request.origin}/v1.0{path}?{encoded}"

    def _page(
        self,
        request: ApiRequest,
        path: str,
        query: Query,
        context: str,
        items: Callable[[int], Iterator[tuple[int, Any]]],
        count: Callable[[], int] | None = None,
    ) -> dict[str, Any]:
        """One page of a collection: `items(start)` yields (position, rendered) for matches."""
        fingerprint = f"{path.lower()}|{query.filter!r}"
        start = odata.read_token(query.skiptoken, fingerprint) if query.skiptoken else 0
        size = query.page_size
        value: list[Any] = []
        next_position: int | None = None
        for position, rendered in items(start):
            if len(value) == size:
                next_position = position
                break
            value.append(rendered)
        body: dict[str, Any] = {"@odata.context": f"{request.origin}/v1.0/$metadata#{context}"}
        if query.count and count is not None and query.skiptoken is None:
            body["@odata.count"] = count()
        if next_position is not None:
            body["@odata.nextLink"] = self._next_link(request, path, query, next_position, fingerprint)
        body["value"] = value
        return body

    def _user_matches(self, user: User, flt: Filter | None) -> bool:
        if flt is None:
            return True
        if isinstance(flt, AnyLicense):
            return flt.sku_id in self.tenant.effective(user)
        if isinstance(flt, In):
            return _user_value(user, flt.prop) in flt.values
        return _equals(_user_value(user, flt.prop), flt.value)

    def _group_matches(self, group: Group, flt: Filter | None) -> bool:
        if flt is None:
            return True
        if isinstance(flt, AnyLicense):
            return flt.sku_id in group.licenses
        if isinstance(flt, In):
            return _group_value(self, group, flt.prop) in flt.values
        return _equals(_group_value(self, group, flt.prop), flt.value)

    def _assign_body(self, request: ApiRequest) -> tuple[list[tuple[str, frozenset[str]]], list[str]]:
        payload = _json_body(request)
        missing = [k for k in ("addLicenses", "removeLicenses") if payload.get(k) is None]
        if missing:
            raise errors.missing_parameters(missing)
        add_raw, remove_raw = payload["addLicenses"], payload["removeLicenses"]
        if not isinstance(add_raw, list) or not isinstance(remove_raw, list):
            raise errors.bad_request("addLicenses and removeLicenses must be collections.")
        add: list[tuple[str, frozenset[str]]] = []
        for item in add_raw:
            if not isinstance(item, dict):
                raise errors.bad_request("Each item of addLicenses must be an assignedLicense object.")
            sku = _guid(item.get("skuId"))
            disabled = item.get("disabledPlans") or []
            if not isinstance(disabled, list):
                raise errors.bad_request("disabledPlans must be a collection of GUIDs.")
            add.append((sku, frozenset(_guid(p) for p in disabled)))
        remove = [_guid(s) for s in remove_raw]
        return add, remove


# ------------------------------------------------------------------------------ handlers
def _json_body(request: ApiRequest) -> dict[str, Any]:
    content_type = (request.headers.get("Content-Type") or "").lower()
    if not content_type.startswith("application/json"):
        shown = content_type or "none"
        raise errors.GraphFailure(
            415, "UnsupportedMediaType", f"Content-Type '{shown}' is not supported: send application/json."
        )
    try:
        payload = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(errors.UNREADABLE_JSON) from exc
    if not isinstance(payload, dict):
        raise errors.bad_request(errors.UNREADABLE_JSON)
    return payload


def _guid(value: object) -> str:
    if not is_guid(value):
        raise errors.bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'.")
    assert isinstance(value, str)
    return value.lower()


def _equals(actual: object, expected: object) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.lower() == expected.lower()
    return actual == expected


def _user_value(user: User, prop: str) -> Any:
    values: dict[str, Any] = {
        "id": user.id,
        "userPrincipalName": user.upn.lower(),
        "displayName": user.display_name,
        "mail": user.mail,
        "department": user.department,
        "usageLocation": user.usage_location,
        "accountEnabled": user.account_enabled,
    }
    return values.get(prop)


def _group_value(api: GraphApi, group: Group, prop: str) -> Any:
    if prop == "hasMembersWithLicenseErrors":
        return any(api.tenant.has_license_error(group, u) for u in api.tenant.user_members(group))
    return {
        "id": group.id,
        "displayName": group.display_name,
        "mailNickname": group.mail_nickname,
        "securityEnabled": group.security_enabled,
    }.get(prop)


def _user_query(request: ApiRequest, collection: bool) -> Query:
    return odata.parse(
        request.params,
        request.headers,
        selectable=USER_SELECTABLE,
        filterable=USER_FILTERABLE,
        type_name=USER_TYPE,
        collection=collection,
    )


def _group_query(request: ApiRequest, collection: bool) -> Query:
    return odata.parse(
        request.params,
        request.headers,
        selectable=GROUP_SELECTABLE,
        filterable=GROUP_FILTERABLE,
        type_name=GROUP_TYPE,
        collection=collection,
    )


def list_users(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    query = _user_query(request, True)
    tenant = api.tenant

    def items(start: int) -> Iterator[tuple[int, Any]]:
        for position, uid in tenant.user_order.scan(start):
            user = tenant.users[uid]
            if api._user_matches(user, query.filter):
                yield position, api.render.user(user, query.select)

    def count() -> int:
        return sum(1 for uid in tenant.user_order if api._user_matches(tenant.users[uid], query.filter))

    return 200, api._page(request, "/users", query, _context("users", query), items, count), {}


def count_users(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    if (request.headers.get("ConsistencyLevel") or "").lower() != "eventual":
        raise errors.bad_request("$count is not currently supported.")
    return 200, str(len(api.tenant.user_order)), {}


def get_user(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    query = _user_query(request, False)
    user = api._user(ids[0])
    body = {"@odata.context": f"{request.origin}/v1.0/$metadata#{_context('users', query)}/$entity"}
    body.update(api.render.user(user, query.select))
    return 200, body, {}


def assign_user_license(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    user = api._user(ids[0])
    add, remove = api._assign_body(request)
    cause = f"{GRAPH}users.assignLicense {user.id} request-id={request.request_id}"
    api.tenant.graph_assign_user(user, add, remove, cause)
    body = {"@odata.context": f"{request.origin}/v1.0/$metadata#users/$entity"}
    body.update(api.render.user(user, None))
    return 200, body, {}


def reprocess_user(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    user = api._user(ids[0])
    if request.body.strip():
        _json_body(request)
    api.tenant.reprocess(user, f"{GRAPH}users.reprocessLicenseAssignment {user.id} request-id={request.request_id}")
    body = {"@odata.context": f"{request.origin}/v1.0/$metadata#users/$entity"}
    body.update(api.render.user(user, None))
    return 200, body, {}


def list_groups(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    query = _group_query(request, True)
    tenant = api.tenant

    def items(start: int) -> Iterator[tuple[int, Any]]:
        for position, gid in tenant.group_order.scan(start):
            group = tenant.groups[gid]
            if api._group_matches(group, query.filter):
                yield position, api.render.group(group, query.select)

    def count() -> int:
        return sum(1 for gid in tenant.group_order if api._group_matches(tenant.groups[gid], query.filter))

    return 200, api._page(request, "/groups", query, _context("groups", query), items, count), {}


def get_group(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    query = _group_query(request, False)
    group = api._group(ids[0])
    body = {"@odata.context": f"{request.origin}/v1.0/$metadata#{_context('groups', query)}/$entity"}
    body.update(api.render.group(group, query.select))
    return 200, body, {}


def list_members(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    group = api._group(ids[0])
    users_only = len(ids) > 1
    query = odata.parse(
        request.params,
        request.headers,
        selectable=USER_SELECTABLE if users_only else {**GROUP_SELECTABLE, **USER_SELECTABLE},
        filterable=USER_FILTERABLE,
        type_name=USER_TYPE if users_only else "microsoft.graph.directoryObject",
        collection=True,
        relationship=True,
    )
    tenant = api.tenant
    select = query.select

    def items(start: int) -> Iterator[tuple[int, Any]]:
        for position, member in group.members.scan(start):
            user = tenant.users.get(member)
            if user is not None:
                if api._user_matches(user, query.filter):
                    yield position, api.render.user(user, _for_user(select), odata_type=not users_only)
            elif not users_only and query.filter is None:
                yield position, api.render.group(tenant.groups[member], _for_group(select), odata_type=True)

    def count() -> int:
        return sum(1 for _ in items(0))

    path = f"/groups/{group.id}/members" + ("/microsoft.graph.user" if users_only else "")
    context = _context("users", query) if users_only else "directoryObjects"
    return 200, api._page(request, path, query, context, items, count), {}


def list_members_with_errors(
    api: GraphApi, request: ApiRequest, ids: tuple[str, ...]
) -> tuple[int, Any, dict[str, str]]:
    group = api._group(ids[0])
    query = odata.parse(
        request.params,
        request.headers,
        selectable={**GROUP_SELECTABLE, **USER_SELECTABLE},
        filterable=USER_FILTERABLE,
        type_name="microsoft.graph.directoryObject",
        collection=True,
        relationship=True,
    )
    tenant = api.tenant

    def items(start: int) -> Iterator[tuple[int, Any]]:
        for position, member in group.members.scan(start):
            user = tenant.users.get(member)
            if user is not None and tenant.has_license_error(group, user) and api._user_matches(user, query.filter):
                yield position, api.render.user(user, _for_user(query.select), odata_type=True)

    def count() -> int:
        return sum(1 for _ in items(0))

    path = f"/groups/{group.id}/membersWithLicenseErrors"
    return 200, api._page(request, path, query, "directoryObjects", items, count), {}


def count_members(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    group = api._group(ids[0])
    if (request.headers.get("ConsistencyLevel") or "").lower() != "eventual":
        raise errors.bad_request("$count is not currently supported.")
    return 200, str(len(group.members)), {}


def assign_group_license(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    group = api._group(ids[0])
    add, remove = api._assign_body(request)
    cause = f"{GRAPH}groups.assignLicense {group.id} request-id={request.request_id}"
    api.tenant.graph_assign_group(group, add, remove, cause)
    body = {"@odata.context": f"{request.origin}/v1.0/$metadata#groups/$entity"}
    body.update(api.render.group(group, None))
    return 202, body, {"Location": f"{request.origin}/v1.0/groups/{group.id}"}


def list_skus(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    for key, _ in request.params:
        if key.lower().lstrip("$").removeprefix("%24") in ("filter", "top", "orderby", "search", "count", "skip"):
            raise errors.bad_request("Query filter expressions aren't supported on subscribedSkus: only $select.")
    skus = api.render.subscribed_skus()
    select = [s.strip() for v in (v for k, v in request.params if k.lower().endswith("select")) for s in v.split(",")]
    if select:
        known = set(skus[0]) if skus else set()
        for name in select:
            if known and name not in known:
                raise errors.bad_request(
                    f"Could not find a property named '{name}' on type 'microsoft.graph.subscribedSku'."
                )
        skus = [{k: v for k, v in s.items() if k in select or k == "id"} for s in skus]
    return 200, {"@odata.context": f"{request.origin}/v1.0/$metadata#subscribedSkus", "value": skus}, {}


def batch(api: GraphApi, request: ApiRequest, ids: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    payload = _json_body(request)
    requests = payload.get("requests")
    if not isinstance(requests, list) or not requests:
        raise errors.bad_request("Invalid batch payload format: 'requests' must be a non-empty array.")
    if len(requests) > MAX_BATCH:
        raise errors.bad_request(f"The number of batch requests exceeds the limit of {MAX_BATCH}.")
    seen: list[str] = []
    for item in requests:
        if not isinstance(item, dict) or not item.get("id") or not item.get("method") or not item.get("url"):
            raise errors.bad_request("Each batch request needs id, method and url.")
        if str(item["id"]) in seen:
            raise errors.bad_request(f"Batch request ids must be unique: '{item['id']}' appears twice.")
        seen.append(str(item["id"]))
        if item.get("body") is not None and not CaseInsensitive(item.get("headers") or {}).get("content-type"):
            raise errors.bad_request(f"Batch request '{item['id']}' has a body but no Content-Type header.")
    sequential = any(item.get("dependsOn") for item in requests)
    if sequential:
        for index, item in enumerate(requests[1:], start=1):
            depends = item.get("dependsOn") or []
            if not depends or any(d not in seen[:index] for d in depends):
                raise errors.bad_request("Batch requests must be either fully sequential or fully parallel.")
    results: dict[str, int] = {}
    responses = []
    for item in requests:
        rid = str(item["id"])
        failed_dep = [d for d in item.get("dependsOn") or [] if results.get(d, 200) >= 400]
        if failed_dep:
            results[rid] = 424
            responses.append(
                {
                    "id": rid,
                    "status": 424,
                    "body": error_body(
                        "FailedDependency",
                        "The request failed because it depended on a request that failed.",
                        request.request_id,
                        request.request_id,
                        api._date(),
                    ),
                }
            )
            continue
        url = str(item["url"])
        split = urlsplit(url if url.startswith("/") else "/" + url)
        path = split.path
        if path.lower().startswith("/v1.0/"):
            path = path[5:]
        headers = CaseInsensitive(item.get("headers") or {})
        if "authorization" not in headers and request.headers.get("Authorization"):
            headers["authorization"] = request.headers.get("Authorization") or ""
        body = item.get("body")
        inner = ApiRequest(
            method=str(item["method"]).upper(),
            path=path,
            params=parse_qsl(split.query, keep_blank_values=True),
            headers=headers,
            body=json.dumps(body).encode() if body is not None else b"",
            origin=request.origin,
        )
        if normalize_path(inner.path).lower() == "/$batch":
            raise errors.bad_request("A $batch request cannot contain another $batch request.")
        answer = api.handle(inner)
        api.counters.record(
            answer.endpoint,
            status=answer.status,
            read=answer.executed and answer.kind == "read",
            write=answer.executed and answer.kind == "write",
            quota=answer.quota,
            path=inner.path,
        )
        results[rid] = answer.status
        inner_headers = {k: v for k, v in answer.headers.items() if k.lower() in ("retry-after", "location")}
        inner_headers["Content-Type"] = "application/json" if not isinstance(answer.body, str) else "text/plain"
        responses.append({"id": rid, "status": answer.status, "headers": inner_headers, "body": answer.body})
    return 200, {"responses": responses}, {}


def _context(entity_set: str, query: Query) -> str:
    return f"{entity_set}({','.join(query.select)})" if query.select else entity_set


def _for_user(select: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if select is None:
        return None
    chosen = tuple(s for s in select if s.lower() in USER_SELECTABLE)
    return chosen or ("id",)


def _for_group(select: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if select is None:
        return None
    chosen = tuple(s for s in select if s.lower() in GROUP_SELECTABLE)
    return chosen or ("id",)


_ID = r"([^/]+)"
ROUTES: tuple[Route, ...] = tuple(
    Route(method, re.compile(pattern, re.IGNORECASE), endpoint, ru, handler)
    for method, pattern, endpoint, ru, handler in (
        ("GET", r"^/users$", "GET /users", 2, list_users),
        ("GET", r"^/users/\$count$", "GET /users/$count", 2, count_users),
        ("GET", rf"^/users/{_ID}$", "GET /users/{id}", 2, get_user),
        ("POST", rf"^/users/{_ID}/assignLicense$", "POST /users/{id}/assignLicense", 1, assign_user_license),
        (
            "POST",
            rf"^/users/{_ID}/reprocessLicenseAssignment$",
            "POST /users/{id}/reprocessLicenseAssignment",
            1,
            reprocess_user,
        ),
        ("GET", r"^/groups$", "GET /groups", 1, list_groups),
        ("GET", rf"^/groups/{_ID}$", "GET /groups/{id}", 1, get_group),
        ("GET", rf"^/groups/{_ID}/members$", "GET /groups/{id}/members", 3, list_members),
        ("GET", rf"^/groups/{_ID}/members/\$count$", "GET /groups/{id}/members/$count", 3, count_members),
        (
            "GET",
            rf"^/groups/{_ID}/members/(microsoft\.graph\.user|graph\.user)$",
            "GET /groups/{id}/members/microsoft.graph.user",
            3,
            list_members,
        ),
        (
            "GET",
            rf"^/groups/{_ID}/membersWithLicenseErrors$",
            "GET /groups/{id}/membersWithLicenseErrors",
            1,
            list_members_with_errors,
        ),
        ("POST", rf"^/groups/{_ID}/assignLicense$", "POST /groups/{id}/assignLicense", 1, assign_group_license),
        ("GET", r"^/subscribedSkus$", "GET /subscribedSkus", 3, list_skus),
        ("POST", r"^/\$batch$", "POST /$batch", 0, batch),
    )
)
