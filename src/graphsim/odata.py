"""OData query options as Graph's directory endpoints accept them: $select, $top (1-999), $filter
(the forms licshift and Microsoft's scripts use), $count with ConsistencyLevel, $skiptoken (opaque,
produced by graphsim's own nextLinks). Anything else is refused the way Graph refuses it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from graphsim import errors
from graphsim.guids import is_guid

MAX_TOP = 999
DEFAULT_TOP = 100


@dataclass(frozen=True, slots=True)
class AnyLicense:
    """assignedLicenses/any(a:a/skuId eq <guid>)"""

    sku_id: str


@dataclass(frozen=True, slots=True)
class Equals:
    prop: str
    value: str | bool | None


@dataclass(frozen=True, slots=True)
class In:
    prop: str
    values: frozenset[str]


Filter = AnyLicense | Equals | In


@dataclass(frozen=True, slots=True)
class Query:
    select: tuple[str, ...] | None
    top: int | None
    filter: Filter | None
    count: bool
    """$count=true sent together with ConsistencyLevel: eventual (else Graph ignores it)."""
    skiptoken: str | None
    expand: bool
    advanced: bool
    """ConsistencyLevel: eventual was sent."""
    params: tuple[tuple[str, str], ...]
    """The query as received (for nextLinks), $skiptoken excluded."""

    @property
    def page_size(self) -> int:
        return self.top or DEFAULT_TOP


_KNOWN_OPTIONS = {"$select", "$top", "$filter", "$count", "$skiptoken", "$expand", "$orderby", "$search", "$skip"}

_ANY = re.compile(r"^assignedLicenses/any\(\s*(\w+)\s*:\s*(\w+)/skuId\s+eq\s+(.+?)\s*\)$", re.IGNORECASE)
_EQ = re.compile(r"^(\w+)\s+eq\s+(.+)$")
_IN = re.compile(r"^(\w+)\s+in\s+\((.*)\)$", re.DOTALL)
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def parse(
    params: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    *,
    selectable: Mapping[str, str],
    filterable: frozenset[str],
    type_name: str,
    collection: bool,
    relationship: bool = False,
) -> Query:
    """Validate the query of one request. `selectable` maps lower-case names to Graph's casing."""
    values = _options(params)
    advanced = headers.get("ConsistencyLevel", "").strip().lower() == "eventual"
    select = _select(values["$select"], selectable, type_name) if "$select" in values else None
    top = _top(values["$top"], collection) if "$top" in values else None
    _refuse_unsupported(values, advanced)
    parsed_filter: Filter | None = None
    if "$filter" in values:
        if not collection:
            raise errors.bad_request("The query specified in the URI is not valid. $filter is not allowed here.")
        if relationship and not (advanced and values.get("$count", "").lower() == "true"):
            raise errors.unsupported_query(
                "Filtering a relationship requires advanced query parameters: "
                "the ConsistencyLevel: eventual header and $count=true."
            )
        parsed_filter = parse_filter(values["$filter"], filterable, type_name)

    count = values.get("$count", "").lower() == "true" and advanced
    if "$count" in values and values["$count"].lower() not in ("true", "false"):
        raise errors.bad_request(f"Invalid value '{values['$count']}' for $count: use true or false.")

    kept = tuple((k, v) for k, v in params if k.lower().lstrip("$").removeprefix("%24") != "skiptoken")
    return Query(
        select=select,
        top=top,
        filter=parsed_filter,
        count=count,
        skiptoken=values.get("$skiptoken"),
        expand="$expand" in values,
        advanced=advanced,
        params=kept,
    )


def _options(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The system query options by canonical name ($-prefixed, lower case); unknown or repeated ones fail."""
    values: dict[str, str] = {}
    for key, value in params:
        name = key.lower()
        if name.startswith("$") or name.startswith("%24"):
            name = "$" + name.lstrip("$").removeprefix("%24")
            if name not in _KNOWN_OPTIONS:
                raise errors.bad_request(f"Query option '{key}' is not allowed. Make sure that the option is valid.")
            if name in values:
                raise errors.bad_request(
                    f"Query option '{name}' was specified more than once, but it must be specified at most once."
                )
            values[name] = value
    return values


def _select(raw: str, selectable: Mapping[str, str], type_name: str) -> tuple[str, ...]:
    names = [s.strip() for s in raw.split(",") if s.strip()]
    if not names:
        raise errors.bad_request("The $select query option must name at least one property.")
    chosen: list[str] = []
    for name in names:
        canonical = selectable.get(name.lower())
        if canonical is None:
            raise errors.bad_request(f"Could not find a property named '{name}' on type '{type_name}'.")
        if canonical not in chosen:
            chosen.append(canonical)
    return tuple(chosen)


def _top(value: str, collection: bool) -> int:
    if not collection:
        raise errors.bad_request("The query specified in the URI is not valid. $top is not allowed on a single entity.")
    raw = value.strip()
    try:
        top = int(raw)
    except ValueError:
        top = -1
    if not 1 <= top <= MAX_TOP:
        raise errors.unsupported_query(f"Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive.")
    return top


def _refuse_unsupported(values: Mapping[str, str], advanced: bool) -> None:
    for option in ("$orderby", "$search"):
        if option in values:
            if not advanced:
                raise errors.unsupported_query(
                    f"{option} requires the ConsistencyLevel: eventual header and $count=true (advanced query)."
                )
            raise errors.unsupported_query(f"{option} is not supported by graphsim.")
    if "$skip" in values:
        raise errors.bad_request("'$skip' is not supported by the service.")


def parse_filter(text: str, filterable: frozenset[str], type_name: str) -> Filter:
    clause = text.strip()
    match = _ANY.match(clause)
    if match:
        if match.group(1) != match.group(2):
            raise errors.bad_request(f"Invalid filter clause: lambda variable '{match.group(2)}' is not defined.")
        if "assignedLicenses" not in filterable:
            raise _unsupported(clause, type_name)
        literal = match.group(3).strip()
        if literal.startswith("'"):
            raise errors.bad_request(
                "A binary operator with incompatible types was detected. "
                "Found operand types 'Edm.Guid' and 'Edm.String' for operator kind 'Equal'."
            )
        if not is_guid(literal):
            raise errors.bad_request(f"Invalid filter clause: '{literal}' is not a valid Edm.Guid literal.")
        return AnyLicense(literal.lower())
    match = _IN.match(clause)
    if match:
        prop = _property(match.group(1), filterable, clause, type_name)
        items = [v.strip() for v in _split_list(match.group(2))]
        values = set()
        for item in items:
            quoted = _QUOTED.fullmatch(item)
            if quoted is None:
                raise errors.bad_request(f"Invalid filter clause: expected quoted strings in 'in' list, got {item!r}.")
            values.add(quoted.group(1).replace("''", "'").lower())
        if len(values) > 15:
            raise errors.bad_request("Too many values in the 'in' operator: the maximum is 15.")
        return In(prop, frozenset(values))
    match = _EQ.match(clause)
    if match and " and " not in clause.lower() and " or " not in clause.lower():
        prop = _property(match.group(1), filterable, clause, type_name)
        literal = match.group(2).strip()
        quoted = _QUOTED.fullmatch(literal)
        value: str | bool | None
        if quoted is not None:
            value = quoted.group(1).replace("''", "'")
        elif literal in ("true", "false"):
            value = literal == "true"
        elif literal == "null":
            value = None
        else:
            raise errors.bad_request(f"Invalid filter clause: unsupported literal {literal!r}; quote strings ('x').")
        return Equals(prop, value)
    raise _unsupported(clause, type_name)


def _split_list(body: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quoted = False
    for char in body:
        if char == "'":
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def _property(name: str, filterable: frozenset[str], clause: str, type_name: str) -> str:
    for prop in filterable:
        if prop.lower() == name.lower():
            return prop
    raise _unsupported(clause, type_name)


def _unsupported(clause: str, type_name: str) -> errors.GraphFailure:
    return errors.unsupported_query(
        f"Unsupported or invalid query filter clause specified for resource '{type_name}': {clause}"
    )


def make_token(position: int, fingerprint: str) -> str:
    raw = json.dumps({"p": position, "f": zlib.crc32(fingerprint.encode())}, separators=(",", ":")).encode()
    return "X" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str, fingerprint: str) -> int:
    """Position encoded by `make_token` for the same endpoint and filter; anything else is refused
    the way Graph refuses an unknown or expired page token."""
    try:
        body = token[1:] + "=" * (-len(token[1:]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(body.encode()))
        position = int(payload["p"])
        if not token.startswith("X") or payload["f"] != zlib.crc32(fingerprint.encode()) or position < 0:
            raise ValueError(token)
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise errors.GraphFailure(
            400,
            "Directory_ExpiredPageToken",
            "The specified page token value has expired and can no longer be included in your request.",
        ) from exc
    return position
