"""Recording registers: re-posts, amendments with their audit trail, idempotent retries, the
change feed, retention, and the events each write publishes."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import text

from services.registers import service
from shared.auth import Role
from shared.db import make_engine, make_sessionmaker
from shared.events import MARKS_TOPIC, REGISTERS_TOPIC
from shared.time import school_today
from tests.conftest import read_events


def register(on: str, session: str, marks: list[dict], **extra) -> dict:
    return {"date": on, "session": session, "marks": marks, **extra}


async def test_repost_identical_changes_nothing_and_changed_mark_is_an_amendment(registers, school, new_upn):
    urn = school["urn"]
    upns = [new_upn() for _ in range(4)]
    first = register("2025-11-04", "AM", [{"upn": u, "code": "/"} for u in upns])
    async with registers.client(school["token"]) as http:
        r1 = await http.post(f"/v1/schools/{urn}/registers", json=first)
        assert r1.json() | {"submission_id": None} == {
            "submission_id": None,
            "urn": urn,
            "date": "2025-11-04",
            "session": "AM",
            "marks": 4,
            "new": 4,
            "unchanged": 0,
            "amended": 0,
        }
        same = await http.post(f"/v1/schools/{urn}/registers", json=first)
        assert (same.json()["new"], same.json()["unchanged"], same.json()["amended"]) == (0, 4, 0)

        changed = register(
            "2025-11-04",
            "AM",
            [{"upn": upns[0], "code": "/"}, {"upn": upns[1], "code": "M", "comment": "dentist"}],
            taken_by={"name": "J Smith", "position": "Class teacher"},
        )
        r3 = await http.post(f"/v1/schools/{urn}/registers", json=changed)
        assert (r3.json()["new"], r3.json()["unchanged"], r3.json()["amended"]) == (0, 1, 1)

        history = await http.get(
            f"/v1/schools/{urn}/pupils/{upns[1]}/marks", params={"from": "2025-11-01", "to": "2025-11-30"}
        )
        [mark] = history.json()["marks"]
        assert (mark["code"], mark["category"], mark["comment"]) == ("M", "AA", "dentist")
        [amendment] = mark["amendments"]
        assert amendment["previous_code"] == "/" and amendment["code"] == "M"
        assert amendment["reason"] == "corrected in MIS"
        assert amendment["amended_by"] == {"name": "J Smith", "position": "Class teacher"}
        assert amendment["source"] == "register"

        stored = await http.get(f"/v1/schools/{urn}/registers/2025-11-04/AM")
        assert len(stored.json()["submissions"]) == 3
        # Marks left out of a partial re-post are untouched, never deleted.
        assert {m["upn"]: m["code"] for m in stored.json()["marks"]} == {
            upns[0]: "/",
            upns[1]: "M",
            upns[2]: "/",
            upns[3]: "/",
        }

    amended = await read_events(
        registers.settings.kafka_bootstrap_servers,
        MARKS_TOPIC,
        lambda e: e.data.urn == urn and e.type == "attendance.mark.amended",
        1,
    )
    assert [
        (e.data.upn, e.data.previous_code, e.data.code, e.data.previous_category, e.data.category) for e in amended
    ] == [(upns[1], "/", "M", "P", "AA")]
    assert amended[0].data.amendment_id == amendment["id"]
    # Free text stays off the bus.
    assert "dentist" not in amended[0].model_dump_json()


async def test_amendment_endpoint_records_who_why_and_publishes_previous_code(registers, school, new_upn):
    urn, upn = school["urn"], new_upn()
    async with registers.client(school["token"]) as http:
        await http.post(f"/v1/schools/{urn}/registers", json=register("2025-11-05", "PM", [{"upn": upn, "code": "N"}]))
        body = {
            "code": "I",
            "reason": "Parent phoned: illness",
            "amended_by": {"name": "A Jones", "position": "Attendance officer"},
        }
        r = await http.post(f"/v1/schools/{urn}/marks/{upn}/2025-11-05/PM/amendments", json=body)
        assert r.status_code == 201, r.text
        assert (r.json()["previous_code"], r.json()["code"], r.json()["source"]) == ("N", "I", "amendment")

        again = await http.post(f"/v1/schools/{urn}/marks/{upn}/2025-11-05/PM/amendments", json=body)
        assert again.status_code == 409 and again.json()["type"] == "/problems/no-change"

        missing = await http.post(f"/v1/schools/{urn}/marks/{upn}/2025-11-06/PM/amendments", json=body)
        assert missing.status_code == 404 and missing.json()["type"] == "/problems/mark-not-found"

        marks = (
            await http.get(f"/v1/schools/{urn}/pupils/{upn}/marks", params={"from": "2025-11-05", "to": "2025-11-05"})
        ).json()
        assert marks["marks"][0]["code"] == "I"
        assert [a["amended_by"]["name"] for a in marks["marks"][0]["amendments"]] == ["A Jones"]

    events = await read_events(registers.settings.kafka_bootstrap_servers, MARKS_TOPIC, lambda e: e.data.upn == upn, 2)
    assert [(e.type, e.data.code) for e in events] == [
        ("attendance.mark.recorded", "N"),
        ("attendance.mark.amended", "I"),
    ]
    assert events[1].data.previous_code == "N" and events[1].data.change_version > events[0].data.change_version


async def test_idempotent_retry_returns_first_answer_and_writes_once(registers, school, new_upn):
    urn = school["urn"]
    body = register("2025-11-06", "AM", [{"upn": new_upn(), "code": "/"} for _ in range(5)])
    key = str(uuid.uuid4())
    async with registers.client(school["token"]) as http:
        first = await http.post(f"/v1/schools/{urn}/registers", json=body, headers={"Idempotency-Key": key})
        retry = await http.post(f"/v1/schools/{urn}/registers", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == retry.status_code == 201
        assert retry.json() == first.json()
        assert retry.headers.get("idempotent-replayed") == "true"
        stored = await http.get(f"/v1/schools/{urn}/registers/2025-11-06/AM")
        assert len(stored.json()["submissions"]) == 1

    taken = await read_events(
        registers.settings.kafka_bootstrap_servers,
        REGISTERS_TOPIC,
        lambda e: e.type == "attendance.register.taken" and e.data.urn == urn,
        2,
        timeout=5,
    )
    assert len(taken) == 1


async def test_change_feed_follows_commit_order_and_pages(registers, school, new_upn):
    urn = school["urn"]
    upns = [new_upn() for _ in range(5)]
    async with registers.client(school["token"]) as http:
        await http.post(
            f"/v1/schools/{urn}/registers", json=register("2025-11-07", "AM", [{"upn": u, "code": "/"} for u in upns])
        )
        page1 = (await http.get(f"/v1/schools/{urn}/marks", params={"since": 0, "limit": 3})).json()
        assert len(page1["changes"]) == 3 and page1["has_more"] is True
        page2 = (await http.get(f"/v1/schools/{urn}/marks", params={"since": page1["next_since"], "limit": 3})).json()
        assert len(page2["changes"]) == 2 and page2["has_more"] is False
        seen = [c["upn"] for c in page1["changes"] + page2["changes"]]
        assert sorted(seen) == sorted(upns)

        body = {"code": "O", "reason": "No reason given", "amended_by": {"name": "A Jones", "position": "Office"}}
        await http.post(f"/v1/schools/{urn}/marks/{upns[2]}/2025-11-07/AM/amendments", json=body)
        page3 = (await http.get(f"/v1/schools/{urn}/marks", params={"since": page2["next_since"]})).json()
        assert [(c["upn"], c["code"]) for c in page3["changes"]] == [(upns[2], "O")]
        assert page3["next_since"] > page2["next_since"]


async def test_retention_purge_deletes_old_entries_audits_and_announces(registers, school, new_upn, database_url):
    urn, upn = school["urn"], new_upn()
    today = school_today()
    old = today.replace(year=today.year - 7)
    kept = today - timedelta(days=30)
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for on in (old, kept):
                await conn.execute(
                    text(
                        "INSERT INTO registers.marks (urn, date, session, upn, code, recorded_at, recorded_by, "
                        "change_version) VALUES (:urn, :d, 'AM', :upn, '/', now(), 'loader', 1)"
                    ),
                    {"urn": urn, "d": on, "upn": upn},
                )
        async with make_sessionmaker(engine)() as session, session.begin():
            purge = await service.purge_expired_marks(session, registers.settings, "test-ops", today=today)
        assert purge.marks_deleted >= 1 and purge.cutoff == service.retention_cutoff(today, 6)
        async with engine.connect() as conn:
            dates = (
                (await conn.execute(text("SELECT date FROM registers.marks WHERE urn = :urn"), {"urn": urn}))
                .scalars()
                .all()
            )
            audit = (
                await conn.execute(
                    text("SELECT run_by, cutoff FROM registers.retention_purges ORDER BY id DESC LIMIT 1")
                )
            ).one()
        assert dates == [kept]
        assert audit == ("test-ops", purge.cutoff)
    finally:
        await engine.dispose()
    purged = await read_events(
        registers.settings.kafka_bootstrap_servers,
        REGISTERS_TOPIC,
        lambda e: e.type == "attendance.marks.purged" and e.data.urn == urn,
        1,
    )
    assert purged[0].data.before == purge.cutoff and purged[0].data.marks_deleted == 1


async def test_school_registry_and_calendar_publish_school_updates(registers, token, new_urn):
    urn = new_urn()
    async with registers.client(token(Role.OPS)) as ops:
        created = await ops.post(
            "/v1/schools",
            json={"urn": urn, "name": "Oak Hill", "la_code": "801", "phase": "secondary", "independent": True},
        )
        assert created.status_code == 201
        duplicate = await ops.post(
            "/v1/schools", json={"urn": urn, "name": "Oak Hill", "la_code": "801", "phase": "secondary"}
        )
        assert duplicate.status_code == 409 and duplicate.json()["type"] == "/problems/school-exists"
    calendar = {
        "terms": [
            {"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"},
            {"name": "Autumn 2", "start": "2025-11-03", "end": "2025-12-19"},
        ],
        "inset_days": ["2025-11-03"],
    }
    async with registers.client(token(Role.SCHOOL, urns={urn})) as http:
        r = await http.put(f"/v1/schools/{urn}/calendar", json=calendar)
        assert r.status_code == 200, r.text
        assert r.json()["calendar"]["inset_days"] == ["2025-11-03"]
        overlapping = {
            "terms": [
                {"name": "A", "start": "2025-09-03", "end": "2025-10-24"},
                {"name": "B", "start": "2025-10-20", "end": "2025-12-19"},
            ]
        }
        bad = await http.put(f"/v1/schools/{urn}/calendar", json=overlapping)
        assert bad.status_code == 422 and "overlap" in bad.text
    updates = await read_events(
        registers.settings.kafka_bootstrap_servers,
        REGISTERS_TOPIC,
        lambda e: e.type == "attendance.school.updated" and e.data.urn == urn,
        2,
    )
    assert [bool(e.data.calendar["terms"]) for e in updates] == [False, True]
    assert updates[0].data.independent is True


async def test_pre_2024_history_uses_the_code_set_then_in_force(registers, school, new_upn):
    urn, upn = school["urn"], new_upn()
    async with registers.client(school["token"]) as http:
        old = await http.post(
            f"/v1/schools/{urn}/registers", json=register("2023-10-02", "AM", [{"upn": upn, "code": "H"}])
        )
        assert old.status_code == 201, old.text
        marks = (
            await http.get(f"/v1/schools/{urn}/pupils/{upn}/marks", params={"from": "2023-10-02", "to": "2023-10-02"})
        ).json()
        assert (marks["marks"][0]["code"], marks["marks"][0]["category"]) == ("H", "AA")
        codes = (await http.get("/v1/codes", params={"on": date(2025, 1, 6).isoformat()})).json()
        assert "H" not in {c["code"] for c in codes} and {"C1", "J1", "Y7"} <= {c["code"] for c in codes}


async def test_operations_endpoints(registers):
    async with registers.client() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        metrics = (await http.get("/metrics")).text
        assert "http_requests_total" in metrics and "outbox_published_total" in metrics
        spec = (await http.get("/openapi.json")).json()
        body = spec["components"]["schemas"]["RegisterIn"]
        assert body["examples"][0]["marks"], "the register body documents an example"
