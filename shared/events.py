"""CloudEvents 1.0 envelope and the versioned event models every service shares.

These pydantic models are the single source for producers, consumers and the AsyncAPI document.
Events are thin: identifiers, codes, numbers and a link to the detail resource; never names,
addresses or free-text notes.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MARKS_TOPIC = "attendance.marks.v1"
REGISTERS_TOPIC = "attendance.registers.v1"
ALERTS_TOPIC = "attendance.alerts.v1"
ESCALATIONS_TOPIC = "casework.escalations.v1"
ROLL_TOPIC = "roll.changes.v1"
CME_TOPIC = "cme.events.v1"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


class EventData(BaseModel):
    """Base of every event payload; subclasses name their type, topic and schema version."""

    # Producers always write every field: the documented (serialization) schema says so.
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_serialization_defaults_required=True)

    event_type: ClassVar[str]
    topic: ClassVar[str]
    version: ClassVar[int] = 1

    @classmethod
    def dataschema(cls) -> str:
        return f"urn:attendance-platform:events:{cls.event_type}:v{cls.version}"


D = TypeVar("D", bound=EventData)


class CloudEvent(BaseModel, Generic[D]):
    """CloudEvents 1.0, JSON structured mode."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: str
    subject: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    data: D


class EventEncoder:
    """Hot-path encoder for the many events one request produces (a register: one per mark).

    Writes the CloudEvent JSON of `model(**common, **fields)` without building pydantic objects;
    the envelope and the fields shared by every event are built once. Event ids are random UUIDs
    (version 4 layout) that share 88 random bits per encoder and end in a counter: unique without
    a call to the OS random source per event. Tests parse the output with `parse_event`, so it
    cannot drift from the models.
    """

    def __init__(self, source: str, time: datetime, common: dict[str, Any] | None = None) -> None:
        self._source = source
        self._time = time
        self._common = common or {}
        h = uuid.uuid4().hex
        self._id_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:24]}"
        self._count = 0

    def encode(self, model: type[EventData], fields: dict[str, Any], subject: str | None = None) -> bytes:
        self._count += 1
        return orjson.dumps(
            {
                "specversion": "1.0",
                "id": f"{self._id_prefix}{self._count:08x}",
                "source": self._source,
                "type": model.event_type,
                "subject": subject,
                "time": self._time,
                "datacontenttype": "application/json",
                "dataschema": model.dataschema(),
                "data": {**self._common, **fields} if self._common else fields,
            }
        )


def make_event(source: str, data: D, subject: str | None = None, **envelope: Any) -> CloudEvent[D]:
    return CloudEvent[type(data)](  # type: ignore[misc]
        source=source,
        type=data.event_type,
        subject=subject,
        dataschema=data.dataschema(),
        data=data,
        **envelope,
    )


Session = Literal["AM", "PM"]


class _MarkEvent(EventData):
    """Fields every mark event carries: where, when, which pupil and the mark as it now stands."""

    urn: str
    la_code: str
    upn: str
    date: date
    session: Session
    code: str
    sub_code: str | None = None
    category: str = Field(description="P, AEA, AA, UA or NC")
    possible: bool = Field(description="Whether the mark counts as a possible session")
    minutes_late: int | None = None
    change_version: int = Field(description="The school's change-feed version of this write")
    recorded_at: datetime
    link: str


class MarkRecorded(_MarkEvent):
    """A pupil's mark for a session was recorded for the first time."""

    event_type: ClassVar[str] = "attendance.mark.recorded"
    topic: ClassVar[str] = MARKS_TOPIC


class MarkAmended(_MarkEvent):
    """An existing mark changed; carries the previous code so consumers can apply a delta."""

    event_type: ClassVar[str] = "attendance.mark.amended"
    topic: ClassVar[str] = MARKS_TOPIC

    previous_code: str
    previous_sub_code: str | None = None
    previous_category: str
    previous_possible: bool
    amendment_id: int


class RegisterTaken(EventData):
    """A session's register (part or whole school) was accepted."""

    event_type: ClassVar[str] = "attendance.register.taken"
    topic: ClassVar[str] = REGISTERS_TOPIC

    urn: str
    la_code: str
    date: date
    session: Session
    submission_id: uuid.UUID
    marks: int
    new: int
    unchanged: int
    amended: int
    link: str


class SchoolUpdated(EventData):
    """A school was added to the registry or its details (including its calendar) changed."""

    event_type: ClassVar[str] = "attendance.school.updated"
    topic: ClassVar[str] = REGISTERS_TOPIC

    urn: str
    la_code: str
    phase: str
    independent: bool
    data_sharing_agreement: bool
    calendar: dict[str, Any]
    link: str


class MarksPurged(EventData):
    """Register entries of a school older than the retention period were deleted."""

    event_type: ClassVar[str] = "attendance.marks.purged"
    topic: ClassVar[str] = REGISTERS_TOPIC

    urn: str
    la_code: str
    before: date
    marks_deleted: int


class _AlertEvent(EventData):
    """Which alert, on whom, under which rule and policy version."""

    topic: ClassVar[str] = ALERTS_TOPIC

    alert_id: int
    urn: str
    la_code: str
    upn: str
    rule_id: str
    step: str = Field(description='The ladder step of a stepped rule (e.g. "7_days"); empty otherwise')
    policy_version: int
    link: str


class AlertRaised(_AlertEvent):
    """A pupil crossed a threshold of the school's policy (domain.md §4), with the evidence."""

    event_type: ClassVar[str] = "attendance.alert.raised"

    figures: dict[str, Any] = Field(description="Numerator, denominator, rate or count, and the threshold")
    window_from: date = Field(description="First school day counted")
    window_to: date = Field(description="Last school day counted")
    sessions: list[str] = Field(description='The sessions that made it fire, as "YYYY-MM-DD AM|PM CODE"')


class AlertCleared(_AlertEvent):
    """The condition no longer holds: `condition_ended` when later marks undid it, `retracted`
    when, on the marks as they now stand (amended, or late for earlier days), it would not have
    held on the day it was raised: the crossing should not have happened."""

    event_type: ClassVar[str] = "attendance.alert.cleared"

    reason: Literal["condition_ended", "retracted", "policy_changed"]


class CaseEvent(EventData):
    """A step in a pupil's casework, for LA systems: thin, with the case's URL for the detail."""

    topic: ClassVar[str] = ESCALATIONS_TOPIC

    case_id: int
    urn: str
    la_code: str
    upn: str
    event: str = Field(description="The workflow event that caused it (GET /v1/casework/workflow)")
    from_state: str | None
    state: str
    link: str


def _case_event(event_type: str, doc: str) -> type[CaseEvent]:
    return type(event_type.replace(".", "_"), (CaseEvent,), {"__doc__": doc, "event_type": event_type})


CaseOpened = _case_event("casework.case.opened", "A case was opened (from an alert or by an officer).")
CaseStageChanged = _case_event("casework.stage.changed", "A case moved between stages.")
ReferralMade = _case_event("casework.referral.made", "The school referred the case to the Education Welfare Service.")
ReferralAccepted = _case_event("casework.referral.accepted", "The EWS accepted the referral.")
ReferralDeclined = _case_event("casework.referral.declined", "The EWS declined the referral: back to Stage 2.")
LegalActionProposed = _case_event("casework.legal_action.proposed", "Legal action was proposed; an officer decides.")
LegalActionDecided = _case_event("casework.legal_action.decided", "An officer decided on legal action.")
CaseClosed = _case_event("casework.case.closed", "A case was closed with an outcome.")


class _ClockEvent(EventData):
    topic: ClassVar[str] = ESCALATIONS_TOPIC

    case_id: int
    urn: str
    la_code: str
    upn: str
    clock: str = Field(description="review, stage_1_letter, stage_2_letter, apm_follow_up, penalty_notice_payment")
    due_on: date
    link: str


class ClockDue(_ClockEvent):
    """A clock's window opened: a review may now be held (4 weeks after the meeting, by default)."""

    event_type: ClassVar[str] = "casework.clock.due"


class ClockOverdue(_ClockEvent):
    """A casework clock passed its due date: a review, a letter, an APM follow-up, a payment."""

    event_type: ClassVar[str] = "casework.clock.overdue"


# --- the admission register (roll) and children missing education ----------------------------


class _RollEvent(EventData):
    """A change to a school's admission register, for LA systems. No names, dates of birth or
    characteristics: those stay in the CME service, behind its API."""

    topic: ClassVar[str] = ROLL_TOPIC

    urn: str
    la_code: str
    upn: str
    revision: int = Field(description="1 when first recorded; each audited amendment republishes with the next")
    link: str


class PupilAdmitted(_RollEvent):
    """A name was entered on a school's admission register (notified, or detected from its marks)."""

    event_type: ClassVar[str] = "roll.pupil.admitted"

    admission_id: int
    admitted_on: date
    nc_year: str | None
    dual_registration: bool
    source: Literal["notified", "detected"] = Field(
        description="notified: the school's new pupil return; detected: marked in the register with none"
    )


class PupilDeleted(_RollEvent):
    """A name was deleted from a school's admission register, on a ground of Regs 2024 reg 9(1)."""

    event_type: ClassVar[str] = "roll.pupil.deleted"

    deletion_id: int
    deleted_on: date
    ground: str = Field(description="Ground key, e.g. registered_at_another_school")
    ground_code: str = Field(description='Paragraph of Regs 2024 reg 9(1), e.g. "9(1)(a)"')
    destination_known: bool
    destination_urn: str | None
    destination_la_code: str | None


class RollMatched(_RollEvent):
    """Two roll changes of one pupil in the LA resolved each other: a deletion at one school and an
    admission at another (transfer), or two dual-registration admissions."""

    event_type: ClassVar[str] = "roll.pupil.matched"

    kind: Literal["transfer", "dual_registration"]
    admission_id: int
    deletion_id: int | None
    other_urn: str = Field(description="The school the pupil left (transfer) or is also registered at (dual)")


class _NotificationEvent(EventData):
    """A notification clock: a school's new pupil return (addition) or deletion return."""

    topic: ClassVar[str] = CME_TOPIC

    clock_id: int
    urn: str
    la_code: str
    upn: str
    notification: Literal["addition", "deletion"]
    started_on: date
    due_on: date = Field(description="Last day on which the return is on time")
    link: str


class NotificationDue(_NotificationEvent):
    """A return not yet received is due today."""

    event_type: ClassVar[str] = "cme.notification.due"


class NotificationOverdue(_NotificationEvent):
    """A return was not received by the end of its due day: it is missing, and on the CME officer's worklist."""

    event_type: ClassVar[str] = "cme.notification.overdue"


class NotificationReceived(_NotificationEvent):
    """A return arrived, on time or late."""

    event_type: ClassVar[str] = "cme.notification.received"

    received_on: date
    status: Literal["on_time", "late"]


class UnnotifiedJoiner(EventData):
    """A pupil was marked in a school's register with no admission on record: the school owes a
    new pupil return, due from the first mark."""

    event_type: ClassVar[str] = "cme.joiner.unnotified"
    topic: ClassVar[str] = CME_TOPIC

    admission_id: int
    urn: str
    la_code: str
    upn: str
    first_mark_on: date
    due_on: date
    link: str


class PupilUnmarked(EventData):
    """A pupil on a school's roll has had no mark in the school's last N registers."""

    event_type: ClassVar[str] = "cme.pupil.unmarked"
    topic: ClassVar[str] = CME_TOPIC

    admission_id: int
    urn: str
    la_code: str
    upn: str
    sessions: int = Field(description="Registers taken at the school since the pupil's last mark")
    last_marked_on: date | None
    link: str


class _CmeCaseEvent(EventData):
    topic: ClassVar[str] = CME_TOPIC

    case_id: int
    la_code: str
    urn: str | None = Field(description="The school the child was last on the roll of, if known")
    upn: str
    link: str


class CmeCaseOpened(_CmeCaseEvent):
    """A child may be missing education: a CME case opened."""

    event_type: ClassVar[str] = "cme.case.opened"

    reason: str = Field(
        description="deleted_without_destination, continuous_unauthorised_10_days, continuous_absence_20_days "
        "or reported (by an officer or the school)"
    )


class EnquiryLogged(_CmeCaseEvent):
    """A reasonable enquiry was logged on a CME case (who asked and what came of it are behind the link)."""

    event_type: ClassVar[str] = "cme.enquiry.logged"

    enquiry_id: int
    by: Literal["school", "la"]
    method: str
    outcome: str


class CmeCaseClosed(_CmeCaseEvent):
    """The child was located (or CME no longer applies): the case closed with an outcome."""

    event_type: ClassVar[str] = "cme.case.closed"

    outcome: str


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        MarkRecorded,
        MarkAmended,
        RegisterTaken,
        SchoolUpdated,
        MarksPurged,
        AlertRaised,
        AlertCleared,
        CaseOpened,
        CaseStageChanged,
        ReferralMade,
        ReferralAccepted,
        ReferralDeclined,
        LegalActionProposed,
        LegalActionDecided,
        CaseClosed,
        ClockDue,
        ClockOverdue,
        PupilAdmitted,
        PupilDeleted,
        RollMatched,
        NotificationDue,
        NotificationOverdue,
        NotificationReceived,
        UnnotifiedJoiner,
        PupilUnmarked,
        CmeCaseOpened,
        EnquiryLogged,
        CmeCaseClosed,
    )
}


_TYPE_FIELD = re.compile(rb'"type":\s*"([a-z.]+)"')


def parse_event(raw: bytes | str) -> CloudEvent[Any]:
    """Parse a CloudEvent from the wire, validating `data` with the model its type names."""
    if isinstance(raw, bytes) and (found := _TYPE_FIELD.search(raw)):
        # Fast path: the first "type" in the text is usually the envelope's (ours always is);
        # pydantic then parses and validates the JSON in one pass. If the guess was another
        # field's, the envelope read says so and the general path below decides.
        model = EVENT_TYPES.get(found.group(1).decode())
        if model is not None:
            with contextlib.suppress(ValidationError):
                event = _ENVELOPES[model].model_validate_json(raw)
                if event.type == model.event_type:
                    return event
    document = orjson.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("a CloudEvent must be a JSON object")
    model = EVENT_TYPES.get(document.get("type"))  # type: ignore[arg-type]
    if model is None:
        raise ValueError(f"unknown event type {document.get('type')!r}")
    return _ENVELOPES[model].model_validate(document)


_ENVELOPES: dict[type[EventData], type[CloudEvent[Any]]] = {model: CloudEvent[model] for model in EVENT_TYPES.values()}
