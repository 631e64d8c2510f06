"""The `attendance` ops CLI, run as the real console script against the test database and broker,
with its tokens checked against the running registers service.

Subprocesses run through asyncio so the session event loop (which serves the in-process
registers service the CLI's tokens are used against) keeps running.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.registers.service import retention_cutoff
from shared.auth import Role
from shared.db import make_engine
from shared.events import REGISTERS_TOPIC, dead_letter_topic
from shared.kafka import ensure_topics
from shared.outbox import encode
from shared.simulation.generate import LaConfig, generate, recent_term
from shared.simulation.plan import Register
from shared.time import school_today
from tests.conftest import OTHER_LA, TEST_JWT_SECRET, TEST_LA, read_events
from tests.integration.test_outbox_and_consumers import (
    EffectsHandler,
    downstream_schema,
    make_runner,
    mark_event,
    publish,
    read_topic,
    running,
    unique,
    wait_until,
)

CLI = Path(sys.executable).parent / "attendance"
DAY = "2025-11-03"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def cli_env(database_url, broker, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET"}}
    return env | {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "JWT_SECRET": TEST_JWT_SECRET,
        "ATTENDANCE_DATA_DIR": str(tmp_path),
    }


@pytest.fixture
def attendance(cli_env):
    async def run(*args: str) -> Run:
        assert CLI.exists(), f"console script not installed at {CLI}"
        process = await asyncio.create_subprocess_exec(
            str(CLI), *args, env=cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        return Run(process.returncode, out.decode(), err.decode())

    return run


def line_for(output: str, prefix: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(prefix)]
    return line


async def test_school_add_list_update(registers, attendance, token, new_urn):
    urn, name = new_urn(), "Brookside Primary"
    added = await attendance("school", "add", "--urn", urn, "--la-code", TEST_LA, "--name", name)
    assert (added.code, added.out) == (0, f"added {urn} {name} (LA {TEST_LA})\n"), added.err

    listed = await attendance("school", "list")
    assert listed.code == 0, listed.err
    row = line_for(listed.out, urn)
    assert f"LA {TEST_LA}" in row and "primary" in row and row.endswith(name)
    async with registers.client(token(Role.OPS)) as ops:
        stored = (await ops.get(f"/v1/schools/{urn}")).json()
        assert (stored["name"], stored["la_code"], stored["phase"]) == (name, TEST_LA, "primary")

    updated = await attendance("school", "update", "--urn", urn, "--name", "Brookside Academy", "--independent")
    assert (updated.code, updated.out) == (0, f"updated {urn} Brookside Academy (LA {TEST_LA})\n"), updated.err
    async with registers.client(token(Role.OPS)) as ops:
        stored = (await ops.get(f"/v1/schools/{urn}")).json()
        assert (stored["name"], stored["independent"], stored["la_code"]) == ("Brookside Academy", True, TEST_LA)

    again = await attendance("school", "add", "--urn", urn, "--la-code", TEST_LA, "--name", "Twice")
    assert again.code == 1 and "already registered" in again.err and again.out == ""
    async with registers.client(token(Role.OPS)) as ops:
        assert (await ops.get(f"/v1/schools/{urn}")).json()["name"] == "Brookside Academy"


async def test_school_token_from_the_cli_posts_a_register(registers, attendance, school, new_upn, new_urn, token):
    urn, upn = school["urn"], new_upn()
    issued = await attendance("token", "--role", "school", "--urn", urn, "--subject", "cli-mis")
    assert issued.code == 0, issued.err
    [jwt_text] = issued.out.split()
    other = new_urn()
    async with registers.client(token(Role.OPS)) as ops:
        created = await ops.post(
            "/v1/schools", json={"urn": other, "name": "Other", "la_code": TEST_LA, "phase": "primary"}
        )
        assert created.status_code == 201
    async with registers.client(jwt_text) as http:
        posted = await http.post(
            f"/v1/schools/{urn}/registers", json={"date": DAY, "session": "AM", "marks": [{"upn": upn, "code": "/"}]}
        )
        assert posted.status_code == 201, posted.text
        stored = (await http.get(f"/v1/schools/{urn}/registers/{DAY}/AM")).json()
        assert [s["client"] for s in stored["submissions"]] == ["cli-mis"]
        assert (await http.get(f"/v1/schools/{other}")).status_code == 403


async def test_la_officer_token_from_the_cli_reads_its_la(registers, attendance, school, new_urn, token):
    other_la = new_urn()
    async with registers.client(token(Role.OPS)) as ops:
        created = await ops.post(
            "/v1/schools", json={"urn": other_la, "name": "Elsewhere", "la_code": OTHER_LA, "phase": "primary"}
        )
        assert created.status_code == 201
    issued = await attendance("token", "--role", "la_officer", "--la-code", TEST_LA)
    assert issued.code == 0, issued.err
    async with registers.client(issued.out.strip()) as http:
        mine = await http.get(f"/v1/schools/{school['urn']}")
        assert mine.status_code == 200 and mine.json()["la_code"] == TEST_LA
        assert (await http.get(f"/v1/schools/{other_la}")).status_code == 403
        refused = await http.post(
            f"/v1/schools/{school['urn']}/registers",
            json={"date": DAY, "session": "AM", "marks": [{"upn": "W801200025001", "code": "/"}]},
        )
        assert refused.status_code == 403


REFUSED_TOKENS = {
    "unregistered-urn": (["--role", "school", "--urn", "999999"], "No school with URN 999999 is registered"),
    "unknown-role": (["--role", "bogus"], "Unknown role 'bogus'"),
}


async def test_token_command_refuses_bad_roles_and_bindings(registers, attendance, token):
    async with registers.client(token(Role.OPS)) as ops:
        assert (await ops.get("/v1/schools/999999")).status_code == 404  # precondition: not registered
    runs = await asyncio.gather(*(attendance("token", *args) for args, _ in REFUSED_TOKENS.values()))
    for (case, (_, message)), run in zip(REFUSED_TOKENS.items(), runs, strict=True):
        assert run.code == 1, f"{case}: exit {run.code}, stdout {run.out!r}"
        assert run.out == "", f"{case}: a token was printed"
        assert message in run.err, f"{case}: {run.err!r}"


async def test_client_create_list_revoke(registers, attendance, school, new_upn):
    urn, name = school["urn"], f"Arbor MIS for {school['urn']}"
    created = await attendance("client", "create", "--name", name, "--role", "school", "--urn", urn)
    assert created.code == 0, created.err
    client_id = re.search(r"^client_id:\s+(cl_[0-9a-f]{16})$", created.out, re.M).group(1)
    secret = re.search(r"^client_secret:\s+(\S+)$", created.out, re.M).group(1)
    assert len(secret) >= 32

    listed = await attendance("client", "list")
    row = line_for(listed.out, client_id)
    assert "school" in row and urn in row and "active" in row and row.endswith(name)
    assert secret not in listed.out

    async with registers.client() as http:
        granted = await http.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
    assert granted.status_code == 200, granted.text
    async with registers.client(granted.json()["access_token"]) as http:
        posted = await http.post(
            f"/v1/schools/{urn}/registers",
            json={"date": DAY, "session": "PM", "marks": [{"upn": new_upn(), "code": "\\"}]},
        )
        assert posted.status_code == 201, posted.text

    revoked = await attendance("client", "revoke", client_id)
    assert (revoked.code, revoked.out) == (0, f"revoked {client_id} ({name})\n"), revoked.err
    async with registers.client() as http:
        refused = await http.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
    assert refused.status_code == 401 and refused.json()["type"] == "/problems/invalid-client"


async def test_registers_purge_deletes_entries_beyond_retention(
    registers, attendance, school, new_upn, token, database_url
):
    urn, upn = school["urn"], new_upn()
    cutoff = retention_cutoff(school_today(), 6)
    old = cutoff - timedelta(days=10)
    async with registers.client(school["token"]) as http:
        recent = await http.post(
            f"/v1/schools/{urn}/registers", json={"date": DAY, "session": "AM", "marks": [{"upn": upn, "code": "/"}]}
        )
        assert recent.status_code == 201, recent.text
    # entries older than the retention period cannot be posted any more: plant them as history
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for session_name in ("AM", "PM"):
                await conn.execute(
                    text(
                        "INSERT INTO registers.marks (urn, date, session, upn, code, recorded_at, recorded_by, "
                        "change_version) VALUES (:urn, :date, :session, :upn, 'H', now(), 'mis-import', 0)"
                    ),
                    {"urn": urn, "date": old, "session": session_name, "upn": upn},
                )
    finally:
        await engine.dispose()
    async with registers.client(token(Role.OPS)) as ops:
        assert (await ops.get(f"/v1/schools/{urn}/registers/{old}/AM")).status_code == 200

    purged = await attendance("registers", "purge", "--run-by", "cli-test")
    assert purged.code == 0, purged.err
    summary = re.fullmatch(
        r"purged entries dated before (\S+): (\d+) marks, (\d+) amendments, (\d+) submissions "
        r"\(run by cli-test at \d{4}-\d\d-\d\d \d\d:\d\d UTC\)\n",
        purged.out,
    )
    assert summary, purged.out
    assert summary.group(1) == cutoff.isoformat() and int(summary.group(2)) >= 2

    async with registers.client(token(Role.OPS)) as ops:
        for session_name in ("AM", "PM"):
            gone = await ops.get(f"/v1/schools/{urn}/registers/{old}/{session_name}")
            assert gone.status_code == 404 and gone.json()["type"] == "/problems/register-not-found"
        kept = await ops.get(f"/v1/schools/{urn}/registers/{DAY}/AM")
        assert [m["upn"] for m in kept.json()["marks"]] == [upn]

    events = await read_events(
        registers.settings.kafka_bootstrap_servers,
        REGISTERS_TOPIC,
        lambda e: e.type == "attendance.marks.purged" and e.data.urn == urn,
        1,
    )
    assert [(e.data.marks_deleted, e.data.before, e.data.la_code) for e in events] == [(2, cutoff, TEST_LA)]

    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            audit: Any = (
                await conn.execute(
                    text("SELECT cutoff, marks_deleted FROM registers.retention_purges WHERE run_by = 'cli-test'")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(row.cutoff, row.marks_deleted) for row in audit] == [(cutoff, int(summary.group(2)))]


async def test_dlq_list_and_replay_bring_a_dead_letter_back(attendance, database_url, broker):
    """A consumer dead-letters an event it cannot apply. `dlq list` shows where it failed, which
    consumer, the event and the error, never its content. Once the cause is fixed, `dlq replay`
    publishes it again (same key, same value) and the consumer applies it, once; the event it had
    applied is not applied again, and a second replay finds nothing left."""
    bootstrap = broker.bootstrap_servers
    missing = await attendance("dlq", "list", "no.such.topic")
    assert missing.code == 1 and "No topic no.such.topic.dlq" in missing.err and missing.out == ""

    topic = unique("test.dlq-cli.")
    await ensure_topics(bootstrap, [topic, dead_letter_topic(topic)], 4)
    good, poison = mark_event("UPN-DLQ-GOOD"), mark_event("UPN-DLQ-POISON")
    poison_value = encode(poison)
    async with downstream_schema(database_url) as db:
        handler = EffectsHandler(db.schema, poison_upn="UPN-DLQ-POISON")
        runner = make_runner(db, bootstrap, handler, [topic])
        async with running(runner):
            sent = await publish(bootstrap, topic, [(b"UPN-DLQ-GOOD", encode(good)), (b"UPN-DLQ-POISON", poison_value)])
            await wait_until(lambda: read_topic(bootstrap, dead_letter_topic(topic), idle=0.3), 30, "the dead letter")

            listed = await attendance("dlq", "list", topic)
            assert listed.code == 0, listed.err
            header, line = listed.out.splitlines()
            assert header == f"{topic}.dlq: 1 dead letter(s), 1 not replayed"
            assert f"from {topic} {sent[1].partition}:{sent[1].offset}  consumer {runner.name}" in line
            assert f"event {poison.id} attendance.mark.recorded  not replayed  " in line
            assert line.endswith(repr(ValueError("poison pupil UPN-DLQ-POISON")))
            assert poison.data.link not in listed.out  # the event's content stays on the bus

            handler.poison_upn = None  # the cause is fixed
            replayed = await attendance("dlq", "replay", topic)
            assert (replayed.code, replayed.out) == (0, f"replayed 1 dead letter(s) to {topic}\n"), replayed.err

            async def poison_applied() -> bool:
                return poison.id in await db.effects()

            await wait_until(poison_applied, 30, "the replayed event to be applied")
            again = await attendance("dlq", "replay", f"{topic}.dlq")
            assert (again.code, again.out) == (0, f"nothing to replay for {topic}\n"), again.err
            relisted = await attendance("dlq", "list", topic)
            assert relisted.out.splitlines()[0] == f"{topic}.dlq: 1 dead letter(s), 0 not replayed"
            assert "  replayed  " in relisted.out

        assert await db.effects() == {good.id: 1, poison.id: 1}
        assert sorted(await db.applied(runner.name)) == sorted([good.id, poison.id])
    copies = [r for r in await read_topic(bootstrap, topic) if r.value == poison_value]
    assert [(r.key, r.partition) for r in copies] == [(b"UPN-DLQ-POISON", sent[1].partition)] * 2


async def test_simulate_plays_the_generated_term(registers, thresholds, cme, attendance, new_urn, token):
    urn = new_urn()
    args = ["simulate", "--seed", "5", "--schools", "1", "--pupils", "6", "--weeks", "1", "--la-code", "872"]
    args += ["--first-urn", urn, "--concurrency", "2"]
    for service in (registers, thresholds, cme):
        args += ["--url", f"{service.settings.service_name}={service.base_url}"]
    played = await attendance(*args)
    assert played.code == 0, played.err

    today = school_today()
    term = recent_term(today, 1, calendar_until=today + timedelta(days=366))
    plan = generate(LaConfig(term, (urn,), "872", pupils_per_school=6, seed=5))
    posted = [action for action in plan.actions() if isinstance(action, Register)]
    marks = sum(len(register.upns) for register in posted)
    assert line_for(played.out, "registers:") == f"registers:   {len(posted)} ({marks} marks)"
    assert line_for(played.out, "admissions:") == f"admissions:  {len(plan.pupils)}"
    last = posted[-1]
    async with registers.client(token(Role.OPS)) as ops:
        stored = (await ops.get(f"/v1/schools/{urn}/registers/{last.date}/{last.session}")).json()
    assert sorted((m["upn"], m["code"]) for m in stored["marks"]) == sorted(zip(last.upns, last.codes, strict=True))

    again = await attendance(*args)
    assert again.code == 1 and f"school {urn} is already registered" in again.err and "another --seed" in again.err
