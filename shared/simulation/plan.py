"""What a simulated LA is and what its schools do: the plan `generate` makes and `drive` plays.

A plan is a sequence of rounds. The actions of one round are independent of each other (they may
be sent at once) and touch each pupil at most once, so that the platform sees a pupil's changes in
the order they were made; a round starts only when the one before it has been accepted. Each
school day has these rounds, in this order: deletions from the roll, admissions to it, every
school's AM registers, every school's PM registers, and the amendments the attendance officers
make that afternoon (as many rounds as the most amendments made to one pupil's marks). One round
before the first day enters the roll as it stands at the start of the term.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from shared.domain.calendar import SchoolCalendar


@dataclass(frozen=True)
class SimulatedTerm:
    """The school days simulated, and the calendar every school of the LA publishes.

    The calendar goes beyond the simulated days: deadlines counted in school days from a date
    before, in or after the term (admission returns, casework letters, CME enquiry windows) need
    school days to land on.
    """

    calendar: SchoolCalendar
    first_day: date
    last_day: date

    def school_days(self) -> list[date]:
        return self.calendar.school_days_between(self.first_day, self.last_day)


@dataclass(frozen=True)
class School:
    urn: str
    name: str
    phase: str
    la_code: str
    calendar: SchoolCalendar


@dataclass(frozen=True)
class Pupil:
    """A child of the LA; `role` says which part of the scenario the child plays (see `generate`)."""

    upn: str
    date_of_birth: date
    nc_year: str
    role: str


@dataclass(frozen=True)
class Admission:
    """A name entered on a school's admission register, and the school's new pupil return."""

    urn: str
    upn: str
    admitted_on: date
    nc_year: str
    date_of_birth: date
    previous_urn: str | None = None
    previous_school: str | None = None


@dataclass(frozen=True)
class Deletion:
    """A name deleted from a school's admission register as from `deleted_on`, and its return."""

    urn: str
    upn: str
    deleted_on: date
    ground: str
    destination_urn: str | None = None
    destination_la_code: str | None = None

    @property
    def destination_known(self) -> bool:
        return bool(self.destination_urn or self.destination_la_code)


@dataclass(frozen=True)
class Register:
    """One session's whole-school register; `codes` and `minutes_late` line up with `upns`."""

    urn: str
    date: date
    session: str
    upns: tuple[str, ...]
    codes: tuple[str, ...]
    minutes_late: tuple[int | None, ...]

    def marks(self) -> Iterator[tuple[str, str, int | None]]:
        return zip(self.upns, self.codes, self.minutes_late, strict=True)


@dataclass(frozen=True)
class Officer:
    name: str
    position: str


@dataclass(frozen=True)
class Amendment:
    """A stored mark changed, with the reason and who changed it (Regs 2024)."""

    urn: str
    upn: str
    date: date
    session: str
    code: str
    reason: str
    amended_by: Officer


Action = Admission | Deletion | Register | Amendment


@dataclass(frozen=True)
class Round:
    """Actions of one kind that may be sent at once; `day` is None before the term starts."""

    day: date | None
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Plan:
    la_code: str
    seed: int
    term: SimulatedTerm
    schools: tuple[School, ...]
    pupils: tuple[Pupil, ...]
    rounds: tuple[Round, ...]

    def actions(self) -> Iterator[Action]:
        return (action for round_ in self.rounds for action in round_.actions)
