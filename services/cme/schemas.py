"""Request and response bodies of the CME API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.domain.roll import CmeOutcome, EnquiryMethod, EnquiryOutcome, NotificationPolicy
from shared.params import LA_CODE_PATTERN, URN_PATTERN, RowId

NcYear = Literal["N1", "N2", "R", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"]
UPN_FIELD = Field(min_length=13, max_length=13, description="Unique Pupil Number (check letter validated)")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Characteristics(_In):
    """Flags the LA needs to route a joiner (domain.md §7 cohorts). Held in the CME service only."""

    sen_support: bool = False
    ehcp: bool = Field(False, description="Has an education, health and care plan")
    fsm: bool = Field(False, description="Eligible for free school meals")
    looked_after: bool = False
    child_in_need: bool = False
    child_protection: bool = False


class AdmissionIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upn": "A801200025001",
                    "admitted_on": "2026-01-05",
                    "nc_year": "4",
                    "date_of_birth": "2017-03-14",
                    "characteristics": {"sen_support": True, "fsm": True},
                    "previous_urn": "100002",
                }
            ]
        }
    )

    upn: str = UPN_FIELD
    admitted_on: date = Field(description="The day the name was entered on the admission register")
    nc_year: NcYear = Field(description="National curriculum year group: N1, N2, R or 1-14")
    date_of_birth: date
    characteristics: Characteristics = Field(default_factory=Characteristics)
    previous_urn: str | None = Field(None, pattern=URN_PATTERN, description="URN of the previous school, if known")
    previous_school: str | None = Field(
        None, max_length=200, description="The previous school or setting, if it has no URN (e.g. abroad)"
    )
    dual_registration: bool = Field(False, description="One of an agreed dual registration: recognised, not flagged")
    amendment_reason: str | None = Field(
        None, max_length=500, description="Why an admission already on record is being changed (kept in the audit)"
    )

    @model_validator(mode="after")
    def _born_before_admitted(self) -> AdmissionIn:
        if self.date_of_birth >= self.admitted_on:
            raise ValueError("date_of_birth must be before admitted_on")
        if self.admitted_on.year - self.date_of_birth.year > 25:
            raise ValueError("date_of_birth makes the pupil older than 25 at admission")
        return self


class Notification(BaseModel):
    """The school's return for this roll change, against its deadline."""

    kind: Literal["addition", "deletion"]
    started_on: date
    due_on: date
    received_on: date | None
    status: Literal["pending", "due", "overdue", "on_time", "late"]


class AdmissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    urn: str
    la_code: str
    upn: str
    source: Literal["notified", "detected"]
    admitted_on: date
    first_mark_on: date | None
    nc_year: str | None
    date_of_birth: date | None
    characteristics: dict[str, bool]
    previous_urn: str | None
    previous_school: str | None
    dual_registration: bool
    deleted_on: date | None
    revision: int
    recorded_at: datetime
    recorded_by: str
    notification: Notification | None = None


class Parent(_In):
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(min_length=1, max_length=500)


class DeletionReturn(_In):
    """What a deletion return gives the LA (Regs 2024 reg 13(4)). Personal data: kept in the CME
    service only, shown to the school and LA officers, never published, purged with the register."""

    pupil_name: str = Field(min_length=1, max_length=200)
    pupil_address: str = Field(min_length=1, max_length=500)
    parents: list[Parent] = Field(default_factory=list, max_length=4, description="Each parent the pupil lives with")
    emergency_phone: str | None = Field(None, max_length=40)


class Destination(_In):
    urn: str | None = Field(None, pattern=URN_PATTERN, description="The new school, if known")
    la_code: str | None = Field(None, pattern=LA_CODE_PATTERN, description="The LA the pupil moved to, if known")
    address: str | None = Field(None, max_length=500, description="The new address, if known (personal data)")

    @property
    def known(self) -> bool:
        return bool(self.urn or self.la_code or self.address)


class DeletionIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upn": "A801200025001",
                    "deleted_on": "2026-02-13",
                    "ground": "registered_at_another_school",
                    "destination": {"urn": "100002"},
                    "return_details": {
                        "pupil_name": "Sam Example",
                        "pupil_address": "1 Example Road, Example Town",
                        "parents": [{"name": "Alex Example", "address": "1 Example Road, Example Town"}],
                        "emergency_phone": "01234 567890",
                    },
                }
            ]
        }
    )

    upn: str = UPN_FIELD
    deleted_on: date
    ground: str | None = Field(
        None,
        description="Regs 2024 reg 9(1) ground by key or paragraph: registered_at_another_school or 9(1)(a), ... "
        "(GET /v1/cme/deletion-grounds). Required: a deletion without a recognised ground is rejected.",
    )
    destination: Destination = Field(default_factory=Destination)
    return_details: DeletionReturn | None = None
    believed_unable_to_attend: bool = Field(
        False,
        description="The school believes the pupil cannot attend through sickness or an unavoidable cause "
        "(then grounds 9(1)(h) and (i) do not apply)",
    )
    amendment_reason: str | None = Field(None, max_length=500)


class DeletionOut(BaseModel):
    id: int
    urn: str
    la_code: str
    upn: str
    admission_id: int | None
    deleted_on: date
    ground: str
    ground_code: str
    ground_name: str
    destination_urn: str | None
    destination_la_code: str | None
    destination_known: bool
    matched_admission_id: int | None = Field(description="The admission elsewhere in the LA this deletion matched")
    cme_case_id: int | None = Field(description="The CME case the deletion opened or joined, if any")
    revision: int
    recorded_at: datetime
    recorded_by: str
    notification: Notification | None
    destination_address: str | None = Field(None, description="Only for the school and LA officers")
    return_details: dict[str, Any] | None = Field(None, description="Only for the school and LA officers")


class DeletionGroundOut(BaseModel):
    key: str
    code: str
    name: str
    requires_destination: bool | None
    requires_enquiries: bool
    min_school_days_absent: int | None


class RollHistory(BaseModel):
    """Who joined and who left, to where: one pupil's roll across the LA."""

    upn: str
    admissions: list[AdmissionOut]
    deletions: list[DeletionOut]
    matches: list[dict[str, Any]]


class ReturnCounts(BaseModel):
    on_time: int = 0
    late: int = 0
    missing: int = Field(0, description="Overdue and not received")
    pending: int = Field(0, description="Owed, not yet due (or due today)")
    total: int = 0
    on_time_rate: float | None = Field(None, description="on_time / (on_time + late + missing)")


class ComplianceItem(BaseModel):
    clock_id: int
    kind: Literal["addition", "deletion"]
    upn: str
    started_on: date
    due_on: date
    received_on: date | None
    status: str


class SchoolCompliance(BaseModel):
    urn: str
    la_code: str
    independent: bool
    data_sharing_agreement: bool = Field(description="Returns tracked from the school's MIS feed (seed 000 §8.2-8.3)")
    period_from: date
    period_to: date
    additions: ReturnCounts
    deletions: ReturnCounts
    exceptions: list[ComplianceItem] = Field(description="Late, missing and pending returns, oldest first")


class LaCompliance(BaseModel):
    la_code: str
    period_from: date
    period_to: date
    schools: list[SchoolCompliance]


class PolicyOut(BaseModel):
    la_code: str
    version: int = Field(description="0: the deployment's default, never set for this LA")
    policy: NotificationPolicy
    changed_at: datetime | None
    changed_by: str | None


class CaseOpenIn(_In):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"upn": "A801200025001", "urn": "100001", "notes": "Family not seen since"}]}
    )

    upn: str = UPN_FIELD
    urn: str | None = Field(None, pattern=URN_PATTERN, description="The school last attended, if any")
    notes: str = Field("", max_length=2000, description="Why the child may be missing (kept in the case log)")


class EnquiryIn(_In):
    """A reasonable enquiry; who made it (school or LA) follows from the credential."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "made_on": "2026-02-02",
                    "officer": "J. Smith, Education Welfare Officer",
                    "method": "home_visit",
                    "outcome": "no_response",
                    "notes": "No answer; neighbour says the family left last month",
                }
            ]
        }
    )

    made_on: date
    officer: str = Field(min_length=1, max_length=200, description="Name and position of who made it")
    method: EnquiryMethod
    outcome: EnquiryOutcome
    notes: str = Field("", max_length=4000)


class EnquiryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    made_on: date
    party: Literal["school", "la"]
    officer: str
    method: str
    outcome: str
    notes: str
    recorded_at: datetime
    recorded_by: str


class CaseCloseIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"outcome": "moved_la", "notes": "Confirmed on roll in LA 802 by its CME officer"}]
        }
    )

    outcome: CmeOutcome
    located_urn: str | None = Field(None, pattern=URN_PATTERN, description="The school the child is on roll at")
    notes: str = Field("", max_length=4000)


class CaseEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    at: datetime
    by: str
    detail: dict[str, Any]


class CaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    la_code: str
    urn: str | None
    upn: str
    reason: str
    status: Literal["open", "closed"]
    opened_on: date
    opened_by: str
    deletion_id: int | None
    absence_started_on: date | None
    deletion_allowed_from: date | None = Field(
        description="Earliest date a deletion on ground 9(1)(i) may be made: 20 school days of continuous "
        "absence, and then only after joint reasonable enquiries by the school and the LA"
    )
    outcome: str | None
    located_urn: str | None
    closed_on: date | None
    updated_at: datetime


class CaseDetail(CaseOut):
    enquiries: list[EnquiryOut]
    log: list[CaseEntryOut]


class CasePage(BaseModel):
    items: list[CaseOut]
    next_cursor: int | None


class CaseFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    la_code: str | None = Field(None, pattern=LA_CODE_PATTERN)
    urn: str | None = Field(None, pattern=URN_PATTERN)
    upn: str | None = Field(None, min_length=13, max_length=13)
    status: Literal["open", "closed"] | None = None
    cursor: RowId | None = None
    limit: int = Field(50, ge=1, le=500)


class WorkItem(BaseModel):
    kind: Literal["missing_return", "unnotified_joiner", "unmarked_pupil", "cme_case"]
    urn: str | None
    upn: str
    since: date | None = Field(description="When it started: the clock, the last mark, the case")
    due_on: date | None
    detail: str
    link: str


class Worklist(BaseModel):
    la_code: str | None
    items: list[WorkItem]
