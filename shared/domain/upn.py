"""Unique Pupil Number validation (DfE UPN specification, Data Standards Catalogue v2.0).

Pupils are addressed by UPN everywhere (design.md), so a mistyped UPN must be rejected at the
edge with a message that says what is wrong, rather than silently creating a second pupil.

Layout (13 characters): 1 check letter; 2-4 LA number; 5-8 establishment number; 9-10 last two
digits of the year allocated; 11-13 serial. A permanent UPN is all digits after the check
letter; a temporary UPN ends in a letter from the check alphabet instead of the last digit.
"""

import operator

CHECK_ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ"
"""Check letters for 0..22; I, O and S are never used (nor as a temporary UPN's last letter)."""

UPN_LENGTH = 13
_DIGITS = frozenset("0123456789")
# Numeric value of every character that may follow the check letter (digits, and a temporary
# UPN's final letter as its index in the check alphabet).
_VALUE = {**{str(d): d for d in range(10)}, **{c: i for i, c in enumerate(CHECK_ALPHABET)}}
_WEIGHTS = tuple(range(2, 14))


def _body_error(body: str) -> str | None:
    """Why the 12 characters after the check letter are malformed, or None."""
    if any(c not in _DIGITS for c in body[:11]):
        return "UPN characters 2-12 must be digits"
    if body[11] not in _DIGITS and body[11] not in CHECK_ALPHABET:
        return f"UPN character 13 must be a digit or a check-alphabet letter ({CHECK_ALPHABET}), got {body[11]!r}"
    return None


def check_letter(body: str) -> str:
    """The check letter for the 12 characters that follow it in a UPN.

    Characters 2..13 are weighted 2..13 and summed mod 23; a final letter (temporary UPN)
    counts as its index in the check alphabet.
    """
    if len(body) != UPN_LENGTH - 1:
        raise ValueError(f"UPN body must be 12 characters, got {len(body)}")
    error = _body_error(body)
    if error is not None:
        raise ValueError(error)
    return _check_letter(body)


def _check_letter(body: str) -> str:
    return CHECK_ALPHABET[sum(map(operator.mul, _WEIGHTS, map(_VALUE.__getitem__, body))) % 23]


def upn_error(upn: str) -> str | None:
    """None when `upn` is a valid UPN, otherwise the first thing wrong with it."""
    # Fast path for the common case (registers validate thousands per request).
    if len(upn) == UPN_LENGTH and upn[1:12].isdigit() and upn[1:12].isascii() and upn[12] in _VALUE:
        expected = _check_letter(upn[1:])
        if upn[0] == expected:
            return None
    if len(upn) != UPN_LENGTH:
        return f"UPN must be {UPN_LENGTH} characters, got {len(upn)}"
    if any(c.islower() for c in upn):
        return "UPN must be upper case"
    if upn[0] not in CHECK_ALPHABET:
        return f"UPN character 1 must be a check letter ({CHECK_ALPHABET}), got {upn[0]!r}"
    body = upn[1:]
    error = _body_error(body)
    if error is not None:
        return error
    expected = check_letter(body)
    if upn[0] != expected:
        return f"UPN check letter is '{upn[0]}' but should be '{expected}'"
    return None


def make_upn(la_code: int, establishment: int, year: int, serial: int) -> str:
    """Build a valid permanent UPN, for tests, simulators and benchmarks.

    `year` is the year allocated, either its last two digits or the four-digit year;
    `serial` (0-999) fills characters 11-13.
    """
    if 1000 <= year <= 9999:
        year %= 100
    for name, value, upper in (
        ("la_code", la_code, 999),
        ("establishment", establishment, 9999),
        ("year", year, 99),
        ("serial", serial, 999),
    ):
        if not 0 <= value <= upper:
            raise ValueError(f"{name} must be between 0 and {upper}, got {value}")
    body = f"{la_code:03d}{establishment:04d}{year:02d}{serial:03d}"
    return check_letter(body) + body
