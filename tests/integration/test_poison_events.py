"""Poison messages on every topic the services consume, read by the services' real consumers.

On one partition of each topic: a good event, then malformed JSON, valid JSON with an unknown event
type, a valid envelope whose data violates the model, events that make a consumer's handler raise,
and another good event. Every consumer dead-letters (to `<topic>.dlq`, with the error) exactly the
messages it cannot apply, applies the rest and moves past them all; a thresholds rebuild from the
topics skips what the live consumer dead-lettered.

The platform (database, broker, services) is this test's own: nothing else reads its topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.thresholds.consumers import rebuild
from shared.db import make_engine, make_sessionmaker
from shared.devstack import TansuBroker, free_port
from shared.events import (
    ALERTS_TOPIC,
    CME_TOPIC,
    ESCALATIONS_TOPIC,
    MARKS_TOPIC,
    REGISTERS_TOPIC,
    ROLL_TOPIC,
    AlertRaised,
    CaseOpened,
    CloudEvent,
    EventData,
    MarkRecorded,
    PupilAdmitted,
    SchoolUpdated,
    UnnotifiedJoiner,
    dead_letter_topic,
    make_event,
)
from shared.outbox import encode
from tests.conftest import running_service
from tests.integration.faults import Subscriber, fetch, isolated_database, subscribe_to_everything
from tests.integration.test_outbox_and_consumers import committed_offsets, publish, read_topic, wait_until

LA = "896"
URN = "300001"
ON = date(2025, 11, 3)
# PostgreSQL text cannot hold a NUL character: a consumer that stores this UPN fails on it.
NUL_UPN = "A80120002\x00001"
LINK = "http://test/"


def event(data: EventData) -> CloudEvent[Any]:
    return make_event("tests", data, subject=getattr(data, "upn", None) or getattr(data, "urn", None))


def mark(upn: str, change_version: int = 1) -> CloudEvent[Any]:
    return event(
        MarkRecorded(
            urn=URN,
            la_code=LA,
            upn=upn,
            date=ON,
            session="AM",
            code="O",
            category="UA",
            possible=True,
            change_version=change_version,
            recorded_at=datetime.now(UTC),
            link=LINK,
        )
    )


def school(urn: str) -> CloudEvent[Any]:
    return event(
        SchoolUpdated(
            urn=urn,
            la_code=LA,
            phase="primary",
            independent=False,
            data_sharing_agreement=True,
            calendar={},
            link=LINK,
        )
    )


def alert(upn: str, rule_id: str = "persistent_absence", alert_id: int = 1) -> CloudEvent[Any]:
    return event(
        AlertRaised(
            alert_id=alert_id,
            urn=URN,
            la_code=LA,
            upn=upn,
            rule_id=rule_id,
            step="",
            policy_version=0,
            link=LINK,
            figures={},
            window_from=ON,
            window_to=ON,
            sessions=[],
        )
    )


def case_opened(upn: str) -> CloudEvent[Any]:
    return event(
        CaseOpened(case_id=1, urn=URN, la_code=LA, upn=upn, event="open", from_state=None, state="stage_1", link=LINK)
    )


def admitted(upn: str) -> CloudEvent[Any]:
    return event(
        PupilAdmitted(
            urn=URN,
            la_code=LA,
            upn=upn,
            revision=1,
            link=LINK,
            admission_id=1,
            admitted_on=ON,
            nc_year=None,
            dual_registration=False,
            source="notified",
        )
    )


def joiner(upn: str) -> CloudEvent[Any]:
    return event(UnnotifiedJoiner(admission_id=1, urn=URN, la_code=LA, upn=upn, first_mark_on=ON, due_on=ON, link=LINK))


def unknown_type(good: CloudEvent[Any]) -> bytes:
    document = json.loads(encode(good))
    document["type"] = good.type.rsplit(".", 1)[0] + ".teleported"
    return json.dumps(document).encode()


def invalid_data(good: CloudEvent[Any]) -> bytes:
    document = json.loads(encode(good))
    document["data"]["upn" if "upn" in document["data"] else "urn"] = ["not", "a", "string"]
    return json.dumps(document).encode()


CONSUMERS = {
    MARKS_TOPIC: {"thresholds", "cme"},
    REGISTERS_TOPIC: {"thresholds", "casework", "cme"},
    ALERTS_TOPIC: {"casework", "cme", "notifications"},
    ESCALATIONS_TOPIC: {"notifications"},
    ROLL_TOPIC: {"notifications"},
    CME_TOPIC: {"notifications"},
}


def poison(topic: str, good: CloudEvent[Any]) -> list[tuple[bytes, set[str]]]:
    """The poison messages of a topic, each with the consumers that cannot apply it."""
    everyone = CONSUMERS[topic]
    unreadable = [b'{"specversion": "1.0", "id": ', unknown_type(good), invalid_data(good)]
    if topic == MARKS_TOPIC:
        rejected = [
            (encode(mark(NUL_UPN)), everyone),
            # A change version beyond bigint: thresholds stores it, CME has no use for it.
            (encode(mark("B801200025001", change_version=2**63)), {"thresholds"}),
        ]
    elif topic == REGISTERS_TOPIC:
        rejected = [(encode(school("3\x00")), everyone)]
    elif topic == ALERTS_TOPIC:
        # Casework looks up every alerted pupil's open case; CME acts on missing-child rules only.
        rejected = [
            (encode(alert(NUL_UPN)), {"casework", "notifications"}),
            (encode(alert(NUL_UPN, "continuous_unauthorised_10_days")), everyone),
        ]
    else:  # what notifications stores: the delivery's key, and for an escalation its letter too
        about_pupil = {ESCALATIONS_TOPIC: case_opened, ROLL_TOPIC: admitted, CME_TOPIC: joiner}[topic]
        rejected = [(encode(about_pupil(NUL_UPN)), everyone)]
    return [*((value, everyone) for value in unreadable), *rejected]


@dataclass
class Published:
    """One partition of a topic: a good event, the poison, another good event."""

    records: list[Any]
    poison: list[tuple[bytes, set[str]]]
    good: tuple[CloudEvent[Any], CloudEvent[Any]]


GOOD = {
    MARKS_TOPIC: lambda n: mark(f"C8012000250{n}1"),
    REGISTERS_TOPIC: lambda n: school(f"30010{n}"),
    ALERTS_TOPIC: lambda n: alert(f"D8012000250{n}1", alert_id=n),
    ESCALATIONS_TOPIC: lambda n: case_opened(f"E8012000250{n}1"),
    ROLL_TOPIC: lambda n: admitted(f"F8012000250{n}1"),
    CME_TOPIC: lambda n: joiner(f"G8012000250{n}1"),
}


async def applied_events(url: str, group: str, events: Sequence[CloudEvent[Any]]) -> set[Any]:
    """The ids of the events the group's effects show applied. Thresholds keeps no event ids (its
    mark versions make it idempotent): its effects are the stored version or the school's row."""
    if group != "thresholds":
        rows = await fetch(url, f"SELECT event_id FROM {group}.applied_events WHERE consumer = $1", group)
        return {r["event_id"] for r in rows}
    found = set()
    for event in events:
        if isinstance(event.data, SchoolUpdated):
            query, args = "SELECT 1 FROM thresholds.schools WHERE urn = $1", [event.data.urn]
        else:
            query = "SELECT 1 FROM thresholds.mark_versions WHERE upn = $1 AND change_version = $2"
            args = [event.data.upn, event.data.change_version]
        if await fetch(url, query, *args):
            found.add(event.id)
    return found


async def thresholds_state(url: str) -> dict[str, list[Any]]:
    return {
        table: sorted(map(tuple, await fetch(url, f"SELECT * FROM thresholds.{table}")))
        for table in ("schools", "mark_versions", "enrolment_totals", "alerts")
    }


@contextlib.asynccontextmanager
async def consumers(database_url: str, bootstrap: str, overrides: dict[str, Any]) -> Any:
    from services.casework.main import build_app as casework_app
    from services.casework.settings import CaseworkSettings
    from services.cme.main import build_app as cme_app
    from services.cme.settings import CmeSettings
    from services.notifications.main import build_app as notifications_app
    from services.notifications.settings import NotificationsSettings
    from services.thresholds.main import build_app as thresholds_app
    from services.thresholds.settings import ThresholdsSettings

    common = {**overrides, "database_url": database_url, "kafka_bootstrap_servers": bootstrap}
    async with contextlib.AsyncExitStack() as stack:
        thresholds = await stack.enter_async_context(
            running_service(thresholds_app, ThresholdsSettings(**common, port=free_port()))
        )
        await stack.enter_async_context(running_service(casework_app, CaseworkSettings(**common, port=free_port())))
        await stack.enter_async_context(running_service(cme_app, CmeSettings(**common, port=free_port())))
        notifications = await stack.enter_async_context(
            running_service(
                notifications_app,
                NotificationsSettings(
                    **common, port=free_port(), allow_http_endpoints=True, dispatch_poll_seconds=0.05
                ),
            )
        )
        yield thresholds, notifications


async def test_poison_on_every_consumed_topic_is_dead_lettered_and_the_partitions_keep_flowing(
    postgres_admin_url, settings_overrides, token, tmp_path
):
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    bootstrap = broker.bootstrap_servers
    subscriber = Subscriber()
    await subscriber.start()
    try:
        async with (
            isolated_database(postgres_admin_url, ["thresholds", "casework", "cme", "notifications"]) as url,
            consumers(url, bootstrap, settings_overrides) as (thresholds, notifications),
        ):
            # Notifications stores the LA's events (and fails on those it cannot store).
            await subscribe_to_everything(notifications, token, LA, subscriber.url)
            published: dict[str, Published] = {}
            for topic in CONSUMERS:
                good = (GOOD[topic](1), GOOD[topic](2))
                bad = poison(topic, good[0])
                key = (good[0].subject or "").encode()
                values = [encode(good[0]), *(value for value, _ in bad), encode(good[1])]
                records = await publish(bootstrap, topic, [(key, value) for value in values])
                assert len({r.partition for r in records}) == 1
                published[topic] = Published(records, bad, good)

            for topic, partition in published.items():
                last = partition.records[-1]
                for group in CONSUMERS[topic]:

                    async def moved_past(topic: str = topic, group: str = group, last: Any = last) -> bool:
                        committed = await committed_offsets(bootstrap, group, topic)
                        return (committed.get(last.partition) or 0) > last.offset

                    await wait_until(moved_past, 60, f"{group} to move past the poison on {topic}")
                    applied = await applied_events(url, group, partition.good)
                    assert {e.id for e in partition.good} <= applied, f"{group} lost a good event on {topic}"

                dead = await read_topic(bootstrap, dead_letter_topic(topic))
                for group in CONSUMERS[topic]:
                    mine = [d for d in dead if dict(d.headers)["dlq.consumer"] == group.encode()]
                    expected = Counter(value for value, rejecting in partition.poison if group in rejecting)
                    assert Counter(d.value for d in mine) == expected, (topic, group)
                    for letter in mine:
                        headers = dict(letter.headers)
                        assert headers["dlq.error"] and headers["dlq.source.topic"] == topic.encode()

            # A rebuild replays the topics from the start: what the live consumer dead-lettered it
            # skips, and the rebuilt state is the live one.
            live = await thresholds_state(url)
            engine = make_engine(url, pool_size=2)
            try:
                report = await rebuild(thresholds.settings, make_sessionmaker(engine))
            finally:
                await engine.dispose()
            replayed = [published[MARKS_TOPIC], published[REGISTERS_TOPIC]]
            rejected = sum("thresholds" in rejecting for p in replayed for _, rejecting in p.poison[3:])
            assert (report.events, report.unreadable, report.rejected) == (4, 6, rejected)
            assert await thresholds_state(url) == live
    finally:
        await subscriber.stop()
        broker.stop()
