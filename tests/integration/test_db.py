"""The raw asyncpg connection under a session belongs to the session's transaction."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from shared.db import make_engine, make_sessionmaker, raw_connection


class Boom(Exception):
    pass


async def test_raw_statements_first_in_a_transaction_roll_back_with_it(database_url):
    """A bulk statement that opens a transaction (before any statement of SQLAlchemy's own) must
    not commit on its own: when the transaction fails, nothing it wrote is left."""
    engine = make_engine(database_url, pool_size=1)
    table = f"public.raw_tx_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (n int)"))
        sessions = make_sessionmaker(engine)
        with pytest.raises(Boom):
            async with sessions() as session, session.begin():
                raw = await raw_connection(session)
                await raw.execute(f"INSERT INTO {table} VALUES (1)")
                await raw.execute(f"INSERT INTO {table} VALUES (2)")
                raise Boom
        async with sessions() as session, session.begin():
            raw = await raw_connection(session)
            await raw.execute(f"INSERT INTO {table} VALUES (3)")
            assert await (await raw_connection(session)).fetchval(f"SELECT count(*) FROM {table}") == 1
        async with engine.connect() as conn:
            assert (await conn.execute(text(f"SELECT array_agg(n) FROM {table}"))).scalar_one() == [3]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()
