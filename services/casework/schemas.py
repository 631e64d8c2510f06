"""Request and response bodies of the casework API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.casework import EVENTS, ActionKind, CaseState
from shared.params import LA_CODE_PATTERN, URN_PATTERN, RowId


class CaseOpenIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"urn": "100001", "upn": "W801200025001", "reason": "Concerns raised by the class teacher"}]
        },
    )

    urn: str = Field(pattern=URN_PATTERN)
    upn: str = Field(min_length=13, max_length=13)
    reason: str = Field(min_length=1, max_length=1000)


class CaseOut(BaseModel):
    id: int
    urn: str
    la_code: str
    upn: str
    state: CaseState
    state_entered_on: date
    previous_state: CaseState | None
    close_outcome: str | None
    opened_at: datetime
    updated_at: datetime
    version: int = Field(description="Send it back as If-Match when you act on the case: a stale one gets 409")
    next_events: list[str] = Field(description="Workflow events your role may attempt now (guards not checked)")


class CasePage(BaseModel):
    items: list[CaseOut]
    next_cursor: int | None


class CaseFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    la_code: str | None = Field(None, pattern=LA_CODE_PATTERN)
    urn: str | None = Field(None, pattern=URN_PATTERN)
    upn: str | None = Field(None, min_length=13, max_length=13)
    state: CaseState | None = None
    overdue: bool = Field(False, description="Only cases with an overdue clock")
    cursor: RowId | None = None
    limit: int = Field(50, ge=1, le=500)


class ActionIn(BaseModel):
    """One dated evidence record; `details` follow the kind's schema (GET /v1/casework/workflow)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "contact",
                    "occurred_on": "2025-11-10",
                    "details": {
                        "method": "call",
                        "with_whom": "Parent",
                        "summary": "Discussed absences; illness and transport",
                        "reasons_or_barriers": "Transport since moving house",
                    },
                },
                {
                    "kind": "letter_sent",
                    "occurred_on": "2025-11-11",
                    "details": {"letter": "stage_1", "posted_on": "2025-11-11", "address_recorded": True},
                },
            ]
        },
    )

    kind: ActionKind
    occurred_on: date
    details: dict[str, Any]


class ActionOut(BaseModel):
    id: int
    case_id: int
    kind: ActionKind
    occurred_on: date
    details: dict[str, Any]
    recorded_at: datetime
    recorded_by: str


class TransitionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"event": "escalate_to_stage_2", "payload": {"reason": "No improvement after the stage 1 letter"}},
                {"event": "refer_to_ews", "payload": {"summary": "Stage 1 and 2 actions exhausted"}},
            ]
        },
    )

    event: Literal[EVENTS]  # type: ignore[valid-type]
    payload: dict[str, Any] = Field(default_factory=dict, description="The event's payload (see the workflow)")


class TimelineEntry(BaseModel):
    at: datetime
    on: date
    what: Literal["evidence", "transition"]
    kind: str
    by: str
    details: dict[str, Any]


class ClockOut(BaseModel):
    kind: str
    earliest_on: date | None
    due_on: date
    status: str
    detail: str


class WorkItem(BaseModel):
    case_id: int
    urn: str
    upn: str
    state: CaseState
    clock: str
    earliest_on: date | None
    due_on: date
    overdue: bool
    detail: str


class Worklist(BaseModel):
    due_before: date
    items: list[WorkItem] = Field(description="Clocks not yet met that are due by then, soonest first")


class EvidenceBundle(BaseModel):
    case: CaseOut
    timeline: list[TimelineEntry]
    clocks: list[ClockOut]
    generated_at: datetime
