"""Thresholds: marks in, running totals and alerts out.

The consumer applies a batch of mark events with a handful of set-based statements: store every
version, take the highest version per session as the current mark, turn each change of the
current mark into a delta on the enrolment's totals, then re-evaluate the policy for the pupils
whose marks changed. The rules themselves are pure (`shared.domain.thresholds`).
"""

from __future__ import annotations

import base64
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.thresholds import schemas
from services.thresholds.models import SCHEMA, Alert, Policy
from services.thresholds.settings import ThresholdsSettings
from shared import outbox
from shared.auth import Principal
from shared.db import raw_connection
from shared.domain.calendar import SchoolCalendar, academic_year, academic_year_bounds
from shared.domain.codes import LATENESS_CODES, Category
from shared.domain.thresholds import (
    NATIONAL_PRESET,
    PRESETS,
    Firing,
    PolicyDocument,
    Rules,
    SessionMark,
    Totals,
    evaluate,
    lookback_start,
    mark_totals,
)
from shared.errors import NotFound, Unprocessable
from shared.events import (
    ALERTS_TOPIC,
    AlertCleared,
    AlertRaised,
    CloudEvent,
    EventEncoder,
    MarkAmended,
    MarkRecorded,
    MarksPurged,
    SchoolUpdated,
)

SOURCE = "thresholds"

Pupil = tuple[str, str]  # (URN, UPN): one enrolment
SessionKey = tuple[str, str, date, str]  # (URN, UPN, date, session)


# ---------------------------------------------------------------- counters

Counts = tuple[int, int, int, int, int, int, int]  # the columns of _TOTAL_COLUMNS, in order
NO_COUNTS: Counts = (0, 0, 0, 0, 0, 0, 0)


@functools.cache
def counts_of(code: str, category: str, possible: bool) -> Counts:
    """What one mark adds to an enrolment's totals: the rate figures plus the counters the
    illness and lateness rules need. A few dozen distinct marks exist: computed once each."""
    t = mark_totals(Category(category), possible)
    return (
        t.possible_sessions,
        t.present_sessions,
        t.approved_activity_sessions,
        t.authorised_absence_sessions,
        t.unauthorised_absence_sessions,
        int(possible and code == "I"),
        int(code in LATENESS_CODES),
    )


@dataclass(frozen=True)
class _Version:
    change_version: int
    code: str
    category: str
    possible: bool

    def counts(self) -> Counts:
        return counts_of(self.code, self.category, self.possible)


# ---------------------------------------------------------------- consumer


# Live batches hold this lock shared; a rebuild holds it exclusively while it resets and replays,
# so no two transactions compute a delta from the same stored version at once.
STATE_LOCK = 0x7468726573686F6C  # "threshol"


async def lock_state(session: AsyncSession, *, exclusive: bool) -> None:
    """Until the transaction ends. Exclusive for whatever re-evaluates many pupils at once (a
    replay, a policy change), shared for live batches, which partitioning already keeps apart."""
    conn = await raw_connection(session)
    await conn.execute(f"SELECT pg_advisory_xact_lock{'' if exclusive else '_shared'}($1)", STATE_LOCK)


async def handle_events(
    session: AsyncSession, events: Sequence[CloudEvent[Any]], settings: ThresholdsSettings, *, replay: bool = False
) -> None:
    """Consumer handler for `attendance.marks.v1` and `attendance.registers.v1`. In a replay the
    state is rebuilt without evaluating: the rebuild evaluates every pupil once at the end."""
    await lock_state(session, exclusive=replay)
    by_type: dict[type, list[Any]] = defaultdict(list)
    for event in events:  # by exact type: isinstance on a pydantic model goes through ABCMeta, slowly
        by_type[type(event.data)].append(event.data)
    marks = by_type[MarkRecorded] + by_type[MarkAmended]
    schools, purges = by_type[SchoolUpdated], by_type[MarksPurged]
    if schools:
        await _store_schools(session, schools)
    if marks:
        await apply_marks(session, settings, marks, evaluate=not replay)
    for purge in purges:
        await _apply_purge(session, purge)


async def _store_schools(session: AsyncSession, schools: Sequence[SchoolUpdated]) -> None:
    conn = await raw_connection(session)
    latest = {s.urn: s for s in schools}  # a batch is in order per key: the last update wins
    await conn.execute(
        f"INSERT INTO {SCHEMA}.schools (urn, la_code, calendar) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) "
        "ON CONFLICT (urn) DO UPDATE SET la_code = excluded.la_code, calendar = excluded.calendar",
        list(latest),
        [s.la_code for s in latest.values()],
        [orjson.dumps(s.calendar).decode() for s in latest.values()],
    )


async def _apply_purge(session: AsyncSession, purge: MarksPurged) -> None:
    """Register entries beyond retention are gone at the source; drop our copies and the totals
    of academic years that ended before the cut-off."""
    conn = await raw_connection(session)
    await conn.execute(f"DELETE FROM {SCHEMA}.mark_versions WHERE urn = $1 AND date < $2", purge.urn, purge.before)
    await conn.execute(
        f"DELETE FROM {SCHEMA}.enrolment_totals WHERE urn = $1 AND academic_year < $2",
        purge.urn,
        academic_year(purge.before),
    )


async def apply_marks(
    session: AsyncSession,
    settings: ThresholdsSettings,
    marks: Sequence[MarkRecorded | MarkAmended],
    *,
    evaluate: bool = True,
) -> None:
    conn = await raw_connection(session)
    schools = dict.fromkeys((m.urn, m.la_code) for m in marks)  # a few schools, many marks each
    await conn.execute(
        f"INSERT INTO {SCHEMA}.schools (urn, la_code, calendar) "
        "SELECT u.urn, u.la_code, '{}'::jsonb FROM unnest($1::text[], $2::text[]) AS u(urn, la_code) "
        "ON CONFLICT (urn) DO NOTHING",
        [urn for urn, _ in schools],
        [la_code for _, la_code in schools],
    )
    incoming: dict[SessionKey, MarkRecorded | MarkAmended] = {}
    for mark in marks:
        key = (mark.urn, mark.upn, mark.date, mark.session)
        held = incoming.get(key)
        if held is None or mark.change_version > held.change_version:
            incoming[key] = mark
    current = await _store_versions(conn, marks)

    deltas: dict[tuple[str, str, int], list[int]] = {}
    last_dates: dict[tuple[str, str, int], date] = {}
    changed: set[Pupil] = set()
    for key, mark in incoming.items():
        before = current.get(key)
        if before is not None and before.change_version >= mark.change_version:
            continue  # a duplicate or an older version arriving late: the current mark stands
        enrolment = (mark.urn, mark.upn, academic_year(mark.date))
        delta = deltas.get(enrolment)
        if delta is None:
            delta = deltas[enrolment] = [0] * len(NO_COUNTS)
        old = before.counts() if before else NO_COUNTS
        for i, (new_count, old_count) in enumerate(
            zip(counts_of(mark.code, mark.category, mark.possible), old, strict=True)
        ):
            delta[i] += new_count - old_count
        last_dates[enrolment] = max(last_dates.get(enrolment, mark.date), mark.date)
        changed.add((mark.urn, mark.upn))
    if deltas:
        await _add_to_totals(conn, deltas, last_dates)
    if changed and evaluate:
        await evaluate_pupils(session, settings, changed)


async def _store_versions(conn, marks: Sequence[MarkRecorded | MarkAmended]) -> dict[SessionKey, _Version]:
    """Store every incoming version, and return the current version of each session touched as it
    stood before them (one statement: the snapshot of a data-modifying CTE is the one before it)."""
    rows = await conn.fetch(
        "WITH incoming AS (SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::bigint[], "
        "$6::text[], $7::text[], $8::bool[], $9::timestamptz[]) "
        "AS i(urn, upn, date, session, change_version, code, category, possible, recorded_at)), "
        f"stored AS (INSERT INTO {SCHEMA}.mark_versions SELECT * FROM incoming ON CONFLICT DO NOTHING) "
        "SELECT DISTINCT ON (m.urn, m.upn, m.date, m.session) m.urn, m.upn, m.date, m.session, m.change_version, "
        f"m.code, m.category, m.possible FROM (SELECT DISTINCT urn, upn, date, session FROM incoming) AS k "
        f"JOIN {SCHEMA}.mark_versions m USING (urn, upn, date, session) "
        "ORDER BY m.urn, m.upn, m.date, m.session, m.change_version DESC",
        [m.urn for m in marks],
        [m.upn for m in marks],
        [m.date for m in marks],
        [m.session for m in marks],
        [m.change_version for m in marks],
        [m.code for m in marks],
        [m.category for m in marks],
        [m.possible for m in marks],
        [m.recorded_at for m in marks],
    )
    return {
        (r["urn"], r["upn"], r["date"], r["session"]): _Version(
            r["change_version"], r["code"], r["category"], r["possible"]
        )
        for r in rows
    }


_TOTAL_COLUMNS = (
    "possible_sessions",
    "present_sessions",
    "approved_activity_sessions",
    "authorised_absence_sessions",
    "unauthorised_absence_sessions",
    "illness_sessions",
    "late_sessions",
)


async def _add_to_totals(
    conn, deltas: dict[tuple[str, str, int], list[int]], last_dates: dict[tuple[str, str, int], date]
) -> None:
    keys = list(deltas)
    columns = [list(column) for column in zip(*(deltas[k] for k in keys), strict=True)]
    names = ", ".join(_TOTAL_COLUMNS)
    arrays = ", ".join(f"${i}::int[]" for i in range(5, 5 + len(_TOTAL_COLUMNS)))
    updates = ", ".join(f"{c} = t.{c} + excluded.{c}" for c in _TOTAL_COLUMNS)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.enrolment_totals AS t (urn, upn, academic_year, last_date, {names}) "
        f"SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::date[], {arrays}) "
        f"ON CONFLICT (urn, upn, academic_year) DO UPDATE SET {updates}, "
        "last_date = greatest(t.last_date, excluded.last_date)",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [last_dates[k] for k in keys],
        *columns,
    )


# ---------------------------------------------------------------- policy and evaluation


async def current_policy(session: AsyncSession, la_code: str) -> tuple[int, PolicyDocument]:
    """The LA's latest policy version; an LA that never set one follows the national default
    (version 0)."""
    row = (
        await session.execute(select(Policy).where(Policy.la_code == la_code).order_by(Policy.version.desc()).limit(1))
    ).scalar_one_or_none()
    if row is None:
        return 0, NATIONAL_PRESET
    return row.version, PolicyDocument.model_validate(row.document)


@dataclass(frozen=True)
class _SchoolContext:
    la_code: str
    calendar: SchoolCalendar
    policy_version: int
    rules: Rules


_CONTEXTS_SQL = f"""
SELECT s.urn, s.la_code, s.calendar::text AS calendar, coalesce(p.version, 0) AS policy_version,
       p.document::text AS policy
FROM {SCHEMA}.schools s
LEFT JOIN LATERAL (SELECT version, document FROM {SCHEMA}.policies
                   WHERE la_code = s.la_code ORDER BY version DESC LIMIT 1) p ON true
WHERE s.urn = ANY($1::text[])
"""


async def _school_contexts(session: AsyncSession, urns: set[str]) -> dict[str, _SchoolContext]:
    """Each school's LA, calendar and rules as they now stand. Calendars and policies are parsed
    once per distinct text and kept (`_calendar`, `_rules`): every batch names the same schools,
    and a kept calendar remembers the school days it has counted."""
    conn = await raw_connection(session)
    contexts = {}
    for row in await conn.fetch(_CONTEXTS_SQL, list(urns)):
        rules = _rules(row["policy"], row["urn"])
        contexts[row["urn"]] = _SchoolContext(row["la_code"], _calendar(row["calendar"]), row["policy_version"], rules)
    return contexts


@functools.lru_cache(maxsize=4096)
def _calendar(text: str) -> SchoolCalendar:
    return SchoolCalendar.from_dict(orjson.loads(text))


@functools.lru_cache(maxsize=4096)
def _rules(policy: str | None, urn: str) -> Rules:
    """The rules for a school under a policy document (None: the national default)."""
    return (_policy(policy) if policy else NATIONAL_PRESET).rules_for_school(urn)


@functools.lru_cache(maxsize=256)
def _policy(text: str) -> PolicyDocument:
    return PolicyDocument.model_validate_json(text)


def _may_fire(rules: Rules, this_year: Any, earlier: Any) -> bool:
    """A cheap necessary condition for any rule to fire, from the totals alone: most pupils are
    rarely absent, and their marks need not be read to know that nothing fires."""
    unauthorised = this_year["unauthorised_absence_sessions"] + (
        earlier["unauthorised_absence_sessions"] if earlier else 0
    )
    late = this_year["late_sessions"] + (earlier["late_sessions"] if earlier else 0)
    absent = this_year["authorised_absence_sessions"] + this_year["unauthorised_absence_sessions"]
    if rules.penalty_notice_threshold.enabled and unauthorised >= rules.penalty_notice_threshold.unauthorised_sessions:
        return True
    if rules.persistent_lateness.enabled and late >= rules.persistent_lateness.late_sessions:
        return True
    for run in (rules.continuous_unauthorised_10_days, rules.continuous_absence_20_days):
        if run.enabled and unauthorised >= run.school_days:
            return True
    if rules.illness_15_days.enabled and this_year["illness_sessions"] >= 2 * rules.illness_15_days.school_days:
        return True
    support_map = rules.support_map_days
    if support_map.enabled and support_map.steps and absent >= 2 * support_map.steps[0].days:
        return True
    totals = Totals(*(this_year[c] for c in _TOTAL_COLUMNS[:5]))
    return any(
        rule.enabled and totals.possible_sessions >= rule.min_possible_sessions and totals.reaches(rule.percent)
        for rule in (rules.persistent_absence, rules.severe_absence)
    )


async def evaluate_pupils(
    session: AsyncSession,
    settings: ThresholdsSettings,
    pupils: set[Pupil],
    *,
    policy_changed: bool = False,
) -> None:
    """Bring the pupils' raised alerts in line with what their marks and policy now say."""
    conn = await raw_connection(session)
    contexts = await _school_contexts(session, {urn for urn, _ in pupils})
    pupil_list = sorted(pupils)
    totals_rows = await conn.fetch(
        f"SELECT t.* FROM unnest($1::text[], $2::text[]) AS p(urn, upn) "
        f"JOIN {SCHEMA}.enrolment_totals t USING (urn, upn) ORDER BY t.urn, t.upn, t.academic_year DESC",
        [p[0] for p in pupil_list],
        [p[1] for p in pupil_list],
    )
    by_pupil: dict[Pupil, list[Any]] = defaultdict(list)
    for row in totals_rows:
        by_pupil[(row["urn"], row["upn"])].append(row)
    active_rows = await conn.fetch(
        # Not the evidence (figures, sessions): large, and not needed to decide what ends.
        f"SELECT a.id, a.urn, a.upn, a.rule_id, a.step, a.policy_version, a.window_to "
        f"FROM unnest($1::text[], $2::text[]) AS p(urn, upn) "
        f"JOIN {SCHEMA}.alerts a USING (urn, upn) WHERE a.status = 'raised'",
        [p[0] for p in pupil_list],
        [p[1] for p in pupil_list],
    )
    active: dict[Pupil, dict[tuple[str, str], Any]] = defaultdict(dict)
    for row in active_rows:
        active[(row["urn"], row["upn"])][(row["rule_id"], row["step"])] = row

    candidates: dict[Pupil, int] = {}  # pupil -> academic year to evaluate
    since: dict[Pupil, date] = {}
    lookbacks: dict[tuple[str, date, int], date] = {}  # pupils of a school mostly share their last day
    for pupil in pupil_list:
        years = by_pupil.get(pupil)
        context = contexts.get(pupil[0])
        if not years or context is None:
            continue
        latest = years[0]  # highest academic year with marks
        earlier = years[1] if len(years) > 1 else None
        if active.get(pupil) or _may_fire(context.rules, latest, earlier):
            year, as_of = latest["academic_year"], latest["last_date"]
            candidates[pupil] = year
            key = (pupil[0], as_of, year)
            if key not in lookbacks:
                lookbacks[key] = lookback_start(context.rules, context.calendar, as_of, year)
            since[pupil] = lookbacks[key]
    firings: dict[Pupil, list[Firing]] = {}
    if candidates:
        series = await _series(conn, since)
        for pupil, year in candidates.items():
            context = contexts[pupil[0]]
            firings[pupil] = evaluate(context.rules, series.get(pupil, []), context.calendar, year)

    ending = {
        pupil: [row for key, row in active.get(pupil, {}).items() if key not in {(f.rule_id, f.step) for f in fired}]
        for pupil, fired in firings.items()
    }
    held_then = {} if policy_changed else await _held_when_raised(conn, contexts, ending)
    clears: list[tuple[Pupil, Any, str]] = []  # (pupil, alert row, reason)
    raises: list[tuple[Pupil, Firing]] = []
    for pupil in candidates:
        fired = {(f.rule_id, f.step): f for f in firings.get(pupil, [])}
        held = active.get(pupil, {})
        for key, row in held.items():
            if key not in fired:
                reason = "condition_ended" if row["id"] in held_then else "retracted"
                clears.append((pupil, row, "policy_changed" if policy_changed else reason))
        raises.extend((pupil, firing) for key, firing in fired.items() if key not in held)
    if clears or raises:
        await _write_alerts(session, settings, contexts, clears, raises)


async def _write_alerts(
    session: AsyncSession,
    settings: ThresholdsSettings,
    contexts: dict[str, _SchoolContext],
    clears: list[tuple[Pupil, Any, str]],
    raises: list[tuple[Pupil, Firing]],
) -> None:
    """End and raise alerts, one statement each way, and publish them: clears first, so a
    subscriber never sees two raised alerts for one rule and step."""
    conn = await raw_connection(session)
    now = datetime.now(UTC)
    encoder = EventEncoder(SOURCE, now)
    messages: list[tuple[str, bytes]] = []
    if clears:
        await conn.execute(
            f"UPDATE {SCHEMA}.alerts a SET status = c.status, cleared_at = $3, clear_reason = c.reason "
            "FROM unnest($1::bigint[], $2::text[], $4::text[]) AS c(id, reason, status) WHERE a.id = c.id",
            [row["id"] for _, row, _ in clears],
            [reason for _, _, reason in clears],
            now,
            ["retracted" if reason == "retracted" else "cleared" for _, _, reason in clears],
        )
        for (urn, upn), row, reason in clears:
            fields = _alert_fields(
                settings, row["id"], urn, contexts[urn].la_code, upn, row["rule_id"], row["step"], row["policy_version"]
            )
            messages.append((upn, encoder.encode(AlertCleared, {**fields, "reason": reason}, subject=upn)))
    if raises:
        evidence = [[f"{s.date.isoformat()} {s.session} {s.code}" for s in firing.sessions] for _, firing in raises]
        rows = await conn.fetch(
            f"INSERT INTO {SCHEMA}.alerts (urn, la_code, upn, rule_id, step, status, policy_version, figures, "
            "window_from, window_to, sessions, raised_at) "
            "SELECT urn, la_code, upn, rule_id, step, 'raised', policy_version, figures, window_from, window_to, "
            "sessions, $11 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], "
            "$7::jsonb[], $8::date[], $9::date[], $10::jsonb[]) AS r(urn, la_code, upn, rule_id, step, "
            "policy_version, figures, window_from, window_to, sessions) "
            "RETURNING id, urn, upn, rule_id, step",
            [urn for (urn, _), _ in raises],
            [contexts[urn].la_code for (urn, _), _ in raises],
            [upn for (_, upn), _ in raises],
            [firing.rule_id for _, firing in raises],
            [firing.step for _, firing in raises],
            [contexts[urn].policy_version for (urn, _), _ in raises],
            [orjson.dumps(firing.figures).decode() for _, firing in raises],
            [firing.window_from for _, firing in raises],
            [firing.window_to for _, firing in raises],
            [orjson.dumps(sessions).decode() for sessions in evidence],
            now,
        )
        # One raised alert per pupil, rule and step (ux_alerts_active) names each new row.
        ids = {(r["urn"], r["upn"], r["rule_id"], r["step"]): r["id"] for r in rows}
        for ((urn, upn), firing), sessions in zip(raises, evidence, strict=True):
            context = contexts[urn]
            alert_id = ids[(urn, upn, firing.rule_id, firing.step)]
            fields = _alert_fields(
                settings, alert_id, urn, context.la_code, upn, firing.rule_id, firing.step, context.policy_version
            )
            fields.update(
                figures=firing.figures, window_from=firing.window_from, window_to=firing.window_to, sessions=sessions
            )
            messages.append((upn, encoder.encode(AlertRaised, fields, subject=upn)))
    await outbox.enqueue(session, SCHEMA, ALERTS_TOPIC, messages)


async def known_pupils(session: AsyncSession, la_code: str | None = None) -> set[Pupil]:
    """Every pupil enrolment with marks (of one LA's schools, if given)."""
    conn = await raw_connection(session)
    rows = await conn.fetch(
        f"SELECT DISTINCT t.urn, t.upn FROM {SCHEMA}.enrolment_totals t JOIN {SCHEMA}.schools s USING (urn) "
        "WHERE $1::text IS NULL OR s.la_code = $1",
        la_code,
    )
    return {(r["urn"], r["upn"]) for r in rows}


async def _held_when_raised(conn, contexts: dict[str, _SchoolContext], ending: dict[Pupil, list[Any]]) -> set[int]:
    """Of the alerts that stop holding, those that would still have held on the day they were raised
    with the marks as they now stand: their condition ended. The others' crossing was undone (an
    amendment, a late mark for an earlier day): they are retracted (domain.md §4)."""
    ending = {pupil: rows for pupil, rows in ending.items() if rows}
    if not ending:
        return set()
    since = {}
    for (urn, upn), rows in ending.items():
        context = contexts[urn]
        raised_on = min(row["window_to"] for row in rows)
        since[(urn, upn)] = lookback_start(context.rules, context.calendar, raised_on, academic_year(raised_on))
    series = await _series(conn, since)
    held = set()
    for pupil, rows in ending.items():
        context = contexts[pupil[0]]
        for row in rows:
            then = [mark for mark in series.get(pupil, []) if mark.date <= row["window_to"]]
            firings = evaluate(context.rules, then, context.calendar, academic_year(row["window_to"]))
            if (row["rule_id"], row["step"]) in {(f.rule_id, f.step) for f in firings}:
                held.add(row["id"])
    return held


def _alert_fields(
    settings: ThresholdsSettings,
    alert_id: int,
    urn: str,
    la_code: str,
    upn: str,
    rule_id: str,
    step: str,
    policy_version: int,
) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "urn": urn,
        "la_code": la_code,
        "upn": upn,
        "rule_id": rule_id,
        "step": step,
        "policy_version": policy_version,
        "link": settings.link(f"/v1/alerts/{alert_id}"),
    }


async def _series(conn, candidates: dict[Pupil, date]) -> dict[Pupil, list[SessionMark]]:
    """Current marks of each pupil from the date its evaluation needs them from."""
    pupils = list(candidates)
    starts = list(candidates.values())
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (m.urn, m.upn, m.date, m.session) m.urn, m.upn, m.date, m.session, m.code, "
        f"m.category, m.possible FROM unnest($1::text[], $2::text[], $3::date[]) AS p(urn, upn, since) "
        f"JOIN {SCHEMA}.mark_versions m ON m.urn = p.urn AND m.upn = p.upn AND m.date >= p.since "
        "ORDER BY m.urn, m.upn, m.date, m.session, m.change_version DESC",
        [p[0] for p in pupils],
        [p[1] for p in pupils],
        starts,
    )
    series: dict[Pupil, list[SessionMark]] = defaultdict(list)
    for r in rows:
        series[(r["urn"], r["upn"])].append(
            SessionMark(r["date"], r["session"], r["code"], Category(r["category"]), r["possible"])
        )
    return series


# ---------------------------------------------------------------- queries


async def school_la_code(session: AsyncSession, urn: str) -> str:
    conn = await raw_connection(session)
    la_code = await conn.fetchval(f"SELECT la_code FROM {SCHEMA}.schools WHERE urn = $1", urn)
    if la_code is None:
        raise NotFound("school", f"No marks or school details for school {urn} have reached this service.")
    return la_code


def _attendance_out(totals: Totals, rules: Rules, start: date, end: date, as_of: datetime | None) -> schemas.Attendance:
    return schemas.Attendance(
        from_date=start,
        to_date=end,
        as_of=as_of,
        possible_sessions=totals.possible_sessions,
        present_sessions=totals.present_sessions,
        approved_activity_sessions=totals.approved_activity_sessions,
        authorised_absence_sessions=totals.authorised_absence_sessions,
        unauthorised_absence_sessions=totals.unauthorised_absence_sessions,
        attendance_rate=totals.attendance_rate,
        absence_rate=totals.absence_rate,
        persistent_absence=totals.reaches(rules.persistent_absence.percent),
        severe_absence=totals.reaches(rules.severe_absence.percent),
    )


async def pupil_attendance(
    session: AsyncSession,
    urn: str,
    upn: str,
    today: date,
    start: date | None,
    end: date | None,
    as_of: datetime | None,
) -> schemas.Attendance:
    """Year to date from the running totals; any other period, or what was known at `as_of`,
    from the stored mark versions."""
    la_code = await school_la_code(session, urn)
    _, document = await current_policy(session, la_code)
    rules = document.rules_for_school(urn)
    year_start, year_end = academic_year_bounds(academic_year(today))
    conn = await raw_connection(session)
    if start is None and end is None and as_of is None:
        row = await conn.fetchrow(
            f"SELECT * FROM {SCHEMA}.enrolment_totals WHERE urn = $1 AND upn = $2 AND academic_year = $3",
            urn,
            upn,
            academic_year(today),
        )
        totals = Totals(*(row[c] for c in _TOTAL_COLUMNS[:5])) if row else Totals.ZERO
        return _attendance_out(totals, rules, year_start, min(today, year_end), None)
    start = start or year_start
    end = end or min(today, year_end)
    if end < start:
        raise Unprocessable("invalid-period", f"to ({end}) is before from ({start})")
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (date, session) code, category, possible FROM {SCHEMA}.mark_versions "
        "WHERE urn = $1 AND upn = $2 AND date BETWEEN $3 AND $4 AND ($5::timestamptz IS NULL OR recorded_at <= $5) "
        "ORDER BY date, session, change_version DESC",
        urn,
        upn,
        start,
        end,
        as_of,
    )
    totals = Totals.ZERO
    for r in rows:
        totals = totals + mark_totals(Category(r["category"]), r["possible"])
    return _attendance_out(totals, rules, start, end, as_of)


def alert_out(row: Alert) -> schemas.AlertOut:
    return schemas.AlertOut.model_validate(row)


async def get_alert(session: AsyncSession, alert_id: int) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("alert", f"No alert {alert_id}.")
    return alert


async def list_alerts(session: AsyncSession, filters: schemas.AlertFilters, principal: Principal) -> schemas.AlertPage:
    query = select(Alert).order_by(Alert.id.desc()).limit(filters.limit + 1)
    if principal.urns:
        query = query.where(Alert.urn.in_(principal.urns))
    if principal.la_code:
        query = query.where(Alert.la_code == principal.la_code)
    for column, value in (
        (Alert.la_code, filters.la_code),
        (Alert.urn, filters.urn),
        (Alert.upn, filters.upn),
        (Alert.rule_id, filters.rule),
        (Alert.status, filters.status),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.cursor is not None:
        query = query.where(Alert.id < filters.cursor)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return schemas.AlertPage(items=[alert_out(r) for r in rows], next_cursor=rows[-1].id if more else None)


async def put_policy(
    session: AsyncSession,
    settings: ThresholdsSettings,
    la_code: str,
    body: schemas.PolicyIn,
    principal: Principal,
) -> schemas.PolicyOut:
    """Store a new version and re-evaluate every pupil of the LA's schools under it."""
    document = PRESETS[body.preset] if body.preset else body.document
    assert document is not None  # the schema requires one of the two
    version, _ = await current_policy(session, la_code)
    policy = Policy(
        la_code=la_code,
        version=version + 1,
        document=document.model_dump(mode="json"),
        reason=body.reason,
        created_by=principal.subject,
        created_at=datetime.now(UTC),
    )
    session.add(policy)
    await session.flush()
    await lock_state(session, exclusive=True)
    pupils = await known_pupils(session, la_code)
    if pupils:
        await evaluate_pupils(session, settings, pupils, policy_changed=True)
    return policy_out(policy, len(pupils))


def policy_out(policy: Policy, reevaluated: int | None = None) -> schemas.PolicyOut:
    return schemas.PolicyOut(
        la_code=policy.la_code,
        version=policy.version,
        document=PolicyDocument.model_validate(policy.document),
        reason=policy.reason,
        created_by=policy.created_by,
        created_at=policy.created_at,
        pupils_reevaluated=reevaluated,
    )


async def policy_versions(session: AsyncSession, la_code: str) -> list[schemas.PolicyOut]:
    """The audit of an LA's policy: every version, who set it, when and why, oldest first."""
    rows = await session.execute(select(Policy).where(Policy.la_code == la_code).order_by(Policy.version))
    return [policy_out(row) for row in rows.scalars()]


async def get_policy(session: AsyncSession, la_code: str) -> schemas.PolicyOut:
    row = (
        await session.execute(select(Policy).where(Policy.la_code == la_code).order_by(Policy.version.desc()).limit(1))
    ).scalar_one_or_none()
    if row is None:
        return schemas.PolicyOut(
            la_code=la_code,
            version=0,
            document=NATIONAL_PRESET,
            reason="national default (the LA has not set a policy)",
            created_by="platform",
            created_at=None,
        )
    return policy_out(row)


def _share(count: int, of: int) -> schemas.Cohort:
    return schemas.Cohort(pupils=count, share=count / of if of else 0.0)


_COHORT_SQL = f"""
SELECT count(*) FILTER (WHERE t.possible_sessions > 0) AS pupils,
       coalesce(sum(t.possible_sessions), 0) AS possible,
       coalesce(sum(t.authorised_absence_sessions + t.unauthorised_absence_sessions), 0) AS absent,
       count(*) FILTER (WHERE t.possible_sessions > 0 AND (t.authorised_absence_sessions
             + t.unauthorised_absence_sessions) * 100 >= p.pa * t.possible_sessions) AS pa,
       count(*) FILTER (WHERE t.possible_sessions > 0 AND (t.authorised_absence_sessions
             + t.unauthorised_absence_sessions) * 100 >= p.sa * t.possible_sessions) AS sa,
       t.urn
FROM unnest($1::text[], $2::numeric[], $3::numeric[]) AS p(urn, pa, sa)
JOIN {SCHEMA}.enrolment_totals t ON t.urn = p.urn AND t.academic_year = $4
GROUP BY t.urn ORDER BY t.urn
"""


async def _lines(session: AsyncSession, urns: list[str], year: int) -> list[Any]:
    """Per school: pupils, sessions, absence and the PA/SA counts under each school's own lines."""
    la_codes = {urn: await school_la_code(session, urn) for urn in urns}
    rules = {}
    for urn, la_code in la_codes.items():
        _, document = await current_policy(session, la_code)
        rules[urn] = document.rules_for_school(urn)
    conn = await raw_connection(session)
    return await conn.fetch(
        _COHORT_SQL,
        urns,
        [rules[u].persistent_absence.percent for u in urns],
        [rules[u].severe_absence.percent for u in urns],
        year,
    )


async def school_attendance(
    session: AsyncSession, urn: str, year: int, which: str, cursor: str | None, limit: int
) -> schemas.SchoolAttendance:
    lines = await _lines(session, [urn], year)
    line = lines[0] if lines else None
    pupils, possible, absent = (line["pupils"], line["possible"], line["absent"]) if line else (0, 0, 0)
    _, document = await current_policy(session, await school_la_code(session, urn))
    rules = document.rules_for_school(urn)
    percent = (rules.persistent_absence if which == "pa" else rules.severe_absence).percent
    after_rate, after_upn = _decode_cursor(cursor)
    conn = await raw_connection(session)
    rows = await conn.fetch(
        f"""
        SELECT upn, possible_sessions, authorised_absence_sessions, unauthorised_absence_sessions,
               (authorised_absence_sessions + unauthorised_absence_sessions)::numeric / possible_sessions AS rate
        FROM {SCHEMA}.enrolment_totals
        WHERE urn = $1 AND academic_year = $2 AND possible_sessions > 0
          AND (authorised_absence_sessions + unauthorised_absence_sessions) * 100 >= $3 * possible_sessions
          AND ($4::numeric IS NULL OR (authorised_absence_sessions + unauthorised_absence_sessions)::numeric
               / possible_sessions < $4 OR ((authorised_absence_sessions + unauthorised_absence_sessions)::numeric
               / possible_sessions = $4 AND upn > $5))
        ORDER BY rate DESC, upn
        LIMIT $6
        """,
        urn,
        year,
        percent,
        after_rate,
        after_upn,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.SchoolAttendance(
        urn=urn,
        academic_year=year,
        pupils=pupils,
        possible_sessions=possible,
        absence_rate=absent / possible if possible else 0.0,
        persistent_absence=_share(line["pa"] if line else 0, pupils),
        severe_absence=_share(line["sa"] if line else 0, pupils),
        cohort=which,
        items=[
            schemas.PupilFigures(
                upn=r["upn"],
                possible_sessions=r["possible_sessions"],
                authorised_absence_sessions=r["authorised_absence_sessions"],
                unauthorised_absence_sessions=r["unauthorised_absence_sessions"],
                absence_rate=float(r["rate"]),
            )
            for r in rows
        ],
        next_cursor=_encode_cursor(rows[-1]["rate"], rows[-1]["upn"]) if more else None,
    )


def _encode_cursor(rate: Any, upn: str) -> str:
    return base64.urlsafe_b64encode(f"{rate}|{upn}".encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[Decimal | None, str | None]:
    if cursor is None:
        return None, None
    try:
        rate, upn = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return Decimal(rate), upn
    except (ValueError, ArithmeticError, UnicodeDecodeError):
        raise Unprocessable("invalid-cursor", "The cursor is not one this API returned.") from None


async def la_attendance(session: AsyncSession, la_code: str, year: int) -> schemas.LaAttendance:
    conn = await raw_connection(session)
    urns = [r["urn"] for r in await conn.fetch(f"SELECT urn FROM {SCHEMA}.schools WHERE la_code = $1", la_code)]
    lines = await _lines(session, urns, year) if urns else []
    alerts = await conn.fetch(
        f"SELECT urn, rule_id, count(*) AS n FROM {SCHEMA}.alerts WHERE la_code = $1 AND status = 'raised' "
        "GROUP BY urn, rule_id",
        la_code,
    )
    by_rule: dict[str, int] = defaultdict(int)
    by_school: dict[str, int] = defaultdict(int)
    for a in alerts:
        by_rule[a["rule_id"]] += a["n"]
        by_school[a["urn"]] += a["n"]
    pupils = sum(line["pupils"] for line in lines)
    possible = sum(line["possible"] for line in lines)
    absent = sum(line["absent"] for line in lines)
    return schemas.LaAttendance(
        la_code=la_code,
        academic_year=year,
        pupils=pupils,
        possible_sessions=possible,
        absence_rate=absent / possible if possible else 0.0,
        persistent_absence=_share(sum(line["pa"] for line in lines), pupils),
        severe_absence=_share(sum(line["sa"] for line in lines), pupils),
        raised_alerts=dict(sorted(by_rule.items())),
        schools=[
            schemas.SchoolLine(
                urn=line["urn"],
                pupils=line["pupils"],
                possible_sessions=line["possible"],
                absence_rate=line["absent"] / line["possible"] if line["possible"] else 0.0,
                persistent_absence=line["pa"],
                severe_absence=line["sa"],
                raised_alerts=by_school.get(line["urn"], 0),
            )
            for line in lines
        ],
    )
