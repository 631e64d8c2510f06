"""Events end to end: the outbox relay through a broker outage and under its lease, per-key order.

The ConsumerRunner's own guarantees (duplicates, poison messages, crash between the two commits,
graceful stop) are in test_consumer_runner.py, which reuses the helpers defined here.

Every downstream consumer in these tests writes to its own throw-away schema (`downstream_<hex>`)
holding the platform tables exactly as `create_platform_tables_v1` makes them, plus an `effects`
table whose upsert counts applications: a double application shows up as `times > 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth import Role
from shared.consumer import ConsumerRunner
from shared.db import make_engine, make_sessionmaker
from shared.devstack import TansuBroker, drop_database, ensure_database, free_port
from shared.events import MARKS_TOPIC, CloudEvent, MarkAmended, MarkRecorded, make_event, parse_event
from shared.kafka import make_producer
from shared.migrations import create_platform_tables_v1, upgrade
from shared.outbox import OutboxRelay, _lease_key, encode, enqueue
from tests.conftest import TEST_LA, read_events, running_service

# ---------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def wait_until(probe: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll `probe` until it returns something truthy; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(0.1)


@dataclass
class Downstream:
    """A consumer's schema in the test database: platform tables plus the `effects` table."""

    schema: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    async def fetch(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(text(sql.replace("{s}", f'"{self.schema}"')), params))

    async def effects(self) -> dict[uuid.UUID, int]:
        """event id -> how many times its effect was applied."""
        return {r.event_id: r.times for r in await self.fetch("SELECT event_id, times FROM {s}.effects")}

    async def effect_rows(self) -> list[Any]:
        return await self.fetch("SELECT event_id, upn, mark, times FROM {s}.effects")

    async def applied(self, consumer: str) -> list[uuid.UUID]:
        rows = await self.fetch("SELECT event_id FROM {s}.applied_events WHERE consumer = :c", c=consumer)
        return [r.event_id for r in rows]

    async def enqueue(self, topic: str, events: Sequence[CloudEvent[Any]]) -> None:
        """Write events to this schema's outbox the way a service does (in a transaction)."""
        async with self.sessionmaker() as session, session.begin():
            await enqueue(session, self.schema, topic, [(e.subject or "", encode(e)) for e in events])

    async def outbox_backlog(self) -> int:
        rows = await self.fetch("SELECT coalesce(sum(cardinality(keys)), 0) AS n FROM {s}.outbox")
        return rows[0].n


@contextlib.asynccontextmanager
async def downstream_schema(database_url: str) -> AsyncIterator[Downstream]:
    schema = unique("downstream_")
    engine = make_engine(database_url, pool_size=5)

    def create_tables(sync_conn: Any) -> None:
        with Operations.context(MigrationContext.configure(sync_conn)):
            create_platform_tables_v1(schema)

    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(create_tables)
        await conn.execute(
            text(
                f'CREATE TABLE "{schema}".effects '
                "(event_id uuid PRIMARY KEY, upn text, mark text, times int NOT NULL DEFAULT 1)"
            )
        )
    try:
        yield Downstream(schema, engine, make_sessionmaker(engine))
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


@dataclass
class EffectsHandler:
    """The downstream effect: one row per event, upserted so that re-applying it is visible.

    `urn` limits the effect to one school's events (shared topics carry other tests' events);
    an event of `poison_upn` makes the handler raise ValueError, failing the whole batch.
    """

    schema: str
    urn: str | None = None
    poison_upn: str | None = None
    seen: list[CloudEvent[Any]] = field(default_factory=list)  # what the runner handed over

    async def __call__(self, session: AsyncSession, events: list[CloudEvent[Any]]) -> None:
        self.seen.extend(events)
        mine = [e for e in events if self.urn is None or getattr(e.data, "urn", None) == self.urn]
        if self.poison_upn is not None and any(getattr(e.data, "upn", None) == self.poison_upn for e in mine):
            raise ValueError(f"poison pupil {self.poison_upn}")
        if mine:
            await session.execute(
                text(
                    f'INSERT INTO "{self.schema}".effects (event_id, upn, mark) VALUES (:id, :upn, :mark) '
                    "ON CONFLICT (event_id) DO UPDATE SET times = effects.times + 1"
                ),
                [
                    {
                        "id": e.id,
                        "upn": getattr(e.data, "upn", None),
                        "mark": f"{getattr(e.data, 'date', '')} {getattr(e.data, 'session', '')}",
                    }
                    for e in mine
                ],
            )

    def seen_ids(self) -> list[uuid.UUID]:
        return [e.id for e in self.seen]


def make_runner(
    db: Downstream, bootstrap: str, handler: EffectsHandler, topics: list[str], name: str | None = None, **kw: Any
) -> ConsumerRunner:
    return ConsumerRunner(
        name=name or unique("test-consumer-"),
        schema=db.schema,
        topics=topics,
        handler=handler,
        sessionmaker=db.sessionmaker,
        bootstrap=bootstrap,
        partitions=4,
        batch_size=kw.pop("batch_size", 500),
        batch_timeout_ms=kw.pop("batch_timeout_ms", 50),
        **kw,
    )


@contextlib.asynccontextmanager
async def running(runner: ConsumerRunner | OutboxRelay, stop_within: float = 15.0) -> AsyncIterator[asyncio.Task]:
    """Run a runner (or relay) in a task; on exit set its stop event and await it (bounded)."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    task.stop_event = stop  # type: ignore[attr-defined]
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, stop_within)


def mark_event(upn: str, urn: str = "100000", code: str = "/", version: int = 1) -> CloudEvent[MarkRecorded]:
    data = MarkRecorded(
        urn=urn,
        la_code=TEST_LA,
        upn=upn,
        date=date(2025, 11, 3),
        session="AM",
        code=code,
        category="P",
        possible=True,
        change_version=version,
        recorded_at=datetime.now(UTC),
        link=f"http://registers/v1/schools/{urn}/pupils/{upn}/marks",
    )
    return make_event("tests", data, subject=upn)


async def publish(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
    """Produce raw messages one by one (acked); returns their RecordMetadata."""
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key) for key, value in messages]
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, idle: float = 1.5, timeout: float = 20.0) -> list[ConsumerRecord]:
    """Every record on the topic, from the beginning until nothing more arrives for `idle` seconds.

    Not bounded by the end offsets: Tansu reports a partition's end as the last batch's base
    offset + 1, which cuts off the rest of a multi-record batch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_progress = loop.time()
        while loop.time() - last_progress < idle and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            if batch:
                last_progress = loop.time()
                records.extend(r for tp_records in batch.values() for r in tp_records)
        return records
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """A group's committed offset per partition (read without joining the group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(tps)
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def post_register(http: Any, urn: str, on: str, session: str, code: str, upns: Sequence[str]) -> None:
    body = {"date": on, "session": session, "marks": [{"upn": u, "code": code} for u in upns]}
    response = await http.post(f"/v1/schools/{urn}/registers", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["new"] == len(upns)


# ---------------------------------------------------------------------------------- tests


@pytest_asyncio.fixture(loop_scope="session")
async def outage_stack(postgres_admin_url, settings_overrides, token, new_urn, tmp_path):
    """The outage tests stop and restart their broker, which then forgets everything (Tansu keeps
    nothing): they get their own broker, database and registers service, so that the shared ones
    and the services consuming them are undisturbed."""
    from services.registers.main import build_app
    from services.registers.settings import RegistersSettings

    name = unique("attendance_outage_")
    await ensure_database(postgres_admin_url, name)
    database_url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    await asyncio.to_thread(upgrade, "registers", database_url)
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    broker.start()
    overrides = {
        **settings_overrides,
        "database_url": database_url,
        "kafka_bootstrap_servers": broker.bootstrap_servers,
    }
    try:
        async with running_service(build_app, RegistersSettings(**overrides, port=free_port())) as registers:
            urn = new_urn()
            async with registers.client(token(Role.OPS)) as ops:
                created = await ops.post(
                    "/v1/schools", json={"urn": urn, "name": "Outage School", "la_code": TEST_LA, "phase": "primary"}
                )
                assert created.status_code == 201, created.text
            school = {"urn": urn, "la_code": TEST_LA, "token": token(Role.SCHOOL, urns={urn})}
            yield registers, school, broker, database_url
    finally:
        broker.stop()
        await drop_database(postgres_admin_url, name)


async def _outage_scenario(registers, school, broker, database_url, new_upn, outage: float) -> None:
    """Register 1 flows through; the broker stops; registers 2 and 3 are posted (201, events kept in
    the outbox); `outage` seconds after the posts the broker starts again (same port, empty: Tansu
    keeps nothing); every mark of registers 2 and 3 must reach the downstream consumer exactly once."""
    urn = school["urn"]
    upns = [new_upn() for _ in range(5)]
    first = ("2025-11-03", "AM", "/")
    during_outage = [("2025-11-03", "PM", "\\"), ("2025-11-04", "AM", "I")]
    total = len(upns) * (1 + len(during_outage))
    async with downstream_schema(database_url) as db:
        handler = EffectsHandler(db.schema, urn=urn)
        runner = make_runner(db, broker.bootstrap_servers, handler, [MARKS_TOPIC], name=unique("test-outage-"))
        try:
            async with running(runner, stop_within=20), registers.client(school["token"]) as http:
                await post_register(http, urn, *first, upns)
                await wait_until(lambda: _count(db, len(upns)), 30, "the first register's marks to be applied")

                await asyncio.to_thread(broker.stop)
                for on, session, code in during_outage:
                    await post_register(http, urn, on, session, code, upns)  # 201 without a broker
                # 2 registers x 5 marks, plus 2 register-taken events, all waiting in the outbox.
                backlog = await _registers_backlog(db)
                assert backlog >= 2 * len(upns) + 2, backlog
                await asyncio.sleep(outage)
                assert await _registers_backlog(db) == backlog  # nothing left the outbox meanwhile

                await asyncio.to_thread(broker.start)
                await wait_until(lambda: _registers_backlog_is(db, 0), 30, "the registers outbox to drain")
                # The relay deleted its rows, so the broker acknowledged every event: they must be
                # on the topic (at least once).
                on_topic = {
                    (e.data.upn, f"{e.data.date} {e.data.session}")
                    for e in map(
                        parse_event, (r.value for r in await read_topic(broker.bootstrap_servers, MARKS_TOPIC))
                    )
                    if e.data.urn == urn
                }
                posted = {(u, f"{on} {session}") for u in upns for on, session, _ in during_outage}
                assert posted <= on_topic, f"acknowledged but not on the topic: {sorted(posted - on_topic)}"

                # The consumer restarted when its connection broke (backing off up to 5 s while the
                # broker was down) and joins its group afresh on the restarted broker.
                await wait_until(lambda: _count(db, total), 90, "every mark posted during the outage to be applied")

            rows = await db.effect_rows()
            assert len(rows) == total
            assert all(r.times == 1 for r in rows), [r for r in rows if r.times != 1]
            marks = Counter((r.upn, r.mark) for r in rows)
            expected = {(u, f"{on} {session}") for u in upns for on, session, _ in [first, *during_outage]}
            assert set(marks) == expected and set(marks.values()) == {1}
            assert await _registers_backlog(db) == 0
        finally:
            await asyncio.to_thread(broker.start)  # no-op if running


async def test_broker_outage_during_ingest_loses_and_duplicates_nothing(outage_stack, new_upn):
    """The acceptance test: a short outage (the broker is back within a second or two). The relay's
    producer retries its pending sends into the restarted, empty broker, which acknowledges them
    without keeping them: the relay must not count those acknowledgements."""
    await _outage_scenario(*outage_stack, new_upn, outage=0.5)


async def test_long_broker_outage_during_ingest_loses_and_duplicates_nothing(outage_stack, new_upn):
    """An outage longer than the relay producer's request timeout (10 s): the relay's pending
    sends fail, it reconnects and re-creates its topics, and republishes the whole backlog; the
    consumer, whose positions belong to the lost log, starts over from the committed offsets
    (none: the start of the new log). Nothing is lost or applied twice."""
    await _outage_scenario(*outage_stack, new_upn, outage=11.0)


async def _count(db: Downstream, expected: int) -> bool:
    effects = await db.effects()
    assert len(effects) <= expected, f"more effects than marks posted: {len(effects)} > {expected}"
    return len(effects) == expected


async def _registers_backlog(db: Downstream) -> int:
    rows = await db.fetch("SELECT coalesce(sum(cardinality(keys)), 0) AS n FROM registers.outbox")
    return rows[0].n


async def _registers_backlog_is(db: Downstream, n: int) -> bool:
    return await _registers_backlog(db) == n


async def _lease_holders(db: Downstream, schema: str) -> list[str]:
    """application_name of every session holding the outbox lease of `schema`."""
    rows = await db.fetch(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1 "
        "AND l.objid::text::bigint = :key "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        key=_lease_key(schema),
    )
    return [r.application_name for r in rows]


async def test_relay_lease_allows_one_publisher_and_fails_over(registers, database_url, broker):
    """Two relays on one outbox: one holds the advisory lock and publishes, the other stands by;
    each event goes out exactly once; when the holder stops the other takes over.

    The relays run on a test schema's outbox (filled by `shared.outbox.enqueue`, as a service
    does) rather than on `registers`, whose lease the running registers service already holds."""
    bootstrap = broker.bootstrap_servers
    topic = unique("test.relay.")
    async with downstream_schema(database_url) as db:
        # The registers service's own relay: exactly one lease holder for its schema too.
        assert len(await _lease_holders(db, "registers")) == 1

        names = [unique("relay-a-"), unique("relay-b-")]
        relays = {
            name: OutboxRelay(
                schema=db.schema,
                dsn=f"{database_url}?application_name={name}",
                bootstrap=bootstrap,
                topics=[topic],
                partitions=4,
                poll_interval=0.5,
            )
            for name in names
        }
        async with contextlib.AsyncExitStack() as stack:
            tasks = {name: await stack.enter_async_context(running(relay)) for name, relay in relays.items()}
            holders = await wait_until(lambda: _lease_holders(db, db.schema), 10, "a relay to take the lease")
            assert len(holders) == 1 and holders[0] in names, holders
            holder = holders[0]
            standby = next(n for n in names if n != holder)
            # The standby is alive (connected) but holds nothing.
            sessions = await db.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE application_name = ANY(:names)", names=names
            )
            assert sorted(r.application_name for r in sessions) == sorted(names)

            first = [mark_event(f"UPN-A-{i}") for i in range(6)]
            await db.enqueue(topic, first[:3])
            await db.enqueue(topic, first[3:])
            await wait_until(lambda: _backlog_is(db, 0), 15, "the holder to publish the first batch")
            assert await _lease_holders(db, db.schema) == [holder]

            tasks[holder].stop_event.set()
            await asyncio.wait_for(tasks[holder], 10)
            loop = asyncio.get_running_loop()
            stopped_at = loop.time()
            await wait_until(lambda: _holders_are(db, [standby]), 8, "the standby relay to take over the lease")
            took_over_in = loop.time() - stopped_at
            assert took_over_in < 5, took_over_in

            second = [mark_event(f"UPN-B-{i}") for i in range(4)]
            await db.enqueue(topic, second)
            await wait_until(lambda: _backlog_is(db, 0), 15, "the new holder to publish the second batch")

        published = Counter(parse_event(r.value).id for r in await read_topic(bootstrap, topic))
        assert set(published) == {e.id for e in first + second}
        assert set(published.values()) == {1}, {k: v for k, v in published.items() if v != 1}


async def _backlog_is(db: Downstream, n: int) -> bool:
    return await db.outbox_backlog() == n


async def _holders_are(db: Downstream, names: list[str]) -> bool:
    return await _lease_holders(db, db.schema) == names


async def test_one_pupils_changes_are_published_in_order(registers, school, new_upn):
    """A pupil's mark, then two amendments: the marks topic carries recorded -> amended -> amended
    for that UPN, in order, each amendment's previous code being the code before it."""
    urn = school["urn"]
    upn, other = new_upn(), new_upn()
    on = "2025-11-05"
    async with registers.client(school["token"]) as http:
        await post_register(http, urn, on, "AM", "/", [upn, other])
        for code in ("M", "I"):
            response = await http.post(
                f"/v1/schools/{urn}/marks/{upn}/{on}/AM/amendments",
                json={"code": code, "reason": f"now {code}", "amended_by": {"name": "A Jones", "position": "Head"}},
            )
            assert response.status_code == 201, response.text

    events = await read_events(
        registers.settings.kafka_bootstrap_servers, MARKS_TOPIC, lambda e: e.data.upn == upn, 3, timeout=20
    )
    assert [e.type for e in events] == [
        "attendance.mark.recorded",
        "attendance.mark.amended",
        "attendance.mark.amended",
    ]
    recorded, first, second = (e.data for e in events)
    assert isinstance(recorded, MarkRecorded) and isinstance(first, MarkAmended) and isinstance(second, MarkAmended)
    assert (recorded.code, first.previous_code, first.code, second.previous_code, second.code) == (
        "/",
        "/",
        "M",
        "M",
        "I",
    )
    assert recorded.change_version < first.change_version < second.change_version
    assert first.amendment_id < second.amendment_id
    assert all(e.subject == upn and e.data.urn == urn for e in events)
