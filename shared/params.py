"""Path parameters every API shares: schools by URN, pupils by UPN, LAs by code (design.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from shared.domain.upn import upn_error
from shared.errors import Unprocessable

URN_PATTERN = r"^\d{6}$"
LA_CODE_PATTERN = r"^\d{3}$"

UrnPath = Annotated[str, Path(pattern=URN_PATTERN, description="School URN (6 digits)", examples=["100001"])]
UpnPath = Annotated[str, Path(min_length=1, max_length=32, description="Pupil UPN (13 characters)")]
LaCodePath = Annotated[str, Path(pattern=LA_CODE_PATTERN, description="LA code (3 digits)", examples=["999"])]


def valid_upn(upn: str) -> str:
    """The UPN, or a 422 saying what is wrong with it (check letter included)."""
    problem = upn_error(upn)
    if problem:
        raise Unprocessable("invalid-upn", problem)
    return upn
