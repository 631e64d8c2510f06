"""HTTP API of the thresholds service: pupils' figures, alerts with their evidence, LA policies."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from services.thresholds import schemas, service
from services.thresholds.settings import ThresholdsSettings
from shared.audit import RecordReads
from shared.auth import CurrentPrincipal, Principal, Role
from shared.db import Session
from shared.domain.calendar import academic_year as current_academic_year
from shared.domain.thresholds import PRESETS, PolicyDocument
from shared.errors import NotFound
from shared.params import Instant, LaCodePath, RowId, UpnPath, UrnPath, valid_upn
from shared.time import school_today

router = APIRouter(prefix="/v1")


def _settings(request: Request) -> ThresholdsSettings:
    return request.app.state.settings


async def _reach_school(session, principal: Principal, urn: str) -> str:
    """The school's LA code, if this credential reaches the school. A school credential learns
    nothing about other schools: 403 whether or not the URN exists."""
    principal.precheck_school(urn)
    la_code = await service.school_la_code(session, urn)
    principal.require_school(urn, la_code)
    return la_code


@router.get(
    "/schools/{urn}/pupils/{upn}/attendance",
    tags=["attendance"],
    summary="A pupil's attendance figures",
    description=(
        "Possible sessions, attendance and absence by category, rates and the PA/SA flags of the "
        "pupil's enrolment at this school: for the academic year to date by default, for any period "
        "with `from`/`to`, and as they were known at a past instant with `as_of`."
    ),
)
async def pupil_attendance(
    urn: UrnPath,
    upn: UpnPath,
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    from_: Annotated[date | None, Query(alias="from", description="First day of the period")] = None,
    to: Annotated[date | None, Query(description="Last day of the period")] = None,
    as_of: Annotated[
        Instant | None, Query(description="Figures as known at this instant (ISO 8601 with offset)")
    ] = None,
) -> schemas.Attendance:
    valid_upn(upn)
    reads.record(upn, urn, await _reach_school(session, principal, urn))
    return await service.pupil_attendance(session, urn, upn, school_today(), from_, to, as_of)


@router.get(
    "/alerts",
    tags=["alerts"],
    summary="Alerts, newest first",
    description="Filter by LA, school, pupil, rule and status; a school sees its own, an LA its schools'.",
)
async def list_alerts(
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    filters: Annotated[schemas.AlertFilters, Query()],
) -> schemas.AlertPage:
    if filters.la_code is not None and principal.role in (Role.LA_OFFICER, Role.LA_SYSTEM):
        principal.require_la(filters.la_code, Role.LA_OFFICER, Role.LA_SYSTEM)
    if filters.urn is not None and principal.role is Role.SCHOOL:
        principal.require_school(filters.urn, None)
    page = await service.list_alerts(session, filters, principal)
    if filters.upn is not None:  # a look-up of one pupil
        reads.record_each(page.items)
    return page


@router.get("/alerts/{alert_id}", tags=["alerts"], summary="One alert with its evidence")
async def get_alert(
    alert_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> schemas.AlertOut:
    alert = await service.get_alert(session, alert_id)
    if not principal.can_access_school(alert.urn, alert.la_code):
        raise NotFound("alert", f"No alert {alert_id}.")  # do not reveal other schools' alerts
    reads.record_each([alert])
    return service.alert_out(alert)


@router.get("/policies/{la_code}", tags=["policies"], summary="The LA's policy in force")
async def get_policy(la_code: LaCodePath, session: Session, principal: CurrentPrincipal) -> schemas.PolicyOut:
    principal.require_la(la_code, Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS)
    return await service.get_policy(session, la_code)


@router.put(
    "/policies/{la_code}",
    tags=["policies"],
    summary="Set a new version of the LA's policy",
    description=(
        "Stores a new version (the old ones stay, with who changed what and why) and re-evaluates "
        "every pupil of the LA's schools: alerts the new policy no longer supports are cleared with "
        "reason `policy_changed`, new crossings are raised."
    ),
)
async def put_policy(
    la_code: LaCodePath, body: schemas.PolicyIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.PolicyOut:
    principal.require_la(la_code, Role.LA_OFFICER, Role.OPS)
    return await service.put_policy(session, _settings(request), la_code, body, principal)


@router.get("/policy-presets", tags=["policies"], summary="The policy presets shipped with the platform")
async def policy_presets(principal: CurrentPrincipal) -> dict[str, PolicyDocument]:
    return PRESETS


@router.get(
    "/schools/{urn}/attendance",
    tags=["attendance"],
    summary="A school's figures and its PA or SA list",
    description=(
        "The school's academic year to date (default: the current one): pupils, sessions, absence "
        "rate, and how many pupils are persistently (PA) or severely (SA) absent under the policy's "
        "lines; with the list a termly targeting support meeting needs, worst first, paginated."
    ),
)
async def school_attendance(
    urn: UrnPath,
    session: Session,
    principal: CurrentPrincipal,
    academic_year: Annotated[int | None, Query(ge=2000, le=2100, description="Starting year, e.g. 2025")] = None,
    list_: Annotated[Literal["pa", "sa"], Query(alias="list", description="Which list: pa or sa")] = "pa",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> schemas.SchoolAttendance:
    await _reach_school(session, principal, urn)
    year = academic_year if academic_year is not None else current_academic_year(school_today())
    return await service.school_attendance(session, urn, year, list_, cursor, limit)


@router.get(
    "/las/{la_code}/attendance",
    tags=["attendance"],
    summary="An LA's figures across its schools",
    description="Every school of the LA with marks this academic year, PA/SA counts and the alerts raised now.",
)
async def la_attendance(
    la_code: LaCodePath,
    session: Session,
    principal: CurrentPrincipal,
    academic_year: Annotated[int | None, Query(ge=2000, le=2100, description="Starting year, e.g. 2025")] = None,
) -> schemas.LaAttendance:
    principal.require_la(la_code, Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS)
    year = academic_year if academic_year is not None else current_academic_year(school_today())
    return await service.la_attendance(session, la_code, year)


@router.get("/policies/{la_code}/versions", tags=["policies"], summary="Every version of the LA's policy")
async def policy_versions(
    la_code: LaCodePath, session: Session, principal: CurrentPrincipal
) -> list[schemas.PolicyOut]:
    principal.require_la(la_code, Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS)
    return await service.policy_versions(session, la_code)
