"""Ingest benchmark: whole-school registers over HTTP into the registers service, through the
outbox to Kafka, against the raw limits of PostgreSQL and aiokafka on the same machine.

Run with `make bench-ingest` (or `.venv/bin/python bench/ingest.py --help`). See bench/README.md.

What runs where:
- PostgreSQL: DATABASE_URL if set, else the local server on 127.0.0.1:5432 if reachable, else an
  embedded server (.data/bench/postgres). A fresh database `attendance_bench_<hex>` is created,
  migrated and dropped at the end.
- Kafka: a Tansu broker (in memory) on a free port.
- The registers service: a separate process (`python -m shared.cli serve registers`).
- A consumer counting records on attendance.marks.v1: a separate process.
- The simulated MIS (httpx clients), the outbox poller and the raw-limit measurements: this process.

It is a measurement, not a test: missed targets print FAIL but the exit status stays 0. Only a
failure to run (infrastructure, crashed service) exits non-zero.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    # Keep the developer's running platform (.data/platform.env) out of the benchmark; the
    # consumer process (multiprocessing spawn) inherits this.
    os.environ["ATTENDANCE_DATA_DIR"] = tempfile.mkdtemp(prefix="attendance-bench-")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
MARKS_TOPIC = "attendance.marks.v1"  # shared.events.MARKS_TOPIC (not imported: the consumer stays light)
LA_CODE = "801"
WARMUP_URN = "799999"
RESULTS_DIR = REPO / "bench" / "results"
TARGET_E2E_MARKS_PER_S = 20_000
TARGET_RATIO_TO_RAW_UPSERT = 0.25

# Share of each code per session, in percent; the rest (≈93%) is the present mark of the session.
ABSENCE_MIX = [("L", 2.0), ("I", 2.5), ("M", 0.8), ("N", 0.7), ("O", 0.4), ("G", 0.4), ("U", 0.2)]
PRESENT_MARK = {"AM": "/", "PM": "\\"}
TAKEN_BY = {"name": "MIS sync", "position": "Attendance officer"}
MARK_COLUMNS = [
    "urn",
    "date",
    "session",
    "upn",
    "code",
    "sub_code",
    "minutes_late",
    "comment",
    "recorded_at",
    "recorded_by",
    "submission_id",
    "change_version",
]


class BenchError(RuntimeError):
    """The benchmark could not run (infrastructure or service failure)."""


def say(message: str = "") -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description="Registers ingest benchmark: HTTP -> PostgreSQL + outbox -> Kafka, versus raw limits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--schools", type=int, default=20, help="schools posting registers")
    p.add_argument("--pupils", type=int, default=1000, help="pupils per school (marks per register)")
    p.add_argument("--sessions", type=int, default=4, help="sessions per school (AM/PM over sessions/2 days)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent MIS clients (HTTP/1.1 keep-alive)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the registers service")
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulated registers")
    p.add_argument(
        "--fast-embedded",
        action="store_true",
        help="only when an embedded PostgreSQL is started: fsync/synchronous_commit/full_page_writes off",
    )
    p.add_argument("--publish-timeout", type=float, default=600.0, help="seconds to wait for every event on Kafka")
    p.add_argument("--skip-raw", action="store_true", help="skip the raw PostgreSQL / aiokafka limits")
    p.add_argument("--raw-rounds", type=int, default=5, help="rounds of each raw measurement (the median is used)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the service process(es) with py-spy (must be installed) from the first POST to the last "
        "event; writes collapsed stacks to bench/results/ and prints the top costs",
    )
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    args = p.parse_args(argv)
    for name in ("schools", "pupils", "sessions", "concurrency", "workers", "raw_rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pupils > 5000:
        p.error("--pupils: the service accepts at most 5000 marks per register (max_marks_per_register)")
    return args


# ---------------------------------------------------------------- workload


@dataclass
class Register:
    school: int
    urn: str
    date: date
    session: str
    marks: list[dict[str, Any]]
    body: bytes = b""


def school_urn(index: int) -> str:
    return str(700001 + index)


def school_dates(sessions: int, today: date) -> list[tuple[date, str]]:
    """The first `sessions` of (day, AM), (day, PM), ... over recent weekdays before today, oldest first."""
    days: list[date] = []
    day = today - timedelta(days=1)
    while len(days) < math.ceil(sessions / 2):
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    slots = [(d, s) for d in sorted(days) for s in ("AM", "PM")]
    return slots[:sessions]


def pupil_upns(school: int, pupils: int) -> list[str]:
    from shared.domain.upn import make_upn

    establishment = 2000 + school % 8000
    return [make_upn(int(LA_CODE), establishment, (15 + p // 1000) % 100, p % 1000) for p in range(pupils)]


def simulated_marks(upns: list[str], session: str, rng: random.Random) -> list[dict[str, Any]]:
    """A whole-school register: ≈93% present, some late (with minutes), ill, medical, unauthorised."""
    marks = []
    for upn in upns:
        roll = rng.random() * 100
        code = PRESENT_MARK[session]
        for candidate, share in ABSENCE_MIX:
            if roll < share:
                code = candidate
                break
            roll -= share
        mark: dict[str, Any] = {"upn": upn, "code": code}
        if code in ("L", "U"):
            mark["minutes_late"] = rng.randint(1, 45)
        marks.append(mark)
    return marks


def build_workload(
    schools: int, pupils: int, sessions: int, seed: int, today: date
) -> tuple[list[Register], list[tuple[date, str]]]:
    """Every (school, date, session) register, ordered so concurrent posts hit different schools."""
    slots = school_dates(sessions, today)
    upns = [pupil_upns(s, pupils) for s in range(schools)]
    registers = []
    for slot_index, (day, session) in enumerate(slots):
        for s in range(schools):
            rng = random.Random(f"{seed}:{s}:{slot_index}")
            marks = simulated_marks(upns[s], session, rng)
            body = orjson.dumps({"date": day.isoformat(), "session": session, "taken_by": TAKEN_BY, "marks": marks})
            registers.append(Register(s, school_urn(s), day, session, marks, body))
    return registers, slots


# ---------------------------------------------------------------- Kafka consumer process


@dataclass
class ConsumerShared:
    """State the consumer process shares with this one (written only by the consumer)."""

    ready: Any
    stop: Any
    count: Any  # records seen on the topic
    value_bytes: Any  # sum of record value sizes
    first_after_base: Any  # time.time() of the first record past `base`
    last_seen: Any  # time.time() of the most recent batch
    base: Any  # armed by this process: count before the timed phase (-1: not armed)
    error: Any


def new_consumer_shared(ctx: Any) -> ConsumerShared:
    return ConsumerShared(
        ready=ctx.Event(),
        stop=ctx.Event(),
        count=ctx.Value("q", 0, lock=False),
        value_bytes=ctx.Value("q", 0, lock=False),
        first_after_base=ctx.Value("d", 0.0, lock=False),
        last_seen=ctx.Value("d", 0.0, lock=False),
        base=ctx.Value("q", -1, lock=False),
        error=ctx.Array("c", 512, lock=False),
    )


KEEP_RECORDS = 500_000  # measured records kept (key, value) for the raw produce, which replays them


def consumer_main(bootstrap: str, topic: str, shared: ConsumerShared, records_path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    kept: list[tuple[bytes, bytes]] = []
    try:
        asyncio.run(_consume(bootstrap, topic, shared, kept))
    except Exception as exc:  # reported to the parent
        shared.error.value = repr(exc).encode()[:500]
    finally:
        with open(records_path, "wb") as out:
            pickle.dump(kept, out, protocol=pickle.HIGHEST_PROTOCOL)


async def _consume(bootstrap: str, topic: str, shared: ConsumerShared, kept: list[tuple[bytes, bytes]]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = None
        for _ in range(200):
            await consumer.topics()  # refreshes metadata
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            await asyncio.sleep(0.1)
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        shared.ready.set()
        while not shared.stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=20_000)
            now = time.time()
            n = 0
            size = 0
            base = shared.base.value
            before = shared.count.value
            for records in batch.values():
                n += len(records)
                size += sum(len(r.value or b"") for r in records)
                if base >= 0 and len(kept) < KEEP_RECORDS:
                    kept.extend((r.key or b"", r.value or b"") for r in records)
            if not n:
                continue
            shared.value_bytes.value += size
            shared.last_seen.value = now
            if base >= 0 and before <= base < before + n:
                shared.first_after_base.value = now
            shared.count.value = before + n
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- infrastructure


@dataclass
class Infra:
    admin_url: str = ""
    database_url: str = ""
    database_name: str = ""
    postgres_source: str = ""
    postgres_local: bool = False
    postgres_settings: dict[str, str] = field(default_factory=dict)
    bootstrap: str = ""
    broker_pid: int = 0
    consumer_pid: int = 0
    service: subprocess.Popen[bytes] | None = None
    service_port: int = 0
    service_log: Path | None = None
    jwt_secret: str = ""


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+asyncpg://", url)


def asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def postgres_facts(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])",
            ["fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_connections", "server_version"],
        )
    finally:
        await conn.close()
    facts = {}
    for r in rows:
        value = r["setting"]
        if r["name"] == "shared_buffers" and r["unit"] == "8kB":
            value = f"{int(value) * 8 // 1024}MB"
        facts[r["name"]] = value
    return facts


def describe_durability(facts: dict[str, str]) -> str:
    durable = facts.get("fsync") == "on" and facts.get("synchronous_commit") != "off"
    flags = " ".join(f"{k}={facts.get(k, '?')}" for k in ("fsync", "synchronous_commit", "full_page_writes"))
    return f"{'durable' if durable else 'NOT durable'} ({flags})"


def start_postgres(args: argparse.Namespace, infra: Infra, cleanup: list[tuple[str, Callable[[], Any]]]) -> None:
    from shared.devstack import EmbeddedPostgres, free_port, postgres_reachable

    configured = os.environ.get("DATABASE_URL")
    if configured:
        url = sqlalchemy_url(configured)
        if not postgres_reachable(url):
            raise BenchError(f"DATABASE_URL is set but PostgreSQL does not answer there ({url})")
        infra.admin_url, infra.postgres_source = url, "DATABASE_URL"
    elif postgres_reachable(LOCAL_POSTGRES):
        infra.admin_url, infra.postgres_source = LOCAL_POSTGRES, "local server 127.0.0.1:5432"
    else:
        server = EmbeddedPostgres(REPO / ".data" / "bench" / "postgres", free_port(), durable=not args.fast_embedded)
        say("starting embedded PostgreSQL …")
        infra.admin_url = server.start()
        cleanup.append(("stop embedded PostgreSQL", server.stop))
        infra.postgres_source = f"embedded (.data/bench/postgres, port {server.port})"
    from sqlalchemy.engine import make_url

    host = make_url(infra.admin_url).host or ""
    infra.postgres_local = host in ("", "127.0.0.1", "localhost", "::1")
    infra.postgres_settings = run_async(postgres_facts(infra.admin_url))


def create_database(infra: Infra, cleanup: list[tuple[str, Callable[[], Any]]]) -> None:
    from shared.devstack import drop_database, ensure_database
    from shared.migrations import upgrade

    infra.database_name = f"attendance_bench_{uuid.uuid4().hex[:10]}"
    run_async(ensure_database(infra.admin_url, infra.database_name))
    cleanup.append(
        (f"drop database {infra.database_name}", lambda: run_async(drop_database(infra.admin_url, infra.database_name)))
    )
    infra.database_url = with_database(infra.admin_url, infra.database_name)
    upgrade("registers", infra.database_url)


def start_broker(infra: Infra, tmp: Path, cleanup: list[tuple[str, Callable[[], Any]]]) -> None:
    from shared.devstack import TansuBroker, free_port

    broker = TansuBroker(free_port(), tmp / "tansu.log")
    cleanup.append(("stop Tansu broker", broker.stop))
    infra.bootstrap = broker.start()
    infra.broker_pid = broker._process.pid if broker._process else 0


def start_service(
    args: argparse.Namespace, infra: Infra, tmp: Path, cleanup: list[tuple[str, Callable[[], Any]]]
) -> None:
    from shared.devstack import free_port

    infra.service_port = free_port()
    infra.jwt_secret = secrets.token_urlsafe(48)
    infra.service_log = tmp / "registers.log"
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "JWT_SECRET": infra.jwt_secret,
        "LOG_LEVEL": "WARNING",
        "ATTENDANCE_DATA_DIR": str(tmp),
    }
    command = [
        sys.executable,
        "-m",
        "shared.cli",
        "serve",
        "registers",
        "--port",
        str(infra.service_port),
        "--workers",
        str(args.workers),
    ]
    log = infra.service_log.open("wb")
    infra.service = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,  # Ctrl-C reaches only us; we stop the service
    )
    log.close()
    cleanup.append(("stop registers service", lambda: stop_process_group(infra.service)))
    wait_ready(infra, timeout=90)


def stop_process_group(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    # uvicorn's worker processes are in the service's process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(infra: Infra, timeout: float) -> None:
    url = f"http://127.0.0.1:{infra.service_port}/readyz"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if infra.service is not None and infra.service.poll() is not None:
            raise BenchError(
                f"the registers service exited with code {infra.service.returncode}:\n{log_tail(infra.service_log)}"
            )
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise BenchError(f"{url} not ready within {timeout:.0f}s (last: {last}):\n{log_tail(infra.service_log)}")


# ---------------------------------------------------------------- CPU accounting


def _run_queue_wait(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (Linux schedstat)."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"{task.path}/schedstat") as f:
                    total += int(f.read().split()[1])
    except OSError:
        return 0.0
    return total / 1e9


class CpuMeter:
    """CPU seconds used by each component between two snapshots (whole machine, via psutil), and
    the time its threads were runnable but waiting for a CPU (Linux only)."""

    def __init__(self) -> None:
        self.start: dict[int, tuple[float, float, float]] = {}
        self.machine_start: Any = None

    @staticmethod
    def _processes() -> dict[int, tuple[float, float, float]]:
        out = {}
        for proc in psutil.process_iter(["create_time", "cpu_times"]):
            times = proc.info["cpu_times"]
            if times is not None:
                out[proc.pid] = (proc.info["create_time"] or 0.0, times.user + times.system, _run_queue_wait(proc.pid))
        return out

    def begin(self) -> None:
        self.start = self._processes()
        self.machine_start = psutil.cpu_times()

    def end(self, groups: dict[str, set[int]], wall: float) -> dict[str, Any]:
        now = self._processes()
        machine = psutil.cpu_times()

        def delta(pid: int, index: int) -> float:
            if pid not in now:
                return 0.0
            after = now[pid]
            before = self.start.get(pid)
            if before is not None and abs(before[0] - after[0]) < 1e-3:
                return max(0.0, after[index] - before[index])
            return after[index]  # started during the measurement

        assigned: set[int] = set()
        components: dict[str, float] = {}
        waits: dict[str, float] = {}
        for name, pids in groups.items():
            pids = pids - assigned
            assigned |= pids
            components[name] = sum(delta(pid, 1) for pid in pids)
            waits[name] = sum(delta(pid, 2) for pid in pids)
        busy = _busy(machine) - _busy(self.machine_start)
        components["everything else on the machine"] = max(0.0, busy - sum(components.values()))
        cores = psutil.cpu_count() or 1
        return {
            "wall_s": wall,
            "cores": cores,
            "machine_busy_pct": 100 * busy / (wall * cores) if wall > 0 else 0.0,
            "cpu_s": components,
            "run_queue_wait_s": waits,
        }


def _busy(times: Any) -> float:
    """Busy CPU seconds (guest time is already inside user time, so it is not added)."""
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return sum(getattr(times, name, 0.0) for name in fields)


async def postgres_pids(database_url: str, database_name: str) -> set[int]:
    """Backends of our database, background processes and the postmaster."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT pid, datname FROM pg_stat_activity")
        own = await conn.fetchval("SELECT pg_backend_pid()")
    finally:
        await conn.close()
    pids = {r["pid"] for r in rows if r["datname"] in (database_name, None) and r["pid"] != own}
    with contextlib.suppress(psutil.Error):
        pids.add(psutil.Process(own).ppid())
    return pids


def process_tree(pid: int) -> set[int]:
    try:
        proc = psutil.Process(pid)
        return {pid} | {c.pid for c in proc.children(recursive=True)}
    except psutil.Error:
        return set()


# ---------------------------------------------------------------- profiling (py-spy)


def start_profiler(pid: int, rate: int, output: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(exe, os.X_OK):
        say("  --profile: py-spy not found (pip install py-spy into the venv); profiling skipped")
        return None
    command = [exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--rate", str(rate)]
    command += ["--format", "raw", "--output", str(output)]
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, process_group=0
    )
    time.sleep(0.5)
    if proc.poll() is not None:
        say(f"  --profile: py-spy failed: {proc.stderr.read().decode(errors='replace').strip() if proc.stderr else ''}")
        return None
    return proc


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# Where the service's time goes: each sample goes to the first bucket one of whose patterns
# matches its stack. "a>b": a frame matching `a` whose direct callee's name contains `b`;
# "a&b": both anywhere in the stack; "leaf:f": the innermost frame is function f; otherwise a
# substring of the stack. Names follow the service's code: unmatched samples land in "other".
PROFILE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("outbox relay: queue records (partitioner, batches)", ("_publish_once>send", "_send_row")),
    ("outbox relay: read + delete outbox rows", ("_publish_once>fetch", "_publish_once>execute")),
    ("outbox relay: other (gather acks, loop)", ("_publish_once", "_publish_loop")),
    ("aiokafka sender (batches, acks, futures)", ("aiokafka/",)),
    ("mark events: build + encode per event", ("_MarkEvents", "EventEncoder")),
    ("register validation (register_errors)", ("register_errors",)),
    ("outbox enqueue (asyncpg encodes the payload array)", ("enqueue (shared/outbox.py)",)),
    ("record_register: SQL statements (asyncpg)", ("record_register&asyncpg/",)),
    ("record_register: Python (diff, arrays, response)", ("record_register",)),
    ("idempotency claim/store", ("shared/idempotency.py",)),
    ("request body: JSON parse + pydantic RegisterIn", ("request_body_to_args", "Request.json", "Request.body")),
    ("auth, school lookup, SQLAlchemy session + commit", ("sqlalchemy/", "shared/auth.py", "_school_for")),
    ("event loop itself (uvloop: I/O, callbacks)", ("leaf:Runner.run", "leaf:asyncio_run")),
    ("FastAPI / Starlette / uvicorn plumbing", ("fastapi/", "starlette/", "uvicorn/")),
    ("asyncio", ("asyncio/",)),
]


def _frame_key(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (short/path.py)'."""
    match = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self time, inclusive time and a bucket split from py-spy's collapsed stacks."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_key(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += n
        self_time[frames[-1]] += n
        for key in set(frames):
            inclusive[key] += n
        joined = ";".join(frames)
        bucket = "other"
        for name, needles in PROFILE_BUCKETS:
            if any(_needle_in(joined, frames, needle) for needle in needles):
                bucket = name
                break
        buckets[bucket] += n
    pct = lambda n: round(100 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "buckets_pct": {k: pct(v) for k, v in buckets.most_common()},
        "top_self_pct": {k: pct(v) for k, v in self_time.most_common(top)},
        "top_inclusive_repo_pct": {
            k: pct(v)
            for k, v in inclusive.most_common()
            if ("shared/" in k or "services/" in k) and "site-packages" not in k
        },
    }


def _needle_in(joined: str, frames: list[str], needle: str) -> bool:
    if needle.startswith("leaf:"):
        return frames[-1].startswith(needle[5:] + " ")
    if "&" in needle:
        return all(part in joined for part in needle.split("&"))
    if ">" in needle:
        outer, inner = needle.split(">", 1)
        return any(
            outer in frame and i + 1 < len(frames) and inner in frames[i + 1].split(" (")[0]
            for i, frame in enumerate(frames)
        )
    return needle in joined


# ---------------------------------------------------------------- the end-to-end phase


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


async def create_schools(base_url: str, token: str, urns: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        for urn in urns:
            r = await c.post(
                "/v1/schools", json={"urn": urn, "name": f"Bench school {urn}", "la_code": LA_CODE, "phase": "primary"}
            )
            if r.status_code != 201:
                raise BenchError(f"POST /v1/schools {urn}: {r.status_code} {r.text[:500]}")


async def wait_for_topic(bootstrap: str, topic: str, timeout: float) -> None:
    """The relay creates its topics when it starts; wait for that rather than racing it."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            if topic in await admin.list_topics():
                return
        finally:
            await admin.close()
        if time.monotonic() > deadline:
            raise BenchError(f"topic {topic} was not created within {timeout:.0f}s (is the outbox relay running?)")
        await asyncio.sleep(0.2)


async def topic_partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described[0]["partitions"]) if described else 0


@dataclass
class PostResult:
    latencies: list[float] = field(default_factory=list)
    accepted_marks: int = 0
    accepted_registers: int = 0
    events_expected: int = 0
    errors: list[str] = field(default_factory=list)


async def post_all(
    base_url: str, registers: list[Register], tokens: dict[str, str], concurrency: int, result: PostResult
) -> None:
    """`concurrency` MIS clients, each one keep-alive connection, taking registers in order."""
    clients = [
        httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(300.0),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(concurrency)
    ]
    try:
        await asyncio.gather(*(c.get("/healthz") for c in clients))  # open the connections first
        next_index = 0

        async def client_loop(client: httpx.AsyncClient) -> None:
            nonlocal next_index
            while next_index < len(registers):
                register = registers[next_index]
                next_index += 1
                headers = {
                    "Authorization": f"Bearer {tokens[register.urn]}",
                    "Idempotency-Key": str(uuid.uuid4()),
                    "Content-Type": "application/json",
                }
                started = time.perf_counter()
                response = await client.post(
                    f"/v1/schools/{register.urn}/registers", content=register.body, headers=headers
                )
                result.latencies.append(time.perf_counter() - started)
                if response.status_code == 201:
                    accepted = response.json()
                    result.accepted_registers += 1
                    result.accepted_marks += accepted["marks"]
                    result.events_expected += accepted["new"] + accepted["amended"]
                else:
                    where = f"{register.urn} {register.date} {register.session}"
                    result.errors.append(f"{where}: {response.status_code} {response.text[:300]}")

        await asyncio.gather(*(client_loop(c) for c in clients))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)


async def poll_outbox(dsn: str, stop: asyncio.Event, samples: list[tuple[float, int, int]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                "SELECT count(*) AS rows, coalesce(sum(cardinality(keys)), 0) AS messages FROM registers.outbox"
            )
            samples.append((time.time(), row["rows"], row["messages"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.025)
    finally:
        await conn.close()


async def run_end_to_end(
    args: argparse.Namespace, infra: Infra, registers: list[Register], shared: ConsumerShared, cpu: CpuMeter
) -> dict[str, Any]:
    from shared.auth import Role, issue_token
    from shared.settings import PlatformSettings

    base_url = f"http://127.0.0.1:{infra.service_port}"
    settings = PlatformSettings(jwt_secret=infra.jwt_secret)
    ttl = 12 * 3600
    urns = sorted({r.urn for r in registers})
    ops = issue_token(settings, subject="bench-ops", role=Role.OPS, ttl_seconds=ttl)
    await create_schools(base_url, ops, [*urns, WARMUP_URN])
    tokens = {
        urn: issue_token(settings, subject=f"bench-mis-{urn}", role=Role.SCHOOL, urns={urn}, ttl_seconds=ttl)
        for urn in [*urns, WARMUP_URN]
    }

    # Warm-up (not measured): a few small registers so every worker has compiled its statements.
    warm_upns = pupil_upns(9999, 50)
    warm_slots = school_dates(2 * args.workers + 2, registers[0].date + timedelta(days=1))
    warm = [
        Register(
            -1,
            WARMUP_URN,
            d,
            s,
            [],
            orjson.dumps(
                {"date": d.isoformat(), "session": s, "marks": simulated_marks(warm_upns, s, random.Random(i))}
            ),
        )
        for i, (d, s) in enumerate(warm_slots)
    ]
    warm_result = PostResult()
    await post_all(base_url, warm, tokens, min(len(warm), max(2, args.workers * 2)), warm_result)
    if warm_result.errors:
        raise BenchError("warm-up registers were rejected: " + "; ".join(warm_result.errors[:3]))
    deadline = time.monotonic() + 60
    while shared.count.value < warm_result.events_expected:
        if time.monotonic() > deadline:
            raise BenchError(
                f"warm-up events did not reach Kafka within 60s ({shared.count.value}/{warm_result.events_expected})"
            )
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let the relay go idle

    profile_path = None
    profiler = None
    if args.profile and infra.service is not None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        profile_path = RESULTS_DIR / f"profile-{datetime.now():%Y%m%d-%H%M%S}-w{args.workers}.txt"
        profiler = start_profiler(infra.service.pid, args.profile_rate, profile_path)
        if profiler is not None:
            say(f"  py-spy recording the service at {args.profile_rate} Hz -> {profile_path}")

    # The measured phase.
    result = PostResult()
    samples: list[tuple[float, int, int]] = []
    stop_polling = asyncio.Event()
    poller = asyncio.create_task(poll_outbox(asyncpg_dsn(infra.database_url), stop_polling, samples))
    base = shared.count.value
    shared.base.value = base
    cpu.begin()
    t_first_post = time.time()
    try:
        await post_all(base_url, registers, tokens, args.concurrency, result)
        t_post_end = time.time()
        say(
            f"  posted {result.accepted_registers}/{len(registers)} registers in {t_post_end - t_first_post:.2f}s; "
            "waiting for every event on Kafka …"
        )
        target = base + result.events_expected
        deadline = time.monotonic() + args.publish_timeout
        t_drained = None
        timed_out = False
        while True:
            if t_drained is None:
                t_drained = next((t for t, rows, _ in samples if t >= t_post_end and rows == 0), None)
            if shared.count.value >= target and t_drained is not None:
                break
            if shared.error.value:
                raise BenchError(f"Kafka consumer failed: {shared.error.value.decode(errors='replace')}")
            if infra.service is not None and infra.service.poll() is not None:
                raise BenchError(f"the registers service exited:\n{log_tail(infra.service_log)}")
            if time.monotonic() > deadline:
                timed_out = True
                break
            await asyncio.sleep(0.01)
        t_end = time.time()
    finally:
        stop_polling.set()
        with contextlib.suppress(Exception):
            await poller
        stop_profiler(profiler)

    consumed = shared.count.value - base
    t_last_event = shared.last_seen.value if consumed else float("nan")
    t_first_event = shared.first_after_base.value if consumed else float("nan")
    groups = {
        "registers service (all processes)": process_tree(infra.service.pid) if infra.service else set(),
        "Tansu broker": {infra.broker_pid},
        "Kafka consumer (bench)": {infra.consumer_pid},
        "bench client (httpx, outbox poller)": {os.getpid()},
    }
    if infra.postgres_local:
        groups["PostgreSQL (our database + background)"] = await postgres_pids(infra.database_url, infra.database_name)
    cpu_report = cpu.end(groups, t_end - t_first_post)

    latencies = sorted(result.latencies)
    post_wall = t_post_end - t_first_post
    e2e_wall = t_last_event - t_first_post
    relay_wall = t_last_event - t_first_event
    drained_wall = (t_drained - t_first_post) if t_drained else float("nan")
    marks = result.accepted_marks
    events = result.events_expected
    peak = max(samples, key=lambda s: s[2]) if samples else (0, 0, 0)
    out: dict[str, Any] = {
        "registers_posted": len(registers),
        "registers_accepted": result.accepted_registers,
        "marks_accepted": marks,
        "events_expected": events,
        "events_consumed": consumed,
        "errors": result.errors[:20],
        "error_count": len(result.errors),
        "publish_timed_out": timed_out,
        "post_phase_s": post_wall,
        "accepted_marks_per_s": marks / post_wall if post_wall > 0 else 0.0,
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 0.50),
            "p95": 1000 * percentile(latencies, 0.95),
            "p99": 1000 * percentile(latencies, 0.99),
            "max": 1000 * latencies[-1] if latencies else float("nan"),
            "mean": 1000 * sum(latencies) / len(latencies) if latencies else float("nan"),
        },
        "first_event_after_first_post_s": t_first_event - t_first_post,
        "last_event_after_last_response_s": t_last_event - t_post_end,
        "e2e_s": e2e_wall,
        "e2e_marks_per_s": events / e2e_wall if consumed >= events and e2e_wall > 0 else 0.0,
        "relay_s": relay_wall,
        "relay_marks_per_s": events / relay_wall if consumed >= events and relay_wall > 0 else 0.0,
        "outbox_drained_s": drained_wall,
        "outbox_drained_marks_per_s": events / drained_wall if drained_wall and drained_wall > 0 else 0.0,
        "outbox_peak_backlog": {"messages": peak[2], "rows": peak[1]},
        "event_avg_bytes": (shared.value_bytes.value / shared.count.value) if shared.count.value else 0.0,
        "cpu": cpu_report,
    }
    if profile_path is not None and profile_path.exists():
        out["profile"] = {"file": str(profile_path.relative_to(REPO)), **summarise_profile(profile_path)}
    return out


# ---------------------------------------------------------------- raw limits


_RAW_UPSERT = """
INSERT INTO bench_scratch.{table} (urn, date, session, upn, code, sub_code, minutes_late, comment,
                                   recorded_at, recorded_by, submission_id, change_version)
SELECT $1, $2, $3, u.upn, u.code, u.sub_code, u.minutes_late, u.comment, $4, $5, $6, u.version
FROM unnest($7::text[], $8::text[], $9::text[], $10::int[], $11::text[], $12::bigint[])
     AS u(upn, code, sub_code, minutes_late, comment, version)
ON CONFLICT (urn, date, session, upn) DO UPDATE SET
    code = excluded.code, sub_code = excluded.sub_code, minutes_late = excluded.minutes_late,
    comment = excluded.comment, recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by,
    submission_id = excluded.submission_id, change_version = excluded.change_version
"""


def spread(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1], "rounds": values}


async def raw_postgres(dsn: str, registers: list[Register], concurrency: int, rounds: int) -> dict[str, Any]:
    """The service's upsert statement (one transaction per register, `concurrency` connections)
    and COPY, same rows, into fresh tables shaped like registers.marks (same keys and indexes).
    Each round starts from empty tables, as the measured phase did; rates are rows/s."""
    now = datetime.now(UTC)
    batches = []
    version = 0
    for r in registers:
        n = len(r.marks)
        batches.append(
            (
                r.urn,
                r.date,
                r.session,
                now,
                "bench-raw",
                uuid.uuid4(),
                [m["upn"] for m in r.marks],
                [m["code"] for m in r.marks],
                [m.get("sub_code") for m in r.marks],
                [m.get("minutes_late") for m in r.marks],
                [m.get("comment") for m in r.marks],
                list(range(version + 1, version + 1 + n)),
            )
        )
        version += n
    records = [
        [
            (b[0], b[1], b[2], upn, code, sub, late, comment, b[3], b[4], b[5], v)
            for upn, code, sub, late, comment, v in zip(*b[6:], strict=True)
        ]
        for b in batches
    ]
    total = sum(len(r.marks) for r in registers)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)

    async def run(work: list[Any], job: Callable[[asyncpg.Connection, Any], Any]) -> float:
        index = 0

        async def loop() -> None:
            nonlocal index
            async with pool.acquire() as conn:
                while index < len(work):
                    item = work[index]
                    index += 1
                    await job(conn, item)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return time.perf_counter() - started

    upsert, update, copy = [], [], []
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA IF NOT EXISTS bench_scratch")
        for round_ in range(rounds):
            table, copy_table = f"marks_{round_}", f"marks_copy_{round_}"
            async with pool.acquire() as conn:
                for name in (table, copy_table):
                    await conn.execute(f"CREATE TABLE bench_scratch.{name} (LIKE registers.marks INCLUDING ALL)")
            sql = _RAW_UPSERT.format(table=table)
            upsert.append(total / await run(batches, lambda conn, b, sql=sql: conn.execute(sql, *b)))
            copy.append(
                total
                / await run(
                    records,
                    lambda conn, rows, t=copy_table: conn.copy_records_to_table(
                        t, schema_name="bench_scratch", records=rows, columns=MARK_COLUMNS
                    ),
                )
            )
            # The same upsert over the rows now present: every row takes the DO UPDATE path.
            update.append(total / await run(batches, lambda conn, b, sql=sql: conn.execute(sql, *b)))
            async with pool.acquire() as conn:
                await conn.execute(f"DROP TABLE bench_scratch.{table}, bench_scratch.{copy_table}")
    finally:
        await pool.close()
    return {
        "rows": total,
        "batch_rows": len(registers[0].marks) if registers else 0,
        "connections": concurrency,
        "upsert_rows_per_s": spread(upsert),
        "upsert_update_path_rows_per_s": spread(update),
        "copy_rows_per_s": spread(copy),
    }


def recorded_events(path: Path, count: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) records the consumer read in the measured phase: the raw produce sends the
    same payloads (cycled if more were published than kept)."""
    with path.open("rb") as f:
        kept: list[tuple[bytes, bytes]] = pickle.load(f)
    if not kept:
        raise BenchError("the consumer kept no records to replay for the raw produce")
    return kept[:count] if len(kept) >= count else [kept[i % len(kept)] for i in range(count)]


async def raw_kafka(
    bootstrap: str, messages: list[tuple[bytes, bytes]], partitions: int, rounds: int
) -> dict[str, Any]:
    """aiokafka produce of the same events (same payloads, keyed by UPN, acks=all, every ack
    awaited) with the relay's producer settings, two ways: one send() per message, and record
    batches per partition (send_batch, the client's default murmur2 partitioner). A fresh topic
    with the same partition count per round and mode; rates are msgs/s. The faster way is the
    raw limit."""
    from aiokafka.partitioner import DefaultPartitioner

    from shared.kafka import ensure_topics, make_producer

    partitioner = DefaultPartitioner()

    async def per_message(producer: Any, topic: str) -> None:
        futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*futures)

    async def batched(producer: Any, topic: str) -> None:
        all_partitions = sorted(await producer.partitions_for(topic))
        open_batches: dict[int, Any] = {}
        futures = []
        for key, value in messages:
            partition = partitioner(key, all_partitions, all_partitions)
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for partition, batch in open_batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    rates: dict[str, list[float]] = {"send": [], "send_batch": []}
    for _ in range(rounds):
        for mode, produce in (("send", per_message), ("send_batch", batched)):
            topic = f"bench.scratch.{uuid.uuid4().hex[:8]}"
            await ensure_topics(bootstrap, [topic], partitions, 1)
            producer = make_producer(bootstrap)
            await producer.start()
            try:
                await (await producer.send(topic, value=b"warm-up", key=b"warm-up"))
                started = time.perf_counter()
                await produce(producer, topic)
                rates[mode].append(len(messages) / (time.perf_counter() - started))
            finally:
                await producer.stop()
    per_mode = {mode: spread(values) for mode, values in rates.items()}
    best = max(per_mode, key=lambda mode: per_mode[mode]["median"])
    return {
        "messages": len(messages),
        "topic_partitions": partitions,
        "produce_msgs_per_s": per_mode[best],
        "best_mode": best,
        "modes": per_mode,
    }


def micro_costs(registers: list[Register], port: int) -> dict[str, Any]:
    """Single-thread CPU of the service's per-register Python steps, on one register of the
    workload, in ms (best of 5)."""
    from services.registers import schemas
    from services.registers import service as registers_service
    from services.registers.models import School
    from services.registers.settings import RegistersSettings

    register = registers[0]
    today = register.date + timedelta(days=1)

    def timed(fn: Callable[[], Any], repeat: int = 5) -> float:
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        return 1000 * best

    parsed = schemas.RegisterIn.model_validate(json.loads(register.body))
    out: dict[str, Any] = {
        "marks": len(register.marks),
        "json_loads_ms": timed(lambda: json.loads(register.body)),
        "pydantic_RegisterIn_ms": timed(lambda: schemas.RegisterIn.model_validate(json.loads(register.body))),
        "register_errors_ms": timed(
            lambda: registers_service.register_errors(parsed, today, 6, 5000)  # type: ignore[attr-defined]
        ),
    }
    settings = RegistersSettings(port=port)
    school = School(urn=register.urn, la_code=LA_CODE, name="x", phase="primary")
    marks = [(m.upn, registers_service.MarkValues(m.code, m.sub_code, m.minutes_late, m.comment)) for m in parsed.marks]

    def build() -> None:
        events = registers_service._MarkEvents(settings, school, register.date, register.session, datetime.now(UTC))
        for version, (upn, values) in enumerate(marks, 1):
            events.encode(upn, values, version)

    out["events_ms"] = timed(build)
    return out


# ---------------------------------------------------------------- report


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value and math.isfinite(value) else "n/a"


def print_summary(summary: dict[str, Any]) -> None:
    c, e, raw, env = summary["config"], summary["end_to_end"], summary.get("raw"), summary["environment"]
    lat = e["latency_ms"]
    bar = "=" * 100
    say()
    say(bar)
    say("INGEST BENCHMARK SUMMARY")
    say(bar)
    say(
        f"workload     {c['schools']} schools x {c['pupils']} pupils x {c['sessions']} sessions = "
        f"{c['marks']:,} marks in {c['registers']} whole-school registers; "
        f"{c['concurrency']} MIS clients; {c['workers']} uvicorn worker(s)"
    )
    say(f"code         commit {env['code']}")
    say(f"machine      {env['cpus']} CPUs, {env['python']}, {env['platform']}")
    say(
        f"PostgreSQL   {env['postgres_version']} - {env['postgres_source']}; {env['postgres_durability']}; "
        f"shared_buffers={env['postgres_shared_buffers']}"
    )
    say(f"Kafka        Tansu (in-memory storage), {env['marks_topic_partitions']} partitions on {MARKS_TOPIC}")
    if env.get("machine_busy_before_start_pct", 0) > 20:
        say(f"WARNING      the machine was {env['machine_busy_before_start_pct']:.0f}% busy before the run started")
    say("-" * 100)
    if e["error_count"]:
        say(f"ERRORS       {e['error_count']} registers rejected, e.g. {e['errors'][0]}")
    if e["publish_timed_out"]:
        say(f"TIMEOUT      only {e['events_consumed']:,}/{e['events_expected']:,} events reached Kafka in time")
    say(
        f"accepted     {fmt_rate(e['accepted_marks_per_s']):>10} marks/s   HTTP -> DB + outbox "
        f"({e['marks_accepted']:,} marks in {e['post_phase_s']:.2f}s)"
    )
    say(
        f"latency      p50 {lat['p50']:.0f} ms   p95 {lat['p95']:.0f} ms   p99 {lat['p99']:.0f} ms   "
        f"max {lat['max']:.0f} ms   (one POST = one register of {c['pupils']} marks)"
    )
    say(
        f"published    {fmt_rate(e['e2e_marks_per_s']):>10} marks/s   first POST -> last event consumed from "
        f"{MARKS_TOPIC} ({e['e2e_s']:.2f}s)"
    )
    say(
        f"             {fmt_rate(e['relay_marks_per_s']):>10} marks/s   relay only: first -> last event on the topic "
        f"({e['relay_s']:.2f}s; first event {e['first_event_after_first_post_s']:.2f}s after the first POST, "
        f"last {e['last_event_after_last_response_s']:.2f}s after the last response)"
    )
    say(
        f"             {fmt_rate(e['outbox_drained_marks_per_s']):>10} marks/s   first POST -> outbox table empty "
        f"({e['outbox_drained_s']:.2f}s; peak backlog {e['outbox_peak_backlog']['messages']:,} events)"
    )
    say(
        f"END TO END   {fmt_rate(e['e2e_marks_per_s']):>10} marks/s   accepted and published "
        f"({e['events_consumed']:,} events, avg {e['event_avg_bytes']:.0f} B)"
    )
    if raw:
        pg, kf = raw["postgres"], raw["kafka"]

        def med(x: dict[str, Any], unit: str) -> str:
            return (
                f"{fmt_rate(x['median']):>10} {unit}  median of {len(x['rounds'])} "
                f"({fmt_rate(x['min'])} - {fmt_rate(x['max'])})"
            )

        say("-" * 100)
        say(
            f"raw upsert   {med(pg['upsert_rows_per_s'], 'rows/s')}; asyncpg INSERT .. SELECT unnest .. ON CONFLICT "
            f"DO UPDATE, {pg['batch_rows']} rows/txn, {pg['connections']} connections, into an empty table"
        )
        say(f"             {med(pg['upsert_update_path_rows_per_s'], 'rows/s')}; the same, rows present (update path)")
        say(f"raw COPY     {med(pg['copy_rows_per_s'], 'rows/s')}; reference")
        say(
            f"raw produce  {med(kf['modes']['send_batch'], 'msgs/s')}; aiokafka send_batch per partition, "
            f"acks=all, keyed by UPN, the {kf['messages']:,} events just published"
        )
        say(f"             {med(kf['modes']['send'], 'msgs/s')}; aiokafka send() per message, same events")
        r = summary["ratios"]
        say(
            f"ratios       end-to-end / raw upsert = {r['e2e_to_raw_upsert']:.3f}    "
            f"published (e2e) / raw produce = {r['published_to_raw_produce']:.3f}    "
            f"relay / raw produce = {r['relay_to_raw_produce']:.3f}   (raw produce = {kf['best_mode']})"
        )
    cpu = e["cpu"]
    say("-" * 100)
    say(
        f"CPU          over the {cpu['wall_s']:.2f}s measured phase, machine busy {cpu['machine_busy_pct']:.0f}% "
        f"of {cpu['cores']} cores; per component (100% = one core), and time runnable but waiting for a CPU:"
    )
    waits = cpu.get("run_queue_wait_s", {})
    for name, seconds in sorted(cpu["cpu_s"].items(), key=lambda kv: -kv[1]):
        wait = f"{waits[name]:6.2f} s waiting" if name in waits else " " * 16
        say(f"             {100 * seconds / cpu['wall_s']:6.0f}%  {seconds:6.2f} s  {wait}  {name}")
    if "micro" in summary:
        m = summary["micro"]
        events = f"{m['events_ms']:.1f} ms" if m.get("events_ms") is not None else "n/a"
        say(
            f"per register {m['marks']} marks, single thread in this process: json.loads {m['json_loads_ms']:.1f} ms, "
            f"json.loads + RegisterIn {m['pydantic_RegisterIn_ms']:.1f} ms, register_errors "
            f"{m['register_errors_ms']:.1f} ms, building the mark events {events}"
        )
    if "profile" in e:
        p = e["profile"]
        say("-" * 100)
        say(f"profile      py-spy, {p['samples']:,} samples of the service process(es): {p['file']}")
        for name, pct in list(p["buckets_pct"].items())[:12]:
            say(f"             {pct:5.1f}%  {name}")
        say("  top self time:")
        for name, pct in list(p["top_self_pct"].items())[:12]:
            say(f"             {pct:5.1f}%  {name}")
    say("-" * 100)
    for t in summary["targets"]:
        say(f"target       [{'PASS' if t['pass'] else 'FAIL'}] {t['name']}: measured {t['measured']}")
    say(bar)


def code_version() -> str:
    """The commit measured (read-only git), and whether tracked files had local changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + (" + uncommitted changes" if dirty else "")


def build_summary(
    args: argparse.Namespace,
    infra: Infra,
    registers: list[Register],
    e2e: dict[str, Any],
    raw: dict[str, Any] | None,
    micro: dict[str, Any] | None,
    partitions: int,
) -> dict[str, Any]:
    facts = infra.postgres_settings
    summary: dict[str, Any] = {
        "benchmark": "ingest",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "schools": args.schools,
            "pupils": args.pupils,
            "sessions": args.sessions,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "seed": args.seed,
            "registers": len(registers),
            "marks": sum(len(r.marks) for r in registers),
            "dates": sorted({r.date.isoformat() for r in registers}),
        },
        "environment": {
            "code": code_version(),
            "cpus": psutil.cpu_count(),
            "python": f"Python {platform.python_version()}",
            "platform": platform.platform(terse=True),
            "postgres_source": infra.postgres_source,
            "postgres_version": facts.get("server_version", "?"),
            "postgres_durability": describe_durability(facts),
            "postgres_shared_buffers": facts.get("shared_buffers", "?"),
            "postgres_settings": facts,
            "marks_topic_partitions": partitions,
        },
        "end_to_end": e2e,
    }
    if micro:
        summary["micro"] = micro
    e2e_rate = e2e["e2e_marks_per_s"]
    ratio_upsert = None
    if raw:
        summary["raw"] = raw
        raw_upsert = raw["postgres"]["upsert_rows_per_s"]["median"]
        raw_produce = raw["kafka"]["produce_msgs_per_s"]["median"]
        ratio_upsert = e2e_rate / raw_upsert
        summary["ratios"] = {
            "e2e_to_raw_upsert": ratio_upsert,
            "published_to_raw_produce": e2e_rate / raw_produce,
            "relay_to_raw_produce": e2e["relay_marks_per_s"] / raw_produce,
        }
    summary["targets"] = [
        {
            "name": f">= {TARGET_E2E_MARKS_PER_S:,} marks/s accepted and published end to end",
            "measured": f"{e2e_rate:,.0f} marks/s",
            "pass": e2e_rate >= TARGET_E2E_MARKS_PER_S and not e2e["error_count"],
        },
        {
            "name": f"end-to-end / raw bulk upsert >= {TARGET_RATIO_TO_RAW_UPSERT}",
            "measured": f"{ratio_upsert:.3f}" if ratio_upsert is not None else "not measured (--skip-raw)",
            "pass": ratio_upsert is not None and ratio_upsert >= TARGET_RATIO_TO_RAW_UPSERT,
        },
    ]
    return summary


# ---------------------------------------------------------------- main


def background_load() -> float:
    """Machine CPU busy (% of all cores) over one second before we start anything."""
    procs = list(psutil.process_iter(["name"]))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    busy = psutil.cpu_percent(interval=1.0)
    if busy > 20:
        usage = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                usage.append((proc.cpu_percent(None), proc.info["name"]))
        hogs = ", ".join(f"{name} {pct:.0f}%" for pct, name in sorted(usage, reverse=True)[:4] if pct > 5)
        say(f"WARNING: the machine is already {busy:.0f}% busy before the benchmark ({hogs}); figures will be low")
    return busy


def run(args: argparse.Namespace, tmp: Path, cleanup: list[tuple[str, Callable[[], Any]]]) -> dict[str, Any]:
    infra = Infra()
    load_before = background_load()
    today = datetime.now(ZoneInfo("Europe/London")).date()  # the service's "today" (school_today)
    registers, _ = build_workload(args.schools, args.pupils, args.sessions, args.seed, today)
    say(
        f"workload: {len(registers)} registers, {sum(len(r.marks) for r in registers):,} marks, "
        f"dates {', '.join(sorted({r.date.isoformat() for r in registers}))}"
    )

    start_postgres(args, infra, cleanup)
    say(f"PostgreSQL: {infra.postgres_source}, {describe_durability(infra.postgres_settings)}")
    create_database(infra, cleanup)
    say(f"database {infra.database_name} created and migrated")
    start_broker(infra, tmp, cleanup)
    say(f"Tansu broker on {infra.bootstrap}")
    start_service(args, infra, tmp, cleanup)
    say(f"registers service on 127.0.0.1:{infra.service_port} (pid {infra.service.pid}, {args.workers} worker(s))")

    ctx = multiprocessing.get_context("spawn")
    shared = new_consumer_shared(ctx)
    run_async(wait_for_topic(infra.bootstrap, MARKS_TOPIC, 60))
    records_path = tmp / "records.pickle"
    consumer = ctx.Process(
        target=consumer_main, args=(infra.bootstrap, MARKS_TOPIC, shared, str(records_path)), daemon=True
    )
    consumer.start()

    def stop_consumer() -> None:
        shared.stop.set()
        consumer.join(10)
        if consumer.is_alive():
            consumer.terminate()
            consumer.join(5)

    cleanup.append(("stop Kafka consumer", stop_consumer))
    infra.consumer_pid = consumer.pid or 0
    if not shared.ready.wait(60):
        raise BenchError(f"Kafka consumer not ready: {shared.error.value.decode(errors='replace')}")
    partitions = run_async(topic_partitions(infra.bootstrap, MARKS_TOPIC))

    say(f"posting {len(registers)} registers with {args.concurrency} clients …")
    e2e = run_async(run_end_to_end(args, infra, registers, shared, CpuMeter()))
    stop_consumer()
    stop_process_group(infra.service)  # the raw limits get the machine to themselves

    raw = None
    micro = None
    if not args.skip_raw:
        say("raw limits: asyncpg bulk upsert and COPY …")
        pg = run_async(raw_postgres(asyncpg_dsn(infra.database_url), registers, args.concurrency, args.raw_rounds))
        say("raw limits: aiokafka produce of the same events …")
        messages = recorded_events(records_path, e2e["events_expected"])
        kafka = run_async(raw_kafka(infra.bootstrap, messages, partitions or 12, args.raw_rounds))
        del messages
        raw = {"postgres": pg, "kafka": kafka}
        micro = micro_costs(registers, infra.service_port)
    summary = build_summary(args, infra, registers, e2e, raw, micro, partitions)
    summary["environment"]["machine_busy_before_start_pct"] = load_before
    return summary


def run_benchmark(
    name: str,
    tmp: Path,
    body: Callable[[Path, list[tuple[str, Callable[[], Any]]]], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """Run a benchmark's `body`, print and save its summary, and always remove what it started
    (services, broker, database, `tmp`), also on Ctrl-C or SIGTERM. Returns the exit status."""
    cleanup: list[tuple[str, Callable[[], Any]]] = []

    def on_sigterm(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    status = 0
    try:
        summary = body(tmp, cleanup)
        report(summary)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.json"
        out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        say(f"results written to {out.relative_to(REPO)}")
    except KeyboardInterrupt:
        say("\ninterrupted")
        status = 130
    except (BenchError, httpx.HTTPError) as exc:
        say(f"\nbenchmark could not run: {exc if isinstance(exc, BenchError) else repr(exc)}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up even on a second Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for what, step in reversed(cleanup):
            try:
                step()
            except Exception as exc:
                say(f"cleanup: {what} failed: {exc!r}")
        shutil.rmtree(tmp, ignore_errors=True)
        say("cleaned up (services, broker, database)")
    return status


def isolated_main(
    name: str,
    argv: list[str] | None,
    parse: Callable[[list[str] | None], argparse.Namespace],
    body: Callable[[argparse.Namespace, Path, list[tuple[str, Callable[[], Any]]]], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """A benchmark's main in a temporary data folder, set before anything imports shared.settings
    (imports of shared/ and services/ happen in functions): the services and the bench ignore the
    developer's .data/platform.env."""
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="attendance-bench-"))
    os.environ["ATTENDANCE_DATA_DIR"] = str(tmp)
    return run_benchmark(name, tmp, lambda tmp, cleanup: body(args, tmp, cleanup), report)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(os.environ["ATTENDANCE_DATA_DIR"])
    return run_benchmark("ingest", tmp, lambda tmp, cleanup: run(args, tmp, cleanup), print_summary)


if __name__ == "__main__":
    sys.exit(main())
