"""A simulated LA term through the CME service: every addition and deletion accounted for, each late
return flagged on the day it becomes late, every child deleted without a destination on the CME
register until located, and each school's compliance report right.

The service's 'today' is moved through the term day by day (its only clock, `school_today`); roll
changes go in over HTTP and the register marks of unnotified joiners through the registers service
and the broker. The expected outcome is recomputed from the generated scenario with the calendar
alone.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest

from services.cme import service
from shared.auth import Role
from shared.domain.calendar import SchoolCalendar
from shared.events import CME_TOPIC
from tests.conftest import eventually, read_events
from tests.integration.test_cme import admission, deletion, new_school, post

CALENDAR = {
    "terms": [
        {"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"},
        {"name": "Autumn 2", "start": "2025-11-03", "end": "2025-12-19"},
    ],
    "inset_days": ["2025-09-19", "2025-11-03"],
}
TERM_START, LAST_DAY = date(2025, 9, 4), date(2025, 11, 14)


@dataclass
class Return:
    """One return the scenario expects: who owes it, from when, and the day it is sent (None: never)."""

    kind: str
    school: int
    upn: str
    started_on: date
    sent_on: date | None
    visible_from: date  # when the platform can know it is owed: the first mark, the return, a new roll entry


@dataclass
class Scenario:
    calendar: SchoolCalendar
    returns: list[Return] = field(default_factory=list)
    # day -> actions taken that day, in order
    actions: dict[date, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    missing_children: set[str] = field(default_factory=set)  # deleted without destination, never found
    located: dict[str, int] = field(default_factory=dict)  # upn -> school found at

    def due(self, r: Return) -> date:
        return self.calendar.add_school_days(r.started_on, 1)  # the platform default: 1 school day

    def at(self, day: date, action: str, **details: Any) -> None:
        self.actions.setdefault(day, []).append((action, details))


def build_scenario(seed: int, schools: int, upns: list[str]) -> Scenario:
    rng = random.Random(seed)
    calendar = SchoolCalendar.from_dict(CALENDAR)
    scenario = Scenario(calendar)
    days = calendar.school_days_between(TERM_START + timedelta(days=1), LAST_DAY - timedelta(days=14))
    pool = iter(upns)
    on_roll: dict[str, tuple[int, date]] = {}  # upn -> school, entry day

    def later(day: date, school_days: int) -> date:
        return calendar.add_school_days(day, school_days) if school_days else day

    def admit(day: date, school: int, upn: str, delay: int | None) -> None:
        """Enter the pupil on `day`, when the register first shows them; the school notifies `delay`
        school days later, or never."""
        if day != TERM_START:
            scenario.at(day, "mark", school=school, upn=upn)
        sent_on = later(day, delay) if delay is not None else None
        if sent_on is not None:
            scenario.at(sent_on, "admit", school=school, upn=upn, on=day)
        scenario.returns.append(Return("addition", school, upn, day, sent_on, visible_from=day))
        on_roll[upn] = (school, day)

    def delete(day: date, school: int, upn: str, delay: int, **details: Any) -> None:
        """Delete the pupil as from `day`; the return (the only sign of it) comes `delay` school days later."""
        sent_on = later(day, delay)
        scenario.at(sent_on, "delete", school=school, upn=upn, on=day, **details)
        scenario.returns.append(Return("deletion", school, upn, day, sent_on, visible_from=sent_on))

    for school in range(schools):
        for _ in range(4):
            admit(TERM_START, school, next(pool), 0)
    for _ in range(10):
        admit(rng.choice(days), rng.randrange(schools), next(pool), rng.choice([0, 0, 1, 2, 4, None]))
    leavers = rng.sample(sorted(on_roll), 10)
    for index, upn in enumerate(leavers):
        school, joined_on = on_roll[upn]
        day = rng.choice([d for d in days if d > joined_on + timedelta(days=7)] or days[-1:])
        delay = rng.choice([0, 0, 1, 3])
        other = (school + 1 + rng.randrange(schools - 1)) % schools
        kind = index % 5
        if kind == 0:  # moved out of the LA, destination known
            delete(day, school, upn, delay, ground="9(1)(a)", out_of_la=True)
        elif kind == 1:  # gone, nobody knows where: missing until found
            delete(day, school, upn, delay, ground="moved_away")
            scenario.missing_children.add(upn)
        elif kind == 2:  # gone without a destination, admitted at another school of the LA later
            delete(day, school, upn, delay, ground="moved_away")
            admit(later(day, delay + 3), other, upn, 0)
            scenario.located[upn] = other
        elif kind == 3:  # the new school enters the pupil first: the old school owes its return from then
            admit(day, other, upn, 0)
            delete(day, school, upn, delay, ground="moved_away")
            scenario.returns[-1].visible_from = day
        else:  # the new school enters the pupil; the old school never sends its deletion return
            admit(day, other, upn, 0)
            scenario.returns.append(Return("deletion", school, upn, day, None, visible_from=day))
    return scenario


def expected_overdue(scenario: Scenario, today: date, urns: list[str]) -> set[tuple[str, str]]:
    return {
        (urns[r.school], r.upn)
        for r in scenario.returns
        if r.visible_from <= today and scenario.due(r) < today and (r.sent_on is None or r.sent_on > today)
    }


def expected_counts(scenario: Scenario, today: date, school: int, kind: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for r in scenario.returns:
        if r.school != school or r.kind != kind or r.visible_from > today:
            continue
        due = scenario.due(r)
        if r.sent_on is not None and r.sent_on <= today:
            counts["on_time" if r.sent_on <= due else "late"] += 1
        else:
            counts["missing" if due < today else "pending"] += 1
    return {status: counts[status] for status in ("on_time", "late", "missing", "pending")}


class FakeToday:
    def __init__(self, day: date) -> None:
        self.day = day

    def __call__(self) -> date:
        return self.day


@pytest.mark.parametrize("seed", [2025, 42])
async def test_simulated_la_term(registers, cme, token, new_urn, new_upn, monkeypatch, broker, seed):
    la = f"{900 + seed % 90}"  # an LA of its own: the register and reports hold this run only
    today = FakeToday(TERM_START)
    monkeypatch.setattr("services.cme.service.school_today", today)
    monkeypatch.setattr("services.cme.consumers.school_today", today)
    schools = [await new_school(registers, cme, token, new_urn, la_code=la, calendar=CALENDAR) for _ in range(3)]
    schools.append(await new_school(registers, cme, token, new_urn, la_code=la, calendar=CALENDAR, independent=True))
    urns = [s["urn"] for s in schools]
    scenario = build_scenario(seed, len(schools), [new_upn() for _ in range(40)])
    officer = cme.client(token(Role.LA_OFFICER, la_code=la))

    async def act(action: str, details: dict[str, Any]) -> None:
        school = schools[details["school"]]
        if action == "mark":
            async with registers.client(school["token"]) as reg:
                body = {"date": today.day.isoformat(), "session": "AM", "marks": [{"upn": details["upn"], "code": "/"}]}
                response = await reg.post(f"/v1/schools/{school['urn']}/registers", json=body)
                assert response.status_code == 201, response.text

            async def detected() -> bool:
                roll = (await officer.get(f"/v1/pupils/{details['upn']}/roll")).json()["admissions"]
                return any(a["source"] == "detected" for a in roll)

            await eventually(detected, f"the unnotified joiner {details['upn']} to be detected")
            return
        async with cme.client(school["token"]) as mis:
            if action == "admit":
                response = await mis.post(
                    f"/v1/schools/{school['urn']}/admissions", json=admission(details["upn"], details["on"])
                )
                assert response.status_code in (200, 201), response.text  # 200: converts a detected joiner
            else:
                extra = {"destination": {"urn": "999001", "la_code": "802"}} if details.get("out_of_la") else {}
                body = deletion(details["upn"], details["ground"], details["on"], **extra)
                await post(mis, f"/v1/schools/{school['urn']}/deletions", body, 201)

    async def scan(day: date) -> bool:
        """One pass of the service's scan for `day`; False when the service's own scanner holds it."""
        async with cme.app.state.sessionmaker() as session, session.begin():
            return await service.scan(session, cme.settings, day) is not None

    async def overdue_now() -> set[tuple[str, str]]:
        items = (await officer.get("/v1/cme/worklist")).json()["items"]
        return {(i["urn"], i["upn"]) for i in items if i["kind"] == "missing_return"}

    async with officer:
        day = TERM_START
        while day <= LAST_DAY:
            today.day = day
            # The day's first scan (the service scans all day long; the test moves faster than its timer).
            await eventually(functools.partial(scan, day), f"a scan of {day}")
            for action, details in scenario.actions.get(day, []):
                await act(action, details)
            want = expected_overdue(scenario, day, urns)

            async def flagged(want: set[tuple[str, str]] = want) -> bool:
                return await overdue_now() == want

            # Flagged within the school day it becomes late: by the scanner's next pass on that day.
            try:
                await eventually(flagged, f"the overdue returns of {day}", timeout=10)
            except AssertionError:
                got = await overdue_now()
                history = [(await officer.get(f"/v1/pupils/{upn}/roll")).json() for _, upn in want ^ got]
                raise AssertionError(f"{day}: flagged {sorted(got)}, expected {sorted(want)}; {history}") from None
            day += timedelta(days=1)

        for index, school in enumerate(schools):
            report = (await officer.get(f"/v1/schools/{school['urn']}/notifications/compliance")).json()
            for kind, section in (("addition", "additions"), ("deletion", "deletions")):
                got = {status: report[section][status] for status in ("on_time", "late", "missing", "pending")}
                assert got == expected_counts(scenario, LAST_DAY, index, kind), (school["urn"], kind)
        total = len(scenario.returns)
        assert all(r.visible_from <= LAST_DAY and (r.sent_on or LAST_DAY) <= LAST_DAY for r in scenario.returns)
        la_report = (await officer.get("/v1/notifications/compliance")).json()
        assert sum(s["additions"]["total"] + s["deletions"]["total"] for s in la_report["schools"]) == total

        register = (await officer.get("/v1/cme/cases", params={"la_code": la, "limit": 500})).json()["items"]
        open_cases = {c["upn"] for c in register if c["status"] == "open"}
        assert open_cases == scenario.missing_children
        found = {c["upn"]: c["located_urn"] for c in register if c["outcome"] == "found_on_roll_elsewhere"}
        assert found == {upn: urns[school] for upn, school in scenario.located.items()}
    # Every return still owed at the start of its due day was announced as due that day, once.
    owed_on_due_day = Counter(
        (urns[r.school], r.upn, scenario.due(r))
        for r in scenario.returns
        if r.visible_from < scenario.due(r) and (r.sent_on is None or r.sent_on >= scenario.due(r))
    )
    due_events = await read_events(
        broker.bootstrap_servers,
        CME_TOPIC,
        lambda e: e.type == "cme.notification.due" and e.data.la_code == la,
        sum(owed_on_due_day.values()) + 1,
        timeout=3,
    )
    assert Counter((e.data.urn, e.data.upn, e.data.due_on) for e in due_events) == owed_on_due_day
    assert scenario.missing_children and scenario.located and owed_on_due_day
