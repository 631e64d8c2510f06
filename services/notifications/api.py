"""HTTP API of the notifications service: subscriptions, the delivery ledger, the AsyncAPI document."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request, Response, status

from services.notifications import schemas, service
from services.notifications.letters import LETTER_KINDS, TEMPLATES
from services.notifications.settings import NotificationsSettings
from shared.asyncapi import asyncapi_document
from shared.audit import RecordReads
from shared.auth import CurrentPrincipal, Role
from shared.db import Session
from shared.errors import Conflict, NotFound, Problem
from shared.params import LaCodePath, RowId
from shared.time import school_today

router = APIRouter(prefix="/v1")


def _settings(request: Request) -> NotificationsSettings:
    return request.app.state.settings


@router.post(
    "/subscriptions",
    tags=["subscriptions"],
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe an endpoint (la_system) or an officer's email to events of your LA",
    description="Webhook deliveries follow Standard Webhooks: `webhook-id` (the event id), `webhook-timestamp`, "
    "`webhook-signature` (HMAC-SHA256 of `id.timestamp.body` with the secret returned here, once). Events of "
    "one pupil arrive in order; failures are retried with exponential backoff and jitter, then dead-lettered.",
)
async def subscribe(
    body: schemas.SubscriptionIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.SubscriptionCreated:
    return await service.create_subscription(session, _settings(request), body, principal)


@router.get("/subscriptions", tags=["subscriptions"], summary="Your LA's subscriptions")
async def subscriptions(session: Session, principal: CurrentPrincipal) -> list[schemas.SubscriptionOut]:
    return [schemas.SubscriptionOut.model_validate(s) for s in await service.list_subscriptions(session, principal)]


@router.get("/subscriptions/{subscription_id}", tags=["subscriptions"], summary="One subscription (never its secret)")
async def subscription(
    subscription_id: RowId, session: Session, principal: CurrentPrincipal
) -> schemas.SubscriptionOut:
    return schemas.SubscriptionOut.model_validate(await service.get_subscription(session, subscription_id, principal))


@router.delete(
    "/subscriptions/{subscription_id}",
    tags=["subscriptions"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unsubscribe; pending deliveries are cancelled",
)
async def unsubscribe(subscription_id: RowId, session: Session, principal: CurrentPrincipal) -> Response:
    principal.require_role(Role.LA_SYSTEM, Role.LA_OFFICER, Role.OPS)
    await service.delete_subscription(session, await service.get_subscription(session, subscription_id, principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/subscriptions/{subscription_id}/secret/rotate",
    tags=["subscriptions"],
    summary="Rotate the signing secret without downtime",
    description="Returns the new secret once. Until `previous_secret_expires_at` every delivery carries two "
    "signatures (new and old), so the receiver can switch to the new secret whenever it is ready.",
)
async def rotate(
    subscription_id: RowId, body: schemas.RotateIn, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.SubscriptionCreated:
    principal.require_role(Role.LA_SYSTEM, Role.OPS)
    subscription = await service.get_subscription(session, subscription_id, principal)
    return await service.rotate_secret(session, _settings(request), subscription, body)


@router.post(
    "/subscriptions/{subscription_id}/replay",
    tags=["subscriptions"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver again every event since an instant (same webhook-ids: receivers can dedupe)",
)
async def replay(
    subscription_id: RowId, body: schemas.ReplayIn, session: Session, principal: CurrentPrincipal
) -> dict[str, int]:
    subscription = await service.get_subscription(session, subscription_id, principal)
    return {"queued": await service.replay(session, subscription, body.since)}


@router.post(
    "/subscriptions/{subscription_id}/digest",
    tags=["subscriptions"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send the worklist digest now (it also goes daily after DIGEST_HOUR)",
)
async def send_digest(
    subscription_id: RowId, request: Request, session: Session, principal: CurrentPrincipal
) -> schemas.DeliveryOut:
    subscription = await service.get_subscription(session, subscription_id, principal)
    if not subscription.digest:
        raise Conflict("no-digest", f"Subscription {subscription_id} does not ask for the digest.")
    scheduler = service.DigestScheduler(_settings(request), request.app.state.sessionmaker)
    casework, cme = scheduler.clients()
    async with casework, cme:
        try:
            digest = await service.build_digest(_settings(request), subscription.la_code, school_today(), casework, cme)
        except (httpx.HTTPError, ValueError) as exc:
            raise Problem(503, "worklists-unreachable", "Worklists unreachable", str(exc)) from None
    await service.queue_digest(session, subscription, digest)
    return schemas.DeliveryOut.model_validate(
        await service.get_delivery_by_event(session, subscription.id, digest["id"])
    )


@router.get("/deliveries", tags=["deliveries"], summary="The delivery ledger, newest first")
async def deliveries(
    session: Session, principal: CurrentPrincipal, filters: Annotated[schemas.DeliveryFilters, Query()]
) -> schemas.DeliveryPage:
    return await service.search_deliveries(session, filters, principal)


@router.get("/deliveries/{delivery_id}", tags=["deliveries"], summary="A delivery with every attempt")
async def delivery(delivery_id: RowId, session: Session, principal: CurrentPrincipal) -> schemas.DeliveryDetail:
    return await service.delivery_detail(session, await service.get_delivery(session, delivery_id, principal))


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    tags=["deliveries"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a dead (or delivered) delivery again",
)
async def redeliver(delivery_id: RowId, session: Session, principal: CurrentPrincipal) -> schemas.DeliveryOut:
    row = await service.redeliver(session, await service.get_delivery(session, delivery_id, principal))
    return schemas.DeliveryOut.model_validate(row)


@router.get(
    "/asyncapi.json",
    tags=["docs"],
    summary="AsyncAPI 3.0: every topic and webhook payload, generated from the event models",
)
async def asyncapi() -> dict[str, Any]:
    return asyncapi_document()


# ---------------------------------------------------------------- letters


@router.get("/letters", tags=["letters"], summary="Stage letters to parents, newest first")
async def letters(
    session: Session,
    principal: CurrentPrincipal,
    case_id: RowId | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|ready|sent|failed)$")] = None,
    cursor: Annotated[RowId | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> schemas.LetterPage:
    rows, next_cursor = await service.search_letters(session, principal, case_id, status, cursor, limit)
    return schemas.LetterPage(items=[schemas.LetterOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/letters/{letter_id}", tags=["letters"], summary="A letter's state")
async def letter(
    letter_id: RowId, session: Session, principal: CurrentPrincipal, reads: RecordReads
) -> schemas.LetterOut:
    row = await service.get_letter(session, letter_id, principal)
    reads.record_each([row])
    return schemas.LetterOut.model_validate(row)


@router.get(
    "/letters/{letter_id}/document",
    tags=["letters"],
    summary="The rendered letter: ?format=pdf (default) or html",
    responses={200: {"content": {"application/pdf": {}, "text/html": {}}}},
)
async def letter_document(
    letter_id: RowId,
    session: Session,
    principal: CurrentPrincipal,
    reads: RecordReads,
    format: Annotated[str, Query(pattern="^(pdf|html)$")] = "pdf",
) -> Response:
    row = await service.get_letter(session, letter_id, principal)
    if row.html is None or row.pdf is None:
        raise Conflict("letter-not-ready", f"Letter {letter_id} is {row.status}: not rendered yet.")
    reads.record_each([row])
    if format == "html":
        return Response(row.html, media_type="text/html; charset=utf-8")
    return Response(
        row.pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="letter-{row.id}-{row.kind}.pdf"'},
    )


@router.post(
    "/letters/{letter_id}/sent",
    tags=["letters"],
    summary="Confirm the letter was posted: recorded on the case as evidence (letter_sent)",
)
async def letter_sent(
    letter_id: RowId,
    body: schemas.LetterSentIn,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
) -> schemas.LetterOut:
    principal.require_role(Role.SCHOOL, Role.LA_OFFICER)
    row = await service.get_letter(session, letter_id, principal)
    authorization = request.headers.get("authorization", "")
    sent = await service.mark_sent(session, _settings(request), row, body, principal, authorization)
    return schemas.LetterOut.model_validate(sent)


@router.get(
    "/letter-templates/{la_code}/{kind}",
    tags=["letters"],
    summary="The template a letter kind renders from in this LA (version 0: the platform's)",
)
async def letter_template(
    la_code: LaCodePath, kind: str, session: Session, principal: CurrentPrincipal
) -> schemas.TemplateOut:
    principal.require_la(la_code, Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS)
    if kind not in LETTER_KINDS:
        raise NotFound("letter-kind", f"No letter {kind!r}; kinds: {', '.join(LETTER_KINDS)}.")
    row = await service.current_template(session, la_code, kind)
    if row is not None:
        return schemas.TemplateOut.model_validate(row)
    body = (TEMPLATES / f"{kind}.html.j2").read_text()
    return schemas.TemplateOut(la_code=la_code, kind=kind, version=0, body=body, created_at=None, created_by=None)


@router.put(
    "/letter-templates/{la_code}/{kind}",
    tags=["letters"],
    summary="Set the LA's template for a letter kind (a new version; checked by rendering a sample)",
)
async def put_letter_template(
    la_code: LaCodePath, kind: str, body: schemas.TemplateIn, session: Session, principal: CurrentPrincipal
) -> schemas.TemplateOut:
    principal.require_la(la_code, Role.LA_OFFICER)
    return schemas.TemplateOut.model_validate(
        await service.put_template(session, la_code, kind, body.body, principal.subject)
    )
