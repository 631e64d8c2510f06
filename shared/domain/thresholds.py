"""Attendance rates and threshold rules as policy data (domain.md §3-4).

Rates count one pupil's enrolment at one school over a period (by default the academic year to
date). Thresholds are rules in a policy document: national defaults (WTISA, PN framework, Regs
2024), local variants such as Halton's (seed 004) as presets, and per-school overrides. `evaluate`
says which rules hold for a pupil right now; raising, clearing and retracting alerts as that
changes is the caller's job.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from shared.domain.calendar import SchoolCalendar, academic_year_bounds
from shared.domain.codes import LATENESS_CODES, Category

_ABSENCE = frozenset({Category.AUTHORISED, Category.UNAUTHORISED})
_ILLNESS_CODE = "I"
_SESSIONS_PER_DAY = 2
_SCHOOL_DAYS_PER_WEEK = 5
_CALENDAR_REACH = timedelta(days=3 * 366)
"""How far back a window looks for school days when the calendar has no earlier terms loaded."""


# --- marks and totals ----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SessionMark:
    """One pupil's mark for one session at one school, with the code's category on its date.

    Ordering is by (date, session): "AM" sorts before "PM". MIS sub-codes are expected rolled up
    to their parent code here (domain.md §2), so illness is always `I`.
    """

    date: date
    session: str
    code: str
    category: Category
    possible: bool

    def __post_init__(self) -> None:
        if self.session not in ("AM", "PM"):
            raise ValueError(f"session must be 'AM' or 'PM', got {self.session!r}")


@dataclass(frozen=True)
class Totals:
    """Session counts behind the rates; differences of totals are deltas (an amended mark).

    Only possible sessions are counted, so the four categories add up to `possible_sessions`.
    """

    possible_sessions: int
    present_sessions: int
    approved_activity_sessions: int
    authorised_absence_sessions: int
    unauthorised_absence_sessions: int

    ZERO: ClassVar[Totals]

    @property
    def absence_sessions(self) -> int:
        """Authorised plus unauthorised absence: the numerator of the absence rate."""
        return self.authorised_absence_sessions + self.unauthorised_absence_sessions

    @property
    def absence_rate(self) -> float:
        """(AA + UA) / possible; 0.0 when there are no possible sessions."""
        if not self.possible_sessions:
            return 0.0
        return self.absence_sessions / self.possible_sessions

    @property
    def attendance_rate(self) -> float:
        """1 - absence rate; also 0.0 when there are no possible sessions.

        With nothing possible there is no rate at all: both read 0.0 rather than None so the
        figures stay numeric, and callers that care check `possible_sessions`.
        """
        if not self.possible_sessions:
            return 0.0
        return 1.0 - self.absence_rate

    def reaches(self, percent: Decimal | float | int) -> bool:
        """Whether the absence rate is at least `percent` %, compared exactly (no float rounding).

        Exactness matters at the line itself: 2 absences in 20 sessions is PA, 10.0 % and not
        9.999...%. Never true with no possible sessions.
        """
        if not self.possible_sessions:
            return False
        return self.absence_sessions * 100 >= _exact(percent) * self.possible_sessions

    def __add__(self, other: Totals) -> Totals:
        if not isinstance(other, Totals):
            return NotImplemented
        return Totals(
            self.possible_sessions + other.possible_sessions,
            self.present_sessions + other.present_sessions,
            self.approved_activity_sessions + other.approved_activity_sessions,
            self.authorised_absence_sessions + other.authorised_absence_sessions,
            self.unauthorised_absence_sessions + other.unauthorised_absence_sessions,
        )

    def __sub__(self, other: Totals) -> Totals:
        if not isinstance(other, Totals):
            return NotImplemented
        return Totals(
            self.possible_sessions - other.possible_sessions,
            self.present_sessions - other.present_sessions,
            self.approved_activity_sessions - other.approved_activity_sessions,
            self.authorised_absence_sessions - other.authorised_absence_sessions,
            self.unauthorised_absence_sessions - other.unauthorised_absence_sessions,
        )


Totals.ZERO = Totals(0, 0, 0, 0, 0)


@functools.lru_cache(maxsize=64)
def _exact(percent: Decimal | float | int) -> Fraction:
    """A policy's percent as an exact fraction (0.1 as a float is not one tenth); policies hold few."""
    return Fraction(str(percent))


def mark_totals(category: Category, possible: bool) -> Totals:
    """What one mark contributes to the totals: amend a mark by adding new minus old."""
    if not possible:
        return Totals.ZERO
    return Totals(
        possible_sessions=1,
        present_sessions=int(category is Category.PRESENT),
        approved_activity_sessions=int(category is Category.APPROVED_ACTIVITY),
        authorised_absence_sessions=int(category is Category.AUTHORISED),
        unauthorised_absence_sessions=int(category is Category.UNAUTHORISED),
    )


def totals(marks: Iterable[SessionMark]) -> Totals:
    """Count the possible sessions among `marks` by category (domain.md §3)."""
    counts = Counter(mark.category for mark in marks if mark.possible)
    return Totals(
        possible_sessions=counts.total(),
        present_sessions=counts[Category.PRESENT],
        approved_activity_sessions=counts[Category.APPROVED_ACTIVITY],
        authorised_absence_sessions=counts[Category.AUTHORISED],
        unauthorised_absence_sessions=counts[Category.UNAUTHORISED],
    )


def totals_in(marks: Iterable[SessionMark], start: date, end: date) -> Totals:
    """Totals of the marks dated from `start` to `end` inclusive (a period query)."""
    return totals(mark for mark in marks if start <= mark.date <= end)


# --- policy as data ------------------------------------------------------------------------


class _PolicyModel(BaseModel):
    # Policies are versioned documents shared by every service: reject typos, never mutate.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_PolicyModel):
    enabled: bool = Field(True, description="Whether the rule raises alerts at all.")


class PersistentAbsenceRule(_Rule):
    """`persistent_absence`: absence rate at or above a percentage (WTISA, seeds 001 and 004)."""

    percent: Decimal = Field(
        Decimal("10"),
        gt=0,
        le=100,
        description="Absence rate, in percent of possible sessions, at or above which the pupil is persistently "
        "absent (WTISA: 10; 'attendance below 90 %' in seed 004 differs only at exactly 90 %, WTISA wins).",
    )
    min_possible_sessions: int = Field(
        20,
        ge=1,
        description="Possible sessions needed before the rule may fire, so one early absence is not PA "
        "(local practice, configurable; default 20 = two school weeks).",
    )


class SevereAbsenceRule(_Rule):
    """`severe_absence`: absence rate at or above a percentage (WTISA, seed 004)."""

    percent: Decimal = Field(
        Decimal("50"),
        gt=0,
        le=100,
        description="Absence rate, in percent of possible sessions, at or above which absence is severe (WTISA: 50).",
    )
    min_possible_sessions: int = Field(
        20,
        ge=1,
        description="Possible sessions needed before the rule may fire (local practice, configurable; default 20).",
    )


class SupportMapStep(_PolicyModel):
    """One rung of an attendance support map ladder."""

    days: int = Field(ge=1, description="Days of absence (absence sessions / 2) in the academic year that reach it.")
    action: str = Field(
        min_length=1,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="What the step calls for, as a snake_case id, e.g. 'stage_1_letter'.",
    )


class SupportMapRule(_Rule):
    """`support_map_days`: a ladder of absence days, each step its own alert (seed 004, Widnes)."""

    enabled: bool = Field(False, description="Whether the ladder is in use; off in the national default.")
    steps: list[SupportMapStep] = Field(
        default_factory=list, description="The ladder's steps, in strictly increasing days."
    )

    @field_validator("steps")
    @classmethod
    def _days_strictly_increase(cls, steps: list[SupportMapStep]) -> list[SupportMapStep]:
        for lower, higher in zip(steps, steps[1:], strict=False):
            if higher.days <= lower.days:
                raise ValueError(
                    f"support map steps must have strictly increasing days: {higher.days} follows {lower.days}"
                )
        return steps

    @model_validator(mode="after")
    def _enabled_needs_steps(self) -> SupportMapRule:
        if self.enabled and not self.steps:
            raise ValueError("an enabled support map needs at least one step")
        return self


class PenaltyNoticeRule(_Rule):
    """`penalty_notice_threshold`: unauthorised sessions (G, N, O, U) in a rolling window (PN framework)."""

    unauthorised_sessions: int = Field(
        10, ge=1, description="Unauthorised absence sessions in the window at which the rule fires (PN framework: 10)."
    )
    window_school_weeks: int = Field(
        10,
        ge=1,
        description="Length of the rolling window in school weeks of 5 school days, ending at the latest mark; it "
        "may span terms and academic years (PN framework: 10; seed 004 Halton: 12).",
    )


class ContinuousAbsenceRule(_Rule):
    """A run of consecutive school days on which every possible session is unauthorised absence."""

    school_days: int = Field(
        ge=1,
        description="Consecutive school days of unauthorised absence (N included) at which the rule fires; "
        "weekends, holidays, closures and days with only non-possible marks neither count nor break the run.",
    )


class IllnessRule(_Rule):
    """`illness_15_days`: school days of illness (I), consecutive or cumulative, in the academic year (seed 002)."""

    school_days: int = Field(
        15, ge=1, description="Days of illness absence (I sessions / 2) in the academic year at which the rule fires."
    )


class PersistentLatenessRule(_Rule):
    """`persistent_lateness`: L and U sessions in a rolling window (seed 001: referral to the EWO)."""

    late_sessions: int = Field(
        10,
        ge=1,
        description="L or U sessions in the window at which the rule fires. The seeds name no number: the default "
        "is local practice, unconfirmed, and should be set by each LA.",
    )
    window_school_weeks: int = Field(
        6,
        ge=1,
        description="Length of the rolling window in school weeks of 5 school days, ending at the latest mark "
        "(local practice, unconfirmed, configurable).",
    )


class Rules(_PolicyModel):
    """Every threshold rule, keyed by rule id (domain.md §4). The defaults are the national policy."""

    persistent_absence: PersistentAbsenceRule = Field(
        default_factory=PersistentAbsenceRule, description="Absence rate >= 10 % (WTISA)."
    )
    severe_absence: SevereAbsenceRule = Field(
        default_factory=SevereAbsenceRule, description="Absence rate >= 50 % (WTISA)."
    )
    support_map_days: SupportMapRule = Field(
        default_factory=SupportMapRule, description="Ladder of absence days (seed 004 Widnes); off nationally."
    )
    penalty_notice_threshold: PenaltyNoticeRule = Field(
        default_factory=PenaltyNoticeRule,
        description="Unauthorised sessions in a rolling window of school weeks (PN framework: 10 in 10).",
    )
    continuous_unauthorised_10_days: ContinuousAbsenceRule = Field(
        default_factory=lambda: ContinuousAbsenceRule(school_days=10),
        description="Continuous unauthorised absence: the school must notify the LA (Regs 2024; seed 004).",
    )
    continuous_absence_20_days: ContinuousAbsenceRule = Field(
        default_factory=lambda: ContinuousAbsenceRule(school_days=20),
        description="Continuous unauthorised absence: deletion ground after joint enquiries, CME (Regs 2024).",
    )
    illness_15_days: IllnessRule = Field(
        default_factory=IllnessRule, description="Illness absence in the year: LA medical needs duty (seed 002)."
    )
    persistent_lateness: PersistentLatenessRule = Field(
        default_factory=PersistentLatenessRule,
        description="L and U sessions in a rolling window (seed 001); numbers unconfirmed local practice.",
    )


RULE_IDS: tuple[str, ...] = tuple(Rules.model_fields)
"""Rule ids in the order of domain.md §4, which is also the order firings are returned in."""

Urn = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


class PolicyDocument(_PolicyModel):
    """An LA's threshold policy: its rules and the schools that vary them."""

    name: str = Field(min_length=1, description="The policy's name, e.g. 'national' or 'halton'.")
    rules: Rules = Field(description="The rules every school in the LA follows unless overridden.")
    school_overrides: dict[Urn, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="Per school (6-digit URN): rule id -> the rule's fields to replace. Fields not named keep the "
        "LA's value; a list such as support map steps is replaced whole.",
    )

    @model_validator(mode="after")
    def _overrides_make_valid_rules(self) -> PolicyDocument:
        for urn, overrides in self.school_overrides.items():
            unknown = sorted(set(overrides) - set(RULE_IDS))
            if unknown:
                raise ValueError(
                    f"school {urn} overrides unknown rule id(s) {', '.join(unknown)}; known: {', '.join(RULE_IDS)}"
                )
            try:
                self.rules_for_school(urn)
            except ValidationError as exc:
                problems = "; ".join(".".join(map(str, error["loc"])) + ": " + error["msg"] for error in exc.errors())
                raise ValueError(f"school {urn} overrides are invalid: {problems}") from None
        return self

    def rules_for_school(self, urn: str) -> Rules:
        """The rules for one school: the LA's, with that school's overrides merged field by field."""
        overrides = self.school_overrides.get(urn)
        if not overrides:
            return self.rules
        merged = self.rules.model_dump()
        for rule_id, fields in overrides.items():
            merged[rule_id] = {**merged[rule_id], **fields}
        return Rules.model_validate(merged)


NATIONAL_PRESET = PolicyDocument(name="national", rules=Rules())
"""National defaults (WTISA, PN framework 10 sessions in 10 school weeks, Regs 2024); no support map."""

HALTON_PRESET = PolicyDocument(
    name="halton",
    rules=Rules(
        # Seed 004 Halton: PN warning letter at >= 10 unauthorised sessions in the preceding 12 weeks.
        penalty_notice_threshold=PenaltyNoticeRule(unauthorised_sessions=10, window_school_weeks=12),
        # Seed 004 Widnes Attendance Support Map.
        support_map_days=SupportMapRule(
            enabled=True,
            steps=[
                SupportMapStep(days=4, action="stage_1_letter"),
                SupportMapStep(days=7, action="stage_2_letter"),
                SupportMapStep(days=10, action="stage_3_letter"),
                SupportMapStep(days=13, action="formal_warning"),
                SupportMapStep(days=16, action="enforcement"),
                SupportMapStep(days=19, action="persistent_absence"),
            ],
        ),
    ),
)
"""Seed 004: Halton's penalty notice window and the Widnes support map; national otherwise."""

PRESETS: dict[str, PolicyDocument] = {"national": NATIONAL_PRESET, "halton": HALTON_PRESET}


# --- rule evaluation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    """A rule that holds, with the evidence an officer needs to see why (domain.md §4)."""

    rule_id: str
    step: str
    figures: dict[str, Any]
    window_from: date
    window_to: date
    sessions: tuple[SessionMark, ...]


def evaluate(rules: Rules, marks: Sequence[SessionMark], calendar: SchoolCalendar, academic_year: int) -> list[Firing]:
    """Which rules hold for one pupil's enrolment at one school, as of its latest mark in `academic_year`.

    `marks` may include earlier academic years: rolling windows and continuous runs reach back
    across terms and years, while rates, the support map and illness count this year only. The
    order of `marks` does not matter; at most one mark per (date, session) is allowed. Firings
    come in the order of RULE_IDS, support map steps by days.
    """
    ordered = sorted(marks)
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        if (earlier.date, earlier.session) == (later.date, later.session):
            raise ValueError(
                f"two marks for {later.date.isoformat()} {later.session}: {earlier.code!r}, {later.code!r}"
            )
    year_start, year_end = academic_year_bounds(academic_year)
    year_marks = [mark for mark in ordered if year_start <= mark.date <= year_end]
    if not year_marks:
        return []
    as_of = year_marks[-1].date
    history = [mark for mark in ordered if mark.date <= as_of]
    run = _trailing_unauthorised_run(history, as_of, calendar)
    lateness = rules.persistent_lateness
    penalty = rules.penalty_notice_threshold
    return [
        *_rate_firing("persistent_absence", rules.persistent_absence, year_marks),
        *_rate_firing("severe_absence", rules.severe_absence, year_marks),
        *_support_map_firings(rules.support_map_days, year_marks),
        *_window_firing(
            "penalty_notice_threshold",
            penalty.enabled,
            penalty.unauthorised_sessions,
            penalty.window_school_weeks,
            lambda mark: mark.possible and mark.category is Category.UNAUTHORISED,
            history,
            calendar,
        ),
        *_run_firing("continuous_unauthorised_10_days", rules.continuous_unauthorised_10_days, run),
        *_run_firing("continuous_absence_20_days", rules.continuous_absence_20_days, run),
        *_illness_firing(rules.illness_15_days, year_marks),
        *_window_firing(
            "persistent_lateness",
            lateness.enabled,
            lateness.late_sessions,
            lateness.window_school_weeks,
            lambda mark: mark.code in LATENESS_CODES,
            history,
            calendar,
        ),
    ]


def lookback_start(rules: Rules, calendar: SchoolCalendar, as_of: date, academic_year: int) -> date:
    """The earliest date `evaluate` needs marks from, for a pupil whose latest mark is `as_of`:
    the start of the academic year or of the longest rolling window or run, whichever is
    earlier. Older marks change no firing (a run longer than the longest threshold still fires)."""
    longest = max(
        rules.penalty_notice_threshold.window_school_weeks * _SCHOOL_DAYS_PER_WEEK,
        rules.persistent_lateness.window_school_weeks * _SCHOOL_DAYS_PER_WEEK,
        rules.continuous_unauthorised_10_days.school_days,
        rules.continuous_absence_20_days.school_days,
    )
    window = _window_school_days(calendar, as_of, longest)
    return min(academic_year_bounds(academic_year)[0], window[0] if window else as_of)


def _year_window(year_marks: list[SessionMark]) -> tuple[date, date]:
    """First and last day with a possible session: the days a year-to-date figure counted."""
    counted = [mark.date for mark in year_marks if mark.possible]
    return counted[0], counted[-1]


def _absences(marks: Iterable[SessionMark]) -> tuple[SessionMark, ...]:
    return tuple(mark for mark in marks if mark.possible and mark.category in _ABSENCE)


def _rate_firing(
    rule_id: str, rule: PersistentAbsenceRule | SevereAbsenceRule, year_marks: list[SessionMark]
) -> list[Firing]:
    if not rule.enabled:
        return []
    year = totals(year_marks)
    if year.possible_sessions < rule.min_possible_sessions or not year.reaches(rule.percent):
        return []
    figures = {
        "numerator": year.absence_sessions,
        "denominator": year.possible_sessions,
        "rate": year.absence_rate,
        "threshold_percent": str(rule.percent),
        "min_possible_sessions": rule.min_possible_sessions,
    }
    return [Firing(rule_id, "", figures, *_year_window(year_marks), _absences(year_marks))]


def _support_map_firings(rule: SupportMapRule, year_marks: list[SessionMark]) -> list[Firing]:
    if not rule.enabled:
        return []
    absences = _absences(year_marks)
    reached = [step for step in rule.steps if len(absences) >= _SESSIONS_PER_DAY * step.days]
    if not reached:
        return []
    window = _year_window(year_marks)
    return [
        Firing(
            "support_map_days",
            f"{step.days}_days",
            {
                "action": step.action,
                "absence_sessions": len(absences),
                "days": len(absences) / _SESSIONS_PER_DAY,
                "threshold_days": step.days,
            },
            *window,
            absences,
        )
        for step in reached
    ]


def _illness_firing(rule: IllnessRule, year_marks: list[SessionMark]) -> list[Firing]:
    if not rule.enabled:
        return []
    illness = tuple(mark for mark in year_marks if mark.possible and mark.code == _ILLNESS_CODE)
    threshold = _SESSIONS_PER_DAY * rule.school_days
    if len(illness) < threshold:
        return []
    figures = {
        "count": len(illness),
        "threshold": threshold,
        "school_days": len(illness) / _SESSIONS_PER_DAY,
        "threshold_school_days": rule.school_days,
    }
    return [Firing("illness_15_days", "", figures, *_year_window(year_marks), illness)]


def _window_school_days(calendar: SchoolCalendar, as_of: date, count: int) -> list[date]:
    """The `count` school days ending at `as_of`, or fewer when the calendar knows no earlier ones.

    A school whose previous year's terms are not loaded would otherwise fail every window in its
    first weeks; the shorter window shows in the figures instead.
    """
    try:
        return calendar.previous_school_days(as_of, count)
    except ValueError:
        return calendar.school_days_between(as_of - _CALENDAR_REACH, as_of)[-count:]


def _window_firing(
    rule_id: str,
    enabled: bool,
    threshold: int,
    window_school_weeks: int,
    counts: Callable[[SessionMark], bool],
    history: list[SessionMark],
    calendar: SchoolCalendar,
) -> list[Firing]:
    """A rolling-window count rule, the window ending at the latest mark and spanning terms and years."""
    if not enabled:
        return []
    as_of = history[-1].date
    window = _window_school_days(calendar, as_of, window_school_weeks * _SCHOOL_DAYS_PER_WEEK)
    if not window:
        return []
    counted = tuple(mark for mark in history if mark.date >= window[0] and counts(mark))
    if len(counted) < threshold:
        return []
    figures = {
        "count": len(counted),
        "threshold": threshold,
        "window_school_days": len(window),
        "window_school_weeks": window_school_weeks,
    }
    return [Firing(rule_id, "", figures, window[0], as_of, counted)]


_Run = list[tuple[date, tuple[SessionMark, ...]]]
"""Consecutive school days of unauthorised absence, oldest first, each with its possible marks."""


def _school_day_at_or_before(calendar: SchoolCalendar, d: date) -> date | None:
    try:
        return calendar.previous_school_days(d, 1)[0]
    except ValueError:
        return None


def _trailing_unauthorised_run(history: list[SessionMark], as_of: date, calendar: SchoolCalendar) -> _Run:
    """The run of unauthorised absence ending at `as_of` (empty if that day was not one).

    A day counts when it has a possible mark and every possible mark is unauthorised. Days with
    only non-possible marks (closure '#', 'X', 'Z', ...) are stepped over; a school day with no
    mark at all, or with any attendance or authorised absence, ends the run.
    """
    by_date: defaultdict[date, list[SessionMark]] = defaultdict(list)
    for mark in history:
        by_date[mark.date].append(mark)
    run: _Run = []
    day = _school_day_at_or_before(calendar, as_of)
    while day is not None and day in by_date:
        possible = tuple(mark for mark in by_date[day] if mark.possible)
        if possible:
            if any(mark.category is not Category.UNAUTHORISED for mark in possible):
                break
            run.append((day, possible))
        day = _school_day_at_or_before(calendar, day - timedelta(days=1))
    run.reverse()
    return run


def _run_firing(rule_id: str, rule: ContinuousAbsenceRule, run: _Run) -> list[Firing]:
    if not rule.enabled or len(run) < rule.school_days:
        return []
    sessions = tuple(mark for _, marks in run for mark in marks)
    figures = {"school_days": len(run), "threshold": rule.school_days}
    return [Firing(rule_id, "", figures, run[0][0], run[-1][0], sessions)]
