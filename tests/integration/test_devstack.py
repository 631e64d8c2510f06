"""The local infrastructure helpers start real servers that real clients can use."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from signal import SIGKILL

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.devstack import (
    EmbeddedPostgres,
    TansuBroker,
    drop_database,
    ensure_database,
    free_port,
    postgres_reachable,
    wait_for_port,
)


def test_wait_for_port_times_out_on_a_closed_port() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.3)


async def _database_exists(url: str, name: str) -> bool:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_embedded_postgres_lifecycle(tmp_path: Path) -> None:
    port = free_port()
    pg = EmbeddedPostgres(tmp_path / "pgdata", port, durable=False)
    try:
        url = await asyncio.to_thread(pg.start)
        assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        assert pg.is_running()
        assert (tmp_path / "pgdata" / "postgres.log").exists()
        assert (tmp_path / "pgdata" / f".s.PGSQL.{port}").is_socket()
        assert postgres_reachable(url)

        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        try:
            settings = {
                name: await conn.fetchval(f"SHOW {name}")
                for name in (
                    "fsync",
                    "synchronous_commit",
                    "full_page_writes",
                    "max_connections",
                    "server_encoding",
                    "listen_addresses",
                )
            }
        finally:
            await conn.close()
        assert settings == {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "server_encoding": "UTF8",
            "listen_addresses": "127.0.0.1",
        }

        await ensure_database(url, "devstack check")
        await ensure_database(url, "devstack check")  # idempotent
        assert await _database_exists(url, "devstack check")
        holder = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/devstack%20check"
        )  # a session still connected does not block the drop
        await drop_database(url, "devstack check")
        await holder.close()
        assert not await _database_exists(url, "devstack check")
        await drop_database(url, "devstack check")  # idempotent

        # A second handle on the same data dir reuses the running server as is...
        pid = (tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0]
        await asyncio.to_thread(EmbeddedPostgres(tmp_path / "pgdata", port, durable=False).start)
        assert (tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0] == pid
        # ...but restarts it when asked for different settings.
        durable = EmbeddedPostgres(tmp_path / "pgdata", port, durable=True)
        await asyncio.to_thread(durable.start)
        assert (tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0] != pid
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        assert await conn.fetchval("SHOW fsync") == "on"
        await conn.close()

        # A crashed server (even one left as an unreaped zombie) is recovered by start().
        os.kill(int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0]), SIGKILL)
        await asyncio.sleep(0.2)
        assert not pg.is_running()
        await asyncio.to_thread(pg.start)
        assert postgres_reachable(url)
    finally:
        await asyncio.to_thread(pg.stop)
    assert not pg.is_running()
    assert not postgres_reachable(url, timeout=1.0)
    await asyncio.to_thread(pg.stop)  # idempotent


def test_embedded_postgres_socket_falls_back_to_a_short_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("long-" * 20) / "pgdata"
    pg = EmbeddedPostgres(data_dir, free_port(), durable=False)
    try:
        url = pg.start()
        assert postgres_reachable(url)
        socket_dir = Path((data_dir / "postmaster.pid").read_text().splitlines()[4])
        assert socket_dir != data_dir
        assert (socket_dir / f".s.PGSQL.{pg.port}").is_socket()
    finally:
        pg.stop()
    assert not socket_dir.exists()


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()


async def _round_trip(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    """Produce one keyed message, consume it in a consumer group and commit its offset."""
    await _create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=15)
        assert (message.key, message.value) == (key, value)
        assert (message.partition, message.offset) == (sent.partition, sent.offset)
        tp = TopicPartition(topic, message.partition)
        await consumer.commit({tp: message.offset + 1})
        assert await consumer.committed(tp) == message.offset + 1
    finally:
        await consumer.stop()


async def test_tansu_broker_serves_and_forgets_on_restart(tmp_path: Path) -> None:
    with TansuBroker(free_port(), log_path=tmp_path / "tansu.log") as broker:
        assert broker.is_running()
        bootstrap = broker.bootstrap_servers
        await _round_trip(bootstrap, "devstack.before", b"pupil-1", b"present")
        assert "devstack.before" in await _topics(bootstrap)

        assert await asyncio.to_thread(broker.restart) == bootstrap
        assert broker.is_running()
        assert "devstack.before" not in await _topics(bootstrap)  # in-memory: all data gone
        await _round_trip(bootstrap, "devstack.after", b"pupil-2", b"absent")
    assert not broker.is_running()
    broker.stop()  # idempotent
    assert "ready" in (tmp_path / "tansu.log").read_text()
