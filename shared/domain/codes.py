"""The DfE attendance code table as data (domain.md §2; Regs 2024 / WTISA; seed 001 Appendix 1).

Rates, thresholds and register validation all read a code's category and whether it is a
possible session from this one table. Marks are judged by the code set in force on the mark's
date: the 2024 set applies from 19 Aug 2024, and history loaded from an MIS for earlier dates
keeps the retired codes (H, F, J, Y) with their old categories.
"""

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Literal


class Category(StrEnum):
    """How a code counts towards attendance figures (domain.md §2-3)."""

    PRESENT = "P"
    APPROVED_ACTIVITY = "AEA"
    AUTHORISED = "AA"
    UNAUTHORISED = "UA"
    NOT_COUNTED = "NC"


CODE_SET_2024_START = date(2024, 8, 19)
"""First day of the 2024 code set (Regs 2024 / WTISA statutory from 19 Aug 2024)."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _human_date(d: date) -> str:
    """Format as '19 Aug 2024' without depending on the process locale."""
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


@dataclass(frozen=True)
class AttendanceCode:
    """One register code and the dates it may be used on.

    `in_force_until` is exclusive: the last valid date is the day before. `None` bounds mean
    the code is valid in both the pre-2024 and the 2024 code sets.
    """

    code: str
    meaning: str
    category: Category
    possible: bool
    in_force_from: date | None
    in_force_until: date | None
    replaced_by: tuple[str, ...] = ()

    @property
    def is_absence(self) -> bool:
        """Counts as absence (authorised or unauthorised) in absence rates."""
        return self.category in (Category.AUTHORISED, Category.UNAUTHORISED)

    @property
    def is_attendance(self) -> bool:
        """Counts as attendance: present or at an approved educational activity."""
        return self.category in (Category.PRESENT, Category.APPROVED_ACTIVITY)

    def in_force_on(self, on: date) -> bool:
        """Whether a mark dated `on` may use this code."""
        if self.in_force_from is not None and on < self.in_force_from:
            return False
        return self.in_force_until is None or on < self.in_force_until


def _code(
    code: str,
    meaning: str,
    category: Category,
    possible: bool,
    *,
    since_2024: bool = False,
    replaced_by: tuple[str, ...] = (),
) -> AttendanceCode:
    """Build a table entry: new in the 2024 set, retired by it (has replacements), or in both."""
    return AttendanceCode(
        code=code,
        meaning=meaning,
        category=category,
        possible=possible,
        in_force_from=CODE_SET_2024_START if since_2024 else None,
        in_force_until=CODE_SET_2024_START if replaced_by else None,
        replaced_by=replaced_by,
    )


_P = Category.PRESENT
_AEA = Category.APPROVED_ACTIVITY
_AA = Category.AUTHORISED
_UA = Category.UNAUTHORISED
_NC = Category.NOT_COUNTED
_Y_CODES = tuple(f"Y{i}" for i in range(1, 8))

CODE_TABLE: tuple[AttendanceCode, ...] = (
    # Present
    _code("/", "present (AM session)", _P, True),
    _code("\\", "present (PM session)", _P, True),
    _code("L", "late, arrived before the register closed", _P, True),
    # Attending an approved educational activity
    _code(
        "K",
        "attending education provision arranged by the local authority",
        _AEA,
        True,
        since_2024=True,
    ),
    _code("V", "attending an educational visit or trip", _AEA, True),
    _code("P", "participating in an approved sporting activity", _AEA, True),
    _code("W", "attending work experience", _AEA, True),
    _code(
        "B",
        "attending another approved supervised off-site educational activity (before 19 Aug 2024: educated off site)",
        _AEA,
        True,
    ),
    _code(
        "D",
        "dual registered: attending a session at the other school where also registered",
        _NC,
        False,
    ),
    # Authorised absence
    _code(
        "C1",
        "leave of absence: regulated performance or regulated employment abroad",
        _AA,
        True,
        since_2024=True,
    ),
    _code("M", "leave of absence: medical or dental appointment", _AA, True),
    _code(
        "J1",
        "leave of absence: interview with a prospective employer or education provider",
        _AA,
        True,
        since_2024=True,
    ),
    _code("S", "leave of absence: study leave (year 11 public examinations)", _AA, True),
    _code("X", "non-compulsory school age pupil not required to attend", _NC, False),
    _code(
        "C2",
        "leave of absence: compulsory school age pupil on a part-time timetable",
        _AA,
        True,
        since_2024=True,
    ),
    _code("C", "leave of absence for exceptional circumstances", _AA, True),
    _code("E", "suspended or permanently excluded, no alternative provision made", _AA, True),
    _code("I", "illness (not medical or dental appointment)", _AA, True),
    _code(
        "T",
        "parent travelling for occupational purposes, covering Gypsy, Roma and Traveller "
        "families among others (before 19 Aug 2024: Gypsy, Roma and Traveller absence)",
        _AA,
        True,
    ),
    _code("R", "religious observance", _AA, True),
    # Unable to attend because of an unavoidable cause
    _code(
        "Q",
        "unable to attend: the local authority failed to make access arrangements",
        _NC,
        False,
        since_2024=True,
    ),
    _code(
        "Y1",
        "unable to attend: transport normally provided is not available",
        _NC,
        False,
        since_2024=True,
    ),
    _code("Y2", "unable to attend: widespread travel disruption", _NC, False, since_2024=True),
    _code("Y3", "unable to attend: part of the school premises closed", _NC, False, since_2024=True),
    _code("Y4", "unable to attend: whole school site unexpectedly closed", _NC, False, since_2024=True),
    _code("Y5", "unable to attend: in criminal justice detention", _NC, False, since_2024=True),
    _code(
        "Y6",
        "unable to attend: in accordance with public health guidance or law",
        _NC,
        False,
        since_2024=True,
    ),
    _code("Y7", "unable to attend: any other unavoidable cause", _NC, False, since_2024=True),
    # Unauthorised absence
    _code("G", "holiday not authorised by the school", _UA, True),
    _code("N", "reason for absence not yet provided", _UA, True),
    _code("O", "absent in other or unknown circumstances (unauthorised)", _UA, True),
    _code("U", "arrived after the register closed", _UA, True),
    # Administrative
    _code("Z", "pupil not yet on the admission register", _NC, False),
    _code("#", "planned whole or partial school closure", _NC, False),
    # Pre-2024 codes, retired on 19 Aug 2024
    _code("H", "holiday authorised by the school (retired 19 Aug 2024)", _AA, True, replaced_by=("C",)),
    _code("F", "agreed extended family holiday (retired 19 Aug 2024)", _AA, True, replaced_by=("C",)),
    _code("J", "interview (retired 19 Aug 2024)", _AA, True, replaced_by=("J1",)),
    _code(
        "Y",
        "unable to attend due to exceptional circumstances, e.g. enforced closure (retired 19 Aug 2024)",
        _NC,
        False,
        replaced_by=_Y_CODES,
    ),
)

_BY_CODE: dict[str, AttendanceCode] = {entry.code: entry for entry in CODE_TABLE}

LATENESS_CODES = frozenset({"L", "U"})
"""The only codes a minutes-late figure may accompany (domain.md §1)."""

SUB_CODE_PATTERN = r"^[A-Z0-9]{1,8}$"
"""Shape of an MIS sub-code such as 'I01', 'M2' or 'G01' (local practice, SIMS).

A sub-code is kept verbatim alongside its parent code and rolls up to it: every count uses the
parent code's category, never the sub-code.
"""


class CodeError(ValueError):
    """A code that cannot be used on a mark's date, with the replacement to suggest."""

    def __init__(
        self,
        message: str,
        *,
        kind: Literal["unknown", "retired", "not_in_force"],
        code: str,
        replacement: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.replacement = replacement


def _replacement_text(replacement: tuple[str, ...]) -> str:
    """'C' for a single replacement, 'one of Y1, Y2, ...' for several."""
    if len(replacement) == 1:
        return replacement[0]
    return "one of " + ", ".join(replacement)


def code_for(code: str, on: date) -> AttendanceCode:
    """Return the table entry for `code` on a mark dated `on`, or raise CodeError.

    Matching is exact and case-sensitive: codes are upper case, plus '/', '\\' and '#'.
    """
    entry = _BY_CODE.get(code)
    if entry is None:
        message = f"unknown attendance code {code!r}"
        if code.upper() != code and code.upper() in _BY_CODE:
            message += f" (codes are upper case: did you mean {code.upper()!r}?)"
        raise CodeError(message, kind="unknown", code=code)
    if entry.in_force_from is not None and on < entry.in_force_from:
        raise CodeError(
            f"code '{code}' is only in force from {_human_date(entry.in_force_from)}",
            kind="not_in_force",
            code=code,
        )
    if entry.in_force_until is not None and on >= entry.in_force_until:
        raise CodeError(
            f"code '{code}' was retired on {_human_date(entry.in_force_until)}; "
            f"use {_replacement_text(entry.replaced_by)}",
            kind="retired",
            code=code,
            replacement=entry.replaced_by,
        )
    return entry


def codes_in_force(on: date) -> list[AttendanceCode]:
    """The code set a register dated `on` may use, in table order."""
    return [entry for entry in CODE_TABLE if entry.in_force_on(on)]


def all_codes() -> list[AttendanceCode]:
    """Every code ever accepted, including retired ones (for reading history)."""
    return list(CODE_TABLE)


_PRESENT_MARK_SESSION = {"/": "AM", "\\": "PM"}


def session_code_mismatch(code: str, session: str) -> str | None:
    """Explain why a present mark does not fit its session, or return None when it does.

    '/' is the AM present mark and '\\' the PM one; other codes fit either session.
    `session` is 'AM' or 'PM'.
    """
    if session not in ("AM", "PM"):
        raise ValueError(f"session must be 'AM' or 'PM', got {session!r}")
    expected = _PRESENT_MARK_SESSION.get(code)
    if expected is None or expected == session:
        return None
    right_mark = next(mark for mark, s in _PRESENT_MARK_SESSION.items() if s == session)
    return f"'{code}' is the {expected} present mark; use '{right_mark}' for the {session} session"
