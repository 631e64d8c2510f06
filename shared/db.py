"""Async SQLAlchemy engine and sessions. Each service owns one PostgreSQL schema.

The request's session dependency commits when the endpoint returns (before the response is sent);
service functions only add and flush, so one request is one transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata(schema: str) -> MetaData:
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def make_base(schema: str) -> type[DeclarativeBase]:
    """A declarative base whose tables live in the service's schema."""

    class Base(DeclarativeBase):
        metadata = service_metadata(schema)

    return Base


# SQLSTATEs that blame the moment, not the statement: the connection broke (08), the server is out
# of connections (53), shutting down or starting up (57P01-57P03), or the transaction lost a race
# with another one (serialization failure, deadlock).
RETRY_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """Whether an error says the database is away or asks for a retry, rather than that the work
    (a request, an event) is at fault: the same work may succeed a moment later."""
    if isinstance(exc, OSError | asyncpg.InterfaceError | OperationalError):  # refused, reset, closed
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig or exc
    return str(getattr(exc, "sqlstate", None) or "").startswith(RETRY_SQLSTATES)


def make_engine(url: str, pool_size: int = 10, **kwargs: Any) -> AsyncEngine:
    # Statement parameters are pupils' data: an error message (and so a log line) never quotes them.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True, **kwargs
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session
        await session.commit()


# scope="function": the commit runs before the response is sent, so a client never sees a
# success that was not stored.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session's transaction, for bulk statements (unnest, COPY)."""
    conn: AsyncConnection = await session.connection()
    raw = await conn.get_raw_connection()
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its own first statement: until then a
    # statement on the bare connection would run, and commit, on its own. Begin now, so whatever is
    # done through this connection belongs to the session's transaction.
    adapted = raw.dbapi_connection
    if adapted._transaction is None:  # type: ignore[union-attr]
        await adapted._start_transaction()  # type: ignore[union-attr]
    return raw.driver_connection  # type: ignore[return-value]


async def newest_first(
    session: AsyncSession,
    query: Any,
    id_column: Any,
    *,
    equal: Sequence[tuple[Any, Any]] = (),
    cursor: int | None,
    limit: int,
) -> tuple[list[Any], int | None]:
    """One page of a list in stable newest-first order (keyset: `cursor` is the last id seen), with
    an equality filter for each (column, value) whose value is given; and the next page's cursor."""
    for column, value in equal:
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        query = query.where(id_column < cursor)
    rows = list((await session.execute(query.order_by(id_column.desc()).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, getattr(rows[-1], id_column.key) if more else None
