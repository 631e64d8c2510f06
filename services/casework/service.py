"""Casework: cases opened from alerts, moved by officers' recorded actions through the workflow
table of `shared.domain.casework`, with clocks and escalation events.

The table decides what may happen (states, roles, guards, effects); this module stores what did
happen and carries out the effects (clocks, events).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from services.casework import schemas
from services.casework.models import SCHEMA, Case, CaseAction, CaseTransition, Clock, School
from services.casework.settings import CaseworkSettings
from shared import outbox
from shared.auth import Principal, Role
from shared.db import newest_first, raw_connection
from shared.domain.calendar import SchoolCalendar
from shared.domain.casework import (
    ACTION_DETAILS,
    ACTION_EFFECTS,
    CLOCK_POLICY_PRESETS,
    STAGE_LETTERS,
    ActionKind,
    Actor,
    CaseFacts,
    CaseState,
    Evidence,
    LegalDecisionKind,
    OpenCase,
    Outcome,
    PenaltyNoticeIssued,
    TransitionRefused,
    apm_follow_up_due,
    apply,
    available_transitions,
    facts_from_actions,
    letter_due,
    penalty_notice_amounts,
    review_due,
)
from shared.errors import Conflict, NotFound, Problem, Unprocessable
from shared.events import (
    AlertRaised,
    CaseClosed,
    CaseEvent,
    CaseOpened,
    CaseStageChanged,
    ClockDue,
    ClockOverdue,
    CloudEvent,
    LegalActionDecided,
    LegalActionProposed,
    ReferralAccepted,
    ReferralDeclined,
    ReferralMade,
    SchoolUpdated,
    make_event,
)
from shared.time import school_today

SOURCE = "casework"

# Which alerts open a case (domain.md §5: "cases open automatically when a policy rule says so").
# Stage 1 opens on the first support-map step where the LA uses the map, otherwise on persistent
# absence; the others open a case if none is open. On an open case an alert is recorded as a note.
OPENING_ALERTS: dict[str, frozenset[str]] = {
    "support_map_days": frozenset({"4_days"}),
    "persistent_absence": frozenset({""}),
    "severe_absence": frozenset({""}),
    "penalty_notice_threshold": frozenset({""}),
}

# An alert that makes the service propose a penalty notice on a case already at Stage 3 (after an
# APM or a warning letter); the table's guards decide whether a proposal is possible at all.
PROPOSES_LEGAL_ACTION = frozenset({"penalty_notice_threshold"})

ACTORS = {Role.SCHOOL: Actor.SCHOOL, Role.LA_OFFICER: Actor.LA_OFFICER, Role.LA_SYSTEM: Actor.SYSTEM}

# The escalation event type each workflow event publishes (anything else: stage changed).
EVENT_TYPES: dict[str, type[CaseEvent]] = {
    "open": CaseOpened,
    "refer_to_ews": ReferralMade,
    "ews_accepted": ReferralAccepted,
    "ews_declined": ReferralDeclined,
    "propose_legal_action": LegalActionProposed,
    "decide_legal_action": LegalActionDecided,
}

LIVE_CLOCKS = ("open", "due", "overdue")  # not yet met or stopped

REFUSAL_STATUS = {"not_allowed": 409, "forbidden_role": 403, "invalid_payload": 422, "missing_evidence": 409}


def actor_for(principal: Principal) -> Actor:
    actor = ACTORS.get(principal.role)
    if actor is None:
        raise Problem(403, "forbidden", "Forbidden", "Ops credentials read casework; schools and LAs act on it.")
    return actor


# ---------------------------------------------------------------- consumer


async def handle_events(session: AsyncSession, events: Sequence[CloudEvent[Any]], settings: CaseworkSettings) -> None:
    """Consumer handler for `attendance.alerts.v1` and `attendance.registers.v1`."""
    for event in events:
        if isinstance(event.data, SchoolUpdated):
            await _store_school(session, event.data)
        elif isinstance(event.data, AlertRaised):
            await _on_alert(session, settings, event.data)


async def _store_school(session: AsyncSession, school: SchoolUpdated) -> None:
    conn = await raw_connection(session)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.schools (urn, la_code, calendar) VALUES ($1, $2, $3::jsonb) "
        "ON CONFLICT (urn) DO UPDATE SET la_code = excluded.la_code, calendar = excluded.calendar",
        school.urn,
        school.la_code,
        orjson.dumps(school.calendar).decode(),
    )


async def _on_alert(session: AsyncSession, settings: CaseworkSettings, alert: AlertRaised) -> None:
    open_case = await _open_case_of(session, alert.urn, alert.upn)
    rule = f"{alert.rule_id} {alert.step}".strip()
    what = f"Alert {alert.alert_id}: {rule} (policy v{alert.policy_version})"
    if open_case is not None:
        await _record(session, open_case, ActionKind.NOTE, school_today(), {"text": what}, "system", Actor.SYSTEM)
        if alert.rule_id in PROPOSES_LEGAL_ACTION:
            await _propose_legal_action(session, settings, open_case, what)
        return
    if alert.step not in OPENING_ALERTS.get(alert.rule_id, frozenset()):
        return
    await open_case_for(
        session,
        settings,
        urn=alert.urn,
        la_code=alert.la_code,
        upn=alert.upn,
        payload=OpenCase(reason=what, alert_rule_id=alert.rule_id),
        by="system",
        actor=Actor.SYSTEM,
        alert_id=alert.alert_id,
        checked=True,
    )


# ---------------------------------------------------------------- cases


async def _open_case_of(session: AsyncSession, urn: str, upn: str) -> Case | None:
    return (
        await session.execute(
            select(Case).where(Case.urn == urn, Case.upn == upn, Case.state != CaseState.CLOSED.value)
        )
    ).scalar_one_or_none()


async def school_la_code(session: AsyncSession, urn: str) -> str:
    school = await session.get(School, urn)
    if school is None:
        raise NotFound("school", f"School {urn} has not reached the casework service.")
    return school.la_code


async def open_case_for(
    session: AsyncSession,
    settings: CaseworkSettings,
    *,
    urn: str,
    la_code: str,
    upn: str,
    payload: OpenCase,
    by: str,
    actor: Actor,
    alert_id: int | None = None,
    checked: bool = False,
) -> Case:
    """Open a Stage 1 case; `checked` when the caller has just looked for an open one."""
    if not checked and await _open_case_of(session, urn, upn) is not None:
        raise Conflict("case-already-open", f"Pupil {upn} already has an open case at school {urn}.")
    outcome = _decide(None, "open", payload, CaseFacts(), actor)
    now = datetime.now(UTC)
    case = Case(
        urn=urn,
        la_code=la_code,
        upn=upn,
        state=outcome.target.value,
        state_entered_on=school_today(),
        opened_at=now,
        updated_at=now,
    )
    session.add(case)
    await session.flush()
    await _after(session, settings, case, outcome, by, actor, alert_id)
    return case


async def get_case(session: AsyncSession, case_id: int) -> Case:
    case = await session.get(Case, case_id)
    if case is None:
        raise NotFound("case", f"No case {case_id}.")
    return case


def _decide(state: CaseState | None, event: str, payload: Any, facts: CaseFacts, actor: Actor) -> Outcome:
    try:
        return apply(state, event, payload, facts, actor)
    except TransitionRefused as refused:
        raise Problem(
            REFUSAL_STATUS[refused.kind],
            refused.kind.replace("_", "-"),
            refused.kind.replace("_", " ").capitalize(),
            refused.message,
            missing_evidence=[{"id": m.id, "message": m.message} for m in refused.missing],
        ) from None


async def case_facts(session: AsyncSession, case: Case) -> CaseFacts:
    actions = (await session.execute(select(CaseAction).where(CaseAction.case_id == case.id))).scalars()
    evidence = [Evidence(ActionKind(a.kind), a.occurred_on, a.details) for a in actions]
    earlier = (
        await session.execute(
            select(CaseAction)
            .join(Case, Case.id == CaseAction.case_id)
            .where(Case.upn == case.upn, Case.id != case.id, CaseAction.kind == ActionKind.LEGAL_DECISION.value)
        )
    ).scalars()
    notices = [
        PenaltyNoticeIssued(date.fromisoformat(a.details["decided_on"]), a.details["parent_ref"])
        for a in earlier
        if a.details.get("decision") == LegalDecisionKind.PENALTY_NOTICE.value
    ]
    return facts_from_actions(
        evidence,
        state=CaseState(case.state),
        state_entered_on=case.state_entered_on,
        previous_state=CaseState(case.previous_state) if case.previous_state else None,
        stage_2_started_on=case.stage_2_started_on,
        investigation_started_on=case.investigation_started_on,
        earlier_penalty_notices=notices,
    )


async def transition(
    session: AsyncSession,
    settings: CaseworkSettings,
    case: Case,
    body: schemas.TransitionIn,
    principal: Principal,
    expected_version: int | None,
) -> Case:
    _check_version(case, expected_version)
    actor = actor_for(principal)
    outcome = _decide(CaseState(case.state), body.event, body.payload, await case_facts(session, case), actor)
    return await _apply(session, settings, case, outcome, principal.subject, actor)


async def _propose_legal_action(session: AsyncSession, settings: CaseworkSettings, case: Case, why: str) -> None:
    """The machine proposes, never decides: a proposal the table refuses (not at Stage 3, no
    enforcement step yet) is left as the note already recorded."""
    payload = {"proposed": LegalDecisionKind.PENALTY_NOTICE.value, "reason": why}
    try:
        outcome = apply(
            CaseState(case.state), "propose_legal_action", payload, await case_facts(session, case), Actor.SYSTEM
        )
    except TransitionRefused:
        return
    await _apply(session, settings, case, outcome, "system", Actor.SYSTEM)


async def _apply(
    session: AsyncSession, settings: CaseworkSettings, case: Case, outcome: Outcome, by: str, actor: Actor
) -> Case:
    """Store an allowed workflow event: its evidence, the new state, the history, the effects."""
    case_id = case.id  # a failed flush expires the object: keep what the error names
    today = school_today()
    if outcome.records is not None:
        await _record(session, case, outcome.records, _occurred_on(outcome.payload, today), outcome.payload, by, actor)
    if outcome.changes_state:
        case.previous_state = outcome.source.value if outcome.source else None
        case.state = outcome.target.value
        case.state_entered_on = today
        if outcome.target is CaseState.STAGE_2 and case.stage_2_started_on is None:
            case.stage_2_started_on = today
    if outcome.event == "ews_accepted":
        case.investigation_started_on = today
    case.close_outcome = outcome.close_outcome.value if outcome.close_outcome else None
    case.updated_at = datetime.now(UTC)
    try:
        await session.flush()
    except StaleDataError:
        raise _stale(case_id) from None
    await _after(session, settings, case, outcome, by, actor, None)
    return case


def _check_version(case: Case, expected: int | None) -> None:
    if expected is not None and expected != case.version:
        raise _stale(case.id, current=case.version)


def _stale(case_id: int, current: int | None = None) -> Problem:
    detail = f"Case {case_id} changed since you read it"
    return Conflict(
        "stale-case",
        detail + (f" (now version {current}); read it again and retry." if current else "; read it again and retry."),
    )


def _occurred_on(payload: BaseModel, default: date) -> date:
    for name in ("held_on", "decided_on", "agreed_on", "posted_on", "paid_on"):
        value = getattr(payload, name, None)
        if isinstance(value, date):
            return value
    return default


async def record_action(
    session: AsyncSession,
    settings: CaseworkSettings,
    case: Case,
    body: schemas.ActionIn,
    principal: Principal,
    expected_version: int | None,
) -> CaseAction:
    _check_version(case, expected_version)
    case_id = case.id  # a failed flush expires the object: keep what the error names
    actor = actor_for(principal)
    if case.state == CaseState.CLOSED.value:
        raise Conflict("case-closed", f"Case {case.id} is closed; reopen it to record more evidence.")
    try:
        details = ACTION_DETAILS[body.kind].model_validate(body.details)
    except ValidationError as exc:
        raise Unprocessable(
            "invalid-evidence",
            f"The details of a {body.kind.value} record are invalid.",
            errors=[
                {"location": ".".join(map(str, e["loc"])), "message": e["msg"], "type": e["type"]} for e in exc.errors()
            ],
        ) from None
    # As for roll returns: nothing is recorded as happening, or planned, more than a year ahead (clocks
    # counted from a date near year 9999 would overflow).
    latest = school_today() + timedelta(days=366)
    dates = [("occurred_on", body.occurred_on), *details]
    ahead = [name for name, value in dates if isinstance(value, date) and value > latest]
    if ahead:
        raise Unprocessable("evidence-too-far-ahead", f"More than a year ahead: {', '.join(ahead)}.")
    action = await _record(session, case, body.kind, body.occurred_on, details, principal.subject, actor)
    case.updated_at = datetime.now(UTC)
    try:
        await session.flush()  # bumps the case's version: evidence changes what guards see
    except StaleDataError:
        raise _stale(case_id) from None
    await _carry_out(session, settings, case, ACTION_EFFECTS.get(body.kind, ()), details, body.kind)
    return action


async def _record(
    session: AsyncSession,
    case: Case,
    kind: ActionKind,
    on: date,
    details: BaseModel | dict[str, Any],
    by: str,
    actor: Actor,
) -> CaseAction:
    stored = details.model_dump(mode="json") if isinstance(details, BaseModel) else details
    action = CaseAction(
        case_id=case.id,
        kind=kind.value,
        occurred_on=on,
        details=stored,
        recorded_at=datetime.now(UTC),
        recorded_by=by,
        recorded_by_role=actor.value,
    )
    session.add(action)
    await session.flush()
    return action


async def _after(
    session: AsyncSession,
    settings: CaseworkSettings,
    case: Case,
    outcome: Outcome,
    by: str,
    actor: Actor,
    alert_id: int | None,
) -> None:
    """History, effects and the escalation event of an applied workflow event."""
    session.add(
        CaseTransition(
            case_id=case.id,
            event=outcome.event,
            from_state=outcome.source.value if outcome.source else None,
            to_state=outcome.target.value,
            payload=outcome.payload.model_dump(mode="json"),
            occurred_at=datetime.now(UTC),
            by=by,
            by_role=actor.value,
            alert_id=alert_id,
        )
    )
    await _carry_out(session, settings, case, outcome.effects, outcome.payload, None)
    if outcome.target is CaseState.CLOSED:
        model: type[CaseEvent] = CaseClosed
    else:
        model = EVENT_TYPES.get(outcome.event, CaseStageChanged)
    if model is CaseStageChanged and not outcome.changes_state:
        return  # a self-loop (a review period extended, an APM held) is not an escalation
    data = model(
        case_id=case.id,
        urn=case.urn,
        la_code=case.la_code,
        upn=case.upn,
        event=outcome.event,
        from_state=outcome.source.value if outcome.source else None,
        state=outcome.target.value,
        link=settings.link(f"/v1/cases/{case.id}"),
    )
    await outbox.enqueue(
        session, SCHEMA, data.topic, [(case.upn, outbox.encode(make_event(SOURCE, data, subject=case.upn)))]
    )


# ---------------------------------------------------------------- clocks


async def _calendar(session: AsyncSession, urn: str) -> SchoolCalendar:
    school = await session.get(School, urn)
    return SchoolCalendar.from_dict(school.calendar if school else {})


async def _carry_out(
    session: AsyncSession,
    settings: CaseworkSettings,
    case: Case,
    effects: Sequence[str],
    payload: BaseModel,
    kind: ActionKind | None,
) -> None:
    policy = CLOCK_POLICY_PRESETS[settings.clock_policy]
    now = datetime.now(UTC)

    def start(clock: str, due_on: date, earliest: date | None = None, detail: str = "") -> None:
        session.add(
            Clock(case_id=case.id, kind=clock, due_on=due_on, earliest_on=earliest, detail=detail, started_at=now)
        )

    async def stop(kinds: Sequence[str] | None, status: str) -> None:
        query = update(Clock).where(Clock.case_id == case.id, Clock.status.in_(LIVE_CLOCKS))
        if kinds is not None:
            query = query.where(Clock.kind.in_(kinds))
        await session.execute(query.values(status=status, ended_at=now))

    for effect in effects:
        if effect == "start_letter_clock":
            letter = STAGE_LETTERS.get(CaseState(case.state))
            if letter is not None:
                due = letter_due(case.state_entered_on, await _calendar(session, case.urn), policy.letter_school_days)
                start(f"{letter.value}_letter", due)
        elif effect == "stop_letter_clock":
            await stop([f"{payload.letter}_letter"], "met")
        elif effect == "start_review_clock":
            held_on = _occurred_on(payload, school_today())
            window = review_due(held_on, policy, await _calendar(session, case.urn))
            review_by = getattr(payload, "review_due", None)
            start("review", review_by or window.latest, earliest=None if review_by else window.earliest)
        elif effect == "stop_review_clock":
            await stop(["review"], "met")
        elif effect == "stop_stage_clocks":
            await stop(["stage_1_letter", "stage_2_letter", "review", "apm_follow_up"], "stopped")
        elif effect == "start_apm_follow_up_clock":
            start("apm_follow_up", apm_follow_up_due(payload.held_on, policy.apm_follow_up_weeks))
        elif effect == "start_payment_clocks":
            facts = await case_facts(session, case)
            earlier = [n.issued_on for n in facts.penalty_notices if n.parent_ref == payload.parent_ref]
            earlier = [d for d in earlier if d != payload.decided_on]
            for due_on, amount in penalty_notice_amounts(payload.decided_on, earlier, policy):
                start("penalty_notice_payment", due_on, detail=f"£{amount} if paid by {due_on.isoformat()}")
        elif effect == "stop_payment_clocks":
            await stop(["penalty_notice_payment"], "met")
        # reset_apm_count and count_apm: the count is derived from the APM records themselves.
    await session.flush()


async def scan_clocks(session: AsyncSession, settings: CaseworkSettings, today: date) -> int:
    """Clocks whose window has opened become due, and clocks past their date overdue, once each,
    with an event. One scanner at a time, whichever replica gets there."""
    conn = await raw_connection(session)
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('casework.clocks'))"):
        return 0
    returning = "RETURNING k.case_id, k.kind, k.due_on, c.urn, c.la_code, c.upn"
    overdue = await conn.fetch(
        f"UPDATE {SCHEMA}.clocks k SET status = 'overdue' FROM {SCHEMA}.cases c "
        f"WHERE k.case_id = c.id AND k.status IN ('open', 'due') AND k.due_on < $1 {returning}",
        today,
    )
    due = await conn.fetch(
        f"UPDATE {SCHEMA}.clocks k SET status = 'due' FROM {SCHEMA}.cases c "
        f"WHERE k.case_id = c.id AND k.status = 'open' AND k.earliest_on <= $1 {returning}",
        today,
    )
    messages = [
        (
            r["upn"],
            outbox.encode(
                make_event(
                    SOURCE,
                    model(
                        case_id=r["case_id"],
                        urn=r["urn"],
                        la_code=r["la_code"],
                        upn=r["upn"],
                        clock=r["kind"],
                        due_on=r["due_on"],
                        link=settings.link(f"/v1/cases/{r['case_id']}"),
                    ),
                    subject=r["upn"],
                )
            ),
        )
        for model, rows in ((ClockOverdue, overdue), (ClockDue, due))
        for r in rows
    ]
    await outbox.enqueue(session, SCHEMA, ClockOverdue.topic, messages)
    return len(messages)


# ---------------------------------------------------------------- reads


def case_out(case: Case, principal: Principal | None = None) -> schemas.CaseOut:
    actor = ACTORS.get(principal.role) if principal else None
    return schemas.CaseOut(
        id=case.id,
        urn=case.urn,
        la_code=case.la_code,
        upn=case.upn,
        state=case.state,
        state_entered_on=case.state_entered_on,
        previous_state=case.previous_state,
        close_outcome=case.close_outcome,
        opened_at=case.opened_at,
        updated_at=case.updated_at,
        version=case.version,
        next_events=[t.event for t in available_transitions(CaseState(case.state), actor)] if actor else [],
    )


async def search_cases(session: AsyncSession, filters: schemas.CaseFilters, principal: Principal) -> schemas.CasePage:
    query = principal.scope(select(Case), Case)
    if filters.overdue:
        query = query.where(Case.id.in_(select(Clock.case_id).where(Clock.status == "overdue")))
    rows, next_cursor = await newest_first(
        session,
        query,
        Case.id,
        equal=[
            (Case.la_code, filters.la_code),
            (Case.urn, filters.urn),
            (Case.upn, filters.upn),
            (Case.state, filters.state),
        ],
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return schemas.CasePage(items=[case_out(r, principal) for r in rows], next_cursor=next_cursor)


async def worklist(
    session: AsyncSession, due_before: date, principal: Principal, la_code: str | None
) -> schemas.Worklist:
    query = (
        principal.scope(select(Clock, Case).join(Case, Case.id == Clock.case_id), Case)
        .where(Clock.status.in_(LIVE_CLOCKS), Clock.due_on <= due_before)
        .order_by(Clock.due_on, Clock.id)
    )
    if la_code is not None:
        query = query.where(Case.la_code == la_code)
    items = [
        schemas.WorkItem(
            case_id=case.id,
            urn=case.urn,
            upn=case.upn,
            state=case.state,
            clock=clock.kind,
            earliest_on=clock.earliest_on,
            due_on=clock.due_on,
            overdue=clock.status == "overdue",
            detail=clock.detail,
        )
        for clock, case in (await session.execute(query)).all()
    ]
    return schemas.Worklist(due_before=due_before, items=items)


async def timeline(session: AsyncSession, case: Case) -> list[schemas.TimelineEntry]:
    actions = (await session.execute(select(CaseAction).where(CaseAction.case_id == case.id))).scalars()
    moves = (await session.execute(select(CaseTransition).where(CaseTransition.case_id == case.id))).scalars()
    entries = [
        schemas.TimelineEntry(
            at=a.recorded_at, on=a.occurred_on, what="evidence", kind=a.kind, by=a.recorded_by, details=a.details
        )
        for a in actions
    ] + [
        schemas.TimelineEntry(
            at=t.occurred_at,
            on=t.occurred_at.date(),
            what="transition",
            kind=t.event,
            by=t.by,
            details={"from": t.from_state, "to": t.to_state, **t.payload},
        )
        for t in moves
    ]
    return sorted(entries, key=lambda e: (e.at, e.what))


async def evidence_bundle(session: AsyncSession, case: Case) -> schemas.EvidenceBundle:
    clocks = (await session.execute(select(Clock).where(Clock.case_id == case.id).order_by(Clock.id))).scalars()
    return schemas.EvidenceBundle(
        case=case_out(case),
        timeline=await timeline(session, case),
        clocks=[
            schemas.ClockOut(kind=c.kind, earliest_on=c.earliest_on, due_on=c.due_on, status=c.status, detail=c.detail)
            for c in clocks
        ],
        generated_at=datetime.now(UTC),
    )


def bundle_html(bundle: schemas.EvidenceBundle) -> str:
    """A printable rendering of the bundle (for a Stage 3 referral or court)."""
    e = html.escape
    case = bundle.case
    rows = "".join(
        f"<tr><td>{entry.on}</td><td>{e(entry.what)}</td><td>{e(entry.kind)}</td><td>{e(entry.by)}</td>"
        f"<td>{''.join(f'<div><b>{e(str(k))}</b>: {e(str(v))}</div>' for k, v in entry.details.items())}</td></tr>"
        for entry in bundle.timeline
    )
    clocks = "".join(
        f"<tr><td>{e(c.kind)}</td><td>{c.due_on}</td><td>{e(c.status)}</td><td>{e(c.detail)}</td></tr>"
        for c in bundle.clocks
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Case {case.id} evidence</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;padding:4px;vertical-align:top}"
        "</style></head><body>"
        f"<h1>Attendance case {case.id}</h1><p>School {e(case.urn)} (LA {e(case.la_code)}), pupil {e(case.upn)}; "
        f"{e(case.state)} since {case.state_entered_on}; generated {bundle.generated_at:%Y-%m-%d %H:%M} UTC</p>"
        "<h2>Chronology</h2><table><tr><th>Date</th><th>Record</th><th>Kind</th><th>By</th><th>Details</th></tr>"
        f"{rows}</table><h2>Clocks</h2><table><tr><th>Clock</th><th>Due</th><th>Status</th><th>Detail</th></tr>"
        f"{clocks}</table></body></html>"
    )
