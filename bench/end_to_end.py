"""Whole-platform benchmark: every service in its own process, driven through the public HTTP API.

Run with `make bench` (or `.venv/bin/python bench/end_to_end.py --help`). See bench/README.md.
PostgreSQL, the Tansu broker, the fresh database and the cleanup are bench/ingest.py's; the service
processes and the latency probes are bench/thresholds.py's.

1. End to end at full speed: the LA simulator (shared/simulation) plays a generated LA's term
   (`--schools` x `--pupils`, `--weeks`) through the HTTP APIs as fast as it can: schools, roll,
   every session's whole-school registers, amendments, joiners and leavers. The clock runs from its
   first round until the thresholds service has applied every mark and amendment (a version per
   mark in thresholds.mark_versions). Meanwhile every consumer's lag (its `consumer_lag_messages`
   gauge) and every service's memory (resident set of its process tree) are sampled.
2. Latency under a paced background load (default 5,000 marks/s): probes POST the register that
   makes a prepared pupil persistently absent, then wait for the alert in the thresholds API and
   for the case it opens in the casework API (escalation).
3. The raw limits on the same machine, the services stopped: asyncpg bulk upsert of the same
   register rows and aiokafka produce of as many mark events; the end-to-end rate as a ratio of each.

A missed target prints FAIL but the exit status stays 0; only a failure to run exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: bench/ is on the path, the repository is not
    sys.path.insert(0, str(REPO))

from bench import ingest, thresholds  # noqa: E402
from bench.ingest import BenchError, Infra, say  # noqa: E402
from bench.thresholds import Cleanup, Service  # noqa: E402

if TYPE_CHECKING:
    from shared.simulation.plan import Plan

TARGET_END_TO_END = 15_000  # marks/s: an England-wide morning register of 9M marks in ten minutes
TARGET_ALERT_P95_MS = 1000
TARGET_RSS_MB = 300
CONSUMING = ("thresholds", "casework", "cme", "notifications")
APPLIED_MARKS_SQL = "SELECT count(*) FROM thresholds.mark_versions"
SCHOOLS_KNOWN_SQL = "SELECT count(*) FROM thresholds.schools"
LAG = re.compile(r'^consumer_lag_messages\{consumer="([^"]+)",[^}]*\} ([0-9.e+]+)$', re.MULTILINE)
ROLL_CLIENTS = 16
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schools", type=int, default=20, help="end to end: schools in the simulated LA")
    p.add_argument("--pupils", type=int, default=500, help="end to end: pupils on each school's roll")
    p.add_argument("--weeks", type=int, default=2, help="end to end: teaching weeks of the simulated term")
    p.add_argument("--concurrency", type=int, default=8, help="end to end: requests in flight at once")
    p.add_argument("--workers", type=int, default=1, help="processes per service (uvicorn workers)")
    p.add_argument("--apply-timeout", type=float, default=600.0, help="seconds to wait for the consumers")
    thresholds.add_latency_arguments(p)
    p.add_argument("--raw-rounds", type=int, default=3, help="raw limits: rounds of each (the median is used)")
    p.add_argument("--skip-raw", action="store_true", help="skip the raw-limit measurements")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fast-embedded", action="store_true", help="embedded PostgreSQL only: fsync off")
    return p.parse_args(argv)


# ---------------------------------------------------------------- sampling while the platform runs


class Sampler:
    """Peak resident memory per service (its process tree) and peak lag per consumer, every 0.5 s."""

    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services
        self.rss_mb: dict[str, float] = dict.fromkeys(services, 0.0)
        self.lag: dict[str, float] = {}
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not self._stop.is_set():
                for name, service in self.services.items():
                    self.rss_mb[name] = max(self.rss_mb[name], tree_rss_mb(service.process.pid))
                    if name in CONSUMING:
                        with contextlib.suppress(httpx.HTTPError):
                            text = (await client.get(f"{service.url}/metrics")).text
                            lag = sum(float(v) for consumer, v in LAG.findall(text) if consumer == name)
                            self.lag[name] = max(self.lag.get(name, 0.0), lag)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)

    def stop(self) -> None:
        self._stop.set()


def tree_rss_mb(pid: int) -> float:
    total = 0
    for member in ingest.process_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(member).memory_info().rss
    return total / 2**20


# ---------------------------------------------------------------- 1. end to end


async def load_roll(cme: Service, tokens: dict[str, str], pupils: list[tuple[str, str]], first_day: date) -> None:
    """Pupils admitted through the CME API before their first register, as an LA's roll is:
    otherwise each first mark would be an unnotified joiner."""
    queue = iter(pupils)
    async with httpx.AsyncClient(base_url=cme.url, timeout=60) as client:

        async def admit() -> None:
            for urn, upn in queue:
                body = {"upn": upn, "admitted_on": first_day.isoformat(), "nc_year": "5", "date_of_birth": "2016-05-01"}
                headers = {"Authorization": f"Bearer {tokens[urn]}"}
                deadline = time.monotonic() + 60
                while True:  # the school reaches the CME service through the broker, moments after it is added
                    response = await client.post(f"/v1/schools/{urn}/admissions", json=body, headers=headers)
                    if response.status_code != 404 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                if response.status_code not in (200, 201):
                    raise BenchError(f"admission {urn} {upn}: {response.status_code} {response.text[:300]}")

        await asyncio.gather(*(admit() for _ in range(ROLL_CLIENTS)))


async def wait_count(conn: asyncpg.Connection, sql: str, target: int, timeout: float, services: list[Service]) -> None:
    deadline = time.monotonic() + timeout
    while (count := await conn.fetchval(sql)) < target:
        for service in services:
            service.check()
        if time.monotonic() > deadline:
            raise BenchError(f"{sql!r} reached {count:,} of {target:,} within {timeout:.0f}s")
        await asyncio.sleep(0.05)


def simulated_la(args: argparse.Namespace) -> Plan:
    """The LA the simulator plays: `--schools` x `--pupils` over a term of `--weeks` ending last week."""
    from shared.simulation.generate import LaConfig, generate, recent_term
    from shared.time import school_today

    today = school_today()
    term = recent_term(today - timedelta(days=7), args.weeks, calendar_until=today + timedelta(days=366))
    urns = tuple(ingest.school_urn(s) for s in range(args.schools))
    return generate(LaConfig(term, urns, ingest.LA_CODE, args.pupils, args.seed))


def register_rows(plan: Plan) -> list[ingest.Register]:
    """The plan's registers as the raw-limit measurements take them."""
    from shared.simulation.plan import Register

    return [
        ingest.Register(
            0, r.urn, r.date, r.session, [{"upn": u, "code": c, "minutes_late": m} for u, c, m in r.marks()]
        )
        for r in plan.actions()
        if isinstance(r, Register)
    ]


async def measure_end_to_end(
    args: argparse.Namespace, infra: Infra, services: dict[str, Service], plan: Plan
) -> dict[str, Any]:
    from shared.settings import PlatformSettings
    from shared.simulation.drive import Urls, drive, mint_tokens

    urls = Urls(services["registers"].url, services["cme"].url, services["thresholds"].url)
    tokens = mint_tokens(PlatformSettings(jwt_secret=infra.jwt_secret), plan)
    conn = await asyncpg.connect(ingest.asyncpg_dsn(infra.database_url))
    try:
        base = await conn.fetchval(APPLIED_MARKS_SQL)
        cpu = ingest.CpuMeter()
        cpu.begin()
        cpu_started = time.monotonic()
        # The driver adds the schools and waits for the services to know them, then plays the term
        # round by round (registers, amendments, joiners, leavers): the clock is its rounds'.
        report = await drive(plan, urls, tokens, concurrency=args.concurrency)
        rounds_started = time.monotonic() - report.seconds
        versions = report.marks + report.amendments  # each a version stored by thresholds
        await wait_count(conn, APPLIED_MARKS_SQL, base + versions, args.apply_timeout, list(services.values()))
        applied_s = time.monotonic() - rounds_started
        cpu_out = await thresholds.cpu_report(cpu, infra, services, time.monotonic() - cpu_started)
    finally:
        await conn.close()
    return {
        "marks": report.marks,
        "registers": report.registers,
        "amendments": report.amendments,
        "admissions": report.admissions,
        "deletions": report.deletions,
        "posted_s": report.seconds,
        "applied_s": applied_s,
        "post_marks_per_s": report.marks / report.seconds,
        "marks_per_s": report.marks / applied_s,
        "cpu": cpu_out,
    }


# ---------------------------------------------------------------- 3. raw limits


def raw_limits(args: argparse.Namespace, infra: Infra, registers: list[ingest.Register]) -> dict[str, Any]:
    """The same register rows upserted with asyncpg, and as many mark events produced with aiokafka."""
    marks = sum(len(r.marks) for r in registers)
    say("raw limits: asyncpg bulk upsert of the same rows …")
    pg = ingest.run_async(
        ingest.raw_postgres(ingest.asyncpg_dsn(infra.database_url), registers, args.concurrency, args.raw_rounds)
    )
    say("raw limits: aiokafka produce of as many mark events …")
    sessions = -(-marks // (args.schools * args.pupils)) + 1  # enough of the same kind of events
    events = argparse.Namespace(schools=args.schools, pupils=args.pupils, sessions=sessions, seed=args.seed)
    messages = [
        (key.encode(), payload)
        for keys, payloads in thresholds.mark_event_chunks(events)
        for key, payload in zip(keys, payloads, strict=True)
    ][:marks]
    partitions = ingest.run_async(ingest.topic_partitions(infra.bootstrap, thresholds.MARKS_TOPIC)) or 12
    kafka = ingest.run_async(ingest.raw_kafka(infra.bootstrap, messages, partitions, args.raw_rounds))
    return {"postgres": pg, "kafka": kafka}


# ---------------------------------------------------------------- report and main


def print_summary(s: dict[str, Any]) -> None:
    env, c, bar = s["environment"], s["config"], "=" * 100
    percentiles = lambda d: "  ".join(f"{k} {v:,.0f} ms" for k, v in d.items())  # noqa: E731
    say(f"\n{bar}\nWHOLE-PLATFORM BENCHMARK SUMMARY\n{bar}")
    say(f"code         commit {env['code']}; {env['cpus']} CPUs, {env['python']}, {env['platform']}")
    say(f"PostgreSQL   {env['postgres_source']}; {env['postgres_durability']}. Kafka: Tansu (in memory)")
    say(f"services     {', '.join(s['memory_peak_mb'])}; {c['workers']} process(es) each")
    if env["machine_busy_before_start_pct"] > 20:
        say(f"WARNING      the machine was {env['machine_busy_before_start_pct']:.0f}% busy before the run started")
    e = s["end_to_end"]
    say("-" * 100)
    say(f"workload     LA of {c['schools']} schools x {c['pupils']} pupils, {c['weeks']} weeks: {e['marks']:,} marks")
    say(
        f"             {e['registers']:,} registers, {e['amendments']:,} amendments, {e['admissions']:,} admissions, "
        f"{e['deletions']:,} deletions; {c['concurrency']} requests in flight"
    )
    say(f"END TO END   {e['marks_per_s']:,.0f} marks/s: first round -> all applied by thresholds {e['applied_s']:.2f}s")
    say(f"played       {e['post_marks_per_s']:,.0f} marks/s accepted: the term played in {e['posted_s']:.1f}s")
    lag = ", ".join(f"{k} {v:,.0f}" for k, v in s["consumer_lag_peak"].items()) or "no readings"
    say(f"lag peak     {lag} messages")
    thresholds.print_cpu(e["cpu"])
    if lat := s.get("latency"):
        say("-" * 100)
        say(f"ALERT        POST register -> alert in GET /v1/alerts: {percentiles(lat['latency_ms'])}")
        if "escalation_latency_ms" in lat:
            say(f"ESCALATION   POST register -> case in GET /v1/cases: {percentiles(lat['escalation_latency_ms'])}")
        b = lat["background"]
        say(f"background   {b['marks_per_s']:,.0f} marks/s; {lat['probes']} probes, {lat['probes_failed']} failed")
        say(f"consumer     caught up {lat['consumer_caught_up_after_load_s']:.2f}s after the load stopped")
        for error in lat["errors"]:
            say(f"ERROR        {error}")
        thresholds.print_cpu(lat["cpu"])
    say("-" * 100)
    memory = "  ".join(f"{k} {v:,.0f}" for k, v in s["memory_peak_mb"].items())
    say(f"memory peak  {memory} (MB resident, whole run)")
    if raw := s.get("raw"):
        pg, kafka = raw["postgres"], raw["kafka"]
        say(
            f"raw          asyncpg upsert {pg['upsert_rows_per_s']['median']:,.0f} rows/s; aiokafka produce "
            f"{kafka['produce_msgs_per_s']['median']:,.0f} msgs/s ({kafka['best_mode']}); medians"
        )
        say(
            f"ratios       end to end / raw upsert {s['ratios']['to_raw_upsert']:.3f}; "
            f"end to end / raw produce {s['ratios']['to_raw_produce']:.3f}"
        )
    thresholds.print_targets(s)


def run(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> dict[str, Any]:
    from shared.cli import SERVICES

    infra = Infra(jwt_secret=secrets.token_urlsafe(48))
    busy_before = ingest.background_load()
    plan = simulated_la(args)
    rows = register_rows(plan)
    thresholds.start_infrastructure(args, infra, tmp, cleanup)
    services = {name: thresholds.start_service(name, infra, tmp, cleanup, args.workers) for name in SERVICES}
    say(f"Tansu on {infra.bootstrap}; " + ", ".join(f"{s.name} on {s.url}" for s in services.values()))
    ingest.run_async(ingest.wait_for_topic(infra.bootstrap, thresholds.MARKS_TOPIC, 60))

    async def measured() -> tuple[dict[str, Any], dict[str, Any], Sampler]:
        sampler = Sampler(services)
        sampling = asyncio.create_task(sampler.run())
        try:
            say(f"end to end: the simulated LA's {len(rows):,} registers, {sum(len(r.marks) for r in rows):,} marks …")
            e2e = await measure_end_to_end(args, infra, services, plan)
            latency = await thresholds.measure_latency(
                args, infra, services, admit=lambda tokens, pupils, day: load_roll(services["cme"], tokens, pupils, day)
            )
        finally:
            sampler.stop()
            await sampling
        return e2e, latency, sampler

    e2e, latency, sampler = ingest.run_async(measured())
    for service in services.values():  # the raw limits get the machine to themselves
        ingest.stop_process_group(service.process)
    raw = None if args.skip_raw else raw_limits(args, infra, rows)

    summary = thresholds.summary_head("end-to-end", args, infra, busy_before)
    summary |= {
        "end_to_end": e2e,
        "latency": latency,
        "consumer_lag_peak": sampler.lag,
        "memory_peak_mb": sampler.rss_mb,
        "raw": raw,
    }
    if raw:
        summary["ratios"] = {
            "to_raw_upsert": e2e["marks_per_s"] / raw["postgres"]["upsert_rows_per_s"]["median"],
            "to_raw_produce": e2e["marks_per_s"] / raw["kafka"]["produce_msgs_per_s"]["median"],
        }
    p95, achieved = latency["latency_ms"]["p95"], latency["background"]["marks_per_s"]
    heaviest = max(sampler.rss_mb, key=sampler.rss_mb.__getitem__)
    summary["targets"] = [
        (
            f"end to end >= {TARGET_END_TO_END:,} marks/s",
            f"{e2e['marks_per_s']:,.0f} marks/s",
            e2e["marks_per_s"] >= TARGET_END_TO_END,
        ),
        (
            f"p95 POST -> alert < {TARGET_ALERT_P95_MS:,} ms at {args.background_rate:,} marks/s background",
            f"{p95:,.0f} ms ({achieved:,.0f} marks/s achieved)",
            p95 < TARGET_ALERT_P95_MS and not latency["probes_failed"] and achieved >= 0.95 * args.background_rate,
        ),
        (
            f"no service above {TARGET_RSS_MB} MB resident",
            f"{heaviest} {sampler.rss_mb[heaviest]:,.0f} MB",
            sampler.rss_mb[heaviest] <= TARGET_RSS_MB * args.workers,
        ),
    ]
    return summary


def main(argv: list[str] | None = None) -> int:
    return ingest.isolated_main("end-to-end", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    sys.exit(main())
