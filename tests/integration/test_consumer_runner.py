"""The ConsumerRunner's guarantees against a real broker and a real database: a redelivered event
changes nothing, poison messages go to the DLQ without blocking their partition, a crash between
the database commit and the offset commit replays harmlessly, and a graceful stop commits what it
applied.

Each test uses its own topic (`test.<what>.<hex>`) and consumer schema, so it sees only its own
messages. Messages that must stay in order share a key (one partition).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

import shared.consumer
from shared.events import dead_letter_topic, parse_event
from shared.kafka import ensure_topics
from shared.outbox import encode
from tests.integration.test_outbox_and_consumers import (
    EffectsHandler,
    committed_offsets,
    downstream_schema,
    make_runner,
    mark_event,
    publish,
    read_topic,
    running,
    unique,
    wait_until,
)


async def _topic(bootstrap: str, what: str) -> str:
    topic = unique(f"test.{what}.")
    await ensure_topics(bootstrap, [topic, dead_letter_topic(topic)], 4)
    return topic


def _applied_count(db, expected_ids):
    async def probe() -> bool:
        effects = await db.effects()
        return set(expected_ids) <= set(effects)

    return probe


def _ends(sent) -> dict[int, int]:
    """Next offset per partition after the messages we produced (the only ones on our topic)."""
    ends: dict[int, int] = {}
    for metadata in sent:
        ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
    return ends


async def _committed_to(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    """Whether the group's committed offsets are exactly `ends` (nothing committed elsewhere)."""
    committed = await committed_offsets(bootstrap, group, topic)
    return {p: c for p, c in committed.items() if c} == ends


def _parse_error(raw: bytes) -> str:
    try:
        parse_event(raw)
    except Exception as exc:
        return repr(exc)
    raise AssertionError(f"{raw!r} parsed")


def _consumed(name: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("consumer_events_total", {"consumer": name, "topic": "batch", "outcome": outcome})
        or 0
    )


async def test_a_redelivered_event_is_applied_once(database_url, broker):
    """The same CloudEvent (same id) three times: twice in a row before the consumer starts (one
    batch, most likely) and once more after it was applied (another batch). The handler sees it
    once; `applied_events` has one row for it."""
    bootstrap = broker.bootstrap_servers
    topic = await _topic(bootstrap, "dupes")
    event = mark_event("UPN-DUP")
    sentinel = mark_event("UPN-DUP", code="I")  # same key: same partition, after the last copy
    key = b"UPN-DUP"
    async with downstream_schema(database_url) as db:
        handler = EffectsHandler(db.schema)
        runner = make_runner(db, bootstrap, handler, [topic])
        await publish(bootstrap, topic, [(key, encode(event))] * 2)
        async with running(runner):
            await wait_until(_applied_count(db, [event.id]), 30, "the event to be applied")
            await publish(bootstrap, topic, [(key, encode(event)), (key, encode(sentinel))])
            await wait_until(_applied_count(db, [sentinel.id]), 15, "the sentinel after the third copy")

        assert handler.seen_ids() == [event.id, sentinel.id]
        assert await db.effects() == {event.id: 1, sentinel.id: 1}
        assert Counter(await db.applied(runner.name)) == Counter({event.id: 1, sentinel.id: 1})
        assert _consumed(runner.name, "duplicate") == 2


async def test_poison_messages_go_to_the_dlq_and_do_not_block_the_partition(database_url, broker):
    """On one partition: a good event, a non-JSON payload, an event the handler rejects
    (ValueError) and another good event. The good ones are applied, the bad ones are on
    `<topic>.dlq` with the error and their source position, and the consumer moves past them."""
    bootstrap = broker.bootstrap_servers
    topic = await _topic(bootstrap, "poison")
    key = b"same-partition"
    good1, rejected, good2 = mark_event("UPN-GOOD-1"), mark_event("UPN-POISON"), mark_event("UPN-GOOD-2")
    not_json = b"\x00this is not JSON{"
    sent = await publish(
        bootstrap,
        topic,
        [(key, encode(good1)), (key, not_json), (key, encode(rejected)), (key, encode(good2))],
    )
    assert len({m.partition for m in sent}) == 1
    async with downstream_schema(database_url) as db:
        handler = EffectsHandler(db.schema, poison_upn="UPN-POISON")
        runner = make_runner(db, bootstrap, handler, [topic])
        async with running(runner):
            await wait_until(_applied_count(db, [good1.id, good2.id]), 30, "both good events to be applied")

            async def two_dead_letters():
                return len(await read_topic(bootstrap, dead_letter_topic(topic))) >= 2

            await wait_until(two_dead_letters, 15, "two messages on the DLQ")

        assert await db.effects() == {good1.id: 1, good2.id: 1}
        assert sorted(await db.applied(runner.name)) == sorted([good1.id, good2.id])

        dead = await read_topic(bootstrap, dead_letter_topic(topic))
        assert [d.value for d in dead] == [not_json, encode(rejected)]
        assert all(d.key == key for d in dead)
        headers = [{name: value.decode() for name, value in d.headers} for d in dead]
        assert headers[0]["dlq.error"] == _parse_error(not_json)  # not even JSON
        assert headers[1]["dlq.error"] == repr(ValueError("poison pupil UPN-POISON"))
        assert "ValueError: poison pupil UPN-POISON" in headers[1]["dlq.trace"]
        assert [h["dlq.source.offset"] for h in headers] == [str(sent[1].offset), str(sent[2].offset)]
        assert {h["dlq.source.topic"] for h in headers} == {topic}
        assert {h["dlq.source.partition"] for h in headers} == {str(sent[0].partition)}
        assert {h["dlq.consumer"] for h in headers} == {runner.name}

        # Not blocked: the group's committed offset is past all four messages.
        assert await _committed_to(bootstrap, runner.name, topic, {sent[0].partition: sent[-1].offset + 1})


async def test_a_crash_between_db_commit_and_offset_commit_replays_harmlessly(database_url, broker, monkeypatch):
    """The consumer "crashes" at its first offset commit, i.e. after the batch's database
    transaction (effects + applied_events) committed but before Kafka knows. The runner restarts
    its consumer like a restarted process would: same group, same name, nothing committed, so it
    reads the same records again. We check that the records really were read twice and that the
    second reading changed nothing (each effect once, the handler never given an event twice).

    Deterministic: the crash is injected (a consumer whose first `commit` raises) rather than
    timed with a kill; the restart path is the runner's own (`run` catches and restarts)."""
    bootstrap = broker.bootstrap_servers
    topic = await _topic(bootstrap, "crash")
    events = [mark_event(f"UPN-CRASH-{i}") for i in range(8)]
    sent = await publish(bootstrap, topic, [(e.subject.encode(), encode(e)) for e in events])

    reads: Counter[tuple[int, int]] = Counter()
    crashed_commits: list[dict] = []

    class CrashOnFirstCommit(AIOKafkaConsumer):
        async def getmany(self, *partitions, **kwargs):
            batch = await super().getmany(*partitions, **kwargs)
            reads.update((r.partition, r.offset) for records in batch.values() for r in records)
            return batch

        async def commit(self, offsets=None):
            if not crashed_commits:
                crashed_commits.append(dict(offsets))
                raise RuntimeError("simulated crash between the DB commit and the offset commit")
            return await super().commit(offsets)

    monkeypatch.setattr(shared.consumer, "AIOKafkaConsumer", CrashOnFirstCommit)
    async with downstream_schema(database_url) as db:
        handler = EffectsHandler(db.schema)
        runner = make_runner(db, bootstrap, handler, [topic])
        async with running(runner):
            await wait_until(_applied_count(db, [e.id for e in events]), 30, "all events to be applied")
            assert crashed_commits, "the simulated crash did not happen"
            crashed = {(tp.partition, offset) for tp, offset in crashed_commits[0].items()}

            async def reread():
                return all(reads[(p, o)] >= 2 for p, end in crashed for o in range(end))

            await wait_until(reread, 30, "the restarted consumer to read the crashed batch again")

            await wait_until(
                lambda: _committed_to(bootstrap, runner.name, topic, _ends(sent)),
                15,
                "offsets to be committed after the restart",
            )

        # The applied batch came back as duplicates; a batch read ahead of it was never applied.
        replayed = sum(end for _, end in crashed)
        assert replayed >= 1
        assert sorted(handler.seen_ids()) == sorted(e.id for e in events)  # each handed over once
        assert await db.effects() == {e.id: 1 for e in events}
        assert sorted(await db.applied(runner.name)) == sorted(e.id for e in events)
        assert _consumed(runner.name, "duplicate") == replayed


async def test_graceful_stop_commits_what_was_applied(database_url, broker):
    """Setting the stop event of an idle runner ends it within a few seconds, with its offsets
    committed up to the end: a new runner of the same name re-reads nothing (no duplicate is even
    offered to it) and applies only what came after."""
    bootstrap = broker.bootstrap_servers
    topic = await _topic(bootstrap, "stop")
    events = [mark_event(f"UPN-STOP-{i}") for i in range(6)]
    sent = await publish(bootstrap, topic, [(e.subject.encode(), encode(e)) for e in events])
    async with downstream_schema(database_url) as db:
        handler = EffectsHandler(db.schema)
        runner = make_runner(db, bootstrap, handler, [topic])
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await wait_until(_applied_count(db, [e.id for e in events]), 30, "all events to be applied")
            await asyncio.sleep(0.5)  # idle: nothing left to read
            loop = asyncio.get_running_loop()
            started = loop.time()
            stop.set()
            await asyncio.wait_for(task, 10)
            assert loop.time() - started < 5
        finally:
            stop.set()
            if not task.done():
                task.cancel()

        assert await _committed_to(bootstrap, runner.name, topic, _ends(sent))

        duplicates_before = _consumed(runner.name, "duplicate")
        later = mark_event("UPN-STOP-LATER")
        second_handler = EffectsHandler(db.schema)
        second = make_runner(db, bootstrap, second_handler, [topic], name=runner.name)
        async with running(second):
            await publish(bootstrap, topic, [(b"UPN-STOP-LATER", encode(later))])
            await wait_until(_applied_count(db, [later.id]), 30, "the later event to be applied")

        assert second_handler.seen_ids() == [later.id]
        assert _consumed(runner.name, "duplicate") == duplicates_before  # nothing was read again
        assert await db.effects() == {**{e.id: 1 for e in events}, later.id: 1}


def _lag_reported(name: str, topic: str) -> set[int]:
    """Partitions of the topic whose lag this process reports for consumer `name`."""
    return {
        p
        for p in range(4)
        if REGISTRY.get_sample_value("consumer_lag_messages", {"consumer": name, "topic": topic, "partition": str(p)})
        is not None
    }


async def test_lag_is_reported_only_for_the_partitions_a_replica_consumes(database_url, broker):
    """The lag gauge is what the autoscaler sums over replicas. A runner that consumed all four
    partitions reports lag for each; when a second replica joins the group and takes some of them,
    the runner stops reporting those (a stale value would be counted twice), and reports the ones
    it keeps again after their next batch."""
    bootstrap = broker.bootstrap_servers
    topic = await _topic(bootstrap, "lag")
    first = [mark_event(f"UPN-LAG-{i}") for i in range(40)]
    sent = await publish(bootstrap, topic, [(e.subject.encode(), encode(e)) for e in first])
    assert {m.partition for m in sent} == {0, 1, 2, 3}
    async with downstream_schema(database_url) as db:
        runner = make_runner(db, bootstrap, EffectsHandler(db.schema), [topic])
        async with running(runner):
            await wait_until(_applied_count(db, [e.id for e in first]), 30, "the first events to be applied")
            assert _lag_reported(runner.name, topic) == {0, 1, 2, 3}

            replica = AIOKafkaConsumer(
                topic, bootstrap_servers=bootstrap, group_id=runner.name, enable_auto_commit=False
            )
            await replica.start()
            try:

                async def replica_assigned() -> set[int]:
                    await replica.getmany(timeout_ms=200)  # the replica's part in the rebalance
                    return {tp.partition for tp in replica.assignment()}

                moved = await wait_until(replica_assigned, 30, "the second replica to get partitions")
                kept = {0, 1, 2, 3} - moved
                assert kept, "the runner kept no partition"
                assert not _lag_reported(runner.name, topic) & moved

                later = [mark_event(f"UPN-LAG-LATER-{i}") for i in range(40)]
                sent_later = await publish(bootstrap, topic, [(e.subject.encode(), encode(e)) for e in later])
                in_kept = [e.id for e, m in zip(later, sent_later, strict=True) if m.partition in kept]
                await wait_until(_applied_count(db, in_kept), 30, "the later events of the kept partitions")
                assert _lag_reported(runner.name, topic) == kept
            finally:
                await replica.stop()
