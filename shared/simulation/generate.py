"""Generate a simulated LA and a term of what its schools do, deterministically from a seed.

Every school of the LA publishes the same calendar (`recent_term`): a term with a half-term week,
an INSET day on its first Monday, England's bank holidays off, and terms before and after. Pupils get
valid UPNs (LA number, the school's establishment number, year of entry). Every pupil on roll
gets one mark per session, from the 2024 code table.

Who is in it (`Pupil.role`):

- `typical`: rarely absent: a day or two of illness (I, sometimes first recorded N and amended to I
  when the parent rings), an appointment (M), the odd late arrival (L before the register closes,
  U after), a sporting fixture (P).
- `persistent`: 11-32 % absence, much of it unauthorised (O, N, G, U); `severe`: 52-80 %. Together
  about a sixth of the pupils; at least one `severe` per LA.
- `holiday` (one per school): a week's term-time holiday (G) on top of a typical year.
- `late`: late most mornings (L, some U).
- `stops_attending`: attends, then is absent without a reason (N, then O) every day to the end of
  the term, 22 school days when the term is long enough: a child missing education still on roll.
- `truant`: 11 school days of unauthorised absence, then back.
- `hospital`: 12 school days absent with no reason given (N); the school then learns the child is
  in hospital and amends all of it to illness (I); 4 more days ill, then back.
- roll changes: `joiner` (one per school, from another LA), `moved_out` (one per school, to a
  school in another LA), `transfer` (to another school of the LA, which admits the pupil the same
  day), `located` (deleted without a destination, then found on roll at another school of the LA a
  week later), `lost` (deleted without a destination, never found) and `home_educated`.

A scripted part needs enough school days (runs of absence) or schools (moves within the LA); it is
left out when the term or the LA is too small for it. Each school also has a trip day (V), with one
pupil first recorded absent by mistake and amended the next day, and one pupil is kept away one day
by a transport failure (Y1, not a possible session).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import date, timedelta

from shared.domain.calendar import SchoolCalendar, Term, academic_year
from shared.domain.codes import CODE_TABLE
from shared.domain.upn import make_upn
from shared.simulation.plan import (
    Admission,
    Amendment,
    Deletion,
    Officer,
    Plan,
    Pupil,
    Register,
    Round,
    School,
    SimulatedTerm,
)

SESSIONS = ("AM", "PM")
PRESENT = {"AM": "/", "PM": "\\"}
MAX_TEACHING_WEEKS = 14  # fits between the summer and Christmas holidays with its half-term week
MAX_PUPILS_PER_SCHOOL = 4000  # under a register's 5000-mark limit, with room for joiners

ATTENDANCE_OFFICER = Officer("A Patel", "Attendance officer")

_PLACES = (
    "Riverside",
    "Hillcrest",
    "Oakfield",
    "St Anne's",
    "Meadowbank",
    "Castle Hill",
    "Brookside",
    "Elmwood",
    "Northgate",
    "Westfield",
    "Holy Trinity",
    "Fairview",
)
_YEAR_GROUPS = {"primary": ("R", "1", "2", "3", "4", "5", "6"), "secondary": ("7", "8", "9", "10", "11")}
_FIRST_YEAR_GROUP = {"primary": 0, "secondary": 7}

# Summer and Christmas holidays, roughly as English schools take them: a simulated term avoids them.
_LONG_HOLIDAYS = (((7, 22), (9, 2)), ((12, 20), (1, 4)))


# ---------------------------------------------------------------- the term


def _friday_before(day: date) -> date:
    day -= timedelta(days=1)
    while day.weekday() != 4:
        day -= timedelta(days=1)
    return day


def _long_holiday_start(first: date, last: date) -> date | None:
    """The start of the latest summer or Christmas holiday that [first, last] runs into, if any."""
    starts = []
    for year in range(first.year - 1, last.year + 1):
        for (start_month, start_day), (end_month, end_day) in _LONG_HOLIDAYS:
            start = date(year, start_month, start_day)
            end = date(year + (end_month < start_month), end_month, end_day)
            if start <= last and first <= end:
                starts.append(start)
    return max(starts, default=None)


def _season(day: date) -> str:
    return "Autumn" if day.month >= 9 else "Spring" if day.month <= 3 else "Summer"


def recent_term(before: date, teaching_weeks: int, calendar_until: date | None = None) -> SimulatedTerm:
    """The latest term of `teaching_weeks` school weeks that ended on a Friday before `before`.

    Two weeks or more are split by a half-term week. A term that would run into the summer or
    Christmas holidays ends before them instead, so it lies in one academic year.

    Around the term the calendar has two stand-in blocks of school days, two weeks away from it:
    earlier terms back to September seven years before (when the oldest pupils on roll entered
    school), and following terms to `calendar_until` (at least 12 weeks on). Deadlines counted in
    school days from any date the plan or the platform uses (an admission years ago, a case opened
    today) then have days to land on: pass a `calendar_until` well after today.
    """
    if not 1 <= teaching_weeks <= MAX_TEACHING_WEEKS:
        raise ValueError(f"teaching_weeks must be between 1 and {MAX_TEACHING_WEEKS}, got {teaching_weeks}")
    first_half = (teaching_weeks + 1) // 2
    span = teaching_weeks + (teaching_weeks >= 2)  # with the half-term week
    end = before
    while True:
        last_day = _friday_before(end)
        first_day = last_day - timedelta(weeks=span, days=-3)  # a Monday
        holiday = _long_holiday_start(first_day, last_day)
        if holiday is None:
            break
        end = holiday
    first_half_end = first_day + timedelta(weeks=first_half, days=-3)
    season = _season(first_day)
    terms = [
        Term("Earlier terms", date(academic_year(first_day) - 7, 9, 1), first_day - timedelta(days=17)),
        Term(f"{season} 1", first_day, first_half_end),
    ]
    if span > first_half:
        terms.append(Term(f"{season} 2", first_half_end + timedelta(days=10), last_day))
    following = last_day + timedelta(days=17)
    terms.append(Term("Following terms", following, max(following + timedelta(weeks=12), calendar_until or following)))
    calendar = SchoolCalendar(terms=tuple(terms), inset_days=frozenset({first_day}))
    return SimulatedTerm(calendar, first_day, last_day)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LaConfig:
    """What to simulate: the LA, its schools (one per URN) and how many pupils each has on roll."""

    term: SimulatedTerm
    urns: tuple[str, ...]
    la_code: str = "990"
    pupils_per_school: int = 30
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.urns:
            raise ValueError("an LA needs at least one school")
        if any(len(urn) != 6 or not urn.isdigit() for urn in self.urns) or len(set(self.urns)) != len(self.urns):
            raise ValueError(f"URNs must be distinct 6-digit numbers, got {list(self.urns)}")
        if len(self.la_code) != 3 or not self.la_code.isdigit():
            raise ValueError(f"the LA code must be 3 digits, got {self.la_code!r}")
        if not 1 <= self.pupils_per_school <= MAX_PUPILS_PER_SCHOOL:
            raise ValueError(f"pupils per school must be between 1 and {MAX_PUPILS_PER_SCHOOL}")


def generate(config: LaConfig) -> Plan:
    """The LA and its plan; the same configuration always gives the same plan."""
    return _Generator(config).plan()


# ---------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Profile:
    absence: tuple[float, float]  # target absence rate, drawn between these
    skew: float  # > 1 draws nearer the low end
    unauthorised: float  # share of absence episodes that are unauthorised
    late: float  # chance of arriving late on a morning in school


_PROFILES = {
    "typical": _Profile((0.0, 0.08), 2.5, 0.15, 0.02),
    "persistent": _Profile((0.11, 0.32), 1.0, 0.45, 0.06),
    "severe": _Profile((0.52, 0.8), 1.0, 0.6, 0.05),
    "late": _Profile((0.0, 0.05), 2.5, 0.15, 0.6),
}
_SEVERE_SHARE, _PERSISTENT_SHARE = 0.03, 0.13
_ABSENCE = frozenset(entry.code for entry in CODE_TABLE if entry.is_absence)


@dataclass(frozen=True)
class _Enrolment:
    urn: str
    upn: str
    start: int  # index of the first school day on roll
    end: int  # index of the first school day off roll (exclusive)


class _Generator:
    def __init__(self, config: LaConfig) -> None:
        self.config = config
        self.days = config.term.school_days()
        if not self.days:
            raise ValueError("the simulated term has no school days")
        self.n = len(self.days)
        self.rng = random.Random(f"attendance-simulation:{config.seed}")
        self.year = academic_year(self.days[0])
        self.other_la = f"{100 + (int(config.la_code) + 1) % 900:03d}"
        self.schools = [
            School(
                urn=urn,
                name=_school_name(index, phase := "secondary" if index % 3 == 2 else "primary"),
                phase=phase,
                la_code=config.la_code,
                calendar=config.term.calendar,
            )
            for index, urn in enumerate(config.urns)
        ]
        self.pupils: dict[str, Pupil] = {}
        self.codes: dict[str, list[str | None]] = {}  # per pupil: AM, PM of each school day; None: no mark
        self.minutes: dict[tuple[str, int], int] = {}
        self.enrolments: defaultdict[str, list[_Enrolment]] = defaultdict(list)  # per pupil
        self.busy: defaultdict[str, set[int]] = defaultdict(set)  # school days an episode has taken
        self.admissions: defaultdict[int | None, list[Admission]] = defaultdict(list)
        self.deletions: defaultdict[int, list[Deletion]] = defaultdict(list)
        self.amendments: defaultdict[int, list[Amendment]] = defaultdict(list)
        self.serials: Counter[tuple[str, int, int]] = Counter()
        self.initial_roll: defaultdict[str, list[str]] = defaultdict(list)  # per school, in entry order

    # -------------------------------------------------------- pupils and the roll

    def _new_pupil(self, school: School, role: str, nc_year: str, from_la: str | None = None) -> Pupil:
        group = 0 if nc_year == "R" else int(nc_year)
        born = date(self.year - 5 - group, 9, 1) + timedelta(days=self.rng.randrange(365))
        la = from_la or self.config.la_code
        establishment = (int(school.urn) + (5000 if from_la else 0)) % 10000
        entry_year = (self.year - group) % 100  # UPNs are allocated on first entry to school
        key = (la, establishment, entry_year)
        self.serials[key] += 1
        if self.serials[key] > 999:
            raise ValueError(f"too many pupils of one year group at school {school.urn} for distinct UPNs")
        upn = make_upn(int(la), establishment, entry_year, self.serials[key])
        self.pupils[upn] = Pupil(upn, born, nc_year, role)
        self.codes[upn] = [None] * (2 * self.n)
        return self.pupils[upn]

    def _cast(self, upn: str, role: str) -> Pupil:
        self.pupils[upn] = replace(self.pupils[upn], role=role)
        return self.pupils[upn]

    def _admitted_on(self, school: School, nc_year: str) -> date:
        """The first weekday from 3 September of the year the pupil entered this school."""
        group = 0 if nc_year == "R" else int(nc_year)
        entered = date(self.year - (group - _FIRST_YEAR_GROUP[school.phase]), 9, 3)
        while entered.weekday() >= 5:
            entered += timedelta(days=1)
        return entered

    def _initial_roll(self) -> None:
        for school in self.schools:
            groups = _YEAR_GROUPS[school.phase]
            for index in range(self.config.pupils_per_school):
                pupil = self._new_pupil(school, "typical", groups[index % len(groups)])
                self.initial_roll[school.urn].append(pupil.upn)
                self.enrolments[pupil.upn].append(_Enrolment(school.urn, pupil.upn, 0, self.n))
                admitted_on = self._admitted_on(school, pupil.nc_year)
                self.admissions[None].append(
                    Admission(school.urn, pupil.upn, admitted_on, pupil.nc_year, pupil.date_of_birth)
                )

    def _pick(self, school: School, role: str) -> Pupil | None:
        """A typical pupil on roll at `school` all term, who now plays `role`."""
        whole_term = [_Enrolment(school.urn, upn, 0, self.n) for upn in self.initial_roll[school.urn]]
        candidates = [
            e.upn for e in whole_term if self.pupils[e.upn].role == "typical" and self.enrolments[e.upn] == [e]
        ]
        return self._cast(self.rng.choice(candidates), role) if candidates else None

    def _school(self, index: int) -> School:
        return self.schools[index % len(self.schools)]

    def _same_phase(self, school: School) -> School | None:
        """Another school of the LA a pupil of `school` could move to."""
        return next((s for s in self.schools if s.phase == school.phase and s.urn != school.urn), None)

    def _leave(
        self, pupil: Pupil, day: int, ground: str, destination_urn: str | None = None, destination_la: str | None = None
    ) -> None:
        [enrolment] = self.enrolments[pupil.upn]
        self.enrolments[pupil.upn] = [_Enrolment(enrolment.urn, pupil.upn, 0, day)]
        self.deletions[day].append(
            Deletion(enrolment.urn, pupil.upn, self.days[day], ground, destination_urn, destination_la)
        )

    def _join(self, pupil: Pupil, school: School, day: int, **previous: str) -> None:
        """The pupil enters `school`'s roll on `day`; `previous` names the previous school, if known."""
        self.enrolments[pupil.upn].append(_Enrolment(school.urn, pupil.upn, day, self.n))
        self.admissions[day].append(
            Admission(school.urn, pupil.upn, self.days[day], pupil.nc_year, pupil.date_of_birth, **previous)
        )

    def _roll_changes(self) -> None:
        n = self.n
        if n < 5:
            return
        for index, school in enumerate(self.schools):
            joiner = self._new_pupil(school, "joiner", self.rng.choice(_YEAR_GROUPS[school.phase]), self.other_la)
            self._join(joiner, school, n // 3 + index % 3, previous_school=f"A school in LA {self.other_la}")
            if (leaver := self._pick(school, "moved_out")) is not None:
                new_school = f"{self.rng.randrange(100000, 1000000)}"
                self._leave(leaver, n // 2 + index % 3, "registered_at_another_school", new_school, self.other_la)
        first, second = self._school(0), self._school(1)
        if (to := self._same_phase(first)) is not None and (mover := self._pick(first, "transfer")) is not None:
            day = 2 * n // 5
            self._leave(mover, day, "registered_at_another_school", to.urn, to.la_code)
            self._join(mover, to, day, previous_urn=first.urn)
        gone, found = max(1, n // 4), max(1, n // 4) + 5
        if found < n and (to := self._same_phase(second)) and (child := self._pick(second, "located")) is not None:
            self._leave(child, gone, "moved_away")
            self._join(child, to, found)
        if (child := self._pick(self._school(2), "lost")) is not None:
            self._leave(child, 3 * n // 5, "moved_away")
        if (child := self._pick(self._school(1), "home_educated")) is not None:
            self._leave(child, n // 2 + 1, "elective_home_education")

    # -------------------------------------------------------- marks

    def _set(self, upn: str, day: int, session: str, code: str, minutes: int | None = None) -> None:
        slot = 2 * day + SESSIONS.index(session)
        self.codes[upn][slot] = code
        if minutes is not None:
            self.minutes[(upn, slot)] = minutes

    def _set_days(self, upn: str, first: int, count: int, code: str) -> None:
        for day in range(first, first + count):
            for session in SESSIONS:
                self._set(upn, day, session, code)
            self.busy[upn].add(day)

    def _amend_later(self, upn: str, day: int, sessions: tuple[str, ...], code: str, reason: str, after: int) -> None:
        """The marks of `day` are changed to `code` `after` school days later, with that day's amendments."""
        urn = next(e.urn for e in self.enrolments[upn] if e.start <= day < e.end)
        for session in sessions:
            self.amendments[day + after].append(
                Amendment(urn, upn, self.days[day], session, code, reason, ATTENDANCE_OFFICER)
            )

    def _place(self, upn: str, length: int) -> int | None:
        """A free run of `length` school days on roll, apart from the pupil's other absences, so that
        two episodes never merge into a longer one."""
        busy = self.busy[upn]
        starts = [start for e in self.enrolments[upn] for start in range(e.start, e.end - length + 1)]

        def free(start: int) -> bool:
            return not any(day in busy for day in range(start - 1, start + length + 1))

        for _ in range(10):  # most days are free: a few random tries usually find one
            if starts and free(start := self.rng.choice(starts)):
                return start
        candidates = [start for start in starts if free(start)]
        return self.rng.choice(candidates) if candidates else None

    def _scripted_absence(self) -> None:
        n = self.n
        if n >= 12 and (pupil := self._pick(self._school(0), "stops_attending")) is not None:
            start = n - min(22, n - 2)
            self._set_days(pupil.upn, start, 2, "N")
            self._set_days(pupil.upn, start + 2, n - start - 2, "O")
        if n >= 16 and (pupil := self._pick(self._school(1), "truant")) is not None:
            start = min(n // 3, n - 14)
            self._set_days(pupil.upn, start, 1, "N")
            self._set_days(pupil.upn, start + 1, 10, "O")
        if n >= 20 and (pupil := self._pick(self._school(2), "hospital")) is not None:
            start = min(n // 4, n - 18)
            self._set_days(pupil.upn, start, 12, "N")
            self._set_days(pupil.upn, start + 12, 4, "I")
            reason = f"Hospital letter: admitted on {self.days[start].isoformat()}"
            for day in range(start, start + 12):
                self._amend_later(pupil.upn, day, SESSIONS, "I", reason, after=start + 11 - day)
        self._pick(self._school(0), "late")
        for school in self.schools:
            pupil = self._pick(school, "holiday") if n >= 7 else None
            if pupil is not None and (start := self._place(pupil.upn, 5)) is not None:
                self._set_days(pupil.upn, start, 5, "G")

    def _school_events(self) -> None:
        """Each school's trip day (one pupil first recorded absent by mistake), and a transport failure."""
        for school in self.schools:
            day = self.rng.randrange(self.n)
            going = sorted(
                upn
                for upn, enrolments in self.enrolments.items()
                if any(e.urn == school.urn and e.start <= day < e.end for e in enrolments) and day not in self.busy[upn]
            )
            trip = self.rng.sample(going, max(1, len(going) // 7)) if going else []
            for upn in trip:
                self._set_days(upn, day, 1, "V")
            if trip and day + 1 < self.n:
                self._set(trip[0], day, "PM", "O")
                self._amend_later(trip[0], day, ("PM",), "V", "On the school trip: recorded absent in error", after=1)
        typical = sorted(upn for upn, pupil in self.pupils.items() if pupil.role == "typical")
        if typical and (day := self._place(upn := self.rng.choice(typical), 1)) is not None:
            self._set_days(upn, day, 1, "Y1")

    def _random_profiles(self) -> None:
        typical = sorted(upn for upn, pupil in self.pupils.items() if pupil.role == "typical")
        for upn in typical:
            draw = self.rng.random()
            if draw < _SEVERE_SHARE:
                self._cast(upn, "severe")
            elif draw < _SEVERE_SHARE + _PERSISTENT_SHARE:
                self._cast(upn, "persistent")
        if typical and not any(pupil.role == "severe" for pupil in self.pupils.values()):
            self._cast(self.rng.choice([u for u in typical if self.pupils[u].role == "typical"] or typical), "severe")

    def _absences(self, upn: str, profile: _Profile) -> None:
        on_roll = sum(e.end - e.start for e in self.enrolments[upn])
        low, high = profile.absence
        target = round((low + (high - low) * self.rng.random() ** profile.skew) * 2 * on_roll)
        absent = sum(code in _ABSENCE for code in self.codes[upn])  # the scripted part counts
        misses = 0
        while absent < target and misses < 5:  # a few episodes that find no room: the term is full
            room = max(1, (target - absent) // 2)
            if self.rng.random() < profile.unauthorised:
                placed = self._unauthorised_episode(upn, room)
            else:
                placed = self._authorised_episode(upn, room, profile)
            absent += placed
            misses = 0 if placed else misses + 1

    def _unauthorised_episode(self, upn: str, room: int) -> int:
        """O for a day or few (sometimes N, never explained), U (late after the register closed) or a
        holiday (G); the number of absent sessions placed."""
        kind = self.rng.choices(("O", "U", "G"), weights=(6, 2, 1))[0]
        if kind == "U":
            if (day := self._place(upn, 1)) is None:
                return 0
            self._set(upn, day, "AM", "U", self.rng.randint(31, 55))
            self.busy[upn].add(day)
            return 1
        length = min(room, self.rng.choice((1, 1, 2, 3) if kind == "O" else (2, 3, 4)))
        if (start := self._place(upn, length)) is None:
            return 0
        self._set_days(upn, start, length, kind)
        if kind == "O" and self.rng.random() < 0.3:
            self._set_days(upn, start, 1, "N")
        return 2 * length

    def _authorised_episode(self, upn: str, room: int, profile: _Profile) -> int:
        """Illness (I, sometimes first N until the parent rings), an appointment (M), leave (C),
        religious observance (R) or, for the often absent, a suspension (E)."""
        suspension = 1 if profile.absence[0] > 0.1 else 0
        kind = self.rng.choices(("I", "M", "C", "R", "E"), weights=(8, 3, 1, 1, suspension))[0]
        if kind == "M":
            if (day := self._place(upn, 1)) is None:
                return 0
            session = self.rng.choice(SESSIONS)
            self.busy[upn].add(day)
            if day + 1 < self.n and self.rng.random() < 0.2:
                self._set(upn, day, session, "N")
                self._amend_later(upn, day, (session,), "M", "Appointment card seen", after=1)
            else:
                self._set(upn, day, session, "M")
            return 1
        length = min(room, self.rng.choice({"I": (1, 1, 1, 2, 2, 3, 4), "E": (1, 2)}.get(kind, (1,))))
        if (start := self._place(upn, length)) is None:
            return 0
        self._set_days(upn, start, length, kind)
        if kind == "I" and self.rng.random() < 0.25 and start + 2 < self.n:
            self._set_days(upn, start, 1, "N")
            self._amend_later(upn, start, SESSIONS, "I", "Parent rang: ill", after=self.rng.choice((1, 2)))
        return 2 * length

    def _attendance(self, upn: str, profile: _Profile) -> None:
        """Every session on roll not marked yet: present, late, or at a sporting fixture (P)."""
        codes = self.codes[upn]
        random = self.rng.random
        for e in self.enrolments[upn]:
            for slot in range(2 * e.start, 2 * e.end):
                if codes[slot] is not None:
                    continue
                draw = random()
                if slot % 2 == 0 and draw < profile.late:
                    codes[slot] = "L"
                    self.minutes[(upn, slot)] = self.rng.randint(3, 25)
                elif slot % 2 == 0 and draw < profile.late * 1.2:
                    codes[slot] = "U"
                    self.minutes[(upn, slot)] = self.rng.randint(31, 55)
                elif slot % 2 == 1 and draw < 0.005:
                    codes[slot] = "P"
                else:
                    codes[slot] = PRESENT[SESSIONS[slot % 2]]

    # -------------------------------------------------------- the plan

    def _registers(self, roster: dict[tuple[str, int], list[str]], day: int, session: str) -> list[Register]:
        slot = 2 * day + SESSIONS.index(session)
        registers = []
        for school in self.schools:
            upns = tuple(sorted(roster.get((school.urn, day), ())))
            if upns:
                codes = tuple(_marked(self.codes[upn][slot]) for upn in upns)
                minutes = tuple(self.minutes.get((upn, slot)) for upn in upns)
                registers.append(Register(school.urn, self.days[day], session, upns, codes, minutes))
        return registers

    def plan(self) -> Plan:
        self._initial_roll()
        self._roll_changes()
        self._scripted_absence()
        self._school_events()
        self._random_profiles()
        for upn, pupil in sorted(self.pupils.items()):
            profile = _PROFILES.get(pupil.role, _PROFILES["typical"])
            self._absences(upn, profile)
            self._attendance(upn, profile)
        roster: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
        for upn, enrolments in self.enrolments.items():
            for e in enrolments:
                for day in range(e.start, e.end):
                    roster[(e.urn, day)].append(upn)
        rounds = [Round(None, tuple(self.admissions[None]))]
        for index, day in enumerate(self.days):
            for actions in (
                self.deletions[index],
                self.admissions[index],
                self._registers(roster, index, "AM"),
                self._registers(roster, index, "PM"),
                *_one_per_pupil(self.amendments[index]),
            ):
                if actions:
                    rounds.append(Round(day, tuple(actions)))
        return Plan(
            la_code=self.config.la_code,
            seed=self.config.seed,
            term=self.config.term,
            schools=tuple(self.schools),
            pupils=tuple(self.pupils[upn] for upn in sorted(self.pupils)),
            rounds=tuple(rounds),
        )


def _one_per_pupil(amendments: list[Amendment]) -> list[list[Amendment]]:
    """A day's amendments as rounds holding at most one per pupil, each pupil's in the order made."""
    rounds: list[list[Amendment]] = []
    made: Counter[tuple[str, str]] = Counter()
    for amendment in amendments:
        wave = made[(amendment.urn, amendment.upn)]
        made[(amendment.urn, amendment.upn)] += 1
        if wave == len(rounds):
            rounds.append([])
        rounds[wave].append(amendment)
    return rounds


def _marked(code: str | None) -> str:
    if code is None:
        raise AssertionError("a session on roll was left without a mark")
    return code


def _school_name(index: int, phase: str) -> str:
    place = _PLACES[index % len(_PLACES)]
    repeat = f" {index // len(_PLACES) + 1}" if index >= len(_PLACES) else ""
    return f"{place}{repeat} {'Primary School' if phase == 'primary' else 'Academy'}"
