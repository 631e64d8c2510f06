"""A webhook subscriber down for an hour while the LA's roll changes keep coming.

The notifications service runs production's retry schedule (5 s doubling up to an hour, 15
attempts: about nine hours before a delivery is dead) compressed so that an hour passes in a few
seconds; the events of that hour are posted over it. The subscriber refuses connections all
hour, then comes back: every delivery arrives exactly once, in order per pupil, and the ledger
shows the failed attempts, spaced by the schedule, and no loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from datetime import datetime
from typing import Any

from shared.auth import Role
from shared.devstack import TansuBroker, free_port
from shared.events import ROLL_TOPIC
from tests.conftest import eventually, running_service
from tests.integration.faults import Subscriber, isolated_database, published
from tests.integration.test_cme import new_school
from tests.integration.test_notifications import EXPECTED_ORDER, ledger, per_pupil, roll_changes, subscribe

HOUR = 6.0  # seconds of test time that stand for an hour
SCALE = 3600 / HOUR
RETRY_BASE, RETRY_MAX, RETRY_BUDGET = 5 / SCALE, 3600 / SCALE, 15
LA = "897"
PUPILS = 36  # three roll changes each, in twelve bursts: one every five minutes


@contextlib.asynccontextmanager
async def platform(database_url: str, bootstrap: str, overrides: dict[str, Any]) -> Any:
    from services.cme.main import build_app as cme_app
    from services.cme.settings import CmeSettings
    from services.notifications.main import build_app as notifications_app
    from services.notifications.settings import NotificationsSettings
    from services.registers.main import build_app as registers_app
    from services.registers.settings import RegistersSettings

    common = {
        **overrides,
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "consumer_batch_timeout_ms": 20,
    }
    settings = NotificationsSettings(
        **common,
        port=free_port(),
        allow_http_endpoints=True,
        retry_base_seconds=RETRY_BASE,
        retry_max_seconds=RETRY_MAX,
        retry_budget=RETRY_BUDGET,
        delivery_timeout_seconds=1.0,
        dispatch_poll_seconds=0.02,
    )
    async with (
        running_service(registers_app, RegistersSettings(**common, port=free_port())) as registers,
        running_service(cme_app, CmeSettings(**common, port=free_port())) as cme,
        running_service(notifications_app, settings) as notifications,
    ):
        yield registers, cme, notifications


async def test_a_subscriber_down_for_an_hour_gets_every_delivery_once_and_in_order_when_it_returns(
    postgres_admin_url, settings_overrides, token, new_urn, new_upn, tmp_path
):
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    subscriber = Subscriber()  # not listening yet: connections are refused
    try:
        async with (
            isolated_database(postgres_admin_url, ["registers", "cme", "notifications"]) as url,
            platform(url, broker.bootstrap_servers, settings_overrides) as (registers, cme, notifications),
        ):
            la = {
                "code": LA,
                "school": await new_school(registers, cme, token, new_urn, la_code=LA),
                "system": token(Role.LA_SYSTEM, la_code=LA),
            }
            created = await subscribe(notifications, la, subscriber.url)
            loop = asyncio.get_running_loop()
            down_at = loop.time()
            upns = [new_upn() for _ in range(PUPILS)]
            for burst in range(0, PUPILS, PUPILS // 12):
                await roll_changes(cme, la, upns[burst : burst + PUPILS // 12])
                await asyncio.sleep(HOUR / 12)
            await asyncio.sleep(max(0.0, down_at + HOUR - loop.time()))

            rows = await ledger(notifications, la, subscription_id=created["id"])
            assert len(rows) == 3 * PUPILS and {r["status"] for r in rows} == {"pending"}
            assert max(r["attempts"] for r in rows) < RETRY_BUDGET  # an hour is well within the budget

            await subscriber.start()

            async def all_delivered() -> list[dict[str, Any]]:
                rows = await ledger(notifications, la, subscription_id=created["id"])
                return rows if {r["status"] for r in rows} == {"delivered"} else []

            rows = await eventually(all_delivered, "every delivery once the subscriber is back", timeout=60)

            # Exactly once: every event of the hour, nothing twice, nothing lost.
            events = await published(broker.bootstrap_servers, LA, [ROLL_TOPIC])
            arrived = Counter(webhook_id for _, webhook_id, _ in subscriber.received)
            assert set(arrived.values()) == {1}
            assert set(arrived) == {str(r["event_id"]) for r in rows} == {str(e.id) for e in events}
            assert len(events) == 3 * PUPILS
            # In order per pupil.
            in_arrival_order = [event for _, _, event in subscriber.received]
            assert per_pupil(in_arrival_order) == {upn: EXPECTED_ORDER for upn in upns}

            # The ledger: each pupil's first delivery was tried all hour, on the schedule; the
            # pupil's later deliveries waited for it.
            async with notifications.client(la["system"]) as http:
                details = [(await http.get(f"/v1/deliveries/{r['id']}")).json() for r in rows]
            by_pupil: dict[str, list[dict[str, Any]]] = {}
            for detail in sorted(details, key=lambda d: d["id"]):
                by_pupil.setdefault(detail["key"], []).append(detail)
            assert set(by_pupil) == set(upns)
            for upn, deliveries in by_pupil.items():
                head = deliveries[0]
                *failed, delivered = head["attempt_log"]
                assert len(failed) >= 3 and delivered["outcome"] == "delivered", (upn, head["attempt_log"])
                assert all(a["outcome"] == "failed" and "ConnectError" in a["error"] for a in failed)
                times = [datetime.fromisoformat(a["at"]) for a in head["attempt_log"]]
                for attempt, (before, after) in enumerate(itertools.pairwise(times[: len(failed)]), start=1):
                    # Full jitter waits between half the ceiling and the ceiling.
                    ceiling = min(RETRY_MAX, RETRY_BASE * 2 ** (attempt - 1))
                    assert (after - before).total_seconds() >= ceiling / 2 - 0.001, (upn, attempt)
                for earlier, later in itertools.pairwise(deliveries):
                    assert earlier["delivered_at"] <= later["attempt_log"][0]["at"], upn
    finally:
        await subscriber.stop()
        broker.stop()
