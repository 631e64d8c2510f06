"""UPN validation against the DfE UPN specification."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.upn import CHECK_ALPHABET, check_letter, make_upn, upn_error

# Worked by hand (weights 2..13 on characters 2..13, sum mod 23, index into
# ABCDEFGHJKLMNPQRTUVWXYZ, A=0):
#
# Permanent "?201200024001" (LA 201, establishment 2000, year 24, serial 001):
#   2*2 + 0*3 + 1*4 + 2*5 + 0*6 + 0*7 + 0*8 + 2*9 + 4*10 + 0*11 + 0*12 + 1*13
#   = 4 + 4 + 10 + 18 + 40 + 13 = 89; 89 mod 23 = 20 -> 'X'
PERMANENT = "X201200024001"
# Permanent "?938123419999" (LA 938, establishment 1234, year 19, serial 999):
#   9*2 + 3*3 + 8*4 + 1*5 + 2*6 + 3*7 + 4*8 + 1*9 + 9*10 + 9*11 + 9*12 + 9*13
#   = 18 + 9 + 32 + 5 + 12 + 21 + 32 + 9 + 90 + 99 + 108 + 117 = 552;
#   552 mod 23 = 0 -> 'A'
PERMANENT_2 = "A938123419999"
# Temporary "?20120002401A": final letter A counts as 0, so the sum is that of
#   "20120002401" = 4 + 4 + 10 + 18 + 40 + 1*12 = 88; 88 mod 23 = 19 -> 'W'
TEMPORARY = "W20120002401A"

digits = st.sampled_from("0123456789")


@pytest.mark.parametrize("upn", [PERMANENT, PERMANENT_2, TEMPORARY])
def test_hand_computed_upns_are_valid(upn: str) -> None:
    assert upn_error(upn) is None
    assert check_letter(upn[1:]) == upn[0]


def test_make_upn_matches_hand_computed_examples() -> None:
    assert make_upn(201, 2000, 24, 1) == PERMANENT
    assert make_upn(938, 1234, 19, 999) == PERMANENT_2


def test_make_upn_accepts_four_digit_year() -> None:
    assert make_upn(201, 2000, 2024, 1) == PERMANENT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1000, 1, 24, 1), "la_code must be between 0 and 999, got 1000"),
        ((-1, 1, 24, 1), "la_code must be between 0 and 999, got -1"),
        ((201, 10000, 24, 1), "establishment must be between 0 and 9999, got 10000"),
        ((201, 1, 100, 1), "year must be between 0 and 99, got 100"),
        ((201, 1, 24, 1000), "serial must be between 0 and 999, got 1000"),
    ],
)
def test_make_upn_rejects_out_of_range_parts(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_upn(*args)


def test_check_alphabet_skips_i_o_s() -> None:
    assert len(CHECK_ALPHABET) == 23
    assert not set("IOS") & set(CHECK_ALPHABET)


@pytest.mark.parametrize(
    ("upn", "message"),
    [
        (PERMANENT[:-1], "UPN must be 13 characters, got 12"),
        (PERMANENT + "1", "UPN must be 13 characters, got 14"),
        ("", "UPN must be 13 characters, got 0"),
        (PERMANENT.lower(), "UPN must be upper case"),
        ("W20120002401a", "UPN must be upper case"),
        ("I201200024001", "UPN character 1 must be a check letter"),
        ("7201200024001", "UPN character 1 must be a check letter"),
        ("X2012000A4001", "UPN characters 2-12 must be digits"),
        ("X20120002400 ", "UPN character 13 must be a digit or a check-alphabet letter"),
        ("X20120002400O", "UPN character 13 must be a digit or a check-alphabet letter"),
        ("X20120002401S", "UPN character 13 must be a digit or a check-alphabet letter"),
        ("A201200024001", "UPN check letter is 'A' but should be 'X'"),
        ("X20120002401A", "UPN check letter is 'X' but should be 'W'"),
    ],
)
def test_upn_error_branches(upn: str, message: str) -> None:
    error = upn_error(upn)
    assert error is not None
    assert error.startswith(message)


def test_non_ascii_digits_are_rejected() -> None:
    # Arabic-Indic digit one: str.isdigit() is True, but it is not a UPN digit.
    assert upn_error("X2012000240\u06610") == "UPN characters 2-12 must be digits"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("20120002400", "UPN body must be 12 characters, got 11"),
        ("20120002400X1", "UPN body must be 12 characters, got 13"),
        ("2012000240X1", "UPN characters 2-12 must be digits"),
        ("20120002401I", "UPN character 13 must be a digit or a check-alphabet letter"),
    ],
)
def test_check_letter_rejects_malformed_body(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_letter(body)


@given(
    la_code=st.integers(0, 999),
    establishment=st.integers(0, 9999),
    year=st.integers(0, 99),
    serial=st.integers(0, 999),
)
def test_make_upn_always_validates(la_code: int, establishment: int, year: int, serial: int) -> None:
    upn = make_upn(la_code, establishment, year, serial)
    assert upn_error(upn) is None
    assert upn[1:] == f"{la_code:03d}{establishment:04d}{year:02d}{serial:03d}"


@given(
    la_code=st.integers(0, 999),
    establishment=st.integers(0, 9999),
    year=st.integers(0, 99),
    serial=st.integers(0, 999),
    position=st.integers(1, 12),
    data=st.data(),
)
def test_changing_any_single_digit_breaks_the_check_letter(
    la_code: int, establishment: int, year: int, serial: int, position: int, data: st.DataObject
) -> None:
    upn = make_upn(la_code, establishment, year, serial)
    new_digit = data.draw(digits.filter(lambda d: d != upn[position]))
    mutated = upn[:position] + new_digit + upn[position + 1 :]
    assert upn_error(mutated) == (f"UPN check letter is '{upn[0]}' but should be '{check_letter(mutated[1:])}'")


@given(
    body=st.text(alphabet="0123456789", min_size=11, max_size=11),
    last=st.sampled_from(CHECK_ALPHABET),
)
def test_temporary_upn_with_computed_check_letter_validates(body: str, last: str) -> None:
    upn = check_letter(body + last) + body + last
    assert upn_error(upn) is None
