"""Scale-out and crashes: the consuming services run as separate OS processes (`attendance serve`),
replicas in one consumer group, and are SIGKILLed in the middle of a batch. Afterwards every
service's state equals a recomputation from what was posted, and nothing was lost or counted twice.

The platform (database, broker, processes) is this module's own, so killing its processes disturbs
no other test; each test uses an LA and schools of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest_asyncio

from shared.devstack import TansuBroker, free_port
from shared.events import ALERTS_TOPIC
from tests.conftest import TEST_JWT_SECRET, eventually
from tests.integration.faults import (
    SESSIONS,
    Hold,
    Platform,
    Subscriber,
    Term,
    everything_problems,
    fetch,
    isolated_database,
    kill_mid_batch,
    open_term,
    post_registers,
    published,
    relay_in_every_worker,
    settled,
    subscribe_to_everything,
    thresholds_problems,
)

CONSUMERS = ("thresholds", "casework", "cme", "notifications")

# Every process's environment: quick batches and clock scans, deliveries retried within the test.
SETTINGS = {
    "database_pool_size": 3,
    "consumer_batch_timeout_ms": 20,
    "clock_scan_seconds": 0.5,
    "allow_http_endpoints": "true",
    "delivery_timeout_seconds": 1,
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.5,
    "dispatch_poll_seconds": 0.05,
}

_las = itertools.count(870)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(postgres_admin_url, tmp_path_factory) -> Any:
    log_dir = tmp_path_factory.mktemp("scale-out")
    broker = TansuBroker(free_port(), log_dir / "tansu.log")
    await asyncio.to_thread(broker.start)
    try:
        async with isolated_database(postgres_admin_url) as url:
            processes = Platform(url, broker.bootstrap_servers, log_dir, dict(SETTINGS))
            try:
                yield processes
            finally:
                await processes.close()
    finally:
        broker.stop()


async def run_with(platform: Platform, replicas: int) -> None:
    """Registers with two HTTP workers, `replicas` processes of each consuming service."""
    await asyncio.gather(platform.scale("registers", 1, workers=2), platform.scale("thresholds", replicas))
    platform.settings["thresholds_url"] = platform.running("thresholds")[0].base_url  # for letters
    await asyncio.gather(*(platform.scale(service, replicas) for service in CONSUMERS))


async def crash_mid_fortnight(platform: Platform, token: Any, urns: list[str], new_upn: Any, restart: bool) -> Term:
    """Post a fortnight of registers for two schools of a new LA; from the third day SIGKILL a
    process of each consuming service inside a batch (and start a new one, if `restart`). Then
    every service's state must equal a recomputation from what was posted."""
    [registers] = platform.running("registers")
    term = await open_term(registers, platform.running("thresholds")[0], token, str(next(_las)), urns, new_upn)
    subscriber = Subscriber()
    await subscriber.start()
    posting = asyncio.create_task(post_registers(registers, term, token, range(len(SESSIONS))))
    loop = asyncio.get_running_loop()
    try:
        subscription = await subscribe_to_everything(
            platform.running("notifications")[0], token, term.la_code, subscriber.url
        )

        async def third_day() -> bool:
            return term.posted >= 4

        await eventually(third_day, "two days of registers", timeout=60)

        async def crash(service: str) -> tuple[str, str, float]:
            _, outcome = await kill_mid_batch(platform.database_url, service, platform.running(service))
            killed_at = loop.time()
            if restart:
                await platform.start(service)
            return service, outcome, killed_at

        crashes = await asyncio.gather(*(crash(service) for service in CONSUMERS))
        await posting
        # Each process died inside a batch, whose transaction PostgreSQL then rolled back.
        assert [(service, outcome) for service, outcome, _ in crashes] == [(s, "aborted") for s in CONSUMERS]

        await settled(
            lambda: everything_problems(platform.database_url, platform.bootstrap, term, subscription, subscriber),
            150,
            "every service's state",
        )
        # A delivery is sent twice only if the process sending it died before recording the
        # outcome: it was first sent before the kill. Receivers deduplicate by webhook-id.
        sent = Counter(webhook_id for _, webhook_id, _ in subscriber.received)
        first = subscriber.first_arrivals()
        killed_at = next(at for service, _, at in crashes if service == "notifications")
        assert [i for i, n in sent.items() if n > 1 and first[i][0] > killed_at] == []
        return term
    finally:
        posting.cancel()
        await subscriber.stop()


async def test_two_replicas_of_each_consumer_lose_and_double_count_nothing_when_one_dies_mid_batch(
    platform, token, new_urn, new_upn
):
    """Two replicas of thresholds, casework, CME and notifications; registers for 40 pupils of two
    schools posted over a fortnight; from the third day one replica of each is SIGKILLed inside a
    batch. The survivors take over its partitions: totals equal the posted marks, each alert is
    raised once, each opens one case or is one note, each joiner is detected once, each event is
    delivered once."""
    await run_with(platform, replicas=2)
    await crash_mid_fortnight(platform, token, [new_urn(), new_urn()], new_upn, restart=False)
    assert {s: len(platform.running(s)) for s in CONSUMERS} == dict.fromkeys(CONSUMERS, 1)


async def test_each_consumer_killed_mid_batch_and_restarted_resumes_from_its_committed_offsets(
    platform, token, new_urn, new_upn, tmp_path
):
    """One process of each consuming service, SIGKILLed inside a batch and started again: the new
    one resumes from the offsets the dead one committed and applies the interrupted batch once. A
    thresholds rebuild from the topic (`attendance thresholds rebuild`) then changes nothing."""
    await run_with(platform, replicas=1)
    term = await crash_mid_fortnight(platform, token, [new_urn(), new_urn()], new_upn, restart=True)

    async def snapshot() -> dict[str, list[Any]]:
        def rows(sql: str) -> Any:
            return fetch(platform.database_url, sql, term.urns)

        return {
            "versions": sorted(map(tuple, await rows("SELECT * FROM thresholds.mark_versions WHERE urn = ANY($1)"))),
            "totals": sorted(map(tuple, await rows("SELECT * FROM thresholds.enrolment_totals WHERE urn = ANY($1)"))),
            "alerts": sorted(map(tuple, await rows("SELECT * FROM thresholds.alerts WHERE urn = ANY($1)"))),
        }

    live = await snapshot()
    environment = {
        **os.environ,
        "DATABASE_URL": platform.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": platform.bootstrap,
        "JWT_SECRET": TEST_JWT_SECRET,
        "ATTENDANCE_DATA_DIR": str(tmp_path),
    }
    rebuild = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "attendance"),
        *("thresholds", "rebuild"),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(rebuild.communicate(), 120)
    assert rebuild.returncode == 0, err.decode()
    assert "(0 unreadable and 0 rejected, skipped" in out.decode(), out.decode()
    assert await snapshot() == live


async def test_serve_with_workers_runs_a_relay_and_a_consumer_in_every_worker(platform, token, new_urn, new_upn):
    """`attendance serve --workers 2`: every uvicorn worker runs the service's outbox relay (one
    holds the lease, the other stands by) and its consumer, which takes a share of the partitions.
    A worker SIGKILLed inside a batch is replaced by the supervisor; nothing is lost or counted
    twice."""
    await platform.scale("registers", 1, workers=2)
    await platform.scale("thresholds", 0)
    server = await platform.start("thresholds", workers=2)
    [registers] = platform.running("registers")
    posting: asyncio.Task[None] | None = None
    try:
        for process, schema in ((registers, "registers"), (server, "thresholds")):
            ready = functools.partial(relay_in_every_worker, platform.database_url, schema, process)
            await eventually(ready, f"a relay in each {schema} worker", timeout=30)

        term = await open_term(registers, server, token, str(next(_las)), [new_urn(), new_urn()], new_upn)
        # Slowly: marks keep coming while the workers join the group (the replica stopped above
        # stays a member until its session times out) and while each is caught in a batch.
        posting = asyncio.create_task(post_registers(registers, term, token, range(len(SESSIONS)), pause=1.5))
        # Each worker's consumer is seen inside a batch. The table is let go between sightings: a
        # rebalance (a worker joining) waits for every consumer to be out of its batch.
        workers, seen = set(server.workers()), set()
        async with asyncio.timeout(90):
            while seen != workers:
                async with Hold(platform.database_url, "thresholds") as hold:
                    with contextlib.suppress(TimeoutError):
                        blocked = await hold.blocked([server], besides=seen, timeout=5)
                        seen.add(blocked.pid)
                        if seen == workers:  # the last one seen dies in its batch
                            await server.kill(blocked.pid)
                            await hold.release()
                            assert await hold.outcome(blocked) == "aborted"
        victim = blocked

        async def replaced() -> bool:
            now = set(server.workers())
            return len(now) == 2 and victim.pid not in now

        await eventually(replaced, "the supervisor to replace the killed worker", timeout=60)
        await posting

        async def problems() -> list[str]:
            events = await published(platform.bootstrap, term.la_code, [ALERTS_TOPIC])
            return await thresholds_problems(platform.database_url, term, events)

        await settled(problems, 120, "the thresholds state")
    finally:
        if posting is not None:
            posting.cancel()
        await server.stop()
