"""HTTP API of the CME service: schools notify roll changes; the LA's CME officer tracks every child."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from services.cme import schemas, service
from services.cme.models import CmeCase, School
from services.cme.settings import CmeSettings
from shared import idempotency
from shared.audit import RecordReads
from shared.auth import CurrentPrincipal, Forbidden, Principal, Role
from shared.db import Session
from shared.domain.roll import DELETION_GROUNDS, NotificationPolicy
from shared.errors import NotFound
from shared.params import LaCodePath, RowId, UpnPath, UrnPath, valid_upn

router = APIRouter(prefix="/v1")

WRITE_DESCRIPTION = (
    " Idempotent: posting the same entry again changes nothing (200); posting it with changed fields "
    "amends it (200), with the before, the after, who and why in the entry's audit trail. Send an "
    "`Idempotency-Key` to get the first answer back on a retry."
)


def _settings(request: Request) -> CmeSettings:
    return request.app.state.settings


async def _school(session, principal: Principal, urn: str, *, write: bool = False) -> School:
    """The school, if this credential reaches it."""
    principal.precheck_school(urn, write=write)
    school = await service.get_school(session, urn)
    principal.require_school(urn, school.la_code)
    return school


# ---------------------------------------------------------------- the roll


@router.post(
    "/schools/{urn}/admissions",
    tags=["roll"],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Already on record (unchanged, or amended)"}},
    summary="Notify an addition to the admission register (new pupil return)",
    description="Enters the pupil on the school's roll and stops the addition clock: on time or late against "
    "the LA's deadline. A joiner the register already showed (detected from marks) is converted." + WRITE_DESCRIPTION,
)
async def post_admission(
    urn: UrnPath,
    body: schemas.AdmissionIn,
    request: Request,
    response: Response,
    session: Session,
    principal: CurrentPrincipal,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> schemas.AdmissionOut:
    valid_upn(body.upn)
    school = await _school(session, principal, urn, write=True)

    async def write() -> tuple[schemas.AdmissionOut, bool]:
        written = await service.record_admission(session, _settings(request), school, body, principal)
        return await service.admission_out(session, written.row), written.created

    scope = f"{principal.subject}:{urn}:admissions"
    return await idempotency.write_once(
        session, "cme", scope, idempotency_key, request, response, schemas.AdmissionOut, write
    )


@router.get("/schools/{urn}/admissions", tags=["roll"], summary="The school's admission register, in entry order")
async def list_admissions(
    urn: UrnPath,
    session: Session,
    principal: CurrentPrincipal,
    on_roll: Annotated[bool, Query(description="Only pupils still on roll")] = True,
    cursor: Annotated[RowId | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    await _school(session, principal, urn)
    items, next_cursor = await service.school_roll(session, urn, on_roll, cursor, limit)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/schools/{urn}/admissions/{admission_id}", tags=["roll"], summary="One admission, with its audit trail")
async def get_admission(
    urn: UrnPath, admission_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> dict[str, Any]:
    await _school(session, principal, urn)
    entry = await service.get_admission(session, urn, admission_id)
    reads.record_each([entry])
    return {
        **(await service.admission_out(session, entry)).model_dump(),
        "amendments": await service.amendments(session, "admission", entry.id),
    }


@router.post(
    "/schools/{urn}/deletions",
    tags=["roll"],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Already on record (unchanged, or amended)"}},
    summary="Notify a deletion from the admission register (deletion return)",
    description="Deletes the pupil from the roll on a ground of Regs 2024 reg 9(1) (GET /v1/cme/deletion-grounds); "
    "a missing or unknown ground is rejected with the list of valid ones. A ground that needs the new school "
    "(9(1)(a), (c), (d)) needs `destination.urn`; 9(1)(h) and (i) need the days of absence and reasonable "
    "enquiries by both the school and the LA logged on the pupil's CME case, and are refused (422 "
    "`deletion-not-allowed`, every missing condition listed) until then. A deletion without a known "
    "destination puts the child on the CME register. The return's names and addresses stay in this service."
    + WRITE_DESCRIPTION,
)
async def post_deletion(
    urn: UrnPath,
    body: schemas.DeletionIn,
    request: Request,
    response: Response,
    session: Session,
    principal: CurrentPrincipal,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> schemas.DeletionOut:
    valid_upn(body.upn)
    school = await _school(session, principal, urn, write=True)

    async def write() -> tuple[schemas.DeletionOut, bool]:
        written = await service.record_deletion(session, _settings(request), school, body, principal)
        return await service.deletion_out(session, written.row, principal), written.created

    scope = f"{principal.subject}:{urn}:deletions"
    return await idempotency.write_once(
        session, "cme", scope, idempotency_key, request, response, schemas.DeletionOut, write
    )


@router.get("/schools/{urn}/deletions/{deletion_id}", tags=["roll"], summary="One deletion, with its audit trail")
async def get_deletion(
    urn: UrnPath, deletion_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> dict[str, Any]:
    await _school(session, principal, urn)
    deletion = await service.get_deletion(session, urn, deletion_id)
    reads.record_each([deletion])
    return {
        **(await service.deletion_out(session, deletion, principal)).model_dump(),
        "amendments": await service.amendments(session, "deletion", deletion.id),
    }


@router.get("/cme/deletion-grounds", tags=["roll"], summary="The deletion grounds of Regs 2024 reg 9(1)")
async def deletion_grounds(principal: CurrentPrincipal) -> list[schemas.DeletionGroundOut]:
    return [
        schemas.DeletionGroundOut(
            key=g.key,
            code=g.code,
            name=g.name,
            requires_destination=g.requires_destination,
            requires_enquiries=g.requires_enquiries,
            min_school_days_absent=g.min_school_days_absent,
        )
        for g in DELETION_GROUNDS.values()
    ]


@router.get(
    "/pupils/{upn}/roll",
    tags=["roll"],
    summary="Who joined and who left, to where: one pupil's roll history across the LA",
)
async def pupil_roll(
    upn: UpnPath, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> schemas.RollHistory:
    valid_upn(upn)
    principal.require_role(Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS)
    history = await service.roll_history(session, principal.la_code, upn, principal)
    reads.record_each([*history.admissions, *history.deletions])
    return history


# ---------------------------------------------------------------- notifications


@router.get(
    "/schools/{urn}/notifications/compliance",
    tags=["notifications"],
    summary="The school's returns: on time, late, missing and pending",
    description="Counts every addition and deletion clock started in the period (default: the academic year to "
    "date), and lists the late, missing and pending ones.",
)
async def school_compliance(
    urn: UrnPath,
    session: Session,
    principal: CurrentPrincipal,
    period_from: Annotated[date | None, Query(alias="from")] = None,
    period_to: Annotated[date | None, Query(alias="to")] = None,
) -> schemas.SchoolCompliance:
    school = await _school(session, principal, urn)
    start, end = service.default_period(period_from, period_to)
    return (await service.compliance(session, [school], start, end, with_items=True))[0]


@router.get("/notifications/compliance", tags=["notifications"], summary="Every school's returns in an LA")
async def la_compliance(
    session: Session,
    principal: CurrentPrincipal,
    la_code: Annotated[str | None, Query(pattern=r"^\d{3}$", description="Required for ops")] = None,
    period_from: Annotated[date | None, Query(alias="from")] = None,
    period_to: Annotated[date | None, Query(alias="to")] = None,
) -> schemas.LaCompliance:
    principal.require_role(Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS)
    scoped = principal.la_filter(la_code)
    if scoped is None:
        raise NotFound("la", "Name the LA: ?la_code=")
    start, end = service.default_period(period_from, period_to)
    schools = await service.la_schools(session, scoped)
    return schemas.LaCompliance(
        la_code=scoped,
        period_from=start,
        period_to=end,
        schools=await service.compliance(session, schools, start, end, with_items=False),
    )


@router.get("/cme/policies/{la_code}", tags=["notifications"], summary="The LA's notification deadlines")
async def get_policy(
    la_code: LaCodePath, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.PolicyOut:
    principal.la_filter(la_code)
    return await _policy_out(session, _settings(request), la_code)


@router.put(
    "/cme/policies/{la_code}",
    tags=["notifications"],
    summary="Set the LA's notification deadlines (a new version; clocks started from now use it)",
)
async def put_policy(
    la_code: LaCodePath, body: NotificationPolicy, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.PolicyOut:
    principal.require_la(la_code, Role.LA_OFFICER, Role.OPS)
    await service.put_policy(session, _settings(request), la_code, body, principal.subject)
    return await _policy_out(session, _settings(request), la_code)


async def _policy_out(session, settings: CmeSettings, la_code: str) -> schemas.PolicyOut:
    policy, row = await service.current_policy(session, settings, la_code)
    return schemas.PolicyOut(
        la_code=la_code,
        version=row.version if row else 0,
        policy=policy,
        changed_at=row.changed_at if row else None,
        changed_by=row.changed_by if row else None,
    )


# ---------------------------------------------------------------- CME cases


async def _case(session, principal: Principal, case_id: int) -> CmeCase:
    case = await service.get_case(session, case_id)
    visible = (
        case.urn is not None and case.urn in principal.urns
        if principal.role is Role.SCHOOL
        else principal.role is Role.OPS or case.la_code == principal.la_code
    )
    if not visible:
        raise NotFound("cme-case", f"No CME case {case_id}.")  # other LAs' children do not exist for you
    return case


@router.post(
    "/cme/cases",
    tags=["cme"],
    status_code=status.HTTP_201_CREATED,
    summary="Report a child who may be missing education",
    description="LA officers open a case for any child in their LA; a school for a pupil of its own (`urn`).",
)
async def report_case(
    body: schemas.CaseOpenIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.CaseOut:
    valid_upn(body.upn)
    principal.require_role(Role.LA_OFFICER, Role.SCHOOL)
    if principal.role is Role.SCHOOL:
        if body.urn is None:
            raise Forbidden("A school reports a child on its own roll: give its urn.")
        la_code = (await _school(session, principal, body.urn)).la_code
    else:
        la_code = principal.la_code  # type: ignore[assignment]
        if body.urn is not None:
            await _school(session, principal, body.urn)
    case = await service.open_case(session, _settings(request), la_code, body, principal)
    return schemas.CaseOut.model_validate(case)


@router.get(
    "/cme/cases",
    tags=["cme"],
    summary="The LA's CME register: children who may be missing education, newest first",
)
async def cme_register(
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    filters: Annotated[schemas.CaseFilters, Query()],
) -> schemas.CasePage:
    if filters.urn is not None and principal.role is Role.SCHOOL:
        principal.require_school(filters.urn, None)
    principal.la_filter(filters.la_code)
    page = await service.search_cases(session, filters, principal)
    if filters.upn is not None:  # a look-up of one pupil
        reads.record_each(page.items)
    return page


@router.get("/cme/cases/{case_id}", tags=["cme"], summary="A CME case with its enquiries and log")
async def get_case(
    case_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> schemas.CaseDetail:
    case = await _case(session, principal, case_id)
    reads.record_each([case])
    return await service.case_detail(session, case)


@router.post(
    "/cme/cases/{case_id}/enquiries",
    tags=["cme"],
    status_code=status.HTTP_201_CREATED,
    summary="Log a reasonable enquiry (by the school or the LA, from the credential)",
)
async def log_enquiry(
    case_id: RowId, body: schemas.EnquiryIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.EnquiryOut:
    case = await _case(session, principal, case_id)
    enquiry = await service.log_enquiry(session, _settings(request), case, body, principal)
    return schemas.EnquiryOut.model_validate(enquiry)


@router.post("/cme/cases/{case_id}/close", tags=["cme"], summary="Close a case with where the child is now")
async def close_case(
    case_id: RowId, body: schemas.CaseCloseIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.CaseOut:
    case = await _case(session, principal, case_id)
    return schemas.CaseOut.model_validate(await service.close_case(session, _settings(request), case, body, principal))


@router.get(
    "/cme/worklist",
    tags=["cme"],
    summary="What the CME officer must act on: missing returns, unnotified joiners, unmarked pupils, open cases",
)
async def worklist(
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    la_code: Annotated[str | None, Query(pattern=r"^\d{3}$")] = None,
) -> schemas.Worklist:
    return await service.worklist(session, _settings(request), principal.la_filter(la_code), principal)
