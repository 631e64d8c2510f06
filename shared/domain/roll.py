"""The admission register (roll) and children missing education (CME) as data (domain.md §6).

Sources: The School Attendance (Pupil Registration) (England) Regulations 2024 (SI 2024/208, "Regs
2024") reg 9(1) (deletion grounds) and reg 13 (new pupil and deletion returns); seed 000 (Havering
§8-9: schools without a data-sharing agreement and independent schools notify within 1 school day);
seed 004 (Widnes: 10 days' absence with no reason given makes a missing child); DfE *Children
missing education* guidance. Everything here is pure: callers pass dates and calendars, and the CME
service stores what these functions decide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.calendar import SchoolCalendar, academic_year

# --- deletion grounds ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionGround:
    """A ground of Regs 2024 reg 9(1) on which a pupil of compulsory school age is deleted from the roll.

    `requires_destination` is True when the ground is a move to a school the deletion return must name
    (a new school, the other school of a dual registration, the school a school attendance order now
    names); False when the ground itself settles where the child is or takes them outside children
    missing education (home education, custody, death, past compulsory school age, permanent
    exclusion, where the LA arranges provision); None when a destination may or may not be known, and
    a deletion without one leaves a child who may be missing (domain.md §6).

    `requires_enquiries` marks the grounds that hold only once the school and the LA, after jointly
    making reasonable enquiries, have failed to find where the pupil is. `min_school_days_absent` is
    the run of school days of absence the ground needs.
    """

    code: str
    key: str
    name: str
    requires_destination: bool | None
    requires_enquiries: bool = False
    min_school_days_absent: int | None = None


_GROUNDS: tuple[DeletionGround, ...] = (
    DeletionGround(
        "9(1)(a)",
        "registered_at_another_school",
        "Registered at another school, other than as an agreed dual registration, while no school attendance order "
        "names this school, and not a mobile child whose main school this is",
        requires_destination=True,
    ),
    DeletionGround(
        "9(1)(b)",
        "nursery_not_continuing",
        "Completed nursery education at the school and not expected to attend its reception or a more senior class",
        requires_destination=None,
    ),
    DeletionGround(
        "9(1)(c)",
        "dual_registration_ended",
        "Also registered at one or more other schools, each of which has consented to the deletion, and not "
        "expected to attend this school again",
        requires_destination=True,
    ),
    DeletionGround(
        "9(1)(d)",
        "school_attendance_order_amended",
        "A school attendance order naming this school has been amended by the LA to name another school",
        requires_destination=True,
    ),
    DeletionGround(
        "9(1)(e)",
        "school_attendance_order_revoked",
        "A school attendance order naming this school has been revoked by the LA because the child is to receive "
        "suitable education otherwise than at school",
        requires_destination=False,
    ),
    DeletionGround(
        "9(1)(f)",
        "elective_home_education",
        "A parent has told the school in writing that the pupil is receiving education otherwise than at school "
        "(elective home education)",
        requires_destination=False,
    ),
    DeletionGround(
        "9(1)(g)",
        "moved_away",
        "Has stopped attending and no longer ordinarily lives within a reasonable distance of the school (not a "
        "boarder)",
        requires_destination=None,
    ),
    DeletionGround(
        "9(1)(h)",
        "not_returned_from_leave",
        "Did not attend in the 10 school days after a leave of absence ended, with no reasonable grounds to believe "
        "sickness or an unavoidable cause, and the school and LA, after jointly making reasonable enquiries, cannot "
        "find where the pupil is",
        requires_destination=None,
        requires_enquiries=True,
        min_school_days_absent=10,
    ),
    DeletionGround(
        "9(1)(i)",
        "continuous_absence_20_days",
        "Continuously absent without authorisation (G, N or O) for at least 20 school days, with no reasonable "
        "grounds to believe sickness or an unavoidable cause, and the school and LA, after jointly making "
        "reasonable enquiries, cannot find where the pupil is",
        requires_destination=None,
        requires_enquiries=True,
        min_school_days_absent=20,
    ),
    DeletionGround(
        "9(1)(j)",
        "detained",
        "Detained under a final court order, or an order of recall, of at least 4 months, with no reasonable grounds "
        "to believe the pupil will return to the school at its end",
        requires_destination=False,
    ),
    DeletionGround("9(1)(k)", "died", "Has died", requires_destination=False),
    DeletionGround(
        "9(1)(l)",
        "ceasing_compulsory_school_age",
        "Will cease to be of compulsory school age before the school next meets and will not continue at the school "
        "(for example, not into its sixth form)",
        requires_destination=False,
    ),
    DeletionGround(
        "9(1)(m)",
        "boarding_fees_unpaid",
        "A boarder at a maintained school or academy whose boarding fees have not been paid",
        requires_destination=None,
    ),
    DeletionGround(
        "9(1)(n)",
        "left_independent_school",
        "Has ceased to be a pupil of an independent school or non-maintained special school",
        requires_destination=None,
    ),
    DeletionGround(
        "9(1)(o)",
        "permanently_excluded",
        "Permanently excluded, once any review has ended or the time to ask for one has passed",
        requires_destination=False,
    ),
)

DELETION_GROUNDS: Mapping[str, DeletionGround] = {ground.key: ground for ground in _GROUNDS}
"""Regs 2024 reg 9(1)(a)-(o) keyed by `key`, in the regulation's order.

Paragraphs (a)-(e) and their conditions are checked against the regulation's text, (i) against
published legal commentary (absence coded G, N or O throughout), and the lettering of (f)-(o) against
an LA's deletion form that cites the regulation. The conditions given for (f)-(h), (j)-(l) and (o)
are those of their 2006 equivalents (2006 reg 8(1)), to be confirmed against the 2024 text; (m)
boarding fees unpaid and (n) left an independent or non-maintained special school are new in 2024
and known only by the form's one-line summaries: to be confirmed. The 2006 ground "certified
medically unfit to attend before ceasing to be of compulsory school age" (2006 reg 8(1)(g)), which
domain.md's summary lists, has no paragraph in reg 9(1) of 2024 and is not a ground here. Grounds
for pupils not of compulsory school age (reg 9(3)) are out of scope.
"""

_BY_CODE: Mapping[str, DeletionGround] = {ground.code: ground for ground in _GROUNDS}


class UnknownGround(ValueError):
    """A deletion cites no ground, or one that is not in reg 9(1): the deletion is rejected."""

    def __init__(self, given: str | None) -> None:
        self.given = given
        self.valid_keys = tuple(DELETION_GROUNDS)
        valid = ", ".join(f"{ground.key} ({ground.code})" for ground in _GROUNDS)
        what = "no deletion ground given" if not given or not given.strip() else f"unknown deletion ground {given!r}"
        super().__init__(f"{what}; valid grounds (Regs 2024 reg 9(1)): {valid}")


def ground_for(key_or_code: str | None) -> DeletionGround:
    """The ground with this key (e.g. 'died') or regulation code (e.g. '9(1)(k)'), case and spaces ignored."""
    if key_or_code is None:
        raise UnknownGround(None)
    wanted = "".join(key_or_code.split()).lower()
    ground = DELETION_GROUNDS.get(wanted) or _BY_CODE.get(wanted)
    if ground is None:
        raise UnknownGround(key_or_code)
    return ground


def _ground(ground: DeletionGround | str) -> DeletionGround:
    return ground if isinstance(ground, DeletionGround) else ground_for(ground)


# --- notification policy and clocks ----------------------------------------------------------


# School days in an English school year: no return may be given longer (a deadline of millions of
# school days was counted day by day towards year 9999 before failing).
SCHOOL_YEAR_DAYS: Final = 190


class NotificationPolicy(BaseModel):
    """When schools must tell the LA of each addition to and deletion from their admission register.

    The clock runs for every school. A school with a data-sharing agreement sends its returns through
    its MIS feed (seed 000 §8.2-8.3), so they usually arrive on time by themselves; the clock still
    shows when a feed falls silent.
    """

    # Policies are shared, versioned documents: reject typos, never mutate.
    model_config = ConfigDict(extra="forbid", frozen=True)

    addition_deadline: Literal["school_days", "fifth_day"] = Field(
        "school_days",
        description="'school_days': the new pupil return is due by the end of the `addition_school_days`-th school "
        "day after the day the name is entered (seed 000 §9.1: 1 school day). 'fifth_day': by the end of the fifth "
        "calendar day after that day (Regs 2024 reg 13(1), as worded).",
    )
    addition_school_days: int = Field(
        1,
        ge=1,
        le=SCHOOL_YEAR_DAYS,
        description="School days allowed for a new pupil return under 'school_days' (seed 000: 1).",
    )
    deletion_deadline: Literal["school_days", "deletion_date"] = Field(
        "school_days",
        description="'school_days': the deletion return is due by the end of the `deletion_school_days`-th school "
        "day after the deletion date (seed 000 §8.4 and §9.1: within 1 school day). 'deletion_date': due on the "
        "deletion date, the latest Regs 2024 reg 13(4) and the CME guidance allow (as soon as the ground is met and "
        "no later than the deletion).",
    )
    deletion_school_days: int = Field(
        1,
        ge=1,
        le=SCHOOL_YEAR_DAYS,
        description="School days allowed for a deletion return under 'school_days' (seed 000: 1).",
    )
    applies_to: Literal["all_schools", "independent_or_without_data_sharing"] = Field(
        "all_schools",
        description="Which schools the deadlines above bind. 'independent_or_without_data_sharing' (seed 000 as "
        "written) holds independent schools and schools without a data-sharing agreement to them, and every other "
        "school to the national rules: fifth day for additions, the deletion date for deletions.",
    )


DEFAULT_NOTIFICATION_POLICY: Final = NotificationPolicy()
"""The platform default: every school notifies each addition and deletion within 1 school day (design card; seed
000 §8.4 and §9.1 applied to all schools). Stricter than reg 13(1) for additions; for deletions it allows a school
day past the deletion that reg 13(4) does not, so an LA holding schools to the statute sets 'deletion_date'."""

NATIONAL_NOTIFICATION_POLICY: Final = NotificationPolicy(
    addition_deadline="fifth_day", deletion_deadline="deletion_date"
)
"""Regs 2024 reg 13 alone: new pupil returns by the end of the fifth day, deletion returns by the deletion date."""

HAVERING_NOTIFICATION_POLICY: Final = NotificationPolicy(applies_to="independent_or_without_data_sharing")
"""Seed 000 as written: 1 school day for independent schools and schools without a data-sharing agreement, the
national rules for the rest."""

_FIFTH_DAY: Final = timedelta(days=5)


def _policy_binds(policy: NotificationPolicy, *, independent: bool, data_sharing: bool) -> bool:
    return policy.applies_to == "all_schools" or independent or not data_sharing


def addition_due(
    entered_on: date,
    calendar: SchoolCalendar,
    policy: NotificationPolicy,
    *,
    independent: bool,
    data_sharing: bool,
) -> date:
    """The last day on which a new pupil return for a name entered on `entered_on` is on time.

    Under 'school_days' it is the n-th school day of the school's calendar strictly after the entry
    date: weekends, bank holidays, half-terms, holidays, INSET days and closures are skipped, so a name
    entered on a Friday is due by the end of Monday, and one entered in a holiday by the end of the
    first school day after it. Under 'fifth_day' it is entry date + 5 calendar days, even when that
    falls on a weekend or in a holiday. For an unnotified joiner (marked in the register with no
    addition notified), pass the date of the first mark (domain.md §6).
    """
    if policy.addition_deadline == "fifth_day" or not _policy_binds(
        policy, independent=independent, data_sharing=data_sharing
    ):
        return entered_on + _FIFTH_DAY
    return calendar.add_school_days(entered_on, policy.addition_school_days)


def deletion_due(
    deleted_on: date,
    calendar: SchoolCalendar,
    policy: NotificationPolicy,
    *,
    independent: bool,
    data_sharing: bool,
) -> date:
    """The last day on which the deletion return for a name deleted on `deleted_on` is on time.

    Under 'deletion_date' that is the deletion date itself (a return sent earlier, once the ground
    is met, is on time too); under 'school_days' the n-th school day strictly after it.
    """
    if policy.deletion_deadline == "deletion_date" or not _policy_binds(
        policy, independent=independent, data_sharing=data_sharing
    ):
        return deleted_on
    return calendar.add_school_days(deleted_on, policy.deletion_school_days)


class NotificationStatus(StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    MISSING = "missing"
    PENDING = "pending"


def notification_status(due_on: date, received_on: date | None, today: date) -> NotificationStatus:
    """Where a return stands: received by the end of its due day (on time) or after (late); not yet
    received while the due day lasts (pending) or after it (missing)."""
    if received_on is not None:
        return NotificationStatus.ON_TIME if received_on <= due_on else NotificationStatus.LATE
    return NotificationStatus.PENDING if today <= due_on else NotificationStatus.MISSING


def addition_return_required(
    starting_day: date,
    entered_on: date,
    calendar: SchoolCalendar,
    *,
    most_junior_class: bool,
    la_requested_on: date | None = None,
) -> bool:
    """Whether adding this pupil needs a new pupil return (Regs 2024 reg 13(2)-(3)).

    Exempt: a pupil placed on admission in the school's most junior class whose starting day is the
    first day of the school year, read as the first school day of the academic year in the school's
    calendar (INSET days before it do not defeat the exemption; a staggered later start does). The
    exemption ends for names entered after the day the LA asked for these returns too. A calendar
    with no terms loaded makes 1 August's first weekday the first school day, so the exemption then
    falls away, on the safe side.
    """
    if not most_junior_class:
        return True
    if la_requested_on is not None and entered_on > la_requested_on:
        return True
    first_school_day = calendar.next_school_day(date(academic_year(starting_day), 7, 31))
    return starting_day != first_school_day


# --- children missing education --------------------------------------------------------------


class CmeReason(StrEnum):
    """Why a CME case opens."""

    DELETED_WITHOUT_DESTINATION = "deleted_without_destination"
    """Deleted on a ground that does not settle where the child is, with no destination recorded."""
    CONTINUOUS_UNAUTHORISED_10_DAYS = "continuous_unauthorised_10_days"
    """10 school days of unauthorised absence: the school tells the LA and missing child procedures start (004)."""
    CONTINUOUS_ABSENCE_20_DAYS = "continuous_absence_20_days"
    """20 school days: opens a case if none is open; on an open one it records that the 20 school days of ground
    9(1)(i) have run, so a deletion on it waits only on the joint enquiries."""


_ALERT_CME_REASONS: Mapping[str, CmeReason] = {
    "continuous_unauthorised_10_days": CmeReason.CONTINUOUS_UNAUTHORISED_10_DAYS,
    "continuous_absence_20_days": CmeReason.CONTINUOUS_ABSENCE_20_DAYS,
}


def deletion_cme_reason(ground: DeletionGround | str, destination_known: bool) -> CmeReason | None:
    """Whether a deletion opens a CME case: it does when no destination is known, unless the ground
    settles where the child is (`requires_destination` False)."""
    if _ground(ground).requires_destination is False or destination_known:
        return None
    return CmeReason.DELETED_WITHOUT_DESTINATION


def alert_cme_reason(rule_id: str) -> CmeReason | None:
    """Whether an alert of this threshold rule id opens (or marks) a CME case."""
    return _ALERT_CME_REASONS.get(rule_id)


def enquiry_window_end(started_on: date, calendar: SchoolCalendar, school_days: int = 20) -> date:
    """The earliest date a deletion on a continuous-absence ground may be made.

    `started_on` is the first day of the continuous absence (for 9(1)(h), the day after the leave
    ended, with `school_days=10`); when it is not a school day the run starts at the next one. The
    n-th school day of absence must have run in full, so the earliest date is the first school day
    after it: an absence from Monday 2 March 2026 completes 20 school days on Friday 27 March, and
    across the Easter holiday the deletion may be made from the first day of the summer term.
    """
    if school_days < 1:
        raise ValueError(f"school_days must be >= 1, got {school_days}")
    first = started_on if calendar.is_school_day(started_on) else calendar.next_school_day(started_on)
    return calendar.add_school_days(first, school_days)


class EnquiryParty(StrEnum):
    SCHOOL = "school"
    LA = "la"


class EnquiryMethod(StrEnum):
    PHONE = "phone"
    LETTER = "letter"
    EMAIL = "email"
    HOME_VISIT = "home_visit"
    SCHOOL_CONTACT = "school_contact"
    LA_DATABASE_CHECK = "la_database_check"
    LOST_PUPILS_DATABASE = "lost_pupils_database"
    OTHER_LA_CONTACT = "other_la_contact"
    POLICE = "police"
    SOCIAL_CARE = "social_care"
    HEALTH = "health"
    OTHER = "other"


class EnquiryOutcome(StrEnum):
    LOCATED = "located"
    LEAD = "lead"
    NO_TRACE = "no_trace"
    NO_RESPONSE = "no_response"


class Enquiry(BaseModel):
    """One reasonable enquiry into where a child is: dated, by whom, how, and what came of it."""

    # Evidence for the deletion and the CME register: reject unknown fields, never mutate.
    model_config = ConfigDict(extra="forbid", frozen=True)

    made_on: date = Field(description="Date the enquiry was made.")
    by: EnquiryParty = Field(description="school or la: ground 9(1)(h) and (i) need enquiries by both.")
    officer: str = Field(min_length=1, description="Name and position of the person who made it.")
    method: EnquiryMethod = Field(
        description="phone, letter, email, home_visit, school_contact (schools the child may have joined), "
        "la_database_check, lost_pupils_database (DfE School to School), other_la_contact, police, social_care, "
        "health or other."
    )
    outcome: EnquiryOutcome = Field(
        description="located (the child has been found), lead (information to follow up), no_trace or no_response."
    )
    notes: str = Field("", description="What was asked and learned.")


class CmeOutcome(StrEnum):
    """Why a CME case closed: where the child is now educated, or why CME no longer applies.

    Death is not an outcome: it is deletion ground 9(1)(k), which opens no case; a case open when a
    death is learned closes as `other` with notes.
    """

    FOUND_ON_ROLL_ELSEWHERE = "found_on_roll_elsewhere"
    RETURNED_TO_SCHOOL = "returned_to_school"
    ELECTIVE_HOME_EDUCATION = "elective_home_education"
    MOVED_LA = "moved_la"
    MOVED_ABROAD = "moved_abroad"
    CEASED_COMPULSORY_SCHOOL_AGE = "ceased_compulsory_school_age"
    OTHER = "other"


CONTINUOUS_ABSENCE_CODES: frozenset[str] = frozenset({"G", "N", "O"})
"""Codes that count towards ground 9(1)(i)'s 20 school days: any other code in the run breaks it."""


@dataclass(frozen=True)
class DeletionFacts:
    """What the school and LA know when a deletion is proposed, built by the CME service.

    `school_days_absent` is the current run of school days absent on every session: for 9(1)(i)
    coded G, N or O throughout, for 9(1)(h) counted from the end of the leave. `believed_unable_to_attend`
    is whether the school has reasonable grounds to believe the pupil cannot attend through sickness
    or an unavoidable cause.
    """

    destination_known: bool = False
    school_days_absent: int = 0
    enquiries: tuple[Enquiry, ...] = ()
    believed_unable_to_attend: bool = False


def deletion_allowed(ground: DeletionGround | str, facts: DeletionFacts) -> list[str]:
    """Why a deletion on this ground may not be made yet; empty when it may.

    Raises `UnknownGround` for a ground that is not in reg 9(1).
    """
    ground = _ground(ground)
    reasons = []
    if ground.requires_destination and not facts.destination_known:
        reasons.append(f"ground {ground.code} needs the new school recorded in the register")
    needed_days = ground.min_school_days_absent
    if needed_days is not None and facts.school_days_absent < needed_days:
        reasons.append(
            f"ground {ground.code} needs {needed_days} school days of continuous absence, "
            f"{facts.school_days_absent} so far"
        )
    if ground.requires_enquiries:
        parties = {enquiry.by for enquiry in facts.enquiries}
        if EnquiryParty.SCHOOL not in parties:
            reasons.append(f"ground {ground.code} needs reasonable enquiries by the school: none logged")
        if EnquiryParty.LA not in parties:
            reasons.append(f"ground {ground.code} needs reasonable enquiries by the LA: none logged")
        if any(enquiry.outcome is EnquiryOutcome.LOCATED for enquiry in facts.enquiries):
            reasons.append(f"ground {ground.code} needs the child's whereabouts unknown, but an enquiry located them")
        if facts.believed_unable_to_attend:
            reasons.append(
                f"ground {ground.code} does not apply while the school believes the pupil is unable to attend "
                "through sickness or an unavoidable cause"
            )
    return reasons


# --- matching additions and deletions ----------------------------------------------------------


@dataclass(frozen=True)
class RollAddition:
    """A name entered on a school's admission register (or already on it); `dual` when the entry is one of
    an agreed dual registration."""

    upn: str
    urn: str
    entered_on: date
    dual: bool = False


@dataclass(frozen=True)
class RollDeletion:
    """A name deleted from a school's admission register."""

    upn: str
    urn: str
    deleted_on: date


class MatchKind(StrEnum):
    TRANSFER = "transfer"
    """A deletion at one school and an addition at another: each resolves the other."""
    DUAL_REGISTRATION = "dual_registration"
    """Two rolls at once, both entries flagged dual: expected, not a duplicate to flag."""


@dataclass(frozen=True)
class Match:
    """A resolved pair: a transfer (`deletion` and `addition`) or a dual registration (`addition` and
    `other_addition`, the earlier first)."""

    kind: MatchKind
    addition: RollAddition
    deletion: RollDeletion | None = None
    other_addition: RollAddition | None = None

    @property
    def upn(self) -> str:
        return self.addition.upn


DEFAULT_MATCH_TOLERANCE: Final = timedelta(days=42)
"""How long before a deletion an addition elsewhere may be entered and still resolve it.

Schools often delete late: on ground 9(1)(a) once they hear of the new registration, on 9(1)(i)
only after 20 school days, four calendar weeks in term and more across a holiday. Six weeks covers
those runs with a half-term; an addition entered after the deletion always qualifies. An addition
since ended by a deletion at its own school never does, so an old roll entry cannot resolve a new
deletion. Configurable per call.
"""


def _ended_before(addition: RollAddition, day: date, deletions: Sequence[RollDeletion]) -> bool:
    """Whether the entry was deleted from its school's roll before `day`."""
    return any(
        deletion.urn == addition.urn and addition.entered_on <= deletion.deleted_on < day for deletion in deletions
    )


def _dual_registrations(additions: Sequence[RollAddition], deletions: Sequence[RollDeletion]) -> list[Match]:
    matches = []
    for index, earlier in enumerate(additions):
        for later in additions[index + 1 :]:
            if (
                earlier.dual
                and later.dual
                and earlier.urn != later.urn
                and not _ended_before(earlier, later.entered_on, deletions)
            ):
                matches.append(Match(MatchKind.DUAL_REGISTRATION, addition=earlier, other_addition=later))
    return matches


def _transfers(
    deletions: Sequence[RollDeletion], additions: Sequence[RollAddition], tolerance: timedelta
) -> list[Match]:
    matches = []
    free = list(range(len(additions)))
    for deletion in deletions:
        candidates = [
            index
            for index in free
            if additions[index].urn != deletion.urn
            and additions[index].entered_on >= deletion.deleted_on - tolerance
            and not _ended_before(additions[index], deletion.deleted_on, deletions)
        ]
        if not candidates:
            continue
        # The addition nearest the deletion in time is the likeliest move; ties go to the earlier one.
        chosen = min(
            candidates,
            key=lambda index: (abs(additions[index].entered_on - deletion.deleted_on), additions[index].entered_on),
        )
        free.remove(chosen)
        matches.append(Match(MatchKind.TRANSFER, addition=additions[chosen], deletion=deletion))
    return matches


def match_roll_changes(
    deletions: Iterable[RollDeletion],
    additions: Iterable[RollAddition],
    *,
    tolerance: timedelta = DEFAULT_MATCH_TOLERANCE,
) -> list[Match]:
    """Pair one LA's roll changes by UPN, whatever order they arrived in.

    A deletion at school A is resolved by an addition of the same UPN at another school entered no
    earlier than `tolerance` before the deletion and not since deleted there; each addition resolves
    at most one deletion, deletions taken in date order. Additions of the same UPN at two schools,
    both flagged dual and on roll together, are a dual registration. A re-admission at the same
    school is not a transfer. What is left unmatched is the caller's to act on: a deletion without a
    destination may open a CME case, an addition without a deletion elsewhere may be a pupil on two rolls.
    """
    if tolerance < timedelta(0):
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    deletions_by_upn: defaultdict[str, list[RollDeletion]] = defaultdict(list)
    additions_by_upn: defaultdict[str, list[RollAddition]] = defaultdict(list)
    for deletion in deletions:
        deletions_by_upn[deletion.upn].append(deletion)
    for addition in additions:
        additions_by_upn[addition.upn].append(addition)
    matches = []
    for upn in sorted(deletions_by_upn.keys() | additions_by_upn.keys()):
        upn_deletions = sorted(deletions_by_upn[upn], key=lambda deletion: (deletion.deleted_on, deletion.urn))
        upn_additions = sorted(additions_by_upn[upn], key=lambda addition: (addition.entered_on, addition.urn))
        matches += _dual_registrations(upn_additions, upn_deletions)
        matches += _transfers(upn_deletions, upn_additions, tolerance)
    return matches
