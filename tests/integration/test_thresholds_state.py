"""The running state does not depend on how events arrive, and a rebuild from the topic equals it.

The property test drives the consumer's handler with real SQL (no broker: the point is the
arithmetic of versions and deltas); the rebuild test goes through HTTP and the broker.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.thresholds import service
from services.thresholds.consumers import rebuild
from services.thresholds.settings import ThresholdsSettings
from shared.db import make_engine, make_sessionmaker
from shared.domain.calendar import SchoolCalendar, academic_year
from shared.domain.codes import code_for
from shared.domain.thresholds import NATIONAL_PRESET, SessionMark, evaluate, totals
from shared.domain.upn import make_upn
from shared.events import MarkAmended, MarkRecorded, SchoolUpdated, make_event
from tests.conftest import TEST_LA

# Around the October half-term 2025 (27-31 Oct) of a school with loaded term dates.
CALENDAR = {
    "terms": [
        {"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"},
        {"name": "Autumn 2", "start": "2025-11-03", "end": "2025-12-19"},
    ],
    "inset_days": [],
    "closures": [],
}
SCHOOL_DAYS = SchoolCalendar.from_dict(CALENDAR).school_days_between(date(2025, 10, 13), date(2025, 11, 14))
CODES = ["/", "\\", "L", "U", "I", "M", "O", "G", "N", "#", "B", "C"]
_urns = iter(range(700000, 799999))


def _code(session: str, code: str) -> str:
    return {"AM": "/", "PM": "\\"}[session] if code in ("/", "\\") else code


mark_versions = st.lists(st.sampled_from(CODES), min_size=1, max_size=3)
scenario = st.fixed_dictionaries(
    {
        "marks": st.dictionaries(
            st.tuples(st.integers(0, 1), st.sampled_from(SCHOOL_DAYS), st.sampled_from(["AM", "PM"])),
            mark_versions,
            min_size=1,
            max_size=40,
        ),
        "duplicates": st.integers(0, 10),
        "batches": st.integers(1, 6),
        "seed": st.integers(0, 2**32 - 1),
    }
)


def _events(urn: str, upns: list[str], drawn: dict[tuple[int, date, str], list[str]]) -> list[Any]:
    """Every version of every mark, as the registers service would publish them."""
    events, version = [], 0
    for (pupil, day, session), codes in drawn.items():
        previous = None
        for code in codes:
            version += 1
            code = _code(session, code)
            entry = code_for(code, day)
            fields = dict(
                urn=urn,
                la_code=TEST_LA,
                upn=upns[pupil],
                date=day,
                session=session,
                code=code,
                category=entry.category.value,
                possible=entry.possible,
                change_version=version,
                recorded_at=datetime(2025, 11, 20, tzinfo=UTC) + timedelta(seconds=version),
                link="http://test/",
            )
            if previous is None:
                data = MarkRecorded(**fields)
            else:
                before = code_for(previous, day)
                data = MarkAmended(
                    **fields,
                    previous_code=previous,
                    previous_category=before.category.value,
                    previous_possible=before.possible,
                    amendment_id=version,
                )
            events.append(make_event("registers", data, subject=upns[pupil]))
            previous = code
    return events


async def _apply_shuffled(database_url: str, settings_: ThresholdsSettings, drawn: dict[str, Any]) -> None:
    urn = str(next(_urns))
    upns = [make_upn(int(TEST_LA), 7000 + int(urn) % 1000, 25, n) for n in range(2)]
    events = _events(urn, upns, drawn["marks"])
    rng = random.Random(drawn["seed"])
    delivered = events + [rng.choice(events) for _ in range(drawn["duplicates"])]
    rng.shuffle(delivered)
    school = SchoolUpdated(
        urn=urn,
        la_code=TEST_LA,
        phase="primary",
        independent=False,
        data_sharing_agreement=True,
        calendar=CALENDAR,
        link="http://test/",
    )
    cuts = sorted(rng.sample(range(1, len(delivered)), min(drawn["batches"] - 1, len(delivered) - 1)))
    batches = [delivered[a:b] for a, b in zip([0, *cuts], [*cuts, len(delivered)], strict=True)]
    engine = make_engine(database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            await service.handle_events(session, [make_event("registers", school, subject=urn)], settings_)
        for batch in batches:
            async with sessions() as session, session.begin():
                await service.handle_events(session, batch, settings_)
        async with engine.connect() as conn:
            stored_totals = {
                (r.upn, r.academic_year): (
                    r.possible_sessions,
                    r.present_sessions,
                    r.approved_activity_sessions,
                    r.authorised_absence_sessions,
                    r.unauthorised_absence_sessions,
                )
                for r in await conn.execute(
                    text("SELECT * FROM thresholds.enrolment_totals WHERE urn = :urn"), {"urn": urn}
                )
            }
            active = {
                (r.upn, r.rule_id, r.step)
                for r in await conn.execute(
                    text("SELECT upn, rule_id, step FROM thresholds.alerts WHERE urn = :urn AND status = 'raised'"),
                    {"urn": urn},
                )
            }
    finally:
        await engine.dispose()

    # From scratch: the highest version of each session is the mark.
    final: dict[str, list[SessionMark]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.data.change_version):
        d = event.data
        final[d.upn] = [m for m in final[d.upn] if (m.date, m.session) != (d.date, d.session)]
        final[d.upn].append(SessionMark(d.date, d.session, d.code, code_for(d.code, d.date).category, d.possible))
    expected_totals = {}
    expected_alerts = set()
    calendar = SchoolCalendar.from_dict(CALENDAR)
    for upn, marks in final.items():
        by_year = defaultdict(list)
        for m in marks:
            by_year[academic_year(m.date)].append(m)
        for year, year_marks in by_year.items():
            t = totals(year_marks)
            expected_totals[(upn, year)] = (
                t.possible_sessions,
                t.present_sessions,
                t.approved_activity_sessions,
                t.authorised_absence_sessions,
                t.unauthorised_absence_sessions,
            )
        latest_year = max(by_year)
        for firing in evaluate(NATIONAL_PRESET.rules_for_school(urn), marks, calendar, latest_year):
            expected_alerts.add((upn, firing.rule_id, firing.step))
    assert stored_totals == expected_totals
    assert active == expected_alerts


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=scenario)
def test_shuffled_duplicated_delivery_gives_the_from_scratch_state(database_url, settings_overrides, drawn):
    settings_ = ThresholdsSettings(**settings_overrides)
    asyncio.run(_apply_shuffled(database_url, settings_, drawn))


async def test_rebuild_from_the_topic_equals_the_live_state(registers, thresholds, school, new_upn, database_url):
    urn = school["urn"]
    rng = random.Random(20251103)
    upns = [new_upn() for _ in range(12)]
    # Most pupils attend; a few are often or always away, so that alerts exist to compare.
    absence = {upn: rng.choice([0.02, 0.05, 0.15, 0.6, 1.0]) for upn in upns}
    changes = 0
    async with registers.client(school["token"]) as mis:
        for day in SCHOOL_DAYS[-10:]:
            for session in ("AM", "PM"):
                marks = [
                    {"upn": u, "code": rng.choice("OIGNU") if rng.random() < absence[u] else _code(session, "/")}
                    for u in upns
                ]
                body = {"date": day.isoformat(), "session": session, "marks": marks}
                response = await mis.post(f"/v1/schools/{urn}/registers", json=body)
                assert response.status_code == 201, response.text
                changes += response.json()["new"]
                if rng.random() < 0.2:  # the MIS sends the same register again: nothing changes
                    again = await mis.post(f"/v1/schools/{urn}/registers", json=body)
                    assert again.json()["unchanged"] == len(upns)
        for upn in rng.sample(upns, 6):
            day = rng.choice(SCHOOL_DAYS[-10:])
            response = await mis.post(
                f"/v1/schools/{urn}/marks/{upn}/{day}/AM/amendments",
                json={"code": "M", "reason": "Medical appointment", "amended_by": {"name": "A", "position": "B"}},
            )
            assert response.status_code in (201, 409), response.text
            changes += response.status_code == 201

    engine = make_engine(database_url, pool_size=2)

    async def snapshot() -> dict[str, Any]:
        async with engine.connect() as conn:

            async def rows(sql: str) -> list[tuple]:
                return sorted(tuple(r) for r in await conn.execute(text(sql), {"urn": urn}))

            return {
                "versions": await rows(
                    "SELECT upn, date, session, change_version, code FROM thresholds.mark_versions WHERE urn = :urn"
                ),
                "totals": await rows("SELECT * FROM thresholds.enrolment_totals WHERE urn = :urn"),
                "alerts": await rows(
                    "SELECT id, upn, rule_id, step, status, figures::text, sessions::text "
                    "FROM thresholds.alerts WHERE urn = :urn"
                ),
            }

    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        live = await snapshot()
        while len(live["versions"]) < changes:
            assert loop.time() < deadline, f"{len(live['versions'])} of {changes} mark versions applied"
            await asyncio.sleep(0.2)
            live = await snapshot()
        await asyncio.sleep(0.5)  # let the last batch's evaluation commit
        live = await snapshot()
        assert len(live["versions"]) == changes and any(a[4] == "raised" for a in live["alerts"])

        report = await rebuild(thresholds.settings, make_sessionmaker(engine))
        assert report.events >= changes and report.pupils_evaluated >= len(upns)
        rebuilt = await snapshot()
        assert rebuilt == live  # same marks, totals, and the very same alerts (nothing re-raised)
    finally:
        await engine.dispose()
