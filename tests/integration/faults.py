"""What the fault tests share: a platform of their own (database and broker), services run as OS
processes (`attendance serve`) that a test can SIGKILL, and a way to kill a consumer while it is
inside a batch.

A consumer is caught mid-batch deterministically: the test holds an exclusive lock on a table the
service's handler writes, waits until one of the service's consumers is blocked on it inside a
batch transaction (one that has already recorded the batch's event ids), and kills the process
owning that database connection. The batch's transaction can then only roll back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil
from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.casework.service import OPENING_ALERTS
from services.cme.service import session_number
from services.thresholds.service import counts_of
from shared.asyncapi import DELIVERABLE_TOPICS
from shared.auth import Role
from shared.cli import SERVICES
from shared.devstack import drop_database, ensure_database, free_port
from shared.domain.calendar import SchoolCalendar, academic_year
from shared.domain.codes import code_for
from shared.domain.thresholds import HALTON_PRESET, SessionMark, evaluate
from shared.events import EVENT_TYPES, AlertRaised, CloudEvent, parse_event
from shared.migrations import upgrade
from shared.outbox import _lease_key
from shared.settings import REPO_ROOT
from tests.conftest import TEST_JWT_SECRET, start_service
from tests.integration.test_outbox_and_consumers import read_topic
from tests.integration.test_thresholds import DAYS, present

# A table each consuming service's batch writes first: the runner's record of the batch's event ids,
# or (thresholds keeps none) the stored mark versions.
BATCH_TABLES = {
    "thresholds": "mark_versions",
    "casework": "applied_events",
    "cme": "applied_events",
    "notifications": "applied_events",
}

# A table each consuming service's handler writes after its batch table: a consumer blocked on it is
# in the middle of applying a batch.
EFFECT_TABLES = {
    "thresholds": "enrolment_totals",  # every batch of new marks
    "casework": "case_transitions",  # every alert that opens a case
    "cme": "admissions",  # every batch of marks (joiners, unmarked flags)
    "notifications": "deliveries",  # every event a subscription wants
}


def dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def database_port(url: str) -> int:
    return urlsplit(dsn(url)).port or 5432


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def isolated_database(admin_url: str, services: Iterable[str] = SERVICES) -> AsyncIterator[str]:
    """A database of its own, migrated for `services`, dropped afterwards."""
    name = f"attendance_faults_{uuid.uuid4().hex[:10]}"
    await ensure_database(admin_url, name)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        for service in services:
            await asyncio.to_thread(upgrade, service, url)
        yield url
    finally:
        await drop_database(admin_url, name)


@dataclass
class ServiceProcess:
    """One `attendance serve` process (with `--workers`, a uvicorn supervisor and its workers)."""

    service: str
    port: int
    process: asyncio.subprocess.Process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    def pids(self) -> list[int]:
        """The process and its live workers."""
        return [self.process.pid, *self.workers()] if self.process.returncode is None else []

    def workers(self) -> list[int]:
        """The uvicorn workers (with `--workers`): the children but multiprocessing's resource tracker."""
        with contextlib.suppress(psutil.Error):
            return [
                child.pid
                for child in psutil.Process(self.process.pid).children()
                if "resource_tracker" not in " ".join(child.cmdline())
            ]
        return []

    def owner_of(self, client_port: int, db_port: int) -> int | None:
        """Which of this service's processes holds the database connection from `client_port`."""
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                for conn in psutil.Process(pid).net_connections("tcp"):
                    if conn.laddr.port == client_port and conn.raddr and conn.raddr.port == db_port:
                        return pid
        return None

    async def wait_healthy(self, timeout: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.service} on {self.port} exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise AssertionError(f"{self.service} on {self.port} did not become healthy in {timeout} s")
                await asyncio.sleep(0.2)

    async def kill(self, pid: int | None = None) -> None:
        """SIGKILL the process (and its workers), or one worker: no shutdown, no commit, no leaving
        the consumer group. A killed worker is replaced by the uvicorn supervisor."""
        if pid is not None and pid != self.process.pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker = psutil.Process(pid)
                worker.kill()
                await asyncio.to_thread(worker.wait, 10)
            return
        for each in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                await self.kill()


@dataclass
class Platform:
    """Services run as separate OS processes against one database and one broker."""

    database_url: str
    bootstrap: str
    log_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)  # every service's environment
    processes: list[ServiceProcess] = field(default_factory=list)

    def running(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.service == service and p.process.returncode is None]

    async def start(self, service: str, *, workers: int = 1, **settings: Any) -> ServiceProcess:
        """`attendance serve SERVICE --port N --workers W`, configured through the environment as in
        production; returns once it answers /healthz."""
        port = free_port()
        environment = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC_PARTITIONS": "4",
            "JWT_SECRET": TEST_JWT_SECRET,
            "LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",  # a killed process's last log lines are on disk
            **{name.upper(): str(value) for name, value in {**self.settings, **settings}.items()},
        }
        log = (self.log_dir / f"{service}-{port}.log").open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "shared.cli", "serve", service, "--port", str(port), "--workers", str(workers)),
                env=environment,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        started = ServiceProcess(service, port, process)
        self.processes.append(started)
        await started.wait_healthy()
        return started

    async def scale(self, service: str, count: int, **settings: Any) -> list[ServiceProcess]:
        """Stop or start processes of `service` until `count` run."""
        running = self.running(service)
        await asyncio.gather(*(p.stop() for p in running[count:]))
        await asyncio.gather(*(self.start(service, **settings) for _ in range(count - len(running))))
        return self.running(service)

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


async def relay_in_every_worker(database_url: str, schema: str, process: ServiceProcess) -> bool:
    """Whether every worker of the process runs the outbox relay of `schema`: one holds the lease,
    the others stand by (their relay's connection last asked for the lease and was refused)."""
    db_port = database_port(database_url)
    rows = await fetch(
        database_url,
        "SELECT a.client_port, l.pid IS NOT NULL AS holds FROM pg_stat_activity a LEFT JOIN pg_locks l "
        "ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1 "
        "AND l.objid::text::bigint = $1 "
        "WHERE a.datname = current_database() AND (l.pid IS NOT NULL OR a.query = 'SELECT pg_try_advisory_lock($1)')",
        _lease_key(schema),
    )
    holders: set[int] = set()
    standing_by: set[int] = set()
    for row in rows:
        pid = process.owner_of(row["client_port"], db_port)
        if pid is not None:
            (holders if row["holds"] else standing_by).add(pid)
    return len(holders) == 1 and holders | standing_by == set(process.workers())


class Hold:
    """An exclusive lock on the table a service's handler writes, and a view of who waits for it."""

    def __init__(self, database_url: str, service: str) -> None:
        self.database_url = database_url
        self.service = service
        self.table = f"{service}.{EFFECT_TABLES[service]}"
        self.db_port = database_port(database_url)

    async def blocked(
        self, processes: list[ServiceProcess], besides: Iterable[int] = (), timeout: float = 60.0
    ) -> Blocked:
        """Wait until the consumer of one of the processes (not one of `besides`) is blocked on the
        table inside a batch: in a transaction that holds the lock its batch table's first write took."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rows = await self.watcher.fetch(
                "SELECT a.client_port, a.backend_xid::text::bigint AS xid FROM pg_locks w "
                "JOIN pg_stat_activity a ON a.pid = w.pid "
                "JOIN pg_locks c ON c.pid = w.pid AND c.granted AND c.relation = $2::regclass "
                "WHERE w.relation = $1::regclass AND NOT w.granted",
                self.table,
                f"{self.service}.{BATCH_TABLES[self.service]}",
            )
            for row in rows:
                for process in processes:
                    pid = process.owner_of(row["client_port"], self.db_port)
                    if pid is not None and pid not in besides:
                        return Blocked(process, pid, row["xid"])
            if loop.time() > deadline:
                raise TimeoutError(f"no {self.service} consumer reached {self.table} within {timeout} s")
            await asyncio.sleep(0.02)

    async def outcome(self, blocked: Blocked) -> str:
        """What became of a blocked batch's transaction (once the lock is released): committed or
        aborted. The xid is 32 bits; this server's epoch is assumed."""
        for _ in range(100):
            status = await self.watcher.fetchval(
                "SELECT pg_xact_status(((pg_current_xact_id()::text::bigint >> 32 << 32) + $1)::text::xid8)",
                blocked.xid,
            )
            if status != "in progress":  # a killed client's backend notices when it next writes
                return status
            await asyncio.sleep(0.1)
        return status

    async def __aenter__(self) -> Hold:
        self.holder = await asyncpg.connect(dsn(self.database_url))
        self.watcher = await asyncpg.connect(dsn(self.database_url))
        self.lock = self.holder.transaction()
        await self.lock.start()
        await self.holder.execute(f"LOCK TABLE {self.table} IN EXCLUSIVE MODE")
        return self

    async def release(self) -> None:
        if self.holder is not None:
            await self.lock.rollback()
            await self.holder.close()
            self.holder = None

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
        await self.watcher.close()


@dataclass(frozen=True)
class Blocked:
    process: ServiceProcess
    pid: int  # the process, or the uvicorn worker, whose consumer is blocked
    xid: int  # its batch's transaction


async def kill_mid_batch(database_url: str, service: str, processes: list[ServiceProcess]) -> tuple[Blocked, str]:
    """SIGKILL the process (of `processes`) whose consumer is inside a batch of `service`'s events;
    return it and what PostgreSQL made of the batch's transaction. The caller keeps events flowing.
    Other replicas may block on the table meanwhile; they carry on once it is released."""
    async with Hold(database_url, service) as hold:
        blocked = await hold.blocked(processes)
        await blocked.process.kill(blocked.pid)
        await hold.release()
        return blocked, await hold.outcome(blocked)


# ---------------------------------------------------------------------------------- a subscriber


class Subscriber:
    """An LA system's webhook endpoint on a fixed port that records when each delivery arrived.
    Until `start` (and after `stop`) nothing listens: connections are refused."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[float, str, dict[str, Any]]] = []  # (loop time, webhook-id, event)
        self.app = FastAPI()
        self._server: Any = None

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            event = json.loads(await request.body())
            self.received.append((asyncio.get_running_loop().time(), request.headers["webhook-id"], event))
            return Response(status_code=204)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await start_service(self.app, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            server, task = self._server
            server.should_exit = True
            await task
            self._server = None

    def first_arrivals(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """webhook-id -> when it first arrived and the event: what a receiver deduplicating by
        webhook-id (as Standard Webhooks asks) acts on."""
        first: dict[str, tuple[float, dict[str, Any]]] = {}
        for at, webhook_id, event in self.received:
            first.setdefault(webhook_id, (at, event))
        return first


async def subscribe_to_everything(notifications: Any, token: Any, la_code: str, url: str) -> int:
    """A webhook subscription of the LA's to every event type it can receive."""
    async with notifications.client(token(Role.LA_SYSTEM, la_code=la_code)) as http:
        response = await http.post(
            "/v1/subscriptions",
            json={"url": url, "event_types": ["attendance.alert.*", "casework.*", "roll.*", "cme.*"]},
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]


# ---------------------------------------------------------------------------------- a fortnight


SESSIONS = [(day, session) for day in DAYS for session in ("AM", "PM")]


def mark_of(kind: str, day: int, session: str) -> str:
    """How a kind of pupil is marked on the `day`-th school day. Every alert a kind raises stays
    raised: each alert is raised once and never cleared, whichever batches the marks arrive in.

    late: persistent lateness after ten sessions; ill: support map steps, PA, SA; truant_from_k:
    support map steps, penalty notice threshold, PA, SA, and from day 0 ten days of continuous
    unauthorised absence (a CME case)."""
    if kind == "late":
        return "L"
    if kind == "ill":
        return "I"
    if kind.startswith("truant_from_") and day >= int(kind.removeprefix("truant_from_")):
        return "O"
    return present(session)


CLASS = ["present"] * 6 + ["late"] * 2 + ["ill"] * 2 + [f"truant_from_{k}" for k in range(5) for _ in range(2)]


@dataclass
class Term:
    """Schools of one LA (with the Halton policy, whose support map raises alerts all through the
    fortnight), a class of pupils each, and every register posted so far."""

    la_code: str
    urns: list[str]
    kinds: dict[tuple[str, str], str]  # (URN, UPN) -> kind
    marks: dict[tuple[str, str], dict[tuple[date, str], str]] = field(default_factory=dict)
    posted: int = 0  # sessions posted for every school

    def register(self, urn: str, index: int) -> dict[str, Any]:
        day, session = SESSIONS[index]
        day_index = DAYS.index(day)
        marks = [
            {"upn": upn, "code": mark_of(kind, day_index, session)}
            for (school, upn), kind in self.kinds.items()
            if school == urn
        ]
        return {"date": day.isoformat(), "session": session, "marks": marks}

    def record(self, urn: str, body: dict[str, Any]) -> None:
        key = (date.fromisoformat(body["date"]), body["session"])
        for mark in body["marks"]:
            self.marks.setdefault((urn, mark["upn"]), {})[key] = mark["code"]


async def open_term(registers: Any, thresholds: Any, token: Any, la_code: str, urns: list[str], new_upn: Any) -> Term:
    ops = token(Role.OPS)
    async with registers.client(ops) as http:
        for urn in urns:
            body = {"urn": urn, "name": f"School {urn}", "la_code": la_code, "phase": "primary"}
            response = await http.post("/v1/schools", json=body)
            assert response.status_code == 201, response.text
    async with thresholds.client(ops) as http:
        response = await http.put(f"/v1/policies/{la_code}", json={"preset": "halton", "reason": "fault tests"})
        assert response.status_code == 200, response.text
    return Term(la_code, urns, {(urn, new_upn()): kind for urn in urns for kind in CLASS})


async def post_registers(registers: Any, term: Term, token: Any, sessions: range, pause: float = 0.05) -> None:
    """Post the schools' registers of `sessions` (indexes into SESSIONS), a school at a time."""
    for index in sessions:
        for urn in term.urns:
            body = term.register(urn, index)
            async with registers.client(token(Role.SCHOOL, urns={urn})) as http:
                response = await http.post(f"/v1/schools/{urn}/registers", json=body)
            assert response.status_code == 201, response.text
            term.record(urn, body)
        term.posted = index + 1
        await asyncio.sleep(pause)


# ---------------------------------------------------------------------------------- the checks

TOTALS = (
    "possible_sessions",
    "present_sessions",
    "approved_activity_sessions",
    "authorised_absence_sessions",
    "unauthorised_absence_sessions",
    "illness_sessions",
    "late_sessions",
)


def differences(what: str, live: Any, expected: Any) -> list[str]:
    if live == expected:
        return []
    if isinstance(live, dict) and isinstance(expected, dict):
        keys = sorted(set(live) | set(expected), key=repr)
        wrong = [(k, live.get(k), expected.get(k)) for k in keys if live.get(k) != expected.get(k)]
        return [f"{what}: {len(wrong)} differ, e.g. (key, live, expected) {wrong[:3]}"]
    if isinstance(live, set) and isinstance(expected, set):
        return [f"{what}: unexpected {sorted(live - expected)[:3]}, missing {sorted(expected - live)[:3]}"]
    return [f"{what}: live {live!r}, expected {expected!r}"]


async def published(bootstrap: str, la_code: str, topics: Iterable[str] = DELIVERABLE_TOPICS) -> list[CloudEvent]:
    """The LA's events on the topics, each once (a relay may publish an event twice: consumers
    deduplicate by id), in topic order. Fails if an effect was published under two event ids."""
    reads = await asyncio.gather(*(read_topic(bootstrap, topic) for topic in topics))
    events: dict[uuid.UUID, CloudEvent] = {}
    for records in reads:
        for record in records:
            event = parse_event(record.value)
            if getattr(event.data, "la_code", None) == la_code:
                events.setdefault(event.id, event)
    ids_by_effect = defaultdict(set)
    for event in events.values():
        ids_by_effect[(event.type, event.data.model_dump_json())].add(event.id)
    twice = [effect for effect, ids in ids_by_effect.items() if len(ids) > 1]
    assert not twice, f"effects published under two event ids: {twice[:3]}"
    return list(events.values())


def expected_alerts(term: Term, calendars: dict[str, SchoolCalendar]) -> set[tuple[str, str, str, str]]:
    """Every alert the posted marks raise, evaluated from scratch."""
    alerts = set()
    for (urn, upn), sessions in term.marks.items():
        marks = []
        for (day, session), code in sessions.items():
            entry = code_for(code, day)
            marks.append(SessionMark(day, session, code, entry.category, entry.possible))
        rules = HALTON_PRESET.rules_for_school(urn)
        year = academic_year(max(sessions)[0])
        alerts |= {(urn, upn, f.rule_id, f.step) for f in evaluate(rules, marks, calendars[urn], year)}
    return alerts


async def thresholds_problems(url: str, term: Term, events: list[CloudEvent]) -> list[str]:
    """Totals and alerts equal a recomputation from the posted marks; each alert raised once, on
    the topic once."""
    expected_totals: dict[tuple[str, str, int], list[int]] = {}
    for (urn, upn), sessions in term.marks.items():
        for (day, _), code in sessions.items():
            entry = code_for(code, day)
            total = expected_totals.setdefault((urn, upn, academic_year(day)), [0] * len(TOTALS))
            for i, n in enumerate(counts_of(code, entry.category.value, entry.possible)):
                total[i] += n
    rows = await fetch(url, "SELECT * FROM thresholds.enrolment_totals WHERE urn = ANY($1)", term.urns)
    live_totals = {(r["urn"], r["upn"], r["academic_year"]): [r[c] for c in TOTALS] for r in rows}
    problems = differences("thresholds totals", live_totals, expected_totals)

    schools = await fetch(url, "SELECT urn, calendar FROM thresholds.schools WHERE urn = ANY($1)", term.urns)
    calendars = {r["urn"]: SchoolCalendar.from_dict(json.loads(r["calendar"])) for r in schools}
    alerts = await fetch(
        url, "SELECT id, urn, upn, rule_id, step, status FROM thresholds.alerts WHERE urn = ANY($1)", term.urns
    )
    raised = Counter((a["urn"], a["upn"], a["rule_id"], a["step"]) for a in alerts if a["status"] == "raised")
    problems += differences("alerts raised more than once", {k for k, n in raised.items() if n > 1}, set())
    problems += differences("raised alerts", set(raised), expected_alerts(term, calendars))
    problems += differences("alerts cleared", {a["id"] for a in alerts if a["status"] != "raised"}, set())
    raised_events = Counter(e.data.alert_id for e in events if isinstance(e.data, AlertRaised) and _in_term(term, e))
    problems += differences("AlertRaised events per alert", dict(raised_events), {a["id"]: 1 for a in alerts})
    return problems


def _in_term(term: Term, event: CloudEvent) -> bool:
    return getattr(event.data, "urn", None) in term.urns


async def casework_problems(url: str, term: Term, events: list[CloudEvent]) -> list[str]:
    """Cases equal a replay of the alerts in topic order: the first opening alert of a pupil opens
    one case, every later alert is one note on it."""
    opened: dict[tuple[str, str], int] = {}
    notes: Counter[tuple[str, str, int]] = Counter()
    for event in events:
        alert = event.data
        if not isinstance(alert, AlertRaised) or not _in_term(term, event):
            continue
        pupil = (alert.urn, alert.upn)
        if pupil in opened:
            notes[(*pupil, alert.alert_id)] += 1
        elif alert.step in OPENING_ALERTS.get(alert.rule_id, ()):
            opened[pupil] = alert.alert_id
    cases = await fetch(
        url,
        "SELECT c.urn, c.upn, t.alert_id FROM casework.case_transitions t JOIN casework.cases c ON c.id = t.case_id "
        "WHERE t.event = 'open' AND c.urn = ANY($1)",
        term.urns,
    )
    live_opened = Counter((c["urn"], c["upn"]) for c in cases)
    problems = differences("cases per pupil", dict(live_opened), dict.fromkeys(opened, 1))
    problems += differences("opening alerts", {(c["urn"], c["upn"]): c["alert_id"] for c in cases}, opened)
    rows = await fetch(
        url,
        "SELECT c.urn, c.upn, a.details->>'text' AS text FROM casework.case_actions a "
        "JOIN casework.cases c ON c.id = a.case_id WHERE a.kind = 'note' AND a.recorded_by = 'system' "
        "AND c.urn = ANY($1)",
        term.urns,
    )
    live_notes = Counter((r["urn"], r["upn"], int(r["text"].split(":")[0].removeprefix("Alert "))) for r in rows)
    return problems + differences("alert notes", dict(live_notes), dict(notes))


async def cme_problems(url: str, term: Term, events: list[CloudEvent]) -> list[str]:
    """One detected admission (with one clock) per pupil marked; first and last marked sessions
    and the school's sessions as posted; a CME case for each ten-day run of truancy."""
    admissions = await fetch(
        url,
        "SELECT a.urn, a.upn, a.source, a.first_mark_on, count(k.id) AS clocks FROM cme.admissions a "
        "LEFT JOIN cme.notification_clocks k ON k.admission_id = a.id AND k.kind = 'addition' "
        "WHERE a.urn = ANY($1) GROUP BY a.id",
        term.urns,
    )
    problems = differences(
        "admissions",
        Counter((a["urn"], a["upn"], a["source"], a["first_mark_on"], a["clocks"]) for a in admissions),
        Counter((urn, upn, "detected", min(sessions)[0], 1) for (urn, upn), sessions in term.marks.items()),
    )
    first_last = await fetch(url, "SELECT * FROM cme.pupil_marks WHERE urn = ANY($1)", term.urns)
    problems += differences(
        "first and last marked sessions",
        {(r["urn"], r["upn"]): (r["first_session"], r["last_session"]) for r in first_last},
        {
            pupil: (session_number(*min(sessions)), session_number(*max(sessions)))
            for pupil, sessions in term.marks.items()
        },
    )
    taken = await fetch(url, "SELECT urn, session FROM cme.school_sessions WHERE urn = ANY($1)", term.urns)
    problems += differences(
        "registers taken",
        {(r["urn"], r["session"]) for r in taken},
        {(urn, session_number(day, session)) for urn in term.urns for day, session in SESSIONS[: term.posted]},
    )
    cases = await fetch(url, "SELECT urn, upn, reason FROM cme.cases WHERE urn = ANY($1)", term.urns)
    ten_days = {
        (e.data.urn, e.data.upn, e.data.rule_id)
        for e in events
        if isinstance(e.data, AlertRaised) and e.data.rule_id == "continuous_unauthorised_10_days" and _in_term(term, e)
    }
    return problems + differences("CME cases", Counter(tuple(c) for c in cases), Counter(ten_days))


async def notifications_problems(
    url: str, subscription_id: int, subscriber: Subscriber, events: list[CloudEvent], term: Term
) -> list[str]:
    """One delivery per event of the LA, delivered; the subscriber has every event, in order per
    pupil and topic; one stage 1 letter per case opened."""
    deliveries = await fetch(
        url,
        "SELECT event_id, status FROM notifications.deliveries WHERE subscription_id = $1 AND replay_of IS NULL",
        subscription_id,
    )
    problems = differences(
        "deliveries",
        Counter((d["event_id"], d["status"]) for d in deliveries),
        Counter((e.id, "delivered") for e in events),
    )
    arrivals = subscriber.first_arrivals()
    problems += differences("events the subscriber has", set(arrivals), {str(e.id) for e in events})
    topic_order: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        topic_order[(event.subject or "", EVENT_TYPES[event.type].topic)].append(str(event.id))
    arrival_order: dict[tuple[str, str], list[str]] = defaultdict(list)
    for webhook_id, (_, event) in sorted(arrivals.items(), key=lambda item: item[1][0]):
        arrival_order[(event["subject"] or "", EVENT_TYPES[event["type"]].topic)].append(webhook_id)
    problems += differences("order per pupil and topic", dict(arrival_order), dict(topic_order))
    opened = {e.data.case_id for e in events if e.type == "casework.case.opened"}
    letters = await fetch(url, "SELECT case_id FROM notifications.letters WHERE la_code = $1", term.la_code)
    return problems + differences("letters per case", Counter(r["case_id"] for r in letters), Counter(opened))


async def everything_problems(
    database_url: str, bootstrap: str, term: Term, subscription: int, subscriber: Subscriber
) -> list[str]:
    """Every consuming service's state against a recomputation from what was posted."""
    events = await published(bootstrap, term.la_code)
    return [
        *await thresholds_problems(database_url, term, events),
        *await casework_problems(database_url, term, events),
        *await cme_problems(database_url, term, events),
        *await notifications_problems(database_url, subscription, subscriber, events, term),
    ]


async def settled(check: Any, timeout: float, what: str) -> None:
    """Run `check` (returning a list of problems) until it finds none; fail with the last ones."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        problems = await check()
        if not problems:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s:\n" + "\n".join(problems))
        await asyncio.sleep(1)
