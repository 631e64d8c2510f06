"""Credentials: the token endpoint throttles guessing per client id and per source address, with
the count kept in PostgreSQL so that every replica enforces it; API client secrets are stored only
as Argon2 hashes; webhook signing secrets are stored encrypted, and deliveries still verify."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy import text

from services.registers import service as registers_service
from services.registers.main import build_app as build_registers
from services.registers.settings import RegistersSettings
from shared.auth import Role
from shared.db import make_engine, make_sessionmaker
from shared.devstack import drop_database, ensure_database, free_port
from shared.encryption import SecretBox, new_key
from shared.migrations import alembic_config, upgrade
from shared.webhooks import new_secret, verify
from tests.conftest import RunningService, eventually, running_service
from tests.integration.test_cme import admission, new_school, post
from tests.integration.test_notifications import _count, receiver

PROBLEM = "application/problem+json"
# Documentation addresses (RFC 5737), one per test, so no test shares another's address bucket.
_addresses = (f"192.0.2.{n}" for n in itertools.count(10))


@pytest.fixture
async def sessions(database_url) -> AsyncIterator[Any]:
    engine = make_engine(database_url, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def new_client(sessions, urn: str) -> tuple[str, str]:
    async with sessions() as session, session.begin():
        client, secret = await registers_service.create_client(session, f"MIS for {urn}", Role.SCHOOL, [urn], None)
        return client.client_id, secret


async def exchange(service: RunningService, client_id: str, secret: str, address: str):
    async with service.client() as http:
        return await http.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            headers={"X-Forwarded-For": address},  # the test client is a trusted proxy (127.0.0.1)
        )


def assert_throttled(response, longest: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/too-many-requests" and "access_token" not in problem
    assert 1 <= int(response.headers["Retry-After"]) == problem["retry_after"] <= longest


@pytest.fixture
async def replica(settings_overrides) -> AsyncIterator[RunningService]:
    """A second registers process on the same database, as behind a load balancer."""
    async with running_service(build_registers, RegistersSettings(**settings_overrides, port=free_port())) as service:
        yield service


async def test_failed_token_requests_are_limited_per_client_id_across_replicas(registers, replica, school, sessions):
    client_id, secret = await new_client(sessions, school["urn"])
    limit = registers.settings.token_failure_limit
    # Wrong secrets from ever-new addresses, alternating between the replicas: only the client's count grows.
    for attempt in range(limit):
        refused = await exchange((registers, replica)[attempt % 2], client_id, "wrong", next(_addresses))
        assert refused.status_code == 401, refused.text
    for service in (registers, replica):
        assert_throttled(await exchange(service, client_id, "wrong", next(_addresses)), 60)
        # Even the right secret waits: guessing must not continue at full speed.
        assert_throttled(await exchange(service, client_id, secret, next(_addresses)), 60)
    other_id, other_secret = await new_client(sessions, school["urn"])
    assert (await exchange(replica, other_id, other_secret, next(_addresses))).status_code == 200


async def test_failed_token_requests_are_limited_per_address_then_released(settings_overrides, school, sessions):
    settings = RegistersSettings(
        **settings_overrides, port=free_port(), token_failure_limit=3, token_failure_window_seconds=2
    )
    client_id, secret = await new_client(sessions, school["urn"])
    address = next(_addresses)
    async with running_service(build_registers, settings) as registers:
        for n in range(3):  # a different unknown client each time: only the address's count grows
            assert (await exchange(registers, f"cl_guess{n}", "x", address)).status_code == 401
        throttled = await exchange(registers, client_id, secret, address)
        assert_throttled(throttled, 2)
        assert (await exchange(registers, client_id, secret, next(_addresses))).status_code == 200
        await asyncio.sleep(int(throttled.headers["Retry-After"]))
        released = await exchange(registers, client_id, secret, address)
        assert released.status_code == 200, released.text


async def test_api_client_secrets_are_stored_only_as_argon2_hashes(school, sessions):
    issued = dict([await new_client(sessions, school["urn"]) for _ in range(2)])
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT client_id, secret_hash, t::text AS everything FROM registers.api_clients t")
            )
        ).all()
    stored = {row.client_id: row for row in rows if row.client_id in issued}
    assert set(stored) == set(issued)
    for client_id, secret in issued.items():
        assert stored[client_id].secret_hash.startswith("$argon2id$")
        assert PasswordHasher().verify(stored[client_id].secret_hash, secret)
        assert not [row.client_id for row in rows if secret in row.everything]  # in no column of any client


async def stored_secrets(sessions, subscription_id: int) -> tuple[str, str | None]:
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT secret, previous_secret FROM notifications.subscriptions WHERE id = :id"),
                {"id": subscription_id},
            )
        ).one()
    return row.secret, row.previous_secret


async def test_webhook_secrets_are_stored_encrypted_and_deliveries_still_verify(
    registers, notifications, cme, token, new_urn, new_upn, sessions
):
    box = SecretBox(notifications.settings.secrets_key)
    school = await new_school(registers, cme, token, new_urn, la_code="865")  # an LA of its own: only these events
    system = token(Role.LA_SYSTEM, la_code="865")
    async with receiver() as hooks:
        async with notifications.client(system) as http:
            created = await post(http, "/v1/subscriptions", {"url": hooks.url, "event_types": ["roll.*"]}, 201)
        secret = created["secret"]
        stored, _ = await stored_secrets(sessions, created["id"])
        assert secret not in stored and "whsec_" not in stored and box.decrypt(stored) == secret

        async with cme.client(school["token"]) as mis:
            await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(new_upn()), 201)
        await eventually(lambda: _count(hooks, 1), "the first delivery")
        verify(hooks.received[0][1], hooks.received[0][0], secret)

        async with notifications.client(system) as http:
            rotated = await post(http, f"/v1/subscriptions/{created['id']}/secret/rotate", {}, 200)
        current, previous = await stored_secrets(sessions, created["id"])
        for plain, kept in ((rotated["secret"], current), (secret, previous)):
            assert plain not in kept and "whsec_" not in kept and box.decrypt(kept) == plain
        async with cme.client(school["token"]) as mis:
            await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(new_upn()), 201)
        await eventually(lambda: _count(hooks, 2), "the delivery after rotation")
        body, headers = hooks.received[1][1], hooks.received[1][0]
        verify(body, headers, rotated["secret"])
        verify(body, headers, secret)  # the old secret signs too until it expires


CLI = Path(sys.executable).parent / "attendance"


async def test_migration_encrypts_stored_secrets_and_keys_rotate(postgres_admin_url, monkeypatch):
    """Subscriptions written in clear before the change are encrypted by the migration; a new key
    put in front re-encrypts them (`attendance notifications reencrypt-secrets`); the downgrade
    gives the clear secrets back."""
    name = f"attendance_secrets_{os.getpid()}_{free_port()}"
    await ensure_database(postgres_admin_url, name)
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    old_key, new = new_key(), new_key()
    plain = {1: (new_secret(), new_secret()), 2: (new_secret(), None)}
    engine = make_engine(url, pool_size=1)

    async def stored() -> dict[int, tuple[str | None, str | None]]:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, secret, previous_secret FROM notifications.subscriptions"))
            return {row.id: (row.secret, row.previous_secret) for row in rows}

    def decrypted(box: SecretBox, rows: dict[int, tuple[str | None, str | None]]) -> dict[int, tuple[Any, Any]]:
        return {id_: tuple(box.decrypt(s) if s else None for s in pair) for id_, pair in rows.items()}

    try:
        monkeypatch.setenv("SECRETS_KEY", old_key)
        await asyncio.to_thread(upgrade, "notifications", url, "0003")
        async with engine.begin() as conn:
            for id_, (secret, previous) in plain.items():
                await conn.execute(
                    text(
                        "INSERT INTO notifications.subscriptions (id, la_code, channel, url, event_types, urns, "
                        "description, secret, previous_secret, created_at, created_by) VALUES (:id, '870', "
                        "'webhook', 'https://example.org/hook', '{roll.*}', '{}', '', :secret, :previous, now(), 't')"
                    ),
                    {"id": id_, "secret": secret, "previous": previous},
                )
        await asyncio.to_thread(upgrade, "notifications", url)
        encrypted = await stored()
        assert not any(s and s.startswith("whsec_") for pair in encrypted.values() for s in pair)
        assert decrypted(SecretBox(old_key), encrypted) == plain

        env = {**os.environ, "DATABASE_URL": url, "SECRETS_KEY": f"{new},{old_key}"}
        process = await asyncio.create_subprocess_exec(
            str(CLI), "notifications", "reencrypt-secrets", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0 and out.decode() == "re-encrypted the signing secrets of 2 subscriptions\n"
        assert decrypted(SecretBox(new), await stored()) == plain  # the old key is no longer needed

        monkeypatch.setenv("SECRETS_KEY", new)
        await asyncio.to_thread(command.downgrade, alembic_config("notifications", url), "0003")
        assert await stored() == plain
    finally:
        await engine.dispose()
        await drop_database(postgres_admin_url, name)
