"""Casework through HTTP and the broker: a register to an alert to a case, then an officer's
journey from Stage 1 to a legal decision with every guard enforced, and the escalation events."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from shared.auth import Role
from shared.events import ESCALATIONS_TOPIC, CaseEvent, ClockOverdue
from shared.time import school_today
from tests.conftest import TEST_LA, eventually, read_events

DAYS = [
    date(2025, 11, 3) + timedelta(days=d) for d in range(12) if (date(2025, 11, 3) + timedelta(days=d)).weekday() < 5
]


async def persistently_absent(registers, school: dict[str, Any], upn: str) -> None:
    """Four unauthorised sessions out of twenty: 20 %, a persistent absence alert."""
    async with registers.client(school["token"]) as mis:
        for index, day in enumerate(DAYS):
            for session in ("AM", "PM"):
                code = "O" if index < 2 else ("/" if session == "AM" else "\\")
                body = {"date": day.isoformat(), "session": session, "marks": [{"upn": upn, "code": code}]}
                response = await mis.post(f"/v1/schools/{school['urn']}/registers", json=body)
                assert response.status_code == 201, response.text


async def case_of(http, upn: str) -> dict[str, Any] | None:
    response = await http.get("/v1/cases", params={"upn": upn})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return items[0] if items else None


async def open_case(http, urn: str, upn: str, reason: str = "Concern") -> Any:
    """POST /v1/cases once the school's registry event has reached casework."""

    async def attempt() -> Any:
        response = await http.post("/v1/cases", json={"urn": urn, "upn": upn, "reason": reason})
        return None if response.status_code == 404 else response

    return await eventually(attempt, f"school {urn} to reach casework")


class Officer:
    """Acts on one case over HTTP, sending the version it last read (If-Match)."""

    def __init__(self, http, case: dict[str, Any]) -> None:
        self.http, self.case = http, case

    async def record(self, kind: str, on: date, **details: Any) -> None:
        response = await self.http.post(
            f"/v1/cases/{self.case['id']}/actions",
            json={"kind": kind, "occurred_on": on.isoformat(), "details": details},
            headers={"If-Match": str(self.case["version"])},
        )
        assert response.status_code == 201, response.text
        await self.refresh()

    async def send(self, event: str, expect: int = 200, **payload: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"/v1/cases/{self.case['id']}/transitions",
            json={"event": event, "payload": payload},
            headers={"If-Match": str(self.case["version"])},
        )
        assert response.status_code == expect, response.text
        if expect == 200:
            self.case = response.json()
        return response.json()

    async def refresh(self) -> None:
        self.case = (await self.http.get(f"/v1/cases/{self.case['id']}")).json()


async def test_alert_opens_a_case_and_an_officer_takes_it_to_a_legal_decision(
    registers, thresholds, casework, school, new_upn, token, broker
):
    urn, upn = school["urn"], new_upn()
    await persistently_absent(registers, school, upn)
    officer_token = token(Role.LA_OFFICER, la_code=TEST_LA)
    async with casework.client(school["token"]) as school_http, casework.client(officer_token) as la_http:
        case = await eventually(lambda: case_of(school_http, upn), "a case opened by the PA alert")
        assert case["state"] == "stage_1" and case["urn"] == urn and "escalate_to_stage_2" in case["next_events"]
        head = Officer(school_http, case)
        timeline = (await school_http.get(f"/v1/cases/{case['id']}/timeline")).json()
        assert timeline[0]["kind"] == "open" and timeline[0]["by"] == "system"

        # Stage 1 -> 2 needs dated contacts and the stage 1 letter.
        refused = await head.send("escalate_to_stage_2", expect=409, reason="No improvement")
        assert refused["type"].endswith("missing-evidence")
        assert {m["id"] for m in refused["missing_evidence"]} >= {"stage_1_contact", "stage_1_letter"}
        await head.record(
            "contact",
            DAYS[2],
            method="call",
            with_whom="Mother",
            summary="Discussed absence",
            reasons_or_barriers="Anxiety about a new class",
        )
        await head.record("early_help", DAYS[2], status="considered", notes="Family hub discussed")
        await head.record(
            "letter_sent", DAYS[3], letter="stage_1", posted_on=DAYS[3].isoformat(), address_recorded=True
        )
        await head.send("escalate_to_stage_2", reason="No improvement after the stage 1 letter")
        assert head.case["state"] == "stage_2"

        # Stage 2 -> 3 without the stage 2 evidence: every missing item is named.
        refused = await head.send("refer_to_ews", expect=409, summary="Exhausted")
        assert {m["id"] for m in refused["missing_evidence"]} == {
            "stage_2_letter",
            "school_attendance_meeting",
            "stage_2_review",
            "further_early_help_offer",
        }
        await head.record(
            "letter_sent", DAYS[4], letter="stage_2", posted_on=DAYS[4].isoformat(), address_recorded=True
        )
        await head.record(
            "school_attendance_meeting",
            DAYS[5],
            held_on=DAYS[5].isoformat(),
            attendees=["Mother", "Head of year"],
            barriers=["Anxiety"],
            actions=["Morning check-in"],
            target_percent="95",
            target_from=DAYS[5].isoformat(),
            target_to=(DAYS[5] + timedelta(weeks=6)).isoformat(),
        )
        worklist = (await la_http.get("/v1/casework/worklist", params={"due_before": "2026-12-31"})).json()
        review = [w for w in worklist["items"] if w["case_id"] == case["id"] and w["clock"] == "review"]
        assert review and review[0]["due_on"] == (DAYS[5] + timedelta(weeks=6)).isoformat()
        assert review[0]["earliest_on"] == (DAYS[5] + timedelta(weeks=4)).isoformat()
        await head.record("early_help", DAYS[5], status="offered", notes="Offered again at the SAM")
        await head.send("review_recorded", held_on=(DAYS[5] + timedelta(weeks=5)).isoformat(), outcome="no_improvement")
        assert head.case["state"] == "stage_2"
        await head.send("refer_to_ews", summary="Stage 1 and 2 exhausted; attendance 80 %")
        assert head.case["state"] == "stage_3_referred"

        # Only the LA decides on the referral.
        assert (await head.send("ews_accepted", expect=403, route="attendance_planning_meeting"))["status"] == 403
        ews = Officer(la_http, head.case)
        await ews.send("ews_accepted", route="attendance_planning_meeting")
        apm_on = school_today()  # APMs count from the EWS acceptance: the investigation under way
        await ews.send(
            "attendance_planning_meeting_held",
            held_on=apm_on.isoformat(),
            parents_present=False,
            minutes="Parents did not attend; proceeded and minuted",
        )
        await ews.send(
            "attendance_planning_meeting_held",
            held_on=(apm_on + timedelta(weeks=6)).isoformat(),
            parents_present=True,
            minutes="Review APM",
        )
        third = await ews.send(
            "attendance_planning_meeting_held",
            expect=409,
            held_on=(apm_on + timedelta(weeks=12)).isoformat(),
            parents_present=True,
            minutes="A third",
        )
        assert [m["id"] for m in third["missing_evidence"]] == ["attendance_planning_meeting_limit"]

        issued = apm_on + timedelta(weeks=13)
        await ews.send("propose_legal_action", proposed="penalty_notice", reason="No improvement after two APMs")
        assert ews.case["state"] == "legal_action_proposed"
        # A school cannot decide; an officer can, and the notice's payment clocks start.
        await Officer(school_http, ews.case).send(
            "decide_legal_action", expect=403, decision="penalty_notice", decided_on=issued.isoformat(), parent_ref="P1"
        )
        await ews.send("decide_legal_action", decision="penalty_notice", decided_on=issued.isoformat(), parent_ref="P1")
        assert ews.case["state"] == "legal_action"
        bundle = (await la_http.get(f"/v1/cases/{case['id']}/evidence")).json()
        payments = [c for c in bundle["clocks"] if c["kind"] == "penalty_notice_payment"]
        early, final = issued + timedelta(days=21), issued + timedelta(days=28)
        assert [(c["due_on"], c["detail"]) for c in payments] == [
            (early.isoformat(), f"£80 if paid by {early}"),
            (final.isoformat(), f"£160 if paid by {final}"),
        ]
        kinds = [e["kind"] for e in bundle["timeline"]]
        assert kinds.count("attendance_planning_meeting") == 2 and "legal_decision" in kinds
        printable = await la_http.get(f"/v1/cases/{case['id']}/evidence", params={"format": "html"})
        assert (
            printable.headers["content-type"].startswith("text/html") and "Anxiety about a new class" in printable.text
        )

    events = await read_events(
        broker.bootstrap_servers,
        ESCALATIONS_TOPIC,
        lambda e: isinstance(e.data, CaseEvent) and e.data.case_id == case["id"],
        expected=6,
    )
    assert [e.type for e in events] == [
        "casework.case.opened",
        "casework.stage.changed",
        "casework.referral.made",
        "casework.referral.accepted",
        "casework.legal_action.proposed",
        "casework.legal_action.decided",
    ]
    assert all(e.subject == upn and e.data.link.endswith(f"/v1/cases/{case['id']}") for e in events)


async def test_the_map_cin_cp_route_needs_the_consultation_not_a_meeting(casework, registers, school, new_upn, token):
    urn, upn = school["urn"], new_upn()
    async with casework.client(school["token"]) as http:
        opened = await open_case(http, urn, upn, "Social worker raised concerns")
        assert opened.status_code == 201, opened.text
        head = Officer(http, opened.json())
        again = await http.post("/v1/cases", json={"urn": urn, "upn": upn, "reason": "twice"})
        assert again.status_code == 409
        await head.record(
            "contact",
            DAYS[0],
            method="home_visit",
            with_whom="Father",
            summary="Visit",
            reasons_or_barriers="Young carer",
        )
        await head.record("early_help", DAYS[0], status="offered")
        await head.record(
            "letter_sent", DAYS[1], letter="stage_1", posted_on=DAYS[1].isoformat(), address_recorded=True
        )
        await head.send("escalate_to_stage_2", reason="Known to children's social care")
        await head.record(
            "letter_sent", DAYS[2], letter="stage_2", posted_on=DAYS[2].isoformat(), address_recorded=True
        )
        await head.record("plan_route", DAYS[2], plan="CIN", attendance_actions=["Transport arranged by the plan"])
        refused = await head.send("refer_to_ews", expect=409, summary="CIN plan")
        assert [m["id"] for m in refused["missing_evidence"]] == ["lead_professional_consultation"]
        await head.record(
            "lead_professional_consultation",
            DAYS[3],
            with_role="social_worker",
            held_on=DAYS[3].isoformat(),
            agreed_enforcement_referral=True,
        )
        await head.send("refer_to_ews", summary="CIN plan; social worker agrees")
        assert head.case["state"] == "stage_3_referred"


async def test_two_officers_on_one_case_cannot_lose_an_update(casework, school, new_upn, token):
    urn, upn = school["urn"], new_upn()
    async with casework.client(school["token"]) as first, casework.client(school["token"]) as second:
        case = (await open_case(first, urn, upn)).json()
        version = str(case["version"])
        a, b = await asyncio.gather(
            *(
                client.post(
                    f"/v1/cases/{case['id']}/actions",
                    json={"kind": "note", "occurred_on": DAYS[0].isoformat(), "details": {"text": text}},
                    headers={"If-Match": version},
                )
                for client, text in ((first, "first"), (second, "second"))
            )
        )
        assert sorted([a.status_code, b.status_code]) == [201, 409]
        loser = a if a.status_code == 409 else b
        assert loser.json()["type"].endswith("stale-case")
        notes = [e for e in (await first.get(f"/v1/cases/{case['id']}/timeline")).json() if e["kind"] == "note"]
        assert len(notes) == 1  # the refused one left no trace


async def test_evidence_more_than_a_year_ahead_is_refused(casework, school, new_upn):
    """A meeting held near year 9999 started a review clock past the end of the calendar (500)."""
    urn, upn = school["urn"], new_upn()
    far = "9999-12-30"
    meeting = {
        "held_on": far,
        "attendees": ["mother"],
        "actions": ["daily call"],
        "target_percent": 90,
        "target_from": far,
        "target_to": "9999-12-31",
    }
    async with casework.client(school["token"]) as http:
        case = (await open_case(http, urn, upn)).json()
        response = await http.post(
            f"/v1/cases/{case['id']}/actions",
            json={"kind": "school_attendance_meeting", "occurred_on": far, "details": meeting},
        )
        timeline = (await http.get(f"/v1/cases/{case['id']}/timeline")).json()
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/evidence-too-far-ahead"
    assert problem["detail"] == "More than a year ahead: occurred_on, held_on, target_from, target_to."
    assert [e["kind"] for e in timeline if e["what"] == "evidence"] == []


async def test_clocks_fall_due_and_overdue_with_events(casework, school, new_upn, broker, database_url):
    from sqlalchemy import text

    from shared.db import make_engine
    from shared.events import ClockDue

    urn, upn = school["urn"], new_upn()
    async with casework.client(school["token"]) as http:
        head = Officer(http, (await open_case(http, urn, upn)).json())
        held_on = school_today()  # its review is weeks away: nothing falls due before the update below
        await head.record(
            "school_attendance_meeting",
            held_on,
            held_on=held_on.isoformat(),
            attendees=["Father"],
            actions=["Breakfast club"],
            target_percent="92",
            target_from=held_on.isoformat(),
            target_to=(held_on + timedelta(weeks=6)).isoformat(),
        )
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:  # the stage 1 letter was due a week ago; the review window opened
            await conn.execute(
                text(
                    "UPDATE casework.clocks SET due_on = current_date - 7 "
                    "WHERE case_id = :id AND kind = 'stage_1_letter'"
                ),
                {"id": head.case["id"]},
            )
            await conn.execute(
                text(
                    "UPDATE casework.clocks SET earliest_on = current_date - 1, due_on = current_date + 14 "
                    "WHERE case_id = :id AND kind = 'review'"
                ),
                {"id": head.case["id"]},
            )
    finally:
        await engine.dispose()
    events = await read_events(
        broker.bootstrap_servers,
        ESCALATIONS_TOPIC,
        lambda e: isinstance(e.data, ClockOverdue | ClockDue) and e.data.case_id == head.case["id"],
        expected=2,
    )
    assert sorted((e.type, e.data.clock) for e in events) == [
        ("casework.clock.due", "review"),
        ("casework.clock.overdue", "stage_1_letter"),
    ]
    async with casework.client(school["token"]) as http:
        overdue = (await http.get("/v1/cases", params={"urn": urn, "overdue": "true"})).json()["items"]
        assert head.case["id"] in [c["id"] for c in overdue]
        worklist = (await http.get("/v1/casework/worklist")).json()["items"]
        mine = {w["clock"]: w["overdue"] for w in worklist if w["case_id"] == head.case["id"]}
        assert mine == {"stage_1_letter": True, "review": False}


async def test_workflow_is_served_from_the_table_and_access_is_scoped(casework, school, new_upn, token, new_urn):
    async with casework.client() as anonymous:
        table = (await anonymous.get("/v1/casework/workflow")).json()
        diagram = (await anonymous.get("/v1/casework/workflow.mmd")).text
    events = {t["event"] for t in table["transitions"]}
    assert {"refer_to_ews", "ews_declined", "decide_legal_action", "reopen"} <= events
    assert diagram.startswith("stateDiagram-v2") and all(e in diagram for e in events)
    async with casework.client(school["token"]) as http:
        case = (await open_case(http, school["urn"], new_upn())).json()
    async with casework.client(token(Role.SCHOOL, urns={new_urn()})) as other:
        assert (await other.get(f"/v1/cases/{case['id']}")).status_code == 404
        assert (await other.get("/v1/cases", params={"urn": school["urn"]})).status_code == 403
    async with casework.client(token(Role.LA_OFFICER, la_code="802")) as other_la:
        assert (await other_la.get(f"/v1/cases/{case['id']}")).status_code == 404
        assert (await other_la.get("/v1/casework/worklist", params={"la_code": TEST_LA})).status_code == 403


async def test_replaying_the_alerts_topic_gives_the_same_cases(
    registers, thresholds, casework, school, new_upn, broker, database_url, postgres_admin_url
):
    """A fresh casework state fed the alerts topic from the start opens the same cases, from the
    same alerts, as the live service did."""
    from sqlalchemy import text

    from services.casework import service
    from shared.db import make_engine, make_sessionmaker
    from shared.devstack import drop_database, ensure_database
    from shared.events import ALERTS_TOPIC, REGISTERS_TOPIC, parse_event
    from shared.migrations import upgrade
    from tests.integration.test_outbox_and_consumers import read_topic

    upn = new_upn()
    await persistently_absent(registers, school, upn)
    async with casework.client(school["token"]) as http:
        await eventually(lambda: case_of(http, upn), "the live case")

    opens = (
        "SELECT c.urn, c.upn, t.alert_id FROM casework.case_transitions t JOIN casework.cases c "
        "ON c.id = t.case_id WHERE t.event = 'open' AND t.by = 'system'"
    )
    name = f"attendance_replay_{upn.lower()}"
    await ensure_database(postgres_admin_url, name)
    replay_url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    live_engine, replay_engine = make_engine(database_url, pool_size=1), make_engine(replay_url, pool_size=1)
    try:
        await asyncio.to_thread(upgrade, "casework", replay_url)
        records = [
            *await read_topic(broker.bootstrap_servers, REGISTERS_TOPIC),
            *await read_topic(broker.bootstrap_servers, ALERTS_TOPIC),
        ]
        events = [parse_event(r.value) for r in records]
        sessions = make_sessionmaker(replay_engine)
        for start in range(0, len(events), 200):
            async with sessions() as session, session.begin():
                await service.handle_events(session, events[start : start + 200], casework.settings)
        replayed_alerts = {e.data.alert_id for e in events if e.type == "attendance.alert.raised"}
        async with replay_engine.connect() as conn:
            replayed = {tuple(r) for r in await conn.execute(text(opens))}
        async with live_engine.connect() as conn:
            live = {tuple(r) for r in await conn.execute(text(opens)) if r.alert_id in replayed_alerts}
            manual = {
                (r.urn, r.upn)
                for r in await conn.execute(
                    text(
                        "SELECT DISTINCT c.urn, c.upn FROM casework.case_transitions t "
                        "JOIN casework.cases c ON c.id = t.case_id WHERE t.by <> 'system' AND t.event = 'open'"
                    )
                )
            }
        # Pupils an officer opened a case for by hand take alerts as notes live; leave them out.
        replayed = {r for r in replayed if (r[0], r[1]) not in manual}
        live = {r for r in live if (r[0], r[1]) not in manual}
        assert any(r[1] == upn for r in live)
        assert replayed == live
    finally:
        await live_engine.dispose()
        await replay_engine.dispose()
        await drop_database(postgres_admin_url, name)


async def stage_3_accepted(school_http, la_http, urn: str, upn: str) -> Officer:
    """A case taken through Stage 1 and 2 with all the evidence, referred and accepted by the EWS."""
    head = Officer(school_http, (await open_case(school_http, urn, upn)).json())
    await head.record(
        "contact", DAYS[0], method="call", with_whom="Mother", summary="Absence", reasons_or_barriers="Illness"
    )
    await head.record("early_help", DAYS[0], status="considered")
    await head.record("letter_sent", DAYS[1], letter="stage_1", posted_on=DAYS[1].isoformat(), address_recorded=True)
    await head.send("escalate_to_stage_2", reason="No improvement")
    await head.record("letter_sent", DAYS[2], letter="stage_2", posted_on=DAYS[2].isoformat(), address_recorded=True)
    await head.record(
        "school_attendance_meeting",
        DAYS[3],
        held_on=DAYS[3].isoformat(),
        attendees=["Mother"],
        actions=["Daily check-in"],
        target_percent="95",
        target_from=DAYS[3].isoformat(),
        target_to=(DAYS[3] + timedelta(weeks=6)).isoformat(),
    )
    await head.record("early_help", DAYS[3], status="offered")
    await head.send("review_recorded", held_on=(DAYS[3] + timedelta(weeks=5)).isoformat(), outcome="no_engagement")
    await head.send("refer_to_ews", summary="Exhausted")
    ews = Officer(la_http, head.case)
    await ews.send("ews_accepted", route="attendance_planning_meeting")
    return ews


async def test_a_penalty_notice_alert_makes_the_service_propose_and_an_officer_decide(
    casework, school, new_upn, token, broker
):
    from aiokafka import AIOKafkaProducer

    from shared.events import ALERTS_TOPIC, AlertRaised, make_event

    urn, upn = school["urn"], new_upn()
    officer = token(Role.LA_OFFICER, la_code=TEST_LA)
    async with casework.client(school["token"]) as school_http, casework.client(officer) as la_http:
        ews = await stage_3_accepted(school_http, la_http, urn, upn)
        await ews.send(
            "attendance_planning_meeting_held",
            held_on=school_today().isoformat(),
            parents_present=True,
            minutes="Targets agreed",
        )
        alert = AlertRaised(
            alert_id=987654,
            urn=urn,
            la_code=TEST_LA,
            upn=upn,
            rule_id="penalty_notice_threshold",
            step="",
            policy_version=0,
            figures={"count": 10, "threshold": 10},
            window_from=DAYS[0],
            window_to=DAYS[-1],
            sessions=[f"{DAYS[0]} AM O"],
            link="http://thresholds/v1/alerts/987654",
        )
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            event = make_event("thresholds", alert, subject=upn)
            await producer.send_and_wait(ALERTS_TOPIC, event.model_dump_json().encode(), key=upn.encode())
        finally:
            await producer.stop()

        async def proposed() -> bool:
            await ews.refresh()
            return ews.case["state"] == "legal_action_proposed"

        await eventually(proposed, "the service's proposal")
        timeline = (await la_http.get(f"/v1/cases/{ews.case['id']}/timeline")).json()
        proposal = [e for e in timeline if e["kind"] == "propose_legal_action"]
        assert proposal and proposal[0]["by"] == "system" and proposal[0]["details"]["proposed"] == "penalty_notice"
        # The machine stops there: deciding is an officer's act.
        assert "decide_legal_action" in ews.case["next_events"]
        await ews.send(
            "decide_legal_action",
            decision="no_action",
            decided_on=school_today().isoformat(),
            notes="Attendance improved since the APM",
        )
        assert ews.case["state"] == "stage_3_accepted"
