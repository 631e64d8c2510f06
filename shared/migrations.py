"""Alembic per service: each service keeps its revisions in `services/<name>/migrations` and its
version table in its own schema. `attendance migrate` runs them all.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url)
    cfg.attributes["schema"] = service
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, database_url), revision)


def run_env(target_metadata: sa.MetaData) -> None:
    """Body of every service's migrations/env.py (online mode, async engine)."""
    import asyncio

    cfg = context.config
    schema = target_metadata.schema
    url = cfg.get_main_option("sqlalchemy.url")

    def do_run(connection: sa.Connection) -> None:
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(do_run)
        await engine.dispose()

    asyncio.run(main())


def create_platform_tables_v1(schema: str) -> None:
    """The shared mechanism tables every service has: outbox, applied events, idempotency keys.

    Frozen as v1: a later change to these tables gets its own function and revision.
    """
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("keys", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("payloads", postgresql.ARRAY(sa.LargeBinary), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=schema,
    )
    # Rows live for seconds: compressing their payloads (pglz by default) costs the database more
    # CPU than the bytes it saves.
    op.execute(f'ALTER TABLE "{schema}".outbox ALTER COLUMN payloads SET STORAGE EXTERNAL')
    op.create_table(
        "applied_events",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=schema,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_fingerprint", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", postgresql.JSONB),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=schema,
    )


def create_record_reads_v1(schema: str) -> None:
    """The log of who read which pupil's record (shared.audit), frozen as v1 like the tables above."""
    op.create_table(
        "record_reads",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("reader", sa.Text, nullable=False),
        sa.Column("reader_role", sa.Text, nullable=False),
        sa.Column("reader_urns", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("reader_la_code", sa.String(3)),
        sa.Column("upn", sa.String(13), nullable=False),
        sa.Column("urn", sa.String(6)),
        sa.Column("la_code", sa.String(3)),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        schema=schema,
    )
    op.create_index("ix_record_reads_upn", "record_reads", ["upn", "id"], schema=schema)
    op.create_index("ix_record_reads_la_code", "record_reads", ["la_code", "id"], schema=schema)
