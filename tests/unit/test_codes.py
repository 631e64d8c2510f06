"""The attendance code table against domain.md §2 (Regs 2024 / WTISA, seed 001 Appendix 1)."""

import re
from dataclasses import FrozenInstanceError
from datetime import date, timedelta

import pytest

from shared.domain.codes import (
    CODE_SET_2024_START,
    CODE_TABLE,
    LATENESS_CODES,
    SUB_CODE_PATTERN,
    AttendanceCode,
    Category,
    CodeError,
    all_codes,
    code_for,
    codes_in_force,
    session_code_mismatch,
)

AFTER_2024 = date(2025, 1, 15)
BEFORE_2024 = date(2024, 3, 1)
LAST_OLD_DAY = CODE_SET_2024_START - timedelta(days=1)

# domain.md §2 table, transcribed: code -> (category, possible session).
DOMAIN_TABLE_2024 = {
    "/": ("P", True),
    "\\": ("P", True),
    "L": ("P", True),
    "K": ("AEA", True),
    "V": ("AEA", True),
    "P": ("AEA", True),
    "W": ("AEA", True),
    "B": ("AEA", True),
    "D": ("NC", False),
    "C1": ("AA", True),
    "M": ("AA", True),
    "J1": ("AA", True),
    "S": ("AA", True),
    "X": ("NC", False),
    "C2": ("AA", True),
    "C": ("AA", True),
    "E": ("AA", True),
    "I": ("AA", True),
    "T": ("AA", True),
    "R": ("AA", True),
    "Q": ("NC", False),
    **{f"Y{i}": ("NC", False) for i in range(1, 8)},
    "G": ("UA", True),
    "N": ("UA", True),
    "O": ("UA", True),
    "U": ("UA", True),
    "Z": ("NC", False),
    "#": ("NC", False),
}
NEW_IN_2024 = {"C1", "C2", "J1", "K", "Q", *(f"Y{i}" for i in range(1, 8))}
# Retired code -> (old category, possible, replacement named in the error).
RETIRED = {
    "H": ("AA", True, ("C",)),
    "F": ("AA", True, ("C",)),
    "J": ("AA", True, ("J1",)),
    "Y": ("NC", False, tuple(f"Y{i}" for i in range(1, 8))),
}


@pytest.mark.parametrize(("code", "expected"), sorted(DOMAIN_TABLE_2024.items()))
def test_2024_code_matches_domain_table(code: str, expected: tuple[str, bool]) -> None:
    entry = code_for(code, AFTER_2024)
    assert entry.code == code
    assert (entry.category, entry.possible) == expected
    assert entry.meaning


def test_2024_code_set_is_exactly_the_domain_table() -> None:
    in_force = [entry.code for entry in codes_in_force(CODE_SET_2024_START)]
    assert len(in_force) == len(set(in_force))
    assert set(in_force) == set(DOMAIN_TABLE_2024)


def test_pre_2024_code_set() -> None:
    in_force = {entry.code for entry in codes_in_force(LAST_OLD_DAY)}
    assert in_force == (set(DOMAIN_TABLE_2024) - NEW_IN_2024) | set(RETIRED)


def test_table_has_no_duplicate_codes_and_all_codes_lists_it() -> None:
    codes = [entry.code for entry in CODE_TABLE]
    assert len(codes) == len(set(codes))
    assert all_codes() == list(CODE_TABLE)
    assert set(codes) == set(DOMAIN_TABLE_2024) | set(RETIRED)


@pytest.mark.parametrize("code", sorted(DOMAIN_TABLE_2024.keys() - NEW_IN_2024))
def test_codes_common_to_both_sets_have_no_bounds(code: str) -> None:
    entry = code_for(code, BEFORE_2024)
    assert entry.in_force_from is None
    assert entry.in_force_until is None
    assert entry.replaced_by == ()
    assert code_for(code, AFTER_2024) is entry


def test_attendance_and_absence_follow_category() -> None:
    for entry in CODE_TABLE:
        assert entry.is_attendance == (entry.category in ("P", "AEA")), entry.code
        assert entry.is_absence == (entry.category in ("AA", "UA")), entry.code
        # Every attendance or absence mark is a possible session; NC marks are not.
        assert entry.possible == (entry.category != Category.NOT_COUNTED), entry.code


def test_category_values() -> None:
    assert [c.value for c in Category] == ["P", "AEA", "AA", "UA", "NC"]
    assert Category.UNAUTHORISED == "UA"


def test_t_keeps_authorised_and_mentions_its_2024_meaning() -> None:
    for on in (BEFORE_2024, AFTER_2024):
        assert code_for("T", on).category == Category.AUTHORISED
    assert "occupational" in code_for("T", AFTER_2024).meaning


def test_entries_are_immutable() -> None:
    entry = code_for("I", AFTER_2024)
    with pytest.raises(FrozenInstanceError):
        entry.category = Category.UNAUTHORISED  # type: ignore[misc]


@pytest.mark.parametrize(("code", "old"), sorted(RETIRED.items()))
def test_retired_code_accepted_before_2024_with_old_category(code: str, old: tuple[str, bool, tuple[str, ...]]) -> None:
    category, possible, replacement = old
    for on in (date(2019, 1, 7), LAST_OLD_DAY):
        entry = code_for(code, on)
        assert (entry.category, entry.possible) == (category, possible)
        assert entry.replaced_by == replacement
        assert entry.in_force_until == CODE_SET_2024_START


@pytest.mark.parametrize(("code", "old"), sorted(RETIRED.items()))
@pytest.mark.parametrize("on", [CODE_SET_2024_START, AFTER_2024])
def test_retired_code_rejected_from_2024_naming_replacement(
    code: str, old: tuple[str, bool, tuple[str, ...]], on: date
) -> None:
    with pytest.raises(CodeError) as caught:
        code_for(code, on)
    error = caught.value
    assert error.kind == "retired"
    assert error.code == code
    assert error.replacement == old[2]
    assert f"code '{code}' was retired on 19 Aug 2024" in str(error)
    for replacement in old[2]:
        assert replacement in str(error)
    # Each replacement is itself a valid code on that date.
    for replacement in error.replacement:
        assert code_for(replacement, on).code == replacement


def test_retired_messages() -> None:
    with pytest.raises(CodeError, match=r"^code 'H' was retired on 19 Aug 2024; use C$"):
        code_for("H", AFTER_2024)
    with pytest.raises(CodeError, match=r"^code 'J' was retired on 19 Aug 2024; use J1$"):
        code_for("J", AFTER_2024)
    with pytest.raises(CodeError, match=r"use one of Y1, Y2, Y3, Y4, Y5, Y6, Y7$"):
        code_for("Y", AFTER_2024)


@pytest.mark.parametrize("code", sorted(NEW_IN_2024))
def test_2024_only_code_rejected_before_2024(code: str) -> None:
    with pytest.raises(CodeError) as caught:
        code_for(code, LAST_OLD_DAY)
    assert caught.value.kind == "not_in_force"
    assert caught.value.code == code
    assert caught.value.replacement == ()
    assert str(caught.value) == f"code '{code}' is only in force from 19 Aug 2024"
    assert code_for(code, CODE_SET_2024_START).in_force_from == CODE_SET_2024_START


@pytest.mark.parametrize("code", ["Q9", "", " I", "I ", "Y8", "A", "I01", "/\\"])
def test_unknown_code(code: str) -> None:
    with pytest.raises(CodeError) as caught:
        code_for(code, AFTER_2024)
    assert caught.value.kind == "unknown"
    assert caught.value.code == code
    assert str(caught.value) == f"unknown attendance code {code!r}"


def test_codes_are_case_sensitive() -> None:
    with pytest.raises(CodeError, match="did you mean 'C1'") as caught:
        code_for("c1", AFTER_2024)
    assert caught.value.kind == "unknown"


def test_code_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        code_for("Q9", AFTER_2024)


def test_lateness_codes() -> None:
    assert LATENESS_CODES == {"L", "U"}
    assert code_for("L", AFTER_2024).category == Category.PRESENT
    assert code_for("U", AFTER_2024).category == Category.UNAUTHORISED


@pytest.mark.parametrize(
    ("code", "session", "fits"),
    [
        ("/", "AM", True),
        ("\\", "PM", True),
        ("\\", "AM", False),
        ("/", "PM", False),
        ("L", "AM", True),
        ("L", "PM", True),
        ("I", "PM", True),
    ],
)
def test_session_code_mismatch(code: str, session: str, fits: bool) -> None:
    message = session_code_mismatch(code, session)
    assert (message is None) == fits


def test_session_code_mismatch_messages() -> None:
    assert session_code_mismatch("\\", "AM") == ("'\\' is the PM present mark; use '/' for the AM session")
    assert session_code_mismatch("/", "PM") == ("'/' is the AM present mark; use '\\' for the PM session")


def test_session_code_mismatch_rejects_unknown_session() -> None:
    with pytest.raises(ValueError, match="session must be 'AM' or 'PM'"):
        session_code_mismatch("/", "morning")


@pytest.mark.parametrize("sub_code", ["I01", "M2", "G01", "C1A", "Y712345"])
def test_sub_code_pattern_accepts_mis_sub_codes(sub_code: str) -> None:
    assert re.fullmatch(SUB_CODE_PATTERN, sub_code)


@pytest.mark.parametrize("sub_code", ["", "i01", "I-01", "I 01", "/01", "ABCDEFGHI"])
def test_sub_code_pattern_rejects_malformed(sub_code: str) -> None:
    assert re.fullmatch(SUB_CODE_PATTERN, sub_code) is None


def test_attendance_code_direct_construction() -> None:
    entry = AttendanceCode("G", "holiday", Category.UNAUTHORISED, True, None, None)
    assert entry.is_absence and not entry.is_attendance
    assert entry.replaced_by == ()
