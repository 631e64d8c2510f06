"""Request and response bodies of the registers API, with the examples shown in the docs."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from pydantic import Strict as PydanticStrict

from shared.domain.calendar import SchoolCalendar
from shared.params import LA_CODE_PATTERN, URN_PATTERN

Urn = Annotated[str, StringConstraints(pattern=URN_PATTERN)]
LaCode = Annotated[str, StringConstraints(pattern=LA_CODE_PATTERN)]
SessionName = Literal["AM", "PM"]

EXAMPLE_UPNS = ["W801200025001", "K801200025002", "Z801200025003"]  # valid check letters


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# PostgreSQL text cannot hold NUL; reject it (and other control characters but tab and newlines)
# at the edge with a 422 rather than fail on insert.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
StrictInt = Annotated[int, PydanticStrict()]


def _plain_date(value: object) -> object:
    """A register date is a calendar day: '2025-11-03', not a timestamp that happens to parse."""
    if isinstance(value, str) and len(value) != 10:
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


PlainDate = Annotated[date, BeforeValidator(_plain_date)]


class Phase(StrEnum):
    NURSERY = "nursery"
    PRIMARY = "primary"
    MIDDLE = "middle"
    SECONDARY = "secondary"
    ALL_THROUGH = "all-through"
    SPECIAL = "special"
    ALTERNATIVE_PROVISION = "alternative-provision"
    SIXTEEN_PLUS = "16-plus"


class Person(Strict):
    name: Text = Field(min_length=1, max_length=200)
    position: Text = Field(min_length=1, max_length=200)


class MarkValuesIn(Strict):
    code: str = Field(max_length=4, description="DfE attendance code in force on the date (GET /v1/codes)")
    sub_code: str | None = Field(
        None, max_length=16, description="MIS sub-code (e.g. I01); kept, and counted by its parent code"
    )
    minutes_late: StrictInt | None = Field(None, ge=0, le=240, description="Only with L or U")


class MarkIn(MarkValuesIn):
    upn: str = Field(max_length=32, description="Unique Pupil Number, 13 characters with check letter")
    comment: Text | None = Field(None, max_length=500, description="Kept in the register; never put on the event bus")


class RegisterIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "date": "2025-11-03",
                    "session": "AM",
                    "taken_by": {"name": "J Smith", "position": "Class teacher"},
                    "marks": [
                        {"upn": EXAMPLE_UPNS[0], "code": "/"},
                        {"upn": EXAMPLE_UPNS[1], "code": "L", "minutes_late": 12},
                        {"upn": EXAMPLE_UPNS[2], "code": "I", "sub_code": "I01"},
                    ],
                }
            ]
        },
    )

    date: PlainDate
    session: SessionName
    marks: list[MarkIn] = Field(min_length=1, description="One mark per pupil; a class or the whole school")
    taken_by: Person | None = Field(None, description="Who took the register")
    amendment_reason: Text | None = Field(
        None,
        max_length=500,
        description='Reason recorded for marks this post changes; default "corrected in MIS"',
    )


class RegisterAccepted(BaseModel):
    submission_id: uuid.UUID
    urn: str
    date: date
    session: SessionName
    marks: int
    new: int = Field(description="Marks recorded for the first time")
    unchanged: int = Field(description="Marks identical to the stored ones")
    amended: int = Field(description="Marks that changed an existing mark (each audited)")


class AmendmentIn(MarkValuesIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "M",
                    "reason": "Parent provided appointment card",
                    "amended_by": {"name": "A Jones", "position": "Attendance officer"},
                }
            ]
        },
    )

    reason: Text = Field(min_length=1, max_length=500)
    amended_by: Person


class AmendmentOut(BaseModel):
    id: int
    previous_code: str
    previous_sub_code: str | None
    previous_minutes_late: int | None
    code: str
    sub_code: str | None
    minutes_late: int | None
    reason: str
    amended_at: datetime
    amended_by: Person
    source: Literal["register", "amendment"]


class MarkOut(BaseModel):
    upn: str
    date: date
    session: SessionName
    code: str
    sub_code: str | None
    category: str
    possible: bool
    minutes_late: int | None
    comment: str | None
    recorded_at: datetime
    change_version: int


class MarkWithHistory(MarkOut):
    amendments: list[AmendmentOut]


class PupilMarks(BaseModel):
    urn: str
    upn: str
    from_date: date = Field(serialization_alias="from")
    to_date: date = Field(serialization_alias="to")
    marks: list[MarkWithHistory]


class RegisterOut(BaseModel):
    urn: str
    date: date
    session: SessionName
    marks: list[MarkOut]
    submissions: list[dict[str, Any]]


class ChangeFeed(BaseModel):
    urn: str
    changes: list[MarkOut]
    next_since: int = Field(description="Pass as ?since= to continue")
    has_more: bool


class CodeOut(BaseModel):
    code: str
    meaning: str
    category: str
    possible: bool
    in_force_from: date | None
    in_force_until: date | None
    replaced_by: list[str]


class Term(Strict):
    name: Text = Field(min_length=1, max_length=100)
    start: date
    end: date


class CalendarIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "terms": [
                        {"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"},
                        {"name": "Autumn 2", "start": "2025-11-03", "end": "2025-12-19"},
                    ],
                    "inset_days": ["2025-09-02"],
                    "closures": [],
                }
            ]
        },
    )

    terms: list[Term] = Field(default_factory=list)
    inset_days: list[date] = Field(default_factory=list)
    closures: list[date] = Field(default_factory=list)

    @field_validator("terms")
    @classmethod
    def _terms_valid(cls, terms: list[Term]) -> list[Term]:
        SchoolCalendar.from_dict({"terms": [t.model_dump(mode="json") for t in terms]})
        return terms


class SchoolIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "urn": "100001",
                    "name": "Riverside Primary School",
                    "la_code": "801",
                    "phase": "primary",
                    "independent": False,
                    "data_sharing_agreement": True,
                }
            ]
        },
    )

    urn: Urn
    name: Text = Field(min_length=1, max_length=200)
    la_code: LaCode
    phase: Phase
    independent: bool = False
    data_sharing_agreement: bool = False
    calendar: CalendarIn | None = None


class SchoolPatch(Strict):
    name: Text | None = Field(None, min_length=1, max_length=200)
    la_code: LaCode | None = None
    phase: Phase | None = None
    independent: bool | None = None
    data_sharing_agreement: bool | None = None
    calendar: CalendarIn | None = None


class SchoolOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    urn: str
    name: str
    la_code: str
    phase: str
    independent: bool
    data_sharing_agreement: bool
    calendar: dict[str, Any]
    change_version: int


class SchoolList(BaseModel):
    schools: list[SchoolOut]
    next_cursor: str | None


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
