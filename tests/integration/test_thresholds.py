"""Thresholds end to end: registers posted over HTTP, marks through the broker, figures and alerts
read back over HTTP and from `attendance.alerts.v1`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.auth import Role
from shared.domain.upn import make_upn
from shared.events import ALERTS_TOPIC, AlertCleared, AlertRaised
from tests.conftest import TEST_LA, eventually, read_events

# Ten school days in the autumn term of 2025-26 (no bank holiday), all in the past.
DAYS = [
    date(2025, 11, 3) + timedelta(days=d) for d in range(12) if (date(2025, 11, 3) + timedelta(days=d)).weekday() < 5
]
assert len(DAYS) == 10


def present(session: str) -> str:
    return "/" if session == "AM" else "\\"


async def post_fortnight(http, urn: str, codes: dict[str, Callable[[int, str], str]]) -> None:
    """Post AM and PM registers for the ten days; codes[upn](day_index, session) gives each mark."""
    for index, day in enumerate(DAYS):
        for session in ("AM", "PM"):
            marks = [{"upn": upn, "code": code(index, session)} for upn, code in codes.items()]
            response = await http.post(
                f"/v1/schools/{urn}/registers", json={"date": day.isoformat(), "session": session, "marks": marks}
            )
            assert response.status_code == 201, response.text


async def alerts_for(http, upn: str, status: str = "raised") -> dict[tuple[str, str], dict[str, Any]]:
    response = await http.get("/v1/alerts", params={"upn": upn, "status": status})
    assert response.status_code == 200, response.text
    return {(a["rule_id"], a["step"]): a for a in response.json()["items"]}


@pytest.fixture
def pupils(new_upn) -> dict[str, str]:
    return {"pa": new_upn(), "fine": new_upn(), "missing": new_upn()}


async def test_register_to_figures_to_alerts_and_back(registers, thresholds, school, pupils, token, broker):
    urn = school["urn"]
    codes = {
        # Two unauthorised sessions out of 20: exactly 10 %, persistent absence (WTISA: >= 10 %).
        pupils["pa"]: lambda i, s: "O" if (i, s) in {(2, "AM"), (7, "PM")} else present(s),
        pupils["fine"]: lambda i, s: present(s),
        # Unauthorised on every session for ten school days: the LA must be told (missing child).
        pupils["missing"]: lambda i, s: "O",
    }
    async with registers.client(school["token"]) as mis:
        await post_fortnight(mis, urn, codes)

    async with thresholds.client(school["token"]) as http:
        pa = await eventually(lambda: alerts_for(http, pupils["pa"]), "the PA alert")
        assert set(pa) == {("persistent_absence", "")}
        alert = pa[("persistent_absence", "")]
        assert alert["policy_version"] == 0 and alert["urn"] == urn and alert["la_code"] == TEST_LA
        assert alert["figures"]["numerator"] == 2 and alert["figures"]["denominator"] == 20
        assert sorted(alert["sessions"]) == [f"{DAYS[2]} AM O", f"{DAYS[7]} PM O"]
        assert (alert["window_from"], alert["window_to"]) == (DAYS[0].isoformat(), DAYS[-1].isoformat())

        missing = await eventually(
            lambda: alerts_for(http, pupils["missing"]), "the missing child's alerts", timeout=20
        )
        assert {"continuous_unauthorised_10_days", "penalty_notice_threshold", "persistent_absence"} <= {
            rule for rule, _ in missing
        }
        assert ("severe_absence", "") in missing
        assert ("continuous_absence_20_days", "") not in missing  # ten days, not twenty
        assert missing[("continuous_unauthorised_10_days", "")]["figures"]["school_days"] == 10

        await asyncio.sleep(0.5)
        assert await alerts_for(http, pupils["fine"]) == {}

        figures = await http.get(
            f"/v1/schools/{urn}/pupils/{pupils['pa']}/attendance",
            params={"from": DAYS[0].isoformat(), "to": DAYS[-1].isoformat()},
        )
        assert figures.status_code == 200, figures.text
        body = figures.json()
        assert body["possible_sessions"] == 20 and body["present_sessions"] == 18
        assert body["unauthorised_absence_sessions"] == 2 and body["authorised_absence_sessions"] == 0
        assert body["absence_rate"] == pytest.approx(0.1) and body["attendance_rate"] == pytest.approx(0.9)
        assert body["persistent_absence"] is True and body["severe_absence"] is False

    async with thresholds.client(school["token"]) as http:
        summary = await http.get(f"/v1/schools/{urn}/attendance", params={"academic_year": 2025, "limit": 1})
        assert summary.status_code == 200, summary.text
        page = summary.json()
        assert page["pupils"] == 3 and page["possible_sessions"] == 60
        assert page["persistent_absence"]["pupils"] == 2 and page["severe_absence"]["pupils"] == 1
        assert [p["upn"] for p in page["items"]] == [pupils["missing"]]  # worst first
        rest = await http.get(
            f"/v1/schools/{urn}/attendance", params={"academic_year": 2025, "limit": 1, "cursor": page["next_cursor"]}
        )
        assert [p["upn"] for p in rest.json()["items"]] == [pupils["pa"]] and rest.json()["next_cursor"] is None
        severe = await http.get(f"/v1/schools/{urn}/attendance", params={"academic_year": 2025, "list": "sa"})
        assert [p["upn"] for p in severe.json()["items"]] == [pupils["missing"]]
        bad = await http.get(f"/v1/schools/{urn}/attendance", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    async with thresholds.client(token(Role.LA_OFFICER, la_code=TEST_LA)) as officer:
        la = await officer.get(f"/v1/las/{TEST_LA}/attendance", params={"academic_year": 2025})
        assert la.status_code == 200, la.text
        line = next(s for s in la.json()["schools"] if s["urn"] == urn)
        assert (line["pupils"], line["persistent_absence"], line["severe_absence"]) == (3, 2, 1)
        assert line["raised_alerts"] == len(pa) + len(missing)
        assert la.json()["raised_alerts"]["persistent_absence"] >= 2

    raised = await read_events(
        broker.bootstrap_servers,
        ALERTS_TOPIC,
        lambda e: isinstance(e.data, AlertRaised) and e.data.upn == pupils["pa"],
        expected=1,
    )
    assert [e.data.alert_id for e in raised] == [alert["id"]] and raised[0].subject == pupils["pa"]

    # The school corrects one absence: 1 in 20 is 5 %, the crossing never happened: retracted.
    async with registers.client(school["token"]) as mis:
        response = await mis.post(
            f"/v1/schools/{urn}/marks/{pupils['pa']}/{DAYS[2]}/AM/amendments",
            json={
                "code": "/",
                "reason": "Arrived before registers closed",
                "amended_by": {"name": "A", "position": "B"},
            },
        )
        assert response.status_code == 201, response.text
    async with thresholds.client(school["token"]) as http:
        cleared = await eventually(lambda: alerts_for(http, pupils["pa"], "retracted"), "the PA alert retracted")
        assert cleared[("persistent_absence", "")]["clear_reason"] == "retracted"
        assert await alerts_for(http, pupils["pa"]) == {}
        figures = await http.get(
            f"/v1/schools/{urn}/pupils/{pupils['pa']}/attendance",
            params={"from": DAYS[0].isoformat(), "to": DAYS[-1].isoformat()},
        )
        assert figures.json()["unauthorised_absence_sessions"] == 1
    events = await read_events(
        broker.bootstrap_servers,
        ALERTS_TOPIC,
        lambda e: isinstance(e.data, AlertCleared) and e.data.upn == pupils["pa"],
        expected=1,
    )
    assert events[0].data.reason == "retracted" and events[0].data.alert_id == alert["id"]


async def test_as_of_shows_what_was_known_before_an_amendment(registers, thresholds, school, new_upn):
    urn, upn = school["urn"], new_upn()
    async with registers.client(school["token"]) as mis:
        response = await mis.post(
            f"/v1/schools/{urn}/registers",
            json={"date": DAYS[0].isoformat(), "session": "AM", "marks": [{"upn": upn, "code": "N"}]},
        )
        assert response.status_code == 201
    period = {"from": DAYS[0].isoformat(), "to": DAYS[0].isoformat()}
    async with thresholds.client(school["token"]) as http:

        async def unauthorised() -> int:
            response = await http.get(f"/v1/schools/{urn}/pupils/{upn}/attendance", params=period)
            return response.status_code == 200 and response.json()["unauthorised_absence_sessions"]

        await eventually(unauthorised, "the N mark")
        before = (await http.get(f"/v1/schools/{urn}/pupils/{upn}/attendance", params=period)).json()
    known_at = datetime.now(UTC)  # after the N mark was recorded, before the amendment
    await asyncio.sleep(0.05)
    async with registers.client(school["token"]) as mis:
        response = await mis.post(
            f"/v1/schools/{urn}/marks/{upn}/{DAYS[0]}/AM/amendments",
            json={"code": "I", "reason": "Parent phoned: ill", "amended_by": {"name": "A", "position": "B"}},
        )
        assert response.status_code == 201
    async with thresholds.client(school["token"]) as http:

        async def authorised() -> int:
            response = await http.get(f"/v1/schools/{urn}/pupils/{upn}/attendance", params=period)
            return response.json()["authorised_absence_sessions"]

        await eventually(authorised, "the amendment")
        then = await http.get(
            f"/v1/schools/{urn}/pupils/{upn}/attendance", params={**period, "as_of": known_at.isoformat()}
        )
        assert then.status_code == 200, then.text
        assert then.json()["unauthorised_absence_sessions"] == before["unauthorised_absence_sessions"] == 1
        assert then.json()["authorised_absence_sessions"] == 0


async def test_a_period_ending_before_it_starts_is_a_problem_whose_detail_is_text(thresholds, school, new_upn):
    urn, upn = school["urn"], new_upn()
    period = {"from": DAYS[1].isoformat(), "to": DAYS[0].isoformat()}
    async with thresholds.client(school["token"]) as http:

        async def answered() -> Any:
            response = await http.get(f"/v1/schools/{urn}/pupils/{upn}/attendance", params=period)
            return None if response.status_code == 404 else response  # the school is yet to reach thresholds

        response = await eventually(answered, f"school {urn} to reach thresholds")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/invalid-period"
    assert problem["detail"] == f"to ({DAYS[0]}) is before from ({DAYS[1]})"


async def test_policy_change_reevaluates_the_las_pupils(registers, thresholds, token, new_urn):
    la_code = "898"
    urn = new_urn()
    upn = make_upn(898, 4000, 25, 1)
    async with registers.client(token(Role.OPS)) as ops:
        response = await ops.post(
            "/v1/schools", json={"urn": urn, "name": "Policy School", "la_code": la_code, "phase": "primary"}
        )
        assert response.status_code == 201, response.text
    async with registers.client(token(Role.SCHOOL, urns={urn})) as mis:
        # Four days absent (authorised, so only the support map can see it) out of ten.
        await post_fortnight(mis, urn, {upn: lambda i, s: "I" if i < 4 else present(s)})

    officer = token(Role.LA_OFFICER, la_code=la_code)
    async with thresholds.client(officer) as http:

        async def raised() -> dict:
            return await alerts_for(http, upn)

        national = await eventually(raised, "the national alerts")
        assert set(national) == {("persistent_absence", "")}  # 8 of 20 sessions: PA, not SA

        current = await http.get(f"/v1/policies/{la_code}")
        assert current.status_code == 200 and current.json()["version"] == 0

        response = await http.put(f"/v1/policies/{la_code}", json={"preset": "halton", "reason": "Adopt Halton"})
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1 and response.json()["pupils_reevaluated"] == 1
        halton = await alerts_for(http, upn)
        assert ("support_map_days", "4_days") in halton and halton[("support_map_days", "4_days")][
            "policy_version"
        ] == 1
        assert halton[("support_map_days", "4_days")]["figures"]["action"] == "stage_1_letter"

        response = await http.put(f"/v1/policies/{la_code}", json={"preset": "national", "reason": "Back"})
        assert response.json()["version"] == 2
        history = (await http.get(f"/v1/policies/{la_code}/versions")).json()
        assert [(v["version"], v["reason"], v["created_by"]) for v in history] == [
            (1, "Adopt Halton", "test-la_officer"),
            (2, "Back", "test-la_officer"),
        ]
        assert ("support_map_days", "4_days") not in await alerts_for(http, upn)
        cleared = await alerts_for(http, upn, "cleared")
        assert cleared[("support_map_days", "4_days")]["clear_reason"] == "policy_changed"

        other_la = await http.put("/v1/policies/801", json={"preset": "halton", "reason": "not mine"})
        assert other_la.status_code == 403
        assert other_la.headers["content-type"].startswith("application/problem+json")


async def test_access_is_scoped_to_the_school_and_the_la(thresholds, school, token, new_upn, new_urn):
    urn, upn = school["urn"], new_upn()
    path = f"/v1/schools/{urn}/pupils/{upn}/attendance"
    async with thresholds.client(token(Role.SCHOOL, urns={new_urn()})) as other_school:
        assert (await other_school.get(path)).status_code == 403
        assert (await other_school.get("/v1/alerts", params={"urn": urn})).status_code == 403
    async with thresholds.client(token(Role.LA_OFFICER, la_code="802")) as other_la:
        assert (await other_la.get("/v1/alerts", params={"la_code": TEST_LA})).status_code == 403
        assert (await other_la.get(f"/v1/policies/{TEST_LA}")).status_code == 403
    async with thresholds.client() as anonymous:
        assert (await anonymous.get(path)).status_code == 401
    async with thresholds.client(school["token"]) as own:
        bad = await own.get(f"/v1/schools/{urn}/pupils/A123/attendance")
        assert bad.status_code == 422 and bad.json()["type"].endswith("invalid-upn")
        assert (await own.put(f"/v1/policies/{TEST_LA}", json={"preset": "halton", "reason": "x"})).status_code == 403


async def test_an_alert_whose_crossing_amendments_undid_is_retracted_whichever_amendment_ends_it(
    registers, thresholds, school, new_upn
):
    """Ten unauthorised sessions raise the penalty notice threshold alert; two more follow. Two of
    the ten are then amended to illness (twelve less two: still ten), and at last one of the two
    later ones: the alert stops holding on an amendment to a session it did not list. As the marks
    now stand it would never have held on the day it was raised: retracted, not cleared."""
    urn, upn = school["urn"], new_upn()
    unauthorised = {(day, session) for day in range(6) for session in ("AM", "PM")}  # days 0-4: ten; day 5: two

    def code(index: int, session: str) -> str:
        return "O" if (index, session) in unauthorised else present(session)

    async with registers.client(school["token"]) as mis, thresholds.client(school["token"]) as http:
        for index, day in enumerate(DAYS):
            for session in ("AM", "PM"):
                body = {
                    "date": day.isoformat(),
                    "session": session,
                    "marks": [{"upn": upn, "code": code(index, session)}],
                }
                assert (await mis.post(f"/v1/schools/{urn}/registers", json=body)).status_code == 201
            if index == 4:  # the tenth unauthorised session: raised before the later ones arrive

                async def raised() -> dict[str, Any] | None:
                    return (await alerts_for(http, upn)).get(("penalty_notice_threshold", ""))

                alert = await eventually(raised, "the penalty notice threshold alert")
        assert f"{DAYS[5].isoformat()} AM O" not in alert["sessions"]

        async def amend(day: date, session: str) -> None:
            response = await mis.post(
                f"/v1/schools/{urn}/marks/{upn}/{day}/{session}/amendments",
                json={"code": "I", "reason": "Medical evidence", "amended_by": {"name": "A", "position": "B"}},
            )
            assert response.status_code == 201, response.text

        for number, (day, session) in enumerate([(DAYS[0], "AM"), (DAYS[0], "PM")], start=1):
            await amend(day, session)
            await eventually(lambda n=number: _unauthorised_is(http, urn, upn, 12 - n), f"amendment {number} applied")
            assert ("penalty_notice_threshold", "") in await alerts_for(http, upn)  # twelve less two: still ten
        await amend(DAYS[5], "AM")
        ended = await eventually(lambda: alerts_for(http, upn, "retracted"), "the alert retracted")
        assert ended[("penalty_notice_threshold", "")]["id"] == alert["id"]
        assert ended[("penalty_notice_threshold", "")]["clear_reason"] == "retracted"


async def _unauthorised_is(http, urn: str, upn: str, expected: int) -> bool:
    figures = await http.get(
        f"/v1/schools/{urn}/pupils/{upn}/attendance", params={"from": DAYS[0].isoformat(), "to": DAYS[-1].isoformat()}
    )
    return figures.json()["unauthorised_absence_sessions"] == expected
