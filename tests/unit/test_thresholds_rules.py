"""Rates and threshold rules (domain.md §3-4) under the national and Halton (seed 004) policies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.domain.calendar import SchoolCalendar, Term
from shared.domain.codes import Category, code_for, codes_in_force
from shared.domain.thresholds import (
    HALTON_PRESET,
    NATIONAL_PRESET,
    PRESETS,
    RULE_IDS,
    ContinuousAbsenceRule,
    Firing,
    IllnessRule,
    PenaltyNoticeRule,
    PersistentAbsenceRule,
    PersistentLatenessRule,
    PolicyDocument,
    Rules,
    SessionMark,
    SevereAbsenceRule,
    SupportMapRule,
    SupportMapStep,
    Totals,
    evaluate,
    lookback_start,
    mark_totals,
    totals,
    totals_in,
)

D = date.fromisoformat

# An illustrative school: the end of 2024-25 and all of 2025-26, half-terms between, one closure.
TERMS = (
    Term("Summer 1 2025", D("2025-04-22"), D("2025-05-23")),
    Term("Summer 2 2025", D("2025-06-02"), D("2025-07-22")),
    Term("Autumn 1", D("2025-09-03"), D("2025-10-24")),
    Term("Autumn 2", D("2025-11-03"), D("2025-12-19")),
    Term("Spring 1", D("2026-01-05"), D("2026-02-13")),
    Term("Spring 2", D("2026-02-23"), D("2026-03-27")),
    Term("Summer 1", D("2026-04-13"), D("2026-05-22")),
    Term("Summer 2", D("2026-06-01"), D("2026-07-22")),
)
CLOSURE = D("2025-11-20")
CAL = SchoolCalendar(terms=TERMS, closures=frozenset({CLOSURE}))
YEAR = 2025
AUTUMN_START = D("2025-09-03")

NATIONAL = NATIONAL_PRESET.rules
HALTON = HALTON_PRESET.rules
PRESET_NAMES = pytest.mark.parametrize("preset", ["national", "halton"])
SUPPORT_MAP = ((4, "stage_1_letter"), (7, "stage_2_letter"), (10, "stage_3_letter"))
SUPPORT_MAP += ((13, "formal_warning"), (16, "enforcement"), (19, "persistent_absence"))


def mark(day: date, session: str, code: str) -> SessionMark:
    """A mark with its code's category and possible flag on that date."""
    if code == "/" and session == "PM":
        code = "\\"  # the PM present mark
    entry = code_for(code, day)
    return SessionMark(day, session, code, entry.category, entry.possible)


def school_days_from(first: date, n: int) -> list[date]:
    """The first n school days on or after `first`."""
    days: list[date] = []
    day = first - timedelta(days=1)
    for _ in range(n):
        day = CAL.next_school_day(day)
        days.append(day)
    return days


def register(first: date, codes: Sequence[str]) -> list[SessionMark]:
    """Marks for consecutive sessions, AM then PM, from the first school day on or after `first`."""
    days = school_days_from(first, (len(codes) + 1) // 2)
    slots = [(day, session) for day in days for session in ("AM", "PM")]
    return [mark(day, session, code) for (day, session), code in zip(slots, codes, strict=False)]


def present_except(start: date, end: date, codes: dict[tuple[date, str], str]) -> list[SessionMark]:
    """Every session of every school day from start to end: present unless `codes` says otherwise."""
    return [
        mark(day, session, codes.get((day, session), "/"))
        for day in CAL.school_days_between(start, end)
        for session in ("AM", "PM")
    ]


def absences(n: int) -> list[str]:
    """n absence codes, authorised and unauthorised mixed."""
    return [("I", "O", "M", "G", "N", "C")[i % 6] for i in range(n)]


def fired(rules: Rules, marks: Sequence[SessionMark], rule_id: str, calendar: SchoolCalendar = CAL) -> list[Firing]:
    return [firing for firing in evaluate(rules, marks, calendar, YEAR) if firing.rule_id == rule_id]


def only(firings: list[Firing]) -> Firing:
    assert len(firings) == 1, firings
    return firings[0]


# --- totals and rates ----------------------------------------------------------------------


def test_totals_count_possible_sessions_by_category() -> None:
    marks = register(AUTUMN_START, ["/", "/", "L", "V", "K", "I", "M", "O", "U", "D", "#", "X", "Z", "Y1"])
    assert totals(marks) == Totals(
        possible_sessions=9,
        present_sessions=3,
        approved_activity_sessions=2,
        authorised_absence_sessions=2,
        unauthorised_absence_sessions=2,
    )
    assert totals(marks).absence_sessions == 4
    assert totals(marks).absence_rate == pytest.approx(4 / 9)
    assert totals(marks).attendance_rate == pytest.approx(5 / 9)


def test_rates_with_no_possible_sessions_are_zero() -> None:
    nothing = totals(register(AUTUMN_START, ["#", "#", "D"]))
    assert nothing == Totals.ZERO
    assert (nothing.absence_rate, nothing.attendance_rate) == (0.0, 0.0)
    assert not nothing.reaches(10)


@pytest.mark.parametrize(
    ("absent", "possible", "percent", "reaches"),
    [
        (2, 20, 10, True),
        (999, 10_000, 10, False),  # 9.99 %
        (1_000, 10_000, 10, True),
        (1_001, 10_000, Decimal("10"), True),
        (1, 8, Decimal("12.5"), True),
        (1, 8, 12.5, True),
        (1, 8, 12.6, False),
        (1, 3, Decimal("33.33"), True),
        (1, 3, Decimal("33.34"), False),
        (10, 20, 50, True),
        (9, 20, 50, False),
    ],
)
def test_reaches_is_exact(absent: int, possible: int, percent: Decimal | float | int, reaches: bool) -> None:
    assert Totals(possible, possible - absent, 0, 0, absent).reaches(percent) is reaches


def test_totals_in_a_period() -> None:
    marks = register(AUTUMN_START, ["O"] * 2 + ["/"] * 4 + ["I"] * 2)  # Wed, Thu, Fri, Mon
    assert totals_in(marks, D("2025-09-04"), D("2025-09-05")) == Totals(4, 4, 0, 0, 0)
    assert totals_in(marks, D("2025-09-03"), D("2025-09-08")).absence_sessions == 4
    assert totals_in(marks, D("2025-09-09"), D("2025-09-30")) == Totals.ZERO


def test_session_must_be_am_or_pm() -> None:
    with pytest.raises(ValueError, match="AM"):
        SessionMark(AUTUMN_START, "EVE", "/", Category.PRESENT, True)


def test_marks_order_by_date_then_session() -> None:
    later = mark(D("2025-09-04"), "AM", "O")
    pm = mark(AUTUMN_START, "PM", "/")
    am = mark(AUTUMN_START, "AM", "N")
    assert sorted([later, pm, am]) == [am, pm, later]


# --- persistent and severe absence ---------------------------------------------------------


@PRESET_NAMES
@pytest.mark.parametrize(
    ("absent", "present", "fires"),
    [
        pytest.param(2, 18, True, id="10.0% of 20"),
        pytest.param(2, 19, False, id="9.5% of 21"),
        pytest.param(37, 334, False, id="9.97% of 371"),
        pytest.param(3, 25, True, id="10.7% of 28"),
        pytest.param(2, 17, False, id="10.5% of 19 possible: below the minimum"),
        pytest.param(3, 17, True, id="15% of 20 possible"),
    ],
)
def test_persistent_absence_line(preset: str, absent: int, present: int, fires: bool) -> None:
    marks = register(AUTUMN_START, absences(absent) + ["/"] * present)
    assert bool(fired(PRESETS[preset].rules, marks, "persistent_absence")) is fires


def test_persistent_absence_evidence() -> None:
    marks = register(AUTUMN_START, ["/"] * 4 + ["I", "O"] + ["/"] * 14 + ["#", "#"])
    firing = only(fired(NATIONAL, marks, "persistent_absence"))
    assert firing.step == ""
    assert firing.figures == {
        "numerator": 2,
        "denominator": 20,
        "rate": 0.1,
        "threshold_percent": "10",
        "min_possible_sessions": 20,
    }
    # Ten school days of possible sessions, Wed 3 Sep to Tue 16 Sep; the '#' day after is not counted.
    assert (firing.window_from, firing.window_to) == (D("2025-09-03"), D("2025-09-16"))
    assert [(m.date, m.session, m.code) for m in firing.sessions] == [
        (D("2025-09-05"), "AM", "I"),
        (D("2025-09-05"), "PM", "O"),
    ]


def test_rates_count_only_the_academic_year_to_date() -> None:
    last_summer = register(D("2025-07-09"), ["O"] * 4 + ["/"] * 16)  # 20 % in 2024-25
    this_autumn = register(AUTUMN_START, ["O"] + ["/"] * 19)  # 5 % in 2025-26
    assert fired(NATIONAL, last_summer + this_autumn, "persistent_absence") == []
    assert evaluate(NATIONAL, last_summer + this_autumn, CAL, 2024)[0].rule_id == "persistent_absence"


@PRESET_NAMES
@pytest.mark.parametrize(
    ("absent", "present", "fires"),
    [
        pytest.param(20, 20, True, id="50% of 40"),
        pytest.param(19, 21, False, id="47.5% of 40"),
        pytest.param(21, 19, True, id="52.5% of 40"),
        pytest.param(10, 9, False, id="52.6% of 19 possible: below the minimum"),
        pytest.param(10, 10, True, id="50% of 20 possible"),
    ],
)
def test_severe_absence_line(preset: str, absent: int, present: int, fires: bool) -> None:
    marks = register(AUTUMN_START, absences(absent) + ["/"] * present)
    firings = fired(PRESETS[preset].rules, marks, "severe_absence")
    assert bool(firings) is fires
    if fires:
        assert firings[0].figures["threshold_percent"] == "50"


# --- support map ---------------------------------------------------------------------------


@PRESET_NAMES
@pytest.mark.parametrize("absent", [7, 8, 9, 13, 14, 15, 19, 20, 21, 25, 26, 27, 31, 32, 33, 37, 38, 39])
def test_support_map_steps(preset: str, absent: int) -> None:
    marks = register(AUTUMN_START, absences(absent) + ["/"] * 60)
    firings = fired(PRESETS[preset].rules, marks, "support_map_days")
    if preset == "national":
        assert firings == []  # no support map in the national policy
        return
    reached = [(days, action) for days, action in SUPPORT_MAP if absent >= 2 * days]
    assert [(f.step, f.figures["action"]) for f in firings] == [(f"{days}_days", action) for days, action in reached]
    for firing in firings:
        assert firing.figures["absence_sessions"] == absent
        assert firing.figures["days"] == absent / 2
        assert len(firing.sessions) == absent


# --- penalty notice ------------------------------------------------------------------------

PN_AS_OF = D("2025-11-28")
# 10 school weeks back from Fri 28 Nov: over the October half-term and the 20 Nov closure.
PN_FROM = {"national": D("2025-09-12"), "halton": D("2025-07-18")}
HALF_TERM_SPAN = [(day, session) for day in school_days_from(D("2025-10-20"), 10) for session in ("AM", "PM")]


@PRESET_NAMES
@pytest.mark.parametrize(
    ("in_span", "extra", "national_fires", "halton_fires"),
    [
        pytest.param(9, None, False, False, id="9 sessions"),
        pytest.param(10, None, True, True, id="10 sessions across the half-term"),
        pytest.param(11, None, True, True, id="11 sessions"),
        pytest.param(9, (D("2025-09-12"), "AM"), True, True, id="10th on the first day of 10 weeks"),
        pytest.param(9, (D("2025-09-11"), "PM"), False, True, id="10th the day before 10 weeks"),
        pytest.param(9, (D("2025-07-18"), "PM"), False, True, id="10th on the first day of 12 weeks, last year"),
        pytest.param(9, (D("2025-07-17"), "PM"), False, False, id="10th the day before 12 weeks"),
    ],
)
def test_penalty_notice_window(
    preset: str, in_span: int, extra: tuple[date, str] | None, national_fires: bool, halton_fires: bool
) -> None:
    unauthorised = dict(zip(HALF_TERM_SPAN[:in_span], ["G", "N", "O", "U"] * 3, strict=False))
    if extra:
        unauthorised[extra] = "O"
    marks = present_except(D("2025-07-01"), PN_AS_OF, unauthorised | {HALF_TERM_SPAN[-1]: "I"})
    firings = fired(PRESETS[preset].rules, marks, "penalty_notice_threshold")
    assert bool(firings) is {"national": national_fires, "halton": halton_fires}[preset]
    if firings:
        firing = firings[0]
        assert (firing.window_from, firing.window_to) == (PN_FROM[preset], PN_AS_OF)
        weeks = {"national": 10, "halton": 12}[preset]
        assert firing.figures == {
            "count": 10 if in_span + bool(extra) == 10 else 11,
            "threshold": 10,
            "window_school_days": weeks * 5,
            "window_school_weeks": weeks,
        }
        assert all(m.category is Category.UNAUTHORISED for m in firing.sessions)  # the I is not counted


@PRESET_NAMES
@pytest.mark.parametrize(
    ("unauthorised_days", "national_fires", "halton_fires"),
    [
        pytest.param(["2025-07-21", "2025-07-22", "2025-09-15", "2025-09-16", "2025-09-17"], True, True, id="July+Sep"),
        pytest.param(["2025-05-23", "2025-07-22", "2025-09-15", "2025-09-16", "2025-09-17"], False, True, id="May+"),
        pytest.param(["2025-07-22", "2025-09-15", "2025-09-16", "2025-09-17"], False, False, id="8 sessions"),
    ],
)
def test_penalty_notice_window_spans_the_academic_year(
    preset: str, unauthorised_days: list[str], national_fires: bool, halton_fires: bool
) -> None:
    as_of = D("2025-09-19")
    codes = {(D(day), session): "G" for day in unauthorised_days for session in ("AM", "PM")}
    marks = present_except(D("2025-05-01"), as_of, codes)
    firings = fired(PRESETS[preset].rules, marks, "penalty_notice_threshold")
    assert bool(firings) is {"national": national_fires, "halton": halton_fires}[preset]
    if firings:
        # 13 school days of September, then back over the summer holiday into the summer terms.
        expected_from = {"national": D("2025-06-02"), "halton": D("2025-05-12")}[preset]
        assert (firings[0].window_from, firings[0].window_to) == (expected_from, as_of)
        assert {m.date.month for m in firings[0].sessions} >= {7, 9}  # both academic years counted


def test_penalty_notice_window_is_cut_short_by_a_calendar_without_earlier_terms() -> None:
    this_year_only = SchoolCalendar(terms=TERMS[2:])
    marks = register(AUTUMN_START, ["/"] * 16 + ["O"] * 10)  # 13 school days, to Fri 19 Sep
    firing = only(fired(NATIONAL, marks, "penalty_notice_threshold", this_year_only))
    assert firing.window_from == AUTUMN_START
    assert firing.figures["window_school_days"] == 13


# --- continuous absence --------------------------------------------------------------------

RUN_END = D("2025-12-12")


def run_register(run_days: Sequence[date]) -> dict[tuple[date, str], str]:
    """Codes for a run of unauthorised days ('O' mornings, 'N' afternoons)."""
    return {(day, session): code for day in run_days for session, code in (("AM", "O"), ("PM", "N"))}


@PRESET_NAMES
@pytest.mark.parametrize("days", [9, 10, 11, 19, 20, 21])
def test_continuous_runs(preset: str, days: int) -> None:
    run_days = CAL.previous_school_days(RUN_END, days)
    marks = present_except(D("2025-10-01"), RUN_END, run_register(run_days))
    rules = PRESETS[preset].rules
    ten = fired(rules, marks, "continuous_unauthorised_10_days")
    twenty = fired(rules, marks, "continuous_absence_20_days")
    assert (bool(ten), bool(twenty)) == (days >= 10, days >= 20)
    for firing, threshold in ((ten, 10), (twenty, 20)):
        if firing:
            assert firing[0].figures == {"school_days": days, "threshold": threshold}
            assert (firing[0].window_from, firing[0].window_to) == (run_days[0], RUN_END)
            assert len(firing[0].sessions) == 2 * days


def ten_day_run(end: date) -> tuple[list[date], dict[tuple[date, str], str]]:
    run_days = CAL.previous_school_days(end, 10)
    return run_days, run_register(run_days)


@pytest.mark.parametrize("breaker", ["L", "I", "/"])
def test_continuous_run_broken_by_a_mark_that_is_not_unauthorised(breaker: str) -> None:
    run_days, codes = ten_day_run(RUN_END)
    codes[(run_days[4], "PM")] = breaker
    marks = present_except(D("2025-11-03"), RUN_END, codes)
    assert not fired(NATIONAL, marks, "continuous_unauthorised_10_days")


def test_continuous_run_broken_by_a_day_without_marks() -> None:
    run_days = CAL.previous_school_days(RUN_END, 11)
    codes = run_register(run_days)
    marks = [m for m in present_except(D("2025-11-03"), RUN_END, codes) if m.date != run_days[5]]
    assert not fired(NATIONAL, marks, "continuous_unauthorised_10_days")  # 5 days, not 10 with the gap skipped


def test_continuous_run_steps_over_non_possible_marks() -> None:
    run_days = CAL.previous_school_days(RUN_END, 11)
    codes = run_register(run_days)
    codes |= {(run_days[5], "AM"): "#", (run_days[5], "PM"): "#"}  # planned closure marked in the register
    codes[(run_days[7], "PM")] = "Y2"  # travel disruption: the morning's absence alone decides the day
    marks = present_except(D("2025-11-03"), RUN_END, codes)
    firing = only(fired(HALTON, marks, "continuous_unauthorised_10_days"))
    assert firing.figures["school_days"] == 10
    assert (firing.window_from, firing.window_to) == (run_days[0], RUN_END)
    assert len(firing.sessions) == 19
    assert all(m.category is Category.UNAUTHORISED for m in firing.sessions)


@PRESET_NAMES
@pytest.mark.parametrize(
    ("end", "register_from", "expected_from"),
    [
        pytest.param(D("2025-11-26"), D("2025-11-03"), D("2025-11-12"), id="weekends and the 20 Nov closure"),
        pytest.param(D("2026-05-11"), D("2026-04-13"), D("2026-04-27"), id="May Day bank holiday"),
        pytest.param(D("2025-11-07"), D("2025-10-01"), D("2025-10-20"), id="October half-term"),
        pytest.param(D("2025-09-08"), D("2025-07-01"), D("2025-07-15"), id="summer holiday, two academic years"),
    ],
)
def test_continuous_run_not_broken_by_days_without_school(
    preset: str, end: date, register_from: date, expected_from: date
) -> None:
    run_days, codes = ten_day_run(end)
    marks = present_except(register_from, end, codes)
    firing = only(fired(PRESETS[preset].rules, marks, "continuous_unauthorised_10_days"))
    assert (firing.window_from, firing.window_to) == (expected_from, end)
    assert firing.figures["school_days"] == 10


# --- illness -------------------------------------------------------------------------------


@PRESET_NAMES
@pytest.mark.parametrize(("ill", "fires"), [(29, False), (30, True), (31, True)])
def test_illness_cumulative(preset: str, ill: int, fires: bool) -> None:
    codes = [code for _ in range(ill) for code in ("I", "/", "/")]  # never consecutive days
    firings = fired(PRESETS[preset].rules, register(AUTUMN_START, codes), "illness_15_days")
    assert bool(firings) is fires
    if fires:
        assert firings[0].figures == {
            "count": ill,
            "threshold": 30,
            "school_days": ill / 2,
            "threshold_school_days": 15,
        }
        assert {m.code for m in firings[0].sessions} == {"I"}


def test_illness_counts_this_academic_year_only() -> None:
    last_summer = register(D("2025-07-14"), ["I"] * 10)
    this_autumn = register(AUTUMN_START, ["I"] * 28)
    assert not fired(NATIONAL, last_summer + this_autumn, "illness_15_days")


# --- persistent lateness -------------------------------------------------------------------

LATE_AS_OF = D("2025-11-28")
LATE_FROM = D("2025-10-10")  # 30 school days (6 weeks) back, allowing for the half-term and closure
LATE_SPAN = [(day, "AM") for day in school_days_from(D("2025-11-03"), 15)]


@PRESET_NAMES
@pytest.mark.parametrize(
    ("in_span", "extra", "fires"),
    [
        pytest.param(9, None, False, id="9"),
        pytest.param(10, None, True, id="10"),
        pytest.param(11, None, True, id="11"),
        pytest.param(9, LATE_FROM, True, id="10th on the first day of the window"),
        pytest.param(9, D("2025-10-09"), False, id="10th the day before the window"),
    ],
)
def test_persistent_lateness_window(preset: str, in_span: int, extra: date | None, fires: bool) -> None:
    late = dict(zip(LATE_SPAN[:in_span], ["L", "U"] * 6, strict=False))
    if extra:
        late[(extra, "PM")] = "L"
    marks = present_except(D("2025-09-03"), LATE_AS_OF, late)
    firings = fired(PRESETS[preset].rules, marks, "persistent_lateness")
    assert bool(firings) is fires
    if fires:
        assert (firings[0].window_from, firings[0].window_to) == (LATE_FROM, LATE_AS_OF)
        assert firings[0].figures["window_school_days"] == 30
        assert {m.code for m in firings[0].sessions} == {"L", "U"}


# --- evaluation as a whole -----------------------------------------------------------------

# 15 days of illness, then 20 days of unauthorised absence with late arrivals: every rule fires.
EVERYTHING = register(AUTUMN_START, ["I"] * 30 + ["O", "U"] * 20)


def test_every_rule_fires_in_rule_order() -> None:
    firings = evaluate(HALTON, EVERYTHING, CAL, YEAR)
    assert [f.rule_id for f in firings] == [
        RULE_IDS[0],
        RULE_IDS[1],
        *[RULE_IDS[2]] * len(SUPPORT_MAP),
        *RULE_IDS[3:],
    ]
    assert [f.step for f in firings if f.step] == [f"{days}_days" for days, _ in SUPPORT_MAP]


def test_order_of_rule_ids_follows_domain_md() -> None:
    assert RULE_IDS == (
        "persistent_absence",
        "severe_absence",
        "support_map_days",
        "penalty_notice_threshold",
        "continuous_unauthorised_10_days",
        "continuous_absence_20_days",
        "illness_15_days",
        "persistent_lateness",
    )


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_a_disabled_rule_never_fires(rule_id: str) -> None:
    rules = HALTON.model_copy(update={rule_id: getattr(HALTON, rule_id).model_copy(update={"enabled": False})})
    firings = evaluate(rules, EVERYTHING, CAL, YEAR)
    assert {f.rule_id for f in firings} == set(RULE_IDS) - {rule_id}


def test_nothing_in_the_academic_year_means_nothing_fires() -> None:
    assert evaluate(HALTON, [], CAL, YEAR) == []
    assert evaluate(HALTON, EVERYTHING, CAL, YEAR + 1) == []


def test_two_marks_for_one_session_are_rejected() -> None:
    with pytest.raises(ValueError, match="two marks for 2025-09-03 AM"):
        evaluate(NATIONAL, [mark(AUTUMN_START, "AM", "/"), mark(AUTUMN_START, "AM", "O")], CAL, YEAR)


# --- policy documents ----------------------------------------------------------------------


def test_presets() -> None:
    assert NATIONAL == Rules()
    assert not NATIONAL.support_map_days.enabled and NATIONAL.support_map_days.steps == []
    assert (
        NATIONAL.penalty_notice_threshold.unauthorised_sessions,
        NATIONAL.penalty_notice_threshold.window_school_weeks,
    ) == (10, 10)
    assert (
        HALTON.penalty_notice_threshold.unauthorised_sessions,
        HALTON.penalty_notice_threshold.window_school_weeks,
    ) == (10, 12)
    assert [(s.days, s.action) for s in HALTON.support_map_days.steps] == list(SUPPORT_MAP)
    assert (
        HALTON.model_copy(
            update={"penalty_notice_threshold": PenaltyNoticeRule(), "support_map_days": SupportMapRule()}
        )
        == NATIONAL
    )
    for document in PRESETS.values():
        assert PolicyDocument.model_validate_json(document.model_dump_json()) == document


def test_school_overrides_merge_field_by_field() -> None:
    document = PolicyDocument(
        name="halton",
        rules=HALTON,
        school_overrides={
            "123456": {
                "persistent_absence": {"percent": "12.5"},
                "penalty_notice_threshold": {"unauthorised_sessions": 8},
                "support_map_days": {"steps": [{"days": 5, "action": "stage_1_letter"}]},
            }
        },
    )
    school = document.rules_for_school("123456")
    assert school.persistent_absence == PersistentAbsenceRule(percent=Decimal("12.5"), min_possible_sessions=20)
    assert school.penalty_notice_threshold == PenaltyNoticeRule(unauthorised_sessions=8, window_school_weeks=12)
    assert school.support_map_days == SupportMapRule(
        enabled=True, steps=[SupportMapStep(days=5, action="stage_1_letter")]
    )
    assert school.severe_absence == HALTON.severe_absence
    assert document.rules_for_school("654321") == HALTON

    ten_percent = register(AUTUMN_START, ["O", "O"] + ["/"] * 18)
    assert fired(HALTON, ten_percent, "persistent_absence")
    assert not fired(school, ten_percent, "persistent_absence")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"123456": {"persistant_absence": {"percent": 12}}}, "unknown rule id"),
        ({"123456": {"persistent_absence": {"percentage": 12}}}, "Extra inputs"),
        ({"123456": {"persistent_absence": {"percent": 0}}}, "greater than 0"),
        ({"123456": {"support_map_days": {"steps": []}}}, "at least one step"),
        ({"12345": {"persistent_absence": {"percent": 12}}}, "pattern"),
    ],
)
def test_invalid_school_overrides(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PolicyDocument(name="halton", rules=HALTON, school_overrides=overrides)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PersistentAbsenceRule(percent=0), "greater than 0"),
        (lambda: PersistentAbsenceRule(percent=-5), "greater than 0"),
        (lambda: SevereAbsenceRule(percent="100.5"), "less than or equal to 100"),
        (lambda: PersistentAbsenceRule(min_possible_sessions=0), "greater than or equal to 1"),
        (lambda: PersistentAbsenceRule(pct=10), "Extra inputs"),
        (
            lambda: SupportMapRule(enabled=True, steps=[{"days": 4, "action": "a"}, {"days": 4, "action": "b"}]),
            "strictly increasing",
        ),
        (
            lambda: SupportMapRule(enabled=True, steps=[{"days": 7, "action": "a"}, {"days": 4, "action": "b"}]),
            "strictly increasing",
        ),
        (lambda: SupportMapRule(enabled=True), "at least one step"),
        (lambda: SupportMapStep(days=0, action="stage_1_letter"), "greater than or equal to 1"),
        (lambda: SupportMapStep(days=4, action="Stage 1 letter"), "pattern"),
        (lambda: PenaltyNoticeRule(unauthorised_sessions=0), "greater than or equal to 1"),
        (lambda: PenaltyNoticeRule(window_school_weeks=0), "greater than or equal to 1"),
        (lambda: ContinuousAbsenceRule(), "Field required"),
        (lambda: ContinuousAbsenceRule(school_days=0), "greater than or equal to 1"),
        (lambda: IllnessRule(school_days=0), "greater than or equal to 1"),
        (lambda: PersistentLatenessRule(late_sessions=0), "greater than or equal to 1"),
        (lambda: Rules(truancy={}), "Extra inputs"),
        (lambda: PolicyDocument(name="", rules=Rules()), "at least 1 character"),
    ],
)
def test_invalid_policy(build: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()


def test_percent_of_100_is_allowed() -> None:
    assert PersistentAbsenceRule(percent=100).percent == Decimal("100")


# --- properties ----------------------------------------------------------------------------

SLOTS = [
    (day, session) for day in CAL.school_days_between(D("2025-06-02"), D("2025-12-19")) for session in ("AM", "PM")
]
CODES = [entry.code for entry in codes_in_force(AUTUMN_START) if entry.code != "\\"]
# Lean towards unauthorised absence and lateness so runs and windows actually fire.
CODE_POOL = CODES + ["O", "N", "G", "U"] * 8 + ["L", "I", "/"] * 3
SENSITIVE = Rules(
    persistent_absence=PersistentAbsenceRule(min_possible_sessions=1),
    severe_absence=SevereAbsenceRule(min_possible_sessions=1),
    support_map_days=SupportMapRule(
        enabled=True, steps=[SupportMapStep(days=d, action=f"step_{d}") for d in (1, 2, 5)]
    ),
    penalty_notice_threshold=PenaltyNoticeRule(unauthorised_sessions=3, window_school_weeks=1),
    continuous_unauthorised_10_days=ContinuousAbsenceRule(school_days=2),
    continuous_absence_20_days=ContinuousAbsenceRule(school_days=3),
    illness_15_days=IllnessRule(school_days=1),
    persistent_lateness=PersistentLatenessRule(late_sessions=2, window_school_weeks=1),
)


@st.composite
def registers(draw: st.DrawFn) -> list[SessionMark]:
    """A pupil's marks over consecutive sessions, some sessions unmarked, from June to December 2025."""
    start = draw(st.integers(0, len(SLOTS) - 1))
    codes = draw(st.lists(st.one_of(st.sampled_from(CODE_POOL), st.none()), max_size=120))
    return [mark(*slot, code) for slot, code in zip(SLOTS[start:], codes, strict=False) if code is not None]


def amounts() -> st.SearchStrategy[Totals]:
    return st.builds(Totals, *[st.integers(-400, 400)] * 5)


@given(registers())
def test_totals_are_the_sum_of_each_marks_contribution(marks: list[SessionMark]) -> None:
    assert totals(marks) == sum((mark_totals(m.category, m.possible) for m in marks), Totals.ZERO)


@given(amounts(), amounts())
def test_totals_add_and_subtract_are_inverse(a: Totals, b: Totals) -> None:
    assert (a + b) - b == a
    assert (a - b) + b == a
    assert a + Totals.ZERO == a
    assert a - a == Totals.ZERO


@settings(max_examples=60, deadline=None)
@given(st.data(), registers(), st.sampled_from([NATIONAL, HALTON, SENSITIVE]), st.sampled_from([2024, 2025]))
def test_evaluate_ignores_the_order_of_marks(
    data: st.DataObject, marks: list[SessionMark], rules: Rules, year: int
) -> None:
    shuffled = data.draw(st.permutations(marks))
    assert evaluate(rules, shuffled, CAL, year) == evaluate(rules, marks, CAL, year)


@given(st.data(), registers(), st.sampled_from(CODES))
def test_an_amendment_delta_matches_recounting(data: st.DataObject, marks: list[SessionMark], code: str) -> None:
    assume(marks)
    index = data.draw(st.integers(0, len(marks) - 1))
    old = marks[index]
    new = mark(old.date, old.session, code)
    amended = [*marks[:index], new, *marks[index + 1 :]]
    delta = mark_totals(new.category, new.possible) - mark_totals(old.category, old.possible)
    assert totals(amended) == totals(marks) + delta


_LOOKBACK_DAYS = CAL.school_days_between(D("2025-05-01"), D("2025-10-24"))


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(st.sampled_from(["/", "O", "N", "U", "L", "I", "M"]), min_size=1, max_size=len(_LOOKBACK_DAYS)),
    policy=st.sampled_from([NATIONAL, HALTON]),
)
def test_marks_before_the_lookback_start_change_no_firing(codes, policy):
    """The service reads a pupil's marks from `lookback_start` only; that must not change the outcome."""
    days = _LOOKBACK_DAYS[-len(codes) :]  # a run of school days ending in the autumn, across the summer
    marks = [
        SessionMark(d, "AM", c, code_for(c, d).category, code_for(c, d).possible)
        for d, c in zip(days, codes, strict=True)
    ]
    as_of = days[-1]
    year = 2025 if as_of >= D("2025-08-01") else 2024
    start = lookback_start(policy, CAL, as_of, year)
    recent = [m for m in marks if m.date >= start]
    keys = lambda firings: [(f.rule_id, f.step) for f in firings]  # noqa: E731
    assert keys(evaluate(policy, recent, CAL, year)) == keys(evaluate(policy, marks, CAL, year))
