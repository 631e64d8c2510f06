"""School days: academic years, England bank holidays and each school's term calendar.

Deadlines and windows count school days, not calendar days (design.md "School days"): a school
day is a weekday inside one of the school's terms that is not an England bank holiday, INSET day
or closure. Windows such as "10 school weeks" may span terms and academic years.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import holidays

_SCAN_LIMIT = timedelta(days=3 * 366)
"""Longest gap searched for the next or previous school day before giving up."""


def academic_year(d: date) -> int:
    """The academic year containing `d`, named by its start year (1 Aug-31 Jul)."""
    return d.year if d.month >= 8 else d.year - 1


def academic_year_bounds(year: int) -> tuple[date, date]:
    """First and last day (inclusive) of the academic year starting in `year`."""
    return date(year, 8, 1), date(year + 1, 7, 31)


@lru_cache(maxsize=64)
def england_bank_holidays(year: int) -> frozenset[date]:
    """England's bank holidays in a calendar year, substitute days included.

    Taken from the maintained `holidays` library rather than a hand list, so one-off holidays
    (coronations, jubilees) are covered.
    """
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year))


@dataclass(frozen=True)
class Term:
    """A term or half-term of teaching, `start` and `end` inclusive."""

    name: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"term {self.name!r} starts {self.start.isoformat()} after it ends {self.end.isoformat()}")


def _parse_date(value: Any, what: str) -> date:
    """Parse an ISO date string, naming the field in the error."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO date string, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is not a valid ISO date: {value!r}") from None


@dataclass(frozen=True)
class SchoolCalendar:
    """One school's term dates, INSET days and closures.

    With no terms defined every weekday that is not a bank holiday, INSET day or closure
    counts, which suits schools whose term dates are not loaded yet. Terms are kept sorted and
    may not overlap.
    """

    terms: tuple[Term, ...] = ()
    inset_days: frozenset[date] = frozenset()
    closures: frozenset[date] = frozenset()
    # The calendar never changes, so what it answered once holds: windows are counted back
    # from the same few days for every pupil of a school.
    _answers: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.terms, key=lambda term: term.start))
        for before, after in zip(ordered, ordered[1:], strict=False):
            if after.start <= before.end:
                raise ValueError(
                    f"terms {before.name!r} ({before.start.isoformat()} to "
                    f"{before.end.isoformat()}) and {after.name!r} ({after.start.isoformat()} "
                    f"to {after.end.isoformat()}) overlap"
                )
        object.__setattr__(self, "terms", ordered)

    def is_school_day(self, d: date) -> bool:
        """Whether pupils are expected in school on `d`."""
        answer = self._answers.get(d)
        if answer is None:
            answer = self._answers[d] = self._is_school_day(d)
        return answer

    def _is_school_day(self, d: date) -> bool:
        if d.weekday() >= 5:
            return False
        if self.terms and not any(term.start <= d <= term.end for term in self.terms):
            return False
        if d in england_bank_holidays(d.year):
            return False
        return d not in self.inset_days and d not in self.closures

    def _step(self, d: date, direction: int) -> date:
        """The nearest school day strictly after (+1) or before (-1) `d`.

        Raises ValueError when none lies within three years, e.g. past the last loaded term.
        """
        one_day = timedelta(days=direction)
        candidate = d + one_day
        while abs(candidate - d) <= _SCAN_LIMIT:
            if self.is_school_day(candidate):
                return candidate
            candidate += one_day
        side = "after" if direction > 0 else "before"
        raise ValueError(f"no school day within 3 years {side} {d.isoformat()}")

    def next_school_day(self, d: date) -> date:
        """The first school day strictly after `d`."""
        return self._step(d, 1)

    def add_school_days(self, d: date, n: int) -> date:
        """The n-th school day strictly after `d` (n=0 returns `d` itself)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        for _ in range(n):
            d = self._step(d, 1)
        return d

    def school_days_between(self, start: date, end: date) -> list[date]:
        """School days from `start` to `end` inclusive, in order (empty if end < start)."""
        days = []
        d = start
        while d <= end:
            if self.is_school_day(d):
                days.append(d)
            d += timedelta(days=1)
        return days

    def count_school_days(self, start: date, end: date) -> int:
        """Number of school days from `start` to `end` inclusive."""
        return len(self.school_days_between(start, end))

    def previous_school_days(self, d: date, n: int) -> list[date]:
        """The n school days ending at `d` (included if a school day), oldest first.

        Used for rolling windows such as "10 school weeks", which may span terms and academic
        years.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        key = (d, n)
        days = self._answers.get(key)
        if days is None:
            days = []
            if n and self.is_school_day(d):
                days.append(d)
            while len(days) < n:
                d = self._step(d, -1)  # raises when the calendar runs out: not remembered
                days.append(d)
            days.reverse()
            self._answers[key] = days
        return list(days)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SchoolCalendar":
        """Load the JSON form written by `to_dict`, validating dates and term order."""
        terms = []
        for index, raw in enumerate(data.get("terms", []), start=1):
            missing = [key for key in ("name", "start", "end") if key not in raw]
            if missing:
                raise ValueError(f"term {index} is missing {', '.join(missing)}")
            name = raw["name"]
            terms.append(
                Term(
                    name=name,
                    start=_parse_date(raw["start"], f"term {name!r} start"),
                    end=_parse_date(raw["end"], f"term {name!r} end"),
                )
            )
        return cls(
            terms=tuple(terms),
            inset_days=frozenset(_parse_date(value, "INSET day") for value in data.get("inset_days", [])),
            closures=frozenset(_parse_date(value, "closure") for value in data.get("closures", [])),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with ISO date strings, in a stable order."""
        return {
            "terms": [
                {"name": term.name, "start": term.start.isoformat(), "end": term.end.isoformat()} for term in self.terms
            ],
            "inset_days": sorted(d.isoformat() for d in self.inset_days),
            "closures": sorted(d.isoformat() for d in self.closures),
        }
