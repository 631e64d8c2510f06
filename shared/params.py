"""Parameters every API shares: schools by URN, pupils by UPN, LAs by code (design.md), rows by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import Field

from shared.domain.upn import upn_error
from shared.errors import Unprocessable

URN_PATTERN = r"^\d{6}$"
LA_CODE_PATTERN = r"^\d{3}$"

# Ids, cursors and change versions are PostgreSQL bigints: a larger number names no row, and the
# driver cannot even send it.
BIGINT_MAX = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]

UrnPath = Annotated[str, Path(pattern=URN_PATTERN, description="School URN (6 digits)", examples=["100001"])]
UpnPath = Annotated[str, Path(min_length=1, max_length=32, description="Pupil UPN (13 characters)")]
LaCodePath = Annotated[str, Path(pattern=LA_CODE_PATTERN, description="LA code (3 digits)", examples=["999"])]


def valid_upn(upn: str) -> str:
    """The UPN, or a 422 saying what is wrong with it (check letter included)."""
    problem = upn_error(upn)
    if problem:
        raise Unprocessable("invalid-upn", problem)
    return upn
