"""Notifications: events fanned out to subscribers, delivered in order per pupil, retried with
exponential backoff and jitter, dead-lettered after the retry budget, every attempt in the ledger.

The consumer only records deliveries (one per matching subscription, idempotently); the
dispatcher, which any replica may run, leases the next delivery of each (subscriber, pupil) queue
and sends it. A subscriber that is slow or down holds only its own queues and its own share of the
in-flight slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
import httpx
import orjson
import structlog
from cryptography.fernet import InvalidToken
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import letters, schemas
from services.notifications.models import SCHEMA, Attempt, Delivery, Letter, LetterTemplate, Subscription
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal, Role, issue_token
from shared.db import newest_first, raw_connection
from shared.encryption import SecretBox, secret_box
from shared.errors import Conflict, NotFound, Problem, Unprocessable
from shared.events import CloudEvent
from shared.time import LONDON, school_today
from shared.webhooks import new_secret, signed_headers

log = structlog.get_logger(__name__)

DELIVERIES = Counter("webhook_attempts_total", "Delivery attempts", ["channel", "outcome"])
DEAD = Counter("webhook_dead_letters_total", "Deliveries dead-lettered after the retry budget", ["channel"])
LATENCY = Histogram(
    "webhook_event_to_delivery_seconds",
    "From the event's time to its successful delivery",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
BACKLOG = Gauge("webhook_backlog_deliveries", "Deliveries pending (due or waiting to retry)")


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- subscriptions


def _owned(principal: Principal) -> str:
    if principal.la_code is None:
        raise NotFound("subscription", "Subscriptions belong to an LA: use an la_system or la_officer credential.")
    return principal.la_code


async def create_subscription(
    session: AsyncSession, settings: NotificationsSettings, body: schemas.SubscriptionIn, principal: Principal
) -> schemas.SubscriptionCreated:
    principal.require_role(Role.LA_SYSTEM) if body.channel == "webhook" else principal.require_role(
        Role.LA_OFFICER, Role.LA_SYSTEM
    )
    problem = endpoint_problem(body.url) if body.url and not settings.allow_http_endpoints else None
    if problem is not None:
        raise Unprocessable("insecure-endpoint", problem)
    subscription = Subscription(
        la_code=_owned(principal),
        channel=body.channel,
        url=body.url,
        email=body.email,
        event_types=body.event_types,
        urns=body.urns,
        description=body.description,
        digest=body.digest,
        created_at=_now(),
        created_by=principal.subject,
    )
    secret = None
    if body.channel == "webhook":
        secret = new_secret()
        subscription.secret = secret_box(settings.secrets_key).encrypt(secret)
    session.add(subscription)
    await session.flush()
    return schemas.SubscriptionCreated(
        **schemas.SubscriptionOut.model_validate(subscription).model_dump(), secret=secret
    )


def endpoint_problem(url: str) -> str | None:
    """Why a webhook URL may not be used in production: not https, or a host the platform's own
    network reaches but the internet does not (the platform must not be aimed at its neighbours).
    Names are not resolved here, so a public name pointing inward is not caught."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "Webhook endpoints must use https."
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return f"Webhook endpoint host {host!r} is not on the internet."
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_global:
        return f"Webhook endpoint address {host} is loopback, private or reserved."
    return None


async def get_subscription(session: AsyncSession, subscription_id: int, principal: Principal) -> Subscription:
    subscription = await session.get(Subscription, subscription_id)
    if (
        subscription is None
        or subscription.deleted_at is not None
        or (principal.role is not Role.OPS and subscription.la_code != principal.la_code)
    ):
        raise NotFound("subscription", f"No subscription {subscription_id}.")
    return subscription


async def list_subscriptions(session: AsyncSession, principal: Principal) -> list[Subscription]:
    query = select(Subscription).where(Subscription.deleted_at.is_(None)).order_by(Subscription.id)
    if principal.role is not Role.OPS:
        query = query.where(Subscription.la_code == _owned(principal))
    return list((await session.execute(query)).scalars())


async def delete_subscription(session: AsyncSession, subscription: Subscription) -> None:
    subscription.deleted_at = _now()
    await session.execute(
        update(Delivery)
        .where(Delivery.subscription_id == subscription.id, Delivery.status == "pending")
        .values(status="cancelled", leased_until=None)
    )


async def rotate_secret(
    session: AsyncSession, settings: NotificationsSettings, subscription: Subscription, body: schemas.RotateIn
) -> schemas.SubscriptionCreated:
    """A new secret, shown once; the old one keeps signing (a second signature) for a while, so
    receivers can switch without missing or rejecting a delivery."""
    if subscription.channel != "webhook":
        raise Conflict("no-secret", "Only webhook subscriptions have a signing secret.")
    keep = settings.previous_secret_seconds if body.previous_valid_seconds is None else body.previous_valid_seconds
    secret = new_secret()
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_expires_at = _now() + timedelta(seconds=keep)
    subscription.secret = secret_box(settings.secrets_key).encrypt(secret)
    await session.flush()
    return schemas.SubscriptionCreated(
        **schemas.SubscriptionOut.model_validate(subscription).model_dump(), secret=secret
    )


def signing_secrets(subscription: Subscription, now: datetime, box: SecretBox) -> list[str]:
    stored = [subscription.secret] if subscription.secret else []
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret and expires is not None and expires > now:
        stored.append(subscription.previous_secret)
    return [box.decrypt(secret) for secret in stored]


async def reencrypt_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Every stored signing secret under the newest key (the second step of a key rotation)."""
    subscriptions = (
        await session.scalars(select(Subscription).where(Subscription.secret.is_not(None)).with_for_update())
    ).all()
    for subscription in subscriptions:
        subscription.secret = box.reencrypt(subscription.secret)  # type: ignore[arg-type]
        if subscription.previous_secret:
            subscription.previous_secret = box.reencrypt(subscription.previous_secret)
    await session.flush()
    return len(subscriptions)


# ---------------------------------------------------------------- the consumer


def _wants(subscription: Subscription, event: CloudEvent[Any]) -> bool:
    data = event.data
    if getattr(data, "la_code", None) != subscription.la_code:
        return False
    if subscription.urns and getattr(data, "urn", None) not in subscription.urns:
        return False
    return any(schemas.matches(pattern, event.type) for pattern in subscription.event_types)


async def handle_events(session: AsyncSession, events: Sequence[CloudEvent[Any]]) -> None:
    """Record one delivery per event and matching subscription, and the stage letters escalations
    ask for (a redelivered event adds none)."""
    await request_letters(session, events)
    subscriptions = list(
        (await session.execute(select(Subscription).where(Subscription.deleted_at.is_(None)))).scalars()
    )
    rows = [
        (subscription.id, event.id, event.type, event.subject or "", event.model_dump_json(), event.time)
        for event in events
        for subscription in subscriptions
        if _wants(subscription, event)
    ]
    if not rows:
        return
    conn = await raw_connection(session)
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        f"INSERT INTO {SCHEMA}.deliveries (subscription_id, event_id, event_type, key, payload, event_time, "
        "created_at, status, attempts, next_attempt_at) "
        "SELECT s, e, t, k, p, et, now(), 'pending', 0, now() "
        "FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) "
        "AS x(s, e, t, k, p, et) "
        "ON CONFLICT (subscription_id, event_id) WHERE replay_of IS NULL DO NOTHING",
        *[list(column) for column in columns],
    )


# ---------------------------------------------------------------- the dispatcher


@dataclass(frozen=True)
class Leased:
    id: int
    subscription_id: int
    event_id: str
    key: str
    payload: str
    event_time: datetime
    attempts: int


def backoff(attempts: int, settings: NotificationsSettings, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failures: exponential, capped, with full
    jitter so that a recovering subscriber is not hit by every retry at once."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


async def claim(
    session: AsyncSession, settings: NotificationsSettings, limit: int, lease_seconds: float
) -> list[Leased]:
    """Lease the next due delivery of each (subscriber, pupil) queue, at most `limit` in all and
    no more per subscriber than its free in-flight slots.

    The chosen ids are gathered once (an array) rather than joined: the ledger is mostly
    delivered, so during a backlog the planner expects almost nothing pending and, given a join,
    re-ran `ready` for every pending row (3,000 pending: about 1 s a claim instead of 10 ms)."""
    conn = await raw_connection(session)
    rows = await conn.fetch(
        f"""
        WITH heads AS (
            SELECT DISTINCT ON (subscription_id, key) id, subscription_id, next_attempt_at, leased_until
            FROM {SCHEMA}.deliveries WHERE status = 'pending'
            ORDER BY subscription_id, key, id
        ), busy AS (
            SELECT subscription_id, count(*) AS n FROM heads WHERE leased_until > now() GROUP BY subscription_id
        ), ready AS (
            SELECT h.id, row_number() OVER (PARTITION BY h.subscription_id ORDER BY h.next_attempt_at, h.id) AS rank,
                   coalesce(b.n, 0) AS in_flight
            FROM heads h LEFT JOIN busy b USING (subscription_id)
            WHERE h.next_attempt_at <= now() AND (h.leased_until IS NULL OR h.leased_until <= now())
        ), chosen AS (
            SELECT d.id FROM {SCHEMA}.deliveries d
            WHERE d.id = ANY(ARRAY(SELECT id FROM ready WHERE rank + in_flight <= $2)) AND d.status = 'pending'
              AND (d.leased_until IS NULL OR d.leased_until <= now())
            ORDER BY d.next_attempt_at, d.id LIMIT $1
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE {SCHEMA}.deliveries d SET leased_until = now() + make_interval(secs => $3)
        FROM chosen WHERE d.id = chosen.id
        RETURNING d.id, d.subscription_id, d.event_id, d.key, d.payload, d.event_time, d.attempts
        """,
        limit,
        settings.max_in_flight_per_subscription,
        lease_seconds,
    )
    return [Leased(**{**dict(row), "event_id": str(row["event_id"])}) for row in rows]


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, waiting to be written with the others of its round."""

    delivery: Leased
    channel: str
    at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


class Dispatcher:
    """Sends leased deliveries as independent tasks; each round writes the outcomes of the attempts
    that finished and leases the next deliveries, in one short transaction."""

    def __init__(self, settings: NotificationsSettings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.tasks: set[asyncio.Task[None]] = set()
        self.outcomes: list[Outcome] = []
        self.http = httpx.AsyncClient(
            timeout=settings.delivery_timeout_seconds,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.max_in_flight),
            trust_env=False,
        )
        # Longer than any attempt: a crashed process's leases lapse and another replica resends.
        self.lease_seconds = settings.delivery_timeout_seconds * 3 + 10

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                free = self.settings.max_in_flight - len(self.tasks)
                leased: list[tuple[Leased, Subscription]] = []
                try:
                    leased = await self.round(free)
                except Exception:  # a database blip: the outcomes stay queued; try again shortly
                    log.exception("dispatch_round_failed")
                for delivery, subscription in leased:
                    task = asyncio.create_task(self.deliver(delivery, subscription))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                if free <= 0 or len(leased) < free:  # no slot, or nothing more due: wait for an attempt or the poll
                    waiters = [asyncio.create_task(stop.wait())]
                    await asyncio.wait(
                        [*waiters, *self.tasks],
                        timeout=self.settings.dispatch_poll_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for waiter in waiters:
                        waiter.cancel()
        finally:
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=self.settings.delivery_timeout_seconds + 1)
            with contextlib.suppress(Exception):
                await self.round(0)
            await self.http.aclose()

    async def round(self, free: int) -> list[tuple[Leased, Subscription]]:
        """Write the finished attempts (so the pupils' next deliveries become queue heads), then
        lease up to `free` more, with their subscriptions."""
        outcomes, self.outcomes = self.outcomes, []
        try:
            async with self.sessionmaker() as session, session.begin():
                await record_outcomes(session, self.settings, outcomes)
                leased = await claim(session, self.settings, free, self.lease_seconds) if free > 0 else []
                ids = {delivery.subscription_id for delivery in leased}
                subscriptions = {
                    s.id: s
                    for s in (await session.execute(select(Subscription).where(Subscription.id.in_(ids)))).scalars()
                }
                BACKLOG.set(await _backlog(session))
        except Exception:
            self.outcomes = outcomes + self.outcomes
            raise
        return [(delivery, subscriptions[delivery.subscription_id]) for delivery in leased]

    async def deliver(self, delivery: Leased, subscription: Subscription) -> None:
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            if subscription.channel == "email":
                await self._email(subscription, delivery)
                status_code = 250
            else:
                status_code = await self._post(subscription, delivery)
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}"
        except (httpx.HTTPError, aiosmtplib.SMTPException, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        except InvalidToken:
            error = "The signing secret does not decrypt with SECRETS_KEY (was its key dropped too early?)"
        duration_ms = int((time.perf_counter() - started) * 1000)
        self.outcomes.append(Outcome(delivery, subscription.channel, _now(), duration_ms, status_code, error))

    async def _post(self, subscription: Subscription, delivery: Leased) -> int:
        box = secret_box(self.settings.secrets_key)
        headers = signed_headers(signing_secrets(subscription, _now(), box), delivery.event_id, delivery.payload)
        headers["content-type"] = "application/json"
        headers["user-agent"] = "attendance-platform-webhooks/1"
        response = await self.http.post(subscription.url or "", content=delivery.payload.encode(), headers=headers)
        return response.status_code

    async def _email(self, subscription: Subscription, delivery: Leased) -> None:
        message = email_for(delivery.payload, subscription.email or "", self.settings.mail_from)
        await aiosmtplib.send(
            message,
            hostname=self.settings.smtp_host,
            port=self.settings.smtp_port,
            username=self.settings.smtp_username,
            password=self.settings.smtp_password,
            start_tls=self.settings.smtp_starttls,
            timeout=self.settings.delivery_timeout_seconds,
        )


async def record_outcomes(session: AsyncSession, settings: NotificationsSettings, outcomes: Sequence[Outcome]) -> None:
    """Attempts into the ledger; each delivery delivered, retried later with backoff, or dead."""
    if not outcomes:
        return
    updates = []
    for o in outcomes:
        attempts = o.delivery.attempts + 1
        if o.error is None:
            status, next_at, delivered_at = "delivered", None, o.at
            LATENCY.observe(max(0.0, (o.at - o.delivery.event_time).total_seconds()))
        elif attempts >= settings.retry_budget:
            status, next_at, delivered_at = "dead", None, None
            DEAD.labels(o.channel).inc()
        else:
            status, delivered_at = "pending", None
            next_at = o.at + timedelta(seconds=backoff(attempts, settings))
        DELIVERIES.labels(o.channel, "delivered" if o.error is None else "failed").inc()
        updates.append((o.delivery.id, attempts, o.status_code, status, delivered_at, o.error, next_at))
    conn = await raw_connection(session)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.attempts (delivery_id, at, duration_ms, status_code, error, outcome) "
        "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[], $5::text[], $6::text[])",
        [o.delivery.id for o in outcomes],
        [o.at for o in outcomes],
        [o.duration_ms for o in outcomes],
        [o.status_code for o in outcomes],
        [o.error for o in outcomes],
        ["delivered" if o.error is None else "failed" for o in outcomes],
    )
    # Only while still pending: a delivery of a deleted subscription stays cancelled.
    await conn.execute(
        f"UPDATE {SCHEMA}.deliveries d SET attempts = u.attempts, last_status_code = u.code, status = u.status, "
        "delivered_at = u.delivered_at, last_error = u.error, leased_until = NULL, "
        "next_attempt_at = coalesce(u.next_at, d.next_attempt_at) "
        "FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::timestamptz[], $6::text[], "
        "$7::timestamptz[]) AS u(id, attempts, code, status, delivered_at, error, next_at) "
        "WHERE d.id = u.id AND d.status = 'pending'",
        *[list(column) for column in zip(*updates, strict=True)],
    )


async def _backlog(session: AsyncSession) -> int:
    conn = await raw_connection(session)
    return await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.deliveries WHERE status = 'pending'")


def email_for(payload: str, to: str, sender: str) -> EmailMessage:
    """A plain-text email of an event (the same thin content as the event, and its link), or of a
    worklist digest."""
    event = orjson.loads(payload)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if event["type"] == DIGEST_TYPE:
        message["Subject"], body = _digest_text(event)
        message.set_content(body)
        return message
    data = event.get("data", {})
    subject = event["type"].replace(".", " ").replace("_", " ")
    message["Subject"] = f"[Attendance] {subject}: pupil {data.get('upn', '?')} at school {data.get('urn', '?')}"
    lines = [f"{name}: {value}" for name, value in data.items() if name != "link" and value not in (None, "")]
    message.set_content(
        f"{subject}\n\n"
        + "\n".join(lines)
        + f"\n\nDetails: {data.get('link', '')}\n\nEvent {event['id']} at {event['time']}\n"
    )
    return message


def _digest_text(digest: dict[str, Any]) -> tuple[str, str]:
    casework, cme = digest["casework"], digest["cme"]
    overdue = sum(1 for item in casework if item["overdue"]) + sum(1 for i in cme if i["kind"] == "missing_return")
    subject = (
        f"[Attendance] Worklist for LA {digest['la_code']} on {digest['date']}: "
        f"{len(casework) + len(cme)} items, {overdue} overdue"
    )
    lines = [f"Casework clocks due by {digest['date']} ({len(casework)}):"]
    lines += [
        f"- {i['due_on']}{' OVERDUE' if i['overdue'] else ''}: {i['clock']} for pupil {i['upn']} at school "
        f"{i['urn']} (case {i['case_id']}, {i['state']})"
        for i in casework
    ] or ["- none"]
    lines += ["", f"Children missing education and roll returns ({len(cme)}):"]
    lines += [
        f"- {i['kind']}: pupil {i['upn']} at school {i['urn'] or '-'}: {i['detail']} ({i['link']})" for i in cme
    ] or ["- none"]
    return subject, "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the ledger


def _scope(query: Any, principal: Principal) -> Any:
    if principal.role is Role.OPS:
        return query
    return query.where(Subscription.la_code == _owned(principal))


async def search_deliveries(
    session: AsyncSession, filters: schemas.DeliveryFilters, principal: Principal
) -> schemas.DeliveryPage:
    rows, next_cursor = await newest_first(
        session,
        _scope(select(Delivery).join(Subscription, Subscription.id == Delivery.subscription_id), principal),
        Delivery.id,
        equal=[
            (Delivery.subscription_id, filters.subscription_id),
            (Delivery.status, filters.status),
            (Delivery.event_type, filters.event_type),
            (Delivery.key, filters.key),
        ],
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return schemas.DeliveryPage(items=[schemas.DeliveryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


async def get_delivery(session: AsyncSession, delivery_id: int, principal: Principal) -> Delivery:
    row = (
        await session.execute(
            _scope(
                select(Delivery)
                .join(Subscription, Subscription.id == Delivery.subscription_id)
                .where(Delivery.id == delivery_id),
                principal,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("delivery", f"No delivery {delivery_id}.")
    return row


async def get_delivery_by_event(session: AsyncSession, subscription_id: int, event_id: str) -> Delivery:
    return (
        await session.execute(
            select(Delivery).where(
                Delivery.subscription_id == subscription_id, Delivery.event_id == uuid.UUID(event_id)
            )
        )
    ).scalar_one()


async def delivery_detail(session: AsyncSession, delivery: Delivery) -> schemas.DeliveryDetail:
    attempts = (
        await session.execute(select(Attempt).where(Attempt.delivery_id == delivery.id).order_by(Attempt.id))
    ).scalars()
    return schemas.DeliveryDetail(
        **schemas.DeliveryOut.model_validate(delivery).model_dump(),
        attempt_log=[schemas.AttemptOut.model_validate(a) for a in attempts],
        payload=orjson.loads(delivery.payload),
    )


async def redeliver(session: AsyncSession, delivery: Delivery) -> Delivery:
    """Send a delivery again now (a dead one after the subscriber recovered, or a delivered one
    the subscriber lost), keeping its attempt history; same webhook-id, so receivers can dedupe."""
    if delivery.status == "pending":
        raise Conflict("delivery-pending", f"Delivery {delivery.id} is still pending; it will be retried.")
    subscription = await session.get(Subscription, delivery.subscription_id)
    if subscription is None or subscription.deleted_at is not None:
        raise Conflict("subscription-deleted", "The subscription was deleted.")
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = _now()
    delivery.leased_until = None
    await session.flush()
    return delivery


async def replay(session: AsyncSession, subscription: Subscription, since: datetime) -> int:
    """Queue again every event the subscription received from `since`, in their original order."""
    conn = await raw_connection(session)
    result = await conn.execute(
        f"INSERT INTO {SCHEMA}.deliveries (subscription_id, event_id, event_type, key, payload, event_time, "
        "created_at, status, attempts, next_attempt_at, replay_of) "
        "SELECT subscription_id, event_id, event_type, key, payload, event_time, now(), 'pending', 0, now(), id "
        f"FROM {SCHEMA}.deliveries WHERE subscription_id = $1 AND event_time >= $2 AND replay_of IS NULL "
        "ORDER BY id",
        subscription.id,
        since,
    )
    return int(result.split()[-1])


# ---------------------------------------------------------------- letters


def _letter_request(event: CloudEvent[Any]) -> tuple[Any, ...] | None:
    """A stage letter when a case enters a state that sends one (a new escalation, not a replay)."""
    data = event.data
    if not event.type.startswith("casework.") or not hasattr(data, "state"):
        return None
    kind = letters.LETTER_FOR_STATE.get(data.state)
    if kind is None or data.from_state == data.state:
        return None
    return (event.id, data.case_id, data.la_code, data.urn, data.upn, kind)


async def request_letters(session: AsyncSession, events: Sequence[CloudEvent[Any]]) -> None:
    rows = [row for row in map(_letter_request, events) if row is not None]
    if not rows:
        return
    conn = await raw_connection(session)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.letters (event_id, case_id, la_code, urn, upn, kind, status, attempts, "
        "next_attempt_at, created_at) "
        "SELECT e, c, l, u, p, k, 'pending', 0, now(), now() "
        "FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS x(e, c, l, u, p, k) "
        "ON CONFLICT (event_id) DO NOTHING",
        *[list(column) for column in zip(*rows, strict=True)],
    )


async def current_template(session: AsyncSession, la_code: str, kind: str) -> LetterTemplate | None:
    return (
        await session.execute(
            select(LetterTemplate)
            .where(LetterTemplate.la_code == la_code, LetterTemplate.kind == kind)
            .order_by(LetterTemplate.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def put_template(session: AsyncSession, la_code: str, kind: str, body: str, by: str) -> LetterTemplate:
    if kind not in letters.LETTER_KINDS:
        raise NotFound("letter-kind", f"No letter {kind!r}; kinds: {', '.join(letters.LETTER_KINDS)}.")
    problem = letters.template_error(kind, body)
    if problem is not None:
        raise Unprocessable("invalid-template", f"The template does not render: {problem}")
    conn = await raw_connection(session)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('notifications.template:' || $1 || $2))", la_code, kind)
    current = await current_template(session, la_code, kind)
    row = LetterTemplate(
        la_code=la_code,
        kind=kind,
        version=(current.version if current else 0) + 1,
        body=body,
        created_at=_now(),
        created_by=by,
    )
    session.add(row)
    await session.flush()
    return row


class LetterRenderer:
    """Renders pending letters with the pupil's figures from the thresholds service; retries while
    it is unreachable. Any replica may run it: letters are taken with SKIP LOCKED."""

    def __init__(self, settings: NotificationsSettings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.settings.thresholds_url, timeout=10, trust_env=False) as http:
            while not stop.is_set():
                try:
                    async with self.sessionmaker() as session, session.begin():
                        await self.render_due(session, http)
                except Exception:
                    log.exception("letter_render_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.letter_poll_seconds)

    async def render_due(self, session: AsyncSession, http: httpx.AsyncClient) -> int:
        due = (
            await session.execute(
                select(Letter)
                .where(Letter.status == "pending", Letter.next_attempt_at <= _now())
                .order_by(Letter.id)
                .limit(20)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
        count = 0
        for letter in due:
            try:
                attendance = await self._figures(http, letter)
            except (httpx.HTTPError, ValueError) as exc:
                letter.attempts += 1
                letter.last_error = f"{type(exc).__name__}: {exc}"[:500]
                letter.status = "failed" if letter.attempts >= self.settings.retry_budget else "pending"
                letter.next_attempt_at = _now() + timedelta(seconds=backoff(letter.attempts, self.settings))
                continue
            template = await current_template(session, letter.la_code, letter.kind)
            context = letters.letter_context(
                kind=letter.kind,
                la_code=letter.la_code,
                urn=letter.urn,
                upn=letter.upn,
                case_id=letter.case_id,
                today=school_today(),
                attendance=attendance,
            )
            try:
                html = letters.render_letter(letter.kind, context, template.body if template else None)
                pdf = letters.html_to_pdf(html)
            except Exception as exc:
                # An LA template that printed its sample but not this letter fails this letter alone
                # (raised, it rolled back the whole batch, again at every poll, for every LA).
                letter.attempts += 1
                letter.status, letter.last_error = "failed", f"{type(exc).__name__}: {exc}"[:500]
                continue
            letter.html, letter.pdf = html, pdf
            letter.template_version = template.version if template else 0
            letter.status, letter.rendered_at, letter.last_error = "ready", _now(), None
            count += 1
        return count

    async def _figures(self, http: httpx.AsyncClient, letter: Letter) -> dict[str, Any]:
        token = issue_token(
            self.settings, subject="notifications", role=Role.LA_SYSTEM, la_code=letter.la_code, ttl_seconds=300
        )
        response = await http.get(
            f"/v1/schools/{letter.urn}/pupils/{letter.upn}/attendance", headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code != 200:
            raise ValueError(f"thresholds answered {response.status_code}")
        return response.json()


def _letter_scope(query: Any, principal: Principal) -> Any:
    if principal.role is Role.SCHOOL:
        return query.where(Letter.urn.in_(principal.urns))
    if principal.la_code:
        return query.where(Letter.la_code == principal.la_code)
    return query


async def get_letter(session: AsyncSession, letter_id: int, principal: Principal) -> Letter:
    letter = (
        await session.execute(_letter_scope(select(Letter).where(Letter.id == letter_id), principal))
    ).scalar_one_or_none()
    if letter is None:
        raise NotFound("letter", f"No letter {letter_id}.")
    return letter


async def search_letters(
    session: AsyncSession, principal: Principal, case_id: int | None, status: str | None, cursor: int | None, limit: int
) -> tuple[list[Letter], int | None]:
    query = _letter_scope(select(Letter), principal)
    equal = [(Letter.case_id, case_id), (Letter.status, status)]
    return await newest_first(session, query, Letter.id, equal=equal, cursor=cursor, limit=limit)


async def mark_sent(
    session: AsyncSession,
    settings: NotificationsSettings,
    letter: Letter,
    body: schemas.LetterSentIn,
    principal: Principal,
    authorization: str,
) -> Letter:
    """Record the posted letter on its case as evidence (a casework `letter_sent` record, made with
    the caller's own credential, so casework checks and attributes it), then mark it sent."""
    if letter.status != "ready":
        raise Conflict("letter-not-ready", f"Letter {letter.id} is {letter.status}, not ready to send.")
    record = {
        "kind": "letter_sent",
        "occurred_on": body.posted_on.isoformat(),
        "details": {
            "letter": letter.kind,
            "posted_on": body.posted_on.isoformat(),
            "address_recorded": body.address_recorded,
        },
    }
    async with httpx.AsyncClient(base_url=settings.casework_url, timeout=10, trust_env=False) as http:
        try:
            response = await http.post(
                f"/v1/cases/{letter.case_id}/actions", json=record, headers={"Authorization": authorization}
            )
        except httpx.HTTPError as exc:
            raise Problem(503, "casework-unreachable", "Casework unreachable", f"{type(exc).__name__}") from None
    if response.status_code != 201:
        detail = response.json().get("detail", response.text) if response.content else response.reason_phrase
        raise Problem(response.status_code, "casework-refused", "Casework refused the record", str(detail))
    letter.status, letter.sent_at, letter.posted_on = "sent", _now(), body.posted_on
    letter.sent_by, letter.case_action_id = principal.subject, response.json()["id"]
    await session.flush()
    return letter


# ---------------------------------------------------------------- worklist digests

DIGEST_TYPE = "notifications.digest"


async def build_digest(
    settings: NotificationsSettings, la_code: str, today: date, casework: httpx.AsyncClient, cme: httpx.AsyncClient
) -> dict[str, Any]:
    """The LA's casework clocks due by today and its CME worklist, from those services."""
    token = issue_token(settings, subject="notifications", role=Role.LA_SYSTEM, la_code=la_code, ttl_seconds=300)
    headers = {"Authorization": f"Bearer {token}"}
    clocks = await casework.get("/v1/casework/worklist", params={"due_before": today.isoformat()}, headers=headers)
    worklist = await cme.get("/v1/cme/worklist", headers=headers)
    for response in (clocks, worklist):
        if response.status_code != 200:
            raise ValueError(f"{response.request.url} answered {response.status_code}")
    return {
        "id": str(uuid.uuid4()),
        "type": DIGEST_TYPE,
        "time": _now().isoformat(),
        "la_code": la_code,
        "date": today.isoformat(),
        "casework": clocks.json()["items"],
        "cme": worklist.json()["items"],
    }


async def queue_digest(session: AsyncSession, subscription: Subscription, digest: dict[str, Any]) -> None:
    now = _now()
    session.add(
        Delivery(
            subscription_id=subscription.id,
            event_id=uuid.UUID(digest["id"]),
            event_type=DIGEST_TYPE,
            key=f"digest:{subscription.id}",
            payload=orjson.dumps(digest).decode(),
            event_time=now,
            created_at=now,
            status="pending",
            attempts=0,
            next_attempt_at=now,
        )
    )
    subscription.last_digest_on = date.fromisoformat(digest["date"])
    await session.flush()


class DigestScheduler:
    """Once a day after DIGEST_HOUR (London), each digest subscription gets its LA's worklists by
    email, through the ledger like any delivery. Any replica may run it: subscriptions are taken
    with SKIP LOCKED and marked with the day."""

    def __init__(self, settings: NotificationsSettings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker

    def clients(self) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        return (
            httpx.AsyncClient(base_url=self.settings.casework_url, timeout=10, trust_env=False),
            httpx.AsyncClient(base_url=self.settings.cme_url, timeout=10, trust_env=False),
        )

    async def run(self, stop: asyncio.Event) -> None:
        casework, cme = self.clients()
        async with casework, cme:
            while not stop.is_set():
                if datetime.now(LONDON).hour >= self.settings.digest_hour:
                    try:
                        await self.send_due(school_today(), casework, cme)
                    except Exception:
                        log.exception("digest_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 60)

    async def send_due(self, today: date, casework: httpx.AsyncClient, cme: httpx.AsyncClient) -> int:
        async with self.sessionmaker() as session, session.begin():
            due = list(
                (
                    await session.execute(
                        select(Subscription)
                        .where(
                            Subscription.digest.is_(True),
                            Subscription.deleted_at.is_(None),
                            (Subscription.last_digest_on.is_(None)) | (Subscription.last_digest_on < today),
                        )
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            for subscription in due:
                await queue_digest(
                    session, subscription, await build_digest(self.settings, subscription.la_code, today, casework, cme)
                )
        return len(due)
