"""Register logic: validation of whole registers, recording with an audit trail, amendments,
the change feed, the school registry, API clients and retention.

Service functions add and flush inside the caller's transaction; they never commit.
The hot path (a whole-school register) uses set-based SQL: one read of the stored register, one
upsert of the changed marks and one outbox row, whatever the register's size.
"""

from __future__ import annotations

import math
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registers import schemas
from services.registers.models import SCHEMA, ApiClient, MarkAmendment, RetentionPurge, School, TokenFailure
from services.registers.settings import RegistersSettings
from shared import outbox
from shared.auth import Principal, Role, hash_secret, validate_binding, verify_secret
from shared.db import raw_connection
from shared.domain.calendar import SchoolCalendar
from shared.domain.codes import (
    LATENESS_CODES,
    SUB_CODE_PATTERN,
    CodeError,
    all_codes,
    code_for,
    codes_in_force,
    session_code_mismatch,
)
from shared.domain.upn import upn_error
from shared.errors import Conflict, NotFound, Problem, TooManyRequests, Unprocessable
from shared.events import (
    MARKS_TOPIC,
    REGISTERS_TOPIC,
    EventEncoder,
    MarkAmended,
    MarkRecorded,
    MarksPurged,
    RegisterTaken,
    SchoolUpdated,
    make_event,
)
from shared.time import school_today

SOURCE = "registers"
DEFAULT_AMENDMENT_REASON = "corrected in MIS"
_SUB_CODE = re.compile(SUB_CODE_PATTERN)


def retention_cutoff(today: date, years: int) -> date:
    """The oldest date still inside the retention period (entries before it are purged)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


# ---------------------------------------------------------------- validation (pure)


@dataclass(frozen=True)
class MarkValues:
    """What makes a mark: a change to any of these is an amendment."""

    code: str
    sub_code: str | None
    minutes_late: int | None
    comment: str | None


def _mark_errors(
    code: str, sub_code: str | None, minutes_late: int | None, on: date, session: str
) -> list[dict[str, Any]]:
    """Problems with a mark's values; locations are relative to the mark."""
    errors: list[dict[str, Any]] = []
    try:
        code_for(code, on)
    except CodeError as exc:
        item: dict[str, Any] = {"location": "code", "message": str(exc), "type": f"{exc.kind.replace('_', '-')}-code"}
        if exc.replacement:
            item["replacement"] = list(exc.replacement)
        errors.append(item)
    else:
        mismatch = session_code_mismatch(code, session)
        if mismatch:
            errors.append({"location": "code", "message": mismatch, "type": "code-session-mismatch"})
        if minutes_late is not None and code not in LATENESS_CODES:
            errors.append(
                {
                    "location": "minutes_late",
                    "message": f"minutes_late is only recorded with L or U, not with {code!r}",
                    "type": "minutes-late-without-lateness",
                }
            )
    if sub_code is not None and not _SUB_CODE.match(sub_code):
        errors.append(
            {
                "location": "sub_code",
                "message": f"sub-code {sub_code!r} must be 1-8 upper-case letters or digits",
                "type": "invalid-sub-code",
            }
        )
    return errors


def _date_errors(on: date, today: date, retention_years: int) -> list[dict[str, Any]]:
    if on > today:
        return [{"location": "date", "message": f"{on} is in the future (today is {today})", "type": "future-date"}]
    cutoff = retention_cutoff(today, retention_years)
    if on < cutoff:
        return [
            {
                "location": "date",
                "message": f"{on} is older than the {retention_years}-year retention period (earliest {cutoff})",
                "type": "beyond-retention",
            }
        ]
    return []


def register_errors(
    register: schemas.RegisterIn, today: date, retention_years: int, max_marks: int
) -> list[dict[str, Any]]:
    """Every reason the register cannot be accepted; empty when it can be. All-or-nothing."""
    errors = _date_errors(register.date, today, retention_years)
    if len(register.marks) > max_marks:
        errors.append(
            {
                "location": "marks",
                "message": f"{len(register.marks)} marks in one register; at most {max_marks}",
                "type": "too-many-marks",
            }
        )
    first_seen: dict[str, int] = {}
    # A register repeats a handful of codes thousands of times: check each combination once.
    value_errors: dict[tuple[str, str | None, bool], list[dict[str, Any]]] = {}
    for index, mark in enumerate(register.marks):
        problem = upn_error(mark.upn)
        if problem:
            errors.append({"location": f"marks.{index}.upn", "message": problem, "type": "invalid-upn"})
        elif mark.upn in first_seen:
            errors.append(
                {
                    "location": f"marks.{index}.upn",
                    "message": f"UPN appears more than once in this register (first at marks.{first_seen[mark.upn]})",
                    "type": "duplicate-upn",
                }
            )
        else:
            first_seen[mark.upn] = index
        key = (mark.code, mark.sub_code, mark.minutes_late is not None)
        found = value_errors.get(key)
        if found is None:
            found = value_errors[key] = _mark_errors(
                mark.code, mark.sub_code, mark.minutes_late, register.date, register.session
            )
        errors.extend({**item, "location": f"marks.{index}.{item['location']}"} for item in found)
    return errors


def raise_if_invalid(errors: list[dict[str, Any]], what: str) -> None:
    if errors:
        raise Unprocessable(
            f"invalid-{what}",
            f"The {what} was rejected as a whole: {len(errors)} problem(s); nothing was stored.",
            errors=errors,
        )


# ---------------------------------------------------------------- events


class _MarkEvents:
    """The mark events of one write (a register or an amendment): what every event shares is
    built once. `attendance.mark.recorded` for a first mark; `attendance.mark.amended` (with the
    previous code, so consumers apply a delta) for a change."""

    def __init__(self, settings: RegistersSettings, school: School, on: date, session: str, at: datetime) -> None:
        common = {"urn": school.urn, "la_code": school.la_code, "date": on, "session": session, "recorded_at": at}
        self._encoder = EventEncoder(SOURCE, at, common)
        self._on = on
        self._link_head = settings.link(f"/v1/schools/{school.urn}/pupils/")
        self._link_tail = f"/marks?from={on}&to={on}"

    def encode(
        self,
        upn: str,
        values: MarkValues,
        version: int,
        previous: MarkValues | None = None,
        amendment_id: int | None = None,
    ) -> bytes:
        entry = code_for(values.code, self._on)
        fields: dict[str, Any] = {
            "upn": upn,
            "code": values.code,
            "sub_code": values.sub_code,
            "category": entry.category.value,
            "possible": entry.possible,
            "minutes_late": values.minutes_late,
            "change_version": version,
            "link": f"{self._link_head}{upn}{self._link_tail}",
        }
        if previous is None:
            return self._encoder.encode(MarkRecorded, fields, subject=upn)
        before = code_for(previous.code, self._on)
        fields.update(
            previous_code=previous.code,
            previous_sub_code=previous.sub_code,
            previous_category=before.category.value,
            previous_possible=before.possible,
            amendment_id=amendment_id,
        )
        return self._encoder.encode(MarkAmended, fields, subject=upn)


# ---------------------------------------------------------------- registers


async def _lock_school_version(conn, urn: str) -> int:
    """Lock the school row: writes to one school's register are serialised, so change versions
    follow commit order and a pupil's outbox rows follow the order of its changes."""
    return await conn.fetchval(f"SELECT change_version FROM {SCHEMA}.schools WHERE urn = $1 FOR UPDATE", urn)


_UPSERT_MARKS = f"""
INSERT INTO {SCHEMA}.marks (urn, date, session, upn, code, sub_code, minutes_late, comment,
                           recorded_at, recorded_by, submission_id, change_version)
SELECT $1, $2, $3, u.upn, u.code, u.sub_code, u.minutes_late, u.comment, $4, $5, $6, u.version
FROM unnest($7::text[], $8::text[], $9::text[], $10::int[], $11::text[], $12::bigint[])
     AS u(upn, code, sub_code, minutes_late, comment, version)
ON CONFLICT (urn, date, session, upn) DO UPDATE SET
    code = excluded.code, sub_code = excluded.sub_code, minutes_late = excluded.minutes_late,
    comment = excluded.comment, recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by,
    submission_id = excluded.submission_id, change_version = excluded.change_version
"""

_INSERT_AMENDMENTS = f"""
INSERT INTO {SCHEMA}.mark_amendments (urn, date, session, upn, previous_code, previous_sub_code,
    previous_minutes_late, previous_comment, code, sub_code, minutes_late, comment, reason,
    amended_at, amended_by_name, amended_by_position, amended_by_client, source, submission_id)
SELECT $1, $2, $3, u.upn, u.pcode, u.psub, u.plate, u.pcomment, u.code, u.sub, u.late, u.comment,
       $4, $5, $6, $7, $8, $9, $10
FROM unnest($11::text[], $12::text[], $13::text[], $14::int[], $15::text[],
            $16::text[], $17::text[], $18::int[], $19::text[])
     AS u(upn, pcode, psub, plate, pcomment, code, sub, late, comment)
RETURNING upn, id
"""


async def record_register(
    session: AsyncSession,
    settings: RegistersSettings,
    school: School,
    register: schemas.RegisterIn,
    principal: Principal,
) -> schemas.RegisterAccepted:
    raise_if_invalid(
        register_errors(register, school_today(), settings.retention_years, settings.max_marks_per_register),
        "register",
    )
    conn = await raw_connection(session)
    base_version = await _lock_school_version(conn, school.urn)
    stored = await conn.fetch(
        f"SELECT upn, code, sub_code, minutes_late, comment FROM {SCHEMA}.marks "
        "WHERE urn = $1 AND date = $2 AND session = $3 AND upn = ANY($4::text[])",
        school.urn,
        register.date,
        register.session,
        [m.upn for m in register.marks],
    )
    previous = {r["upn"]: MarkValues(r["code"], r["sub_code"], r["minutes_late"], r["comment"]) for r in stored}

    changed: list[tuple[str, MarkValues, MarkValues | None]] = []
    for mark in register.marks:
        values = MarkValues(mark.code, mark.sub_code, mark.minutes_late, mark.comment)
        before = previous.get(mark.upn)
        if before != values:
            changed.append((mark.upn, values, before))

    submission_id = uuid.uuid4()
    now = datetime.now(UTC)
    amended = [(upn, v, b) for upn, v, b in changed if b is not None]
    if changed:
        versions = range(base_version + 1, base_version + 1 + len(changed))
        await conn.execute(
            _UPSERT_MARKS,
            school.urn,
            register.date,
            register.session,
            now,
            principal.subject,
            submission_id,
            [upn for upn, _, _ in changed],
            [v.code for _, v, _ in changed],
            [v.sub_code for _, v, _ in changed],
            [v.minutes_late for _, v, _ in changed],
            [v.comment for _, v, _ in changed],
            list(versions),
        )
        await conn.execute(f"UPDATE {SCHEMA}.schools SET change_version = $2 WHERE urn = $1", school.urn, versions[-1])
        amendment_ids = await _insert_register_amendments(
            conn, school.urn, register, principal, submission_id, now, amended
        )
        events = _MarkEvents(settings, school, register.date, register.session, now)
        messages = [
            (upn, events.encode(upn, values, version, previous=before, amendment_id=amendment_ids.get(upn)))
            for (upn, values, before), version in zip(changed, versions, strict=True)
        ]
        await outbox.enqueue(session, SCHEMA, MARKS_TOPIC, messages)

    accepted = schemas.RegisterAccepted(
        submission_id=submission_id,
        urn=school.urn,
        date=register.date,
        session=register.session,
        marks=len(register.marks),
        new=len(changed) - len(amended),
        unchanged=len(register.marks) - len(changed),
        amended=len(amended),
    )
    taken_by = register.taken_by
    await conn.execute(
        f"INSERT INTO {SCHEMA}.submissions (id, urn, date, session, received_at, client, taken_by_name, "
        "taken_by_position, marks, new, unchanged, amended) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
        submission_id,
        school.urn,
        register.date,
        register.session,
        now,
        principal.subject,
        taken_by.name if taken_by else None,
        taken_by.position if taken_by else None,
        accepted.marks,
        accepted.new,
        accepted.unchanged,
        accepted.amended,
    )
    taken = RegisterTaken(
        urn=school.urn,
        la_code=school.la_code,
        date=register.date,
        session=register.session,
        submission_id=submission_id,
        marks=accepted.marks,
        new=accepted.new,
        unchanged=accepted.unchanged,
        amended=accepted.amended,
        link=settings.link(f"/v1/schools/{school.urn}/registers/{register.date}/{register.session}"),
    )
    await outbox.enqueue(
        session, SCHEMA, REGISTERS_TOPIC, [(school.urn, outbox.encode(make_event(SOURCE, taken, subject=school.urn)))]
    )
    return accepted


async def _insert_register_amendments(
    conn,
    urn: str,
    register: schemas.RegisterIn,
    principal: Principal,
    submission_id: uuid.UUID,
    now: datetime,
    amended: Sequence[tuple[str, MarkValues, MarkValues | None]],
) -> dict[str, int]:
    if not amended:
        return {}
    who = register.taken_by
    rows = await conn.fetch(
        _INSERT_AMENDMENTS,
        urn,
        register.date,
        register.session,
        register.amendment_reason or DEFAULT_AMENDMENT_REASON,
        now,
        who.name if who else principal.subject,
        who.position if who else "MIS integration",
        principal.subject,
        "register",
        submission_id,
        [upn for upn, _, _ in amended],
        [b.code for _, _, b in amended],  # type: ignore[union-attr]
        [b.sub_code for _, _, b in amended],  # type: ignore[union-attr]
        [b.minutes_late for _, _, b in amended],  # type: ignore[union-attr]
        [b.comment for _, _, b in amended],  # type: ignore[union-attr]
        [v.code for _, v, _ in amended],
        [v.sub_code for _, v, _ in amended],
        [v.minutes_late for _, v, _ in amended],
        [v.comment for _, v, _ in amended],
    )
    return {r["upn"]: r["id"] for r in rows}


async def amend_mark(
    session: AsyncSession,
    settings: RegistersSettings,
    school: School,
    upn: str,
    on: date,
    session_name: str,
    amendment: schemas.AmendmentIn,
    principal: Principal,
) -> schemas.AmendmentOut:
    errors = _date_errors(on, school_today(), settings.retention_years)
    if (problem := upn_error(upn)) is not None:
        errors.append({"location": "upn", "message": problem, "type": "invalid-upn"})
    errors += _mark_errors(amendment.code, amendment.sub_code, amendment.minutes_late, on, session_name)
    raise_if_invalid(errors, "amendment")

    conn = await raw_connection(session)
    base_version = await _lock_school_version(conn, school.urn)
    row = await conn.fetchrow(
        f"SELECT code, sub_code, minutes_late, comment FROM {SCHEMA}.marks "
        "WHERE urn = $1 AND date = $2 AND session = $3 AND upn = $4",
        school.urn,
        on,
        session_name,
        upn,
    )
    if row is None:
        raise NotFound("mark", f"No {session_name} mark on {on} for this pupil at school {school.urn}.")
    before = MarkValues(row["code"], row["sub_code"], row["minutes_late"], row["comment"])
    after = MarkValues(amendment.code, amendment.sub_code, amendment.minutes_late, before.comment)
    if after == before:
        raise Conflict("no-change", f"The mark is already {before.code!r}; nothing to amend.")
    now = datetime.now(UTC)
    version = base_version + 1
    record = MarkAmendment(
        urn=school.urn,
        upn=upn,
        date=on,
        session=session_name,
        previous_code=before.code,
        previous_sub_code=before.sub_code,
        previous_minutes_late=before.minutes_late,
        previous_comment=before.comment,
        code=after.code,
        sub_code=after.sub_code,
        minutes_late=after.minutes_late,
        comment=after.comment,
        reason=amendment.reason,
        amended_at=now,
        amended_by_name=amendment.amended_by.name,
        amended_by_position=amendment.amended_by.position,
        amended_by_client=principal.subject,
        source="amendment",
        submission_id=None,
    )
    session.add(record)
    await session.flush()
    await conn.execute(
        f"UPDATE {SCHEMA}.marks SET code = $5, sub_code = $6, minutes_late = $7, recorded_at = $8, "
        "recorded_by = $9, change_version = $10 WHERE urn = $1 AND date = $2 AND session = $3 AND upn = $4",
        school.urn,
        on,
        session_name,
        upn,
        after.code,
        after.sub_code,
        after.minutes_late,
        now,
        principal.subject,
        version,
    )
    await conn.execute(f"UPDATE {SCHEMA}.schools SET change_version = $2 WHERE urn = $1", school.urn, version)
    payload = _MarkEvents(settings, school, on, session_name, now).encode(
        upn, after, version, previous=before, amendment_id=record.id
    )
    await outbox.enqueue(session, SCHEMA, MARKS_TOPIC, [(upn, payload)])
    return amendment_out(record)


def amendment_out(a: MarkAmendment) -> schemas.AmendmentOut:
    return schemas.AmendmentOut(
        id=a.id,
        previous_code=a.previous_code,
        previous_sub_code=a.previous_sub_code,
        previous_minutes_late=a.previous_minutes_late,
        code=a.code,
        sub_code=a.sub_code,
        minutes_late=a.minutes_late,
        reason=a.reason,
        amended_at=a.amended_at,
        amended_by=schemas.Person(name=a.amended_by_name, position=a.amended_by_position),
        source=a.source,  # type: ignore[arg-type]
    )


def _mark_out(row: Any) -> dict[str, Any]:
    entry = code_for(row["code"], row["date"])
    return {
        "upn": row["upn"],
        "date": row["date"],
        "session": row["session"],
        "code": row["code"],
        "sub_code": row["sub_code"],
        "category": entry.category.value,
        "possible": entry.possible,
        "minutes_late": row["minutes_late"],
        "comment": row["comment"],
        "recorded_at": row["recorded_at"],
        "change_version": row["change_version"],
    }


_MARK_COLUMNS = "upn, date, session, code, sub_code, minutes_late, comment, recorded_at, change_version"


async def get_register(session: AsyncSession, urn: str, on: date, session_name: str) -> schemas.RegisterOut:
    conn = await raw_connection(session)
    rows = await conn.fetch(
        f"SELECT {_MARK_COLUMNS} FROM {SCHEMA}.marks WHERE urn = $1 AND date = $2 AND session = $3 ORDER BY upn",
        urn,
        on,
        session_name,
    )
    if not rows:
        raise NotFound("register", f"No {session_name} register on {on} for school {urn}.")
    submissions = await conn.fetch(
        f"SELECT id, received_at, client, taken_by_name, taken_by_position, marks, new, unchanged, amended "
        f"FROM {SCHEMA}.submissions WHERE urn = $1 AND date = $2 AND session = $3 ORDER BY received_at",
        urn,
        on,
        session_name,
    )
    return schemas.RegisterOut(
        urn=urn,
        date=on,
        session=session_name,  # type: ignore[arg-type]
        marks=[schemas.MarkOut(**_mark_out(r)) for r in rows],
        submissions=[dict(s) for s in submissions],
    )


async def pupil_marks(session: AsyncSession, urn: str, upn: str, from_date: date, to_date: date) -> schemas.PupilMarks:
    conn = await raw_connection(session)
    rows = await conn.fetch(
        f"SELECT {_MARK_COLUMNS} FROM {SCHEMA}.marks WHERE urn = $1 AND upn = $2 AND date BETWEEN $3 AND $4 "
        "ORDER BY date, session",
        urn,
        upn,
        from_date,
        to_date,
    )
    history = (
        await session.scalars(
            select(MarkAmendment)
            .where(
                MarkAmendment.urn == urn,
                MarkAmendment.upn == upn,
                MarkAmendment.date.between(from_date, to_date),
            )
            .order_by(MarkAmendment.id)
        )
    ).all()
    by_mark: dict[tuple[date, str], list[schemas.AmendmentOut]] = {}
    for a in history:
        by_mark.setdefault((a.date, a.session), []).append(amendment_out(a))
    marks = [
        schemas.MarkWithHistory(**_mark_out(r), amendments=by_mark.get((r["date"], r["session"]), [])) for r in rows
    ]
    return schemas.PupilMarks(urn=urn, upn=upn, from_date=from_date, to_date=to_date, marks=marks)


async def mark_changes(session: AsyncSession, urn: str, since: int, limit: int) -> schemas.ChangeFeed:
    conn = await raw_connection(session)
    rows = await conn.fetch(
        f"SELECT {_MARK_COLUMNS} FROM {SCHEMA}.marks WHERE urn = $1 AND change_version > $2 "
        "ORDER BY change_version LIMIT $3",
        urn,
        since,
        limit + 1,
    )
    page = rows[:limit]
    return schemas.ChangeFeed(
        urn=urn,
        changes=[schemas.MarkOut(**_mark_out(r)) for r in page],
        next_since=page[-1]["change_version"] if page else since,
        has_more=len(rows) > limit,
    )


def code_table(on: date | None) -> list[schemas.CodeOut]:
    entries = codes_in_force(on) if on else all_codes()
    return [
        schemas.CodeOut(
            code=c.code,
            meaning=c.meaning,
            category=c.category.value,
            possible=c.possible,
            in_force_from=c.in_force_from,
            in_force_until=c.in_force_until,
            replaced_by=list(c.replaced_by),
        )
        for c in entries
    ]


# ---------------------------------------------------------------- schools


def school_out(school: School) -> schemas.SchoolOut:
    return schemas.SchoolOut.model_validate(school)


async def get_school(session: AsyncSession, urn: str) -> School:
    school = await session.get(School, urn)
    if school is None:
        raise NotFound("school", f"No school with URN {urn} is registered.")
    return school


def _calendar_dict(calendar: schemas.CalendarIn | None) -> dict[str, Any]:
    if calendar is None:
        return {"terms": [], "inset_days": [], "closures": []}
    return SchoolCalendar.from_dict(calendar.model_dump(mode="json")).to_dict()


async def _publish_school(session: AsyncSession, settings: RegistersSettings, school: School) -> None:
    data = SchoolUpdated(
        urn=school.urn,
        la_code=school.la_code,
        phase=school.phase,
        independent=school.independent,
        data_sharing_agreement=school.data_sharing_agreement,
        calendar=school.calendar,
        link=settings.link(f"/v1/schools/{school.urn}"),
    )
    await outbox.enqueue(
        session, SCHEMA, REGISTERS_TOPIC, [(school.urn, outbox.encode(make_event(SOURCE, data, subject=school.urn)))]
    )


async def add_school(session: AsyncSession, settings: RegistersSettings, body: schemas.SchoolIn) -> School:
    if await session.get(School, body.urn) is not None:
        raise Conflict("school-exists", f"A school with URN {body.urn} is already registered.")
    school = School(
        urn=body.urn,
        name=body.name,
        la_code=body.la_code,
        phase=body.phase.value,
        independent=body.independent,
        data_sharing_agreement=body.data_sharing_agreement,
        calendar=_calendar_dict(body.calendar),
        change_version=0,
    )
    session.add(school)
    await session.flush()
    await _publish_school(session, settings, school)
    return school


async def update_school(
    session: AsyncSession, settings: RegistersSettings, school: School, patch: schemas.SchoolPatch
) -> School:
    changes = patch.model_dump(exclude_unset=True)
    if "calendar" in changes:
        school.calendar = _calendar_dict(patch.calendar)
        changes.pop("calendar")
    for field, value in changes.items():
        if value is None:
            raise Unprocessable("invalid-school", f"{field} cannot be null")
        setattr(school, field, value.value if hasattr(value, "value") else value)
    school.updated_at = datetime.now(UTC)
    await session.flush()
    await _publish_school(session, settings, school)
    return school


async def list_schools(
    session: AsyncSession, principal: Principal, la_code: str | None, after: str | None, limit: int
) -> tuple[list[School], str | None]:
    query = select(School).order_by(School.urn).limit(limit + 1)
    if principal.role is Role.SCHOOL:
        query = query.where(School.urn.in_(principal.urns))
    elif principal.role is not Role.OPS:
        query = query.where(School.la_code == principal.la_code)
    if la_code:
        query = query.where(School.la_code == la_code)
    if after:
        query = query.where(School.urn > after)
    rows = list((await session.scalars(query)).all())
    page = rows[:limit]
    return page, (page[-1].urn if len(rows) > limit else None)


# ---------------------------------------------------------------- API clients


async def create_client(
    session: AsyncSession, name: str, role: Role, urns: Sequence[str], la_code: str | None
) -> tuple[ApiClient, str]:
    """Register a client; the secret is returned once and stored only as an Argon2 hash."""
    try:
        validate_binding(role, set(urns), la_code)
    except ValueError as exc:
        raise Unprocessable("invalid-client", str(exc)) from exc
    for urn in urns:
        await get_school(session, urn)
    secret = secrets.token_urlsafe(32)
    client = ApiClient(
        client_id="cl_" + secrets.token_hex(8),
        name=name,
        role=role.value,
        urns=sorted(urns),
        la_code=la_code,
        secret_hash=hash_secret(secret),
    )
    session.add(client)
    await session.flush()
    return client, secret


async def list_clients(session: AsyncSession) -> list[ApiClient]:
    return list((await session.scalars(select(ApiClient).order_by(ApiClient.created_at))).all())


async def revoke_client(session: AsyncSession, client_id: str) -> ApiClient:
    client = await session.get(ApiClient, client_id)
    if client is None:
        raise NotFound("client", f"No API client {client_id}.")
    client.revoked_at = client.revoked_at or datetime.now(UTC)
    await session.flush()
    return client


class InvalidClient(Problem):
    def __init__(self) -> None:
        # The same answer for an unknown client, a wrong secret and a revoked client.
        super().__init__(
            401, "invalid-client", "Invalid client credentials", "Unknown client, wrong secret or revoked client."
        )


async def authenticate_client(session: AsyncSession, client_id: str, secret: str) -> ApiClient:
    client = await session.get(ApiClient, client_id)
    if client is None or client.revoked_at is not None or not verify_secret(client.secret_hash, secret):
        raise InvalidClient()
    return client


async def throttle_token_requests(
    session: AsyncSession, settings: RegistersSettings, client_id: str, address: str
) -> None:
    """429 while the client id or the source address has `token_failure_limit` refused requests
    within the window, until the oldest of them leaves it (even with the right secret: guessing
    must not go on at full speed)."""
    window = timedelta(seconds=settings.token_failure_window_seconds)

    def limit_reached(column: Any, value: str) -> Any:
        # The limit-th newest failure in the window, if there are that many.
        return (
            select(TokenFailure.at)
            .where(column == value, TokenFailure.at > func.now() - window)
            .order_by(TokenFailure.at.desc())
            .offset(settings.token_failure_limit - 1)
            .limit(1)
        )

    full = union_all(
        limit_reached(TokenFailure.client_id, client_id), limit_reached(TokenFailure.address, address)
    ).subquery()
    wait = await session.scalar(select(func.max(full.c.at) + window - func.now()))
    if wait is not None:
        raise TooManyRequests(
            "Too many failed token requests for this client or from this address; try again later.",
            retry_after=max(1, math.ceil(wait.total_seconds())),
        )


async def record_token_failure(
    sessionmaker: async_sessionmaker[AsyncSession], settings: RegistersSettings, client_id: str, address: str
) -> None:
    """Count a refused request, in its own transaction (the request's is rolled back with the
    refusal), and drop failures that have left the window."""
    async with sessionmaker() as session, session.begin():
        session.add(TokenFailure(client_id=client_id, address=address))
        window = timedelta(seconds=settings.token_failure_window_seconds)
        await session.execute(delete(TokenFailure).where(TokenFailure.at < func.now() - window))


# ---------------------------------------------------------------- retention


async def purge_expired_marks(
    session: AsyncSession, settings: RegistersSettings, run_by: str, today: date | None = None
) -> RetentionPurge:
    """Delete register entries older than the retention period (audited, announced per school)."""
    cutoff = retention_cutoff(today or school_today(), settings.retention_years)
    conn = await raw_connection(session)
    deleted = await conn.fetch(
        f"WITH gone AS (DELETE FROM {SCHEMA}.marks WHERE date < $1 RETURNING urn) "
        "SELECT urn, count(*) AS n FROM gone GROUP BY urn",
        cutoff,
    )
    amendments = await conn.fetchval(
        f"WITH gone AS (DELETE FROM {SCHEMA}.mark_amendments WHERE date < $1 RETURNING 1) SELECT count(*) FROM gone",
        cutoff,
    )
    submissions = await conn.fetchval(
        f"WITH gone AS (DELETE FROM {SCHEMA}.submissions WHERE date < $1 RETURNING 1) SELECT count(*) FROM gone",
        cutoff,
    )
    purge = RetentionPurge(
        run_by=run_by,
        cutoff=cutoff,
        marks_deleted=sum(r["n"] for r in deleted),
        amendments_deleted=amendments,
        submissions_deleted=submissions,
    )
    session.add(purge)
    schools = {
        s.urn: s
        for s in (await session.scalars(select(School).where(School.urn.in_([r["urn"] for r in deleted])))).all()
    }
    messages = []
    for row in deleted:
        school = schools.get(row["urn"])
        data = MarksPurged(
            urn=row["urn"], la_code=school.la_code if school else "000", before=cutoff, marks_deleted=row["n"]
        )
        messages.append((row["urn"], outbox.encode(make_event(SOURCE, data, subject=row["urn"]))))
    await outbox.enqueue(session, SCHEMA, REGISTERS_TOPIC, messages)
    await session.flush()
    return purge
