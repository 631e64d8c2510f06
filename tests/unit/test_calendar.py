"""School days: weekends, England bank holidays, terms, INSET days and closures."""

from datetime import timedelta

import pytest

from shared.domain.calendar import (
    SchoolCalendar,
    Term,
    academic_year,
    academic_year_bounds,
    england_bank_holidays,
)
from tests.unit.school_year import INSET_2025_26, TERMS_2025_26, D

# The shared 2025-26 school year, preceded by 2024-25's last half-term.
TERMS = (Term("Summer 2 2025", D("2025-06-02"), D("2025-07-22")), *TERMS_2025_26)
INSET = INSET_2025_26
CLOSURES = frozenset({D("2025-11-20")})
SCHOOL = SchoolCalendar(terms=TERMS, inset_days=INSET, closures=CLOSURES)
NO_TERMS = SchoolCalendar()


# --- academic year -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "year"),
    [
        ("2025-07-31", 2024),
        ("2025-08-01", 2025),
        ("2025-12-31", 2025),
        ("2026-01-01", 2025),
        ("2026-07-31", 2025),
    ],
)
def test_academic_year(day: str, year: int) -> None:
    assert academic_year(D(day)) == year


def test_academic_year_bounds() -> None:
    assert academic_year_bounds(2025) == (D("2025-08-01"), D("2026-07-31"))
    start, end = academic_year_bounds(2024)
    assert academic_year(start) == academic_year(end) == 2024
    assert academic_year(start - timedelta(days=1)) == 2023
    assert academic_year(end + timedelta(days=1)) == 2025


# --- bank holidays -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "day",
    [
        "2025-05-05",  # Early May bank holiday
        "2025-08-25",  # Summer bank holiday
        "2025-12-25",
        "2025-12-26",
        "2026-04-03",  # Good Friday
        "2026-04-06",  # Easter Monday
        "2026-12-28",  # Boxing Day substitute (26th is a Saturday)
        "2023-05-08",  # Coronation: a one-off the library knows about
    ],
)
def test_england_bank_holidays_are_not_school_days(day: str) -> None:
    assert D(day) in england_bank_holidays(D(day).year)
    assert not NO_TERMS.is_school_day(D(day))


def test_england_bank_holidays_2025_complete() -> None:
    assert england_bank_holidays(2025) == {
        D("2025-01-01"),
        D("2025-04-18"),
        D("2025-04-21"),
        D("2025-05-05"),
        D("2025-05-26"),
        D("2025-08-25"),
        D("2025-12-25"),
        D("2025-12-26"),
    }


def test_england_bank_holidays_excludes_other_nations() -> None:
    # St Andrew's Day substitute (Scotland) and 12 July (Northern Ireland) are not England's.
    assert D("2025-12-01") not in england_bank_holidays(2025)
    assert D("2025-07-14") not in england_bank_holidays(2025)
    assert D("2026-03-17") not in england_bank_holidays(2026)


def test_england_bank_holidays_is_cached() -> None:
    assert england_bank_holidays(2026) is england_bank_holidays(2026)
    assert isinstance(england_bank_holidays(2026), frozenset)


# --- is_school_day -----------------------------------------------------------------------


def test_without_terms_every_weekday_but_bank_holidays_counts() -> None:
    week = [D("2025-12-22") + timedelta(days=i) for i in range(7)]  # Mon 22 - Sun 28 Dec
    assert [NO_TERMS.is_school_day(d) for d in week] == [
        True,
        True,
        True,
        False,  # Christmas Day
        False,  # Boxing Day
        False,  # Saturday
        False,  # Sunday
    ]
    assert NO_TERMS.is_school_day(D("2026-04-07"))  # Tuesday after Easter Monday


def test_weekends_are_not_school_days_in_term() -> None:
    assert SCHOOL.is_school_day(D("2025-10-03"))  # Friday
    assert not SCHOOL.is_school_day(D("2025-10-04"))  # Saturday
    assert not SCHOOL.is_school_day(D("2025-10-05"))  # Sunday


def test_half_term_and_holidays_between_terms_are_not_school_days() -> None:
    october_half_term = [D("2025-10-27") + timedelta(days=i) for i in range(5)]
    assert not any(SCHOOL.is_school_day(d) for d in october_half_term)
    assert SCHOOL.is_school_day(D("2025-10-24"))
    assert SCHOOL.is_school_day(D("2025-11-03"))
    assert not SCHOOL.is_school_day(D("2025-08-12"))  # summer holiday
    assert not SCHOOL.is_school_day(D("2026-03-30"))  # Easter holiday


def test_bank_holiday_inside_a_term_is_not_a_school_day() -> None:
    assert not SCHOOL.is_school_day(D("2026-05-04"))  # Early May bank holiday, Summer 1
    assert SCHOOL.is_school_day(D("2026-05-05"))


def test_inset_days_and_closures_are_not_school_days() -> None:
    assert not SCHOOL.is_school_day(D("2025-09-01"))
    assert not SCHOOL.is_school_day(D("2025-09-02"))
    assert SCHOOL.is_school_day(D("2025-09-03"))
    assert not SCHOOL.is_school_day(D("2026-01-05"))
    assert not SCHOOL.is_school_day(D("2025-11-20"))
    assert SCHOOL.is_school_day(D("2025-11-19"))
    assert not SchoolCalendar(closures=CLOSURES).is_school_day(D("2025-11-20"))
    assert not SchoolCalendar(inset_days=INSET).is_school_day(D("2025-09-01"))


# --- stepping ----------------------------------------------------------------------------


def test_next_school_day_is_strictly_after() -> None:
    assert SCHOOL.next_school_day(D("2025-10-06")) == D("2025-10-07")
    assert SCHOOL.next_school_day(D("2025-10-03")) == D("2025-10-06")  # over a weekend
    assert SCHOOL.next_school_day(D("2025-10-24")) == D("2025-11-03")  # over half-term
    assert NO_TERMS.next_school_day(D("2025-12-24")) == D("2025-12-29")


def test_add_school_days_across_half_term() -> None:
    assert SCHOOL.add_school_days(D("2025-10-23"), 1) == D("2025-10-24")
    assert SCHOOL.add_school_days(D("2025-10-23"), 2) == D("2025-11-03")
    assert SCHOOL.add_school_days(D("2025-10-23"), 7) == D("2025-11-10")


def test_add_school_days_across_academic_year_boundary() -> None:
    # Last day of 2024-25 is Tue 22 Jul; 1 and 2 Sep are INSET days.
    assert SCHOOL.add_school_days(D("2025-07-22"), 1) == D("2025-09-03")
    assert SCHOOL.add_school_days(D("2025-07-21"), 3) == D("2025-09-04")
    assert academic_year(SCHOOL.add_school_days(D("2025-07-22"), 1)) == 2025


def test_add_school_days_zero_returns_the_day_itself() -> None:
    assert SCHOOL.add_school_days(D("2025-10-25"), 0) == D("2025-10-25")  # even a Saturday


def test_add_school_days_rejects_negative() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        SCHOOL.add_school_days(D("2025-10-06"), -1)


def test_school_days_between_is_inclusive() -> None:
    assert SCHOOL.school_days_between(D("2025-10-22"), D("2025-11-04")) == [
        D("2025-10-22"),
        D("2025-10-23"),
        D("2025-10-24"),
        D("2025-11-03"),
        D("2025-11-04"),
    ]
    assert SCHOOL.school_days_between(D("2025-10-06"), D("2025-10-06")) == [D("2025-10-06")]
    assert SCHOOL.school_days_between(D("2025-10-07"), D("2025-10-06")) == []


def test_count_school_days() -> None:
    # Autumn 2: 7 weeks = 35 weekdays, less the 20 Nov closure.
    assert SCHOOL.count_school_days(D("2025-11-03"), D("2025-12-19")) == 34
    # Whole of December with no terms: 23 weekdays less Christmas and Boxing Day.
    assert NO_TERMS.count_school_days(D("2025-12-01"), D("2025-12-31")) == 21
    assert SCHOOL.count_school_days(D("2025-10-27"), D("2025-10-31")) == 0


def test_previous_school_days_spanning_two_terms() -> None:
    assert SCHOOL.previous_school_days(D("2025-11-04"), 5) == [
        D("2025-10-22"),
        D("2025-10-23"),
        D("2025-10-24"),
        D("2025-11-03"),
        D("2025-11-04"),
    ]


def test_previous_school_days_from_a_non_school_day_starts_before_it() -> None:
    assert SCHOOL.previous_school_days(D("2025-11-08"), 3) == [
        D("2025-11-05"),
        D("2025-11-06"),
        D("2025-11-07"),
    ]
    assert SCHOOL.previous_school_days(D("2025-11-02"), 1) == [D("2025-10-24")]


def test_previous_school_days_spanning_academic_years() -> None:
    assert SCHOOL.previous_school_days(D("2025-09-04"), 4) == [
        D("2025-07-21"),
        D("2025-07-22"),
        D("2025-09-03"),
        D("2025-09-04"),
    ]


def test_ten_school_week_window_spans_terms() -> None:
    window = SCHOOL.previous_school_days(D("2026-01-16"), 50)
    assert len(window) == 50
    assert window == sorted(window)
    assert all(SCHOOL.is_school_day(d) for d in window)
    assert window[-1] == D("2026-01-16")
    # 9 days of Spring 1 (5 Jan is INSET), 34 of Autumn 2, last 7 of Autumn 1.
    assert window[0] == D("2025-10-16")
    assert SCHOOL.count_school_days(window[0], window[-1]) == 50


def test_previous_school_days_zero_and_negative() -> None:
    assert SCHOOL.previous_school_days(D("2025-11-04"), 0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        SCHOOL.previous_school_days(D("2025-11-04"), -2)


def test_stepping_past_the_loaded_terms_raises_instead_of_looping() -> None:
    with pytest.raises(ValueError, match="no school day within 3 years after 2026-07-22"):
        SCHOOL.next_school_day(D("2026-07-22"))
    with pytest.raises(ValueError, match="no school day within 3 years before 2025-06-02"):
        SCHOOL.previous_school_days(D("2025-06-03"), 3)


def test_add_and_previous_agree() -> None:
    start = D("2025-07-15")
    for n in (1, 5, 20, 60):
        end = SCHOOL.add_school_days(start, n)
        assert SCHOOL.previous_school_days(end, n + 1)[0] == start
        assert SCHOOL.count_school_days(start + timedelta(days=1), end) == n


# --- terms and JSON storage --------------------------------------------------------------


def test_term_rejects_start_after_end() -> None:
    with pytest.raises(ValueError, match="term 'Autumn 1' starts 2025-10-24 after it ends"):
        Term("Autumn 1", D("2025-10-24"), D("2025-09-01"))


def test_single_day_term_is_allowed() -> None:
    calendar = SchoolCalendar(terms=(Term("Open day", D("2025-10-06"), D("2025-10-06")),))
    assert calendar.school_days_between(D("2025-10-01"), D("2025-10-31")) == [D("2025-10-06")]


def test_overlapping_terms_are_rejected() -> None:
    with pytest.raises(ValueError, match="terms 'Autumn 1' .* and 'Autumn 2' .* overlap"):
        SchoolCalendar(
            terms=(
                Term("Autumn 2", D("2025-10-24"), D("2025-12-19")),
                Term("Autumn 1", D("2025-09-01"), D("2025-10-24")),
            )
        )


def test_terms_are_kept_in_date_order() -> None:
    shuffled = SchoolCalendar(terms=tuple(reversed(TERMS)))
    assert shuffled.terms == TERMS
    assert shuffled == SchoolCalendar(terms=TERMS)


def test_round_trips_through_dict() -> None:
    data = SCHOOL.to_dict()
    assert data["terms"][1] == {"name": "Autumn 1", "start": "2025-09-01", "end": "2025-10-24"}
    assert data["inset_days"] == ["2025-09-01", "2025-09-02", "2026-01-05"]
    assert data["closures"] == ["2025-11-20"]
    assert SchoolCalendar.from_dict(data) == SCHOOL


def test_from_dict_defaults_to_empty_calendar() -> None:
    assert SchoolCalendar.from_dict({}) == NO_TERMS
    assert NO_TERMS.to_dict() == {"terms": [], "inset_days": [], "closures": []}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"terms": [{"name": "Autumn 1", "start": "2025-10-24", "end": "2025-09-01"}]},
            "term 'Autumn 1' starts 2025-10-24 after it ends 2025-09-01",
        ),
        (
            {
                "terms": [
                    {"name": "Autumn 1", "start": "2025-09-01", "end": "2025-10-24"},
                    {"name": "Autumn 2", "start": "2025-10-20", "end": "2025-12-19"},
                ]
            },
            "overlap",
        ),
        ({"terms": [{"name": "Autumn 1", "start": "2025-09-01"}]}, "term 1 is missing end"),
        (
            {"terms": [{"name": "Autumn 1", "start": "2025-13-01", "end": "2025-12-19"}]},
            "term 'Autumn 1' start is not a valid ISO date: '2025-13-01'",
        ),
        ({"inset_days": ["1 Sep 2025"]}, "INSET day is not a valid ISO date"),
        ({"closures": [20251120]}, "closure must be an ISO date string, got 20251120"),
    ],
)
def test_from_dict_rejects_invalid_data(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchoolCalendar.from_dict(data)


def test_remembered_answers_are_the_computed_ones_and_cannot_be_changed_by_a_caller() -> None:
    """A calendar remembers what it answered; a caller changing a returned window must not
    change the next answer, and a fresh calendar must answer the same."""
    remembering = SchoolCalendar(terms=TERMS, inset_days=INSET, closures=CLOSURES)
    first = remembering.previous_school_days(D("2026-01-09"), 15)
    first.clear()
    again = remembering.previous_school_days(D("2026-01-09"), 15)
    fresh = SchoolCalendar(terms=TERMS, inset_days=INSET, closures=CLOSURES)
    assert again == fresh.previous_school_days(D("2026-01-09"), 15) and len(again) == 15
    assert again[0] == D("2025-12-05")  # back across the INSET day of 5 January and the Christmas holiday
    assert remembering == fresh and hash(remembering) == hash(fresh)  # what it remembers is not state
    with pytest.raises(ValueError):  # running out of calendar is an error every time, not remembered
        SchoolCalendar(terms=TERMS).previous_school_days(D("2025-06-03"), 10)
