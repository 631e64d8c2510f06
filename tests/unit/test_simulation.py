"""The simulated LA: its term and calendar, the plan's validity and realism, and the recount's rules."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import pytest

from shared.domain.calendar import academic_year
from shared.domain.codes import Category, code_for, session_code_mismatch
from shared.domain.upn import upn_error
from shared.simulation.generate import ATTENDANCE_OFFICER, LaConfig, generate, recent_term
from shared.simulation.plan import Admission, Amendment, Deletion, Plan, Register, Round, School
from shared.simulation.recount import Recount, recount

TODAY = date(2026, 11, 23)  # a Monday
TERM = recent_term(TODAY, 6, calendar_until=TODAY + timedelta(days=366))
URNS = ("300001", "300002", "300003")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return generate(LaConfig(TERM, URNS, "870", pupils_per_school=25, seed=7))


# ---------------------------------------------------------------- the term


@pytest.mark.parametrize("before", [TODAY, date(2027, 3, 1), date(2027, 6, 12), date(2027, 9, 15), date(2027, 1, 6)])
def test_recent_term_has_happened_and_keeps_clear_of_the_long_holidays(before):
    term = recent_term(before, 6, calendar_until=before + timedelta(days=366))
    days = term.school_days()
    assert term.last_day < before and term.last_day.weekday() == 4 and term.first_day.weekday() == 0
    assert not term.calendar.is_school_day(term.first_day)  # an INSET day
    assert academic_year(term.first_day) == academic_year(term.last_day)
    assert not any(day.month == 8 or (day.month, day.day) >= (12, 20) or (day.month, day.day) <= (1, 4) for day in days)
    weeks = {day.isocalendar()[:2] for day in days}
    assert len(weeks) == 6 and (term.last_day - term.first_day).days == 7 * 7 - 3  # and one half-term week
    assert 26 <= len(days) <= 29  # 30 weekdays less the INSET day and any bank holidays


def test_the_calendar_reaches_the_oldest_admission_and_a_year_ahead():
    oldest_admission = date(academic_year(TERM.first_day) - 6, 9, 3)
    assert TERM.calendar.add_school_days(oldest_admission, 1) < TERM.first_day
    assert TERM.calendar.add_school_days(TODAY + timedelta(days=300), 5) > TODAY + timedelta(days=300)


def test_a_term_that_would_cross_the_summer_is_the_summer_term():
    term = recent_term(date(2027, 9, 15), 6)
    assert term.last_day == date(2027, 7, 16) and term.first_day == date(2027, 5, 31)


# ---------------------------------------------------------------- the plan


def test_the_same_seed_gives_the_same_plan(plan):
    assert generate(LaConfig(TERM, URNS, "870", pupils_per_school=25, seed=7)) == plan
    assert generate(LaConfig(TERM, URNS, "870", pupils_per_school=25, seed=8)) != plan


def test_every_pupil_on_roll_has_one_valid_mark_per_session(plan):
    """The registers follow the roll the plan's admissions and deletions keep."""
    assert all(upn_error(pupil.upn) is None for pupil in plan.pupils)
    assert len({pupil.upn for pupil in plan.pupils}) == len(plan.pupils)
    on_roll: set[tuple[str, str]] = set()
    registers: Counter[tuple[str, date, str]] = Counter()
    for round_ in plan.rounds:
        for action in round_.actions:
            if isinstance(action, Admission):
                assert action.admitted_on == (round_.day or action.admitted_on) and action.admitted_on <= TERM.last_day
                on_roll.add((action.urn, action.upn))
            elif isinstance(action, Deletion):
                assert action.deleted_on == round_.day
                on_roll.remove((action.urn, action.upn))
            elif isinstance(action, Register):
                assert action.date == round_.day and TERM.calendar.is_school_day(action.date)
                assert set(action.upns) == {upn for urn, upn in on_roll if urn == action.urn}
                registers[(action.urn, action.date, action.session)] += 1
                for _, code, minutes_late in action.marks():
                    assert session_code_mismatch(code, action.session) is None
                    code_for(code, action.date)  # in force on the date
                    assert (minutes_late is not None) == (code in ("L", "U"))
    sessions = {(day, session) for day in TERM.school_days() for session in ("AM", "PM")}
    assert set(registers.values()) == {1}
    assert {(day, session) for _, day, session in registers} == sessions


def test_amendments_change_an_unauthorised_mark_already_posted(plan):
    marks: dict[tuple[str, str, date, str], str] = {}
    for round_ in plan.rounds:
        touched = [(a.urn, a.upn) for a in round_.actions if isinstance(a, Amendment | Admission | Deletion)]
        assert len(touched) == len(set(touched)), "a round touches each pupil once"
        for action in round_.actions:
            if isinstance(action, Register):
                marks.update({(action.urn, upn, action.date, action.session): code for upn, code, _ in action.marks()})
            elif isinstance(action, Amendment):
                before = marks[(action.urn, action.upn, action.date, action.session)]
                assert code_for(before, action.date).category is Category.UNAUTHORISED
                assert code_for(action.code, action.date).category is not Category.UNAUTHORISED
                assert action.date <= round_.day and action.reason and action.amended_by == ATTENDANCE_OFFICER
                marks[(action.urn, action.upn, action.date, action.session)] = action.code


def test_absence_looks_like_an_la():
    """Most pupils rarely absent; about a sixth persistently absent, a few severely; every kind of absence."""
    term = recent_term(TODAY, 13, calendar_until=TODAY + timedelta(days=366))
    big = generate(LaConfig(term, tuple(str(400001 + i) for i in range(6)), "871", pupils_per_school=200, seed=3))
    state = Recount(big)
    for round_ in big.rounds:  # the figures only: marks as amended, no rule evaluation
        for action in round_.actions:
            if isinstance(action, Register):
                for upn, code, _ in action.marks():
                    state.marks[(action.urn, upn)][(action.date, action.session)] = code
            elif isinstance(action, Amendment):
                state.marks[(action.urn, action.upn)][(action.date, action.session)] = action.code
    figures = [state.figures(*enrolment) for enrolment in state.enrolments()]
    share = Counter()
    for f in figures:
        share["rarely"] += f.absence_rate < 0.05
        share["persistent"] += f.persistent_absence
        share["severe"] += f.severe_absence
    assert share["rarely"] > 0.55 * len(figures)
    assert 0.12 * len(figures) <= share["persistent"] <= 0.22 * len(figures)
    assert 1 <= share["severe"] <= 0.05 * len(figures)
    codes = Counter(code for marks in state.marks.values() for code in marks.values())
    assert {"I", "M", "O", "N", "G", "U", "L", "V", "P", "Y1", "C", "R"} <= set(codes)


def test_the_scenario_exercises_every_rule_and_cme_path(plan):
    state = recount(plan)
    ended = {(alert.rule_id, alert.status) for alert in state.alerts}
    for rule in ("persistent_absence", "severe_absence", "penalty_notice_threshold", "illness_15_days"):
        assert (rule, "raised") in ended or (rule, "cleared") in ended, rule
    assert ("persistent_lateness", "raised") in ended and ("continuous_absence_20_days", "raised") in ended
    assert {("continuous_unauthorised_10_days", status) for status in ("raised", "cleared", "retracted")} <= ended
    assert sorted((case.reason, case.status, case.outcome) for case in state.cme_cases) == [
        ("continuous_unauthorised_10_days", "closed", "other"),  # amended to illness: in hospital
        ("continuous_unauthorised_10_days", "closed", "returned_to_school"),
        ("continuous_unauthorised_10_days", "open", None),  # stopped attending, still on roll
        ("deleted_without_destination", "closed", "found_on_roll_elsewhere"),
        ("deleted_without_destination", "open", None),
    ]
    assert state.events["roll.pupil.matched"] == 2  # the transfer and the child found
    assert state.cases and state.events["casework.case.opened"] == len(state.cases)


# ---------------------------------------------------------------- the recount's rules

URN, UPN = URNS[0], "A870030012001"
PRESENT = ["/", "\\"]


def one_pupil(codes: list[str], amend: dict[int, list[tuple[int, str]]] | None = None) -> list[Round]:
    """Rounds of one pupil's marks, session by session over the term; `amend` maps a session index to
    the (session index, new code) amendments made after it."""
    days = TERM.school_days()
    rounds = []
    for index, code in enumerate(codes):
        day, session = days[index // 2], ("AM", "PM")[index % 2]
        rounds.append(Round(day, (Register(URN, day, session, (UPN,), (code,), (None,)),)))
        for target, new in (amend or {}).get(index, []):
            marked, marked_session = days[target // 2], ("AM", "PM")[target % 2]
            amendment = Amendment(URN, UPN, marked, marked_session, new, "Reason given", ATTENDANCE_OFFICER)
            rounds.append(Round(day, (amendment,)))
    return rounds


def replay(rounds: list[Round]) -> Recount:
    school = School(URN, "Test School", "primary", "870", TERM.calendar)
    state = Recount(Plan("870", 0, TERM, (school,), (), tuple(rounds)))
    for round_ in rounds:
        state.apply(round_)
    return state


def alerts(state: Recount) -> list[tuple[str, str]]:
    return [(alert.rule_id, alert.status) for alert in state.alerts]


def test_persistent_absence_needs_twenty_possible_sessions_and_clears_below_ten_percent():
    early = replay(one_pupil(["O"]))
    assert early.figures(URN, UPN).persistent_absence and alerts(early) == []  # 100 %, but one session
    codes = PRESENT * 4 + ["Y1", "Y1"] + PRESENT * 5 + ["O", "O"]  # 2 absent of 20 possible: 10 %
    assert alerts(replay(one_pupil(codes))) == [("persistent_absence", "raised")]
    assert alerts(replay(one_pupil(codes[:-1]))) == []  # 1 of 19
    assert alerts(replay(one_pupil(codes + ["/"]))) == [("persistent_absence", "cleared")]  # 2 of 21


@pytest.mark.parametrize("closed_day", [False, True])
def test_ten_school_days_of_unauthorised_absence_open_a_cme_case_until_the_child_is_back(closed_day):
    away = ["N", "N"] + ["O", "O"] * 9
    if closed_day:  # a day the pupil could not come (not a possible session) neither counts nor breaks
        away[8:8] = ["Y1", "Y1"]
    rounds = one_pupil(PRESENT * 2 + away)
    state = replay(rounds)
    assert ("continuous_unauthorised_10_days", "raised") in alerts(state)
    assert [(c.reason, c.status) for c in state.cme_cases] == [("continuous_unauthorised_10_days", "open")]
    assert ("continuous_unauthorised_10_days", "raised") not in alerts(replay(rounds[:-2]))  # nine and a half days
    back = replay(one_pupil(PRESENT * 2 + away + ["/"]))
    assert ("continuous_unauthorised_10_days", "cleared") in alerts(back)
    [case] = back.cme_cases
    assert (case.status, case.outcome, case.located_urn) == ("closed", "returned_to_school", URN)


def test_amending_a_counted_session_retracts_the_alert():
    away = ["N"] * 20  # ten school days
    state = replay(one_pupil(PRESENT * 2 + away, amend={23: [(4, "I")]}))  # the first day's AM was illness
    assert ("continuous_unauthorised_10_days", "retracted") in alerts(state)
    assert ("penalty_notice_threshold", "raised") in alerts(state)  # 19 unauthorised sessions still
    [case] = state.cme_cases
    assert (case.status, case.outcome) == ("closed", "other")


def test_roll_changes_and_the_cme_register():
    days = TERM.school_days()
    school = School(URN, "Test School", "primary", "870", TERM.calendar)
    other = School(URNS[1], "Other School", "primary", "870", TERM.calendar)
    born = date(2017, 1, 1)
    rounds = [
        Round(None, tuple(Admission(URN, upn, date(2025, 9, 3), "4", born) for upn in ("A1", "B1", "C1"))),
        Round(
            days[1],
            (Deletion(URN, "A1", days[1], "moved_away"), Deletion(URN, "B1", days[1], "elective_home_education")),
        ),
        Round(days[2], (Deletion(URN, "C1", days[2], "registered_at_another_school", other.urn, "870"),)),
        Round(days[2], (Admission(other.urn, "C1", days[2], "4", born, previous_urn=URN),)),
        Round(days[6], (Admission(other.urn, "A1", days[6], "4", born),)),
    ]
    state = Recount(Plan("870", 0, TERM, (school, other), (), tuple(rounds)))
    for round_ in rounds[:2]:
        state.apply(round_)
    assert [(c.upn, c.reason, c.status) for c in state.cme_cases] == [("A1", "deleted_without_destination", "open")]
    for round_ in rounds[2:]:
        state.apply(round_)
    [case] = state.cme_cases
    assert (case.status, case.outcome, case.located_urn) == ("closed", "found_on_roll_elsewhere", other.urn)
    roll = {"roll.pupil.admitted": 5, "roll.pupil.deleted": 3, "roll.pupil.matched": 2}
    assert state.deliveries(["roll.*"]) == Counter(roll)
    assert state.deliveries(["roll.*", "cme.case.opened"]) == Counter(roll | {"cme.case.opened": 1})
    with pytest.raises(ValueError, match="cme.notification"):
        state.deliveries(["cme.*"])  # return clocks are not recounted
