"""What the platform must conclude from a plan, recomputed from the domain rules.

Written from the rules themselves (attendance figures and the national thresholds of domain.md
§2-4, cases from §5-6), not from the services' rule code: only the code table (a code's category
and whether it is a possible session) and the school-day calendar are shared with the services.

The platform evaluates a pupil's enrolment whenever its marks change, as of its latest mark; an
alert is raised when a rule starts to hold, listing the sessions that made it fire, and ended
when it stops: "retracted" when, on the marks as they now stand, it would not have held on the
day it was raised (an amendment undid the crossing), "cleared" otherwise. The recount evaluates
after every round of the plan (one session's registers, or at most one amendment per pupil). Its
history of alerts is therefore the platform's when the plan is played one round at a time, each
round applied before the next is sent (`drive(after_round=...)`). Only the national policy (the
default for an LA that set none) is recounted.

The CME part follows the roll changes `generate` makes: deletions with or without a destination,
admissions that find a child, and the continuous-absence alerts.
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from shared.domain.codes import AttendanceCode, Category, code_for
from shared.events import EVENT_TYPES
from shared.simulation.plan import Admission, Amendment, Deletion, Plan, Register, Round

# The national policy (domain.md §4 defaults; persistent lateness has no national number: the
# platform's default of 10 late sessions in 6 school weeks).
PA_PERCENT, SA_PERCENT, MIN_POSSIBLE_SESSIONS = 10, 50, 20
PENALTY_SESSIONS, PENALTY_WINDOW_DAYS = 10, 10 * 5
ILLNESS_SESSIONS = 2 * 15
LATE_SESSIONS, LATE_WINDOW_DAYS = 10, 6 * 5
RUN_RULES = {"continuous_unauthorised_10_days": 10, "continuous_absence_20_days": 20}

# Alerts that open a casework case at Stage 1 when the pupil has none open at the school
# (domain.md §5: "cases open automatically when a policy rule says so").
CASE_OPENING_RULES = frozenset({"persistent_absence", "severe_absence", "penalty_notice_threshold"})

# Deletion grounds that say where the child is (home education, custody, death, past compulsory
# age, permanent exclusion, education otherwise): no CME case even without a destination.
WHEREABOUTS_KNOWN_GROUNDS = frozenset(
    {
        "school_attendance_order_revoked",
        "elective_home_education",
        "detained",
        "died",
        "ceasing_compulsory_school_age",
        "permanently_excluded",
    }
)

# The events the recount follows, as a subscription's filters (exact, or a prefix ending in `.*`).
EVENT_FILTERS = ("attendance.alert.*", "casework.case.opened", "cme.case.*", "roll.*")

Enrolment = tuple[str, str]  # (URN, UPN)
Session = tuple[date, str]  # (date, AM|PM)


@dataclass(frozen=True)
class Figures:
    """An enrolment's sessions by category over a period (domain.md §3)."""

    possible_sessions: int = 0
    present_sessions: int = 0
    approved_activity_sessions: int = 0
    authorised_absence_sessions: int = 0
    unauthorised_absence_sessions: int = 0

    @property
    def absence_sessions(self) -> int:
        return self.authorised_absence_sessions + self.unauthorised_absence_sessions

    @property
    def absence_rate(self) -> float:
        return self.absence_sessions / self.possible_sessions if self.possible_sessions else 0.0

    @property
    def attendance_rate(self) -> float:
        attending = self.present_sessions + self.approved_activity_sessions
        return attending / self.possible_sessions if self.possible_sessions else 0.0

    @property
    def persistent_absence(self) -> bool:
        return self.possible_sessions > 0 and self.absence_sessions * 100 >= PA_PERCENT * self.possible_sessions

    @property
    def severe_absence(self) -> bool:
        return self.possible_sessions > 0 and self.absence_sessions * 100 >= SA_PERCENT * self.possible_sessions


@dataclass
class Alert:
    urn: str
    upn: str
    rule_id: str
    status: str = "raised"  # then "cleared" (the condition ended) or "retracted" (an amendment undid it)
    sessions: frozenset[Session] = field(default=frozenset(), repr=False)  # those that made it fire
    raised_on: date | None = None  # the day of the latest mark when it was raised


@dataclass
class CmeCase:
    upn: str
    urn: str
    reason: str
    deleted: bool = False  # the case is about a deletion (or a deletion joined it)
    status: str = "open"
    outcome: str | None = None
    located_urn: str | None = None


def _academic_year(day: date) -> int:
    return day.year if day.month >= 8 else day.year - 1


class Recount:
    """The platform's state as the rounds of a plan are applied, one `apply` per round."""

    def __init__(self, plan: Plan) -> None:
        # Each school's school days in the term: the rolling windows and runs count these (the plan
        # has no marks before the term).
        self.school_days = {
            school.urn: school.calendar.school_days_between(plan.term.first_day, plan.term.last_day)
            for school in plan.schools
        }
        self.marks: defaultdict[Enrolment, dict[Session, str]] = defaultdict(dict)
        self.alerts: list[Alert] = []
        self._raised: defaultdict[Enrolment, dict[str, Alert]] = defaultdict(dict)
        self.cases: set[Enrolment] = set()  # casework cases, opened at Stage 1 and left there
        self.cme_cases: list[CmeCase] = []
        self.events: Counter[str] = Counter()  # event types the LA's subscribers are sent
        self._unmatched_deletions: set[Enrolment] = set()

    # ------------------------------------------------------------ rounds

    def apply(self, round_: Round) -> None:
        changed: set[Enrolment] = set()
        for action in round_.actions:
            if isinstance(action, Register):
                for upn, code, _ in action.marks():
                    self.marks[(action.urn, upn)][(action.date, action.session)] = code
                    changed.add((action.urn, upn))
            elif isinstance(action, Amendment):
                self.marks[(action.urn, action.upn)][(action.date, action.session)] = action.code
                changed.add((action.urn, action.upn))
            elif isinstance(action, Admission):
                self._admit(action)
            elif isinstance(action, Deletion):
                self._delete(action)
        for enrolment in sorted(changed):
            self._evaluate(enrolment)

    def _evaluate(self, enrolment: Enrolment) -> None:
        holding = self._holding(enrolment)
        raised = self._raised[enrolment]
        for rule_id in [rule for rule in raised if rule not in holding]:
            alert = raised.pop(rule_id)
            held_then = rule_id in self._holding(enrolment, until=alert.raised_on)
            alert.status = "cleared" if held_then else "retracted"
            self.events["attendance.alert.cleared"] += 1
            self._cme_alert_cleared(alert)
        for rule_id, sessions in holding.items():
            if rule_id in raised:
                continue
            alert = raised[rule_id] = Alert(
                *enrolment, rule_id, sessions=sessions, raised_on=max(self.marks[enrolment])[0]
            )
            self.alerts.append(alert)
            self.events["attendance.alert.raised"] += 1
            if rule_id in CASE_OPENING_RULES and enrolment not in self.cases:
                self.cases.add(enrolment)
                self.events["casework.case.opened"] += 1
            self._cme_alert_raised(alert)

    # ------------------------------------------------------------ figures and rules

    def figures(self, urn: str, upn: str, year: int | None = None) -> Figures:
        """The enrolment's figures for academic year `year` (default: the year of its latest mark)."""
        marks = self.marks[(urn, upn)]
        if not marks:
            return Figures()
        return _figures(marks, _academic_year(max(marks)[0]) if year is None else year)

    def _holding(self, enrolment: Enrolment, until: date | None = None) -> dict[str, frozenset[Session]]:
        """The national rules that hold for the enrolment as of its latest mark (up to `until`, on
        the marks as they now stand), in domain.md §4 order, each with the sessions that make it fire."""
        marks = {s: code for s, code in self.marks[enrolment].items() if until is None or s[0] <= until}
        as_of = max(marks)[0]
        school_days = self.school_days[enrolment[0]]
        up_to = bisect.bisect_right(school_days, as_of)  # school days up to as_of: school_days[:up_to]
        year_start = date(_academic_year(as_of), 8, 1)
        year = _figures(marks, _academic_year(as_of))
        holding = {}
        absences = _sessions_since(marks, year_start, lambda entry: entry.possible and entry.is_absence)
        for rule_id, line in (("persistent_absence", PA_PERCENT), ("severe_absence", SA_PERCENT)):
            if (
                year.possible_sessions >= MIN_POSSIBLE_SESSIONS
                and year.absence_sessions * 100 >= line * year.possible_sessions
            ):
                holding[rule_id] = absences
        window_start = school_days[max(0, up_to - PENALTY_WINDOW_DAYS)]
        unauthorised = _sessions_since(marks, window_start, _unauthorised)
        if len(unauthorised) >= PENALTY_SESSIONS:
            holding["penalty_notice_threshold"] = unauthorised
        run_days, run_sessions = _unauthorised_run(marks, reversed(school_days[:up_to]))
        for rule_id, days in RUN_RULES.items():
            if run_days >= days:
                holding[rule_id] = run_sessions
        illness = _sessions_since(marks, year_start, lambda entry: entry.code == "I")
        if len(illness) >= ILLNESS_SESSIONS:
            holding["illness_15_days"] = illness
        window_start = school_days[max(0, up_to - LATE_WINDOW_DAYS)]
        late = _sessions_since(marks, window_start, lambda entry: entry.code in ("L", "U"))
        if len(late) >= LATE_SESSIONS:
            holding["persistent_lateness"] = late
        return holding

    # ------------------------------------------------------------ the roll and CME

    def _open_cme_case(self, upn: str) -> CmeCase | None:
        return next((case for case in self.cme_cases if case.upn == upn and case.status == "open"), None)

    def _admit(self, admission: Admission) -> None:
        self.events["roll.pupil.admitted"] += 1
        elsewhere = sorted(e for e in self._unmatched_deletions if e[1] == admission.upn and e[0] != admission.urn)
        if elsewhere:
            # A deletion at another school of the LA and this admission are one move (domain.md §6).
            self._unmatched_deletions.remove(elsewhere[0])
            self.events["roll.pupil.matched"] += 1
        case = self._open_cme_case(admission.upn)
        if case is not None and (case.urn != admission.urn or case.deleted):
            found_elsewhere = case.urn != admission.urn
            case.status = "closed"
            case.outcome = "found_on_roll_elsewhere" if found_elsewhere else "returned_to_school"
            case.located_urn = admission.urn
            self.events["cme.case.closed"] += 1

    def _delete(self, deletion: Deletion) -> None:
        self.events["roll.pupil.deleted"] += 1
        self._unmatched_deletions.add((deletion.urn, deletion.upn))
        if deletion.destination_known or deletion.ground in WHEREABOUTS_KNOWN_GROUNDS:
            return
        case = self._open_cme_case(deletion.upn)
        if case is not None:
            case.deleted = True
            return
        self.cme_cases.append(CmeCase(deletion.upn, deletion.urn, "deleted_without_destination", deleted=True))
        self.events["cme.case.opened"] += 1

    def _cme_alert_raised(self, alert: Alert) -> None:
        """10 (and 20) school days of unauthorised absence: a potential child missing education."""
        if alert.rule_id not in RUN_RULES or self._open_cme_case(alert.upn) is not None:
            return
        self.cme_cases.append(CmeCase(alert.upn, alert.urn, alert.rule_id))
        self.events["cme.case.opened"] += 1

    def _cme_alert_cleared(self, alert: Alert) -> None:
        """The absence that opened a case ended (the child came back) or was amended away."""
        case = self._open_cme_case(alert.upn)
        if case is None or case.urn != alert.urn or case.reason != alert.rule_id or case.deleted:
            return
        case.status = "closed"
        back = alert.status == "cleared"
        case.outcome = "returned_to_school" if back else "other"
        case.located_urn = alert.urn if back else None
        self.events["cme.case.closed"] += 1

    # ------------------------------------------------------------ summaries

    def deliveries(self, event_filters: Iterable[str]) -> Counter[str]:
        """The events, by type, of the LA a subscriber with these filters is sent. A filter that takes
        events the recount does not follow (`EVENT_FILTERS`) is refused with ValueError."""
        filters = list(event_filters)
        wanted = {event_type for event_type in EVENT_TYPES if any(_matches(f, event_type) for f in filters)}
        followed = {event_type for event_type in EVENT_TYPES if any(_matches(f, event_type) for f in EVENT_FILTERS)}
        if wanted - followed:
            raise ValueError(f"the recount does not follow {sorted(wanted - followed)}")
        return Counter({event_type: count for event_type, count in self.events.items() if event_type in wanted})

    def enrolments(self) -> list[Enrolment]:
        return sorted(enrolment for enrolment, marks in self.marks.items() if marks)

    def school_figures(self, urn: str, year: int) -> list[tuple[str, Figures]]:
        """Each pupil of the school with a possible session in academic year `year`, and their figures."""
        rows = [(upn, self.figures(school, upn, year)) for school, upn in self.enrolments() if school == urn]
        return [(upn, figures) for upn, figures in rows if figures.possible_sessions]


def _matches(event_filter: str, event_type: str) -> bool:
    return event_type == event_filter or (event_filter.endswith(".*") and event_type.startswith(event_filter[:-1]))


@functools.cache
def _entry(code: str, day: date) -> AttendanceCode:
    return code_for(code, day)


def _unauthorised(entry: AttendanceCode) -> bool:
    return entry.possible and entry.category is Category.UNAUTHORISED


def _figures(marks: dict[Session, str], year: int) -> Figures:
    """Academic year `year`'s figures from an enrolment's marks."""
    counts: Counter[Category] = Counter()
    for (day, _), code in marks.items():
        entry = _entry(code, day)
        if _academic_year(day) == year and entry.possible:
            counts[entry.category] += 1
    return Figures(
        possible_sessions=counts.total(),
        present_sessions=counts[Category.PRESENT],
        approved_activity_sessions=counts[Category.APPROVED_ACTIVITY],
        authorised_absence_sessions=counts[Category.AUTHORISED],
        unauthorised_absence_sessions=counts[Category.UNAUTHORISED],
    )


def _sessions_since(
    marks: dict[Session, str], start: date, counts: Callable[[AttendanceCode], bool]
) -> frozenset[Session]:
    """The sessions from `start` on whose mark `counts` (a rolling window ending at the latest mark,
    or the academic year)."""
    return frozenset(
        session for session, code in marks.items() if session[0] >= start and counts(_entry(code, session[0]))
    )


def _unauthorised_run(marks: dict[Session, str], days_back: Iterable[date]) -> tuple[int, frozenset[Session]]:
    """How many consecutive school days, back from the latest, have only unauthorised absence in
    their possible sessions, and those sessions. A school day without a mark ends the run; one with
    only sessions that are not possible (e.g. Y1) neither counts nor ends it."""
    days, sessions = 0, set()
    for day in days_back:
        marked = [(day, session) for session in ("AM", "PM") if (day, session) in marks]
        if not marked:
            break
        possible = [session for session in marked if _entry(marks[session], day).possible]
        if not possible:
            continue
        if not all(_unauthorised(_entry(marks[session], day)) for session in possible):
            break
        days += 1
        sessions.update(possible)
    return days, frozenset(sessions)


def recount(plan: Plan) -> Recount:
    """The platform's state once the whole plan has been played."""
    state = Recount(plan)
    for round_ in plan.rounds:
        state.apply(round_)
    return state
