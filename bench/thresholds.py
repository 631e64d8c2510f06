"""Thresholds benchmark: how fast the thresholds service applies marks, and how soon a register
that makes a pupil cross a threshold shows up as an alert in its API.

Run with `make bench-thresholds` (or `.venv/bin/python bench/thresholds.py --help`). See
bench/README.md. PostgreSQL, the Tansu broker, the fresh database and the cleanup are
bench/ingest.py's; the registers and thresholds services run as separate processes.

1. Consumer throughput: mark events, built as the registers service builds them, are produced
   straight to attendance.marks.v1; the clock runs from the first produce until the thresholds
   consumer has stored them all (a row per mark in thresholds.mark_versions).
2. Latency: a paced background load of whole-school registers POSTed to the registers service;
   meanwhile probes POST one mark that makes a prepared pupil persistently absent, and poll
   GET /v1/alerts until the alert is there.

A missed target prints FAIL but the exit status stays 0; only a failure to run exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: bench/ is on the path, the repository is not
    sys.path.insert(0, str(REPO))

from bench import ingest  # noqa: E402
from bench.ingest import BenchError, Infra, say  # noqa: E402

MARKS_TOPIC = "attendance.marks.v1"
TARGET_MARKS_PER_S = 30_000
TARGET_P95_MS = 1000
HIGH_ABSENCE_EVERY = 10  # every tenth pupil is often absent: the tail that makes alerts fire
HIGH_ABSENCE_CODES = "INOG"  # illness, no reason yet, unauthorised other, holiday not agreed
BACKGROUND_SCHOOL, PROBE_SCHOOL = 100, 500  # school indexes (URN 700001 + index); phase 1 uses 0..
# What the consumer has applied: a stored version per mark event, a row per school (it keeps no
# applied-event ids: versions make it idempotent).
APPLIED_SQL = "SELECT (SELECT count(*) FROM thresholds.mark_versions) + (SELECT count(*) FROM thresholds.schools)"
Cleanup = list[tuple[str, Callable[[], Any]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/thresholds.py",
        description="Thresholds benchmark: consumer throughput, and register POST -> alert latency under load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--phase", choices=("both", "throughput", "latency"), default="both")
    p.add_argument("--schools", type=int, default=20, help="throughput: schools")
    p.add_argument("--pupils", type=int, default=125, help="throughput: pupils per school")
    p.add_argument("--sessions", type=int, default=40, help="throughput: sessions per pupil (marks = the product)")
    p.add_argument("--apply-timeout", type=float, default=600.0, help="seconds to wait for the consumer")
    add_latency_arguments(p)
    p.add_argument("--workers", type=int, default=1, help="thresholds processes (uvicorn workers), one consumer each")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fast-embedded", action="store_true", help="embedded PostgreSQL only: fsync off")
    p.add_argument("--profile", action="store_true", help="py-spy the thresholds service in the throughput phase")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    args = p.parse_args(argv)
    limits = {"schools": 100, "pupils": 1000, "sessions": 400, "background_rate": 200_000, "register_size": 1000}
    for name, most in (limits | {"history": 200}).items():
        least = int(name != "history")
        if not least <= getattr(args, name) <= most:
            p.error(f"--{name.replace('_', '-')} must be from {least} to {most}")
    return args


def add_latency_arguments(p: argparse.ArgumentParser) -> None:
    """The latency phase's options, shared with bench/end_to_end.py."""
    p.add_argument("--background-rate", type=int, default=5000, help="latency: background marks/s posted")
    p.add_argument("--register-size", type=int, default=1000, help="latency: marks per background register")
    p.add_argument("--history", type=int, default=20, help="latency: sessions per background school posted first")
    p.add_argument("--seconds", type=float, default=30.0, help="latency: how long probes are sent")
    p.add_argument("--probe-interval", type=float, default=0.5, help="latency: seconds between probes")
    p.add_argument("--probe-timeout", type=float, default=30.0, help="latency: give up on one probe after this")


# ---------------------------------------------------------------- workload


def school_slots() -> list[tuple[date, str]]:
    """(day, AM/PM) over the school days of the last academic year from September: in the past and
    in one academic year. No calendar is loaded, so weekdays that are not bank holidays count."""
    from shared.domain.calendar import SchoolCalendar, academic_year, academic_year_bounds

    year = academic_year(date.today()) - 1
    days = SchoolCalendar().school_days_between(date(year, 9, 1), academic_year_bounds(year)[1])
    return [(day, session) for day in days for session in ("AM", "PM")]


def register_marks(upns: list[str], session: str, rng: random.Random) -> list[dict[str, Any]]:
    """bench/ingest.py's mix (≈93% present), and a tail of pupils absent about a third of the time."""
    marks = ingest.simulated_marks(upns, session, rng)
    for i in range(HIGH_ABSENCE_EVERY - 1, len(marks), HIGH_ABSENCE_EVERY):
        if rng.random() < 0.35:
            marks[i] = {"upn": marks[i]["upn"], "code": rng.choice(HIGH_ABSENCE_CODES)}
    return marks


def mark_event_chunks(args: argparse.Namespace) -> list[tuple[list[str], list[bytes]]]:
    """(keys, payloads) per whole-school register, session after session: what the registers
    service writes to its outbox for them (its event builder, per-school change versions)."""
    from services.registers.models import School
    from services.registers.service import MarkValues, _MarkEvents
    from services.registers.settings import RegistersSettings

    settings, indexes = RegistersSettings(), range(args.schools)
    schools = [School(urn=ingest.school_urn(s), la_code=ingest.LA_CODE, name="x", phase="primary") for s in indexes]
    upns, versions = [ingest.pupil_upns(s, args.pupils) for s in indexes], [0] * args.schools
    chunks = []
    for slot, (day, session) in enumerate(school_slots()[: args.sessions]):
        for s, school in enumerate(schools):
            events = _MarkEvents(settings, school, day, session, datetime.now(UTC))
            marks = register_marks(upns[s], session, random.Random(f"{args.seed}:{s}:{slot}"))
            payloads = []
            for mark in marks:
                versions[s] += 1
                values = MarkValues(mark["code"], None, mark.get("minutes_late"), None)
                payloads.append(events.encode(mark["upn"], values, versions[s]))
            chunks.append(([m["upn"] for m in marks], payloads))
    return chunks


# ---------------------------------------------------------------- services


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = ingest.log_tail(self.log)
            raise BenchError(f"the {self.name} service exited ({self.process.returncode}):\n{tail}")

    def log_count(self, event: str) -> int:
        return self.log.read_text(errors="replace").count(f'"{event}"') if self.log.exists() else 0


def start_service(name: str, infra: Infra, tmp: Path, cleanup: Cleanup, workers: int = 1) -> Service:
    from shared.devstack import free_port

    port, log = free_port(), tmp / f"{name}.log"
    env = dict(os.environ, DATABASE_URL=infra.database_url, KAFKA_BOOTSTRAP_SERVERS=infra.bootstrap)
    env |= {"JWT_SECRET": infra.jwt_secret, "LOG_LEVEL": "WARNING", "ATTENDANCE_DATA_DIR": str(tmp)}
    command = [sys.executable, "-m", "shared.cli", "serve", name, "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:  # process_group=0: Ctrl-C reaches only us, and we stop the service
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, process_group=0
        )
    cleanup.append((f"stop {name} service", lambda: ingest.stop_process_group(process)))
    service = Service(name, process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 90
    while True:
        service.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                return service
        if time.monotonic() > deadline:
            raise BenchError(f"the {name} service was not ready within 90s:\n{ingest.log_tail(log)}")
        time.sleep(0.2)


def ops_token(infra: Infra) -> str:
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    return issue_token(PlatformSettings(jwt_secret=infra.jwt_secret), subject="bench-ops", role=Role.OPS)


async def wait_applied(conn: asyncpg.Connection, target: int, timeout: float, thresholds: Service) -> int:
    """Wait until the thresholds consumer has applied `target` events in all; return the count."""
    deadline = time.monotonic() + timeout
    while (applied := await conn.fetchval(APPLIED_SQL)) < target:
        thresholds.check()
        if time.monotonic() > deadline:
            dead = thresholds.log_count("event_dead_lettered")
            raise BenchError(
                f"the thresholds consumer applied {applied}/{target} events within {timeout:.0f}s ({dead} "
                f"dead-lettered):\n{ingest.log_tail(thresholds.log, 10)}"
            )
        await asyncio.sleep(0.025)
    return applied


async def cpu_report(cpu: ingest.CpuMeter, infra: Infra, services: dict[str, Service], wall: float) -> dict[str, Any]:
    groups = {f"{s.name} service": ingest.process_tree(s.process.pid) for s in services.values()}
    groups |= {"Tansu broker": {infra.broker_pid}, "bench (this process)": {os.getpid()}}
    if infra.postgres_local:
        groups["PostgreSQL"] = await ingest.postgres_pids(infra.database_url, infra.database_name)
    return cpu.end(groups, wall)


# ---------------------------------------------------------------- 1. consumer throughput


async def measure_throughput(args: argparse.Namespace, infra: Infra, services: dict[str, Service]) -> dict[str, Any]:
    from shared.kafka import make_producer
    from shared.outbox import _send_row  # how the outbox relay produces a batch of events
    from shared.settings import PlatformSettings

    chunks = mark_event_chunks(args)
    total = sum(len(keys) for keys, _ in chunks)
    thresholds, urns = services["thresholds"], [ingest.school_urn(s) for s in range(args.schools)]
    conn = await asyncpg.connect(ingest.asyncpg_dsn(infra.database_url))
    producer = make_producer(infra.bootstrap)
    await producer.start()
    profile_path, profiler = None, None
    try:
        base = await conn.fetchval(APPLIED_SQL)
        await ingest.create_schools(services["registers"].url, ops_token(infra), urns)
        # One attendance.school.updated each: once they are applied, the consumer is live.
        base = await wait_applied(conn, base + len(urns), 60, thresholds)
        await producer.partitions_for(MARKS_TOPIC)  # metadata before the clock starts
        if args.profile:
            profile_path = ingest.RESULTS_DIR / f"profile-thresholds-{datetime.now():%Y%m%d-%H%M%S}.txt"
            profile_path.parent.mkdir(parents=True, exist_ok=True)
            profiler = ingest.start_profiler(thresholds.process.pid, args.profile_rate, profile_path)
        say(f"producing {total:,} mark events to {MARKS_TOPIC} …")
        cpu = ingest.CpuMeter()
        cpu.begin()
        t_first = time.time()
        acks: list[asyncio.Future[Any]] = []
        for keys, payloads in chunks:
            acks += await _send_row(producer, MARKS_TOPIC, keys, payloads)
        await asyncio.gather(*acks)
        produce_s = time.time() - t_first
        say(f"  produced and acked in {produce_s:.2f}s; waiting for the consumer …")
        await wait_applied(conn, base + total, args.apply_timeout, thresholds)
        wall = time.time() - t_first
        ingest.stop_profiler(profiler)
        cpu_out = await cpu_report(cpu, infra, services, wall)
        possible = await conn.fetchval(
            "SELECT coalesce(sum(possible_sessions), 0) FROM thresholds.enrolment_totals WHERE urn = ANY($1)", urns
        )
        alerts = await conn.fetch(
            "SELECT rule_id, count(*) AS n FROM thresholds.alerts WHERE urn = ANY($1) AND status = 'raised' "
            "GROUP BY rule_id ORDER BY n DESC",
            urns,
        )
    finally:
        ingest.stop_profiler(profiler)
        await producer.stop()
        await conn.close()
    say("raw produce of the same events, nothing consuming …")
    messages = [(key.encode(), value) for keys, payloads in chunks for key, value in zip(keys, payloads, strict=True)]
    partitions = await ingest.topic_partitions(infra.bootstrap, MARKS_TOPIC)
    raw = await ingest.raw_kafka(infra.bootstrap, messages, partitions, rounds=1)
    out: dict[str, Any] = {
        "marks": total,
        "consumer_batch_size": PlatformSettings().consumer_batch_size,
        "applied_s": wall,
        "marks_per_s": total / wall,
        "produce_s": produce_s,
        "raw_produce_msgs_per_s": raw["produce_msgs_per_s"]["median"],
        "totals_possible_sessions": possible,  # every code of the mix is a possible session
        "alerts_raised": {r["rule_id"]: r["n"] for r in alerts},
        "dead_lettered": thresholds.log_count("event_dead_lettered"),
        "cpu": cpu_out,
    }
    if profile_path is not None and profile_path.exists():
        out["profile"] = {"file": str(profile_path.relative_to(REPO)), **ingest.summarise_profile(profile_path, 12)}
    return out


# ---------------------------------------------------------------- 2. POST -> alert latency


@dataclass
class Posted:
    registers: int = 0
    marks: int = 0
    events: int = 0  # mark events, each a version the thresholds service stores
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def post_register(client: httpx.AsyncClient, token: str, urn: str, body: dict[str, Any], into: Posted) -> bool:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    started = time.perf_counter()
    for attempt in range(3):
        try:
            response = await client.post(f"/v1/schools/{urn}/registers", json=body, headers=headers)
            break
        except httpx.TransportError:
            # A keep-alive connection the server closed as it was reused: sent again, as an MIS
            # would, under the same Idempotency-Key, so a register that did land is not doubled.
            if attempt == 2:
                raise
    into.latencies.append(time.perf_counter() - started)
    if response.status_code != 201:
        into.errors.append(f"{urn} {body['date']} {body['session']}: {response.status_code} {response.text[:200]}")
        return False
    accepted = response.json()
    into.registers += 1
    into.marks += accepted["marks"]
    into.events += accepted["new"] + accepted["amended"]
    return True


Admit = Callable[[dict[str, str], list[tuple[str, str]], date], Awaitable[None]]


async def measure_latency(
    args: argparse.Namespace, infra: Infra, services: dict[str, Service], admit: Admit | None = None
) -> dict[str, Any]:
    """`admit(tokens, pupils, first_day)`, if given, puts the pupils on their schools' rolls first."""
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    settings, slots, thresholds = PlatformSettings(jwt_secret=infra.jwt_secret), school_slots(), services["thresholds"]
    per_second = args.background_rate / args.register_size  # background registers per second
    # Enough schools that each has a fresh session for every register it posts (one per school per second).
    n_schools = max(math.ceil(per_second), math.ceil(per_second * (args.seconds + 60) / (len(slots) - args.history)))
    schools = [ingest.school_urn(BACKGROUND_SCHOOL + i) for i in range(n_schools)]
    upns = {urn: ingest.pupil_upns(BACKGROUND_SCHOOL + i, args.register_size) for i, urn in enumerate(schools)}
    probe_urn, n_probes = ingest.school_urn(PROBE_SCHOOL), math.ceil(args.seconds / args.probe_interval)
    probe_upns = ingest.pupil_upns(PROBE_SCHOOL, n_probes)
    tokens = {u: issue_token(settings, subject=f"bench-{u}", role=Role.SCHOOL, urns={u}) for u in [*schools, probe_urn]}
    ops = ops_token(infra)
    registers = httpx.AsyncClient(base_url=services["registers"].url, timeout=60)
    alerts_api = httpx.AsyncClient(base_url=thresholds.url, timeout=60, headers={"Authorization": f"Bearer {ops}"})
    # With the casework service running, a probe also waits for the case its alert opens (escalation).
    casework = services.get("casework")
    cases_api = casework and httpx.AsyncClient(
        base_url=casework.url, timeout=60, headers={"Authorization": f"Bearer {ops}"}
    )

    def school_register(urn: str, slot: int) -> dict[str, Any]:
        day, session = slots[slot]
        marks = register_marks(upns[urn], session, random.Random(f"{args.seed}:{urn}:{slot}"))
        return {"date": day.isoformat(), "session": session, "taken_by": ingest.TAKEN_BY, "marks": marks}

    conn = await asyncpg.connect(ingest.asyncpg_dsn(infra.database_url))
    try:
        base = await conn.fetchval(APPLIED_SQL)
        await ingest.create_schools(services["registers"].url, ops, [*schools, probe_urn])
        if admit is not None:
            pupils = [(u, upn) for u in schools for upn in upns[u]] + [(probe_urn, upn) for upn in probe_upns]
            await admit(tokens, pupils, slots[0][0])
        say(f"preparing {args.history} sessions of history for {n_schools} schools, and {n_probes} probe pupils …")
        prepared = Posted()
        for slot in range(args.history):
            await asyncio.gather(
                *(post_register(registers, tokens[u], u, school_register(u, slot), prepared) for u in schools)
            )
        # Probe pupils: 19 sessions with one absence, so an absent 20th session makes 2/20 = 10% (PA).
        for slot, (day, session) in enumerate(slots[:19]):
            marks = [{"upn": upn, "code": "I" if slot == 0 else ingest.PRESENT_MARK[session]} for upn in probe_upns]
            body = {"date": day.isoformat(), "session": session, "marks": marks}
            await post_register(registers, tokens[probe_urn], probe_urn, body, prepared)
        if prepared.errors:
            raise BenchError(f"probe preparation rejected: {prepared.errors[0]}")
        # The schools' and the registers' events all applied: the measured phase starts from idle.
        base = await wait_applied(conn, base + len(schools) + 1 + prepared.events, args.apply_timeout, thresholds)

        background, probes, stop = Posted(), Posted(), asyncio.Event()

        async def load() -> float:
            """Open loop: register i is posted at i / per_second whether or not earlier ones have returned."""
            pending: set[asyncio.Task[bool]] = set()
            started = time.perf_counter()
            for i in range((len(slots) - args.history) * n_schools):
                if stop.is_set():
                    break
                await asyncio.sleep(max(0.0, started + i / per_second - time.perf_counter()))
                urn = schools[i % n_schools]
                body = school_register(urn, args.history + i // n_schools)
                pending.add(task := asyncio.create_task(post_register(registers, tokens[urn], urn, body, background)))
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            return time.perf_counter() - started

        async def seen(api: httpx.AsyncClient, path: str, params: dict[str, str], started: float) -> float | None:
            """Seconds from `started` until GET `path` lists something, or None after the probe timeout."""
            while time.perf_counter() - started < args.probe_timeout:
                response = await api.get(path, params=params)
                if response.status_code == 200 and response.json()["items"]:
                    return time.perf_counter() - started
                await asyncio.sleep(0.02)
            return None

        async def probe(upn: str) -> tuple[float | None, float | None]:
            """POST register -> alert raised in thresholds' API -> (with casework) the case it opened."""
            day, session = slots[19]
            body = {"date": day.isoformat(), "session": session, "marks": [{"upn": upn, "code": "O"}]}
            started = time.perf_counter()
            if not await post_register(registers, tokens[probe_urn], probe_urn, body, probes):
                return None, None
            alert = await seen(alerts_api, "/v1/alerts", {"upn": upn, "status": "raised"}, started)
            if alert is None or cases_api is None:
                return alert, None
            return alert, await seen(cases_api, "/v1/cases", {"upn": upn}, started)

        say(f"background load {args.background_rate:,} marks/s; {n_probes} probes, one every {args.probe_interval}s …")
        cpu = ingest.CpuMeter()
        cpu.begin()
        t_start = time.monotonic()
        loader = asyncio.create_task(load())
        probing = []
        for i, upn in enumerate(probe_upns):  # the first probe after 2s of load
            await asyncio.sleep(max(0.0, t_start + 2.0 + i * args.probe_interval - time.monotonic()))
            probing.append(asyncio.create_task(probe(upn)))
        results = await asyncio.gather(*probing)
        stop.set()
        load_s = await loader
        t_end = time.monotonic()
        await wait_applied(conn, base + background.events + probes.events, args.apply_timeout, thresholds)
        caught_up_s = time.monotonic() - t_end
        # The CPU was read after the catch-up: divide by the whole span it covers.
        cpu_out = await cpu_report(cpu, infra, services, time.monotonic() - t_start)
    finally:
        await registers.aclose()
        await alerts_api.aclose()
        if cases_api is not None:
            await cases_api.aclose()
        await conn.close()
    latencies, posts = sorted(a for a, _ in results if a is not None), sorted(background.latencies)
    pct = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}
    escalation = {}
    if cases_api is not None:
        cases = sorted(c for _, c in results if c is not None)
        escalation = {
            "escalation_failed": len(results) - len(cases),
            "escalation_latency_ms": {name: 1000 * ingest.percentile(cases, q) for name, q in pct.items()},
        }
    return (
        escalation
        | {
            "probes": len(results),
            "probes_failed": len(results) - len(latencies),
            "latency_ms": {name: 1000 * ingest.percentile(latencies, q) for name, q in pct.items()},
            "probe_latencies_ms": [a if a is None else round(1000 * a) for a, _ in results],  # in the order sent
            "probe_post_p50_ms": 1000 * ingest.percentile(sorted(probes.latencies), 0.5),
            "background": {
                "schools": n_schools,
                "registers": background.registers,
                "marks": background.marks,
                "marks_per_s": background.marks / load_s,
                "post_ms": {name: 1000 * ingest.percentile(posts, q) for name, q in pct.items()},
            },
            "consumer_caught_up_after_load_s": caught_up_s,
            "errors": (background.errors + probes.errors)[:10],
            "dead_lettered": thresholds.log_count("event_dead_lettered"),
            "cpu": cpu_out,
        }
    )


# ---------------------------------------------------------------- report and main


def print_cpu(cpu: dict[str, Any]) -> None:
    say(f"  CPU        {cpu['wall_s']:.1f}s; machine {cpu['machine_busy_pct']:.0f}% busy of {cpu['cores']} cores")
    for name, seconds in sorted(cpu["cpu_s"].items(), key=lambda kv: -kv[1]):
        wait = cpu["run_queue_wait_s"].get(name)
        waiting = f"runnable but waiting for a CPU {wait:5.2f}s" if wait is not None else ""
        say(f"             {100 * seconds / cpu['wall_s']:4.0f}% of a core  {seconds:6.2f}s  {name:36} {waiting}")


def print_summary(s: dict[str, Any]) -> None:
    env, c, bar = s["environment"], s["config"], "=" * 100
    percentiles = lambda d: "  ".join(f"{k} {v:,.0f} ms" for k, v in d.items())  # noqa: E731
    say(f"\n{bar}\nTHRESHOLDS BENCHMARK SUMMARY\n{bar}")
    say(f"code         commit {env['code']}; {env['cpus']} CPUs, {env['python']}, {env['platform']}")
    say(f"PostgreSQL   {env['postgres_source']}; {env['postgres_durability']}. Kafka: Tansu (in memory)")
    if env["machine_busy_before_start_pct"] > 20:
        say(f"WARNING      the machine was {env['machine_busy_before_start_pct']:.0f}% busy before the run started")
    if t := s.get("throughput"):
        marks, produce_s = t["marks"], t["produce_s"]
        say("-" * 100)
        say(f"workload     {c['schools']} schools x {c['pupils']} pupils x {c['sessions']} sessions = {marks:,} marks")
        say(f"             consumer batches of at most {t['consumer_batch_size']} events")
        say(f"CONSUMER     {t['marks_per_s']:,.0f} marks/s applied: first produce -> all applied {t['applied_s']:.2f}s")
        say(f"produce      all acked after {produce_s:.2f}s ({marks / produce_s:,.0f} msgs/s, consumer running)")
        say(f"             raw: {t['raw_produce_msgs_per_s']:,.0f} msgs/s, the same events, nothing consuming")
        alerts = ", ".join(f"{k} {v}" for k, v in t["alerts_raised"].items()) or "none"
        say(f"alerts       raised {alerts}; {t['dead_lettered']} events dead-lettered")
        say(f"totals       {t['totals_possible_sessions']:,} possible sessions counted (expected {marks:,})")
        print_cpu(t["cpu"])
        if p := t.get("profile"):
            say(f"  profile    {p['file']} ({p['samples']:,} samples); top self time, then repository code inclusive:")
            for name, share in [*p["top_self_pct"].items(), *list(p["top_inclusive_repo_pct"].items())[:15]]:
                say(f"             {share:5.1f}%  {name}")
    if lat := s.get("latency"):
        b, probes = lat["background"], f"{lat['probes']} probes, {lat['probes_failed']} failed"
        say("-" * 100)
        say(f"LATENCY      POST register -> alert in GET /v1/alerts: {percentiles(lat['latency_ms'])}")
        say(f"             {probes}; the probe's POST alone: p50 {lat['probe_post_p50_ms']:.0f} ms")
        say(f"background   {b['marks_per_s']:,.0f} marks/s: {b['registers']} registers, {b['schools']} schools")
        say(f"             POST {percentiles(b['post_ms'])}")
        say(f"consumer     caught up {lat['consumer_caught_up_after_load_s']:.2f}s after the load stopped")
        say(f"             {lat['dead_lettered']} events dead-lettered")
        for error in lat["errors"]:
            say(f"ERROR        {error}")
        print_cpu(lat["cpu"])
    print_targets(s)


def print_targets(s: dict[str, Any]) -> None:
    say("-" * 100)
    for name, measured, ok in s["targets"]:
        say(f"target       [{'PASS' if ok else 'FAIL'}] {name}: measured {measured}")
    say("=" * 100)


def summary_head(name: str, args: argparse.Namespace, infra: Infra, busy_before: float) -> dict[str, Any]:
    """What every benchmark's summary starts with: which, when, its options and where it ran."""
    return {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": vars(args),
        "environment": {
            "code": ingest.code_version(),
            "cpus": psutil.cpu_count(),
            "python": f"Python {platform.python_version()}",
            "platform": platform.platform(terse=True),
            "postgres_source": infra.postgres_source,
            "postgres_durability": ingest.describe_durability(infra.postgres_settings),
            "postgres_settings": infra.postgres_settings,
            "machine_busy_before_start_pct": busy_before,
        },
    }


def start_infrastructure(args: argparse.Namespace, infra: Infra, tmp: Path, cleanup: Cleanup) -> None:
    """PostgreSQL with a fresh database, every service's schema migrated, and a Tansu broker."""
    from shared.cli import SERVICES
    from shared.migrations import upgrade

    ingest.start_postgres(args, infra, cleanup)
    ingest.create_database(infra, cleanup)
    for name in SERVICES:  # create_database migrates the registers schema only
        upgrade(name, infra.database_url)
    say(f"PostgreSQL: {infra.postgres_source}; database {infra.database_name} created and migrated")
    ingest.start_broker(infra, tmp, cleanup)


def run(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> dict[str, Any]:
    infra = Infra(jwt_secret=secrets.token_urlsafe(48))
    busy_before = ingest.background_load()
    start_infrastructure(args, infra, tmp, cleanup)
    services = {
        name: start_service(name, infra, tmp, cleanup, args.workers if name == "thresholds" else 1)
        for name in ("registers", "thresholds")
    }
    say(f"Tansu on {infra.bootstrap}; " + ", ".join(f"{s.name} on {s.url}" for s in services.values()))
    ingest.run_async(ingest.wait_for_topic(infra.bootstrap, MARKS_TOPIC, 60))
    summary = summary_head("thresholds", args, infra, busy_before)
    summary["targets"] = []  # (name, measured, pass)
    if args.phase in ("both", "throughput"):
        summary["throughput"] = t = ingest.run_async(measure_throughput(args, infra, services))
        rate = t["marks_per_s"]
        ok = rate >= TARGET_MARKS_PER_S and not t["dead_lettered"]
        summary["targets"].append(
            (f"thresholds consumer >= {TARGET_MARKS_PER_S:,} marks/s", f"{rate:,.0f} marks/s", ok)
        )
    if args.phase in ("both", "latency"):
        summary["latency"] = lat = ingest.run_async(measure_latency(args, infra, services))
        p95, achieved = lat["latency_ms"]["p95"], lat["background"]["marks_per_s"]
        ok = p95 < TARGET_P95_MS and not lat["probes_failed"] and achieved >= 0.95 * args.background_rate
        name = f"p95 POST -> alert < {TARGET_P95_MS:,} ms at {args.background_rate:,} marks/s background"
        summary["targets"].append((name, f"{p95:,.0f} ms ({achieved:,.0f} marks/s achieved)", ok))
    return summary


def main(argv: list[str] | None = None) -> int:
    return ingest.isolated_main("thresholds", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    sys.exit(main())
