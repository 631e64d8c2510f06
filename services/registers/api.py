"""HTTP API of the registers service: what school MIS systems and ops talk to."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from services.registers import schemas, service
from services.registers.settings import RegistersSettings
from shared import idempotency
from shared.audit import RecordReads
from shared.auth import CurrentPrincipal, Principal, Role, issue_token
from shared.db import Session
from shared.domain.calendar import academic_year, academic_year_bounds
from shared.errors import Problem, Unprocessable
from shared.params import BIGINT_MAX, UpnPath, UrnPath, valid_upn
from shared.time import school_today

SessionPath = Annotated[schemas.SessionName, Path(description="AM or PM")]

router = APIRouter(prefix="/v1")


def _settings(request: Request) -> RegistersSettings:
    return request.app.state.settings


async def _school_for(session, principal: Principal, urn: str, *, write: bool = False):
    """The school, if this credential reaches it."""
    principal.precheck_school(urn, write=write)
    school = await service.get_school(session, urn)
    principal.require_school(urn, school.la_code)
    return school


@router.post(
    "/schools/{urn}/registers",
    tags=["registers"],
    status_code=status.HTTP_201_CREATED,
    summary="Post one session's register",
    description=(
        "One session's marks for a class or the whole school, all-or-nothing: if any mark is invalid "
        "the register is rejected with 422 listing every bad item and why. Re-posting a session "
        "changes nothing for identical marks; a changed mark is recorded as an amendment (original, "
        "amended, reason, when, by whom). Send an `Idempotency-Key` to retry safely."
    ),
)
async def post_register(
    urn: UrnPath,
    body: schemas.RegisterIn,
    request: Request,
    response: Response,
    session: Session,
    principal: CurrentPrincipal,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> schemas.RegisterAccepted:
    school = await _school_for(session, principal, urn, write=True)

    async def write() -> tuple[schemas.RegisterAccepted, bool]:
        return await service.record_register(session, _settings(request), school, body, principal), True

    scope = f"{principal.subject}:{urn}:registers"
    return await idempotency.write_once(
        session, "registers", scope, idempotency_key, request, response, schemas.RegisterAccepted, write
    )


@router.get(
    "/schools/{urn}/registers/{date}/{session_name}",
    tags=["registers"],
    summary="A session's register as stored",
)
async def get_register(
    urn: UrnPath, date: date, session_name: SessionPath, session: Session, principal: CurrentPrincipal
) -> schemas.RegisterOut:
    await _school_for(session, principal, urn)
    return await service.get_register(session, urn, date, session_name)


@router.post(
    "/schools/{urn}/marks/{upn}/{date}/{session_name}/amendments",
    tags=["registers"],
    status_code=status.HTTP_201_CREATED,
    summary="Amend one mark",
    description=(
        "Changes a stored mark and records the amendment as the regulations require: original entry, "
        "amended entry, reason, date, and the name and position of the person making it."
    ),
)
async def amend_mark(
    urn: UrnPath,
    upn: UpnPath,
    date: date,
    session_name: SessionPath,
    body: schemas.AmendmentIn,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
) -> schemas.AmendmentOut:
    school = await _school_for(session, principal, urn, write=True)
    return await service.amend_mark(session, _settings(request), school, upn, date, session_name, body, principal)


@router.get(
    "/schools/{urn}/pupils/{upn}/marks",
    tags=["registers"],
    summary="A pupil's marks with their amendment history",
    description="Default period: the current academic year (1 Aug to 31 Jul) to date.",
)
async def pupil_marks(
    urn: UrnPath,
    upn: UpnPath,
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    from_date: Annotated[date | None, Query(alias="from")] = None,
    to_date: Annotated[date | None, Query(alias="to")] = None,
) -> schemas.PupilMarks:
    school = await _school_for(session, principal, urn)
    valid_upn(upn)
    today = school_today()
    start = from_date or academic_year_bounds(academic_year(today))[0]
    end = to_date or today
    if start > end:
        raise Unprocessable("invalid-period", f"from ({start}) is after to ({end})")
    reads.record(upn, urn, school.la_code)
    return await service.pupil_marks(session, urn, upn, start, end)


@router.get(
    "/schools/{urn}/marks",
    tags=["registers"],
    summary="Change feed of a school's marks",
    description=(
        "Marks created or changed after `since` (a change version), oldest first. Store `next_since` "
        "and call again; versions follow commit order, so nothing is skipped."
    ),
)
async def mark_changes(
    urn: UrnPath,
    session: Session,
    principal: CurrentPrincipal,
    since: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> schemas.ChangeFeed:
    await _school_for(session, principal, urn)
    return await service.mark_changes(session, urn, since, limit)


@router.get("/codes", tags=["codes"], summary="The DfE attendance code table with categories")
async def codes(
    principal: CurrentPrincipal,
    on: Annotated[date | None, Query(description="Only the codes in force on this date")] = None,
) -> list[schemas.CodeOut]:
    return service.code_table(on)


# ---------------------------------------------------------------- schools


@router.post("/schools", tags=["schools"], status_code=status.HTTP_201_CREATED, summary="Register a school (ops)")
async def add_school(
    body: schemas.SchoolIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.SchoolOut:
    principal.require_role(Role.OPS)
    return service.school_out(await service.add_school(session, _settings(request), body))


@router.get("/schools", tags=["schools"], summary="Schools this credential reaches")
async def list_schools(
    session: Session,
    principal: CurrentPrincipal,
    la_code: Annotated[str | None, Query(pattern=schemas.LA_CODE_PATTERN)] = None,
    cursor: Annotated[str | None, Query(pattern=schemas.URN_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> schemas.SchoolList:
    schools, next_cursor = await service.list_schools(session, principal, la_code, cursor, limit)
    return schemas.SchoolList(schools=[service.school_out(s) for s in schools], next_cursor=next_cursor)


@router.get("/schools/{urn}", tags=["schools"], summary="One school")
async def get_school(urn: UrnPath, session: Session, principal: CurrentPrincipal) -> schemas.SchoolOut:
    return service.school_out(await _school_for(session, principal, urn))


@router.patch("/schools/{urn}", tags=["schools"], summary="Change a school's details (ops)")
async def update_school(
    urn: UrnPath, body: schemas.SchoolPatch, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.SchoolOut:
    principal.require_role(Role.OPS)
    school = await service.get_school(session, urn)
    return service.school_out(await service.update_school(session, _settings(request), school, body))


@router.put(
    "/schools/{urn}/calendar",
    tags=["schools"],
    summary="Set a school's term dates, INSET days and closures",
    description="School days drive every window and deadline downstream. The school itself or ops may set them.",
)
async def set_calendar(
    urn: UrnPath, body: schemas.CalendarIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.SchoolOut:
    school = await _school_for(session, principal, urn, write=True)
    patch = schemas.SchoolPatch(calendar=body)
    return service.school_out(await service.update_school(session, _settings(request), school, patch))


# ---------------------------------------------------------------- tokens

_basic = HTTPBasic(auto_error=False)


@router.post(
    "/auth/token",
    tags=["auth"],
    summary="Exchange client credentials for a bearer token",
    description=(
        "OAuth 2.0 client-credentials grant: form fields `grant_type=client_credentials`, `client_id` "
        "and `client_secret` (or HTTP Basic). Clients are created with `attendance client create`. After "
        "`TOKEN_FAILURE_LIMIT` refused requests (default 10) within `TOKEN_FAILURE_WINDOW_SECONDS` (default 60) "
        "for one client id, or from one address, its requests get 429 with `Retry-After` until the oldest "
        "refusal leaves the window."
    ),
    responses={429: {"description": "Too many refused requests", "content": {"application/problem+json": {}}}},
)
async def token(
    request: Request,
    session: Session,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    grant_type: Annotated[str, Form()],
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> schemas.TokenOut:
    if grant_type != "client_credentials":
        raise Problem(400, "unsupported-grant-type", "Unsupported grant type", "Only client_credentials is supported.")
    if basic is not None:
        client_id, client_secret = basic.username, basic.password
    if not client_id or not client_secret:
        raise Problem(400, "invalid-request", "Missing client credentials", "Send client_id and client_secret.")
    settings = _settings(request)
    # Behind a proxy this is the client's address when the proxy is trusted (FORWARDED_ALLOW_IPS).
    address = request.client.host if request.client else "unknown"
    await service.throttle_token_requests(session, settings, client_id, address)
    try:
        client = await service.authenticate_client(session, client_id, client_secret)
    except service.InvalidClient:
        await service.record_token_failure(request.app.state.sessionmaker, settings, client_id, address)
        raise
    access_token = issue_token(
        settings,
        subject=client.client_id,
        role=Role(client.role),
        urns=frozenset(client.urns),
        la_code=client.la_code,
    )
    return schemas.TokenOut(access_token=access_token, expires_in=settings.token_ttl_seconds)
