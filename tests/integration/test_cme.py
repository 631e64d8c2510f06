"""The CME service through HTTP and the stream: the roll, notification clocks, matching, unnotified
joiners and unmarked pupils from the register, the 10- and 20-day paths, access and bad input."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from shared.auth import Role
from shared.domain.roll import DELETION_GROUNDS
from shared.events import CME_TOPIC, ROLL_TOPIC
from shared.time import school_today
from tests.conftest import OTHER_LA, TEST_LA, eventually, read_events

TODAY = school_today()


def admission(upn: str, admitted_on: date = TODAY, **extra: Any) -> dict[str, Any]:
    return {"upn": upn, "admitted_on": admitted_on.isoformat(), "nc_year": "5", "date_of_birth": "2016-05-01"} | extra


def deletion(upn: str, ground: str | None, deleted_on: date = TODAY, **extra: Any) -> dict[str, Any]:
    body = {"upn": upn, "deleted_on": deleted_on.isoformat(), **extra}
    if ground is not None:
        body["ground"] = ground
    return body


async def new_school(registers, cme, token, new_urn, la_code: str = TEST_LA, **fields: Any) -> dict[str, Any]:
    """A school registered through the registers service, once CME has heard of it."""
    urn = new_urn()
    async with registers.client(token(Role.OPS)) as ops:
        response = await ops.post(
            "/v1/schools", json={"urn": urn, "name": f"School {urn}", "la_code": la_code, "phase": "primary", **fields}
        )
        assert response.status_code == 201, response.text
    school_token = token(Role.SCHOOL, urns={urn})
    async with cme.client(school_token) as http:

        async def arrived() -> bool:
            return (await http.get(f"/v1/schools/{urn}/notifications/compliance")).status_code == 200

        await eventually(arrived, f"school {urn} to reach CME")
    return {"urn": urn, "la_code": la_code, "token": school_token}


@pytest.fixture
async def two_schools(registers, cme, token, new_urn) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        await new_school(registers, cme, token, new_urn),
        await new_school(registers, cme, token, new_urn),
    )


def officer(cme, token, la_code: str = TEST_LA):
    return cme.client(token(Role.LA_OFFICER, la_code=la_code, subject="cme-officer"))


async def post(http, path: str, body: dict[str, Any], expect: int, **kw: Any) -> dict[str, Any]:
    response = await http.post(path, json=body, **kw)
    assert response.status_code == expect, response.text
    return response.json()


async def cme_case(cme, token, upn: str, status: str | None = None) -> dict[str, Any] | None:
    async with officer(cme, token) as http:
        params = {"upn": upn} | ({"status": status} if status else {})
        items = (await http.get("/v1/cme/cases", params=params)).json()["items"]
        return items[0] if items else None


# ---------------------------------------------------------------- the roll


async def test_admission_is_idempotent_and_amendments_are_audited(cme, two_schools, new_upn, token, broker):
    school, _ = two_schools
    upn = new_upn()
    path = f"/v1/schools/{school['urn']}/admissions"
    async with cme.client(school["token"]) as mis:
        first = await post(mis, path, admission(upn, characteristics={"ehcp": True, "fsm": True}), 201)
        assert first["source"] == "notified" and first["revision"] == 1
        assert first["notification"] == {
            "kind": "addition",
            "started_on": TODAY.isoformat(),
            "due_on": first["notification"]["due_on"],
            "received_on": TODAY.isoformat(),
            "status": "on_time",
        }
        same = await post(mis, path, admission(upn, characteristics={"ehcp": True, "fsm": True}), 200)
        assert same["id"] == first["id"] and same["revision"] == 1
        amended = await post(
            mis,
            path,
            admission(
                upn,
                nc_year="6",
                characteristics={"ehcp": True, "fsm": True},
                amendment_reason="Year group entered wrongly",
            ),
            200,
        )
        assert amended["id"] == first["id"] and amended["revision"] == 2 and amended["nc_year"] == "6"
        detail = (await mis.get(f"{path}/{first['id']}")).json()
        assert [(a["reason"], a["before"]["nc_year"], a["after"]["nc_year"]) for a in detail["amendments"]] == [
            ("Year group entered wrongly", "5", "6")
        ]
        assert detail["amendments"][0]["amended_by"] == "test-school"

        keyed = admission(new_upn())
        headers = {"Idempotency-Key": "adm-1"}
        created = await post(mis, path, keyed, 201, headers=headers)
        replayed = await mis.post(path, json=keyed, headers=headers)
        assert replayed.status_code == 201 and replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json() == created
        reused = await mis.post(path, json=admission(new_upn()), headers=headers)
        assert reused.status_code == 422 and reused.json()["type"].endswith("idempotency-key-reused")

    events = await read_events(broker.bootstrap_servers, ROLL_TOPIC, lambda e: e.subject == upn, 2)
    assert [(e.type, e.data.revision, e.data.nc_year) for e in events] == [
        ("roll.pupil.admitted", 1, "5"),
        ("roll.pupil.admitted", 2, "6"),
    ]
    wire = events[0].data.model_dump()
    assert "date_of_birth" not in wire and "characteristics" not in wire  # thin: special category data stays


@pytest.mark.parametrize("key", list(DELETION_GROUNDS))
async def test_every_deletion_ground(cme, two_schools, new_upn, token, key):
    """Each ground of reg 9(1): accepted with what it needs, refused with every missing condition,
    and on the CME register when it leaves a child whose whereabouts are unknown."""
    school, other = two_schools
    ground = DELETION_GROUNDS[key]
    upn = new_upn()
    path = f"/v1/schools/{school['urn']}"
    async with cme.client(school["token"]) as mis:
        await post(mis, f"{path}/admissions", admission(upn, TODAY - timedelta(days=60)), 201)
        if ground.requires_enquiries:
            refused = await post(mis, f"{path}/deletions", deletion(upn, key), 422)
            assert refused["type"].endswith("deletion-not-allowed")
            assert any("school days of continuous absence" in r for r in refused["reasons"])
            assert any("enquiries by the school" in r for r in refused["reasons"])
            assert any("enquiries by the LA" in r for r in refused["reasons"])
            return
        if ground.requires_destination:
            refused = await post(mis, f"{path}/deletions", deletion(upn, ground.code), 422)
            assert refused["reasons"] == [f"ground {ground.code} needs the new school recorded in the register"]
            body = deletion(upn, ground.code, destination={"urn": other["urn"]})
        else:
            body = deletion(upn, ground.code)
        deleted = await post(mis, f"{path}/deletions", body, 201)
    assert (deleted["ground"], deleted["ground_code"]) == (key, ground.code)
    assert deleted["notification"]["status"] == "on_time"
    case = await cme_case(cme, token, upn)
    if ground.requires_destination is None:
        assert case is not None and case["reason"] == "deleted_without_destination", case
        assert case["deletion_id"] == deleted["id"] and deleted["cme_case_id"] == case["id"]
    else:
        assert case is None


async def test_unknown_or_missing_ground_and_other_bad_input_are_rejected_with_reasons(cme, two_schools, new_upn):
    school, _ = two_schools
    upn = new_upn()
    path = f"/v1/schools/{school['urn']}"
    async with cme.client(school["token"]) as mis:
        for ground in (None, "moved_house", "9(1)(z)"):
            problem = await post(mis, f"{path}/deletions", deletion(upn, ground), 422)
            assert problem["type"].endswith("unknown-deletion-ground")
            assert "registered_at_another_school" in problem["valid_grounds"]
            assert "9(1)(a)" in problem["detail"]
        await post(mis, f"{path}/admissions", admission(upn, TODAY - timedelta(days=5)), 201)
        early = await post(mis, f"{path}/deletions", deletion(upn, "died", TODAY - timedelta(days=10)), 422)
        assert early["type"].endswith("deleted-before-admitted")
        # I is never a UPN's last character (a temporary UPN's letter, 1 time in 23, had a valid check letter).
        bad_upn = await post(mis, f"{path}/admissions", admission(upn[:-1] + "I"), 422)
        assert bad_upn["type"].endswith("invalid-upn")
        check_letter = await post(mis, f"{path}/admissions", admission(("B" if upn[0] == "A" else "A") + upn[1:]), 422)
        assert "check letter" in check_letter["detail"]
        born_later = await post(mis, f"{path}/admissions", admission(new_upn(), date_of_birth="2030-01-01"), 422)
        assert "date_of_birth must be before admitted_on" in born_later["errors"][0]["message"]
        year = await post(mis, f"{path}/admissions", admission(new_upn(), nc_year="15"), 422)
        assert year["errors"][0]["location"].endswith("nc_year")
        unknown = await post(mis, f"{path}/admissions", admission(new_upn(), surname="Smith"), 422)
        assert unknown["errors"][0]["location"].endswith("surname")
        grounds = (await mis.get("/v1/cme/deletion-grounds")).json()
        assert [g["code"] for g in grounds][:3] == ["9(1)(a)", "9(1)(b)", "9(1)(c)"]


# ---------------------------------------------------------------- matching


async def test_deletion_then_admission_elsewhere_resolve_each_other(cme, two_schools, new_upn, token, broker):
    leaving, joining = two_schools
    upn = new_upn()
    async with cme.client(leaving["token"]) as a, cme.client(joining["token"]) as b:
        await post(a, f"/v1/schools/{leaving['urn']}/admissions", admission(upn, TODAY - timedelta(days=30)), 201)
        gone = await post(a, f"/v1/schools/{leaving['urn']}/deletions", deletion(upn, "moved_away"), 201)
        case = await cme_case(cme, token, upn, "open")
        assert case is not None and case["deletion_id"] == gone["id"]
        joined = await post(b, f"/v1/schools/{joining['urn']}/admissions", admission(upn), 201)
        after = (await a.get(f"/v1/schools/{leaving['urn']}/deletions/{gone['id']}")).json()
    assert after["matched_admission_id"] == joined["id"]
    assert (after["destination_urn"], after["destination_known"]) == (joining["urn"], True)
    closed = await cme_case(cme, token, upn)
    assert (closed["status"], closed["outcome"], closed["located_urn"]) == (
        "closed",
        "found_on_roll_elsewhere",
        joining["urn"],
    )
    async with officer(cme, token) as la:
        history = (await la.get(f"/v1/pupils/{upn}/roll")).json()
    assert [m["kind"] for m in history["matches"]] == ["transfer"]
    assert history["deletions"][0]["return_details"] is None
    events = await read_events(broker.bootstrap_servers, ROLL_TOPIC, lambda e: e.subject == upn, 4)
    assert [e.type for e in events] == [
        "roll.pupil.admitted",
        "roll.pupil.deleted",
        "roll.pupil.admitted",
        "roll.pupil.matched",
    ]
    assert events[3].data.other_urn == leaving["urn"] and events[3].data.deletion_id == gone["id"]
    cme_events = await read_events(broker.bootstrap_servers, CME_TOPIC, lambda e: e.subject == upn, 5)
    assert [e.type for e in cme_events] == [
        "cme.notification.received",
        "cme.notification.received",
        "cme.case.opened",
        "cme.notification.received",
        "cme.case.closed",
    ]


async def test_admission_then_deletion_elsewhere_resolve_each_other(cme, two_schools, new_upn, token):
    """The other order: the new school enters the pupil first; the old school now owes its deletion
    return, and when it comes without a destination the match supplies one, so no CME case opens."""
    leaving, joining = two_schools
    upn = new_upn()
    async with cme.client(leaving["token"]) as a, cme.client(joining["token"]) as b:
        await post(a, f"/v1/schools/{leaving['urn']}/admissions", admission(upn, TODAY - timedelta(days=30)), 201)
        joined = await post(
            b, f"/v1/schools/{joining['urn']}/admissions", admission(upn, TODAY - timedelta(days=3)), 201
        )
        owed = (await a.get(f"/v1/schools/{leaving['urn']}/notifications/compliance")).json()
        owed_deletions = [i for i in owed["exceptions"] if i["upn"] == upn and i["kind"] == "deletion"]
        assert [(i["started_on"], i["received_on"]) for i in owed_deletions] == [
            ((TODAY - timedelta(days=3)).isoformat(), None)
        ]
        gone = await post(a, f"/v1/schools/{leaving['urn']}/deletions", deletion(upn, "moved_away"), 201)
    assert gone["matched_admission_id"] == joined["id"] and gone["destination_urn"] == joining["urn"]
    assert gone["notification"]["started_on"] == (TODAY - timedelta(days=3)).isoformat()
    assert await cme_case(cme, token, upn) is None


async def test_dual_registration_is_recognised_not_flagged(cme, two_schools, new_upn, token):
    main, other = two_schools
    upn = new_upn()
    async with cme.client(main["token"]) as a, cme.client(other["token"]) as b:
        await post(a, f"/v1/schools/{main['urn']}/admissions", admission(upn, dual_registration=True), 201)
        await post(b, f"/v1/schools/{other['urn']}/admissions", admission(upn, dual_registration=True), 201)
        owed = (await a.get(f"/v1/schools/{main['urn']}/notifications/compliance")).json()
    assert [i for i in owed["exceptions"] if i["upn"] == upn] == []
    async with officer(cme, token) as la:
        history = (await la.get(f"/v1/pupils/{upn}/roll")).json()
    assert [m["kind"] for m in history["matches"]] == ["dual_registration"]
    assert await cme_case(cme, token, upn) is None


# ---------------------------------------------------------------- clocks and compliance


async def test_deadlines_count_school_days_across_half_term_inset_and_bank_holidays(
    registers, cme, token, new_urn, new_upn
):
    calendar = {
        "terms": [
            {"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"},
            {"name": "Autumn 2", "start": "2025-11-03", "end": "2025-12-19"},
            {"name": "Spring 1", "start": "2026-01-05", "end": "2026-02-13"},
            {"name": "Spring 2", "start": "2026-02-23", "end": "2026-03-27"},
            {"name": "Summer 1", "start": "2026-04-13", "end": "2026-05-22"},
        ],
        "inset_days": ["2025-11-03"],
    }
    school = await new_school(registers, cme, token, new_urn, calendar=calendar, independent=True)
    cases = [
        ("2025-10-23", "2025-10-24"),  # Thursday: the next school day
        ("2025-10-24", "2025-11-04"),  # Friday before half-term; INSET on the Monday back
        ("2026-02-13", "2026-02-23"),  # Friday before half-term
        ("2026-03-27", "2026-04-13"),  # end of term: Easter holidays and its bank holidays
        ("2026-05-01", "2026-05-05"),  # Friday before the early May bank holiday
    ]
    async with cme.client(school["token"]) as mis:
        for entered, due in cases:
            upn = new_upn()
            body = admission(upn, date.fromisoformat(entered))
            added = await post(mis, f"/v1/schools/{school['urn']}/admissions", body, 201)
            assert added["notification"]["due_on"] == due, (entered, added["notification"])
            assert added["notification"]["status"] == ("late" if date.fromisoformat(due) < TODAY else "on_time")
            gone = await post(
                mis, f"/v1/schools/{school['urn']}/deletions", deletion(upn, "died", date.fromisoformat(entered)), 201
            )
            assert gone["notification"]["due_on"] == due


async def test_policy_per_la_sets_the_national_deadlines(registers, cme, token, new_urn, new_upn):
    la = "803"
    school = await new_school(registers, cme, token, new_urn, la_code=la)
    async with officer(cme, token, la) as http:
        assert (await http.get(f"/v1/cme/policies/{la}")).json()["version"] == 0
        body = {"addition_deadline": "fifth_day", "deletion_deadline": "deletion_date"}
        put = await http.put(f"/v1/cme/policies/{la}", json=body)
        assert put.status_code == 200 and put.json()["version"] == 1, put.text
        typo = await http.put(f"/v1/cme/policies/{la}", json={"addition_dedline": "fifth_day"})
        assert typo.status_code == 422
        # Counting ten million school days ran towards year 9999 and failed every later clock (500).
        endless = await http.put(f"/v1/cme/policies/{la}", json={"addition_school_days": 10**7})
        assert endless.status_code == 422, endless.text
        assert [e["location"] for e in endless.json()["errors"]] == ["addition_school_days"]
        assert (await http.put(f"/v1/cme/policies/{TEST_LA}", json=body)).status_code == 403
    async with cme.client(school["token"]) as mis:
        friday = date(2026, 3, 6)
        added = await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(new_upn(), friday), 201)
    assert added["notification"]["due_on"] == "2026-03-11"


async def test_unnotified_joiner_from_marks_goes_overdue_then_late(registers, cme, token, new_urn, new_upn, broker):
    school = await new_school(registers, cme, token, new_urn)
    upn, known = new_upn(), new_upn()
    first_mark = TODAY - timedelta(days=14)
    async with cme.client(school["token"]) as mis:
        await post(
            mis, f"/v1/schools/{school['urn']}/admissions", admission(known, first_mark - timedelta(days=7)), 201
        )
    async with registers.client(school["token"]) as reg:
        marks = [{"upn": upn, "code": "/"}, {"upn": known, "code": "/"}]
        body = {"date": first_mark.isoformat(), "session": "AM", "marks": marks}
        assert (await reg.post(f"/v1/schools/{school['urn']}/registers", json=body)).status_code == 201

    async def missing() -> list[dict[str, Any]]:
        async with officer(cme, token) as la:
            items = (await la.get("/v1/cme/worklist")).json()["items"]
        return [i for i in items if i["upn"] == upn and i["kind"] == "missing_return"]

    [item] = await eventually(missing, "the unnotified joiner's return to be overdue")
    assert item["since"] == first_mark.isoformat()
    async with cme.client(school["token"]) as mis:
        report = (await mis.get(f"/v1/schools/{school['urn']}/notifications/compliance")).json()
        assert (report["additions"]["missing"], report["additions"]["late"]) == (1, 1)
        roll = (await mis.get(f"/v1/schools/{school['urn']}/admissions")).json()["items"]
        detected = next(a for a in roll if a["upn"] == upn)
        assert (detected["source"], detected["first_mark_on"]) == ("detected", first_mark.isoformat())
        converted = await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn, first_mark), 200)
    assert converted["id"] == detected["id"] and converted["source"] == "notified"
    assert converted["notification"]["status"] == "late"
    assert await missing() == []
    events = await read_events(broker.bootstrap_servers, CME_TOPIC, lambda e: e.subject == upn, 3)
    assert [e.type for e in events] == [
        "cme.joiner.unnotified",
        "cme.notification.overdue",
        "cme.notification.received",
    ]
    assert events[2].data.status == "late"
    assert await read_events(broker.bootstrap_servers, CME_TOPIC, lambda e: e.subject == known, 2, timeout=2) != []
    assert not [
        e
        for e in await read_events(broker.bootstrap_servers, CME_TOPIC, lambda e: e.subject == known, 9, timeout=2)
        if e.type == "cme.joiner.unnotified"
    ]


async def test_pupil_on_roll_without_marks_is_flagged_until_marked(registers, cme, token, new_urn, new_upn):
    school = await new_school(registers, cme, token, new_urn)
    present, absent = new_upn(), new_upn()
    start = TODAY - timedelta(days=30)
    async with cme.client(school["token"]) as mis:
        for upn in (present, absent):
            await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn, start), 201)
    days = school_days(start + timedelta(days=1), 3)
    async with registers.client(school["token"]) as reg:
        for day in days[:2]:
            for session, code in (("AM", "/"), ("PM", "\\")):
                body = {"date": day.isoformat(), "session": session, "marks": [{"upn": present, "code": code}]}
                response = await reg.post(f"/v1/schools/{school['urn']}/registers", json=body)
                assert response.status_code == 201, response.text

    async def flagged() -> set[str]:
        async with cme.client(school["token"]) as mis:
            items = (await mis.get("/v1/cme/worklist")).json()["items"]
        return {i["upn"] for i in items if i["kind"] == "unmarked_pupil"}

    assert await eventually(flagged, "the unmarked pupil to be flagged") == {absent}
    async with registers.client(school["token"]) as reg:
        body = {
            "date": (days[-1] + timedelta(days=1)).isoformat(),
            "session": "AM",
            "marks": [{"upn": absent, "code": "N"}],
        }
        assert (await reg.post(f"/v1/schools/{school['urn']}/registers", json=body)).status_code == 201

    async def cleared() -> bool:
        return await flagged() == set()

    await eventually(cleared, "the flag to clear once the pupil is marked")


# ---------------------------------------------------------------- the 10- and 20-day paths


def school_days(start: date, n: int) -> list[date]:
    days, day = [], start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


async def test_missing_child_10_and_20_day_paths_to_a_deletion_and_a_match(
    registers, cme, token, new_urn, new_upn, broker
):
    """10 school days of unauthorised absence open a CME case; a deletion on 9(1)(i) waits for 20
    days and enquiries by both the school and the LA; the child stays on the register until found."""
    school = await new_school(registers, cme, token, new_urn)
    elsewhere = await new_school(registers, cme, token, new_urn)
    upn = new_upn()
    days = school_days(date(2026, 1, 12), 21)  # no bank holidays; this school has no term dates
    async with cme.client(school["token"]) as mis:
        await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn, date(2025, 9, 3)), 201)

    async def absent(on: list[date]) -> None:
        async with registers.client(school["token"]) as reg:
            for day in on:
                for session in ("AM", "PM"):
                    body = {"date": day.isoformat(), "session": session, "marks": [{"upn": upn, "code": "O"}]}
                    response = await reg.post(f"/v1/schools/{school['urn']}/registers", json=body)
                assert response.status_code == 201, response.text

    await absent(days[:10])

    async def opened() -> dict[str, Any] | None:
        return await cme_case(cme, token, upn, "open")

    case = await eventually(opened, "the 10-day alert to open a CME case", timeout=30)
    assert case["reason"] == "continuous_unauthorised_10_days"
    assert case["absence_started_on"] == "2026-01-12"
    assert case["deletion_allowed_from"] == days[20].isoformat()  # the school day after the 20th

    path = f"/v1/schools/{school['urn']}/deletions"
    async with cme.client(school["token"]) as mis:
        early = await post(mis, path, deletion(upn, "continuous_absence_20_days", days[10]), 422)
        assert "needs 20 school days of continuous absence, 10 so far" in early["detail"]
        assert early["cme_case_id"] == case["id"]
    await absent(days[10:20])

    async def twenty_days_logged() -> bool:
        async with officer(cme, token) as la:
            detail = (await la.get(f"/v1/cme/cases/{case['id']}")).json()
        return any(e["detail"].get("rule_id") == "continuous_absence_20_days" for e in detail["log"])

    await eventually(twenty_days_logged, "the 20-day alert to reach the case", timeout=30)
    enquiry = {"made_on": days[12].isoformat(), "officer": "Head of Year", "method": "phone", "outcome": "no_response"}
    async with cme.client(school["token"]) as mis:
        await post(mis, f"/v1/cme/cases/{case['id']}/enquiries", enquiry, 201)
        only_school = await post(mis, path, deletion(upn, "9(1)(i)", days[20]), 422)
        assert only_school["reasons"] == ["ground 9(1)(i) needs reasonable enquiries by the LA: none logged"]
    async with officer(cme, token) as la:
        visit = enquiry | {"officer": "CME officer", "method": "home_visit", "notes": "Neighbours say family left"}
        logged = await post(la, f"/v1/cme/cases/{case['id']}/enquiries", visit, 201)
        assert logged["party"] == "la"
    async with cme.client(school["token"]) as mis:
        gone = await post(mis, path, deletion(upn, "9(1)(i)", days[20]), 201)
    assert gone["cme_case_id"] == case["id"]
    still = await cme_case(cme, token, upn)
    assert (still["status"], still["deletion_id"]) == ("open", gone["id"])  # on the register until located

    async with cme.client(elsewhere["token"]) as b:
        await post(b, f"/v1/schools/{elsewhere['urn']}/admissions", admission(upn), 201)
    found = await cme_case(cme, token, upn)
    assert (found["status"], found["outcome"], found["located_urn"]) == (
        "closed",
        "found_on_roll_elsewhere",
        elsewhere["urn"],
    )
    events = await read_events(
        broker.bootstrap_servers, CME_TOPIC, lambda e: e.subject == upn and e.type.startswith("cme.case"), 2
    )
    assert [e.type for e in events] == ["cme.case.opened", "cme.case.closed"]
    enquiries = await read_events(
        broker.bootstrap_servers, CME_TOPIC, lambda e: e.type == "cme.enquiry.logged" and e.subject == upn, 2
    )
    assert sorted(e.data.by for e in enquiries) == ["la", "school"]
    assert "notes" not in enquiries[0].data.model_dump() and "officer" not in enquiries[0].data.model_dump()


async def test_officer_reports_logs_and_closes_a_case(cme, token, new_upn, two_schools):
    upn = new_upn()
    async with officer(cme, token) as la:
        case = await post(la, "/v1/cme/cases", {"upn": upn, "notes": "Referred by health visitor"}, 201)
        assert case["reason"] == "reported"
        again = await post(la, "/v1/cme/cases", {"upn": upn}, 409)
        assert again["case_id"] == case["id"]
        needs_school = await post(la, f"/v1/cme/cases/{case['id']}/close", {"outcome": "found_on_roll_elsewhere"}, 422)
        assert needs_school["type"].endswith("located-urn-required")
        closed = await post(la, f"/v1/cme/cases/{case['id']}/close", {"outcome": "moved_abroad", "notes": "Spain"}, 200)
        assert (closed["status"], closed["outcome"]) == ("closed", "moved_abroad")
        await post(la, f"/v1/cme/cases/{case['id']}/close", {"outcome": "other"}, 409)
        register = (await la.get("/v1/cme/cases", params={"status": "closed", "upn": upn})).json()["items"]
        assert [c["id"] for c in register] == [case["id"]]
    school, _ = two_schools
    async with cme.client(school["token"]) as mis:
        await post(mis, f"/v1/cme/cases/{case['id']}/close", {"outcome": "other"}, 404)  # not its pupil
        reported = [await post(mis, "/v1/cme/cases", {"upn": new_upn(), "urn": school["urn"]}, 201) for _ in range(3)]
        pages, cursor = [], None
        while True:  # the school's own cases, newest first, two at a time
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await mis.get("/v1/cme/cases", params=params)).json()
            pages.append([c["id"] for c in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert [i for p in pages for i in p] == sorted((c["id"] for c in reported), reverse=True)
    assert [len(p) for p in pages] == [2, 1]


# ---------------------------------------------------------------- access


async def test_tenant_isolation(cme, registers, token, new_urn, new_upn, two_schools):
    school, neighbour = two_schools
    upn = new_upn()
    async with cme.client(school["token"]) as mis:
        await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn), 201)
        gone = await post(
            mis,
            f"/v1/schools/{school['urn']}/deletions",
            deletion(upn, "moved_away", return_details={"pupil_name": "Sam Example", "pupil_address": "1 Road"}),
            201,
        )
        case_id = gone["cme_case_id"]
        assert gone["return_details"]["pupil_name"] == "Sam Example"
    async with cme.client(neighbour["token"]) as other_school:
        for path in (
            f"/v1/schools/{school['urn']}/admissions",
            f"/v1/schools/{school['urn']}/notifications/compliance",
            f"/v1/schools/{school['urn']}/deletions/{gone['id']}",
        ):
            assert (await other_school.get(path)).status_code == 403, path
        assert (
            await other_school.post(f"/v1/schools/{school['urn']}/admissions", json=admission(new_upn()))
        ).status_code == 403
        assert (await other_school.get(f"/v1/cme/cases/{case_id}")).status_code == 404
        assert (await other_school.get(f"/v1/pupils/{upn}/roll")).status_code == 403
    async with officer(cme, token, OTHER_LA) as stranger:
        assert (await stranger.get(f"/v1/cme/cases/{case_id}")).status_code == 404
        assert (await stranger.get("/v1/cme/cases", params={"la_code": TEST_LA})).status_code == 403
        assert (await stranger.get(f"/v1/schools/{school['urn']}/notifications/compliance")).status_code == 403
        assert (await stranger.get(f"/v1/pupils/{upn}/roll")).json()["admissions"] == []
        stranger_report = (await stranger.get("/v1/notifications/compliance")).json()
        assert stranger_report["la_code"] == OTHER_LA
        assert school["urn"] not in {s["urn"] for s in stranger_report["schools"]}
    async with cme.client(token(Role.LA_SYSTEM, la_code=TEST_LA)) as system:
        seen = (await system.get(f"/v1/schools/{school['urn']}/deletions/{gone['id']}")).json()
        assert seen["return_details"] is None and seen["destination_address"] is None  # not for machines
        assert (
            await system.post(f"/v1/schools/{school['urn']}/admissions", json=admission(new_upn()))
        ).status_code == 403
        la_report = (await system.get("/v1/notifications/compliance")).json()
        assert school["urn"] in {s["urn"] for s in la_report["schools"]}
    async with cme.client() as anonymous:
        assert (await anonymous.get("/v1/cme/cases")).status_code == 401


async def test_a_calendar_with_no_school_days_ahead_is_a_clear_422(registers, cme, token, new_urn, new_upn):
    """Only past terms loaded: a return's deadline cannot be counted; the school is told why and
    nothing is recorded."""
    calendar = {"terms": [{"name": "Summer 2", "start": "2020-06-01", "end": "2020-07-17"}]}
    school = await new_school(registers, cme, token, new_urn, calendar=calendar)
    upn, urn = new_upn(), school["urn"]
    async with cme.client(school["token"]) as http:
        response = await http.post(f"/v1/schools/{urn}/deletions", json=deletion(upn, "died"))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"].endswith("/calendar-has-no-school-days-ahead")
        assert "term dates" in problem["detail"]
    async with officer(cme, token) as http:
        history = (await http.get(f"/v1/pupils/{upn}/roll")).json()
        assert history["deletions"] == [] and history["admissions"] == []
