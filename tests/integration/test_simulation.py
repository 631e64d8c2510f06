"""A simulated LA's half-term through all five services, checked against a recount of the plan.

Three schools (two primaries, a secondary) of 20 pupils, six teaching weeks ending last week: every
session's registers, the officers' amendments, joiners, leavers, a transfer, children missing
education, played through the public APIs by `shared.simulation.drive`, with an LA system's webhook
subscribed on a loopback receiver. After each round the test waits until the thresholds service
has applied it (the schools' totals, or the amended pupils' figures, are the recount's at that
point), so the platform evaluates every pupil after every session, as the recount does. Then
every pupil's figures, each school's, the alerts and how each ended, the casework cases, the CME
register and the webhook deliveries must be exactly what `shared.simulation.recount` derives from
the plan with the domain rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import astuple, fields
from datetime import timedelta
from typing import Any

import httpx

from shared.auth import Role
from shared.domain.calendar import academic_year
from shared.simulation.drive import Subscription, Tokens, Urls, drive
from shared.simulation.generate import LaConfig, generate, recent_term
from shared.simulation.plan import Amendment, Register, Round
from shared.simulation.recount import EVENT_FILTERS, Figures, Recount, recount
from shared.time import school_today
from shared.webhooks import verify
from tests.conftest import eventually
from tests.integration.test_notifications import receiver

LA = "870"  # an LA of its own: the alerts, cases and deliveries listed are this test's only
SEED = 2026
COUNTS = tuple(field.name for field in fields(Figures))  # the figures' session counts, named as in the API


async def every(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """All items of a paginated list."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await http.get(path, params=params | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def matches(probe: Any, want: Any) -> bool:
    return await probe == want


async def test_simulated_half_term_matches_the_recount(
    registers, thresholds, casework, cme, notifications, token, new_urn
):
    today = school_today()
    term = recent_term(today, teaching_weeks=6, calendar_until=today + timedelta(days=366))
    plan = generate(LaConfig(term, tuple(new_urn() for _ in range(3)), LA, pupils_per_school=20, seed=SEED))
    expected = recount(plan)
    progress = Recount(plan)  # the recount as far as the platform has got
    year = academic_year(term.first_day)
    period = {"from": f"{year}-08-01", "to": term.last_day.isoformat()}
    officer = token(Role.LA_OFFICER, la_code=LA)
    tokens = Tokens(
        ops=token(Role.OPS),
        schools={school.urn: token(Role.SCHOOL, urns={school.urn}) for school in plan.schools},
        la_system=token(Role.LA_SYSTEM, la_code=LA),
    )
    urls = Urls(registers.base_url, cme.base_url, thresholds.base_url, notifications.base_url)

    async with receiver() as hooks, thresholds.client(officer) as figures_api:

        async def pupil(urn: str, upn: str) -> dict[str, Any]:
            return (await figures_api.get(f"/v1/schools/{urn}/pupils/{upn}/attendance", params=period)).json()

        async def school_totals(urn: str) -> tuple[int, int]:
            body = (await figures_api.get(f"/v1/schools/{urn}/attendance", params={"academic_year": year})).json()
            return body["possible_sessions"], round(body["absence_rate"] * body["possible_sessions"])

        async def pupil_counts(urn: str, upn: str) -> tuple[int, ...]:
            body = await pupil(urn, upn)
            return tuple(body[name] for name in COUNTS)

        async def settle(round_: Round) -> None:
            """Wait until the thresholds service has applied the round, before the next is sent."""
            progress.apply(round_)
            for urn in sorted({a.urn for a in round_.actions if isinstance(a, Register)}):
                rows = progress.school_figures(urn, year)
                want = (sum(f.possible_sessions for _, f in rows), sum(f.absence_sessions for _, f in rows))
                what = f"school {urn}'s figures after {round_.day}"
                await eventually(lambda urn=urn, want=want: matches(school_totals(urn), want), what, interval=0.02)
            for urn, upn in sorted({(a.urn, a.upn) for a in round_.actions if isinstance(a, Amendment)}):
                want = astuple(progress.figures(urn, upn))
                what = f"{upn}'s figures after an amendment"
                await eventually(lambda u=urn, p=upn, want=want: matches(pupil_counts(u, p), want), what, interval=0.02)

        subscription = Subscription(hooks.url, EVENT_FILTERS)
        report = await drive(plan, urls, tokens, concurrency=8, subscription=subscription, after_round=settle)
        registers_played = [a for a in plan.actions() if isinstance(a, Register)]
        assert (report.registers, report.marks) == (len(registers_played), sum(len(r.upns) for r in registers_played))
        assert report.amendments == sum(isinstance(a, Amendment) for a in plan.actions())

        # Every pupil's figures, and each school's with its persistent and severe absence lists.
        for urn, upn in expected.enrolments():
            want = expected.figures(urn, upn)
            body = await pupil(urn, upn)
            assert tuple(body[name] for name in COUNTS) == astuple(want), (urn, upn)
            assert body["absence_rate"] == want.absence_rate
            assert abs(body["attendance_rate"] - want.attendance_rate) < 1e-12
            assert (body["persistent_absence"], body["severe_absence"]) == (
                want.persistent_absence,
                want.severe_absence,
            )
        for school in plan.schools:
            rows = expected.school_figures(school.urn, year)
            for cohort, flag in (("pa", "persistent_absence"), ("sa", "severe_absence")):
                params = {"academic_year": year, "list": cohort, "limit": 500}
                body = (await figures_api.get(f"/v1/schools/{school.urn}/attendance", params=params)).json()
                assert (body["pupils"], body["possible_sessions"]) == (
                    len(rows),
                    sum(f.possible_sessions for _, f in rows),
                )
                flagged = {upn for upn, figures in rows if getattr(figures, flag)}
                assert body[flag]["pupils"] == len(flagged) and {item["upn"] for item in body["items"]} == flagged

        # The alerts: each crossing raised once, and how each ended (cleared, retracted or still raised).
        alerts = await every(figures_api, "/v1/alerts", la_code=LA, limit=500)
        assert Counter((a["urn"], a["upn"], a["rule_id"], a["status"]) for a in alerts) == Counter(
            (a.urn, a.upn, a.rule_id, a.status) for a in expected.alerts
        )

        # Casework: a Stage 1 case for every pupil an opening alert was raised for.
        async with casework.client(officer) as cases_api:

            async def cases() -> list[dict[str, Any]]:
                found = await every(cases_api, "/v1/cases", la_code=LA, limit=500)
                return found if len(found) >= len(expected.cases) else []

            found = await eventually(cases, "the casework cases")
        assert sorted((c["urn"], c["upn"]) for c in found) == sorted(expected.cases)
        assert {c["state"] for c in found} == {"stage_1"}

        # The CME register: children deleted without a destination, and the long unauthorised absences.
        want_cme = sorted((c.upn, c.urn, c.reason, c.status, c.outcome, c.located_urn) for c in expected.cme_cases)
        async with cme.client(officer) as cme_api:

            async def cme_register() -> list[tuple[Any, ...]]:
                found = await every(cme_api, "/v1/cme/cases", la_code=LA, limit=500)
                return sorted(
                    (c["upn"], c["urn"], c["reason"], c["status"], c["outcome"], c["located_urn"]) for c in found
                )

            await eventually(lambda: matches(cme_register(), want_cme), "the CME register")

        # Webhooks: every event of the subscribed types delivered exactly once, signed, and on the ledger.
        deliveries = expected.deliveries(EVENT_FILTERS)
        total = deliveries.total()

        async def all_delivered() -> bool:
            assert len(hooks.received) <= total, f"{len(hooks.received)} deliveries for {total} events"
            return len(hooks.received) == total

        await eventually(all_delivered, f"{total} webhook deliveries", timeout=30)
        assert report.subscription is not None
        events = [verify(body, headers, report.subscription["secret"]) for headers, body in hooks.received]
        assert len({event["id"] for event in events}) == total
        assert Counter(event["type"] for event in events) == deliveries
        async with notifications.client(tokens.la_system) as ledger_api:
            ledger = await every(ledger_api, "/v1/deliveries", subscription_id=report.subscription["id"], limit=1000)
        assert len(ledger) == total and {d["status"] for d in ledger} == {"delivered"}

    # The scenario has what it is for: a recount that found nothing would prove little.
    ended = {(a.rule_id, a.status) for a in expected.alerts}
    assert {("continuous_unauthorised_10_days", s) for s in ("raised", "cleared", "retracted")} <= ended
    assert ("continuous_absence_20_days", "raised") in ended
    assert {c.reason for c in expected.cme_cases} == {"deleted_without_destination", "continuous_unauthorised_10_days"}
