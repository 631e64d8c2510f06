"""Request and response bodies of the thresholds API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.domain.thresholds import PRESETS, RULE_IDS, PolicyDocument
from shared.params import RowId


class Attendance(BaseModel):
    """A pupil enrolment's figures over a period (domain.md §3)."""

    from_date: date = Field(serialization_alias="from")
    to_date: date = Field(serialization_alias="to")
    as_of: datetime | None = Field(None, description="Figures as they were known at this instant, if asked")
    possible_sessions: int
    present_sessions: int
    approved_activity_sessions: int
    authorised_absence_sessions: int
    unauthorised_absence_sessions: int
    attendance_rate: float = Field(description="1 - absence rate; 0 when no session was possible")
    absence_rate: float = Field(description="(authorised + unauthorised) / possible; 0 when no session was possible")
    persistent_absence: bool = Field(description="Absence rate at or above the policy's PA line (10 % nationally)")
    severe_absence: bool = Field(description="Absence rate at or above the policy's SA line (50 % nationally)")


AlertStatus = Literal["raised", "cleared", "retracted"]


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    urn: str
    la_code: str
    upn: str
    rule_id: str = Field(description=f"One of: {', '.join(RULE_IDS)}")
    step: str = Field(description='Ladder step of a stepped rule (support map: e.g. "7_days"); empty otherwise')
    status: AlertStatus
    policy_version: int = Field(
        description="Version of the LA policy the alert was evaluated under (0: national default)"
    )
    figures: dict[str, Any] = Field(description="What was counted and the line it crossed")
    window_from: date = Field(description="First school day counted")
    window_to: date = Field(description="Last school day counted")
    sessions: list[str] = Field(description='The sessions that made it fire: "YYYY-MM-DD AM|PM CODE"')
    raised_at: datetime
    cleared_at: datetime | None
    clear_reason: str | None = Field(
        description="condition_ended (later marks undid it), retracted (on the marks as they now stand it would "
        "not have held on the day it was raised: an amendment undid the crossing), policy_changed"
    )


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class AlertFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    la_code: str | None = Field(None, pattern=r"^\d{3}$")
    urn: str | None = Field(None, pattern=r"^\d{6}$")
    upn: str | None = Field(None, min_length=13, max_length=13)
    rule: Literal[RULE_IDS] | None = None  # type: ignore[valid-type]
    status: AlertStatus | None = None
    cursor: RowId | None = None
    limit: int = Field(50, ge=1, le=500)


class PolicyIn(BaseModel):
    """A new policy version for the LA: a preset by name, or a whole document."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"preset": "halton", "reason": "Adopt the Halton attendance framework 2023-26"},
                {
                    "document": PRESETS["national"].model_dump(mode="json")
                    | {"school_overrides": {"100001": {"persistent_absence": {"min_possible_sessions": 30}}}},
                    "reason": "Riverside: alerts from three school weeks",
                },
            ]
        },
    )

    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    document: PolicyDocument | None = None
    reason: str = Field(min_length=1, max_length=500, description="Why the policy changes; kept with the version")

    @model_validator(mode="after")
    def _one_source(self) -> PolicyIn:
        if (self.preset is None) == (self.document is None):
            raise ValueError("give exactly one of `preset` and `document`")
        return self


class PolicyOut(BaseModel):
    la_code: str
    version: int = Field(description="0 is the national default, in force until the LA sets a policy")
    document: PolicyDocument
    reason: str
    created_by: str
    created_at: datetime | None
    pupils_reevaluated: int | None = Field(None, description="On a change: pupils whose alerts were re-evaluated")


class PupilFigures(BaseModel):
    upn: str
    possible_sessions: int
    authorised_absence_sessions: int
    unauthorised_absence_sessions: int
    absence_rate: float


class Cohort(BaseModel):
    pupils: int = Field(description="Pupils at or above the line")
    share: float = Field(description="Their share of the school's pupils with possible sessions")


class SchoolAttendance(BaseModel):
    """A school's figures for an academic year to date, with the PA or SA list a termly targeting
    support meeting works from: worst first, paginated."""

    urn: str
    academic_year: int = Field(description="Starting year: 2025 is 1 Aug 2025 - 31 Jul 2026")
    pupils: int
    possible_sessions: int
    absence_rate: float
    persistent_absence: Cohort
    severe_absence: Cohort
    cohort: Literal["pa", "sa"] = Field(description="Which list `items` holds")
    items: list[PupilFigures] = Field(description="Pupils on the list, highest absence rate first, then by UPN")
    next_cursor: str | None


class SchoolLine(BaseModel):
    urn: str
    pupils: int
    possible_sessions: int
    absence_rate: float
    persistent_absence: int
    severe_absence: int
    raised_alerts: int


class LaAttendance(BaseModel):
    la_code: str
    academic_year: int
    pupils: int
    possible_sessions: int
    absence_rate: float
    persistent_absence: Cohort
    severe_absence: Cohort
    raised_alerts: dict[str, int] = Field(description="Alerts currently raised, by rule id")
    schools: list[SchoolLine] = Field(description="Every school of the LA with marks this year, by URN")
