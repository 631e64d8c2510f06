"""Which database errors blame the moment (retry: a consumer rewinds, HTTP says 503) and which blame
the work (an event is dead-lettered, a request fails for good)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from shared.db import is_transient


class AdaptedError(Exception):
    """What SQLAlchemy's asyncpg adapter hands over as a DBAPIError's `orig`: it keeps the SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        self.sqlstate = sqlstate


MOMENT = [
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.SerializationError("could not serialize access due to concurrent update"),
]
WORK = [
    asyncpg.exceptions.UniqueViolationError("duplicate key value"),
    asyncpg.exceptions.StringDataRightTruncationError("value too long for type character varying(6)"),
    asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
    asyncpg.exceptions.DataError("invalid input for query argument $1 (value out of int64 range)"),
]


@pytest.mark.parametrize("error", MOMENT, ids=lambda e: type(e).__name__)
def test_the_server_away_or_a_lost_race_is_transient(error: asyncpg.PostgresError) -> None:
    assert is_transient(error)
    assert is_transient(DBAPIError("SELECT 1", None, AdaptedError(error.sqlstate)))


@pytest.mark.parametrize("error", WORK, ids=lambda e: type(e).__name__)
def test_what_the_statement_cannot_do_is_not(error: asyncpg.PostgresError) -> None:
    assert not is_transient(error)
    assert not is_transient(DBAPIError("SELECT 1", None, AdaptedError(error.sqlstate)))


def test_network_errors_are_transient_and_programming_errors_are_not() -> None:
    assert is_transient(ConnectionRefusedError(111, "Connect call failed"))
    assert is_transient(TimeoutError())
    assert is_transient(asyncpg.InterfaceError("connection is closed"))
    assert not is_transient(ValueError("'XX' is not a valid Category"))
    assert not is_transient(KeyError("la_code"))
