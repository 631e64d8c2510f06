"""HTTP API of the casework service: officers and schools work cases; LA systems read them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import HTMLResponse, PlainTextResponse

from services.casework import schemas, service
from services.casework.models import Case
from services.casework.settings import CaseworkSettings
from shared.audit import RecordReads
from shared.auth import CurrentPrincipal, Principal, Role
from shared.db import Session
from shared.domain.casework import WORKFLOW_JSON, OpenCase, mermaid
from shared.errors import NotFound
from shared.params import RowId, valid_upn
from shared.time import school_today

router = APIRouter(prefix="/v1")

IfMatch = Annotated[int | None, Header(alias="If-Match", description="The case version you read; a stale one gets 409")]


def _settings(request: Request) -> CaseworkSettings:
    return request.app.state.settings


async def _case(session, principal: Principal, case_id: int) -> Case:
    case = await service.get_case(session, case_id)
    if not principal.can_access_school(case.urn, case.la_code):
        raise NotFound("case", f"No case {case_id}.")  # other schools' cases do not exist for you
    return case


@router.get("/casework/workflow", tags=["workflow"], summary="The workflow table the service runs")
async def workflow() -> dict[str, Any]:
    return WORKFLOW_JSON()


@router.get(
    "/casework/workflow.mmd",
    tags=["workflow"],
    summary="The workflow as a Mermaid state diagram",
    response_class=PlainTextResponse,
)
async def workflow_diagram() -> str:
    return mermaid()


@router.post("/cases", tags=["cases"], status_code=status.HTTP_201_CREATED, summary="Open a case")
async def open_case(
    body: schemas.CaseOpenIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.CaseOut:
    valid_upn(body.upn)
    la_code = await service.school_la_code(session, body.urn)
    principal.require_school(body.urn, la_code)
    case = await service.open_case_for(
        session,
        _settings(request),
        urn=body.urn,
        la_code=la_code,
        upn=body.upn,
        payload=OpenCase(reason=body.reason),
        by=principal.subject,
        actor=service.actor_for(principal),
    )
    return service.case_out(case, principal)


@router.get("/cases", tags=["cases"], summary="Search cases, newest first")
async def search_cases(
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    filters: Annotated[schemas.CaseFilters, Query()],
) -> schemas.CasePage:
    if filters.urn is not None and principal.role is Role.SCHOOL:
        principal.require_school(filters.urn, None)
    page = await service.search_cases(session, filters, principal)
    if filters.upn is not None:  # a look-up of one pupil
        reads.record_each(page.items)
    return page


@router.get("/cases/{case_id}", tags=["cases"], summary="A case, with the events your role may attempt")
async def get_case(
    case_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> schemas.CaseOut:
    case = await _case(session, principal, case_id)
    reads.record_each([case])
    return service.case_out(case, principal)


@router.post(
    "/cases/{case_id}/actions",
    tags=["cases"],
    status_code=status.HTTP_201_CREATED,
    summary="Record evidence: a contact, a letter, a meeting, a review...",
)
async def record_action(
    case_id: RowId,
    body: schemas.ActionIn,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> schemas.ActionOut:
    case = await _case(session, principal, case_id)
    action = await service.record_action(session, _settings(request), case, body, principal, if_match)
    return schemas.ActionOut(
        id=action.id,
        case_id=case.id,
        kind=action.kind,
        occurred_on=action.occurred_on,
        details=action.details,
        recorded_at=action.recorded_at,
        recorded_by=action.recorded_by,
    )


@router.post(
    "/cases/{case_id}/transitions",
    tags=["cases"],
    summary="Apply a workflow event",
    description=(
        "Moves the case as the workflow table says. Refused with 409 `not-allowed` from the wrong "
        "state, 403 for the wrong role, 422 for a bad payload and 409 `missing-evidence` listing "
        "every missing piece of evidence by id."
    ),
)
async def apply_transition(
    case_id: RowId,
    body: schemas.TransitionIn,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> schemas.CaseOut:
    case = await _case(session, principal, case_id)
    case = await service.transition(session, _settings(request), case, body, principal, if_match)
    return service.case_out(case, principal)


@router.get("/cases/{case_id}/timeline", tags=["cases"], summary="Everything recorded on the case, in order")
async def case_timeline(
    case_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> list[schemas.TimelineEntry]:
    case = await _case(session, principal, case_id)
    reads.record_each([case])
    return await service.timeline(session, case)


@router.get(
    "/cases/{case_id}/evidence",
    tags=["cases"],
    summary="The evidence bundle: JSON, or printable HTML with ?format=html",
    responses={200: {"content": {"text/html": {}}}},
)
async def evidence(
    case_id: RowId,
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    format: Annotated[str, Query(pattern="^(json|html)$")] = "json",
) -> Any:
    case = await _case(session, principal, case_id)
    reads.record_each([case])
    bundle = await service.evidence_bundle(session, case)
    return HTMLResponse(service.bundle_html(bundle)) if format == "html" else bundle


@router.get("/casework/worklist", tags=["worklist"], summary="Clocks due, soonest first; overdue ones flagged")
async def worklist(
    session: Session,
    principal: CurrentPrincipal,
    la_code: Annotated[str | None, Query(pattern=r"^\d{3}$")] = None,
    due_before: Annotated[date | None, Query(description="Default: two weeks from today")] = None,
) -> schemas.Worklist:
    due = due_before or school_today() + timedelta(days=14)
    return await service.worklist(session, due, principal, principal.la_filter(la_code))
