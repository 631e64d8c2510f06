"""Inputs every API shares: schools by URN, pupils by UPN, LAs by code (design.md), rows by id,
instants; and the check that no request carries text PostgreSQL cannot store."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, Field

from shared.domain.upn import upn_error
from shared.errors import Unprocessable

URN_PATTERN = r"^\d{6}$"
LA_CODE_PATTERN = r"^\d{3}$"

# Ids, cursors and change versions are PostgreSQL bigints: a larger number names no row, and the
# driver cannot even send it.
BIGINT_MAX = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]


def _utc_exists(value: datetime) -> datetime:
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("the instant is out of range once in UTC") from None
    return value


# An instant the database compares in UTC: 0001-01-01T00:00+14:00 parses, but has no UTC time.
Instant = Annotated[datetime, AfterValidator(_utc_exists)]

UrnPath = Annotated[str, Path(pattern=URN_PATTERN, description="School URN (6 digits)", examples=["100001"])]
UpnPath = Annotated[str, Path(min_length=1, max_length=32, description="Pupil UPN (13 characters)")]
LaCodePath = Annotated[str, Path(pattern=LA_CODE_PATTERN, description="LA code (3 digits)", examples=["999"])]


def valid_upn(upn: str) -> str:
    """The UPN, or a 422 saying what is wrong with it (check letter included)."""
    problem = upn_error(upn)
    if problem:
        raise Unprocessable("invalid-upn", problem)
    return upn


# A JSON escape of NUL or of a UTF-16 surrogate: only a body holding one is parsed for the check
# below, so a whole school's register pays a byte search, not a walk.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _unstorable(value: Any, location: tuple[str | int, ...]) -> Iterator[dict[str, Any]]:
    """Every string in `value` (keys too) that PostgreSQL text or jsonb cannot hold, with where it is."""
    if isinstance(value, str):
        if "\x00" in value:
            yield {"loc": location, "msg": "NUL characters cannot be stored", "type": "string_nul"}
            return
        try:
            value.encode()
        except UnicodeEncodeError:
            yield {"loc": location, "msg": "an unpaired UTF-16 surrogate is not text", "type": "string_unicode"}
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _unstorable(key, location)
            yield from _unstorable(item, (*location, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable(item, (*location, index))


async def storable_text(request: Request) -> None:
    """422 for a request whose path, query or body holds a NUL or a lone surrogate (JSON can escape
    both). Checked once for every route of every service, before the route's own validation, rather
    than failing (500) when the text reaches the database."""
    errors = [
        *_unstorable(request.path_params, ("path",)),
        *(error for key, value in request.query_params.multi_items() for error in _unstorable(value, ("query", key))),
    ]
    if getattr(request.scope.get("route"), "body_field", None) is not None:
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = await request.form()
            errors += [error for key, value in form.multi_items() for error in _unstorable(value, ("body", key))]
        elif _SUSPECT_ESCAPE.search(await request.body()):
            try:
                errors += _unstorable(await request.json(), ("body",))
            except ValueError:
                pass  # not JSON: the route's own validation rejects it
    if errors:
        raise RequestValidationError(errors)
