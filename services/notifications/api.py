"""HTTP API of the notifications service: subscriptions, the delivery ledger, the AsyncAPI document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from services.notifications import schemas, service
from services.notifications.settings import NotificationsSettings
from shared.asyncapi import asyncapi_document
from shared.auth import CurrentPrincipal, Role
from shared.db import Session

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
async def subscription(subscription_id: int, session: Session, principal: CurrentPrincipal) -> schemas.SubscriptionOut:
    return schemas.SubscriptionOut.model_validate(await service.get_subscription(session, subscription_id, principal))


@router.delete(
    "/subscriptions/{subscription_id}",
    tags=["subscriptions"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unsubscribe; pending deliveries are cancelled",
)
async def unsubscribe(subscription_id: int, session: Session, principal: CurrentPrincipal) -> Response:
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
    subscription_id: int, body: schemas.RotateIn, request: Request, session: Session, principal: CurrentPrincipal
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
    subscription_id: int, body: schemas.ReplayIn, session: Session, principal: CurrentPrincipal
) -> dict[str, int]:
    subscription = await service.get_subscription(session, subscription_id, principal)
    return {"queued": await service.replay(session, subscription, body.since)}


@router.get("/deliveries", tags=["deliveries"], summary="The delivery ledger, newest first")
async def deliveries(
    session: Session, principal: CurrentPrincipal, filters: Annotated[schemas.DeliveryFilters, Query()]
) -> schemas.DeliveryPage:
    return await service.search_deliveries(session, filters, principal)


@router.get("/deliveries/{delivery_id}", tags=["deliveries"], summary="A delivery with every attempt")
async def delivery(delivery_id: int, session: Session, principal: CurrentPrincipal) -> schemas.DeliveryDetail:
    return await service.delivery_detail(session, await service.get_delivery(session, delivery_id, principal))


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    tags=["deliveries"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a dead (or delivered) delivery again",
)
async def redeliver(delivery_id: int, session: Session, principal: CurrentPrincipal) -> schemas.DeliveryOut:
    row = await service.redeliver(session, await service.get_delivery(session, delivery_id, principal))
    return schemas.DeliveryOut.model_validate(row)


@router.get(
    "/asyncapi.json",
    tags=["docs"],
    summary="AsyncAPI 3.0: every topic and webhook payload, generated from the event models",
)
async def asyncapi() -> dict[str, Any]:
    return asyncapi_document()
