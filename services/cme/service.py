"""The admission register, notification clocks, matching and children missing education.

`shared.domain.roll` decides (grounds, deadlines, matching, when a deletion is allowed, when a case
opens); this module stores what happened, keeps the clocks and publishes the events. Every write
about one pupil takes a transaction lock on the UPN, so a school's return, another school's return
and the register stream about the same child never interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.cme import schemas
from services.cme.models import (
    SCHEMA,
    Admission,
    CaseEnquiry,
    CaseEntry,
    CmeCase,
    Deletion,
    NotificationClock,
    NotificationPolicyVersion,
    RollAmendment,
    RollMatch,
    School,
)
from services.cme.settings import CmeSettings
from shared import outbox
from shared.auth import Principal, Role
from shared.db import newest_first, raw_connection
from shared.domain.calendar import SchoolCalendar, academic_year, academic_year_bounds
from shared.domain.roll import (
    DEFAULT_NOTIFICATION_POLICY,
    HAVERING_NOTIFICATION_POLICY,
    NATIONAL_NOTIFICATION_POLICY,
    CmeOutcome,
    DeletionFacts,
    DeletionGround,
    Enquiry,
    EnquiryParty,
    MatchKind,
    NotificationPolicy,
    RollAddition,
    RollDeletion,
    UnknownGround,
    addition_due,
    alert_cme_reason,
    deletion_allowed,
    deletion_cme_reason,
    deletion_due,
    enquiry_window_end,
    ground_for,
    match_roll_changes,
    notification_status,
)
from shared.errors import Conflict, NotFound, Problem, Unprocessable
from shared.events import (
    AlertCleared,
    AlertRaised,
    CloudEvent,
    CmeCaseClosed,
    CmeCaseOpened,
    EnquiryLogged,
    EventData,
    MarkRecorded,
    MarksPurged,
    NotificationDue,
    NotificationOverdue,
    NotificationReceived,
    PupilAdmitted,
    PupilDeleted,
    PupilUnmarked,
    RegisterTaken,
    RollMatched,
    SchoolUpdated,
    UnnotifiedJoiner,
    make_event,
)
from shared.time import school_today

SOURCE = "cme"

POLICY_PRESETS: dict[str, NotificationPolicy] = {
    "default": DEFAULT_NOTIFICATION_POLICY,
    "national": NATIONAL_NOTIFICATION_POLICY,
    "havering": HAVERING_NOTIFICATION_POLICY,
}

# A mark coded Z is the register saying the pupil is not on roll yet: not a joiner.
NOT_ON_ROLL_CODE = "Z"

# Grounds that settle where the child is: a deletion on one closes an open CME case with this outcome.
GROUND_OUTCOMES: dict[str, CmeOutcome] = {
    "elective_home_education": CmeOutcome.ELECTIVE_HOME_EDUCATION,
    "school_attendance_order_revoked": CmeOutcome.ELECTIVE_HOME_EDUCATION,
    "ceasing_compulsory_school_age": CmeOutcome.CEASED_COMPULSORY_SCHOOL_AGE,
    "died": CmeOutcome.OTHER,
    "detained": CmeOutcome.OTHER,
    "permanently_excluded": CmeOutcome.OTHER,
}

OWED = ("pending", "due", "overdue")  # clocks whose return has not arrived
ADMITTED_FIELDS = (
    "admitted_on",
    "nc_year",
    "date_of_birth",
    "characteristics",
    "previous_urn",
    "previous_school",
    "dual_registration",
)
DELETED_FIELDS = (
    "deleted_on",
    "ground",
    "destination_urn",
    "destination_la_code",
    "destination_address",
    "return_details",
)

_EPOCH = date(2000, 1, 1)
UNMARKED_LOOKBACK = timedelta(days=120)


def session_number(day: date, session: str) -> int:
    """Sessions numbered in order (AM before PM) so that 'the last N registers' is a comparison."""
    return (day - _EPOCH).days * 2 + (session == "PM")


def session_day(number: int) -> date:
    return _EPOCH + timedelta(days=number // 2)


@dataclass(frozen=True)
class Written:
    """What a write endpoint returns: the stored row and whether it was created (201) or not (200)."""

    row: Any
    created: bool


# ---------------------------------------------------------------- helpers


async def _lock_pupil(session: AsyncSession, upn: str) -> None:
    conn = await raw_connection(session)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cme.pupil:' || $1))", upn)


async def _publish(session: AsyncSession, data: EventData) -> None:
    key = data.upn  # type: ignore[attr-defined]  # every roll and CME event is about one pupil
    await outbox.enqueue(session, SCHEMA, data.topic, [(key, outbox.encode(make_event(SOURCE, data, subject=key)))])


def _now() -> datetime:
    return datetime.now(UTC)


async def get_school(session: AsyncSession, urn: str) -> School:
    school = await session.get(School, urn)
    if school is None:
        raise NotFound("school", f"School {urn} has not reached the CME service.")
    return school


def _calendar(school: School | None) -> SchoolCalendar:
    return SchoolCalendar.from_dict(school.calendar if school else {})


async def current_policy(
    session: AsyncSession, settings: CmeSettings, la_code: str
) -> tuple[NotificationPolicy, NotificationPolicyVersion | None]:
    row = (
        await session.execute(
            select(NotificationPolicyVersion)
            .where(NotificationPolicyVersion.la_code == la_code)
            .order_by(NotificationPolicyVersion.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None:
        return POLICY_PRESETS[settings.notification_policy], None
    return NotificationPolicy.model_validate(row.policy), row


async def put_policy(
    session: AsyncSession, settings: CmeSettings, la_code: str, policy: NotificationPolicy, by: str
) -> NotificationPolicyVersion:
    conn = await raw_connection(session)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cme.policy:' || $1))", la_code)
    _, current = await current_policy(session, settings, la_code)
    row = NotificationPolicyVersion(
        la_code=la_code,
        version=(current.version if current else 0) + 1,
        policy=policy.model_dump(mode="json"),
        changed_at=_now(),
        changed_by=by,
    )
    session.add(row)
    await session.flush()
    return row


def _link(settings: CmeSettings, path: str) -> str:
    return settings.link(path)


# ---------------------------------------------------------------- clocks


async def _due(
    session: AsyncSession, settings: CmeSettings, school: School | None, la_code: str, kind: str, started_on: date
) -> tuple[date, int]:
    """The return's due date under the LA's current policy, and that policy's version (0: default)."""
    policy, version = await current_policy(session, settings, la_code)
    due = addition_due if kind == "addition" else deletion_due
    try:
        due_on = due(
            started_on,
            _calendar(school),
            policy,
            independent=bool(school and school.independent),
            data_sharing=bool(school and school.data_sharing_agreement),
        )
    except ValueError as exc:  # the school's loaded terms end before the deadline could fall
        raise Unprocessable(
            "calendar-has-no-school-days-ahead",
            f"The {kind} return's deadline cannot be counted in school days from {started_on.isoformat()}: "
            f"{exc}. Load the school's coming term dates (PATCH /v1/schools/{{urn}} on the registers service).",
        ) from exc
    return due_on, version.version if version else 0


async def _start_clock(
    session: AsyncSession,
    settings: CmeSettings,
    school: School | None,
    la_code: str,
    *,
    kind: str,
    urn: str,
    upn: str,
    started_on: date,
    admission_id: int | None = None,
    deletion_id: int | None = None,
) -> NotificationClock:
    due_on, policy_version = await _due(session, settings, school, la_code, kind, started_on)
    clock = NotificationClock(
        kind=kind,
        admission_id=admission_id,
        deletion_id=deletion_id,
        urn=urn,
        la_code=la_code,
        upn=upn,
        started_on=started_on,
        due_on=due_on,
        status="pending",
        policy_version=policy_version,
    )
    session.add(clock)
    await session.flush()
    return clock


async def _receive(session: AsyncSession, settings: CmeSettings, clock: NotificationClock, today: date) -> None:
    """The school's return arrived today: the clock stops on time or late."""
    clock.received_on = today
    clock.status = notification_status(clock.due_on, today, today).value
    await session.flush()
    await _publish(
        session,
        NotificationReceived(
            **_clock_fields(settings, clock),
            received_on=today,
            status=clock.status,  # type: ignore[arg-type]
        ),
    )


def _clock_fields(settings: CmeSettings, clock: NotificationClock) -> dict[str, Any]:
    return {
        "clock_id": clock.id,
        "urn": clock.urn,
        "la_code": clock.la_code,
        "upn": clock.upn,
        "notification": clock.kind,
        "started_on": clock.started_on,
        "due_on": clock.due_on,
        "link": _link(settings, f"/v1/schools/{clock.urn}/notifications/compliance"),
    }


async def _clock_of(session: AsyncSession, kind: str, admission_id: int | None, deletion_id: int | None = None):
    query = select(NotificationClock).where(NotificationClock.kind == kind)
    if deletion_id is not None:
        query = query.where(NotificationClock.deletion_id == deletion_id)
    else:
        query = query.where(NotificationClock.admission_id == admission_id)
    return (await session.execute(query)).scalar_one_or_none()


def notification_out(clock: NotificationClock | None) -> schemas.Notification | None:
    if clock is None:
        return None
    return schemas.Notification(
        kind=clock.kind,  # type: ignore[arg-type]
        started_on=clock.started_on,
        due_on=clock.due_on,
        received_on=clock.received_on,
        status=clock.status,  # type: ignore[arg-type]
    )


async def scan(session: AsyncSession, settings: CmeSettings, today: date) -> int | None:
    """Returns owed become due on their due day and overdue (missing) the day after, once each,
    with an event; pupils on roll unmarked in the school's last N registers are flagged. One
    scanner at a time, whichever replica gets there: None when another is scanning."""
    conn = await raw_connection(session)
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('cme.scan'))"):
        return None
    overdue = await conn.fetch(
        f"UPDATE {SCHEMA}.notification_clocks SET status = 'overdue', overdue_at = now() "
        "WHERE status IN ('pending', 'due') AND due_on < $1 RETURNING *",
        today,
    )
    due = await conn.fetch(
        f"UPDATE {SCHEMA}.notification_clocks SET status = 'due' WHERE status = 'pending' AND due_on = $1 RETURNING *",
        today,
    )
    events: list[EventData] = [
        model(**_clock_fields(settings, NotificationClock(**dict(row))))
        for model, rows in ((NotificationOverdue, overdue), (NotificationDue, due))
        for row in rows
    ]
    events += await _flag_unmarked(conn, settings, today)
    for data in events:
        await _publish(session, data)
    return len(events)


async def _flag_unmarked(conn: Any, settings: CmeSettings, today: date) -> list[EventData]:
    """Pupils on roll since before the school's N-th latest register and not marked in any of the
    last N: flagged once, until a mark arrives. Only the last few months' registers are read: a
    school with none since then has no pupils to flag."""
    rows = await conn.fetch(
        f"""
        WITH ranked AS (
            SELECT urn, session, row_number() OVER (PARTITION BY urn ORDER BY session DESC) AS rank
            FROM {SCHEMA}.school_sessions WHERE session >= $2
        ), window_start AS (
            SELECT urn, min(session) AS first_session FROM ranked WHERE rank <= $1 GROUP BY urn HAVING count(*) = $1
        )
        UPDATE {SCHEMA}.admissions a SET unmarked_flagged_at = now()
        FROM window_start w
        WHERE a.urn = w.urn AND a.deleted_on IS NULL AND a.unmarked_flagged_at IS NULL
          AND (a.admitted_on - DATE '2000-01-01') * 2 <= w.first_session
          AND NOT EXISTS (
              SELECT 1 FROM {SCHEMA}.pupil_marks m
              WHERE m.urn = a.urn AND m.upn = a.upn AND m.last_session >= w.first_session
          )
        RETURNING a.id, a.urn, a.la_code, a.upn,
            (SELECT m.last_session FROM {SCHEMA}.pupil_marks m WHERE m.urn = a.urn AND m.upn = a.upn) AS last_session
        """,
        settings.unmarked_sessions,
        session_number(today - UNMARKED_LOOKBACK, "AM"),
    )
    return [
        PupilUnmarked(
            admission_id=row["id"],
            urn=row["urn"],
            la_code=row["la_code"],
            upn=row["upn"],
            sessions=settings.unmarked_sessions,
            last_marked_on=session_day(row["last_session"]) if row["last_session"] is not None else None,
            link=_link(settings, f"/v1/schools/{row['urn']}/admissions/{row['id']}"),
        )
        for row in rows
    ]


# ---------------------------------------------------------------- admissions


def _admission_values(body: schemas.AdmissionIn) -> dict[str, Any]:
    return {
        "admitted_on": body.admitted_on,
        "nc_year": body.nc_year,
        "date_of_birth": body.date_of_birth,
        "characteristics": body.characteristics.model_dump(),
        "previous_urn": body.previous_urn,
        "previous_school": body.previous_school,
        "dual_registration": body.dual_registration,
    }


def _snapshot(row: Any, fields: Sequence[str]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps({name: getattr(row, name) for name in fields}))


async def _amend(
    session: AsyncSession, entry: str, row: Any, values: dict[str, Any], fields: Sequence[str], reason: str, by: str
) -> bool:
    """Apply changed values to an accepted entry with an audit row; False when nothing changed."""
    before = _snapshot(row, fields)
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not changed:
        return False
    for name, value in changed.items():
        setattr(row, name, value)
    row.revision += 1
    row.updated_at = _now()
    session.add(
        RollAmendment(
            entry=entry,
            entry_id=row.id,
            before=before,
            after=_snapshot(row, fields),
            reason=reason,
            amended_at=row.updated_at,
            amended_by=by,
        )
    )
    await session.flush()
    return True


async def _on_roll(session: AsyncSession, urn: str, upn: str) -> Admission | None:
    return (
        await session.execute(
            select(Admission).where(Admission.urn == urn, Admission.upn == upn, Admission.deleted_on.is_(None))
        )
    ).scalar_one_or_none()


async def record_admission(
    session: AsyncSession, settings: CmeSettings, school: School, body: schemas.AdmissionIn, principal: Principal
) -> Written:
    today = school_today()
    if body.admitted_on > today + timedelta(days=366):
        raise Unprocessable("admission-too-far-ahead", "admitted_on is more than a year ahead.")
    await _lock_pupil(session, body.upn)
    values = _admission_values(body)
    # The pupil's entry on this roll: the live one, or (a return sent after the deletion, or a
    # retry) the deleted entry of the same admission date.
    entry = (
        await _on_roll(session, school.urn, body.upn)
        or (
            await session.execute(
                select(Admission)
                .where(
                    Admission.urn == school.urn, Admission.upn == body.upn, Admission.admitted_on == body.admitted_on
                )
                .order_by(Admission.id.desc())
            )
        )
        .scalars()
        .first()
    )
    if entry is not None and entry.source == "detected":
        # The return for a joiner first seen in the register: the clock ran from the earlier of the
        # first mark and the admission date.
        await _amend(
            session,
            "admission",
            entry,
            values | {"source": "notified"},
            (*ADMITTED_FIELDS, "source"),
            "new pupil return received for a joiner detected from the register",
            principal.subject,
        )
        clock = await _clock_of(session, "addition", entry.id)
        if clock is not None and clock.received_on is None:
            if body.admitted_on < clock.started_on:
                clock.started_on = body.admitted_on
                clock.due_on, _ = await _due(session, settings, school, school.la_code, "addition", body.admitted_on)
            await _receive(session, settings, clock, today)
        await _publish_admitted(session, settings, entry)
        return Written(entry, created=False)
    if entry is not None:
        if await _amend(
            session,
            "admission",
            entry,
            values,
            ADMITTED_FIELDS,
            body.amendment_reason or "admission resubmitted with changes",
            principal.subject,
        ):
            await _publish_admitted(session, settings, entry)
        return Written(entry, created=False)
    now = _now()
    entry = Admission(
        urn=school.urn,
        la_code=school.la_code,
        upn=body.upn,
        source="notified",
        recorded_at=now,
        recorded_by=principal.subject,
        updated_at=now,
        revision=1,
        **values,
    )
    session.add(entry)
    await session.flush()
    clock = await _start_clock(
        session,
        settings,
        school,
        school.la_code,
        kind="addition",
        urn=school.urn,
        upn=body.upn,
        started_on=body.admitted_on,
        admission_id=entry.id,
    )
    await _receive(session, settings, clock, today)
    await _publish_admitted(session, settings, entry)
    await _after_admission(session, settings, school, entry)
    return Written(entry, created=True)


async def _publish_admitted(session: AsyncSession, settings: CmeSettings, entry: Admission) -> None:
    await _publish(
        session,
        PupilAdmitted(
            urn=entry.urn,
            la_code=entry.la_code,
            upn=entry.upn,
            revision=entry.revision,
            link=_link(settings, f"/v1/schools/{entry.urn}/admissions/{entry.id}"),
            admission_id=entry.id,
            admitted_on=entry.admitted_on,
            nc_year=entry.nc_year,
            dual_registration=entry.dual_registration,
            source=entry.source,  # type: ignore[arg-type]
        ),
    )


async def _after_admission(
    session: AsyncSession, settings: CmeSettings, school: School | None, entry: Admission
) -> None:
    """A new roll entry: the child is located (open CME case closes), a deletion elsewhere may be
    resolved, and a school the child has left without a deletion owes its deletion return."""
    case = await _open_case(session, entry.la_code, entry.upn)
    if case is not None and (case.urn != entry.urn or case.deletion_id is not None):
        outcome = CmeOutcome.RETURNED_TO_SCHOOL if case.urn == entry.urn else CmeOutcome.FOUND_ON_ROLL_ELSEWHERE
        await _close_case(
            session,
            settings,
            case,
            outcome,
            entry.urn,
            "system",
            {"admission_id": entry.id, "notes": f"On roll at school {entry.urn} from {entry.admitted_on}"},
        )
    await _match(session, settings, entry.la_code, entry.upn)
    if entry.dual_registration:
        return
    elsewhere = (
        await session.execute(
            select(Admission).where(
                Admission.la_code == entry.la_code,
                Admission.upn == entry.upn,
                Admission.urn != entry.urn,
                Admission.deleted_on.is_(None),
                Admission.dual_registration.is_(False),
            )
        )
    ).scalars()
    for other in elsewhere:
        if await _clock_of(session, "deletion", other.id) is None:
            await _start_clock(
                session,
                settings,
                await session.get(School, other.urn),
                other.la_code,
                kind="deletion",
                urn=other.urn,
                upn=other.upn,
                started_on=max(entry.admitted_on, other.admitted_on),
                admission_id=other.id,
            )


# ---------------------------------------------------------------- deletions


def _ground(key: str | None) -> DeletionGround:
    try:
        return ground_for(key)
    except UnknownGround as unknown:
        raise Unprocessable("unknown-deletion-ground", str(unknown), valid_grounds=list(unknown.valid_keys)) from None


async def deletion_facts(
    session: AsyncSession, case: CmeCase | None, school: School, deleted_on: date, body: schemas.DeletionIn
) -> DeletionFacts:
    enquiries: tuple[Enquiry, ...] = ()
    days_absent = 0
    if case is not None:
        rows = (await session.execute(select(CaseEnquiry).where(CaseEnquiry.case_id == case.id))).scalars()
        enquiries = tuple(
            Enquiry(made_on=e.made_on, by=EnquiryParty(e.party), officer=e.officer, method=e.method, outcome=e.outcome)
            for e in rows
        )
        if case.absence_started_on is not None:
            # School days of the run before the deletion date: the deletion may be made on the first
            # school day after the run completes.
            days_absent = _calendar(school).count_school_days(case.absence_started_on, deleted_on - timedelta(days=1))
    return DeletionFacts(
        destination_known=body.destination.known,
        school_days_absent=days_absent,
        enquiries=enquiries,
        believed_unable_to_attend=body.believed_unable_to_attend,
    )


def _deletion_values(body: schemas.DeletionIn, ground: DeletionGround) -> dict[str, Any]:
    return {
        "deleted_on": body.deleted_on,
        "ground": ground.key,
        "ground_code": ground.code,
        "destination_urn": body.destination.urn,
        "destination_la_code": body.destination.la_code,
        "destination_address": body.destination.address,
        "return_details": body.return_details.model_dump() if body.return_details else None,
    }


async def record_deletion(
    session: AsyncSession, settings: CmeSettings, school: School, body: schemas.DeletionIn, principal: Principal
) -> Written:
    ground = _ground(body.ground)
    today = school_today()
    if body.deleted_on > today + timedelta(days=366):
        raise Unprocessable("deletion-too-far-ahead", "deleted_on is more than a year ahead.")
    await _lock_pupil(session, body.upn)
    values = _deletion_values(body, ground)
    entry = await _on_roll(session, school.urn, body.upn)
    if entry is None:
        latest = (
            await session.execute(
                select(Deletion)
                .where(Deletion.urn == school.urn, Deletion.upn == body.upn)
                .order_by(Deletion.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if latest is not None:
            await _check_allowed(session, school, ground, body)
            if latest.matched_admission_id is not None and not body.destination.known:
                # The destination the match found stands unless the school names another.
                values |= {"destination_urn": latest.destination_urn, "destination_la_code": latest.destination_la_code}
            if await _amend(
                session,
                "deletion",
                latest,
                values,
                (*DELETED_FIELDS, "ground_code"),
                body.amendment_reason or "deletion resubmitted with changes",
                principal.subject,
            ):
                if latest.admission_id is not None:
                    admission = await session.get(Admission, latest.admission_id)
                    admission.deleted_on = latest.deleted_on  # type: ignore[union-attr]
                await _publish_deleted(session, settings, latest)
            return Written(latest, created=False)
    elif body.deleted_on < entry.admitted_on:
        raise Unprocessable(
            "deleted-before-admitted",
            f"deleted_on {body.deleted_on} is before the pupil's admission on {entry.admitted_on}.",
        )
    await _check_allowed(session, school, ground, body)
    now = _now()
    deletion = Deletion(
        admission_id=entry.id if entry else None,
        urn=school.urn,
        la_code=school.la_code,
        upn=body.upn,
        recorded_at=now,
        recorded_by=principal.subject,
        updated_at=now,
        revision=1,
        **values,
    )
    session.add(deletion)
    if entry is not None:
        entry.deleted_on = body.deleted_on
        entry.unmarked_flagged_at = None
    await session.flush()
    owed = await _clock_of(session, "deletion", entry.id) if entry else None
    if owed is not None and owed.received_on is None:
        owed.deletion_id = deletion.id
        clock = owed
    else:
        clock = await _start_clock(
            session,
            settings,
            school,
            school.la_code,
            kind="deletion",
            urn=school.urn,
            upn=body.upn,
            started_on=body.deleted_on,
            admission_id=entry.id if entry else None,
            deletion_id=deletion.id,
        )
    await _receive(session, settings, clock, today)
    await _publish_deleted(session, settings, deletion)
    await _match(session, settings, school.la_code, body.upn)
    await _after_deletion(session, settings, deletion, ground, principal.subject)
    return Written(deletion, created=True)


async def _check_allowed(
    session: AsyncSession, school: School, ground: DeletionGround, body: schemas.DeletionIn
) -> None:
    case = await _open_case(session, school.la_code, body.upn)
    reasons = deletion_allowed(ground, await deletion_facts(session, case, school, body.deleted_on, body))
    if reasons:
        raise Unprocessable(
            "deletion-not-allowed",
            f"A deletion on ground {ground.code} ({ground.key}) cannot be made yet: " + "; ".join(reasons) + ".",
            reasons=reasons,
            cme_case_id=case.id if case else None,
        )


async def _publish_deleted(session: AsyncSession, settings: CmeSettings, deletion: Deletion) -> None:
    await _publish(
        session,
        PupilDeleted(
            urn=deletion.urn,
            la_code=deletion.la_code,
            upn=deletion.upn,
            revision=deletion.revision,
            link=_link(settings, f"/v1/schools/{deletion.urn}/deletions/{deletion.id}"),
            deletion_id=deletion.id,
            deleted_on=deletion.deleted_on,
            ground=deletion.ground,
            ground_code=deletion.ground_code,
            destination_known=_destination_known(deletion),
            destination_urn=deletion.destination_urn,
            destination_la_code=deletion.destination_la_code,
        ),
    )


def _destination_known(deletion: Deletion) -> bool:
    return bool(deletion.destination_urn or deletion.destination_la_code or deletion.destination_address)


async def _after_deletion(
    session: AsyncSession, settings: CmeSettings, deletion: Deletion, ground: DeletionGround, by: str
) -> None:
    """Open (or join) a CME case for a child deleted without a known destination; close one the
    ground settles."""
    case = await _open_case(session, deletion.la_code, deletion.upn)
    settled = GROUND_OUTCOMES.get(ground.key)
    if case is not None and settled is not None:
        await _close_case(
            session, settings, case, settled, None, by, {"deletion_id": deletion.id, "ground": ground.key}
        )
        return
    moved_la = deletion.destination_la_code and deletion.destination_la_code != deletion.la_code
    if case is not None and moved_la:
        await _close_case(session, settings, case, CmeOutcome.MOVED_LA, None, by, {"deletion_id": deletion.id})
        return
    reason = deletion_cme_reason(ground, _destination_known(deletion))
    if case is not None:
        case.deletion_id = deletion.id
        await _log(session, case, "deletion", by, {"deletion_id": deletion.id, "ground": ground.key})
    elif reason is not None:
        await _new_case(
            session,
            settings,
            la_code=deletion.la_code,
            urn=deletion.urn,
            upn=deletion.upn,
            reason=reason.value,
            by=by,
            detail={"deletion_id": deletion.id, "ground": ground.key},
            deletion_id=deletion.id,
        )


# ---------------------------------------------------------------- matching


async def _match(session: AsyncSession, settings: CmeSettings, la_code: str, upn: str) -> None:
    """Pair the pupil's roll changes in the LA (the domain decides); store and publish new pairs."""
    admissions = list(
        (await session.execute(select(Admission).where(Admission.la_code == la_code, Admission.upn == upn))).scalars()
    )
    deletions = list(
        (await session.execute(select(Deletion).where(Deletion.la_code == la_code, Deletion.upn == upn))).scalars()
    )
    if len(admissions) + len(deletions) < 2:
        return
    additions = {RollAddition(upn, a.urn, a.admitted_on, a.dual_registration): a for a in admissions}
    removals = {RollDeletion(upn, d.urn, d.deleted_on): d for d in deletions}
    stored = list((await session.execute(select(RollMatch).where(RollMatch.upn == upn))).scalars())
    matched_deletions = {m.deletion_id for m in stored if m.deletion_id is not None}
    used_admissions = {m.admission_id for m in stored if m.kind == MatchKind.TRANSFER.value}
    pairs = {(m.admission_id, m.other_admission_id) for m in stored if m.kind == MatchKind.DUAL_REGISTRATION.value}
    for match in match_roll_changes(removals, additions):
        admission = additions[match.addition]
        if match.kind is MatchKind.TRANSFER:
            deletion = removals[match.deletion]  # type: ignore[index]
            if deletion.id in matched_deletions or admission.id in used_admissions:
                continue  # a pair made earlier stands
            session.add(
                RollMatch(
                    kind=match.kind.value,
                    la_code=la_code,
                    upn=upn,
                    admission_id=admission.id,
                    deletion_id=deletion.id,
                    matched_at=_now(),
                )
            )
            deletion.matched_admission_id = admission.id
            if not _destination_known(deletion):
                deletion.destination_urn, deletion.destination_la_code = admission.urn, la_code
            other_urn, deletion_id = deletion.urn, deletion.id
        else:
            other = additions[match.other_addition]  # type: ignore[index]
            if (admission.id, other.id) in pairs:
                continue
            session.add(
                RollMatch(
                    kind=match.kind.value,
                    la_code=la_code,
                    upn=upn,
                    admission_id=admission.id,
                    other_admission_id=other.id,
                    matched_at=_now(),
                )
            )
            admission, other_urn, deletion_id = other, admission.urn, None
        await session.flush()
        await _publish(
            session,
            RollMatched(
                urn=admission.urn,
                la_code=la_code,
                upn=upn,
                revision=1,
                link=_link(settings, f"/v1/pupils/{upn}/roll"),
                kind=match.kind.value,  # type: ignore[arg-type]
                admission_id=admission.id,
                deletion_id=deletion_id,
                other_urn=other_urn,
            ),
        )


async def roll_history(
    session: AsyncSession, la_code: str | None, upn: str, principal: Principal
) -> schemas.RollHistory:
    admissions = select(Admission).where(Admission.upn == upn).order_by(Admission.admitted_on, Admission.id)
    deletions = select(Deletion).where(Deletion.upn == upn).order_by(Deletion.deleted_on, Deletion.id)
    matches = select(RollMatch).where(RollMatch.upn == upn).order_by(RollMatch.id)
    if la_code is not None:
        admissions = admissions.where(Admission.la_code == la_code)
        deletions = deletions.where(Deletion.la_code == la_code)
        matches = matches.where(RollMatch.la_code == la_code)
    return schemas.RollHistory(
        upn=upn,
        admissions=[await admission_out(session, a) for a in (await session.execute(admissions)).scalars()],
        deletions=[await deletion_out(session, d, principal) for d in (await session.execute(deletions)).scalars()],
        matches=[
            {
                "kind": m.kind,
                "admission_id": m.admission_id,
                "deletion_id": m.deletion_id,
                "other_admission_id": m.other_admission_id,
                "matched_at": m.matched_at.isoformat(),
            }
            for m in (await session.execute(matches)).scalars()
        ],
    )


# ---------------------------------------------------------------- CME cases


async def _open_case(session: AsyncSession, la_code: str, upn: str) -> CmeCase | None:
    return (
        await session.execute(
            select(CmeCase).where(CmeCase.la_code == la_code, CmeCase.upn == upn, CmeCase.status == "open")
        )
    ).scalar_one_or_none()


async def _log(session: AsyncSession, case: CmeCase, kind: str, by: str, detail: dict[str, Any]) -> None:
    session.add(CaseEntry(case_id=case.id, kind=kind, at=_now(), by=by, detail=orjson.loads(orjson.dumps(detail))))
    case.updated_at = _now()
    await session.flush()


def _case_fields(settings: CmeSettings, case: CmeCase) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "la_code": case.la_code,
        "urn": case.urn,
        "upn": case.upn,
        "link": _link(settings, f"/v1/cme/cases/{case.id}"),
    }


async def _new_case(
    session: AsyncSession,
    settings: CmeSettings,
    *,
    la_code: str,
    urn: str | None,
    upn: str,
    reason: str,
    by: str,
    detail: dict[str, Any],
    deletion_id: int | None = None,
    absence_started_on: date | None = None,
) -> CmeCase:
    deletion_allowed_from = None
    if absence_started_on is not None:
        school = await session.get(School, urn) if urn else None
        deletion_allowed_from = enquiry_window_end(absence_started_on, _calendar(school))
    case = CmeCase(
        la_code=la_code,
        urn=urn,
        upn=upn,
        reason=reason,
        status="open",
        opened_on=school_today(),
        opened_by=by,
        deletion_id=deletion_id,
        absence_started_on=absence_started_on,
        deletion_allowed_from=deletion_allowed_from,
        updated_at=_now(),
    )
    session.add(case)
    await session.flush()
    await _log(session, case, "opened", by, {"reason": reason, **detail})
    await _publish(session, CmeCaseOpened(**_case_fields(settings, case), reason=reason))
    return case


async def _close_case(
    session: AsyncSession,
    settings: CmeSettings,
    case: CmeCase,
    outcome: CmeOutcome,
    located_urn: str | None,
    by: str,
    detail: dict[str, Any],
) -> None:
    case.status = "closed"
    case.outcome = outcome.value
    case.located_urn = located_urn
    case.closed_on = school_today()
    case.closed_by = by
    await _log(session, case, "closed", by, {"outcome": outcome.value, "located_urn": located_urn, **detail})
    await _publish(session, CmeCaseClosed(**_case_fields(settings, case), outcome=outcome.value))


async def open_case(
    session: AsyncSession, settings: CmeSettings, la_code: str, body: schemas.CaseOpenIn, principal: Principal
) -> CmeCase:
    await _lock_pupil(session, body.upn)
    existing = await _open_case(session, la_code, body.upn)
    if existing is not None:
        raise Conflict(
            "cme-case-already-open",
            f"Pupil {body.upn} already has an open CME case ({existing.id}).",
            case_id=existing.id,
        )
    return await _new_case(
        session,
        settings,
        la_code=la_code,
        urn=body.urn,
        upn=body.upn,
        reason="reported",
        by=principal.subject,
        detail={"notes": body.notes, "by_role": principal.role.value},
    )


async def get_case(session: AsyncSession, case_id: int) -> CmeCase:
    case = await session.get(CmeCase, case_id)
    if case is None:
        raise NotFound("cme-case", f"No CME case {case_id}.")
    return case


async def log_enquiry(
    session: AsyncSession, settings: CmeSettings, case: CmeCase, body: schemas.EnquiryIn, principal: Principal
) -> CaseEnquiry:
    party = {Role.SCHOOL: EnquiryParty.SCHOOL, Role.LA_OFFICER: EnquiryParty.LA}.get(principal.role)
    if party is None:
        raise Problem(403, "forbidden", "Forbidden", "Enquiries are made by schools and LA officers.")
    if body.made_on > school_today():
        raise Unprocessable("enquiry-in-the-future", f"made_on {body.made_on} is in the future.")
    await _lock_pupil(session, case.upn)
    await session.refresh(case)
    if case.status != "open":
        raise Conflict("cme-case-closed", f"CME case {case.id} is closed.")
    enquiry = CaseEnquiry(
        case_id=case.id,
        made_on=body.made_on,
        party=party.value,
        officer=body.officer,
        method=body.method.value,
        outcome=body.outcome.value,
        notes=body.notes,
        recorded_at=_now(),
        recorded_by=principal.subject,
    )
    session.add(enquiry)
    await session.flush()
    await _log(session, case, "enquiry", principal.subject, {"enquiry_id": enquiry.id, "party": party.value})
    await _publish(
        session,
        EnquiryLogged(
            **_case_fields(settings, case),
            enquiry_id=enquiry.id,
            by=party.value,
            method=enquiry.method,
            outcome=enquiry.outcome,
        ),
    )
    return enquiry


async def close_case(
    session: AsyncSession, settings: CmeSettings, case: CmeCase, body: schemas.CaseCloseIn, principal: Principal
) -> CmeCase:
    principal.require_role(Role.LA_OFFICER)  # the LA runs the CME register (domain.md §7)
    await _lock_pupil(session, case.upn)
    await session.refresh(case)
    if case.status != "open":
        raise Conflict("cme-case-closed", f"CME case {case.id} is already closed ({case.outcome}).")
    if body.outcome in (CmeOutcome.FOUND_ON_ROLL_ELSEWHERE, CmeOutcome.RETURNED_TO_SCHOOL) and not body.located_urn:
        raise Unprocessable("located-urn-required", f"Outcome {body.outcome.value} needs located_urn: the school.")
    await _close_case(session, settings, case, body.outcome, body.located_urn, principal.subject, {"notes": body.notes})
    return case


async def case_detail(session: AsyncSession, case: CmeCase) -> schemas.CaseDetail:
    enquiries = (
        await session.execute(
            select(CaseEnquiry).where(CaseEnquiry.case_id == case.id).order_by(CaseEnquiry.made_on, CaseEnquiry.id)
        )
    ).scalars()
    log = (
        await session.execute(select(CaseEntry).where(CaseEntry.case_id == case.id).order_by(CaseEntry.id))
    ).scalars()
    return schemas.CaseDetail(
        **schemas.CaseOut.model_validate(case).model_dump(),
        enquiries=[schemas.EnquiryOut.model_validate(e) for e in enquiries],
        log=[schemas.CaseEntryOut.model_validate(e) for e in log],
    )


async def search_cases(session: AsyncSession, filters: schemas.CaseFilters, principal: Principal) -> schemas.CasePage:
    rows, next_cursor = await newest_first(
        session,
        principal.scope(select(CmeCase), CmeCase),
        CmeCase.id,
        equal=[
            (CmeCase.la_code, filters.la_code),
            (CmeCase.urn, filters.urn),
            (CmeCase.upn, filters.upn),
            (CmeCase.status, filters.status),
        ],
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return schemas.CasePage(items=[schemas.CaseOut.model_validate(r) for r in rows], next_cursor=next_cursor)


# ---------------------------------------------------------------- the register stream and alerts


async def handle_events(session: AsyncSession, events: Sequence[CloudEvent[Any]], settings: CmeSettings) -> None:
    """Consumer handler for `attendance.marks.v1`, `attendance.registers.v1` and `attendance.alerts.v1`."""
    # Schools first, so that a joiner detected in the same batch gets the school's calendar.
    for event in events:
        if isinstance(event.data, SchoolUpdated):
            await _store_school(session, event.data)
    marks: dict[tuple[str, str], list[Any]] = {}
    sessions: set[tuple[str, int]] = set()
    for event in events:
        data = event.data
        if isinstance(data, MarkRecorded) and data.code != NOT_ON_ROLL_CODE:
            number = session_number(data.date, data.session)
            seen = marks.setdefault((data.urn, data.upn), [data.la_code, number, number])
            seen[1], seen[2] = min(seen[1], number), max(seen[2], number)
        elif isinstance(data, RegisterTaken):
            sessions.add((data.urn, session_number(data.date, data.session)))
        elif isinstance(data, MarksPurged):
            await _purge_returns(session, data)
        elif isinstance(data, AlertRaised):
            await _on_alert(session, settings, data)
        elif isinstance(data, AlertCleared):
            await _on_alert_cleared(session, settings, data)
    if sessions:
        conn = await raw_connection(session)
        urns, numbers = zip(*sessions, strict=True)
        await conn.execute(
            f"INSERT INTO {SCHEMA}.school_sessions (urn, session) SELECT * FROM unnest($1::text[], $2::int[]) "
            "ON CONFLICT DO NOTHING",
            list(urns),
            list(numbers),
        )
    if marks:
        await _apply_marks(session, settings, marks)


async def _store_school(session: AsyncSession, school: SchoolUpdated) -> None:
    conn = await raw_connection(session)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.schools (urn, la_code, independent, data_sharing_agreement, calendar) "
        "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (urn) DO UPDATE SET la_code = excluded.la_code, "
        "independent = excluded.independent, data_sharing_agreement = excluded.data_sharing_agreement, "
        "calendar = excluded.calendar",
        school.urn,
        school.la_code,
        school.independent,
        school.data_sharing_agreement,
        orjson.dumps(school.calendar).decode(),
    )


async def _apply_marks(session: AsyncSession, settings: CmeSettings, marks: dict[tuple[str, str], list[Any]]) -> None:
    """Keep each pupil's first and last marked session; a pupil marked at a school for the first
    time with no admission there is an unnotified joiner."""
    conn = await raw_connection(session)
    keys = sorted(marks)  # a stable order: concurrent batches lock rows alike
    urns = [urn for urn, _ in keys]
    upns = [upn for _, upn in keys]
    first_seen = await conn.fetch(
        f"INSERT INTO {SCHEMA}.pupil_marks AS m (urn, upn, first_session, last_session) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[]) "
        "ON CONFLICT (urn, upn) DO UPDATE SET first_session = least(m.first_session, excluded.first_session), "
        "last_session = greatest(m.last_session, excluded.last_session) "
        "RETURNING urn, upn, first_session, (xmax = 0) AS inserted",
        urns,
        upns,
        [marks[key][1] for key in keys],
        [marks[key][2] for key in keys],
    )
    await conn.execute(
        f"UPDATE {SCHEMA}.admissions a SET unmarked_flagged_at = NULL "
        "FROM unnest($1::text[], $2::text[]) AS s(urn, upn) WHERE a.urn = s.urn AND a.upn = s.upn "
        "AND a.deleted_on IS NULL AND a.unmarked_flagged_at IS NOT NULL",
        urns,
        upns,
    )
    new = [row for row in first_seen if row["inserted"]]
    if not new:
        return
    on_roll = {
        (row["urn"], row["upn"])
        for row in await conn.fetch(
            f"SELECT a.urn, a.upn FROM {SCHEMA}.admissions a JOIN unnest($1::text[], $2::text[]) AS s(urn, upn) "
            "ON a.urn = s.urn AND a.upn = s.upn WHERE a.deleted_on IS NULL",
            [row["urn"] for row in new],
            [row["upn"] for row in new],
        )
    }
    for row in new:
        if (row["urn"], row["upn"]) not in on_roll:
            la_code = marks[(row["urn"], row["upn"])][0]
            await _detect_joiner(session, settings, row["urn"], la_code, row["upn"], session_day(row["first_session"]))


async def _detect_joiner(
    session: AsyncSession, settings: CmeSettings, urn: str, la_code: str, upn: str, first_mark_on: date
) -> None:
    await _lock_pupil(session, upn)
    if await _on_roll(session, urn, upn) is not None:
        return  # the school's return arrived meanwhile
    school = await session.get(School, urn)
    now = _now()
    entry = Admission(
        urn=urn,
        la_code=la_code,
        upn=upn,
        source="detected",
        admitted_on=first_mark_on,
        first_mark_on=first_mark_on,
        characteristics={},
        dual_registration=False,
        revision=1,
        recorded_at=now,
        recorded_by="system",
        updated_at=now,
    )
    session.add(entry)
    await session.flush()
    clock = await _start_clock(
        session,
        settings,
        school,
        la_code,
        kind="addition",
        urn=urn,
        upn=upn,
        started_on=first_mark_on,
        admission_id=entry.id,
    )
    await _publish_admitted(session, settings, entry)
    await _publish(
        session,
        UnnotifiedJoiner(
            admission_id=entry.id,
            urn=urn,
            la_code=la_code,
            upn=upn,
            first_mark_on=first_mark_on,
            due_on=clock.due_on,
            link=_link(settings, f"/v1/schools/{urn}/admissions/{entry.id}"),
        ),
    )
    await _after_admission(session, settings, school, entry)


async def _purge_returns(session: AsyncSession, purged: MarksPurged) -> None:
    """Names and addresses go with the register entries they belong to (domain.md §6)."""
    conn = await raw_connection(session)
    await conn.execute(
        f"UPDATE {SCHEMA}.deletions SET return_details = NULL, destination_address = NULL "
        "WHERE urn = $1 AND deleted_on < $2 AND (return_details IS NOT NULL OR destination_address IS NOT NULL)",
        purged.urn,
        purged.before,
    )


async def _on_alert(session: AsyncSession, settings: CmeSettings, alert: AlertRaised) -> None:
    reason = alert_cme_reason(alert.rule_id)
    if reason is None:
        return
    await _lock_pupil(session, alert.upn)
    detail = {"alert_id": alert.alert_id, "rule_id": alert.rule_id, "from": alert.window_from, "to": alert.window_to}
    case = await _open_case(session, alert.la_code, alert.upn)
    if case is None:
        await _new_case(
            session,
            settings,
            la_code=alert.la_code,
            urn=alert.urn,
            upn=alert.upn,
            reason=reason.value,
            by="system",
            detail=detail,
            absence_started_on=alert.window_from,
        )
        return
    if case.absence_started_on is None and case.urn == alert.urn:
        case.absence_started_on = alert.window_from
        case.deletion_allowed_from = enquiry_window_end(
            alert.window_from, _calendar(await session.get(School, alert.urn))
        )
    await _log(session, case, "alert", "system", detail)


async def _on_alert_cleared(session: AsyncSession, settings: CmeSettings, alert: AlertCleared) -> None:
    """The run of absence that opened the case ended (the pupil came back) or was re-coded away:
    a case the alert opened closes, unless the pupil has been deleted meanwhile."""
    if alert_cme_reason(alert.rule_id) is None:
        return
    await _lock_pupil(session, alert.upn)
    case = await _open_case(session, alert.la_code, alert.upn)
    if case is None or case.urn != alert.urn:
        return
    detail = {"alert_id": alert.alert_id, "rule_id": alert.rule_id, "cleared": alert.reason}
    if case.reason != alert.rule_id or case.deletion_id is not None or alert.reason == "policy_changed":
        await _log(session, case, "alert_cleared", "system", detail)
        return
    outcome = CmeOutcome.RETURNED_TO_SCHOOL if alert.reason == "condition_ended" else CmeOutcome.OTHER
    await _close_case(
        session,
        settings,
        case,
        outcome,
        alert.urn if outcome is CmeOutcome.RETURNED_TO_SCHOOL else None,
        "system",
        detail,
    )


# ---------------------------------------------------------------- reads


async def admission_out(session: AsyncSession, entry: Admission) -> schemas.AdmissionOut:
    out = schemas.AdmissionOut.model_validate(entry)
    out.notification = notification_out(await _clock_of(session, "addition", entry.id))
    return out


async def deletion_out(session: AsyncSession, deletion: Deletion, principal: Principal) -> schemas.DeletionOut:
    ground = ground_for(deletion.ground)
    case = (
        (
            await session.execute(
                select(CmeCase.id).where(CmeCase.deletion_id == deletion.id).order_by(CmeCase.id.desc())
            )
        )
        .scalars()
        .first()
    )
    personal = principal.role in (Role.SCHOOL, Role.LA_OFFICER, Role.OPS)
    return schemas.DeletionOut(
        id=deletion.id,
        urn=deletion.urn,
        la_code=deletion.la_code,
        upn=deletion.upn,
        admission_id=deletion.admission_id,
        deleted_on=deletion.deleted_on,
        ground=ground.key,
        ground_code=ground.code,
        ground_name=ground.name,
        destination_urn=deletion.destination_urn,
        destination_la_code=deletion.destination_la_code,
        destination_known=_destination_known(deletion),
        matched_admission_id=deletion.matched_admission_id,
        cme_case_id=case,
        revision=deletion.revision,
        recorded_at=deletion.recorded_at,
        recorded_by=deletion.recorded_by,
        notification=notification_out(await _clock_of(session, "deletion", None, deletion.id)),
        destination_address=deletion.destination_address if personal else None,
        return_details=deletion.return_details if personal else None,
    )


async def get_admission(session: AsyncSession, urn: str, admission_id: int) -> Admission:
    entry = await session.get(Admission, admission_id)
    if entry is None or entry.urn != urn:
        raise NotFound("admission", f"No admission {admission_id} at school {urn}.")
    return entry


async def get_deletion(session: AsyncSession, urn: str, deletion_id: int) -> Deletion:
    deletion = await session.get(Deletion, deletion_id)
    if deletion is None or deletion.urn != urn:
        raise NotFound("deletion", f"No deletion {deletion_id} at school {urn}.")
    return deletion


async def amendments(session: AsyncSession, entry: str, entry_id: int) -> list[dict[str, Any]]:
    rows = (
        await session.execute(
            select(RollAmendment)
            .where(RollAmendment.entry == entry, RollAmendment.entry_id == entry_id)
            .order_by(RollAmendment.id)
        )
    ).scalars()
    return [
        {
            "amended_at": r.amended_at,
            "amended_by": r.amended_by,
            "reason": r.reason,
            "before": r.before,
            "after": r.after,
        }
        for r in rows
    ]


async def school_roll(
    session: AsyncSession, urn: str, on_roll: bool, cursor: int | None, limit: int
) -> tuple[list[schemas.AdmissionOut], int | None]:
    query = select(Admission).where(Admission.urn == urn).order_by(Admission.id).limit(limit + 1)
    if on_roll:
        query = query.where(Admission.deleted_on.is_(None))
    if cursor is not None:
        query = query.where(Admission.id > cursor)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return [await admission_out(session, r) for r in rows], rows[-1].id if more else None


def _counts(statuses: dict[str, int]) -> schemas.ReturnCounts:
    counts = schemas.ReturnCounts(
        on_time=statuses.get("on_time", 0),
        late=statuses.get("late", 0),
        missing=statuses.get("overdue", 0),
        pending=statuses.get("pending", 0) + statuses.get("due", 0),
    )
    counts.total = counts.on_time + counts.late + counts.missing + counts.pending
    decided = counts.on_time + counts.late + counts.missing
    counts.on_time_rate = round(counts.on_time / decided, 4) if decided else None
    return counts


def default_period(period_from: date | None, period_to: date | None) -> tuple[date, date]:
    today = school_today()
    return period_from or academic_year_bounds(academic_year(today))[0], period_to or today


async def compliance(
    session: AsyncSession, schools: Sequence[School], period_from: date, period_to: date, with_items: bool
) -> list[schemas.SchoolCompliance]:
    """On time, late, missing and pending returns per school, for clocks started in the period."""
    urns = [s.urn for s in schools]
    in_period = (
        NotificationClock.urn.in_(urns),
        NotificationClock.started_on >= period_from,
        NotificationClock.started_on <= period_to,
    )
    counts: dict[tuple[str, str], dict[str, int]] = {}
    rows = await session.execute(
        select(NotificationClock.urn, NotificationClock.kind, NotificationClock.status, func.count())
        .where(*in_period)
        .group_by(NotificationClock.urn, NotificationClock.kind, NotificationClock.status)
    )
    for urn, kind, status, count in rows:
        counts.setdefault((urn, kind), {})[status] = count
    items: dict[str, list[schemas.ComplianceItem]] = {}
    if with_items:
        exceptions = await session.execute(
            select(NotificationClock)
            .where(*in_period, NotificationClock.status.in_(("late", *OWED)))
            .order_by(NotificationClock.started_on, NotificationClock.id)
        )
        for clock in exceptions.scalars():
            items.setdefault(clock.urn, []).append(
                schemas.ComplianceItem(
                    clock_id=clock.id,
                    kind=clock.kind,  # type: ignore[arg-type]
                    upn=clock.upn,
                    started_on=clock.started_on,
                    due_on=clock.due_on,
                    received_on=clock.received_on,
                    status="missing" if clock.status == "overdue" else clock.status,
                )
            )
    return [
        schemas.SchoolCompliance(
            urn=school.urn,
            la_code=school.la_code,
            independent=school.independent,
            data_sharing_agreement=school.data_sharing_agreement,
            period_from=period_from,
            period_to=period_to,
            additions=_counts(counts.get((school.urn, "addition"), {})),
            deletions=_counts(counts.get((school.urn, "deletion"), {})),
            exceptions=items.get(school.urn, []),
        )
        for school in schools
    ]


async def la_schools(session: AsyncSession, la_code: str) -> list[School]:
    return list((await session.execute(select(School).where(School.la_code == la_code).order_by(School.urn))).scalars())


async def worklist(
    session: AsyncSession, settings: CmeSettings, la_code: str | None, principal: Principal
) -> schemas.Worklist:
    """What the CME officer must act on: missing returns, joiners not yet notified, pupils no
    longer marked, and open CME cases, oldest first."""
    items: list[schemas.WorkItem] = []
    clocks = principal.scope(select(NotificationClock), NotificationClock).where(NotificationClock.status.in_(OWED))
    cases = principal.scope(select(CmeCase), CmeCase).where(CmeCase.status == "open")
    unmarked = principal.scope(select(Admission), Admission).where(
        Admission.unmarked_flagged_at.is_not(None), Admission.deleted_on.is_(None)
    )
    if la_code is not None:
        clocks = clocks.where(NotificationClock.la_code == la_code)
        cases = cases.where(CmeCase.la_code == la_code)
        unmarked = unmarked.where(Admission.la_code == la_code)
    for clock in (await session.execute(clocks)).scalars():
        detected = clock.kind == "addition"
        if clock.status != "overdue" and not detected:
            continue
        items.append(
            schemas.WorkItem(
                kind="missing_return" if clock.status == "overdue" else "unnotified_joiner",
                urn=clock.urn,
                upn=clock.upn,
                since=clock.started_on,
                due_on=clock.due_on,
                detail=f"{'New pupil' if detected else 'Deletion'} return due {clock.due_on}, not received",
                link=f"/v1/schools/{clock.urn}/notifications/compliance",
            )
        )
    for entry in (await session.execute(unmarked)).scalars():
        items.append(
            schemas.WorkItem(
                kind="unmarked_pupil",
                urn=entry.urn,
                upn=entry.upn,
                since=entry.unmarked_flagged_at.date() if entry.unmarked_flagged_at else None,
                due_on=None,
                detail=f"On roll but not marked in the school's last {settings.unmarked_sessions} registers",
                link=f"/v1/schools/{entry.urn}/admissions/{entry.id}",
            )
        )
    for case in (await session.execute(cases)).scalars():
        items.append(
            schemas.WorkItem(
                kind="cme_case",
                urn=case.urn,
                upn=case.upn,
                since=case.opened_on,
                due_on=case.deletion_allowed_from,
                detail=f"Possible child missing education ({case.reason})",
                link=f"/v1/cme/cases/{case.id}",
            )
        )
    items.sort(key=lambda item: (item.due_on or item.since or date.max, item.kind, item.upn))
    return schemas.Worklist(la_code=la_code, items=items)
