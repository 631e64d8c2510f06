"""Notifications benchmark: how many signed webhooks a second the notifications service delivers
to a local receiver, and how long an event takes from its `time` to the receiver. Run with
`make bench-notifications`; see bench/README.md.

Only the notifications service runs (with PostgreSQL and Tansu, set up and removed by
bench/ingest.py's helpers; the service process is bench/thresholds.py's). Alert and casework
events, keyed by UPN, are produced straight to their topics the way the outbox relays send them.
The receiver is a separate process: a minimal HTTP/1.1 server on loopback that answers 204 (after
`--receiver-delay-ms`), records each request's `webhook-id` and arrival time, and verifies every
signature with shared.webhooks.verify. No targets: figures only; a p95 above 1 s is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import httpx
import orjson
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: bench/ is on the path, the repository is not
    sys.path.insert(0, str(REPO))

from bench import ingest, thresholds  # noqa: E402
from bench.casework import pupils_of  # noqa: E402
from bench.ingest import BenchError, Infra, say  # noqa: E402
from bench.thresholds import Cleanup, Service  # noqa: E402

ALERTS_TOPIC, ESCALATIONS_TOPIC = "attendance.alerts.v1", "casework.escalations.v1"
EVENT_TYPES = ["attendance.alert.*", "casework.*"]  # what the bench's LA system subscribes to
FLAG_P95_MS = 1000
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}
WARMUP_SCHOOL, BACKGROUND_SCHOOL = 900, 100  # school indexes (URN 700001 + index); throughput uses 0..
WARMUP_S = 2.0  # latency: events produced in the first seconds of the load are not counted
CHUNK = 500  # events per outbox row: the relays send a row as record batches
# Plain-http receiver, a short poll; stage letters that case events request are recorded but not
# rendered during the run (rendering is not a webhook cost, and needs the thresholds service).
SERVICE_ENV = {"ALLOW_HTTP_ENDPOINTS": "true", "DISPATCH_POLL_SECONDS": "0.05", "LETTER_POLL_SECONDS": "3600"}
LEDGER_SQL = "SELECT status, count(*) AS n FROM notifications.deliveries GROUP BY status ORDER BY status"
ATTEMPTS_SQL = "SELECT outcome, count(*) AS n FROM notifications.attempts GROUP BY outcome ORDER BY outcome"
RECORDED_SQL = "SELECT count(*) FROM notifications.deliveries"
PENDING_SQL = "SELECT count(*) FROM notifications.deliveries WHERE status = 'pending'"
RETRIED_SQL = "SELECT count(*) FROM notifications.deliveries WHERE attempts > 1"
RECORDED_AT_SQL = (
    "SELECT event_id::text AS id, extract(epoch FROM created_at) AS at FROM notifications.deliveries "
    "WHERE event_id = ANY($1::uuid[]) AND replay_of IS NULL"
)
QUEUE_SCANS_SQL = (  # the dispatcher's claims (and its backlog gauge) read the pending queue's index
    "SELECT coalesce(sum(idx_scan), 0) AS scans, coalesce(sum(idx_tup_read), 0) AS rows "
    "FROM pg_stat_user_indexes WHERE schemaname = 'notifications' AND indexrelname = 'ix_deliveries_queue'"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/notifications.py",
        description="Notifications benchmark: webhook deliveries/s to a local receiver, and event -> delivery "
        "latency under a steady load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--phase", choices=("both", "throughput", "latency"), default="both")
    p.add_argument("--events", type=int, default=5_000, help="throughput: events produced at once")
    p.add_argument("--events-per-pupil", type=int, default=4, help="events per pupil (alert and case, in turn)")
    p.add_argument("--schools", type=int, default=5, help="schools (one LA) the pupils belong to")
    p.add_argument("--background-rate", type=int, default=50, help="latency: events/s, paced, open loop")
    p.add_argument("--seconds", type=float, default=30.0, help="latency: how long the load runs")
    p.add_argument("--receiver-delay-ms", type=float, default=0.0, help="the receiver answers after this delay")
    p.add_argument("--in-flight-per-subscription", type=int, default=None, help="service setting (default: its own)")
    p.add_argument("--deliver-timeout", type=float, default=600.0, help="seconds to wait for every delivery")
    p.add_argument("--workers", type=int, default=1, help="notifications processes (uvicorn workers)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fast-embedded", action="store_true", help="embedded PostgreSQL only: fsync off")
    p.add_argument("--profile", action="store_true", help="py-spy the notifications service in the throughput phase")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    args = p.parse_args(argv)
    if not 1 <= args.schools <= 40 or not 1 <= args.events_per_pupil <= 100:
        p.error("--schools must be 1..40 and --events-per-pupil 1..100")
    if not args.events_per_pupil <= args.events <= 40_000 * args.schools * args.events_per_pupil:
        p.error("--events must be at least --events-per-pupil and at most 40,000 pupils per school")
    if args.background_rate < 1 or args.seconds <= WARMUP_S or args.receiver_delay_ms < 0:
        p.error(f"--background-rate must be positive, --seconds above {WARMUP_S}, --receiver-delay-ms not negative")
    if args.background_rate * args.seconds > 40_000 * args.schools * args.events_per_pupil:
        p.error("--background-rate x --seconds: at most 40,000 pupils per school")
    return args


# ---------------------------------------------------------------- the receiver (a separate process)


def receiver_main(port: int, delay_ms: float) -> None:
    """A subscriber's endpoint, as cheap as an HTTP server gets: every POST is answered 204 after
    `delay_ms`; its webhook-id and arrival time are recorded and its signature verified (once the
    bench has told the secret). GET /_bench/count and /_bench/records?from=N report them."""
    asyncio.run(_receive(port, delay_ms / 1000))


async def _receive(port: int, delay: float) -> None:
    from urllib.parse import parse_qs, urlsplit

    from shared.webhooks import verify

    records: list[tuple[str, float]] = []  # (webhook-id, arrival), in arrival order
    seen: set[str] = set()
    state: dict[str, Any] = {"secret": None, "verified": 0, "invalid": 0, "unchecked": 0, "first_error": None}

    def control(method: str, target: str, body: bytes) -> bytes:
        url = urlsplit(target)
        if method == "POST" and url.path == "/_bench/secret":
            state["secret"] = body.decode()
            return b"{}"
        if url.path == "/_bench/records":
            start = int(parse_qs(url.query).get("from", ["0"])[0])
            return orjson.dumps(records[start:])
        return orjson.dumps({"requests": len(records), "distinct": len(seen)} | state | {"secret": None})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = {}
                for line in head[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                arrived = time.time()
                if target.startswith("/_bench/"):
                    out = control(method, target, body)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
                    writer.write(b"content-length: %d\r\n\r\n%s" % (len(out), out))
                else:
                    webhook_id = headers.get("webhook-id", "")
                    records.append((webhook_id, arrived))
                    seen.add(webhook_id)
                    if state["secret"] is None:
                        state["unchecked"] += 1
                    else:
                        try:
                            verify(body, headers, state["secret"])
                            state["verified"] += 1
                        except Exception as exc:
                            state["invalid"] += 1
                            state["first_error"] = state["first_error"] or repr(exc)[:300]
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


@dataclass
class Receiver:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the webhook receiver exited ({self.process.returncode}):\n{ingest.log_tail(self.log)}")


def start_receiver(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> Receiver:
    from shared.devstack import free_port

    port, log = free_port(), tmp / "receiver.log"
    code = (
        "import sys; from bench.notifications import receiver_main; receiver_main(int(sys.argv[1]), float(sys.argv[2]))"
    )
    command = [sys.executable, "-c", code, str(port), str(args.receiver_delay_ms)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out, process_group=0)
    cleanup.append(("stop webhook receiver", lambda: ingest.stop_process_group(process)))
    receiver = Receiver(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while True:
        receiver.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{receiver.url}/_bench/count", timeout=2).status_code == 200:
                return receiver
        if time.monotonic() > deadline:
            raise BenchError(f"the webhook receiver was not ready within 30s:\n{ingest.log_tail(log)}")
        time.sleep(0.1)


# ---------------------------------------------------------------- workload


class Sent(NamedTuple):
    topic: str
    upn: str
    seq: int  # the event's place among the pupil's events on its topic
    at: float  # the event's `time` (Unix seconds)


Chunk = tuple[str, list[str], list[bytes]]  # (topic, keys, payloads): one outbox row


class Workload:
    """A pupil's events, in turn: alert raised, case opened, alert cleared, case escalated, alert
    raised again, case referred, … As the thresholds and casework services build them (their
    models, CloudEvent envelope, subject and key the UPN, links to their APIs), each with its
    `time` set when it is built, just before it is produced."""

    CASE_STEPS = (
        ("open", None, "stage_1"),
        ("escalate_to_stage_2", "stage_1", "stage_2"),
        ("refer_to_ews", "stage_2", "stage_3_referred"),
        ("ews_accepted", "stage_3_referred", "stage_3_accepted"),
    )

    def __init__(self, seed: int) -> None:
        from services.casework.settings import CaseworkSettings
        from services.thresholds.settings import ThresholdsSettings

        self.rng, self.slots = random.Random(seed), thresholds.school_slots()
        self.alert_link, self.case_link = ThresholdsSettings().link, CaseworkSettings().link
        self.ids: dict[str, tuple[int, int]] = {}  # upn -> (alert id, case id)
        self.sent: dict[str, Sent] = {}  # event id -> what was sent

    def event(self, step: int, school: int, upn: str, at: datetime) -> tuple[str, bytes]:
        """(topic, payload) of the pupil's `step`-th event (0-based); recorded in `sent`."""
        from shared.events import (
            AlertCleared,
            AlertRaised,
            CaseOpened,
            CaseStageChanged,
            ReferralAccepted,
            ReferralMade,
            make_event,
        )
        from shared.outbox import encode

        alert_id, case_id = self.ids.setdefault(upn, (len(self.ids) + 1, len(self.ids) + 1))
        urn, seq = ingest.school_urn(school), step // 2
        common = {"urn": urn, "la_code": ingest.LA_CODE, "upn": upn}
        if step % 2 == 0:  # alerts: raised, cleared, raised, …
            topic, fields = (
                ALERTS_TOPIC,
                common | {"alert_id": alert_id * 100 + seq // 2, "rule_id": "persistent_absence"},
            )
            fields |= {"step": "", "policy_version": 1, "link": self.alert_link(f"/v1/alerts/{fields['alert_id']}")}
            if seq % 2:
                data: Any = AlertCleared(**fields, reason="condition_ended")
            else:
                possible = self.rng.randrange(20, min(len(self.slots), 300))
                n_absent = max(2, int(possible * self.rng.uniform(0.1, 0.3)))
                absent = sorted(self.rng.sample(range(possible), n_absent))
                sessions = [f"{self.slots[i][0]} {self.slots[i][1]} {self.rng.choice('INOG')}" for i in absent]
                figures = {"numerator": n_absent, "denominator": possible, "rate": n_absent / possible}
                figures |= {"threshold_percent": "10", "min_possible_sessions": 20}
                window = {"window_from": self.slots[0][0], "window_to": self.slots[possible - 1][0]}
                data = AlertRaised(**fields, figures=figures, sessions=sessions, **window)
        else:  # casework: opened, then one escalation after another
            event, source, target = self.CASE_STEPS[seq % len(self.CASE_STEPS)]
            model = {"open": CaseOpened, "refer_to_ews": ReferralMade, "ews_accepted": ReferralAccepted}
            topic, link = ESCALATIONS_TOPIC, self.case_link(f"/v1/cases/{case_id}")
            data = model.get(event, CaseStageChanged)(
                **common, case_id=case_id, event=event, from_state=source, state=target, link=link
            )
        cloud = make_event("thresholds" if topic == ALERTS_TOPIC else "casework", data, subject=upn, time=at)
        self.sent[str(cloud.id)] = Sent(topic, upn, seq, at.timestamp())
        return topic, encode(cloud)

    def chunks(self, items: list[tuple[int, int, str]], size: int = CHUNK) -> list[Chunk]:
        """Outbox rows of at most `size` events for (step, school, upn) items, in their order; a
        row holds one topic (each service's relay sends its own)."""
        out: list[Chunk] = []
        at = datetime.now(UTC)
        for step, school, upn in items:
            topic, payload = self.event(step, school, upn, at)
            if not out or out[-1][0] != topic or len(out[-1][1]) >= size:
                out.append((topic, [], []))
            out[-1][1].append(upn)
            out[-1][2].append(payload)
        return out


def rounds(pupils: list[tuple[int, str]], per_pupil: int) -> Iterator[tuple[int, int, str]]:
    """(step, school, upn): every pupil's first event, then every pupil's second, … (a pupil's
    events are spread out in time, as in a school term), for ever if `per_pupil` is 0."""
    step = 0
    while not per_pupil or step < per_pupil:
        for school, upn in pupils:
            yield step, school, upn
        step += 1


async def send(producer: Any, chunks: list[Chunk]) -> list[asyncio.Future[Any]]:
    from shared.outbox import _send_row  # how the outbox relay produces a batch of events

    acks: list[asyncio.Future[Any]] = []
    for topic, keys, payloads in chunks:
        acks += await _send_row(producer, topic, keys, payloads)
    return acks


@contextlib.asynccontextmanager
async def clients(infra: Infra, receiver: Receiver) -> AsyncIterator[tuple[asyncpg.Connection, Any, httpx.AsyncClient]]:
    """A database connection (the ledger), a producer with the relays' settings, the receiver's client."""
    from shared.kafka import make_producer

    conn, producer = await asyncpg.connect(ingest.asyncpg_dsn(infra.database_url)), make_producer(infra.bootstrap)
    http = httpx.AsyncClient(base_url=receiver.url, timeout=30)
    await producer.start()
    try:
        for topic in (ALERTS_TOPIC, ESCALATIONS_TOPIC):
            await producer.partitions_for(topic)  # metadata before any clock starts
        yield conn, producer, http
    finally:
        await producer.stop()
        await http.aclose()
        await conn.close()


async def receiver_count(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/_bench/count")
    response.raise_for_status()
    return response.json()


async def wait_delivered(
    conn: asyncpg.Connection,
    http: httpx.AsyncClient,
    service: Service,
    receiver: Receiver,
    target: tuple[int, int],
    timeout: float,
) -> dict[str, Any]:
    """Wait until the receiver has `target[1]` distinct webhook-ids and nothing is pending in the
    ledger (a retry could still bring a duplicate). Stops early when every event is in the ledger,
    nothing is pending and nothing new arrived for 5 s: what is missing then never comes.
    `target[0]` is the ledger's row count once the consumer has recorded every event."""
    rows_target, distinct_target = target
    started, deadline, checked, recorded_at = time.time(), time.monotonic() + timeout, 0.0, None
    last_distinct, last_change, pending, rows = -1, time.monotonic(), -1, 0
    while True:
        service.check()
        receiver.check()
        count = await receiver_count(http)
        if count["distinct"] != last_distinct:
            last_distinct, last_change = count["distinct"], time.monotonic()
        if recorded_at is None or time.monotonic() - checked > 0.5:
            rows, pending = await conn.fetchval(RECORDED_SQL), await conn.fetchval(PENDING_SQL)
            checked = time.monotonic()
            if recorded_at is None and rows >= rows_target:
                recorded_at = time.time()
        if count["distinct"] >= distinct_target and pending == 0:
            break
        if rows >= rows_target and pending == 0 and time.monotonic() - last_change > 5:
            say(f"  nothing pending and nothing new for 5 s: {distinct_target - count['distinct']:,} never arrived")
            break
        if time.monotonic() > deadline:
            arrived = f"{count['distinct']:,}/{distinct_target:,}"
            say(f"  gave up after {timeout:.0f}s: {arrived} arrived, {pending:,} pending")
            break
        await asyncio.sleep(0.05)
    recorded_after = None if recorded_at is None else recorded_at - started
    return {"recorded_after_s": recorded_after, "all_recorded": rows >= rows_target}


async def fetch_records(http: httpx.AsyncClient, start: int) -> list[tuple[str, float]]:
    response = await http.get("/_bench/records", params={"from": start})
    response.raise_for_status()
    return [(webhook_id, at) for webhook_id, at in response.json()]


def analyse(records: list[tuple[str, float]], sent: dict[str, Sent]) -> dict[str, Any]:
    """Exactly once and in order per pupil (per topic: the order the events were produced in),
    and each event's first arrival."""
    first: dict[str, float] = {}
    last_seq: dict[tuple[str, str], int] = {}
    duplicates = foreign = 0
    out_of_order: list[str] = []
    for webhook_id, at in records:
        event = sent.get(webhook_id)
        if event is None:
            foreign += 1
            continue
        if webhook_id in first:
            duplicates += 1
            continue
        first[webhook_id] = at
        key = (event.topic, event.upn)
        if event.seq < last_seq.get(key, -1):
            out_of_order.append(f"{event.upn} {event.topic} #{event.seq} after #{last_seq[key]}")
        last_seq[key] = max(event.seq, last_seq.get(key, -1))
    return {
        "first_arrival": first,
        "delivered": len(first),
        "missing": len(sent) - len(first),
        "duplicates": duplicates,
        "foreign": foreign,
        "out_of_order": len(out_of_order),
        "out_of_order_examples": out_of_order[:10],
    }


def percentiles_ms(sorted_seconds: list[float]) -> dict[str, float]:
    return {k: 1000 * ingest.percentile(sorted_seconds, q) for k, q in PERCENTILES.items()}


def checks_of(analysis: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in analysis.items() if k != "first_arrival"}


def memory(service: Service) -> dict[str, float]:
    """RSS of the service's processes now, and the sum of their peaks (VmHWM), in MB."""
    rss = peak = 0.0
    for pid in ingest.process_tree(service.process.pid):
        with contextlib.suppress(psutil.Error):
            rss += psutil.Process(pid).memory_info().rss / 2**20
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as status:
            peak += next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0) / 1024
    return {"rss_mb": rss, "peak_rss_mb": peak}


async def queue_reads(conn: asyncpg.Connection, before: asyncpg.Record | None = None) -> dict[str, int]:
    """Scans of the pending-queue index and index entries read (since `before`). Backends publish
    their statistics about once a second, so this waits a little first."""
    await asyncio.sleep(1.2)
    now = await conn.fetchrow(QUEUE_SCANS_SQL)
    return {k: now[k] - (before[k] if before else 0) for k in ("scans", "rows")}


def idle_cpu(service: Service, seconds: float = 3.0) -> float:
    """Share of a core the service uses with nothing to deliver (its polling loops)."""

    def used() -> float:
        total = 0.0
        for pid in ingest.process_tree(service.process.pid):
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    before = used()
    time.sleep(seconds)
    return (used() - before) / seconds


async def cpu_report(
    cpu: ingest.CpuMeter, infra: Infra, service: Service, receiver: Receiver, wall: float
) -> dict[str, Any]:
    groups = {"notifications service": ingest.process_tree(service.process.pid)}
    groups |= {"webhook receiver": {receiver.process.pid}, "Tansu broker": {infra.broker_pid}}
    groups |= {"bench (this process)": {os.getpid()}}
    if infra.postgres_local:
        groups["PostgreSQL"] = await ingest.postgres_pids(infra.database_url, infra.database_name)
    return cpu.end(groups, wall)


# ---------------------------------------------------------------- setup: subscription and warm-up


async def subscribe(infra: Infra, service: Service, receiver: Receiver) -> dict[str, Any]:
    """The LA system's webhook subscription, created over HTTP; the receiver gets its secret."""
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    settings = PlatformSettings(jwt_secret=infra.jwt_secret)
    token = issue_token(settings, subject="bench-la-system", role=Role.LA_SYSTEM, la_code=ingest.LA_CODE)
    body = {"url": f"{receiver.url}/hooks/attendance", "event_types": EVENT_TYPES, "description": "bench receiver"}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        response = await api.post("/v1/subscriptions", json=body, headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 201:
            raise BenchError(f"POST /v1/subscriptions: {response.status_code} {response.text[:500]}")
        created = response.json()
        (await api.post(f"{receiver.url}/_bench/secret", content=created["secret"].encode())).raise_for_status()
    return created


async def warm_up(infra: Infra, service: Service, receiver: Receiver, workload: Workload) -> float:
    """A few events end to end before any clock: the consumer has joined its group and the
    dispatcher has its connections. Returns the seconds it took."""
    pupils = pupils_of(range(WARMUP_SCHOOL, WARMUP_SCHOOL + 1), 20)
    async with clients(infra, receiver) as (conn, producer, http):
        base, rows = (await receiver_count(http))["distinct"], await conn.fetchval(RECORDED_SQL)
        started = time.monotonic()
        chunks = workload.chunks(list(rounds(pupils, 2)))
        await asyncio.gather(*await send(producer, chunks))
        total = sum(len(keys) for _, keys, _ in chunks)
        await wait_delivered(conn, http, service, receiver, (rows + total, base + total), 120)
        if (await receiver_count(http))["distinct"] < base + total:
            raise BenchError(f"warm-up: not every event was delivered:\n{ingest.log_tail(service.log, 20)}")
        return time.monotonic() - started


# ---------------------------------------------------------------- 1. throughput


async def measure_throughput(
    args: argparse.Namespace, infra: Infra, service: Service, receiver: Receiver
) -> dict[str, Any]:
    """Every event at once (a backlog, as after an outage or a busy morning); the clock runs from
    the first produce; the rate is counted from the first delivery to the last."""
    workload = Workload(args.seed)
    pupils = pupils_of(range(args.schools), -(-args.events // args.events_per_pupil))
    items = list(rounds(pupils, args.events_per_pupil))[: args.events]
    chunks = workload.chunks(items)
    total = len(items)
    profile_path = ingest.RESULTS_DIR / f"profile-notifications-{datetime.now():%Y%m%d-%H%M%S}.txt"
    profiler = ingest.start_profiler(service.process.pid, args.profile_rate, profile_path) if args.profile else None
    try:
        async with clients(infra, receiver) as (conn, producer, http):
            before, rows = await receiver_count(http), await conn.fetchval(RECORDED_SQL)
            scans = await conn.fetchrow(QUEUE_SCANS_SQL)
            say(f"throughput: {total:,} events for {len(pupils):,} pupils ({args.events_per_pupil} each) at once …")
            cpu = ingest.CpuMeter()
            cpu.begin()
            t_first = time.time()
            await asyncio.gather(*await send(producer, chunks))
            produce_s = time.time() - t_first
            say(f"  produced and acked in {produce_s:.2f}s; waiting for the deliveries …")
            waited = await wait_delivered(
                conn, http, service, receiver, (rows + total, before["distinct"] + total), args.deliver_timeout
            )
            records = await fetch_records(http, before["requests"])
            analysis = analyse(records, workload.sent)
            arrivals = sorted(analysis["first_arrival"].values())
            t_last = arrivals[-1] if arrivals else time.time()
            ingest.stop_profiler(profiler)
            cpu_out = await cpu_report(cpu, infra, service, receiver, max(t_last - t_first, 1e-3))
            count, reads = await receiver_count(http), await queue_reads(conn, scans)
    finally:
        ingest.stop_profiler(profiler)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    out = {"events": total, "pupils": len(pupils), "produce_s": produce_s, "requests": len(records)}
    out |= {"deliveries_per_s": len(arrivals) / span if span > 0 else float("nan"), "first_to_last_s": span}
    out |= {"first_delivery_after_s": arrivals[0] - t_first if arrivals else None}
    out |= {"end_to_end_s": t_last - t_first, "end_to_end_per_s": len(arrivals) / (t_last - t_first)}
    out |= {"recorded_after_s": waited["recorded_after_s"], "checks": checks_of(analysis), "cpu": cpu_out}
    out |= {"signatures": {k: count[k] for k in ("verified", "invalid", "unchecked", "first_error")}}
    out |= {"memory": memory(service), "queue_index": reads}
    if args.profile and profile_path.exists():
        out["profile"] = {"file": str(profile_path.relative_to(REPO)), **ingest.summarise_profile(profile_path, 12)}
    return out


# ---------------------------------------------------------------- 2. event -> delivery under load


async def measure_latency(
    args: argparse.Namespace, infra: Infra, service: Service, receiver: Receiver
) -> dict[str, Any]:
    """A paced, open-loop load at `--background-rate`; every event is measured from its `time` to
    its first arrival at the receiver (those of the first WARMUP_S seconds are not counted)."""
    workload, tick = Workload(args.seed + 2), 0.02  # a batch of events every 20 ms
    n_pupils = max(1, math.ceil(args.background_rate * args.seconds / args.events_per_pupil))
    schools = range(BACKGROUND_SCHOOL, BACKGROUND_SCHOOL + args.schools)
    items = rounds(pupils_of(schools, n_pupils), 0)  # never runs out
    produced, acks = [0], []
    async with clients(infra, receiver) as (conn, producer, http):
        before, rows = await receiver_count(http), await conn.fetchval(RECORDED_SQL)
        scans = await conn.fetchrow(QUEUE_SCANS_SQL)
        say(f"latency: {args.background_rate:,} events/s for {args.seconds:.0f}s over {n_pupils:,} pupils …")
        cpu = ingest.CpuMeter()
        cpu.begin()
        t_start, started, i = time.time(), time.perf_counter(), 0
        while (elapsed := time.perf_counter() - started) < args.seconds:
            due = round(args.background_rate * elapsed) - produced[0]
            if part := [item for _, item in zip(range(due), items, strict=False)]:
                acks.extend(await send(producer, workload.chunks(part)))
                produced[0] += len(part)
            i += 1
            await asyncio.sleep(max(0.0, started + i * tick - time.perf_counter()))
        load_s = time.perf_counter() - started
        await asyncio.gather(*acks)
        t_end = time.time()
        await wait_delivered(
            conn, http, service, receiver, (rows + produced[0], before["distinct"] + produced[0]), args.deliver_timeout
        )
        records = await fetch_records(http, before["requests"])
        analysis = analyse(records, workload.sent)
        t_last = max(analysis["first_arrival"].values(), default=t_end)
        cpu_out = await cpu_report(cpu, infra, service, receiver, max(t_last, t_end) - t_start)
        reads = await queue_reads(conn, scans)
        # When the consumer recorded each delivery (its transaction's start): splits the latency.
        rows = await conn.fetch(RECORDED_AT_SQL, list(workload.sent))
    recorded = {r["id"]: float(r["at"]) for r in rows}
    arrived, counted = analysis["first_arrival"], {k: v for k, v in workload.sent.items() if v.at >= t_start + WARMUP_S}
    latencies = sorted(arrived[k] - v.at for k, v in counted.items() if k in arrived)
    both = [(k, v) for k, v in counted.items() if k in arrived and k in recorded]
    split = {
        "event_to_ledger": sorted(recorded[k] - v.at for k, v in both),
        "ledger_to_receiver": sorted(arrived[k] - recorded[k] for k, _ in both),
    }
    by_window: list[float] = []  # p95 per 5 s of load, by when the events were produced
    for w in range(int(WARMUP_S // 5), math.ceil(args.seconds / 5)):
        window = sorted(
            arrived[k] - v.at for k, v in counted.items() if k in arrived and w == int((v.at - t_start) // 5)
        )
        if window:
            by_window.append(1000 * ingest.percentile(window, 0.95))
    out = {"events": produced[0], "events_per_s": produced[0] / load_s, "measured": len(latencies)}
    out |= {"latency_ms": percentiles_ms(latencies), "split_ms": {k: percentiles_ms(v) for k, v in split.items()}}
    out |= {"p95_by_5s_ms": by_window, "caught_up_after_load_s": max(0.0, t_last - t_end)}
    out |= {"checks": checks_of(analysis), "cpu": cpu_out, "memory": memory(service), "queue_index": reads}
    return out


# ---------------------------------------------------------------- report and main


async def ledger(infra: Infra) -> dict[str, Any]:
    conn = await asyncpg.connect(ingest.asyncpg_dsn(infra.database_url))
    try:
        deliveries = {r["status"]: r["n"] for r in await conn.fetch(LEDGER_SQL)}
        attempts = {r["outcome"]: r["n"] for r in await conn.fetch(ATTEMPTS_SQL)}
        letters = None
        if await conn.fetchval("SELECT to_regclass('notifications.letters') IS NOT NULL"):
            letters = await conn.fetchval("SELECT count(*) FROM notifications.letters")
        out = {"deliveries": deliveries, "attempts": attempts, "retried": await conn.fetchval(RETRIED_SQL)}
        return out | {"letters_requested": letters}
    finally:
        await conn.close()


def print_checks(checks: dict[str, Any], signatures: dict[str, Any] | None = None) -> None:
    line = f"{checks['delivered']:,} delivered, {checks['missing']:,} missing, {checks['duplicates']:,} duplicates"
    say(f"exactly once {line}; {checks['out_of_order']:,} out of order per pupil")
    if checks["foreign"]:
        say(f"             {checks['foreign']:,} requests with an unknown webhook-id")
    for example in checks["out_of_order_examples"]:
        say(f"  order      {example}")
    if signatures:
        extra = f" ({signatures['first_error']})" if signatures["first_error"] else ""
        say(f"signatures   {signatures['verified']:,} verified, {signatures['invalid']:,} invalid{extra}")
    if checks["missing"] or checks["duplicates"] or checks["out_of_order"]:
        say("FLAG         deliveries were lost, duplicated or out of order (see above)")


def print_memory(m: dict[str, float]) -> None:
    say(f"  memory     notifications service RSS {m['rss_mb']:,.0f} MB now, peak {m['peak_rss_mb']:,.0f} MB")


def print_queue(q: dict[str, int], deliveries: int) -> None:
    per = f"{q['scans'] / deliveries:,.1f} scans and {q['rows'] / deliveries:,.0f} entries read per delivery"
    say(f"  queue      pending-queue index: {q['scans']:,} scans, {q['rows']:,} entries read ({per})")


def print_summary(s: dict[str, Any]) -> None:
    env, c, bar = s["environment"], s["config"], "=" * 100
    say(f"\n{bar}\nNOTIFICATIONS BENCHMARK SUMMARY\n{bar}")
    say(f"code         commit {env['code']}; {env['cpus']} CPUs, {env['python']}, {env['platform']}")
    say(f"PostgreSQL   {env['postgres_source']}; {env['postgres_durability']}. Kafka: Tansu (in memory)")
    d = env["dispatcher"]
    say(
        f"service      {c['workers']} process(es); in flight at most {d['max_in_flight']} per process, "
        f"{d['max_in_flight_per_subscription']} per subscription; poll {d['dispatch_poll_seconds']}s"
    )
    say(f"             idle, with nothing to deliver: {100 * env['service_idle_core_share']:.0f}% of a core")
    say(f"receiver     loopback HTTP/1.1, answers 204 after {c['receiver_delay_ms']:g} ms; one subscription")
    if env["machine_busy_before_start_pct"] > 20:
        say(f"WARNING      the machine was {env['machine_busy_before_start_pct']:.0f}% busy before the run started")
    if t := s.get("throughput"):
        say("-" * 100)
        say(f"THROUGHPUT   {t['deliveries_per_s']:,.0f} deliveries/s (first -> last delivery at the receiver)")
        say(f"             {t['events']:,} events ({t['pupils']:,} pupils) produced at once: {t['produce_s']:.2f}s")
        say(
            f"             first produce -> last delivery {t['end_to_end_s']:.2f}s ({t['end_to_end_per_s']:,.0f}/s); "
            f"first delivery after {t['first_delivery_after_s'] or float('nan'):.2f}s"
        )
        if t["recorded_after_s"] is not None:
            say(f"             the consumer had recorded every delivery after {t['recorded_after_s']:.2f}s")
        print_checks(t["checks"], t["signatures"])
        thresholds.print_cpu(t["cpu"])
        print_memory(t["memory"])
        print_queue(t["queue_index"], max(1, t["checks"]["delivered"]))
        if p := t.get("profile"):
            say(f"  profile    {p['file']} ({p['samples']:,} samples); top self time, then repository code inclusive:")
            for name, share in [*p["top_self_pct"].items(), *list(p["top_inclusive_repo_pct"].items())[:15]]:
                say(f"             {share:5.1f}%  {name}")
    if lat := s.get("latency"):
        ms = "  ".join(f"{k} {v:,.0f} ms" for k, v in lat["latency_ms"].items())
        say("-" * 100)
        say(f"LATENCY      event time -> arrival at the receiver: {ms}")
        say(f"             over {lat['measured']:,} events (those of the first {WARMUP_S:.0f}s not counted)")
        for name, title in (("event_to_ledger", "event -> in the ledger"), ("ledger_to_receiver", "ledger -> arrival")):
            part = "  ".join(f"{k} {v:,.0f} ms" for k, v in lat["split_ms"][name].items())
            say(f"             {title:22} {part}")
        say(f"             p95 by 5 s of load: {', '.join(f'{v:,.0f}' for v in lat['p95_by_5s_ms'])} ms")
        say(f"load         {lat['events_per_s']:,.0f} events/s ({lat['events']:,} events)")
        say(f"             last delivery {lat['caught_up_after_load_s']:.2f}s after the load stopped")
        print_checks(lat["checks"])
        if lat["latency_ms"]["p95"] > FLAG_P95_MS or lat["checks"]["missing"]:
            say(f"FLAG         p95 event -> delivery is above {FLAG_P95_MS:,} ms (or deliveries are missing)")
        capacity = s.get("throughput", {}).get("deliveries_per_s", math.inf)
        if capacity < c["background_rate"]:
            say(f"NOTE         the load is above the throughput measured ({capacity:,.0f}/s): a growing backlog")
        say("             CPU below: from the start of the load until the last delivery")
        thresholds.print_cpu(lat["cpu"])
        print_memory(lat["memory"])
        print_queue(lat["queue_index"], max(1, lat["checks"]["delivered"]))
    say("-" * 100)
    led = s["ledger"]
    statuses = ", ".join(f"{k} {v:,}" for k, v in led["deliveries"].items()) or "none"
    attempts = ", ".join(f"{k} {v:,}" for k, v in led["attempts"].items()) or "none"
    say(f"ledger       deliveries: {statuses} (warm-up included); {led['retried']:,} needed more than one attempt")
    say(f"             attempts: {attempts}")
    if led["letters_requested"] is not None:
        say(f"             stage letters requested by the case events: {led['letters_requested']:,} (not rendered)")
    say(f"service log  {s['dead_lettered']} events dead-lettered; {s['claim_failures']} failed claims")
    say(bar)


def run(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> dict[str, Any]:
    from services.notifications.settings import NotificationsSettings
    from shared.migrations import upgrade

    os.environ.update(SERVICE_ENV)  # the service inherits the bench's environment
    if args.in_flight_per_subscription:
        os.environ["MAX_IN_FLIGHT_PER_SUBSCRIPTION"] = str(args.in_flight_per_subscription)
    infra = Infra(jwt_secret=secrets.token_urlsafe(48))
    busy_before = ingest.background_load()
    ingest.start_postgres(args, infra, cleanup)
    ingest.create_database(infra, cleanup)
    upgrade("notifications", infra.database_url)
    say(f"PostgreSQL: {infra.postgres_source}; database {infra.database_name} created and migrated")
    ingest.start_broker(infra, tmp, cleanup)
    ingest.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    receiver = start_receiver(args, tmp, cleanup)
    service = thresholds.start_service("notifications", infra, tmp, cleanup, args.workers)
    say(f"Tansu on {infra.bootstrap}; notifications on {service.url}; receiver on {receiver.url}")
    for topic in (ALERTS_TOPIC, ESCALATIONS_TOPIC):  # the consumer creates its topics
        ingest.run_async(ingest.wait_for_topic(infra.bootstrap, topic, 60))
    subscription = ingest.run_async(subscribe(infra, service, receiver))
    say(f"subscription {subscription['id']}: {', '.join(EVENT_TYPES)} of LA {ingest.LA_CODE}")
    warm_s = ingest.run_async(warm_up(infra, service, receiver, Workload(0)))
    say(f"warm-up: 40 events delivered end to end in {warm_s:.2f}s")
    idle = idle_cpu(service)
    settings = NotificationsSettings()
    summary = thresholds.summary_head("notifications", args, infra, busy_before)
    summary["environment"] |= {
        "dispatcher": {
            "max_in_flight": settings.max_in_flight,
            "max_in_flight_per_subscription": settings.max_in_flight_per_subscription,
            "dispatch_poll_seconds": settings.dispatch_poll_seconds,
            "delivery_timeout_seconds": settings.delivery_timeout_seconds,
        },
        "service_idle_core_share": idle,
    }
    if args.phase in ("both", "throughput"):
        summary["throughput"] = ingest.run_async(measure_throughput(args, infra, service, receiver))
    if args.phase in ("both", "latency"):
        summary["latency"] = ingest.run_async(measure_latency(args, infra, service, receiver))
    summary["ledger"] = ingest.run_async(ledger(infra))
    summary["dead_lettered"] = service.log_count("event_dead_lettered")
    summary["claim_failures"] = service.log_count("dispatch_claim_failed")
    return summary


def main(argv: list[str] | None = None) -> int:
    return ingest.isolated_main("notifications", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    sys.exit(main())
