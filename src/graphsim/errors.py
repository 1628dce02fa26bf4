"""Graph's error answers: one exception type carrying status, code and message, and the exact
messages Graph uses where they are known (docs/graph.md §1.4, §1.8, §1.9). Messages marked "graphsim"
are ours where Graph's wording is not public; their codes and statuses follow Graph.
"""

from __future__ import annotations


class GraphFailure(Exception):
    """Raised by the tenant or the API layer; the HTTP layer renders it as Graph's error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


BAD_REQUEST = "Request_BadRequest"
NOT_FOUND = "Request_ResourceNotFound"
UNSUPPORTED_QUERY = "Request_UnsupportedQuery"

INHERITED_ONLY = "User license is inherited from a group membership and it cannot be removed directly from the user."
NOT_ASSIGNED = "User does not have a corresponding license."
INVALID_USAGE_LOCATION = "License assignment cannot be done for user with invalid usage location."
UNREADABLE_JSON = (
    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."
)


def not_found(ref: str) -> GraphFailure:
    message = f"Resource '{ref}' does not exist or one of its queried reference-property objects are not present."
    return GraphFailure(404, NOT_FOUND, message)


def bad_request(message: str) -> GraphFailure:
    return GraphFailure(400, BAD_REQUEST, message)


def unsupported_query(message: str) -> GraphFailure:
    return GraphFailure(400, UNSUPPORTED_QUERY, message)


def missing_parameters(names: list[str]) -> GraphFailure:
    return bad_request(
        "One or more parameters of the operation 'assignLicense' are missing from the request payload. "
        f"The missing parameters are: {','.join(names)}."
    )


def invalid_object_id(ref: str) -> GraphFailure:
    return bad_request(f"Invalid object identifier '{ref}'.")


def not_a_company_license(sku_id: str) -> GraphFailure:
    return bad_request(f"License {sku_id} does not correspond to a valid company License.")


def no_available_licenses(sku_id: str) -> GraphFailure:
    return bad_request(f"Subscription with SKU {sku_id} does not have any available licenses.")


def depends_on(plan: str, required: list[str]) -> GraphFailure:
    return bad_request(
        f"License assignment failed because service plan {plan} depends on the service plan(s) {', '.join(required)}."
    )


def mutually_exclusive(plan: str, other: str) -> GraphFailure:
    # graphsim wording; Graph's exact message for this direct-assignment conflict is not public.
    return bad_request(f"License assignment failed because service plan {plan} is mutually exclusive with {other}.")


def prohibited_location(plan: str, location: str) -> GraphFailure:
    # graphsim wording; Graph's exact message is not public.
    return bad_request(
        f"License assignment failed because service plan {plan} is not allowed in usage location {location}."
    )
