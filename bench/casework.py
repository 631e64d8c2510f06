"""Casework benchmark: how fast the casework consumer turns alerts into cases, and how soon an
alert's case shows in its API. Run with `make bench-casework`; see bench/README.md.

Only the casework service runs (with PostgreSQL and Tansu, set up and removed by bench/ingest.py's
helpers; the service process and CPU report are bench/thresholds.py's). AlertRaised events, built
as the thresholds service builds them, are produced straight to attendance.alerts.v1, keyed by UPN
and sent as the outbox relay sends them. No targets: figures only; a p95 above 1 s is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: bench/ is on the path, the repository is not
    sys.path.insert(0, str(REPO))

from bench import ingest, thresholds  # noqa: E402
from bench.ingest import BenchError, Infra, say  # noqa: E402
from bench.thresholds import Cleanup, Service  # noqa: E402

ALERTS_TOPIC, REGISTERS_TOPIC = "attendance.alerts.v1", "attendance.registers.v1"
FLAG_P95_MS = 1000
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}
BACKGROUND_SCHOOL, PROBE_SCHOOL = 100, 500  # school indexes (URN 700001 + index); throughput uses 0..
APPLIED_SQL = "SELECT count(*) FROM casework.applied_events WHERE consumer = 'casework'"
COUNTS_SQL = (
    "SELECT (SELECT count(*) FROM casework.cases) AS cases, "
    "(SELECT count(*) FROM casework.case_actions WHERE kind = 'note') AS notes"
)
Chunk = tuple[list[str], list[bytes]]  # (keys, payloads) sent as one outbox row
CHUNK = 500  # alerts per outbox row: the relay sends a row as record batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/casework.py",
        description="Casework benchmark: alerts -> cases throughput, and alert -> case-in-API latency under load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--phase", choices=("both", "throughput", "latency"), default="both")
    p.add_argument("--alerts", type=int, default=20_000, help="throughput: alerts per run (distinct pupils)")
    p.add_argument("--schools", type=int, default=5, help="throughput: schools (one LA) the pupils belong to")
    p.add_argument("--notes-share", type=float, default=0.5, help="mixed run: share of alerts on open cases")
    p.add_argument("--apply-timeout", type=float, default=600.0, help="seconds to wait for the consumer")
    p.add_argument("--background-rate", type=int, default=100, help="latency: background alerts/s")
    p.add_argument("--probes", type=int, default=40, help="latency: probes sent")
    p.add_argument("--probe-interval", type=float, default=0.25, help="latency: seconds between probes")
    p.add_argument("--probe-timeout", type=float, default=30.0, help="latency: give up on one probe after this")
    p.add_argument("--workers", type=int, default=1, help="casework processes (uvicorn workers), one consumer each")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fast-embedded", action="store_true", help="embedded PostgreSQL only: fsync off")
    p.add_argument("--profile", action="store_true", help="py-spy the casework service in the first run")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    args = p.parse_args(argv)
    if not 1 <= args.schools <= 40 or not 1 <= args.alerts <= 40 * args.schools * 1000:
        p.error("--schools must be 1..40 and --alerts at most 40,000 per school")
    if not 0.0 <= args.notes_share <= 1.0:
        p.error("--notes-share must be from 0 to 1")
    return args


# ---------------------------------------------------------------- workload


class Alerts:
    """AlertRaised events as the thresholds service writes them (EventEncoder, same fields), for
    persistent absence, with the figures, window and absent sessions of a pupil past the line."""

    def __init__(self, seed: int) -> None:
        from services.thresholds.settings import ThresholdsSettings
        from shared.events import EventEncoder

        self.encoder = EventEncoder("thresholds", datetime.now(UTC))
        self.slots, self.rng, self.next_id = thresholds.school_slots(), random.Random(seed), 1
        self.link = ThresholdsSettings().link  # the thresholds service's alert URLs

    def encode(self, school: int, upn: str) -> bytes:
        from shared.events import AlertRaised

        possible = self.rng.randrange(20, min(len(self.slots), 300))
        absent = sorted(self.rng.sample(range(possible), max(2, int(possible * self.rng.uniform(0.1, 0.3)))))
        n, sessions = self.next_id, [f"{self.slots[i][0]} {self.slots[i][1]} {self.rng.choice('INOG')}" for i in absent]
        figures = {"numerator": len(absent), "denominator": possible, "rate": len(absent) / possible}
        figures |= {"threshold_percent": "10", "min_possible_sessions": 20}
        fields = {"alert_id": n, "urn": ingest.school_urn(school), "la_code": ingest.LA_CODE, "upn": upn, "step": ""}
        fields |= {"rule_id": "persistent_absence", "policy_version": 1, "link": self.link(f"/v1/alerts/{n}")}
        fields |= {"figures": figures, "window_from": self.slots[0][0], "window_to": self.slots[possible - 1][0]}
        self.next_id += 1
        return self.encoder.encode(AlertRaised, fields | {"sessions": sessions}, subject=upn)

    def chunks(self, pupils: list[tuple[int, str]], size: int) -> list[Chunk]:
        return [
            ([upn for _, upn in part], [self.encode(school, upn) for school, upn in part])
            for part in (pupils[i : i + size] for i in range(0, len(pupils), size))
        ]


def pupils_of(schools: range, count: int, skip: int = 0) -> list[tuple[int, str]]:
    """`count` distinct (school, UPN), round robin over `schools`, after each school's first `skip`."""
    n = len(schools)
    upns = {s: ingest.pupil_upns(s, skip + -(-count // n))[skip:] for s in schools}
    return [(schools[i % n], upns[schools[i % n]][i // n]) for i in range(count)]


@contextlib.asynccontextmanager
async def clients(infra: Infra) -> AsyncIterator[tuple[asyncpg.Connection, Any]]:
    """A database connection (to poll the consumer's progress) and a producer with the relay's settings."""
    from shared.kafka import make_producer

    conn, producer = await asyncpg.connect(ingest.asyncpg_dsn(infra.database_url)), make_producer(infra.bootstrap)
    await producer.start()
    try:
        await producer.partitions_for(ALERTS_TOPIC)  # metadata before any clock starts
        yield conn, producer
    finally:
        await producer.stop()
        await conn.close()


async def send(producer: Any, topic: str, chunks: list[Chunk]) -> list[asyncio.Future[Any]]:
    from shared.outbox import _send_row  # how the outbox relay produces a batch of events

    acks: list[asyncio.Future[Any]] = []
    for keys, payloads in chunks:
        acks += await _send_row(producer, topic, keys, payloads)
    return acks


async def announce_schools(args: argparse.Namespace, infra: Infra, service: Service) -> None:
    """attendance.school.updated for every school the bench uses, as the registers service
    publishes it: casework knows their LA and calendar, and once applied, its consumer is live."""
    from shared.events import SchoolUpdated, make_event
    from shared.outbox import encode

    indexes = [*range(args.schools), *range(BACKGROUND_SCHOOL, BACKGROUND_SCHOOL + args.schools), PROBE_SCHOOL]
    urns = [ingest.school_urn(s) for s in indexes]
    facts = {"la_code": ingest.LA_CODE, "phase": "primary", "independent": False, "data_sharing_agreement": True}
    events = [
        encode(make_event("registers", SchoolUpdated(urn=u, calendar={}, link=f"/v1/schools/{u}", **facts)))
        for u in urns
    ]
    async with clients(infra) as (conn, producer):
        await asyncio.gather(*await send(producer, REGISTERS_TOPIC, [(urns, events)]))
        await wait_applied(conn, len(urns), 60, service)


async def wait_applied(conn: asyncpg.Connection, target: int, timeout: float, service: Service) -> int:
    deadline = time.monotonic() + timeout
    while (applied := await conn.fetchval(APPLIED_SQL)) < target:
        service.check()
        if time.monotonic() > deadline:
            raise BenchError(
                f"the casework consumer applied {applied}/{target} events within {timeout:.0f}s "
                f"({service.log_count('event_dead_lettered')} dead-lettered):\n{ingest.log_tail(service.log, 10)}"
            )
        await asyncio.sleep(0.025)
    return applied


# ---------------------------------------------------------------- 1. throughput


async def apply_run(
    args: argparse.Namespace, infra: Infra, services: dict[str, Service], chunks: list[Chunk], profile: bool
) -> dict[str, Any]:
    """Produce `chunks` to the alerts topic; time it until the consumer has applied them all."""
    service, total = services["casework"], sum(len(keys) for keys, _ in chunks)
    profile_path = ingest.RESULTS_DIR / f"profile-casework-{datetime.now():%Y%m%d-%H%M%S}.txt" if profile else None
    profiler = profile_path and ingest.start_profiler(service.process.pid, args.profile_rate, profile_path)
    try:
        async with clients(infra) as (conn, producer):
            base, before = await conn.fetchval(APPLIED_SQL), await conn.fetchrow(COUNTS_SQL)
            cpu = ingest.CpuMeter()
            cpu.begin()
            t_first = time.time()
            await asyncio.gather(*await send(producer, ALERTS_TOPIC, chunks))
            produce_s = time.time() - t_first
            say(f"  {total:,} alerts produced and acked in {produce_s:.2f}s; waiting for the consumer …")
            await wait_applied(conn, base + total, args.apply_timeout, service)
            wall = time.time() - t_first
            ingest.stop_profiler(profiler)
            cpu_out = await thresholds.cpu_report(cpu, infra, services, wall)
            after = await conn.fetchrow(COUNTS_SQL)
    finally:
        ingest.stop_profiler(profiler)
    cases, notes = after["cases"] - before["cases"], after["notes"] - before["notes"]
    out = {"alerts": total, "applied_s": wall, "alerts_per_s": total / wall, "produce_s": produce_s}
    out |= {"cases_opened": cases, "notes": notes, "cases_per_s": cases / wall, "cpu": cpu_out}
    if profile_path is not None and profile_path.exists():
        out["profile"] = {"file": str(profile_path.relative_to(REPO)), **ingest.summarise_profile(profile_path, 12)}
    return out


def measure_throughput(args: argparse.Namespace, infra: Infra, services: dict[str, Service]) -> dict[str, Any]:
    alerts, schools = Alerts(args.seed), range(args.schools)
    first = pupils_of(schools, args.alerts)
    say(f"run 1: {args.alerts:,} alerts, each for a pupil without a case …")
    opening = ingest.run_async(apply_run(args, infra, services, alerts.chunks(first, CHUNK), args.profile))
    n_notes = round(args.alerts * args.notes_share)
    mixed = random.Random(args.seed).sample(first, n_notes)
    mixed += pupils_of(schools, args.alerts - n_notes, skip=-(-args.alerts // args.schools))
    random.Random(args.seed).shuffle(mixed)
    say(f"run 2: {args.alerts:,} alerts, {n_notes:,} of them for pupils with an open case …")
    mixed_out = ingest.run_async(apply_run(args, infra, services, alerts.chunks(mixed, CHUNK), False))
    return {"opening": opening, "mixed": mixed_out}


# ---------------------------------------------------------------- 2. alert -> case in the API


async def measure_latency(args: argparse.Namespace, infra: Infra, services: dict[str, Service]) -> dict[str, Any]:
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    service, alerts, tick = services["casework"], Alerts(args.seed + 2), 0.02  # background: a chunk every 20 ms
    settings = PlatformSettings(jwt_secret=infra.jwt_secret)
    token = issue_token(settings, subject="bench-officer", role=Role.LA_OFFICER, la_code=ingest.LA_CODE)
    seconds = 2.0 + args.probes * args.probe_interval + args.probe_timeout  # the longest the load can run
    schools = range(BACKGROUND_SCHOOL, BACKGROUND_SCHOOL + args.schools)
    background = iter(pupils_of(schools, int(args.background_rate * seconds)))
    probe_pupils = pupils_of(range(PROBE_SCHOOL, PROBE_SCHOOL + 1), args.probes)
    stop, produced, acks = asyncio.Event(), [0], []
    api = httpx.AsyncClient(base_url=service.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
    async with clients(infra) as (conn, producer), api:

        async def load() -> float:
            """Open loop: whatever is due at the rate goes every tick, whatever the consumer does."""
            started, i = time.perf_counter(), 0
            while not stop.is_set():
                due = round(args.background_rate * (time.perf_counter() - started)) - produced[0]
                if part := [p for _, p in zip(range(due), background, strict=False)]:
                    acks.extend(await send(producer, ALERTS_TOPIC, alerts.chunks(part, len(part))))
                    produced[0] += len(part)
                i += 1
                await asyncio.sleep(max(0.0, started + i * tick - time.perf_counter()))
            return time.perf_counter() - started

        async def probe(pupil: tuple[int, str]) -> float | None:
            """From the produce (acked) until GET /v1/cases?upn= shows the pupil's case."""
            started = time.perf_counter()
            await asyncio.gather(*await send(producer, ALERTS_TOPIC, alerts.chunks([pupil], 1)))
            while time.perf_counter() - started < args.probe_timeout:
                response = await api.get("/v1/cases", params={"upn": pupil[1]})
                if response.status_code == 200 and response.json()["items"]:
                    return time.perf_counter() - started
                await asyncio.sleep(0.02)
            return None

        base = await conn.fetchval(APPLIED_SQL)
        say(f"background {args.background_rate:,} alerts/s; {args.probes} probes, one every {args.probe_interval}s …")
        cpu = ingest.CpuMeter()
        cpu.begin()
        t_start = time.monotonic()
        loader, probing = asyncio.create_task(load()), []
        for i, pupil in enumerate(probe_pupils):  # the first probe after 2 s of load
            await asyncio.sleep(max(0.0, t_start + 2.0 + i * args.probe_interval - time.monotonic()))
            probing.append(asyncio.create_task(probe(pupil)))
        results = await asyncio.gather(*probing)
        stop.set()
        load_s = await loader
        await asyncio.gather(*acks)
        t_end = time.monotonic()
        await wait_applied(conn, base + produced[0] + args.probes, args.apply_timeout, service)
        caught_up_s = time.monotonic() - t_end
        cpu_out = await thresholds.cpu_report(cpu, infra, services, time.monotonic() - t_start)  # + catch-up
    latencies = sorted(r for r in results if r is not None)
    out = {"probes": len(results), "probes_failed": len(results) - len(latencies), "cpu": cpu_out}
    out |= {"latency_ms": {k: 1000 * ingest.percentile(latencies, q) for k, q in PERCENTILES.items()}}
    out |= {"probe_latencies_ms": [r if r is None else round(1000 * r) for r in results]}  # in the order sent
    out |= {"background_alerts": produced[0], "background_alerts_per_s": produced[0] / load_s}
    return out | {"consumer_caught_up_after_load_s": caught_up_s}


# ---------------------------------------------------------------- report and main


def print_summary(s: dict[str, Any]) -> None:
    env, c, bar = s["environment"], s["config"], "=" * 100
    say(f"\n{bar}\nCASEWORK BENCHMARK SUMMARY\n{bar}")
    say(f"code         commit {env['code']}; {env['cpus']} CPUs, {env['python']}, {env['platform']}")
    say(f"PostgreSQL   {env['postgres_source']}; {env['postgres_durability']}. Kafka: Tansu (in memory)")
    say(f"casework     {c['workers']} process(es); consumer batches of at most {env['consumer_batch_size']} events")
    if env["machine_busy_before_start_pct"] > 20:
        say(f"WARNING      the machine was {env['machine_busy_before_start_pct']:.0f}% busy before the run started")
    for key, title in (("opening", "OPENING"), ("mixed", "MIXED")):
        if not (t := s.get("throughput", {}).get(key)):
            continue
        say("-" * 100)
        say(f"{title:12} {t['cases_per_s']:,.0f} cases/s opened, {t['alerts_per_s']:,.0f} alerts/s applied")
        say(f"             {t['alerts']:,} alerts: {t['cases_opened']:,} cases opened, {t['notes']:,} notes recorded")
        say(f"             first produce -> all applied {t['applied_s']:.2f}s; all acked after {t['produce_s']:.2f}s")
        thresholds.print_cpu(t["cpu"])
        if p := t.get("profile"):
            say(f"  profile    {p['file']} ({p['samples']:,} samples); top self time, then repository code inclusive:")
            for name, share in [*p["top_self_pct"].items(), *list(p["top_inclusive_repo_pct"].items())[:15]]:
                say(f"             {share:5.1f}%  {name}")
    if lat := s.get("latency"):
        ms = "  ".join(f"{k} {v:,.0f} ms" for k, v in lat["latency_ms"].items())
        say("-" * 100)
        say(f"LATENCY      alert produced -> case in GET /v1/cases?upn=: {ms}")
        say(f"             {lat['probes']} probes, {lat['probes_failed']} failed (timeout {c['probe_timeout']:.0f}s)")
        say(f"background   {lat['background_alerts_per_s']:,.0f} alerts/s ({lat['background_alerts']:,} alerts)")
        say(f"consumer     caught up {lat['consumer_caught_up_after_load_s']:.2f}s after the load stopped")
        if lat["latency_ms"]["p95"] > FLAG_P95_MS or lat["probes_failed"]:
            say(f"FLAG         p95 alert -> case visible is above {FLAG_P95_MS:,} ms (or probes failed)")
        if (capacity := s.get("throughput", {}).get("opening", {}).get("alerts_per_s", 1e9)) < c["background_rate"]:
            say(f"NOTE         the background is above the capacity of run 1 ({capacity:,.0f}/s): a growing backlog")
        say("             CPU below: from the start of the load until the consumer had caught up")
        thresholds.print_cpu(lat["cpu"])
    say("-" * 100)
    say(f"dead-letter  {s['dead_lettered']} events dead-lettered; {s['batches_retried_singly']} batches retried singly")
    say(bar)


def run(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> dict[str, Any]:
    from shared.migrations import upgrade
    from shared.settings import PlatformSettings

    infra = Infra(jwt_secret=secrets.token_urlsafe(48))
    busy_before = ingest.background_load()
    ingest.start_postgres(args, infra, cleanup)
    ingest.create_database(infra, cleanup)
    upgrade("casework", infra.database_url)
    say(f"PostgreSQL: {infra.postgres_source}; database {infra.database_name} created and migrated")
    ingest.start_broker(infra, tmp, cleanup)
    ingest.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    services = {"casework": thresholds.start_service("casework", infra, tmp, cleanup, args.workers)}
    say(f"Tansu on {infra.bootstrap}; casework on {services['casework'].url}")
    ingest.run_async(ingest.wait_for_topic(infra.bootstrap, ALERTS_TOPIC, 60))
    ingest.run_async(announce_schools(args, infra, services["casework"]))
    summary = thresholds.summary_head("casework", args, infra, busy_before)
    summary["environment"] |= {
        "consumer_batch_size": PlatformSettings().consumer_batch_size,
    }
    if args.phase in ("both", "throughput"):
        summary["throughput"] = measure_throughput(args, infra, services)
    if args.phase in ("both", "latency"):
        summary["latency"] = ingest.run_async(measure_latency(args, infra, services))
    summary["dead_lettered"] = services["casework"].log_count("event_dead_lettered")
    summary["batches_retried_singly"] = services["casework"].log_count("batch_failed_retrying_singly")
    return summary


def main(argv: list[str] | None = None) -> int:
    return ingest.isolated_main("casework", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    sys.exit(main())
