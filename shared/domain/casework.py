"""Staged intervention casework as data (domain.md §5 and §7; seed 004 Halton framework and Widnes map; WTISA).

A case moves through the stages by events named in `TRANSITIONS`: which states each event leaves,
where it goes (fixed, chosen by a payload field, or back to the state a closed case came from),
who may send it, which guards must pass and which effects the casework service then carries out
(clocks, counters). Guards read `CaseFacts`, built by the service from the case's stored evidence
records, and name every missing piece of evidence. Everything here is pure: callers pass dates.

Evidence records (`ActionKind` and its details model) are the dated, attributed actions an officer
or school records; the evidence bundle for Stage 3 and court is assembled from them. The docs'
state diagram and workflow JSON are generated from the table, so they cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.domain.calendar import SchoolCalendar

# --- states and roles ----------------------------------------------------------------------


class CaseState(StrEnum):
    """Where a case stands in the staged intervention (domain.md §5)."""

    STAGE_1 = "stage_1"
    STAGE_2 = "stage_2"
    STAGE_3_REFERRED = "stage_3_referred"
    STAGE_3_ACCEPTED = "stage_3_accepted"
    LEGAL_ACTION_PROPOSED = "legal_action_proposed"
    LEGAL_ACTION = "legal_action"
    CLOSED = "closed"


@dataclass(frozen=True)
class StateInfo:
    """A state's human title and what happens in it, for docs and screens."""

    title: str
    description: str


STATES: Mapping[CaseState, StateInfo] = {
    CaseState.STAGE_1: StateInfo(
        "Stage 1 – early intervention",
        "The school contacts parents (calls, texts, emails, home visits, meetings) to learn the reasons for absence "
        "and the barriers, sends the stage 1 letter, checks SEND/EHCP plans and considers early help. Improved: close "
        "and monitor; improving with an agreed plan: stay; not improving or no engagement: stage 2.",
    ),
    CaseState.STAGE_2: StateInfo(
        "Stage 2 – cause for concern",
        "The school (with the EWS if traded) sends the stage 2 letter, holds a school attendance meeting, agrees an "
        "attendance contract (the seeds' parenting contract) or attendance improvement plan with a target between two "
        "dates, and reviews it 4-6 weeks later. A pupil in a MAP, CIN or CP plan needs no separate meeting: the plan "
        "carries the attendance actions, and a referral needs the lead professional's agreement.",
    ),
    CaseState.STAGE_3_REFERRED: StateInfo(
        "Stage 3 – referred to the Education Welfare Service",
        "The school has referred the case to the EWS with its stage 1 and 2 evidence; the EWS accepts it or declines "
        "it back to stage 2 for more action.",
    ),
    CaseState.STAGE_3_ACCEPTED: StateInfo(
        "Stage 3 – accepted by the Education Welfare Service",
        "The EWS has accepted the referral: a penalty notice warning letter, or an attendance planning meeting "
        "(criminal investigation route; it goes ahead and is minuted if parents do not come) with at most one further "
        "APM to review the actions. New information at an APM stops the investigation and returns the case to stage 2.",
    ),
    CaseState.LEGAL_ACTION_PROPOSED: StateInfo(
        "Legal action proposed",
        "Legal action has been proposed, by an LA officer or by the system from policy, and awaits an LA officer's "
        "decision: the system proposes, it never decides.",
    ),
    CaseState.LEGAL_ACTION: StateInfo(
        "Legal action",
        "An LA officer has decided on a penalty notice, a prosecution under s444(1) or s444(1A) Education Act 1996, "
        "an education supervision order or a parenting order.",
    ),
    CaseState.CLOSED: StateInfo(
        "Closed",
        "Closed with an outcome (improved, left school, moved LA, legal outcome, other); it can be reopened to the "
        "state it was closed from.",
    ),
}

OPEN_STATES: frozenset[CaseState] = frozenset(CaseState) - {CaseState.CLOSED}


class Actor(StrEnum):
    """Who sends an event. The system may only open, escalate a stage by alert policy and propose legal action."""

    SCHOOL = "school"
    LA_OFFICER = "la_officer"
    SYSTEM = "system"


# --- evidence records ------------------------------------------------------------------------


class ActionKind(StrEnum):
    """The kinds of dated, attributed evidence record a case holds."""

    CONTACT = "contact"
    LETTER_SENT = "letter_sent"
    SEND_CHECK = "send_check"
    EARLY_HELP = "early_help"
    SCHOOL_ATTENDANCE_MEETING = "school_attendance_meeting"
    ATTENDANCE_CONTRACT = "attendance_contract"
    REVIEW = "review"
    PLAN_ROUTE = "plan_route"
    LEAD_PROFESSIONAL_CONSULTATION = "lead_professional_consultation"
    REFERRAL_DOCUMENT = "referral_document"
    ATTENDANCE_PLANNING_MEETING = "attendance_planning_meeting"
    INTERVIEW_UNDER_CAUTION = "interview_under_caution"
    LEGAL_DECISION = "legal_decision"
    PENALTY_NOTICE_PAID = "penalty_notice_paid"
    NOTE = "note"


class ContactMethod(StrEnum):
    CALL = "call"
    TEXT = "text"
    EMAIL = "email"
    LETTER = "letter"
    HOME_VISIT = "home_visit"
    MEETING = "meeting"


class LetterKind(StrEnum):
    STAGE_1 = "stage_1"
    STAGE_2 = "stage_2"
    STAGE_3 = "stage_3"
    FORMAL_WARNING = "formal_warning"
    PENALTY_NOTICE_WARNING = "penalty_notice_warning"


class SendPlan(StrEnum):
    NONE = "none"
    SEND_SUPPORT_PLAN = "send_support_plan"
    EHCP = "ehcp"
    OTHER = "other"


class EarlyHelpStatus(StrEnum):
    CONSIDERED = "considered"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    NOT_APPROPRIATE = "not_appropriate"


class ContractKind(StrEnum):
    ATTENDANCE_CONTRACT = "attendance_contract"
    ATTENDANCE_IMPROVEMENT_PLAN = "attendance_improvement_plan"


CONTRACT_ALIASES: Mapping[str, ContractKind] = {"parenting_contract": ContractKind.ATTENDANCE_CONTRACT}
"""Older names accepted as input: WTISA renamed the seeds' parenting contract an attendance contract."""


class ReviewOutcome(StrEnum):
    IMPROVED = "improved"
    SOME_IMPROVEMENT = "some_improvement"
    NO_IMPROVEMENT = "no_improvement"
    NO_ENGAGEMENT = "no_engagement"


class PlanKind(StrEnum):
    MAP = "MAP"
    CIN = "CIN"
    CP = "CP"


class LegalDecisionKind(StrEnum):
    PENALTY_NOTICE = "penalty_notice"
    PROSECUTION_S444_1 = "prosecution_s444_1"
    PROSECUTION_S444_1A = "prosecution_s444_1a"
    EDUCATION_SUPERVISION_ORDER = "education_supervision_order"
    PARENTING_ORDER = "parenting_order"
    NO_ACTION = "no_action"


class _Details(BaseModel):
    # Stored as evidence and shown in court bundles: reject unknown fields, never mutate.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Details):
    """Contact with parents or the pupil about attendance (seed 004 stage 1 evidence: dates of contact)."""

    method: ContactMethod = Field(description="How: call, text, email, letter, home_visit or meeting.")
    with_whom: str = Field(min_length=1, description="Who was contacted, by role (e.g. 'mother', 'pupil').")
    summary: str = Field(min_length=1, description="What was discussed, and actions or adjustments agreed.")
    reasons_or_barriers: str | None = Field(
        None, description="Reasons for absence or barriers to attendance learned, in or outside school."
    )


class LetterSent(_Details):
    """A letter posted to the adults with parental responsibility or day-to-day care."""

    letter: LetterKind = Field(
        description="Which letter: stage_1, stage_2, stage_3, formal_warning or penalty_notice_warning."
    )
    posted_on: date = Field(description="Date posted (seed 004: stage 1 letters must show it).")
    address_recorded: bool = Field(
        description="Whether the letter carries the family's full address (seed 004: stage 1 letters must)."
    )


class SendCheck(_Details):
    """The SEND support plan / EHCP check, and whether it meets the need (seed 004 stage 1: schools must)."""

    plan: SendPlan = Field(description="Plan found: none, send_support_plan, ehcp or other.")
    notes: str = Field(min_length=1, description="Whether the plan meets the identified need, or unidentified needs.")


class EarlyHelp(_Details):
    """Early help (ICART) considered, offered, accepted, refused or judged not appropriate."""

    status: EarlyHelpStatus = Field(description="considered, offered, accepted, refused or not_appropriate.")
    notes: str = Field("", description="Details; why, when early help is not appropriate (seed 004 asks for it).")

    @model_validator(mode="after")
    def _not_appropriate_says_why(self) -> EarlyHelp:
        if self.status is EarlyHelpStatus.NOT_APPROPRIATE and not self.notes.strip():
            raise ValueError("early help judged not appropriate needs notes showing it was considered")
        return self


class SchoolAttendanceMeeting(_Details):
    """A school attendance meeting (SAM): mandatory at stage 2, with actions and a target between two dates."""

    held_on: date = Field(description="Date of the meeting.")
    attendees: list[str] = Field(min_length=1, description="Who attended, by role; parents' absence is recorded too.")
    barriers: list[str] = Field(default_factory=list, description="Barriers to attendance discussed.")
    actions: list[str] = Field(min_length=1, description="Actions agreed, for parents, school and others.")
    target_percent: Decimal = Field(gt=0, le=100, description="Attendance target, in percent of possible sessions.")
    target_from: date = Field(description="First day of the target period.")
    target_to: date = Field(description="Last day of the target period; after target_from.")

    @model_validator(mode="after")
    def _target_between_two_dates(self) -> SchoolAttendanceMeeting:
        if self.target_from >= self.target_to:
            raise ValueError("target_from must be before target_to")
        return self


class AttendanceContract(_Details):
    """An attendance contract (WTISA; the seeds' parenting contract) or attendance improvement plan."""

    kind: ContractKind = Field(
        description="attendance_contract or attendance_improvement_plan; 'parenting_contract' is accepted as "
        "attendance_contract."
    )
    agreed_on: date = Field(description="Date agreed with the parents.")
    target_percent: Decimal = Field(gt=0, le=100, description="Attendance target, in percent of possible sessions.")
    review_due: date | None = Field(None, description="Review date set at the meeting, if one was (4-6 weeks on).")

    @field_validator("kind", mode="before")
    @classmethod
    def _seed_alias(cls, value: Any) -> Any:
        return CONTRACT_ALIASES.get(value, value) if isinstance(value, str) else value


class Review(_Details):
    """A review of the stage 2 plan at the end of its 4-6 week period."""

    held_on: date = Field(description="Date of the review.")
    outcome: ReviewOutcome = Field(description="improved, some_improvement, no_improvement or no_engagement.")
    notes: str = Field("", description="Attendance levels, impact of actions, engagement, pupil's view.")


class PlanRoute(_Details):
    """The pupil is in a MAP, Child in Need or Child Protection plan, which addresses attendance."""

    plan: PlanKind = Field(description="MAP, CIN or CP.")
    attendance_actions: list[str] = Field(
        default_factory=list, description="The plan's actions on attendance; none means a SAM is still needed."
    )


class LeadProfessionalConsultation(_Details):
    """Consultation with the plan's lead professional or social worker before an enforcement referral."""

    with_role: Literal["lead_professional", "social_worker"] = Field(description="lead_professional or social_worker.")
    held_on: date = Field(description="Date of the consultation.")
    agreed_enforcement_referral: bool = Field(description="Whether a referral for enforcement was agreed.")


class ReferralDocument(_Details):
    """A document in the referral or court bundle (referral form, minutes, attendance certificate)."""

    title: str = Field(min_length=1, description="What the document is.")
    reference: str = Field(min_length=1, description="Where it is stored (document id or reference).")


class AttendancePlanningMeeting(_Details):
    """An attendance planning meeting (APM): the criminal investigation route at stage 3."""

    held_on: date = Field(description="Date of the meeting.")
    parents_present: bool = Field(description="Whether parents attended; the APM goes ahead and is minuted if not.")
    minutes: str = Field(min_length=1, description="Minutes, including any failure to attend.")
    actions: list[str] = Field(default_factory=list, description="Actions set for parents, school and professionals.")


class InterviewUnderCaution(_Details):
    """An interview under caution (PACE 1984), required before a prosecution under s444(1A)."""

    held_on: date = Field(description="Date of the interview.")


class LegalDecision(_Details):
    """An LA officer's decision on legal action."""

    decision: LegalDecisionKind = Field(
        description="penalty_notice, prosecution_s444_1, prosecution_s444_1a, education_supervision_order, "
        "parenting_order or no_action."
    )
    decided_on: date = Field(description="Date of the decision; for a penalty notice, its issue date.")
    parent_ref: str | None = Field(
        None,
        min_length=1,
        description="Opaque reference to the parent a penalty notice is issued to (never a name); required for a "
        "penalty notice, which is per parent per child.",
    )
    notes: str = Field("", description="Reasons and details.")

    @model_validator(mode="after")
    def _notice_names_a_parent(self) -> LegalDecision:
        if self.decision is LegalDecisionKind.PENALTY_NOTICE and self.parent_ref is None:
            raise ValueError("a penalty notice decision needs parent_ref: notices are per parent per child")
        return self


class PenaltyNoticePaid(_Details):
    """Payment of a penalty notice, which stops its payment clocks."""

    paid_on: date = Field(description="Date paid.")


class Note(_Details):
    """A free-text note on the case."""

    text: str = Field(min_length=1, description="The note.")


ACTION_DETAILS: Mapping[ActionKind, type[BaseModel]] = {
    ActionKind.CONTACT: Contact,
    ActionKind.LETTER_SENT: LetterSent,
    ActionKind.SEND_CHECK: SendCheck,
    ActionKind.EARLY_HELP: EarlyHelp,
    ActionKind.SCHOOL_ATTENDANCE_MEETING: SchoolAttendanceMeeting,
    ActionKind.ATTENDANCE_CONTRACT: AttendanceContract,
    ActionKind.REVIEW: Review,
    ActionKind.PLAN_ROUTE: PlanRoute,
    ActionKind.LEAD_PROFESSIONAL_CONSULTATION: LeadProfessionalConsultation,
    ActionKind.REFERRAL_DOCUMENT: ReferralDocument,
    ActionKind.ATTENDANCE_PLANNING_MEETING: AttendancePlanningMeeting,
    ActionKind.INTERVIEW_UNDER_CAUTION: InterviewUnderCaution,
    ActionKind.LEGAL_DECISION: LegalDecision,
    ActionKind.PENALTY_NOTICE_PAID: PenaltyNoticePaid,
    ActionKind.NOTE: Note,
}

STAGE_LETTERS: Mapping[CaseState, LetterKind] = {
    CaseState.STAGE_1: LetterKind.STAGE_1,
    CaseState.STAGE_2: LetterKind.STAGE_2,
}
"""The letter each stage owes on opening: its letter clock stops when one of this kind is recorded."""


# --- event payloads ------------------------------------------------------------------------


class OpenCase(_Details):
    """Open a case at stage 1."""

    reason: str = Field(min_length=1, description="Why the case is opened.")
    alert_rule_id: str | None = Field(None, description="The threshold rule whose alert opened it, if one did.")


class Escalate(_Details):
    """Move a stage 1 case to stage 2."""

    reason: str = Field(min_length=1, description="Why: not improving, or no engagement, despite stage 1.")
    alert_rule_id: str | None = Field(None, description="The threshold rule whose alert escalated it, if one did.")


class Referral(_Details):
    """Refer the case to the Education Welfare Service for stage 3."""

    summary: str = Field(min_length=1, description="Why enforcement is sought and the impact of the absence.")


class Reason(_Details):
    """A reason, for events that need one."""

    reason: str = Field(min_length=1, description="Why.")


class EwsAccepted(_Details):
    """The EWS accepts the referral and chooses its route."""

    route: Literal["penalty_notice_warning_letter", "attendance_planning_meeting"] = Field(
        description="penalty_notice_warning_letter (traded) or attendance_planning_meeting (criminal investigation)."
    )
    notes: str = Field("", description="Details of the decision.")


class ProposeLegalAction(_Details):
    """Propose legal action for an LA officer to decide."""

    proposed: LegalDecisionKind = Field(description="The action proposed; not no_action.")
    reason: str = Field(min_length=1, description="Why, e.g. the rule or missed target behind the proposal.")

    @field_validator("proposed")
    @classmethod
    def _proposes_an_action(cls, value: LegalDecisionKind) -> LegalDecisionKind:
        if value is LegalDecisionKind.NO_ACTION:
            raise ValueError("propose an action, not no_action")
        return value


class CloseOutcome(StrEnum):
    IMPROVED = "improved"
    LEFT_SCHOOL = "left_school"
    MOVED_LA = "moved_la"
    LEGAL_OUTCOME = "legal_outcome"
    OTHER = "other"


class CloseCase(_Details):
    """Close the case with an outcome."""

    outcome: CloseOutcome = Field(description="improved, left_school, moved_la, legal_outcome or other.")
    notes: str = Field("", description="Details; required when the outcome is other.")

    @model_validator(mode="after")
    def _other_says_what(self) -> CloseCase:
        if self.outcome is CloseOutcome.OTHER and not self.notes.strip():
            raise ValueError("closing with outcome 'other' needs notes")
        return self


# --- facts the guards read -------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One stored evidence record: its kind, the date it happened and its details.

    `details` may be given as a mapping (as stored); it is validated into the kind's model.
    """

    kind: ActionKind
    on: date
    details: BaseModel

    def __post_init__(self) -> None:
        kind = ActionKind(self.kind)
        model = ACTION_DETAILS[kind]
        details = self.details if isinstance(self.details, model) else model.model_validate(self.details)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "details", details)


@dataclass(frozen=True)
class PenaltyNoticeIssued:
    """A penalty notice issued for this child, to one parent (by opaque reference)."""

    issued_on: date
    parent_ref: str


@dataclass(frozen=True)
class CaseFacts:
    """What guards may know about a case, built by the service from its stored records.

    `CaseFacts()` is "no case yet", the state `open` leaves. `previous_state` is the state before the
    current one (self-loops do not change it, nor `state_entered_on`), so for a closed case it is the
    state it was closed from. `stage_2_started_on` is the first day the case reached stage 2, which
    separates stage 1 early help from the further offer at stage 2. `apm_count` counts APMs in the
    current investigation (since the EWS last accepted the case). `penalty_notices` are all notices
    for this child within reach of the 3-year limit, this case's and earlier ones.
    """

    state: CaseState | None = None
    state_entered_on: date | None = None
    previous_state: CaseState | None = None
    stage_2_started_on: date | None = None
    evidence: tuple[Evidence, ...] = ()
    apm_count: int = 0
    penalty_notices: tuple[PenaltyNoticeIssued, ...] = ()

    def records(self, kind: ActionKind) -> list[Evidence]:
        """The records of one kind, oldest first."""
        return sorted((record for record in self.evidence if record.kind is kind), key=lambda record: record.on)

    def details(self, kind: ActionKind) -> list[Any]:
        """The details of the records of one kind, oldest first."""
        return [record.details for record in self.records(kind)]

    @property
    def plan_route(self) -> PlanRoute | None:
        """The latest MAP/CIN/CP plan record, if the pupil is on that route."""
        plans = self.details(ActionKind.PLAN_ROUTE)
        return plans[-1] if plans else None


def facts_from_actions(
    actions: Iterable[Evidence],
    *,
    state: CaseState | None,
    state_entered_on: date | None,
    previous_state: CaseState | None = None,
    stage_2_started_on: date | None = None,
    investigation_started_on: date | None = None,
    earlier_penalty_notices: Iterable[PenaltyNoticeIssued] = (),
) -> CaseFacts:
    """CaseFacts from a case's stored records and stage history.

    APMs are counted from `investigation_started_on` (the latest EWS acceptance; all if None). Penalty
    notices are this case's penalty notice decisions plus `earlier_penalty_notices` from the child's
    other cases.
    """
    evidence = tuple(sorted(actions, key=lambda record: record.on))
    apm_count = sum(
        1
        for record in evidence
        if record.kind is ActionKind.ATTENDANCE_PLANNING_MEETING
        and (investigation_started_on is None or record.on >= investigation_started_on)
    )
    notices = [
        PenaltyNoticeIssued(record.details.decided_on, record.details.parent_ref)
        for record in evidence
        if record.kind is ActionKind.LEGAL_DECISION and record.details.decision is LegalDecisionKind.PENALTY_NOTICE
    ]
    return CaseFacts(
        state=state,
        state_entered_on=state_entered_on,
        previous_state=previous_state,
        stage_2_started_on=stage_2_started_on,
        evidence=evidence,
        apm_count=apm_count,
        penalty_notices=(*earlier_penalty_notices, *notices),
    )


# --- guards -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MissingEvidence:
    """One reason a guard refuses: a stable id and a message for people."""

    id: str
    message: str


Guard = Callable[[CaseFacts, Any], list[MissingEvidence]]

GUARDS: dict[str, Guard] = {}
"""Guard id -> pure check of (facts, parsed payload); its docstring's first line describes it."""


def _guard(guard_id: str) -> Callable[[Guard], Guard]:
    def register(check: Guard) -> Guard:
        GUARDS[guard_id] = check
        return check

    return register


MAX_ATTENDANCE_PLANNING_MEETINGS: Final = 2
"""The first APM plus at most one further APM to review its actions (seed 004)."""

PENALTY_NOTICE_LIMIT: Final = 2
"""At most two penalty notices to the same parent for the same child within the period (PN framework)."""

PENALTY_NOTICE_PERIOD_YEARS: Final = 3


def _years_before(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # 29 February
        return d.replace(year=d.year - years, day=28)


def _notices_in_period(notices: Iterable[date], on: date) -> list[date]:
    """Notices issued in the 3 years up to `on`; on the anniversary an old notice no longer counts."""
    start = _years_before(on, PENALTY_NOTICE_PERIOD_YEARS)
    return sorted(notice for notice in notices if start < notice <= on)


MISSING_EVIDENCE: Mapping[str, str] = {
    "stage_1_contact": "No dated contact with parents has been recorded",
    "reasons_or_barriers": "No contact records the reasons for absence or the barriers to attendance",
    "early_help_considered": "No record shows early help was considered at stage 1",
    "stage_1_letter": "No stage 1 letter has been recorded",
    "stage_1_letter_address": "No stage 1 letter records the family's full address",
    "stage_2_letter": "No stage 2 letter has been recorded",
    "school_attendance_meeting": "No school attendance meeting (actions and a target between two dates) has been "
    "recorded",
    "stage_2_review": "No review of the stage 2 plan has been recorded",
    "stage_2_review_outcome": "The latest review found improvement: a further stage 2 review comes before a referral",
    "further_early_help_offer": "No further offer of early help at stage 2 has been recorded (owed when early help was "
    "not offered, or was refused, at stage 1)",
    "plan_attendance_actions": "The MAP/CIN/CP plan records no attendance actions, so a school attendance meeting "
    "is still needed",
    "lead_professional_consultation": "No consultation with the lead professional or social worker has been recorded",
    "enforcement_referral_agreed": "The lead professional or social worker has not agreed the enforcement referral",
    "plan_to_review": "No school attendance meeting, attendance contract or MAP/CIN/CP plan has been recorded to "
    "review",
    "attendance_planning_meeting_limit": "Two attendance planning meetings have already been held in this "
    "investigation: the first and the one further review",
    "enforcement_step": "No attendance planning meeting has been held and no penalty notice warning letter sent",
    "penalty_notice_limit": "This parent has already had two penalty notices for this child within 3 years: consider "
    "other action, such as prosecution",
    "interview_under_caution": "No interview under caution has been recorded: it comes before a prosecution under "
    "s444(1A)",
    "closed_from": "The state the case was closed from is not recorded",
}
"""Every id a guard may report, with its message: stable, so clients may key on the id."""


def _missing(*checks: tuple[bool, str]) -> list[MissingEvidence]:
    """The failed checks, in order, as MissingEvidence."""
    return [MissingEvidence(check_id, MISSING_EVIDENCE[check_id]) for ok, check_id in checks if not ok]


def _has_letter(facts: CaseFacts, kind: LetterKind) -> bool:
    return any(letter.letter is kind for letter in facts.details(ActionKind.LETTER_SENT))


@_guard("stage_1_evidence")
def _stage_1_evidence(facts: CaseFacts, payload: Any) -> list[MissingEvidence]:
    """Stage 1 has been tried: at least one dated contact with parents and a stage 1 letter."""
    return _missing(
        (bool(facts.records(ActionKind.CONTACT)), "stage_1_contact"),
        (_has_letter(facts, LetterKind.STAGE_1), "stage_1_letter"),
    )


@_guard("plan_to_review")
def _plan_to_review(facts: CaseFacts, payload: Any) -> list[MissingEvidence]:
    """There is a plan to review: a school attendance meeting, an attendance contract or a MAP/CIN/CP plan."""
    kinds = (ActionKind.SCHOOL_ATTENDANCE_MEETING, ActionKind.ATTENDANCE_CONTRACT, ActionKind.PLAN_ROUTE)
    return _missing((any(facts.records(kind) for kind in kinds), "plan_to_review"))


@_guard("referral_evidence")
def _referral_evidence(facts: CaseFacts, payload: Any) -> list[MissingEvidence]:
    """Seed 004's referral evidence: stage 1, the stage 2 letter, and the SAM route or the MAP/CIN/CP route.

    Stage 1: dated contacts, reasons or barriers, early help considered, a stage 1 letter with the
    family's address. Stage 2: a stage 2 letter, then either a school attendance meeting, a review
    finding no improvement or no engagement, and a further early help offer when one is owed; or,
    for a pupil in a MAP/CIN/CP plan, the plan's attendance actions. A pupil in such a plan always
    needs the lead professional's or social worker's agreement to the referral.
    """
    stage_2_on = facts.stage_2_started_on or facts.state_entered_on
    early_help = facts.records(ActionKind.EARLY_HELP)
    early_help_1 = [record.details for record in early_help if stage_2_on is None or record.on < stage_2_on]
    early_help_2 = [record.details for record in early_help if stage_2_on is not None and record.on >= stage_2_on]
    contacts = facts.details(ActionKind.CONTACT)
    stage_1_letters = [
        letter for letter in facts.details(ActionKind.LETTER_SENT) if letter.letter is LetterKind.STAGE_1
    ]
    stage_1 = _missing(
        (bool(contacts), "stage_1_contact"),
        (any(contact.reasons_or_barriers for contact in contacts), "reasons_or_barriers"),
        (bool(early_help_1), "early_help_considered"),
        (bool(stage_1_letters), "stage_1_letter"),
        (not stage_1_letters or any(letter.address_recorded for letter in stage_1_letters), "stage_1_letter_address"),
    )
    reviews = facts.details(ActionKind.REVIEW)
    # Seed 004: a further offer is owed "if this wasn't offered or was refused at Stage 1".
    offer_owed = not early_help_1 or early_help_1[-1].status not in (EarlyHelpStatus.OFFERED, EarlyHelpStatus.ACCEPTED)
    offered = (EarlyHelpStatus.OFFERED, EarlyHelpStatus.ACCEPTED, EarlyHelpStatus.REFUSED)
    sam_route = _missing(
        (bool(facts.records(ActionKind.SCHOOL_ATTENDANCE_MEETING)), "school_attendance_meeting"),
        (bool(reviews), "stage_2_review"),
        (
            not reviews or reviews[-1].outcome in (ReviewOutcome.NO_IMPROVEMENT, ReviewOutcome.NO_ENGAGEMENT),
            "stage_2_review_outcome",
        ),
        (not offer_owed or any(offer.status in offered for offer in early_help_2), "further_early_help_offer"),
    )
    route = sam_route
    plan = facts.plan_route
    if plan is not None:
        consultations = facts.details(ActionKind.LEAD_PROFESSIONAL_CONSULTATION)
        route = [
            *(sam_route if not plan.attendance_actions else []),
            *_missing(
                (not sam_route or bool(plan.attendance_actions), "plan_attendance_actions"),
                (bool(consultations), "lead_professional_consultation"),
                (
                    not consultations or any(consult.agreed_enforcement_referral for consult in consultations),
                    "enforcement_referral_agreed",
                ),
            ),
        ]
    return [*stage_1, *_missing((_has_letter(facts, LetterKind.STAGE_2), "stage_2_letter")), *route]


@_guard("attendance_planning_meeting_limit")
def _attendance_planning_meeting_limit(facts: CaseFacts, payload: Any) -> list[MissingEvidence]:
    """At most two APMs per investigation: the first and one further to review its actions."""
    return _missing((facts.apm_count < MAX_ATTENDANCE_PLANNING_MEETINGS, "attendance_planning_meeting_limit"))


@_guard("enforcement_step")
def _enforcement_step(facts: CaseFacts, payload: Any) -> list[MissingEvidence]:
    """The accepted route has been followed: an APM held or a penalty notice warning letter sent."""
    return _missing((facts.apm_count > 0 or _has_letter(facts, LetterKind.PENALTY_NOTICE_WARNING), "enforcement_step"))


@_guard("penalty_notice_limit")
def _penalty_notice_limit(facts: CaseFacts, decision: LegalDecision) -> list[MissingEvidence]:
    """A penalty notice: fewer than two earlier notices to the same parent for this child within 3 years."""
    if decision.decision is not LegalDecisionKind.PENALTY_NOTICE:
        return []
    earlier = [notice.issued_on for notice in facts.penalty_notices if notice.parent_ref == decision.parent_ref]
    return _missing(
        (len(_notices_in_period(earlier, decision.decided_on)) < PENALTY_NOTICE_LIMIT, "penalty_notice_limit")
    )


@_guard("interview_under_caution")
def _interview_under_caution(facts: CaseFacts, decision: LegalDecision) -> list[MissingEvidence]:
    """A prosecution under s444(1A): an interview under caution on or before the decision."""
    if decision.decision is not LegalDecisionKind.PROSECUTION_S444_1A:
        return []
    interviews = facts.details(ActionKind.INTERVIEW_UNDER_CAUTION)
    return _missing(
        (any(interview.held_on <= decision.decided_on for interview in interviews), "interview_under_caution")
    )


@_guard("closed_from_known")
def _closed_from_known(facts: CaseFacts, payload: Any) -> list[MissingEvidence]:
    """The state the case was closed from is known, so reopening can return to it."""
    return _missing((facts.previous_state in OPEN_STATES, "closed_from"))


# --- effects ----------------------------------------------------------------------------------

EFFECTS: Mapping[str, str] = {
    "start_letter_clock": "Start the entered stage's letter clock: its letter (STAGE_LETTERS) is due by "
    "letter_due(entered on, calendar, ClockPolicy.letter_school_days); a letter_sent record of that kind stops it.",
    "start_review_clock": "Start a review clock for a new review period: review_due(date, policy, calendar).",
    "stop_review_clock": "Stop the running review clock: the review has been held.",
    "stop_stage_clocks": "Stop the letter, review and APM follow-up clocks of the stage being left; penalty notice "
    "payment clocks keep running.",
    "reset_apm_count": "A new investigation starts: set the case's APM count to 0.",
    "count_apm": "Add one to the case's APM count.",
    "start_apm_follow_up_clock": "Start the APM follow-up clock: the further APM or a decision is due "
    "apm_follow_up_due(held_on, ClockPolicy.apm_follow_up_weeks).",
    "start_payment_clocks": "A penalty notice is issued: start its payment deadlines, "
    "penalty_notice_amounts(decided_on, earlier notices to that parent, policy); a penalty_notice_paid record stops "
    "them.",
    "stop_letter_clock": "A letter of the current stage's kind (STAGE_LETTERS) was sent: stop its letter clock.",
    "stop_payment_clocks": "The penalty notice was paid: stop its payment clocks.",
}
"""Effect id -> what the casework service does when a transition (or a recorded action) names it."""

ACTION_EFFECTS: Mapping[ActionKind, tuple[str, ...]] = {
    ActionKind.LETTER_SENT: ("stop_letter_clock",),
    ActionKind.SCHOOL_ATTENDANCE_MEETING: ("start_review_clock",),
    ActionKind.ATTENDANCE_CONTRACT: ("start_review_clock",),
    ActionKind.PENALTY_NOTICE_PAID: ("stop_payment_clocks",),
}
"""Effects of recording evidence outside any event. A contract's own review_due, if set, wins over review_due()."""


# --- the transition table ---------------------------------------------------------------------

PREVIOUS_STATE: Final = "previous_state"
"""A target meaning "the state the case was in before the current one" (reopen: the state closed from)."""

Target = CaseState | Literal["previous_state"]


@dataclass(frozen=True)
class Transition:
    """One row of the workflow: `event` from any of `source` to `target`, for the roles in `who`.

    `source` holds None for "no case yet". When `branch_on` names a payload field, `target_when`
    maps that field's values to other targets and `effects_when` adds effects for them. `payload`
    is the model the event's payload must validate as; `records` says that payload is also an
    evidence record of that kind, for the service to store.
    """

    event: str
    source: frozenset[CaseState | None]
    target: Target
    who: frozenset[Actor]
    payload: type[BaseModel]
    description: str
    guards: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()
    branch_on: str | None = None
    target_when: Mapping[str, CaseState] = field(default_factory=dict)
    effects_when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    records: ActionKind | None = None

    def __post_init__(self) -> None:
        # The table is data other code reads: catch a mistyped id when the module loads.
        unknown = [name for name in self.guards if name not in GUARDS]
        unknown += [
            name
            for name in (*self.effects, *(e for es in self.effects_when.values() for e in es))
            if name not in EFFECTS
        ]
        if unknown:
            raise ValueError(f"transition {self.event!r} names unknown guards or effects: {', '.join(unknown)}")
        if (self.target_when or self.effects_when) and self.branch_on not in self.payload.model_fields:
            raise ValueError(f"transition {self.event!r} branches on a field its payload lacks: {self.branch_on!r}")
        if self.records is not None and ACTION_DETAILS[self.records] is not self.payload:
            raise ValueError(f"transition {self.event!r} records {self.records} but its payload is another model")

    def targets(self) -> tuple[Target, ...]:
        """Every target the transition can reach, the default first."""
        return tuple(dict.fromkeys((self.target, *self.target_when.values())))


_SCHOOL_OR_LA = frozenset({Actor.SCHOOL, Actor.LA_OFFICER})
_LA = frozenset({Actor.LA_OFFICER})
_ANYONE = frozenset(Actor)
_LA_OR_SYSTEM = frozenset({Actor.LA_OFFICER, Actor.SYSTEM})
_SCHOOL_LED = frozenset({CaseState.STAGE_1, CaseState.STAGE_2})

TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        "open",
        frozenset({None}),
        CaseState.STAGE_1,
        _ANYONE,
        OpenCase,
        "Open a case at stage 1: by the system when a policy rule's alert says so (e.g. support map step 1), or by "
        "the school or an LA officer.",
        effects=("start_letter_clock",),
    ),
    Transition(
        "escalate_to_stage_2",
        frozenset({CaseState.STAGE_1}),
        CaseState.STAGE_2,
        _ANYONE,
        Escalate,
        "Not improving, or no engagement, despite stage 1: move to stage 2 (the system may, by alert policy).",
        guards=("stage_1_evidence",),
        effects=("stop_stage_clocks", "start_letter_clock"),
    ),
    Transition(
        "review_recorded",
        frozenset({CaseState.STAGE_2}),
        CaseState.STAGE_2,
        _SCHOOL_OR_LA,
        Review,
        "The stage 2 plan is reviewed: improved closes the case (outcome improved); some improvement starts a further "
        "review period; no improvement or no engagement stays at stage 2, where a referral may follow.",
        guards=("plan_to_review",),
        effects=("stop_review_clock",),
        branch_on="outcome",
        target_when={ReviewOutcome.IMPROVED: CaseState.CLOSED},
        effects_when={
            ReviewOutcome.IMPROVED: ("stop_stage_clocks",),
            ReviewOutcome.SOME_IMPROVEMENT: ("start_review_clock",),
        },
        records=ActionKind.REVIEW,
    ),
    Transition(
        "refer_to_ews",
        frozenset({CaseState.STAGE_2}),
        CaseState.STAGE_3_REFERRED,
        _SCHOOL_OR_LA,
        Referral,
        "Refer to the Education Welfare Service for stage 3, with the stage 1 and stage 2 evidence (or the MAP/CIN/CP "
        "route's).",
        guards=("referral_evidence",),
        effects=("stop_stage_clocks",),
    ),
    Transition(
        "ews_declined",
        frozenset({CaseState.STAGE_3_REFERRED}),
        CaseState.STAGE_2,
        _LA,
        Reason,
        "The EWS declines the referral (e.g. evidence not sufficient): back to stage 2 for more action.",
    ),
    Transition(
        "ews_accepted",
        frozenset({CaseState.STAGE_3_REFERRED}),
        CaseState.STAGE_3_ACCEPTED,
        _LA,
        EwsAccepted,
        "The EWS accepts the referral: a penalty notice warning letter or an attendance planning meeting.",
        effects=("reset_apm_count",),
    ),
    Transition(
        "attendance_planning_meeting_held",
        frozenset({CaseState.STAGE_3_ACCEPTED}),
        CaseState.STAGE_3_ACCEPTED,
        _LA,
        AttendancePlanningMeeting,
        "An attendance planning meeting is held (minuted, with or without parents): the first, or the one further "
        "APM reviewing its actions.",
        guards=("attendance_planning_meeting_limit",),
        effects=("count_apm", "start_apm_follow_up_clock"),
        records=ActionKind.ATTENDANCE_PLANNING_MEETING,
    ),
    Transition(
        "new_information",
        frozenset({CaseState.STAGE_3_ACCEPTED}),
        CaseState.STAGE_2,
        _LA,
        Reason,
        "New information (e.g. an unsupported additional need) stops the investigation: back to stage 2.",
        effects=("stop_stage_clocks",),
    ),
    Transition(
        "propose_legal_action",
        frozenset({CaseState.STAGE_3_ACCEPTED, CaseState.LEGAL_ACTION}),
        CaseState.LEGAL_ACTION_PROPOSED,
        _LA_OR_SYSTEM,
        ProposeLegalAction,
        "Propose legal action for an LA officer to decide: after the accepted route, or after earlier legal action "
        "(e.g. an unpaid penalty notice, which the LA must prosecute or withdraw).",
        guards=("enforcement_step",),
        effects=("stop_stage_clocks",),
    ),
    Transition(
        "decide_legal_action",
        frozenset({CaseState.LEGAL_ACTION_PROPOSED}),
        CaseState.LEGAL_ACTION,
        _LA,
        LegalDecision,
        "An LA officer decides: penalty notice (at most two to a parent for a child in 3 years), prosecution under "
        "s444(1) or s444(1A) (after an interview under caution), education supervision order or parenting order; "
        "no_action returns the case to stage 3.",
        guards=("penalty_notice_limit", "interview_under_caution"),
        branch_on="decision",
        target_when={LegalDecisionKind.NO_ACTION: CaseState.STAGE_3_ACCEPTED},
        effects_when={LegalDecisionKind.PENALTY_NOTICE: ("start_payment_clocks",)},
        records=ActionKind.LEGAL_DECISION,
    ),
    Transition(
        "reject_legal_action",
        frozenset({CaseState.LEGAL_ACTION_PROPOSED}),
        CaseState.STAGE_3_ACCEPTED,
        _LA,
        Reason,
        "An LA officer rejects the proposal: back to stage 3.",
    ),
    Transition(
        "close",
        _SCHOOL_LED,
        CaseState.CLOSED,
        _SCHOOL_OR_LA,
        CloseCase,
        "Close a school-led case with an outcome.",
        effects=("stop_stage_clocks",),
    ),
    Transition(
        "close",
        OPEN_STATES - _SCHOOL_LED,
        CaseState.CLOSED,
        _LA,
        CloseCase,
        "Close an LA-led case (stage 3 and legal action) with an outcome.",
        effects=("stop_stage_clocks",),
    ),
    Transition(
        "reopen",
        frozenset({CaseState.CLOSED}),
        PREVIOUS_STATE,
        _SCHOOL_OR_LA,
        Reason,
        "Reopen a closed case in the state it was closed from.",
        guards=("closed_from_known",),
    ),
)

EVENTS: tuple[str, ...] = tuple(dict.fromkeys(transition.event for transition in TRANSITIONS))


# --- applying an event --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What an allowed event does: the state to move to and the effects for the service to carry out.

    `payload` is the validated payload; when `records` is set the service stores it as evidence of
    that kind. `close_outcome` is set when the case closes.
    """

    event: str
    source: CaseState | None
    target: CaseState
    effects: tuple[str, ...]
    payload: BaseModel
    records: ActionKind | None
    close_outcome: CloseOutcome | None

    @property
    def changes_state(self) -> bool:
        """False for a self-loop, which leaves `state_entered_on` and `previous_state` alone."""
        return self.source != self.target


RefusalKind = Literal["not_allowed", "forbidden_role", "invalid_payload", "missing_evidence"]


class TransitionRefused(Exception):
    """An event was refused: not allowed from the state, not for the role, a bad payload or missing evidence."""

    def __init__(self, *, kind: RefusalKind, message: str, missing: Sequence[MissingEvidence] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.missing = tuple(missing)


def _state_name(state: CaseState | None) -> str:
    return "no case" if state is None else str(state)


def find_transition(state: CaseState | None, event: str) -> Transition | None:
    """The row for `event` from `state`, if the table has one."""
    return next((row for row in TRANSITIONS if row.event == event and state in row.source), None)


def available_transitions(state: CaseState | None, role: Actor | str) -> list[Transition]:
    """The rows `role` may attempt from `state` (guards not evaluated), in table order."""
    return [row for row in TRANSITIONS if state in row.source and role in row.who]


def apply(
    state: CaseState | None,
    event: str,
    payload: BaseModel | Mapping[str, Any] | None,
    facts: CaseFacts,
    role: Actor | str,
) -> Outcome:
    """Decide what `event` does to a case in `state`, or raise TransitionRefused.

    Checks in order: the event is allowed from the state, the role may send it, the payload is
    valid, then every guard, reporting all missing evidence at once.
    """
    if facts.state != state:
        raise ValueError(f"facts describe a case in {_state_name(facts.state)}, not {_state_name(state)}")
    if event not in EVENTS:
        raise TransitionRefused(kind="not_allowed", message=f"unknown event {event!r}; known: {', '.join(EVENTS)}")
    row = find_transition(state, event)
    if row is None:
        raise TransitionRefused(kind="not_allowed", message=f"{event} is not allowed from {_state_name(state)}")
    if role not in row.who:
        raise TransitionRefused(
            kind="forbidden_role",
            message=f"{event} from {_state_name(state)} may be sent by {', '.join(sorted(row.who))}, not {role}",
        )
    try:
        parsed = payload if isinstance(payload, row.payload) else row.payload.model_validate(payload or {})
    except ValidationError as exc:
        problems = "; ".join(".".join(map(str, error["loc"])) + ": " + error["msg"] for error in exc.errors())
        raise TransitionRefused(kind="invalid_payload", message=f"{event}: {problems}") from None
    missing = [item for guard in row.guards for item in GUARDS[guard](facts, parsed)]
    if missing:
        raise TransitionRefused(
            kind="missing_evidence",
            message=f"{event} needs: " + "; ".join(item.message for item in missing),
            missing=missing,
        )
    branch = getattr(parsed, row.branch_on) if row.branch_on else None
    target = row.target_when.get(branch, row.target)
    if target == PREVIOUS_STATE:
        target = facts.previous_state  # closed_from_known has checked it
    # Both ways into closed carry an `outcome`: close's, or a review's "improved".
    close_outcome = CloseOutcome(parsed.outcome) if target is CaseState.CLOSED else None
    return Outcome(
        event=event,
        source=state,
        target=target,
        effects=(*row.effects, *row.effects_when.get(branch, ())),
        payload=parsed,
        records=row.records,
        close_outcome=close_outcome,
    )


# --- clocks -------------------------------------------------------------------------------------

_SCHOOL_DAYS_PER_WEEK = 5


class ClockPolicy(BaseModel):
    """Casework deadlines and penalty notice amounts; defaults are domain.md §5's national figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    review_min_weeks: int = Field(4, ge=1, description="Earliest review, in weeks after the SAM or contract (004: 4).")
    review_max_weeks: int = Field(6, ge=1, description="Latest review, in weeks after the SAM or contract (004: 6).")
    review_in_school_weeks: bool = Field(
        False,
        description="Count the review period in school weeks of 5 school days on the school's calendar, so holidays "
        "do not shorten it (local practice, configurable; seed 004 says weeks).",
    )
    letter_school_days: int = Field(
        5,
        ge=0,
        description="School days after a stage opens by which its letter should be posted (domain.md §5 timers; the "
        "number is unconfirmed local practice, configurable).",
    )
    apm_follow_up_weeks: int = Field(
        6,
        ge=1,
        description="Weeks after an APM by which the further APM or a decision is due (unconfirmed, configurable).",
    )
    penalty_notice_early_amount: Decimal = Field(
        Decimal("80"), gt=0, description="A first notice paid within the early period, in pounds (PN framework: 80)."
    )
    penalty_notice_early_days: int = Field(21, ge=1, description="Days of the early period (PN framework: 21).")
    penalty_notice_full_amount: Decimal = Field(
        Decimal("160"),
        gt=0,
        description="A first notice paid after the early period, or any second notice, in pounds (PN framework: 160).",
    )
    penalty_notice_final_days: int = Field(
        28, ge=1, description="Days by which a notice must be paid, after which the LA prosecutes or withdraws (28)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ClockPolicy:
        if self.review_min_weeks > self.review_max_weeks:
            raise ValueError("review_min_weeks must not exceed review_max_weeks")
        if self.penalty_notice_early_days >= self.penalty_notice_final_days:
            raise ValueError("penalty_notice_early_days must be fewer than penalty_notice_final_days")
        if self.penalty_notice_early_amount > self.penalty_notice_full_amount:
            raise ValueError("penalty_notice_early_amount must not exceed penalty_notice_full_amount")
        return self


NATIONAL_CLOCK_POLICY = ClockPolicy()
"""PN framework (Aug 2024) amounts and seed 004's 4-6 week review."""

WIDNES_CLOCK_POLICY = ClockPolicy(penalty_notice_early_amount=Decimal("60"), penalty_notice_full_amount=Decimal("120"))
"""Seed 004 Widnes: the older local framework's £60 within 21 days, £120 within 28."""

CLOCK_POLICY_PRESETS: Mapping[str, ClockPolicy] = {"national": NATIONAL_CLOCK_POLICY, "widnes": WIDNES_CLOCK_POLICY}


class DueWindow(NamedTuple):
    """A deadline that is a range: due no earlier than `earliest`, no later than `latest`."""

    earliest: date
    latest: date


def review_due(
    held_on: date, policy: ClockPolicy = NATIONAL_CLOCK_POLICY, calendar: SchoolCalendar | None = None
) -> DueWindow:
    """When the review of a SAM or attendance contract held on `held_on` is due: 4-6 weeks later by default.

    With `policy.review_in_school_weeks` the weeks are school weeks on `calendar`, so a half-term
    or holiday inside the period pushes the review back.
    """
    if not policy.review_in_school_weeks:
        return DueWindow(
            held_on + timedelta(weeks=policy.review_min_weeks), held_on + timedelta(weeks=policy.review_max_weeks)
        )
    if calendar is None:
        raise ValueError("a review counted in school weeks needs the school's calendar")
    return DueWindow(
        calendar.add_school_days(held_on, policy.review_min_weeks * _SCHOOL_DAYS_PER_WEEK),
        calendar.add_school_days(held_on, policy.review_max_weeks * _SCHOOL_DAYS_PER_WEEK),
    )


def letter_due(stage_opened_on: date, calendar: SchoolCalendar, school_days: int) -> date:
    """The day by which a stage's letter should be posted: `school_days` school days after it opened."""
    return calendar.add_school_days(stage_opened_on, school_days)


def apm_follow_up_due(apm_on: date, weeks: int) -> date:
    """The day by which the further APM, or a decision, is due after an APM on `apm_on`."""
    return apm_on + timedelta(weeks=weeks)


def penalty_notice_amounts(
    issued_on: date, previous_notices: Iterable[date], policy: ClockPolicy = NATIONAL_CLOCK_POLICY
) -> list[tuple[date, Decimal]]:
    """A notice's payment deadlines and amounts, given earlier notices to the same parent for the same child.

    A first notice within 3 years: the early amount by `early_days`, else the full amount by
    `final_days`. A second within 3 years: the full amount by `final_days`, no early rate. A third
    within 3 years is refused (PN framework): other action, such as prosecution, is considered.
    Days count from `issued_on`; the framework counts from receipt, so pass that date when known.
    """
    earlier = _notices_in_period(previous_notices, issued_on)
    final = (issued_on + timedelta(days=policy.penalty_notice_final_days), policy.penalty_notice_full_amount)
    if not earlier:
        return [
            (issued_on + timedelta(days=policy.penalty_notice_early_days), policy.penalty_notice_early_amount),
            final,
        ]
    if len(earlier) < PENALTY_NOTICE_LIMIT:
        return [final]
    raise ValueError(
        f"{len(earlier)} penalty notices to this parent for this child since "
        f"{_years_before(issued_on, PENALTY_NOTICE_PERIOD_YEARS).isoformat()}: no more than "
        f"{PENALTY_NOTICE_LIMIT} within {PENALTY_NOTICE_PERIOD_YEARS} years"
    )


# --- generated documentation ----------------------------------------------------------------------


def _entered_from(state: CaseState) -> list[CaseState]:
    """States from which some row leads into `state` (self-loops aside), in state order."""
    sources = {
        source
        for row in TRANSITIONS
        if state in row.targets()
        for source in row.source
        if source is not None and source is not state
    }
    return [candidate for candidate in CaseState if candidate in sources]


def _sorted_states(states: Iterable[CaseState | None]) -> list[CaseState | None]:
    order = [None, *CaseState]
    return sorted(states, key=order.index)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0]


def WORKFLOW_JSON() -> dict[str, Any]:
    """The workflow as JSON-ready data for API docs and clients: states, transitions, guards, effects, evidence."""
    return {
        "states": [
            {"id": str(state), "title": info.title, "description": info.description, "open": state in OPEN_STATES}
            for state, info in STATES.items()
        ],
        "transitions": [
            {
                "event": row.event,
                "sources": [None if source is None else str(source) for source in _sorted_states(row.source)],
                "target": str(row.target),
                "branch_on": row.branch_on,
                "target_when": {str(value): str(target) for value, target in row.target_when.items()},
                "who": sorted(str(actor) for actor in row.who),
                "guards": list(row.guards),
                "effects": list(row.effects),
                "effects_when": {str(value): list(effects) for value, effects in row.effects_when.items()},
                "payload": row.payload.__name__,
                "records": None if row.records is None else str(row.records),
                "description": row.description,
            }
            for row in TRANSITIONS
        ],
        "guards": {guard_id: _first_line(check.__doc__) for guard_id, check in GUARDS.items()},
        "missing_evidence": dict(MISSING_EVIDENCE),
        "effects": dict(EFFECTS),
        "action_effects": {str(kind): list(effects) for kind, effects in ACTION_EFFECTS.items()},
        "actions": {
            str(kind): {"description": _first_line(model.__doc__), "schema": model.model_json_schema()}
            for kind, model in ACTION_DETAILS.items()
        },
        "payloads": {
            model.__name__: model.model_json_schema() for model in dict.fromkeys(row.payload for row in TRANSITIONS)
        },
        "clock_policy_presets": {name: policy.model_dump(mode="json") for name, policy in CLOCK_POLICY_PRESETS.items()},
    }


def mermaid() -> str:
    """The state diagram as Mermaid `stateDiagram-v2`, generated from the table. Edges are labelled by event."""
    lines = ["stateDiagram-v2"]
    lines += [f'    state "{info.title}" as {state}' for state, info in STATES.items()]
    for row in TRANSITIONS:
        labels: dict[Target, list[str]] = {row.target: [f"{row.event} (otherwise)" if row.target_when else row.event]}
        for value, target in row.target_when.items():
            labels.setdefault(target, []).append(f"{row.event} ({row.branch_on} {value})")
        for source in _sorted_states(row.source):
            for target, target_labels in labels.items():
                ends = _entered_from(source) if target == PREVIOUS_STATE else [target]
                label = ", ".join(target_labels) + (" (to the previous state)" if target == PREVIOUS_STATE else "")
                start = "[*]" if source is None else source
                lines += [f"    {start} --> {end} : {label}" for end in ends]
    return "\n".join(lines) + "\n"


def workflow_markdown() -> str:
    """docs/casework-workflow.md: the diagram and the states, from the table itself."""
    lines = [
        "# Casework workflow",
        "",
        "Generated from `shared/domain/casework.py` (the table the casework service runs); a test fails if",
        "this drawing and the table differ. Regenerate with `.venv/bin/attendance casework diagram`.",
        "The same table is served as JSON at `GET /v1/casework/workflow` and as Mermaid at",
        "`GET /v1/casework/workflow.mmd`.",
        "",
        "```mermaid",
        mermaid().rstrip("\n"),
        "```",
        "",
        "## States",
        "",
        *(f"- **{state.value}** ({info.title}): {info.description}" for state, info in STATES.items()),
    ]
    return "\n".join(lines) + "\n"
