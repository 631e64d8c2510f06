"""PostgreSQL restarted while registers are posted and consumed.

The server is an embedded PostgreSQL of this test's own (never the machine's shared one), with a
broker and the five services (in this process) of its own. Posts either succeed or fail with a
clean 503 problem, never a 500; everything accepted is published and applied exactly once; and the
services' background duties (consumers, relays, clock scans) carry on once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from typing import Any

from shared.auth import Role
from shared.devstack import EmbeddedPostgres, TansuBroker, free_port
from tests.conftest import eventually, running_service
from tests.integration.faults import (
    SESSIONS,
    Subscriber,
    Term,
    everything_problems,
    fetch,
    isolated_database,
    open_term,
    settled,
    subscribe_to_everything,
)

_las = itertools.count(890)


@contextlib.asynccontextmanager
async def platform(database_url: str, bootstrap: str, overrides: dict[str, Any]) -> Any:
    from services.casework.main import build_app as casework_app
    from services.casework.settings import CaseworkSettings
    from services.cme.main import build_app as cme_app
    from services.cme.settings import CmeSettings
    from services.notifications.main import build_app as notifications_app
    from services.notifications.settings import NotificationsSettings
    from services.registers.main import build_app as registers_app
    from services.registers.settings import RegistersSettings
    from services.thresholds.main import build_app as thresholds_app
    from services.thresholds.settings import ThresholdsSettings

    common = {
        **overrides,
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "consumer_batch_timeout_ms": 20,
    }
    async with contextlib.AsyncExitStack() as stack:
        registers = await stack.enter_async_context(
            running_service(registers_app, RegistersSettings(**common, port=free_port()))
        )
        thresholds = await stack.enter_async_context(
            running_service(thresholds_app, ThresholdsSettings(**common, port=free_port()))
        )
        await stack.enter_async_context(
            running_service(casework_app, CaseworkSettings(**common, port=free_port(), clock_scan_seconds=0.2))
        )
        await stack.enter_async_context(
            running_service(cme_app, CmeSettings(**common, port=free_port(), clock_scan_seconds=0.2))
        )
        notifications = await stack.enter_async_context(
            running_service(
                notifications_app,
                NotificationsSettings(
                    **common,
                    port=free_port(),
                    allow_http_endpoints=True,
                    retry_base_seconds=0.05,
                    retry_max_seconds=0.5,
                    delivery_timeout_seconds=1.0,
                    dispatch_poll_seconds=0.05,
                    thresholds_url=thresholds.base_url,
                ),
            )
        )
        yield registers, thresholds, notifications


async def post_through_outages(registers: Any, term: Term, token: Any, answers: Counter[int]) -> None:
    """Post the fortnight like an MIS that retries: a 503 problem is retried until accepted."""
    for index in range(len(SESSIONS)):
        for urn in term.urns:
            body = term.register(urn, index)
            async with registers.client(token(Role.SCHOOL, urns={urn})) as http:
                while True:
                    response = await http.post(f"/v1/schools/{urn}/registers", json=body)
                    answers[response.status_code] += 1
                    if response.status_code == 201:
                        break
                    assert response.status_code == 503, response.text
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["type"] == "/problems/service-unavailable"
                    assert response.headers["retry-after"] == "1"
                    await asyncio.sleep(0.1)
            term.record(urn, body)
        term.posted = index + 1
        await asyncio.sleep(0.05)


async def test_postgres_restarted_during_ingest_loses_and_duplicates_nothing(
    settings_overrides, token, new_urn, new_upn, tmp_path
):
    server = EmbeddedPostgres(tmp_path / "postgres", free_port(), durable=False)
    admin_url = await asyncio.to_thread(server.start)
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    subscriber = Subscriber()
    try:
        async with (
            isolated_database(admin_url) as url,
            platform(url, broker.bootstrap_servers, settings_overrides) as (registers, thresholds, notifications),
        ):
            term = await open_term(registers, thresholds, token, str(next(_las)), [new_urn(), new_urn()], new_upn)
            await subscriber.start()
            subscription = await subscribe_to_everything(notifications, token, term.la_code, subscriber.url)
            answers: Counter[int] = Counter()
            posting = asyncio.create_task(post_through_outages(registers, term, token, answers))
            try:

                async def third_day() -> bool:
                    return term.posted >= 4

                await eventually(third_day, "two days of registers", timeout=60)
                await asyncio.to_thread(server.stop)

                async def refused() -> bool:
                    return answers[503] > 0 or posting.done()  # done: failed, and `await posting` says why

                await eventually(refused, "a post to meet the stopped server", timeout=20)
                await asyncio.to_thread(server.start)
                await posting
            finally:
                posting.cancel()
            assert set(answers) == {201, 503}, answers

            await settled(
                lambda: everything_problems(url, broker.bootstrap_servers, term, subscription, subscriber),
                120,
                "every service's state after the restart",
            )

            # A pupil first marked now is an unnotified joiner whose return is already late: the
            # CME clock scan, which met the stopped server too, must still be running to say so.
            urn, upn = term.urns[0], new_upn()
            term.kinds[(urn, upn)] = "present"
            body = term.register(urn, len(SESSIONS) - 1)
            async with registers.client(token(Role.SCHOOL, urns={urn})) as http:
                response = await http.post(f"/v1/schools/{urn}/registers", json=body)
                assert response.status_code == 201 and response.json()["new"] == 1, response.text

            async def overdue() -> bool:
                rows = await fetch(url, "SELECT status FROM cme.notification_clocks WHERE upn = $1", upn)
                return [r["status"] for r in rows] == ["overdue"]

            await eventually(overdue, "the late return of a joiner marked after the restart", timeout=30)
    finally:
        await subscriber.stop()
        broker.stop()
        await asyncio.to_thread(server.stop)
