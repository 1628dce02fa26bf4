"""The adapter's pure parts: Graph error answers → typed errors, Retry-After, id and endpoint checks.

Everything here is what the adapter does with a response or an id before/after the HTTP call; the
calls themselves are tested against the simulator in test_adapter_sim.py.
"""

from __future__ import annotations

import datetime as dt
import json
from email.utils import format_datetime

import pytest

from licshift.adapters.graph import (
    DEFAULT_RETRY_AFTER,
    MIN_RETRY_AFTER,
    check_endpoint,
    error_from_response,
    retry_after_seconds,
    user_key,
)
from licshift.ports.graph import (
    GraphRequestError,
    InheritedOnly,
    NotAssigned,
    NotFound,
    Throttled,
    TransientGraphError,
)
from licshift.rules.licenses import InvalidId

USER = "0b7e3c1a-5f7d-4e2a-9c1b-2d3e4f5a6b7c"
WHAT = f"remove direct SKU 6fd2c87f-b296-42f0-b197-1e91e994b900 from user {USER}"


def body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("5", 5.0),
        (" 42 ", 42.0),
        ("1.5", 1.5),
        ("0", MIN_RETRY_AFTER),
        ("-3", MIN_RETRY_AFTER),
        (None, DEFAULT_RETRY_AFTER),
        ("", DEFAULT_RETRY_AFTER),
        ("soon", DEFAULT_RETRY_AFTER),
        ("nan", DEFAULT_RETRY_AFTER),
        ("inf", DEFAULT_RETRY_AFTER),
        (format_datetime(NOW + dt.timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - dt.timedelta(seconds=30), usegmt=True), MIN_RETRY_AFTER),
    ],
)
def test_retry_after_seconds_reads_delta_seconds_and_http_dates(header: str | None, expected: float) -> None:
    assert retry_after_seconds(header, now=NOW) == pytest.approx(expected)


def test_429_is_throttled_with_the_servers_wait_and_the_operation_in_the_message() -> None:
    error = error_from_response(429, {"retry-after": "17"}, body("TooManyRequests", "Too many"), what=WHAT)
    assert isinstance(error, Throttled)
    assert error.retry_after == 17.0
    assert (error.status, error.code) == (429, "TooManyRequests")
    assert USER in str(error)
    assert "TooManyRequests" in str(error)


def test_429_without_retry_after_waits_the_default() -> None:
    error = error_from_response(429, {}, b"", what=WHAT)
    assert isinstance(error, Throttled)
    assert error.retry_after == DEFAULT_RETRY_AFTER


def test_503_with_retry_after_is_throttling_and_without_it_transient() -> None:
    with_wait = error_from_response(503, {"retry-after": "30"}, body("serviceNotAvailable", "busy"), what=WHAT)
    assert isinstance(with_wait, Throttled)
    assert (with_wait.status, with_wait.retry_after) == (503, 30.0)
    without = error_from_response(503, {}, body("serviceNotAvailable", "busy"), what=WHAT)
    assert type(without) is TransientGraphError
    assert without.code == "serviceNotAvailable"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_5xx_are_transient(status: int) -> None:
    error = error_from_response(status, {"retry-after": "5"}, b"<html>gateway</html>", what=WHAT)
    assert type(error) is TransientGraphError
    assert error.status == status
    assert "gateway" in str(error)


def test_inherited_only_and_not_assigned_are_recognised_by_graphs_messages() -> None:
    inherited = error_from_response(
        400,
        {},
        body(
            "Request_BadRequest",
            "User license is inherited from a group membership and it cannot be removed directly from the user.",
        ),
        what=WHAT,
    )
    assert type(inherited) is InheritedOnly
    assert inherited.code == "Request_BadRequest"
    missing = error_from_response(
        400, {}, body("Request_BadRequest", "User does not have a corresponding license."), what=WHAT
    )
    assert type(missing) is NotAssigned
    assert USER in str(missing)


def test_404_is_not_found_and_other_4xx_are_request_errors_with_graphs_code() -> None:
    assert type(error_from_response(404, {}, body("Request_ResourceNotFound", "gone"), what=WHAT)) is NotFound
    other = error_from_response(400, {}, body("Request_UnsupportedQuery", "Unsupported query."), what=WHAT)
    assert type(other) is GraphRequestError
    assert (other.status, other.code) == (400, "Request_UnsupportedQuery")
    assert "Unsupported query." in str(other)


def test_permission_and_credential_errors_say_what_to_do() -> None:
    forbidden = error_from_response(403, {}, body("Authorization_RequestDenied", "Insufficient"), what=WHAT)
    assert type(forbidden) is GraphRequestError
    assert "LicenseAssignment.ReadWrite.All" in str(forbidden)
    unauthorised = error_from_response(401, {}, body("InvalidAuthenticationToken", "expired"), what=WHAT)
    assert "managed identity" in str(unauthorised)


def test_a_body_that_is_not_graphs_error_shape_still_gives_a_readable_message() -> None:
    error = error_from_response(418, {}, b"\xff\xfe not json", what=WHAT)
    assert type(error) is GraphRequestError
    assert error.code == ""
    assert "418" in str(error)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0B7E3C1A-5F7D-4E2A-9C1B-2D3E4F5A6B7C", USER),
        ("ada.lovelace@contoso.com", "ada.lovelace@contoso.com"),
        ("a_b-c+d@sub.contoso.onmicrosoft.com", "a_b-c+d@sub.contoso.onmicrosoft.com"),
    ],
)
def test_user_key_accepts_object_ids_and_plain_upns(value: str, expected: str) -> None:
    assert user_key(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "o'brien@contoso.com",
        'a"b@contoso.com',
        "a/b@contoso.com",
        "../groups@contoso.com",
        "a b@contoso.com",
        "a?$select=id@contoso.com",
        "ada_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "a%2Fb@contoso.com",
        "ada@contoso.com\n",
        "ada@contoso.com\x00",
        "ada@contoso",
        "ada@-contoso.com",
        "@contoso.com",
        "ada",
        "users?$filter=startswith(displayName,'a')",
        "a" * 64 + "@" + "b" * 60 + ".com",
        "",
        None,
        42,
    ],
)
def test_user_key_rejects_anything_that_could_change_the_url(value: object) -> None:
    with pytest.raises(InvalidId, match="object id"):
        user_key(value)


def test_check_endpoint_strips_the_trailing_slash_and_allows_http_only_on_loopback() -> None:
    assert check_endpoint("https://graph.microsoft.com/v1.0/", anonymous=False) == "https://graph.microsoft.com/v1.0"
    assert check_endpoint("http://127.0.0.1:8080/v1.0", anonymous=True) == "http://127.0.0.1:8080/v1.0"
    with pytest.raises(ValueError, match="https"):
        check_endpoint("http://graph.microsoft.com/v1.0", anonymous=False)
    with pytest.raises(ValueError, match="credential"):
        check_endpoint("https://graph.microsoft.com/v1.0", anonymous=True)
    with pytest.raises(ValueError, match="query"):
        check_endpoint("https://graph.microsoft.com/v1.0?x=1", anonymous=False)
